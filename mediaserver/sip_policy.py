"""The SIP core's policies built from the config: the edge defences, the digest
authenticator and the registrar (`SipServer.start` hands them to `UserAgent`)."""

from __future__ import annotations

import ipaddress
from typing import Any

from mediaserver.config import SipSettings
from mediaserver.sip.auth import Account, DigestAuth
from mediaserver.sip.edge import EdgePolicy
from mediaserver.sip.registrar import Registrar

__all__ = ["auth_and_registrar", "edge_policy"]


def edge_policy(sip: SipSettings) -> EdgePolicy | None:
    """The edge defences' policy (None: `sip.edge.enabled` is off)."""
    cfg = sip.edge
    if not cfg.enabled:
        return None
    return EdgePolicy(
        request_rate=cfg.request_rate,
        request_burst=cfg.request_burst,
        invite_rate=cfg.invite_rate,
        invite_burst=cfg.invite_burst,
        ban_after=cfg.ban_after,
        ban_window=cfg.ban_window,
        ban_time=cfg.ban_time,
        max_sources=cfg.max_sources,
        max_bans=cfg.max_sources,
        scanner_agents=tuple(cfg.scanner_agents),
        scanners=cfg.scanners,
        unknown=cfg.unknown,
        max_calls_per_source=cfg.max_calls_per_source,
        max_calls_per_user=cfg.max_calls_per_user,
        trusted=tuple(ipaddress.ip_network(c, strict=False) for c in cfg.trusted),
    )


def auth_and_registrar(sip: SipSettings) -> dict[str, Any]:
    """The digest authenticator and registrar of `sip` (none without users)."""
    cfg = sip.auth
    if not cfg.users:
        return {}
    accounts = {
        name: Account(name, password=user.password, ha1=user.ha1)
        for name, user in cfg.users.items()
    }
    auth = DigestAuth(
        cfg.realm,
        accounts,
        nonce_ttl=cfg.nonce_ttl,
        algorithms=tuple(cfg.algorithms),
        max_failures=cfg.max_failures,
        failure_window=cfg.failure_window,
        secret=cfg.nonce_secret.encode() if cfg.nonce_secret else None,
    )
    reg = sip.registrar
    registrar = Registrar(
        min_expires=reg.min_expires, max_expires=reg.max_expires, max_contacts=reg.max_contacts
    )
    return {"auth": auth, "registrar": registrar}
