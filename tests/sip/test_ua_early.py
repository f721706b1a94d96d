"""Early media and 100rel, sans-IO: 183 with SDP, reliable when the caller
asks (RFC 3262: RSeq, retransmission, PRACK, the 2xx held for it, 504 without
it), UPDATE before the answer (RFC 3311), and PRACK for what a leg we dial
sends reliably."""

from __future__ import annotations

from mediaserver.sip.calls import Call, CallConfirmed, CallEnded, CallIncoming, CallMediaChanged
from mediaserver.sip.message import Request, Response
from mediaserver.sip.ua import UserAgent
from tests.sip.test_ua import PEER, SDP, make_ua, request, sent, statuses

OFFER = SDP.format(direction="sendrecv")


def incoming(ua: UserAgent, extra: str = "Supported: 100rel") -> Call:
    events = ua.receive(request(body=OFFER, extra=extra), PEER, 0.0)
    assert statuses(events) == [100]
    (event,) = [e for e in events if isinstance(e, CallIncoming)]
    return event.call


def in_dialog(method: str, to_tag: str, cseq: int, *, body: str = "", extra: str = "") -> bytes:
    return request(
        method, to_tag=to_tag, cseq=cseq, branch=f"z9hG4bK-{method}{cseq}", body=body, extra=extra
    )


def test_a_reliable_183_holds_the_answer_until_its_prack() -> None:
    ua, _ = make_ua()
    call = incoming(ua, "Require: 100rel")  # required: no more 420
    (progress,) = sent(ua.progress(call, 0.1))
    assert isinstance(progress, Response) and progress.status == 183
    assert progress.headers.get("Require") == "100rel" and progress.headers.get("RSeq") == "1"
    assert b"m=audio 40000 RTP/AVP" in progress.body and progress.to.tag == call.local_tag
    # The app answers at once: the 2xx waits, since the 183 carried the answer.
    assert ua.answer(call, 0.2) == []
    # A PRACK for another RSeq is not ours.
    wrong = in_dialog("PRACK", call.local_tag, 2, extra="RAck: 7 1 INVITE")
    assert statuses(ua.receive(wrong, PEER, 0.3)) == [481]
    prack = in_dialog("PRACK", call.local_tag, 3, extra="RAck: 1 1 INVITE")
    assert statuses(ua.receive(prack, PEER, 0.4)) == [200, 200]  # the PRACK's, then the INVITE's
    assert call.reliable is None and call.dialog is not None and call.dialog.remote_seq == 3


def test_without_a_prack_the_183_is_resent_and_the_call_refused_with_504() -> None:
    ua, _ = make_ua()
    call = incoming(ua)
    ua.progress(call, 0.0)
    resent = 0
    ended: list[CallEnded] = []
    final: list[int] = []
    for step in range(1, 80):
        events = ua.tick(step * 0.5)
        resent += sum(1 for m in sent(events) if isinstance(m, Response) and m.status == 183)
        final += [s for s in statuses(events) if s >= 200]
        ended += [e for e in events if isinstance(e, CallEnded)]
    assert resent >= 5 and final[:1] == [504] and len(ended) == 1


def test_an_unreliable_183_when_the_caller_lacks_100rel_and_the_answer_goes_at_once() -> None:
    ua, _ = make_ua()
    call = incoming(ua, extra="")
    (progress,) = sent(ua.progress(call, 0.1))
    assert isinstance(progress, Response) and progress.status == 183
    assert progress.headers.get("RSeq") is None and progress.body
    assert statuses(ua.answer(call, 0.2)) == [200]


def test_update_before_the_answer_changes_the_session_and_the_2xx_carries_it() -> None:
    ua, _ = make_ua()
    call = incoming(ua)
    ua.progress(call, 0.1)
    # Before the PRACK the offer/answer is still open: 491.
    early = in_dialog("UPDATE", call.local_tag, 2, body=SDP.format(direction="sendonly"))
    assert statuses(ua.receive(early, PEER, 0.15)) == [491]
    ua.receive(in_dialog("PRACK", call.local_tag, 3, extra="RAck: 1 1 INVITE"), PEER, 0.2)
    update = in_dialog("UPDATE", call.local_tag, 4, body=SDP.format(direction="sendonly"))
    events = ua.receive(update, PEER, 0.3)
    (ok,) = sent(events)
    assert isinstance(ok, Response) and ok.status == 200 and b"a=recvonly" in ok.body
    assert [e for e in events if isinstance(e, CallMediaChanged)] and call.on_hold
    (final,) = sent(ua.answer(call, 0.4))
    assert isinstance(final, Response) and final.status == 200 and final.body == ok.body


def test_a_leg_we_dial_prack_s_a_reliable_183_and_takes_its_answer() -> None:
    ua, _ = make_ua()
    leg, events = ua.dial("sip:desk@127.0.0.1:5099", "support", 0.0)
    assert leg is not None
    (invite,) = sent(events)
    assert isinstance(invite, Request) and "100rel" in invite.tokens("Supported")

    def reply(status: int, *, rseq: int | None = None, sdp: bool = True) -> bytes:
        resp = invite.response(status, to_tag="b1")
        resp.headers.add("Contact", "<sip:desk@127.0.0.1:5099>")
        if rseq is not None:
            resp.headers.add("Require", "100rel")
            resp.headers.add("RSeq", str(rseq))
        if sdp:
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = OFFER.replace("6000", "7000").encode()
        return resp.encode()

    (prack,) = sent(ua.receive(reply(183, rseq=5), PEER, 0.1))
    assert isinstance(prack, Request) and prack.method == "PRACK"
    assert prack.headers.get("RAck") == f"5 {invite.cseq.seq} INVITE" and prack.to.tag == "b1"
    assert leg.media is not None and leg.media.remote_port == 7000
    assert sent(ua.receive(reply(183, rseq=5), PEER, 0.2)) == []  # a repeat: PRACKed already
    events = ua.receive(reply(200, sdp=False), PEER, 0.3)  # the answer came in the 183
    assert [m.method for m in sent(events) if isinstance(m, Request)] == ["ACK"]
    assert [e for e in events if isinstance(e, CallConfirmed)]
    (bye,) = sent(ua.hangup(leg, 0.4))
    assert isinstance(bye, Request) and bye.cseq.seq > prack.cseq.seq
