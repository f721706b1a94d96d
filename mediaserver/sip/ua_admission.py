"""Who may do what, for the user-agent core: digest authentication, REGISTER,
the edge defences (`sip/edge.py`), trunks (`sip/trunks.py`) and the limits on
calls at once.

`Admission` is a part of `UserAgent` (`mediaserver.sip.ua`), kept in its own
module; it works on the same calls, transactions and config.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from mediaserver.sip.auth import AuthFailed, Authorized
from mediaserver.sip.calls import (
    SUPPORTED_EXTENSIONS,
    AuthRejected,
    Blocked,
    Call,
    Event,
    Registered,
    UaConfig,
)
from mediaserver.sip.edge import EdgeGuard, Refusal
from mediaserver.sip.errors import SipParseError
from mediaserver.sip.message import Request, reason_phrase
from mediaserver.sip.transaction import InviteServerTransaction, ServerTransaction, Target
from mediaserver.sip.transaction_layer import TransactionLayer
from mediaserver.sip.trunks import Trunk

__all__ = ["Admission"]


class Admission:
    """Authentication, REGISTER, the edge defences, trunks and call limits of
    `UserAgent`."""

    config: UaConfig
    tx: TransactionLayer
    edge: EdgeGuard | None
    #: Calls in progress by ("source", host), ("user", caller), ("trunk", name).
    load: Counter[tuple[str, str]]
    draining: bool
    _allow: str

    if TYPE_CHECKING:

        @property
        def active_calls(self) -> int: ...

    if TYPE_CHECKING:
        # Provided by UserAgent.
        def _respond(
            self,
            tx: ServerTransaction | None,
            req: Request,
            status: int,
            now: float,
            reason: str | None = None,
            headers: Iterable[tuple[str, str]] = (),
            body: bytes = b"",
        ) -> list[Event]: ...

        def _accept_invite(
            self,
            req: Request,
            tx: InviteServerTransaction,
            source: Target,
            now: float,
            user: str,
            auth_user: str | None = None,
            auth_error: str | None = None,
            trunk: Trunk | None = None,
            called: str | None = None,
        ) -> list[Event]: ...

    def _on_register(
        self, req: Request, tx: ServerTransaction | None, source: Target, now: float
    ) -> list[Event]:
        """Authenticate, then update the location service (RFC 3261 section 10.3)."""
        assert self.config.registrar is not None
        checked = self._authenticate(req, tx, source, now)
        if isinstance(checked, list):
            return checked
        if isinstance(checked, AuthFailed):
            return self._refuse(req, tx, source, now, checked.user, checked.reason)
        if checked.user != (req.to.uri.user or ""):
            return self._refuse(
                req, tx, source, now, checked.user, f"not the owner of {req.to.uri.user!r}"
            )
        result = self.config.registrar.register(req, checked.user, source, now)
        events = self._respond(tx, req, result.status, now, result.reason, result.headers)
        if result.status == 200:
            bindings = sum(1 for name, _ in result.headers if name == "Contact")
            events.append(Registered(checked.user, source, bindings))
        return events

    def _on_trunk_invite(
        self, req: Request, tx: InviteServerTransaction, source: Target, trunk: Trunk, now: float
    ) -> list[Event]:
        """A trunk's INVITE: no digest, routed by the called number."""
        routed = trunk.route(req)
        if routed is None:
            return self._respond(tx, req, 404, now)
        route, called = routed
        return self._accept_invite(req, tx, source, now, route, trunk=trunk, called=called)

    def _authenticate(
        self, req: Request, tx: ServerTransaction | None, source: Target, now: float
    ) -> Authorized | AuthFailed | list[Event]:
        """Check the request's digest credentials. A list: it was answered (401 or 400)."""
        auth = self.config.auth
        if auth is None:
            return self._respond(tx, req, 403, now, "No Users Configured")
        try:
            result = auth.check(
                req.headers.get_all("Authorization"),
                req.method,
                req.uri,
                source.host,
                now,
                body=req.body,
            )
        except SipParseError as exc:
            return self._respond(tx, req, 400, now, reason_phrase(400, exc.reason))
        if isinstance(result, Authorized | AuthFailed):
            return result
        challenges = auth.challenges(now, stale=result.stale)
        headers = [("WWW-Authenticate", c) for c in challenges]
        return self._respond(tx, req, 401, now, headers=headers)

    def _refuse(
        self,
        req: Request,
        tx: ServerTransaction | None,
        source: Target,
        now: float,
        user: str,
        reason: str,
    ) -> list[Event]:
        """403 for credentials that failed, and an event to log and count it."""
        if self.edge is not None:
            self.edge.strike(source.host, now)
        events = self._respond(tx, req, 403, now)
        return [*events, AuthRejected(req.method, user, reason, source)]

    def _refuse_edge(
        self,
        tx: ServerTransaction | None,
        req: Request,
        source: Target,
        now: float,
        reason: str,
        how: Refusal,
    ) -> list[Event]:
        """Refuse by policy: 403, or no answer at all (the transaction is
        forgotten, so nothing lingers). Without the edge defences: 403."""
        if self.edge is not None:
            self.edge.count(reason)
        if how == "reject" or self.edge is None:
            return [*self._respond(tx, req, 403, now), Blocked(reason, source, 403)]
        if tx is not None:
            self.tx.discard(tx)
        return [Blocked(reason, source)]

    def _edge_for(self, host: str) -> EdgeGuard | None:
        """The edge defences, if they apply to `host` (not to a trunk's or a
        trusted address)."""
        edge = self.edge
        if edge is None or edge.trusts(host) or self.config.trunks.match(host) is not None:
            return None
        return edge

    def _known_source(self, source: Target, auth_user: str | None, now: float) -> bool:
        """Whether a caller is someone: authenticated, or at a registered phone's address."""
        registrar = self.config.registrar
        return auth_user is not None or (
            registrar is not None and registrar.known_source(source.host, now)
        )

    def _over_limit(self, trunk: Trunk | None, source: Target, caller: str) -> str | None:
        """Which concurrent-call limit a new call would break, if any."""
        if trunk is not None:
            full = trunk.max_calls and self.load["trunk", trunk.name] >= trunk.max_calls
            return "trunk_calls" if full else None
        if self.edge is None:
            return None
        policy = self.edge.policy
        # Not for a trusted address: a proxy in front of us brings everyone's calls.
        if (
            policy.max_calls_per_source
            and self._edge_for(source.host) is not None
            and self.load["source", source.host] >= policy.max_calls_per_source
        ):
            return "source_calls"
        if policy.max_calls_per_user and self.load["user", caller] >= policy.max_calls_per_user:
            return "user_calls"
        return None

    def _on_options(self, req: Request, tx: ServerTransaction | None, now: float) -> list[Event]:
        """200 with what we support; 503 while draining or full (a proxy's probe)."""
        if self.draining or self.active_calls >= self.config.max_calls:
            return self._respond(
                tx, req, 503, now, headers=[("Retry-After", str(self.config.retry_after))]
            )
        supported = ", ".join(SUPPORTED_EXTENSIONS)
        headers = [("Allow", self._allow), ("Accept", "application/sdp"), ("Supported", supported)]
        return self._respond(tx, req, 200, now, headers=headers)

    def _srtp_mode(self, route: str, trunk: Trunk | None) -> str:
        """SRTP of a new call: the trunk's setting, else the route's, else the server's."""
        if trunk is not None and trunk.srtp is not None:
            return trunk.srtp
        return self.config.route_srtp.get(route, self.config.srtp)

    def _load_keys(self, call: Call) -> list[tuple[str, str]]:
        if call.trunk is not None:
            return [("trunk", call.trunk)]
        caller = call.auth_user or call.invite.from_.uri.user or ""
        return [("source", call.source.host), ("user", caller)]

    def _invite_claims_user(self, req: Request) -> bool:
        auth = self.config.auth
        return auth is not None and (req.from_.uri.user or "") in auth.accounts

    def _invite_needs_auth(self, req: Request) -> bool:
        mode = self.config.invite_auth
        if self.config.auth is None or mode == "off":
            return False
        return mode == "all" or self._invite_claims_user(req)
