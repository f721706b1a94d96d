"""SIP trunks: who may call us by address, and which route a dialled number
reaches. Sans-IO.

A trunk is a provider that sends us calls from known addresses (`allow`, a
list of IPv4/IPv6 networks) without digest credentials. Its INVITEs are
routed by the called number: the Request-URI user, else the To user, in
any of the forms carriers use (``+15551230000``, ``15551230000``,
``0015551230000``, ``5551230000`` with the trunk's country code,
``tel:+1-555-123-0000``), compared in E.164 against the trunk's `numbers`.

`caller_identity` reads what the network asserts about the caller:
P-Asserted-Identity (RFC 3325), Remote-Party-ID, and the STIR/SHAKEN
Identity header (RFC 8224/8588: the PASSporT's attestation, A/B/C) with the
verification status a terminating carrier adds (`verstat`).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mediaserver.sip.errors import SipParseError
from mediaserver.sip.headers import parse_address, split_list
from mediaserver.sip.message import Request

__all__ = ["Trunk", "TrunkOutbound", "TrunkTable", "caller_identity", "normalise_number"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_VISUAL = re.compile(r"[\s().\-/]")


def normalise_number(
    raw: str, country_code: str = "", international_prefix: str = "00", national_prefix: str = "0"
) -> list[str]:
    """The E.164 forms (``+`` and digits) `raw` may stand for, most likely
    first; empty when it is not a number.

    Args:
        raw: a dialled number or URI user ("+1 (555) 123-0000", "0201234567").
        country_code: the trunk's country, for national forms ("1", "44").
        international_prefix: dialled before a country code ("00", "011").
        national_prefix: dialled before a national number ("0"; "" for none).
    """
    number = _VISUAL.sub("", raw.split(";", 1)[0])
    if number.startswith("+"):
        digits = number[1:]
        return [f"+{digits}"] if digits.isdigit() else []
    if not number.isdigit():
        return []
    forms: list[str] = []
    if international_prefix and number.startswith(international_prefix):
        forms.append("+" + number[len(international_prefix) :])
    if country_code:
        if national_prefix and number.startswith(national_prefix):
            forms.append(f"+{country_code}{number[len(national_prefix) :]}")
        forms.append(f"+{country_code}{number}")
    forms.append(f"+{number}")  # a country code without the "+"
    return list(dict.fromkeys(forms))


@dataclass(frozen=True)
class TrunkOutbound:
    """How we reach a provider: where its proxy is, who we are there, whether
    we register (`sip/registration.py`), the caller ID we present."""

    #: The provider's proxy (or registrar): requests go there.
    host: str
    port: int = 5060
    transport: str = "udp"
    #: The domain in our Request-URIs, From and To (the provider's SIP domain).
    domain: str = ""
    username: str = ""
    password: str = ""
    #: Register our contact with the provider, and keep it registered.
    register: bool = False
    #: Registration lifetime we ask for, in seconds.
    expires: int = 600
    #: The number (or user) and name callees see; defaults to `username`.
    caller_id: str = ""
    caller_name: str = ""
    #: Send called numbers without the leading "+" (some providers want digits).
    strip_plus: bool = False

    @property
    def sip_domain(self) -> str:
        return self.domain or self.host


@dataclass(frozen=True)
class Trunk:
    """One provider: the addresses it calls from, the numbers it brings, and
    (with `outbound`) how we call out through it. See the module docstring."""

    name: str
    allow: tuple[Network, ...]
    #: E.164 number -> route name.
    numbers: Mapping[str, str] = field(default_factory=dict)
    #: The route of numbers not listed (None: they get 404).
    default_route: str | None = None
    country_code: str = ""
    international_prefix: str = "00"
    national_prefix: str = "0"
    #: Calls at once through this trunk, both ways (0: no limit beyond the server's).
    max_calls: int = 0
    outbound: TrunkOutbound | None = None
    #: SRTP mode of its calls ("off", "optional", "required"; None: the server's).
    srtp: str | None = None

    def allows(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in net for net in self.allow if address.version == net.version)

    def route(self, req: Request) -> tuple[str, str] | None:
        """(route, called number in E.164) of an INVITE, or None: not ours."""
        users = [req.ruri.user or "", req.to.uri.user or ""]
        for user in users:
            for number in self.forms(user):
                route = self.numbers.get(number)
                if route is not None:
                    return route, number
        if self.default_route is not None:
            called = next((f[0] for u in users if (f := self.forms(u))), users[0])
            return self.default_route, called
        return None

    def forms(self, user: str) -> list[str]:
        return normalise_number(
            user, self.country_code, self.international_prefix, self.national_prefix
        )


class TrunkTable:
    """The configured trunks, matched by source address."""

    def __init__(self, trunks: Iterable[Trunk] = ()) -> None:
        self.trunks = tuple(trunks)

    def __bool__(self) -> bool:
        return bool(self.trunks)

    def match(self, host: str) -> Trunk | None:
        """The trunk whose `allow` holds `host` (None: none, or not an address)."""
        if not self.trunks:
            return None
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return None
        return next((t for t in self.trunks if t.allows(address)), None)

    def outbound(self) -> list[Trunk]:
        """The trunks we can call out through, in the order failover tries them."""
        return [t for t in self.trunks if t.outbound is not None]

    def routes(self) -> set[str]:
        """Every route a trunk can reach (to check against the config's routes)."""
        out = {r for t in self.trunks for r in t.numbers.values()}
        return out | {t.default_route for t in self.trunks if t.default_route is not None}


def caller_identity(req: Request) -> dict[str, Any]:
    """What the network asserts about the caller (empty when nothing):
    ``asserted`` (P-Asserted-Identity URIs), ``remote_party_id``,
    ``verstat`` (the carrier's verification status of STIR/SHAKEN), and
    from an Identity header ``attestation`` ("A", "B", "C"), ``orig`` and
    ``dest`` (the PASSporT's numbers, unverified: we hold no certificates).
    """
    out: dict[str, Any] = {}
    asserted = []
    for value in req.headers.get_all("P-Asserted-Identity"):
        try:
            addresses = [parse_address(part) for part in split_list(value)]
        except SipParseError:
            continue
        for address in addresses:
            asserted.append(str(address.uri))
            verstat = address.uri.params.get("verstat")
            if verstat:
                out["verstat"] = verstat
    if asserted:
        out["asserted"] = asserted
    rpid = req.headers.get("Remote-Party-ID")
    if rpid:
        out["remote_party_id"] = rpid.strip()
    identity = req.headers.get("Identity")
    if identity:
        out.update(_passport(identity))
    return out


def _passport(identity: str) -> dict[str, Any]:
    """The claims of an Identity header's PASSporT (RFC 8225) we record."""
    token = identity.split(";", 1)[0].strip().strip("<>")
    pieces = token.split(".")
    if len(pieces) != 3:
        return {"identity": "malformed"}
    try:
        padded = pieces[1] + "=" * (-len(pieces[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError):
        return {"identity": "malformed"}
    if not isinstance(claims, dict):
        return {"identity": "malformed"}
    out: dict[str, Any] = {"identity": "present"}
    if isinstance(claims.get("attest"), str):
        out["attestation"] = claims["attest"]
    for key in ("orig", "dest"):
        value = claims.get(key)
        if isinstance(value, dict) and value.get("tn"):
            tn = value["tn"]
            out[key] = tn if isinstance(tn, str) else [str(t) for t in tn]
    return out
