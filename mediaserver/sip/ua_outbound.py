"""The UAC side of the user-agent core: dialing a leg for a B2BUA bridge, REFER
and the NOTIFYs that report on it, CANCEL of a leg that still rings.

`OutboundCalls` is a part of `UserAgent` (`mediaserver.sip.ua`), kept in its own
module; it works on the same calls, transactions and timers.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mediaserver.codecs.params import MediaOffer
from mediaserver.sip.calls import (
    Call,
    CallConfirmed,
    CallRinging,
    CallState,
    Event,
    MediaProvider,
    TransferOutcome,
    UaConfig,
)
from mediaserver.sip.dialog import Dialog, new_tag
from mediaserver.sip.errors import SipParseError
from mediaserver.sip.headers import quote_string
from mediaserver.sip.message import Request, Response
from mediaserver.sip.offer_answer import SdpSession
from mediaserver.sip.registrar import Binding
from mediaserver.sip.sdp import NegotiationError, SdpError, SessionDescription
from mediaserver.sip.transaction import (
    InviteClientTransaction,
    ServerTransaction,
    Target,
    new_branch,
)
from mediaserver.sip.transaction_layer import TransactionLayer
from mediaserver.sip.uri import Uri, parse_uri

__all__ = ["OutboundCalls", "hostport"]

_SIPFRAG = re.compile(rb"^SIP/2\.0\s+(\d{3})\s*([^\r\n]*)")


def _first_hop(route: str) -> Target:
    """Where a request with this first Route goes (RFC 3261 section 8.1.2)."""
    uri = parse_uri(route.strip().removeprefix("<").split(">", 1)[0])
    transport = (uri.params.get("transport") or "udp").lower()
    host, port = uri.host_port(5061 if uri.scheme == "sips" else 5060)
    return Target(transport, host, port)


def hostport(host: str, port: int) -> str:
    """`host:port`, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class OutboundCalls:
    """The UAC side of `UserAgent`: dialing a leg (B2BUA bridges), REFER and its
    NOTIFYs, CANCEL of a leg that still rings."""

    _allow: str
    _by_dialog: dict[tuple[str, str, str], Call]
    _by_invite: dict[int, Call]
    calls: dict[str, Call]
    config: UaConfig
    media: MediaProvider
    tx: TransactionLayer

    if TYPE_CHECKING:
        # Provided by UserAgent.
        def _dispatch(self, outputs: Iterable[object], now: float) -> list[Event]: ...

        def _end(self, call: Call, reason: str, by: str) -> list[Event]: ...

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

        def _schedule(self, call: Call, when: float | None) -> None: ...

        def _dial_number(
            self,
            number: str,
            user: str,
            now: float,
            display: str | None,
            caller_id: str | None = None,
        ) -> tuple[Call | None, list[Event]]: ...

        def _on_reliable_provisional(
            self, call: Call, resp: Response, now: float
        ) -> list[Event]: ...

        def _trunk_retry(
            self, call: Call, status: int, resp: Response | None, now: float
        ) -> list[Event] | None: ...

        def _send_ack(self, call: Call, resp: Response, now: float) -> list[Event]: ...

        def _send_bye(self, call: Call, now: float, reason: str) -> list[Event]: ...

        def _send_request(
            self,
            call: Call,
            method: str,
            now: float,
            headers: list[tuple[str, str]] | None = None,
        ) -> tuple[Request, list[Event]]: ...

    def refer(self, call: Call, target: str, now: float) -> list[Event]:
        """Ask the caller to call `target` instead (REFER with Refer-To, RFC 3515).

        The outcome comes as a `TransferOutcome` event: from the REFER's error
        response, or from the NOTIFY that reports the new call's final status.
        """
        if call.state is not CallState.CONFIRMED or call.refer_open:
            return [TransferOutcome(call, False, 491, "no transfer possible now")]
        assert call.dialog is not None
        call.refer_open = True
        _, events = self._send_request(
            call,
            "REFER",
            now,
            headers=[
                ("Refer-To", f"<{target}>"),
                ("Referred-By", f"<{call.dialog.local.uri}>"),
            ],
        )
        return events

    def dial(
        self,
        target: str,
        user: str,
        now: float,
        *,
        display: str | None = None,
        caller_id: str | None = None,
    ) -> tuple[Call | None, list[Event]]:
        """Call `target` (a SIP URI) as UAC, for a B2BUA bridge or an outbound call;
        `user` is our From user unless `caller_id` is given (through a trunk it
        then replaces the trunk's caller ID too).

        The INVITE carries our offer. The leg is a `Call` with `outbound` set: a
        2xx confirms it (`CallConfirmed`, after our ACK), an error or timeout ends
        it (`CallEnded` with `final_status`), `hangup` CANCELs it while it rings.
        Returns (None, []) when no media port is free.

        A user registered here (`target` names one of our addresses) is called
        at their newest binding: the Request-URI is its contact, and the INVITE
        goes where the REGISTER came from (so phones behind NAT are reached), or
        along the binding's Path (RFC 3327) when a proxy put one there.

        A telephone number (``+15551230000``, ``tel:...``) is dialled through
        the outbound trunks (`ua_trunks.py`), with digest and failover.

        Raises:
            SipParseError: `target` is neither a SIP URI nor a number.
            NoTrunk: a number, and no trunk is up to call it.
        """
        if not target.lower().startswith(("sip:", "sips:")):
            return self._dial_number(target, user, now, display, caller_id)
        uri = parse_uri(target)
        if uri.scheme not in ("sip", "sips") or not uri.host:
            raise SipParseError(f"cannot dial {target!r}: not a sip: URI with a host")
        offer = self.media.allocate()
        if offer is None:
            return None, []
        binding = self._binding_for(uri, now)
        route: tuple[tuple[str, str], ...] = ()
        if binding is not None:
            ruri, destination = binding.contact, binding.source
            if binding.path:
                route = tuple(("Route", hop) for hop in binding.path)
                destination = _first_hop(binding.path[0])
            transport = destination.transport
        else:
            ruri = target
            transport = (uri.params.get("transport") or "udp").lower()
            if transport not in self.config.local:
                transport = next(iter(self.config.local))
            host, port = uri.host_port(5061 if uri.scheme == "sips" else 5060)
            destination = Target(transport, host, port)
        sdp = SdpSession(offer, srtp=self.config.srtp)
        local_tag = new_tag()
        local_host, local_port = self.config.local[transport]
        name = f"{quote_string(display)} " if display else ""
        from_user = caller_id or user
        req = self._invite_request(
            ruri,
            f"<{target}>",
            f"{name}<sip:{from_user}@{hostport(local_host, local_port)}>;tag={local_tag}",
            user,
            transport,
            sdp.offer().serialise(),
            route,
        )
        return self._start_leg(
            req, destination, offer, sdp, user, local_tag, now, caller_id=caller_id
        )

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
    ) -> tuple[Call, list[Event]]:
        """Send a leg's first INVITE and keep its `Call` (with `fields` set)."""
        tx, outs = self.tx.send_request(req, destination, now)
        assert isinstance(tx, InviteClientTransaction)
        call = Call(
            id=secrets.token_hex(8),
            invite=req,
            invite_tx=tx,
            source=destination,
            user=user,
            local_tag=tag,
            offer=offer,
            sdp=sdp,
            created_at=now,
            state=CallState.DIALING,
            outbound=True,
            **fields,
        )
        self.calls[call.id] = call
        self._by_invite[id(tx)] = call
        return call, self._dispatch(outs, now)

    def _invite_request(
        self,
        ruri: str,
        to: str,
        from_: str,
        contact_user: str,
        transport: str,
        body: bytes,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """A new INVITE (CSeq 1, a fresh Call-ID) carrying the SDP offer `body`."""
        local_host, local_port = self.config.local[transport]
        here = hostport(local_host, local_port)
        req = Request(method="INVITE", uri=ruri)
        req.headers.add("Via", f"SIP/2.0/{transport.upper()} {here};branch={new_branch()};rport")
        req.headers.add("Max-Forwards", "70")
        req.headers.add("From", from_)
        req.headers.add("To", to)
        req.headers.add("Call-ID", f"{secrets.token_hex(12)}@{local_host}")
        req.headers.add("CSeq", "1 INVITE")
        tparam = "" if transport == "udp" else f";transport={transport}"
        req.headers.add("Contact", f"<sip:{contact_user}@{here}{tparam}>")
        req.headers.add("Allow", self._allow)
        req.headers.add("Supported", "100rel")
        req.headers.add("User-Agent", self.config.user_agent)
        for name, value in headers:
            req.headers.add(name, value)
        req.headers.add("Content-Type", "application/sdp")
        req.body = body
        return req

    def registered_contact(self, target: str, now: float) -> Binding | None:
        """The binding to call for `target` when it is a user registered here
        (a sip: URI at one of our addresses), else None."""
        try:
            return self._binding_for(parse_uri(target), now)
        except SipParseError:
            return None

    def _binding_for(self, uri: Uri, now: float) -> Binding | None:
        registrar = self.config.registrar
        if registrar is None:
            return None
        ours = any(
            uri.host == host and uri.port in (None, port)
            for host, port in self.config.local.values()
        )
        if not ours or not uri.user:
            return None
        bindings = registrar.lookup(uri.user, now)
        return bindings[0] if bindings else None

    def _cancel(self, call: Call, now: float, reason: str) -> list[Event]:
        """Stop ringing a leg we dial (RFC 3261 section 9.1)."""
        call.end_reason = call.end_reason or reason
        tx = call.invite_tx
        if tx.last_response is None:
            call.cancel_pending = True  # no CANCEL before a provisional response
            return []
        call.state = CallState.ENDING
        invite = call.invite
        cancel = Request(method="CANCEL", uri=invite.uri)
        cancel.headers.add("Via", invite.headers.get_list("Via")[0])
        cancel.headers.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            cancel.headers.add(name, invite.headers.get(name) or "")
        cancel.headers.add("CSeq", f"{invite.cseq.seq} CANCEL")
        _, outs = self.tx.send_request(cancel, call.source, now)
        # If no final response ever comes, give up after 64*T1 (section 9.1).
        call.expire_at = now + self.config.timers.timeout
        self._schedule(call, call.expire_at)
        return self._dispatch(outs, now)

    def _on_dial_response(self, call: Call, resp: Response, now: float) -> list[Event]:
        """A response to the INVITE of a leg we dial."""
        status = resp.status
        if status < 200:
            if call.cancel_pending and call.state is CallState.DIALING:
                call.cancel_pending = False
                return self._cancel(call, now, call.end_reason)
            events = self._on_reliable_provisional(call, resp, now)
            if status >= 180 and not call.rang and call.state is CallState.DIALING:
                call.rang = True
                events.append(CallRinging(call, status))
            return events
        if status >= 300:
            # The transaction has ACKed it already.
            again = self._trunk_retry(call, status, resp, now)
            if again is not None:
                return again
            call.final_status = status
            by = "local" if call.state is CallState.ENDING else "remote"
            return self._end(call, f"{status} {resp.reason}", by)
        if call.dialog is not None:
            # The 2xx again (our ACK was lost, or a second fork): ACK it again.
            return self._send_ack(call, resp, now) if call.dialog.remote_tag == resp.to.tag else []
        try:
            call.dialog = Dialog.from_response(call.invite, resp)
        except SipParseError as exc:
            call.final_status = 502
            return self._end(call, f"unusable 2xx: {exc.reason}", "remote")
        if call.early_dialog is not None:
            # Our PRACKs used CSeq numbers in the early dialog: go on from there.
            call.dialog.local_seq = max(call.dialog.local_seq, call.early_dialog.local_seq)
        self._by_dialog[call.dialog.key] = call
        call.answered_at = now
        events = self._send_ack(call, resp, now)
        cancelled = call.state is CallState.ENDING or call.cancel_pending
        call.state = CallState.CONFIRMED
        if cancelled:
            # The answer crossed our CANCEL: the dialog exists, end it with BYE.
            return events + self._send_bye(call, now, call.end_reason or "cancelled")
        try:
            if resp.content_type == "application/sdp" and resp.body:
                call.media = call.sdp.accept_answer(SessionDescription.parse(resp.body))
            elif call.media is None:  # else a reliable 1xx brought the answer
                raise SdpError("2xx without an SDP answer")
        except (SdpError, NegotiationError) as exc:
            call.end_reason = f"bad SDP answer: {exc}"
            call.final_status = 488
            return events + self._send_bye(call, now, "bad answer")
        events.append(CallConfirmed(call))
        return events

    def _on_notify(
        self, call: Call, req: Request, tx: ServerTransaction | None, now: float
    ) -> list[Event]:
        """Progress of our REFER (RFC 3515 section 2.4.5): a message/sipfrag status line."""
        event = (req.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != "refer" or not call.refer_open:
            return self._respond(tx, req, 489, now, "Bad Event")
        events = self._respond(tx, req, 200, now)
        match = _SIPFRAG.match(req.body.lstrip())
        if match is None:
            return events
        status = int(match.group(1))
        if status < 200:
            return events
        call.refer_open = False
        reason = match.group(2).decode("latin-1", "replace").strip()
        events.append(TransferOutcome(call, status < 300, status, reason))
        return events
