"""Early media and reliable provisional responses, for the user-agent core:
183 Session Progress with SDP, 100rel and PRACK (RFC 3262) both ways, and
UPDATE before the answer (RFC 3311).

`EarlyDialogs` is a part of `UserAgent` (`mediaserver.sip.ua`), kept in its own
module; it works on the same calls, transactions and timers.

As UAS: `progress` sends 183 with our SDP answer so the app can play before
answering (an announcement). When the caller supports or requires 100rel, the
183 is reliable: it carries ``Require: 100rel`` and an RSeq, is re-sent on T1
doubling until the PRACK comes, and the call is refused with 504 if none
comes in 64*T1 (RFC 3262 section 3). A 2xx waits for that PRACK, since the
183 carried the answer. The caller may UPDATE the session in the early dialog.

As UAC: our INVITEs say ``Supported: 100rel``; a reliable provisional on a leg
we dial is PRACKed once per RSeq, and an SDP answer in it is taken (the 2xx
then need not repeat it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from mediaserver.sip.calls import (
    Call,
    CallMediaChanged,
    CallState,
    Event,
    PendingReliable,
    UaConfig,
)
from mediaserver.sip.dialog import Dialog
from mediaserver.sip.errors import SipParseError
from mediaserver.sip.message import Request, Response
from mediaserver.sip.sdp import NegotiationError, SdpError, SessionDescription
from mediaserver.sip.transaction import (
    InviteServerTransaction,
    ServerTransaction,
    Target,
    new_branch,
)
from mediaserver.sip.transaction_layer import Retransmitter, TransactionLayer

__all__ = ["EarlyDialogs"]


class EarlyDialogs:
    """183, 100rel/PRACK and early UPDATE of `UserAgent`."""

    config: UaConfig
    tx: TransactionLayer
    _by_dialog: dict[tuple[str, str, str], Call]

    if TYPE_CHECKING:
        # Provided by UserAgent.
        def _dispatch(self, outputs: Iterable[object], now: float) -> list[Event]: ...

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

        def _dialog_response(self, call: Call, status: int) -> Response: ...

        def _schedule(self, call: Call, when: float | None) -> None: ...

        def _contact(self, call: Call) -> str: ...

        def _target(self, call: Call) -> Target: ...

        def answer(self, call: Call, now: float) -> list[Event]: ...

        def reject(
            self, call: Call, status: int, now: float, reason: str | None = None
        ) -> list[Event]: ...

    # -- UAS: 183 and PRACK ------------------------------------------------------------

    def progress(self, call: Call, now: float) -> list[Event]:
        """Send 183 Session Progress with our SDP answer (early media).

        Reliable when the caller supports 100rel. Nothing is sent when the call
        is past ringing or its INVITE had no offer (our offer would have to go
        in a reliable 183, which we do not make).
        """
        if call.state is not CallState.INCOMING or call.offer_in_answer or call.reliable:
            return []
        assert isinstance(call.invite_tx, InviteServerTransaction)
        resp = self._dialog_response(call, 183)
        resp.headers.add("Content-Type", "application/sdp")
        resp.body = call.answer_body
        if call.dialog is None:
            # The early dialog: the caller may PRACK, UPDATE or BYE in it.
            call.dialog = Dialog.from_invite(call.invite, call.local_tag)
            self._by_dialog[call.dialog.key] = call
        if _wants_100rel(call.invite):
            call.rseq += 1
            resp.headers.add("Require", "100rel")
            resp.headers.add("RSeq", str(call.rseq))
            retransmit = Retransmitter(self.config.timers)
            retransmit.start(now)
            call.reliable = PendingReliable(resp, call.rseq, retransmit, has_sdp=True)
            self._schedule(call, retransmit.next_deadline())
        return self._dispatch(self.tx.send_response(call.invite_tx, resp, now), now)

    def _answer_waits(self, call: Call) -> bool:
        """A 2xx must wait: our reliable 183 with the answer is not PRACKed yet."""
        if call.reliable is not None and call.reliable.has_sdp:
            call.answer_deferred = True
            return True
        return False

    def _reliable_timers(self, call: Call, now: float) -> list[Event]:
        """Re-send the unPRACKed 183; refuse the call once 64*T1 has passed."""
        pending = call.reliable
        if pending is None or call.state is not CallState.INCOMING:
            return []
        rt = pending.retransmit
        if rt.expired(now):
            call.reliable = None
            return self.reject(call, 504, now, "No PRACK")
        events: list[Event] = []
        if rt.due(now):
            assert isinstance(call.invite_tx, InviteServerTransaction)
            outs = self.tx.send_response(call.invite_tx, pending.response, now)
            events = self._dispatch(outs, now)
        self._schedule(call, rt.next_deadline())
        return events

    def _on_prack(
        self, call: Call, req: Request, tx: ServerTransaction | None, now: float
    ) -> list[Event]:
        """PRACK (RFC 3262 section 3): acknowledges our reliable provisional."""
        pending = call.reliable
        try:
            rseq, cseq, method = (req.headers.get("RAck") or "").split()
            matches = (
                pending is not None
                and int(rseq) == pending.rseq
                and int(cseq) == call.invite.cseq.seq
                and method.upper() == "INVITE"
            )
        except ValueError:
            return self._respond(tx, req, 400, now, "Bad RAck")
        if not matches:
            return self._respond(tx, req, 481, now)
        call.reliable = None
        events = self._respond(tx, req, 200, now)
        if call.answer_deferred:
            call.answer_deferred = False
            events.extend(self.answer(call, now))
        return events

    def _on_early_update(
        self, call: Call, req: Request, tx: ServerTransaction | None, now: float
    ) -> list[Event]:
        """UPDATE before the answer (RFC 3311): a new offer in the early dialog."""
        if call.reliable is not None:
            # Our answer is not PRACKed: the offer/answer exchange is still open.
            return self._respond(tx, req, 491, now)
        if not req.body:
            return self._respond(tx, req, 200, now, headers=[("Contact", self._contact(call))])
        try:
            answer, media = call.sdp.answer(SessionDescription.parse(req.body))
        except SdpError as exc:
            return self._respond(tx, req, 400, now, headers=[("Warning", f'399 - "{exc}"')])
        except NegotiationError:
            return self._respond(tx, req, 488, now)
        assert call.dialog is not None
        call.dialog.refresh_target(req)
        changed = call.media != media
        call.media = media
        # The 2xx to the INVITE carries the session as it now stands.
        call.answer_body = answer.serialise()
        events = self._respond(
            tx, req, 200, now, headers=[("Contact", self._contact(call))], body=call.answer_body
        )
        if changed:
            events.append(CallMediaChanged(call))
        return events

    # -- UAC: PRACK what a leg we dial sends reliably --------------------------------------

    def _on_reliable_provisional(self, call: Call, resp: Response, now: float) -> list[Event]:
        """A 1xx to our INVITE; PRACK it when it is reliable (once per RSeq)."""
        try:
            reliable = "100rel" in resp.tokens("Require") and resp.status > 100
            rseq = int(resp.headers.get("RSeq") or "0")
        except (SipParseError, ValueError):
            return []
        if not reliable or rseq <= call.rseq or not resp.to.tag:
            return []
        call.rseq = rseq
        early = call.early_dialog
        if early is None or early.remote_tag != resp.to.tag:
            try:
                early = call.early_dialog = Dialog.from_response(call.invite, resp)
            except SipParseError:
                return []
        if resp.content_type == "application/sdp" and resp.body and call.media is None:
            # An unusable answer here is not fatal: the 2xx may still bring one.
            with contextlib.suppress(SdpError, NegotiationError):
                call.media = call.sdp.accept_answer(SessionDescription.parse(resp.body))
        transport = call.source.transport
        host, port = self.config.local[transport]
        here = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        prack = early.create_request(
            "PRACK", via=f"SIP/2.0/{transport.upper()} {here};branch={new_branch()};rport"
        )
        prack.headers.add("RAck", f"{rseq} {call.invite.cseq.seq} INVITE")
        prack.headers.add("User-Agent", self.config.user_agent)
        uri = early.next_hop()
        hop = Target(transport, *uri.host_port(5061 if uri.scheme == "sips" else 5060))
        _, outs = self.tx.send_request(prack, hop, now)
        return self._dispatch(outs, now)


def _wants_100rel(invite: Request) -> bool:
    try:
        return "100rel" in invite.tokens("Require") or "100rel" in invite.tokens("Supported")
    except SipParseError:
        return False
