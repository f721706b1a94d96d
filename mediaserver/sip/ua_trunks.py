"""Calling out through trunks, for the user-agent core: registering with the
providers that want it (`sip/registration.py`), INVITEs to numbers through a
trunk with digest on 401/407, and failover to the next trunk.

`TrunkClient` is a part of `UserAgent` (`mediaserver.sip.ua`), kept in its own
module; it works on the same calls, transactions and config.

A number (``+15551230000``, ``tel:+1-555-123-0000``, national forms) is
dialled through the configured trunks that have `outbound` settings, in
config order, skipping one that is not registered (when it registers) or is
at its `max_calls`. A trunk that cannot take the call (no answer, 5xx,
credentials refused) hands it to the next one; an answer about the callee
(busy, not found, declined) ends it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mediaserver.codecs.params import MediaOffer
from mediaserver.sip.auth import answer_challenge
from mediaserver.sip.calls import Call, CallState, Event, MediaProvider, UaConfig
from mediaserver.sip.dialog import new_tag
from mediaserver.sip.errors import SipParseError
from mediaserver.sip.headers import quote_string
from mediaserver.sip.message import Request, Response
from mediaserver.sip.offer_answer import SdpSession
from mediaserver.sip.registration import Registration
from mediaserver.sip.transaction import (
    ClientTransaction,
    InviteClientTransaction,
    Target,
    new_branch,
)
from mediaserver.sip.transaction_layer import TransactionLayer
from mediaserver.sip.trunks import Trunk, normalise_number

__all__ = ["FAILOVER_STATUSES", "NoTrunk", "TrunkClient"]

#: Final statuses after which the next trunk is tried: the trunk (not the
#: callee) could not take the call.
FAILOVER_STATUSES = frozenset({401, 403, 407, 408, 500, 502, 503, 504})


class NoTrunk(SipParseError):
    """A number cannot be dialled: no outbound trunk, or none up (503)."""


class TrunkClient:
    """Registrations and outbound calls through trunks, for `UserAgent`."""

    config: UaConfig
    media: MediaProvider
    tx: TransactionLayer
    load: Counter[tuple[str, str]]
    _by_invite: dict[int, Call]

    if TYPE_CHECKING:
        # Provided by UserAgent.
        def _dispatch(self, outputs: Iterable[object], now: float) -> list[Event]: ...

        def _start_leg(
            self,
            req: Request,
            destination: Target,
            offer: MediaOffer,
            sdp: SdpSession,
            user: str,
            tag: str,
            now: float,
            **fields: Any,
        ) -> tuple[Call, list[Event]]: ...

        def _invite_request(
            self,
            ruri: str,
            to: str,
            from_: str,
            contact_user: str,
            transport: str,
            body: bytes,
            headers: Iterable[tuple[str, str]] = (),
        ) -> Request: ...

    def _init_trunks(self) -> None:
        self.registrations: dict[str, Registration] = {}
        for trunk in self.config.trunks.outbound():
            out = trunk.outbound
            assert out is not None
            if out.register:
                local = self.config.local[out.transport]
                self.registrations[trunk.name] = Registration(
                    trunk.name, out, local, self.config.user_agent
                )
        self._register_tx: dict[int, Registration] = {}

    # -- registrations ------------------------------------------------------------

    def _registration_tick(self, now: float) -> list[Event]:
        events: list[Event] = []
        for reg in self.registrations.values():
            if reg.due(now):
                events.extend(self._send_register(reg, reg.request(), now))
        return events

    def _registration_deadline(self) -> float | None:
        times = [r.next_at for r in self.registrations.values() if r.next_at is not None]
        return min(times) if times else None

    def unregister_trunks(self, now: float) -> list[Event]:
        """Remove our bindings at the providers (on shutdown)."""
        events: list[Event] = []
        for reg in self.registrations.values():
            if reg.state == "registered":
                events.extend(self._send_register(reg, reg.unregister(), now))
        return events

    def _send_register(self, reg: Registration, req: Request, now: float) -> list[Event]:
        tx, outs = self.tx.send_request(req, reg.target, now)
        self._register_tx[id(tx)] = reg
        return self._dispatch(outs, now)

    def _on_register_response(
        self, tx: ClientTransaction, resp: Response, now: float
    ) -> list[Event] | None:
        """A response to one of our REGISTERs (None: the transaction is not one)."""
        reg = self._register_tx.get(id(tx))
        if reg is None:
            return None
        if resp.status < 200:
            return []
        del self._register_tx[id(tx)]
        again, change = reg.on_response(resp, now)
        events: list[Event] = [change] if change is not None else []
        if again is not None:
            events.extend(self._send_register(reg, again, now))
        return events

    def _on_register_timeout(self, tx: ClientTransaction, now: float) -> list[Event] | None:
        reg = self._register_tx.pop(id(tx), None)
        if reg is None:
            return None
        change = reg.on_timeout(now)
        return [change] if change is not None else []

    def trunk_up(self, trunk: Trunk) -> bool:
        """Calls may go out through `trunk` now."""
        reg = self.registrations.get(trunk.name)
        full = trunk.max_calls and self.load["trunk", trunk.name] >= trunk.max_calls
        return (reg is None or reg.up) and not full

    # -- outbound calls --------------------------------------------------------------

    def _dial_number(
        self, number: str, user: str, now: float, display: str | None, caller_id: str | None = None
    ) -> tuple[Call | None, list[Event]]:
        """Dial a telephone number through the first trunk that is up."""
        raw = number.removeprefix("tel:").split(";", 1)[0]
        if not normalise_number(raw):
            raise SipParseError(f"cannot dial {number!r}: not a SIP URI or a number")
        trunks = self.config.trunks.outbound()
        if not trunks:
            raise NoTrunk(f"no outbound trunk to call {number}", 503)
        queue = [t for t in trunks if self.trunk_up(t)]
        if not queue:
            raise NoTrunk(f"no trunk is up to call {number}", 503)
        offer = self.media.allocate()
        if offer is None:
            return None, []
        sdp = SdpSession(offer, srtp=queue[0].srtp or self.config.srtp)
        tag = new_tag()
        req, destination = self._trunk_invite(queue[0], raw, user, display, tag, sdp, caller_id)
        call, events = self._start_leg(
            req, destination, offer, sdp, user, tag, now, dialled=raw, display=display,
            trunk_queue=[t.name for t in queue[1:]], caller_id=caller_id,
        )  # fmt: skip
        self._switch_trunk(call, queue[0].name)
        return call, events

    def _trunk_invite(
        self,
        trunk: Trunk,
        number: str,
        user: str,
        display: str | None,
        tag: str,
        sdp: SdpSession,
        caller_id: str | None = None,
    ) -> tuple[Request, Target]:
        """The INVITE for `number` through `trunk`, and where it goes."""
        out = trunk.outbound
        assert out is not None
        forms = trunk.forms(number)
        called = forms[0] if forms else number
        if out.strip_plus:
            called = called.removeprefix("+")
        domain = out.sip_domain
        ruri = f"sip:{called}@{domain}"
        caller = caller_id or out.caller_id or out.username or user
        name = out.caller_name or display
        from_ = (f"{quote_string(name)} " if name else "") + f"<sip:{caller}@{domain}>;tag={tag}"
        asserted = caller_id or out.caller_id
        headers = [("P-Asserted-Identity", f"<sip:{caller}@{domain}>")] if asserted else []
        req = self._invite_request(
            ruri,
            f"<{ruri}>",
            from_,
            out.username or user,
            out.transport,
            sdp.offer().serialise(),
            headers,
        )
        return req, Target(out.transport, out.host, out.port)

    def _send_invite(
        self, call: Call, req: Request, destination: Target, now: float
    ) -> list[Event]:
        """Send a new INVITE for the leg (with credentials, or through another trunk)."""
        self._by_invite.pop(id(call.invite_tx), None)
        tx, outs = self.tx.send_request(req, destination, now)
        assert isinstance(tx, InviteClientTransaction)
        call.invite, call.invite_tx, call.source = req, tx, destination
        self._by_invite[id(tx)] = call
        return self._dispatch(outs, now)

    def _switch_trunk(self, call: Call, name: str) -> None:
        if call.trunk is not None:
            self.load["trunk", call.trunk] -= 1
        call.trunk = name
        self.load["trunk", name] += 1

    def _trunk_retry(
        self, call: Call, status: int, resp: Response | None, now: float
    ) -> list[Event] | None:
        """After a failed INVITE through a trunk: the INVITE again with digest,
        or through the next trunk up; None when the leg should end."""
        if call.trunk is None or call.state is not CallState.DIALING or call.cancel_pending:
            return None
        by_name = {t.name: t for t in self.config.trunks.outbound()}
        trunk = by_name.get(call.trunk)
        if trunk is None:
            return None
        if resp is not None and status in (401, 407) and not call.auth_answered:
            again = self._with_credentials(call, trunk, resp)
            if again is not None:
                call.auth_answered = True
                return self._send_invite(call, again, call.source, now)
        if status not in FAILOVER_STATUSES:
            return None
        while call.trunk_queue:
            following = by_name.get(call.trunk_queue.pop(0))
            if following is not None and self.trunk_up(following):
                call.failovers.append(f"{trunk.name}:{status}")
                self._switch_trunk(call, following.name)
                call.sdp.srtp = following.srtp or self.config.srtp
                call.auth_answered = False
                req, destination = self._trunk_invite(
                    following, call.dialled, call.user, call.display, call.local_tag, call.sdp,
                    call.caller_id,
                )  # fmt: skip
                return self._send_invite(call, req, destination, now)
        return None

    def _with_credentials(self, call: Call, trunk: Trunk, resp: Response) -> Request | None:
        """The INVITE again, CSeq up by one, answering the challenge in `resp`
        (RFC 3261 section 22.2: same Call-ID and From tag, a new branch)."""
        out = trunk.outbound
        assert out is not None
        header = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
        invite = call.invite
        for challenge in resp.headers.get_all(header):
            try:
                value = answer_challenge(
                    challenge, "INVITE", invite.uri, out.username, out.password
                )
            except SipParseError:
                continue
            req = Request(method="INVITE", uri=invite.uri, headers=invite.headers.copy())
            req.body = invite.body
            via = invite.headers.get_list("Via")[0]
            req.headers.set("Via", via.split(";branch=")[0] + f";branch={new_branch()};rport")
            req.headers.set("CSeq", f"{invite.cseq.seq + 1} INVITE")
            req.headers.add("Authorization" if resp.status == 401 else "Proxy-Authorization", value)
            return req
        return None
