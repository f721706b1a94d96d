"""The user-agent core: requests in, responses and call events out. Sans-IO.

`UserAgent` sits on the transaction layer and owns every SIP call's signalling
state: admission, OPTIONS, INVITE/re-INVITE/UPDATE offer-answer, CANCEL, BYE in
both directions, INFO, REFER, session timers and draining. Calls come in (UAS)
and, for a B2BUA bridge, go out (`dial`, UAC: INVITE with our offer, ACK for the
2xx, CANCEL while it rings). The asyncio shell feeds it datagrams and clock
readings and carries out what it returns:

- `Send` outputs go on the wire;
- call events (`CallIncoming`, `CallConfirmed`, `CallMediaChanged`,
  `CallEnded`, `DtmfInfo`) go to the application driving the call;
- `Dropped` explains a message that got no answer, for the log.

Applications answer back through `ring`, `answer`, `reject`, `hangup`, `refer`
and `dial`.

With digest auth configured (`UaConfig.auth`), REGISTER reaches the registrar
once its credentials check out, and INVITEs from provisioned users (or from
everyone, `invite_auth="all"`) are challenged with 401. A provisioned user's
INVITE whose digest then fails is not refused: it becomes a call marked with
`Call.auth_error`, so the application can run its auth-failure flow (a message,
a transfer, another agent). Unknown users and locked-out addresses get 403.

Before any of that, the edge defences (`sip/edge.py`, applied in
`ua_admission.py`) drop what a public port attracts: floods and banned
addresses before parsing, scanners, and strangers calling users we lack; a
trunk's INVITEs (`sip/trunks.py`) need no digest and are routed by number.

Order of checks for a new request follows RFC 3261 section 8.2: method (405),
extensions (420), dialog membership (481), content type (415), Accept (406),
then the request itself.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections import Counter
from collections.abc import Iterable

from mediaserver.sip.auth import AuthFailed
from mediaserver.sip.calls import (
    SUPPORTED_EXTENSIONS,
    Blocked,
    Call,
    CallConfirmed,
    CallEnded,
    CallIncoming,
    CallMediaChanged,
    CallState,
    Dropped,
    DtmfInfo,
    Event,
    MediaProvider,
    PendingOk,
    TransferOutcome,
    UaConfig,
    parse_dtmf_info,
)
from mediaserver.sip.dialog import Dialog, new_tag
from mediaserver.sip.edge import EdgeGuard
from mediaserver.sip.errors import SipParseError
from mediaserver.sip.message import (
    Message,
    MessageError,
    Request,
    Response,
    parse_message,
    reason_phrase,
)
from mediaserver.sip.offer_answer import SdpSession
from mediaserver.sip.sdp import (
    NegotiationError,
    SdpError,
    SessionDescription,
)
from mediaserver.sip.session_timer import (
    TooSmall,
    negotiate,
)
from mediaserver.sip.transaction import (
    AckReceived,
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    RequestReceived,
    ResponseReceived,
    Send,
    ServerTransaction,
    Target,
    TransactionTimeout,
    new_branch,
)
from mediaserver.sip.transaction_layer import Retransmitter, TransactionLayer
from mediaserver.sip.trunks import Trunk, caller_identity
from mediaserver.sip.ua_admission import Admission
from mediaserver.sip.ua_early import EarlyDialogs
from mediaserver.sip.ua_outbound import OutboundCalls, hostport
from mediaserver.sip.ua_trunks import TrunkClient

__all__ = ["ALLOWED_METHODS", "UserAgent"]

ALLOWED_METHODS = (
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO", "NOTIFY", "PRACK",
)  # fmt: skip
ACCEPTED_BODIES = ("application/sdp",)
DTMF_BODIES = ("application/dtmf-relay", "application/dtmf")


class UserAgent(Admission, OutboundCalls, TrunkClient, EarlyDialogs):
    """Sans-IO UAS core. See the module docstring for the contract."""

    def __init__(self, config: UaConfig, media: MediaProvider) -> None:
        self.config = config
        self.media = media
        self.tx = TransactionLayer(config.timers)
        self.calls: dict[str, Call] = {}
        self._by_dialog: dict[tuple[str, str, str], Call] = {}
        self._by_invite: dict[int, Call] = {}
        self._timers: list[tuple[float, int, str]] = []
        #: Unanswered INVITEs by (Call-ID, From tag, CSeq), for section 8.2.2.2.
        self._pending_invites: dict[tuple[str, str, int], Call] = {}
        self._seq = itertools.count()
        self.draining = False
        #: The edge defences (see `sip/edge.py`; None: off).
        self.edge = EdgeGuard(config.edge) if config.edge is not None else None
        #: Calls in progress by ("source", host), ("user", caller), ("trunk", name).
        self.load: Counter[tuple[str, str]] = Counter()
        methods = ALLOWED_METHODS + (("REGISTER",) if config.registrar is not None else ())
        self.allowed = frozenset(methods)
        self._allow = ", ".join(methods)
        self._init_trunks()

    # -- inputs ---------------------------------------------------------------

    def receive(self, data: bytes, source: Target, now: float) -> list[Event]:
        """Handle one datagram or one framed stream message."""
        edge = self._edge_for(source.host)
        if edge is not None:
            # Before any parsing: a banned or flooding address costs a lookup.
            why = edge.admit(source.host, now)
            if why is not None:
                return [Blocked(why, source)]
        try:
            msg = parse_message(data, limits=self.config.limits, stream=source.reliable)
        except MessageError as exc:
            return self._malformed(exc, source)
        if (
            edge is not None
            and isinstance(msg, Request)
            and msg.method == "INVITE"
            and _out_of_dialog(msg)
            and not edge.admit_invite(source.host, now)
        ):
            return [Blocked("invite_rate", source)]
        return self._dispatch(self.tx.receive(msg, source, now), now)

    def tick(self, now: float) -> list[Event]:
        """Fire every timer due at `now` (transaction and call timers)."""
        events: list[Event] = self._dispatch(self.tx.tick(now), now)
        events.extend(self._registration_tick(now))
        while self._timers and self._timers[0][0] <= now:
            _, _, call_id = heapq.heappop(self._timers)
            call = self.calls.get(call_id)
            if call is not None:
                events.extend(self._call_timers(call, now))
        return events

    def next_deadline(self) -> float | None:
        """The earliest moment `tick` has work to do."""
        timers = self._timers[0][0] if self._timers else None
        due = [self.tx.next_deadline(), self._registration_deadline(), timers]
        return min((d for d in due if d is not None), default=None)

    # -- application commands ---------------------------------------------------

    def ring(self, call: Call, now: float) -> list[Event]:
        """Send 180 Ringing."""
        if call.state is not CallState.INCOMING:
            return []
        assert isinstance(call.invite_tx, InviteServerTransaction)
        resp = self._dialog_response(call, 180)
        return self._dispatch(self.tx.send_response(call.invite_tx, resp, now), now)

    def answer(self, call: Call, now: float) -> list[Event]:
        """Send the 2xx with our SDP and start its retransmission (section 13.3.1.4);
        after the PRACK when a reliable 183 carried the answer."""
        if call.state is not CallState.INCOMING or self._answer_waits(call):
            return []
        assert isinstance(call.invite_tx, InviteServerTransaction)
        resp = self._dialog_response(call, 200)
        resp.headers.add("Allow", self._allow)
        resp.headers.add("Supported", ", ".join(SUPPORTED_EXTENSIONS))
        if call.timer is not None:
            resp.headers.add("Session-Expires", call.timer.header())
            if call.timer.require:
                resp.headers.add("Require", "timer")
        resp.headers.add("Content-Type", "application/sdp")
        resp.body = call.answer_body
        call.state = CallState.ANSWERED
        call.answered_at = now
        if call.dialog is None:  # else the early dialog of our 183 goes on
            call.dialog = Dialog.from_invite(call.invite, call.local_tag)
        self._by_dialog[call.dialog.key] = call
        self._pending_invites.pop(_merge_key(call.invite), None)
        self._start_session_timer(call, now)
        return self._send_ok(call, call.invite_tx, resp, now)

    def _send_ok(
        self, call: Call, tx: InviteServerTransaction, resp: Response, now: float
    ) -> list[Event]:
        """Send a 2xx to an INVITE and re-send it until the ACK (section 13.3.1.4)."""
        call.ok = PendingOk(tx, resp, Retransmitter(self.config.timers))
        call.ok.retransmit.start(now)
        self._schedule(call, call.ok.retransmit.next_deadline())
        return self._dispatch(self.tx.send_response(tx, resp, now), now)

    def reject(self, call: Call, status: int, now: float, reason: str | None = None) -> list[Event]:
        """Answer the INVITE with a final error and end the call."""
        if call.state is not CallState.INCOMING:
            return []
        assert isinstance(call.invite_tx, InviteServerTransaction)
        resp = call.invite.response(status, reason, to_tag=call.local_tag)
        events = self._dispatch(self.tx.send_response(call.invite_tx, resp, now), now)
        return events + self._end(call, f"rejected {status}", "local")

    def hangup(self, call: Call, now: float, reason: str = "hangup") -> list[Event]:
        """End the call from our side: an error answer before 2xx (CANCEL for a leg
        we dial), BYE after."""
        if call.state is CallState.DIALING:
            return self._cancel(call, now, reason)
        if call.state is CallState.INCOMING:
            return self.reject(call, 480, now, "Temporarily Unavailable")
        if call.state is CallState.ANSWERED:
            # Section 15: no BYE before the ACK; send it when the ACK (or timeout) comes.
            call.bye_pending = reason
            return []
        if call.state is CallState.CONFIRMED:
            return self._send_bye(call, now, reason)
        return []

    def drain(self) -> None:
        """Stop taking calls: OPTIONS and new INVITEs get 503 from now on."""
        self.draining = True

    @property
    def active_calls(self) -> int:
        """Calls not yet ended."""
        return len(self.calls)

    # -- transaction outputs -----------------------------------------------------

    def _dispatch(self, outputs: Iterable[object], now: float) -> list[Event]:
        events: list[Event] = []
        for out in outputs:
            if isinstance(out, Send):
                events.append(out)
            elif isinstance(out, RequestReceived):
                events.extend(self._on_request(out.request, out.transaction, out.source, now))
            elif isinstance(out, AckReceived):
                events.extend(self._on_ack(out.request, now))
            elif isinstance(out, ResponseReceived):
                events.extend(self._on_response(out.response, out.transaction, now))
            elif isinstance(out, TransactionTimeout):
                events.extend(self._on_timeout(out, now))
        return events

    def _malformed(self, exc: MessageError, source: Target) -> list[Event]:
        partial = exc.partial
        if not isinstance(partial, Request) or "Via" not in partial.headers:
            return [Dropped(exc.reason, source, None)]
        resp = partial.response(exc.status, reason_phrase(exc.status, exc.reason))
        resp.headers.add("Server", self.config.user_agent)
        if exc.status == 505:
            resp.headers.add("Supported", ", ".join(SUPPORTED_EXTENSIONS))
        # The Via may be unusable, so answer where the message came from.
        return [Send(resp, source), Dropped(exc.reason, source, exc.status)]

    def _respond(
        self,
        tx: ServerTransaction | None,
        req: Request,
        status: int,
        now: float,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> list[Event]:
        if tx is None:
            return []
        resp = self._response(req, status, reason, headers, body)
        return self._dispatch(self.tx.send_response(tx, resp, now), now)

    def _response(
        self,
        req: Request,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Response:
        """A response to `req`; a To without a tag gets a fresh one (not on 100)."""
        resp = req.response(status, reason, to_tag=new_tag() if status > 100 else None)
        resp.headers.add("Server", self.config.user_agent)
        for name, value in headers:
            resp.headers.add(name, value)
        if body:
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = body
        return resp

    # -- requests ------------------------------------------------------------------

    def _on_request(
        self, req: Request, tx: ServerTransaction | None, source: Target, now: float
    ) -> list[Event]:
        method = req.method
        if method == "ACK":
            return self._on_ack(req, now)
        edge = self._edge_for(source.host)
        if edge is not None and method != "CANCEL" and edge.scanner(req.headers.get("User-Agent")):
            edge.strike(source.host, now)
            return self._refuse_edge(tx, req, source, now, "scanner", edge.policy.scanners)
        if method not in self.allowed:
            return self._respond(tx, req, 405, now, headers=[("Allow", self._allow)])
        try:
            unsupported = [t for t in req.tokens("Require") if t not in SUPPORTED_EXTENSIONS]
        except SipParseError:
            return self._respond(tx, req, 400, now, "Bad Require")
        if unsupported and method != "CANCEL":
            return self._respond(
                tx, req, 420, now, headers=[("Unsupported", ", ".join(unsupported))]
            )
        if method == "CANCEL":
            return self._on_cancel(req, tx, now)
        if method == "REGISTER":
            return self._on_register(req, tx, source, now)
        to_tag = req.to.tag
        if to_tag is not None:
            return self._in_dialog(req, tx, to_tag, now)
        if method == "OPTIONS":
            return self._on_options(req, tx, now)
        if method == "INVITE":
            assert isinstance(tx, InviteServerTransaction)
            return self._on_invite(req, tx, source, now)
        return self._respond(tx, req, 481, now)

    def _body_check(self, req: Request, tx: ServerTransaction, now: float) -> list[Event] | None:
        """415 for a body we cannot read, 406 when we may not answer with SDP."""
        if req.body and req.content_type not in ACCEPTED_BODIES:
            return self._respond(
                tx, req, 415, now, headers=[("Accept", ", ".join(ACCEPTED_BODIES))]
            )
        accept = req.headers.get_list("Accept") if "Accept" in req.headers else None
        if accept is not None:
            types = {a.split(";")[0].strip().lower() for a in accept}
            if not types & {"application/sdp", "application/*", "*/*"}:
                return self._respond(tx, req, 406, now, headers=[("Accept", "application/sdp")])
        return None

    def _on_invite(
        self, req: Request, tx: InviteServerTransaction, source: Target, now: float
    ) -> list[Event]:
        if self.draining or self.active_calls >= self.config.max_calls:
            return self._respond(
                tx, req, 503, now, headers=[("Retry-After", str(self.config.retry_after))]
            )
        rejected = self._body_check(req, tx, now)
        if rejected is not None:
            return rejected
        if _merge_key(req) in self._pending_invites:
            # The same request reached us twice by different paths (a fork).
            return self._respond(tx, req, 482, now)
        trunk = self.config.trunks.match(source.host)
        if trunk is not None:
            return self._on_trunk_invite(req, tx, source, trunk, now)
        if (
            self.config.invite_auth == "all"
            and self.config.auth is None
            and not (self.edge is not None and self.edge.trusts(source.host))
        ):
            # Only trunks (and trusted addresses) may call: there are no users
            # to prove who they are.
            how = self.edge.policy.unknown if self.edge is not None else "reject"
            return self._refuse_edge(tx, req, source, now, "not_allowed", how)
        auth_user = auth_error = None
        if self._invite_needs_auth(req):
            checked = self._authenticate(req, tx, source, now)
            if isinstance(checked, list):
                return checked
            caller = req.from_.uri.user or ""
            if isinstance(checked, AuthFailed):
                if not checked.known_user or checked.user != caller:
                    return self._refuse(req, tx, source, now, checked.user, checked.reason)
                # A registered user's digest failed: the app's auth-failure flow answers.
                auth_error = f"SIP digest failed for {caller}: {checked.reason}"
            elif checked.user != caller and self._invite_claims_user(req):
                # Whoever says they are a provisioned user must prove to be that one.
                return self._refuse(
                    req, tx, source, now, checked.user, f"credentials of {checked.user!r}"
                )
            else:
                auth_user = checked.user
        user = req.ruri.user or ""
        if user not in self.config.routes:
            edge = self._edge_for(source.host)
            if edge is not None and not self._known_source(source, auth_user, now):
                # A stranger trying names: tell them nothing.
                return self._refuse_edge(tx, req, source, now, "unknown_user", edge.policy.unknown)
            return self._respond(tx, req, 404, now)
        return self._accept_invite(req, tx, source, now, user, auth_user, auth_error)

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
    ) -> list[Event]:
        """An INVITE that may become a call of route `user`: limits, session
        timer and SDP, then the call."""
        limit = self._over_limit(trunk, source, auth_user or req.from_.uri.user or "")
        if limit is not None:
            events = self._respond(
                tx, req, 503, now, headers=[("Retry-After", str(self.config.retry_after))]
            )
            if self.edge is not None:
                self.edge.count(limit)
            return [*events, Blocked(limit, source, 503)]
        try:
            if len(req.contacts) > 1:
                return self._respond(tx, req, 400, now, "More Than One Contact")
            timer = negotiate(req, self.config.session)
        except SipParseError as exc:
            return self._respond(tx, req, 400, now, exc.reason)
        if isinstance(timer, TooSmall):
            return self._respond(tx, req, 422, now, headers=[("Min-SE", str(timer.min_se))])
        offer = self.media.allocate()
        if offer is None:
            return self._respond(
                tx, req, 503, now, "No Media Ports", [("Retry-After", str(self.config.retry_after))]
            )
        sdp = SdpSession(offer, srtp=self._srtp_mode(user, trunk))
        call = Call(
            id=secrets.token_hex(8),
            invite=req,
            invite_tx=tx,
            source=source,
            user=user,
            local_tag=new_tag(),
            offer=offer,
            sdp=sdp,
            created_at=now,
            timer=timer,
            auth_user=auth_user,
            auth_error=auth_error,
            trunk=trunk.name if trunk is not None else None,
            called=called,
            # Asserted identities are believed from a trunk only (RFC 3325's
            # trust domain): anyone else could write them.
            identity=caller_identity(req) if trunk is not None else {},
        )
        try:
            if req.body:
                answer, call.media = sdp.answer(SessionDescription.parse(req.body))
                call.answer_body = answer.serialise()
            else:
                call.offer_in_answer = True
                call.answer_body = sdp.offer().serialise()
        except (SdpError, NegotiationError) as exc:
            self.media.release(offer)
            status = 400 if isinstance(exc, SdpError) else 488
            return self._respond(tx, req, status, now, reason_phrase(status, str(exc)))
        self.calls[call.id] = call
        self.load.update(self._load_keys(call))
        self._by_invite[id(tx)] = call
        self._pending_invites[_merge_key(req)] = call
        events = self._respond(tx, req, 100, now)
        events.append(CallIncoming(call))
        return events

    def _on_cancel(self, req: Request, tx: ServerTransaction | None, now: float) -> list[Event]:
        invite_tx = self.tx.find_invite(req)
        if invite_tx is None:
            return self._respond(tx, req, 481, now)
        events = self._respond(tx, req, 200, now)
        call = self._by_invite.get(id(invite_tx))
        if call is not None and call.state is CallState.INCOMING:
            resp = call.invite.response(487, to_tag=call.local_tag)
            events.extend(self._dispatch(self.tx.send_response(invite_tx, resp, now), now))
            events.extend(self._end(call, "cancelled", "remote"))
        return events

    def _in_dialog(
        self, req: Request, tx: ServerTransaction | None, to_tag: str, now: float
    ) -> list[Event]:
        call = self._by_dialog.get((req.call_id, to_tag, req.from_.tag or ""))
        if call is None or call.dialog is None:
            return self._respond(tx, req, 481, now)
        dialog = call.dialog
        if not dialog.accept_remote_cseq(req):
            return self._respond(tx, req, 500, now, "CSeq Out Of Order")
        method = req.method
        if method == "BYE":
            events = self._respond(tx, req, 200, now)
            return events + self._end(call, "remote BYE", "remote")
        if method == "OPTIONS":
            return self._on_options(req, tx, now)
        if method == "INFO":
            return self._on_info(call, req, tx, now)
        if method == "NOTIFY":
            return self._on_notify(call, req, tx, now)
        if method == "PRACK":
            return self._on_prack(call, req, tx, now)
        if method == "UPDATE" and call.state is CallState.INCOMING:
            return self._on_early_update(call, req, tx, now)
        if method in ("INVITE", "UPDATE"):
            return self._on_refresh(call, req, tx, now)
        return self._respond(tx, req, 405, now, headers=[("Allow", self._allow)])

    def _on_info(
        self, call: Call, req: Request, tx: ServerTransaction | None, now: float
    ) -> list[Event]:
        ctype = req.content_type
        if req.body and ctype not in DTMF_BODIES:
            return self._respond(tx, req, 415, now, headers=[("Accept", ", ".join(DTMF_BODIES))])
        events = self._respond(tx, req, 200, now)
        if req.body:
            digit, duration = parse_dtmf_info(req.body, ctype or "")
            if digit:
                events.append(DtmfInfo(call, digit, duration))
        return events

    def _on_refresh(
        self, call: Call, req: Request, tx: ServerTransaction | None, now: float
    ) -> list[Event]:
        """re-INVITE or UPDATE: new offer (hold/unhold), target refresh, session refresh."""
        assert tx is not None and call.dialog is not None
        if call.local_pending is not None:
            return self._respond(tx, req, 491, now)  # glare, section 14.2
        if call.remote_pending is not None and not call.remote_pending.terminated:
            if req.method == "INVITE" and isinstance(call.remote_pending, InviteServerTransaction):
                return self._respond(tx, req, 500, now, headers=[("Retry-After", "1")])
            return self._respond(tx, req, 491, now)
        rejected = self._body_check(req, tx, now)
        if rejected is not None:
            return rejected
        try:
            timer = negotiate(req, self.config.session)
        except SipParseError as exc:
            return self._respond(tx, req, 400, now, headers=[("Warning", f'399 - "{exc.reason}"')])
        if isinstance(timer, TooSmall):
            return self._respond(tx, req, 422, now, headers=[("Min-SE", str(timer.min_se))])
        events: list[Event] = []
        body = b""
        changed = False
        if req.body:
            try:
                answer, media = call.sdp.answer(SessionDescription.parse(req.body))
            except SdpError as exc:
                return self._respond(tx, req, 400, now, headers=[("Warning", f'399 - "{exc}"')])
            except NegotiationError:
                # Section 14.2: a rejected re-offer leaves the old session in place.
                return self._respond(tx, req, 488, now)
            changed = call.media is None or call.media != media
            call.media = media
            body = answer.serialise()
        elif req.method == "INVITE":
            body = call.sdp.offer().serialise()  # offer in 2xx, answer in ACK
        call.dialog.refresh_target(req)
        call.timer = timer
        headers = [("Contact", self._contact(call)), ("Supported", ", ".join(SUPPORTED_EXTENSIONS))]
        if timer is not None:
            headers.append(("Session-Expires", timer.header()))
            if timer.require:
                headers.append(("Require", "timer"))
        if isinstance(tx, InviteServerTransaction):
            call.remote_pending = tx
            events += self._send_ok(call, tx, self._response(req, 200, None, headers, body), now)
        else:
            events += self._respond(tx, req, 200, now, headers=headers, body=body)
        self._start_session_timer(call, now)
        if changed:
            events.append(CallMediaChanged(call))
        return events

    def _on_ack(self, req: Request, now: float) -> list[Event]:
        to_tag = req.to.tag
        call = self._by_dialog.get((req.call_id, to_tag or "", req.from_.tag or ""))
        if call is None:
            return []  # ACK for a non-2xx is absorbed by its transaction; others dropped
        events: list[Event] = []
        if req.body and req.content_type == "application/sdp":
            try:
                media = call.sdp.accept_answer(SessionDescription.parse(req.body))
            except (SdpError, NegotiationError) as exc:
                # Section 13.3.1.4 leaves us only BYE for an unusable answer.
                call.end_reason = f"bad SDP answer in ACK: {exc}"
                call.state = CallState.CONFIRMED
                return self._send_bye(call, now, "bad answer")
            changed = call.media != media
            call.media = media
            if changed and call.state is CallState.CONFIRMED:
                events.append(CallMediaChanged(call))
        call.remote_pending = None
        if call.ok is not None and req.cseq.seq == call.ok.response.cseq.seq:
            call.ok.retransmit.stop()
        if call.state is CallState.ANSWERED:
            call.state = CallState.CONFIRMED
            events.append(CallConfirmed(call))
            if call.bye_pending is not None:
                events.extend(self._send_bye(call, now, call.bye_pending))
        return events

    # -- responses to what we sent ---------------------------------------------------

    def _on_response(self, resp: Response, tx: ClientTransaction, now: float) -> list[Event]:
        registration = self._on_register_response(tx, resp, now)
        if registration is not None:
            return registration
        if isinstance(tx, InviteClientTransaction):
            leg = self._by_invite.get(id(tx))
            if leg is not None:
                return self._on_dial_response(leg, resp, now)
        call = self._call_for_client(tx)
        if call is None or resp.status < 200:
            return []
        if tx is call.bye_tx:
            return self._end(call, call.end_reason or "local BYE", "local")
        if tx is call.refer_tx:
            call.refer_tx = None
            if resp.status >= 300:
                call.refer_open = False
                return [TransferOutcome(call, False, resp.status, resp.reason, refused=True)]
            return []  # 202 Accepted: the NOTIFYs tell how it goes
        if call.local_ack is not None and call.local_ack[0] is tx and resp.status < 300:
            return [call.local_ack[1]]  # the peer re-sent its 2xx: our ACK was lost
        if tx is call.local_pending:
            call.local_pending = None
            if resp.status == 422:
                return []  # keep the session; the next refresh will try again
            if resp.status in (408, 481):
                return self._end(call, f"refresh failed {resp.status}", "timeout")
            if 200 <= resp.status < 300 and call.dialog is not None:
                events = self._send_ack(call, resp, now)
                if events and isinstance(events[0], Send):
                    call.local_ack = (tx, events[0])
                self._start_session_timer(call, now)
                return events
        return []

    def _on_timeout(self, out: TransactionTimeout, now: float) -> list[Event]:
        tx = out.transaction
        if isinstance(tx, InviteServerTransaction):
            return []  # timer H: the non-2xx was not ACKed; the call already ended
        assert isinstance(tx, ClientTransaction)
        registration = self._on_register_timeout(tx, now)
        if registration is not None:
            return registration
        leg = self._by_invite.get(id(tx))
        if leg is not None and leg.state in (CallState.DIALING, CallState.ENDING):
            again = self._trunk_retry(leg, 408, None, now)
            if again is not None:
                return again
            leg.final_status = 408
            return self._end(leg, "no answer to INVITE (timer B)", "timeout")
        call = self._call_for_client(tx)
        if call is None:
            return []
        if tx is call.refer_tx:
            # The transferee never answered our REFER: the transfer failed, not the call.
            call.refer_tx, call.refer_open = None, False
            return [TransferOutcome(call, False, 408, "REFER timed out")]
        # A BYE or refresh that times out means the peer is gone (network partition).
        call.end_reason = f"timer {out.timer} on {tx.request.method}"
        return self._end(call, call.end_reason, "timeout")

    def _call_for_client(self, tx: ClientTransaction) -> Call | None:
        req = tx.request
        try:
            key = (req.call_id, req.from_.tag or "", req.to.tag or "")
        except SipParseError:
            return None
        return self._by_dialog.get(key)

    # -- our requests -----------------------------------------------------------------

    def _send_request(
        self,
        call: Call,
        method: str,
        now: float,
        headers: list[tuple[str, str]] | None = None,
    ) -> tuple[Request, list[Event]]:
        assert call.dialog is not None
        transport = call.source.transport
        host, port = self.config.local[transport]
        via = f"SIP/2.0/{transport.upper()} {hostport(host, port)};branch={new_branch()};rport"
        req = call.dialog.create_request(method, via=via, contact=self._contact(call))
        req.headers.add("User-Agent", self.config.user_agent)
        for name, value in headers or []:
            req.headers.add(name, value)
        target = self._target(call)
        tx, outs = self.tx.send_request(req, target, now)
        if method == "BYE":
            call.bye_tx = tx
        elif method == "REFER":
            call.refer_tx = tx
        elif method in ("INVITE", "UPDATE"):
            call.local_pending = tx
        return req, self._dispatch(outs, now)

    def _send_bye(self, call: Call, now: float, reason: str) -> list[Event]:
        if call.state is CallState.ENDING or call.dialog is None:
            return []
        call.state = CallState.ENDING
        call.end_reason = call.end_reason or reason
        _, events = self._send_request(call, "BYE", now)
        return events

    def _send_ack(self, call: Call, resp: Response, now: float) -> list[Event]:
        """ACK a 2xx to our re-INVITE (section 13.2.2.4); a UPDATE needs none."""
        assert call.dialog is not None
        if resp.cseq.method != "INVITE":
            return []
        ack = Request(method="ACK", uri=str(call.dialog.remote_target))
        transport = call.source.transport
        host, port = self.config.local[transport]
        ack.headers.add(
            "Via",
            f"SIP/2.0/{transport.upper()} {hostport(host, port)};branch={new_branch()};rport",
        )
        ack.headers.add("Max-Forwards", "70")
        for route in call.dialog.route_set:
            ack.headers.add("Route", str(route))
        ack.headers.add("From", str(call.dialog.local))
        ack.headers.add("To", str(call.dialog.remote))
        ack.headers.add("Call-ID", call.dialog.call_id)
        ack.headers.add("CSeq", f"{resp.cseq.seq} ACK")
        return [Send(ack, self._target(call))]

    def _target(self, call: Call) -> Target:
        """Where our in-dialog requests go: the next hop, over the call's own
        socket or connection while it lasts (RFC 3261 18.1.1 allows reusing the
        connection; peers behind NAT rely on it). The transports fall back to
        the next hop's address when that connection has closed."""
        assert call.dialog is not None
        uri = call.dialog.next_hop()
        transport = (uri.params.get("transport") or call.source.transport).lower()
        if transport not in self.config.local:
            transport = call.source.transport
        host, port = uri.host_port(5061 if uri.scheme == "sips" else 5060)
        conn_id = call.source.conn_id if transport == call.source.transport else None
        return Target(transport, host, port, conn_id)

    def _contact(self, call: Call) -> str:
        transport = call.source.transport
        host, port = self.config.local[transport]
        # sips: only in a sips: dialog (RFC 3261 12.1.1); over TLS sip: keeps transport=tls.
        scheme = "sips" if call.invite.uri.lower().startswith("sips:") else "sip"
        tparam = "" if transport == "udp" else f";transport={transport}"
        return f"<{scheme}:{call.user}@{hostport(host, port)}{tparam}>"

    def _dialog_response(self, call: Call, status: int) -> Response:
        resp = call.invite.response(status, to_tag=call.local_tag)
        for rr in call.invite.headers.get_all("Record-Route"):
            resp.headers.add("Record-Route", rr)
        resp.headers.add("Contact", self._contact(call))
        resp.headers.add("Server", self.config.user_agent)
        return resp

    # -- timers ---------------------------------------------------------------------------

    def _schedule(self, call: Call, when: float | None) -> None:
        if when is not None:
            heapq.heappush(self._timers, (when, next(self._seq), call.id))

    def _start_session_timer(self, call: Call, now: float) -> None:
        timer = call.timer
        call.refresh_at = call.expire_at = None
        if timer is None:
            return
        if timer.refresher == "uas":
            call.refresh_at = now + timer.refresh_after()
            self._schedule(call, call.refresh_at)
        else:
            call.expire_at = now + timer.expire_after()
            self._schedule(call, call.expire_at)

    def _call_timers(self, call: Call, now: float) -> list[Event]:
        events = self._reliable_timers(call, now)
        ok = call.ok
        if ok is not None and ok.retransmit.running:
            rt = ok.retransmit
            if rt.expired(now):
                # Section 13.3.1.4: no ACK after 64*T1 -> confirm and end with BYE.
                rt.stop()
                call.state = CallState.CONFIRMED
                call.end_reason = "no ACK for 2xx"
                return self._send_bye(call, now, "no ACK for 2xx")
            if rt.due(now):
                events.extend(self._dispatch(self.tx.send_response(ok.tx, ok.response, now), now))
            self._schedule(call, rt.next_deadline())
        if (
            call.refresh_at is not None
            and now >= call.refresh_at
            and call.state is CallState.CONFIRMED
        ):
            call.refresh_at = None
            events.extend(self._send_refresh(call, now))
        if call.expire_at is not None and now >= call.expire_at:
            call.expire_at = None
            if call.outbound and call.dialog is None:
                call.final_status = call.final_status or 487
                return self._end(call, call.end_reason or "cancelled", "local")
            if call.state is CallState.CONFIRMED:
                call.end_reason = "session timer expired"
                events.extend(self._send_bye(call, now, "session timer expired"))
        return events

    def _send_refresh(self, call: Call, now: float) -> list[Event]:
        """Refresh the session (RFC 4028 section 7.4): UPDATE if allowed, else re-INVITE."""
        if call.local_pending is not None or call.remote_pending is not None:
            self._schedule(call, now + 1.0)
            call.refresh_at = now + 1.0
            return []
        allow = _safe_tokens(call.invite, "Allow")
        method = "UPDATE" if "UPDATE" in allow else "INVITE"
        req, events = self._send_request(call, method, now)
        assert call.timer is not None
        req.headers.add("Session-Expires", f"{call.timer.interval};refresher=uas")
        req.headers.add("Supported", "timer")
        if method == "INVITE":
            # Same SDP as before, so the o= version stays (RFC 4028 section 7.4).
            req.headers.add("Content-Type", "application/sdp")
            req.body = call.sdp.offer(
                local_direction=call.media.direction if call.media else "sendrecv"
            ).serialise()
        return events

    # -- ending ---------------------------------------------------------------------------

    def _end(self, call: Call, reason: str, by: str) -> list[Event]:
        if call.state is CallState.ENDED or call.id not in self.calls:
            return []
        call.state = CallState.ENDED
        call.end_reason = call.end_reason or reason
        if call.ok is not None:
            call.ok.retransmit.stop()
        del self.calls[call.id]
        if not call.outbound or call.trunk is not None:
            self.load.subtract(self._load_keys(call))
            self.load = +self.load if len(self.load) > 4 * len(self.calls) + 64 else self.load
        self._by_invite.pop(id(call.invite_tx), None)
        self._pending_invites.pop(_merge_key(call.invite), None)
        if len(self._timers) > 2 * len(self.calls) + 64:
            # Entries of ended calls would otherwise linger until their (session
            # timer) deadlines, up to half an hour; drop them in one pass.
            self._timers = [t for t in self._timers if t[2] in self.calls]
            heapq.heapify(self._timers)
        if call.dialog is not None:
            self._by_dialog.pop(call.dialog.key, None)
        self.media.release(call.offer)
        return [CallEnded(call, call.end_reason, by)]


def _out_of_dialog(req: Request) -> bool:
    """Whether `req` starts something new (no To tag; an unreadable To counts)."""
    try:
        return req.to.tag is None
    except SipParseError:
        return True


def _merge_key(req: Request) -> tuple[str, str, int]:
    return (req.call_id, req.from_.tag or "", req.cseq.seq)


def _safe_tokens(msg: Message, name: str) -> list[str]:
    try:
        return msg.tokens(name)
    except SipParseError:
        return []
