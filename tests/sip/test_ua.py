"""The UAS core with a fake clock: dialog rules, offer/answer, CANCEL, timers, admission."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver.sip.calls import (
    CallConfirmed,
    CallEnded,
    CallIncoming,
    CallMediaChanged,
    CallState,
    Dropped,
    DtmfInfo,
    Event,
    TransferOutcome,
    UaConfig,
)
from mediaserver.sip.errors import SipParseError
from mediaserver.sip.message import Request, Response, parse_message
from mediaserver.sip.sdp import CODECS, MediaOffer
from mediaserver.sip.session_timer import SessionTimerPolicy
from mediaserver.sip.transaction import Send, Target, Timers
from mediaserver.sip.ua import UserAgent

PEER = Target("udp", "127.0.0.1", 5061)

SDP = (
    "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a={direction}\r\n"
)


class FakeMedia:
    def __init__(self, ports: int = 10) -> None:
        self.free = list(range(40000, 40000 + 2 * ports, 2))
        self.released: list[int] = []

    def allocate(self) -> MediaOffer | None:
        if not self.free:
            return None
        return MediaOffer(
            "127.0.0.1",
            self.free.pop(0),
            [CODECS["PCMU"], CODECS["PCMA"], CODECS["TELEPHONE-EVENT"]],
        )

    def release(self, offer: MediaOffer) -> None:
        self.released.append(offer.port)
        self.free.append(offer.port)


def make_ua(**kw: object) -> tuple[UserAgent, FakeMedia]:
    media = FakeMedia()
    cfg = UaConfig(
        local={"udp": ("127.0.0.1", 5060), "tcp": ("127.0.0.1", 5060)},
        routes=frozenset({"hold"}),
        timers=Timers(t1=0.5, t2=4.0, t4=5.0),
        session=SessionTimerPolicy(0, 90),
    )
    for key, value in kw.items():
        setattr(cfg, key, value)
    return UserAgent(cfg, media), media


def request(
    method: str = "INVITE",
    *,
    user: str = "hold",
    call_id: str = "c1",
    cseq: int = 1,
    branch: str = "z9hG4bK-1",
    to_tag: str | None = None,
    body: str = "",
    extra: str = "",
    ctype: str = "application/sdp",
) -> bytes:
    to = f"<sip:{user}@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:{user}@127.0.0.1:5060 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch={branch}",
        "Max-Forwards: 70",
        "From: <sip:alice@127.0.0.1>;tag=a1",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:alice@127.0.0.1:5061>",
    ]
    if extra:
        lines.extend(extra.strip().split("\n"))
    if body:
        lines.append(f"Content-Type: {ctype}")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def sent(events: list[Event]) -> list[Response | Request]:
    out: list[Response | Request] = []
    for e in events:
        if isinstance(e, Send):
            msg = parse_message(e.message.encode())
            assert isinstance(msg, Response | Request)
            out.append(msg)
    return out


def statuses(events: list[Event]) -> list[int]:
    return [m.status for m in sent(events) if isinstance(m, Response)]


def establish(ua: UserAgent, now: float = 0.0, direction: str = "sendrecv") -> tuple[object, str]:
    events = ua.receive(request(body=SDP.format(direction=direction)), PEER, now)
    incoming = [e for e in events if isinstance(e, CallIncoming)]
    assert incoming and statuses(events) == [100]
    call = incoming[0].call
    events = ua.answer(call, now)
    ok = sent(events)[0]
    assert isinstance(ok, Response) and ok.status == 200
    to_tag = ok.to.tag
    assert to_tag
    events = ua.receive(request("ACK", branch="z9hG4bK-ack", to_tag=to_tag), PEER, now + 0.01)
    assert any(isinstance(e, CallConfirmed) for e in events)
    return call, to_tag


def test_invite_answer_ack_bye() -> None:
    ua, media = make_ua()
    _call, tag = establish(ua)
    assert ua.active_calls == 1
    events = ua.receive(request("BYE", cseq=2, branch="z9hG4bK-bye", to_tag=tag), PEER, 1.0)
    assert statuses(events) == [200]
    ended = [e for e in events if isinstance(e, CallEnded)]
    assert ended and ended[0].by == "remote"
    assert ua.active_calls == 0 and media.released == [40000]


def test_answer_carries_sdp_contact_and_record_route() -> None:
    ua, _ = make_ua()
    data = request(
        body=SDP.format(direction="sendrecv"), extra="Record-Route: <sip:proxy.example.com;lr>"
    )
    call = next(e.call for e in ua.receive(data, PEER, 0.0) if isinstance(e, CallIncoming))
    ok = sent(ua.answer(call, 0.0))[0]
    assert isinstance(ok, Response)
    assert ok.headers.get("Record-Route") == "<sip:proxy.example.com;lr>"
    assert ok.contacts[0].uri.user == "hold"
    assert b"m=audio 40000 RTP/AVP 0 101" in ok.body


def test_unknown_user_404_and_no_codec_488() -> None:
    ua, media = make_ua()
    assert statuses(
        ua.receive(request(user="nobody", body=SDP.format(direction="sendrecv")), PEER, 0)
    ) == [404]
    g729 = (
        SDP.format(direction="sendrecv")
        .replace("RTP/AVP 0 101", "RTP/AVP 18")
        .replace("a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n", "")
    )
    assert statuses(ua.receive(request(call_id="c2", branch="z9hG4bK-2", body=g729), PEER, 0)) == [
        488
    ]
    assert media.released == [40000] and ua.active_calls == 0


def test_cancel_gets_200_and_invite_487() -> None:
    ua, _ = make_ua()
    events = ua.receive(request(body=SDP.format(direction="sendrecv")), PEER, 0)
    call = next(e.call for e in events if isinstance(e, CallIncoming))
    ua.ring(call, 0.1)
    cancel = request("CANCEL").replace(b"Contact: <sip:alice@127.0.0.1:5061>\r\n", b"")
    events = ua.receive(cancel, PEER, 0.5)
    msgs = sent(events)
    assert [(m.status, m.cseq.method) for m in msgs if isinstance(m, Response)] == [
        (200, "CANCEL"),
        (487, "INVITE"),
    ]
    assert any(isinstance(e, CallEnded) and e.reason == "cancelled" for e in events)
    assert statuses(ua.receive(request("CANCEL", call_id="zz", branch="z9hG4bK-9"), PEER, 1)) == [
        481
    ]


def test_in_dialog_rules() -> None:
    ua, _ = make_ua()
    _, tag = establish(ua)
    # unknown dialog
    assert statuses(
        ua.receive(request("BYE", cseq=2, branch="z9hG4bK-x", to_tag="nope"), PEER, 1)
    ) == [481]
    # CSeq going backwards
    assert statuses(
        ua.receive(request("INFO", cseq=1, branch="z9hG4bK-y", to_tag=tag), PEER, 1)
    ) == [500]
    # INFO with DTMF
    body = "Signal=5\r\nDuration=160\r\n"
    events = ua.receive(
        request(
            "INFO",
            cseq=3,
            branch="z9hG4bK-z",
            to_tag=tag,
            body=body,
            ctype="application/dtmf-relay",
        ),
        PEER,
        1,
    )
    assert statuses(events) == [200]
    assert [(e.digit, e.duration_ms) for e in events if isinstance(e, DtmfInfo)] == [("5", 160)]
    # unknown method in dialog
    assert statuses(
        ua.receive(request("MESSAGE", cseq=4, branch="z9hG4bK-m", to_tag=tag), PEER, 1)
    ) == [405]


def test_reinvite_hold_and_unhold() -> None:
    ua, _ = make_ua()
    call, tag = establish(ua)
    events = ua.receive(
        request(cseq=2, branch="z9hG4bK-r1", to_tag=tag, body=SDP.format(direction="sendonly")),
        PEER,
        1,
    )
    ok = sent(events)[0]
    assert isinstance(ok, Response) and ok.status == 200 and b"a=recvonly" in ok.body
    assert any(isinstance(e, CallMediaChanged) for e in events)
    assert call.on_hold  # type: ignore[attr-defined]
    ua.receive(request("ACK", cseq=2, branch="z9hG4bK-a2", to_tag=tag), PEER, 1.1)
    events = ua.receive(
        request(
            "UPDATE", cseq=3, branch="z9hG4bK-u1", to_tag=tag, body=SDP.format(direction="sendrecv")
        ),
        PEER,
        2,
    )
    ok = sent(events)[0]
    assert isinstance(ok, Response) and b"a=sendrecv" in ok.body
    assert not call.on_hold  # type: ignore[attr-defined]


def test_reinvite_while_pending_gets_500() -> None:
    ua, _ = make_ua()
    _, tag = establish(ua)
    ua.receive(
        request(cseq=2, branch="z9hG4bK-r1", to_tag=tag, body=SDP.format(direction="sendrecv")),
        PEER,
        1,
    )
    events = ua.receive(
        request(cseq=3, branch="z9hG4bK-r2", to_tag=tag, body=SDP.format(direction="sendrecv")),
        PEER,
        1.1,
    )
    resp = sent(events)[0]
    assert isinstance(resp, Response) and resp.status == 500 and resp.headers.get("Retry-After")


def test_glare_491() -> None:
    ua, _ = make_ua(session=SessionTimerPolicy(90, 90))
    call, tag = establish(ua)
    # our session refresh (refresher=uas since alice does not support timers) goes out at SE/2
    events = ua.tick(46.0)
    reinvite = [m for m in sent(events) if isinstance(m, Request)]
    assert reinvite and reinvite[0].method == "INVITE"
    assert reinvite[0].headers.get("Session-Expires") == "90;refresher=uas"
    events = ua.receive(
        request(cseq=2, branch="z9hG4bK-g", to_tag=tag, body=SDP.format(direction="sendrecv")),
        PEER,
        46.1,
    )
    assert statuses(events) == [491]
    assert call.state is CallState.CONFIRMED  # type: ignore[attr-defined]


def test_require_unknown_420_and_bad_bodies() -> None:
    ua, _ = make_ua()
    events = ua.receive(
        request(body=SDP.format(direction="sendrecv"), extra="Require: 100rel, foo, bar"), PEER, 0
    )
    resp = sent(events)[0]
    assert isinstance(resp, Response) and resp.status == 420
    assert resp.headers.get("Unsupported") == "foo, bar"  # 100rel is supported
    events = ua.receive(
        request(call_id="c2", branch="z9hG4bK-2", body="<x/>", ctype="text/xml"), PEER, 0
    )
    resp = sent(events)[0]
    assert (
        isinstance(resp, Response)
        and resp.status == 415
        and resp.headers.get("Accept") == "application/sdp"
    )
    events = ua.receive(
        request(
            call_id="c3",
            branch="z9hG4bK-3",
            body=SDP.format(direction="sendrecv"),
            extra="Accept: text/plain",
        ),
        PEER,
        0,
    )
    assert statuses(events) == [406]


def test_session_timer_422_and_refresher_uac() -> None:
    ua, _ = make_ua(session=SessionTimerPolicy(1800, 120))
    events = ua.receive(
        request(
            body=SDP.format(direction="sendrecv"), extra="Session-Expires: 100\nSupported: timer"
        ),
        PEER,
        0,
    )
    resp = sent(events)[0]
    assert isinstance(resp, Response) and resp.status == 422 and resp.headers.get("Min-SE") == "120"
    events = ua.receive(
        request(
            call_id="c2",
            branch="z9hG4bK-2",
            body=SDP.format(direction="sendrecv"),
            extra="Session-Expires: 300;refresher=uac\nSupported: timer",
        ),
        PEER,
        0,
    )
    call = next(e.call for e in events if isinstance(e, CallIncoming))
    ok = sent(ua.answer(call, 0))[0]
    assert isinstance(ok, Response)
    assert (
        ok.headers.get("Session-Expires") == "300;refresher=uac"
        and ok.headers.get("Require") == "timer"
    )
    ua.receive(request("ACK", call_id="c2", branch="z9hG4bK-ack", to_tag=ok.to.tag), PEER, 0.1)
    # no refresh from the UAC: we end the session before it expires (300 - 32)
    events = ua.tick(268.5)
    byes = [m for m in sent(events) if isinstance(m, Request)]
    assert byes and byes[0].method == "BYE"


def test_2xx_retransmitted_then_bye_without_ack() -> None:
    ua, _ = make_ua()
    events = ua.receive(request(body=SDP.format(direction="sendrecv")), PEER, 0)
    call = next(e.call for e in events if isinstance(e, CallIncoming))
    ua.answer(call, 0.0)
    times = []
    now = 0.0
    while now < 40:
        deadline = ua.next_deadline()
        assert deadline is not None
        now = deadline
        for msg in sent(ua.tick(now)):
            if isinstance(msg, Response) and msg.status == 200:
                times.append(round(now, 3))
            elif isinstance(msg, Request) and msg.method == "BYE":
                bye_at = now
                break
        else:
            continue
        break
    assert times[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert bye_at == pytest.approx(32.0)


def test_admission_and_draining() -> None:
    ua, _ = make_ua(max_calls=1)
    establish(ua)
    events = ua.receive(
        request(call_id="c2", branch="z9hG4bK-2", body=SDP.format(direction="sendrecv")), PEER, 1
    )
    resp = sent(events)[0]
    assert (
        isinstance(resp, Response) and resp.status == 503 and resp.headers.get("Retry-After") == "5"
    )
    ua2, _ = make_ua()
    assert statuses(ua2.receive(request("OPTIONS", branch="z9hG4bK-o"), PEER, 0)) == [200]
    ua2.drain()
    assert statuses(ua2.receive(request("OPTIONS", branch="z9hG4bK-o2"), PEER, 0)) == [503]
    assert statuses(
        ua2.receive(request(branch="z9hG4bK-i", body=SDP.format(direction="sendrecv")), PEER, 0)
    ) == [503]


def test_server_bye_and_its_timeout() -> None:
    ua, _ = make_ua()
    call, _ = establish(ua)
    events = ua.hangup(call, 1.0)  # type: ignore[arg-type]
    bye = sent(events)[0]
    assert (
        isinstance(bye, Request) and bye.method == "BYE" and bye.uri == "sip:alice@127.0.0.1:5061"
    )
    assert bye.from_.tag == call.local_tag  # type: ignore[attr-defined]
    # nobody answers: timer F ends the call as a timeout
    ended: list[CallEnded] = []
    now = 1.0
    while not ended and now < 100:
        deadline = ua.next_deadline()
        assert deadline is not None
        now = deadline
        ended = [e for e in ua.tick(now) if isinstance(e, CallEnded)]
    assert ended[0].by == "timeout" and now == pytest.approx(33.0)


def test_malformed_gets_400_or_is_dropped() -> None:
    ua, _ = make_ua()
    bad = request("OPTIONS").replace(b"CSeq: 1 OPTIONS", b"CSeq: x OPTIONS")
    events = ua.receive(bad, PEER, 0)
    # the 400 copies the bad CSeq, so read it without re-parsing
    assert [
        e.message.status for e in events if isinstance(e, Send) and isinstance(e.message, Response)
    ] == [400]
    assert any(isinstance(e, Dropped) for e in events)
    events = ua.receive(b"\x16\x03\x01garbage", PEER, 0)
    assert [type(e) for e in events] == [Dropped]


def test_reinvite_2xx_retransmitted_until_ack() -> None:
    ua, _ = make_ua()
    _, tag = establish(ua)
    ua.receive(
        request(cseq=2, branch="z9hG4bK-r1", to_tag=tag, body=SDP.format(direction="sendrecv")),
        PEER,
        1.0,
    )
    resent = [m for m in sent(ua.tick(1.5)) if isinstance(m, Response)]
    assert [(m.status, m.cseq.seq) for m in resent] == [(200, 2)]
    ua.receive(request("ACK", cseq=2, branch="z9hG4bK-a2", to_tag=tag), PEER, 1.6)
    assert sent(ua.tick(2.5)) == []


def test_merged_request_gets_482() -> None:
    ua, _ = make_ua()
    first = request(body=SDP.format(direction="sendrecv"))
    assert statuses(ua.receive(first, PEER, 0)) == [100]
    forked = first.replace(b"branch=z9hG4bK-1", b"branch=z9hG4bK-other")
    assert statuses(ua.receive(forked, PEER, 0.01)) == [482]


def test_our_reinvite_2xx_is_acked_again_when_repeated() -> None:
    ua, _ = make_ua(session=SessionTimerPolicy(90, 90))
    establish(ua)
    reinvite = next(m for m in sent(ua.tick(46.0)) if isinstance(m, Request))
    ok = reinvite.response(200)
    ok.headers.add("Contact", "<sip:alice@127.0.0.1:5061>")
    acks = [m for m in sent(ua.receive(ok.encode(), PEER, 46.1)) if isinstance(m, Request)]
    assert [a.method for a in acks] == ["ACK"] and acks[0].cseq.seq == reinvite.cseq.seq
    again = [m for m in sent(ua.receive(ok.encode(), PEER, 46.6)) if isinstance(m, Request)]
    assert [a.method for a in again] == ["ACK"]


@settings(max_examples=400, deadline=None)
@given(
    base=st.sampled_from(
        ["INVITE", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "ACK", "RESPONSE"]
    ),
    cuts=st.lists(st.tuples(st.integers(0, 900), st.binary(max_size=8)), max_size=4),
)
def test_core_never_raises_on_mangled_input(base: str, cuts: list[tuple[int, bytes]]) -> None:
    """Whatever arrives, the core answers or drops it; it never raises."""
    ua, _ = make_ua(session=SessionTimerPolicy(90, 90))
    _, tag = establish(ua)
    if base == "RESPONSE":
        data = (
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
            b"From: <sip:hold@127.0.0.1>;tag="
            + tag.encode()
            + b"\r\nTo: <sip:alice@127.0.0.1>;tag=a1\r\n"
            b"Call-ID: c1\r\nCSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n"
        )
    else:
        in_dialog = base not in ("INVITE", "OPTIONS")
        data = request(
            base,
            cseq=3,
            branch="z9hG4bK-fuzz",
            to_tag=tag if in_dialog else None,
            body=SDP.format(direction="sendonly") if base in ("INVITE", "UPDATE") else "",
        )
    for pos, insert in cuts:
        pos %= len(data) + 1
        data = data[:pos] + insert + data[pos + len(insert) :]
    ua.receive(data, PEER, 1.0)
    for now in (1.5, 5.0, 40.0, 100.0):
        ua.tick(now)


def _refer(ua: UserAgent) -> tuple[object, str, Request]:
    call, tag = establish(ua)
    events = ua.refer(call, "sip:desk@127.0.0.1:5099", 1.0)  # type: ignore[arg-type]
    (refer,) = sent(events)
    assert isinstance(refer, Request) and refer.method == "REFER"
    assert refer.headers.get("Refer-To") == "<sip:desk@127.0.0.1:5099>"
    assert refer.headers.get("Referred-By")
    return call, tag, refer


def _notify(tag: str, cseq: int, frag: str, event: str = "refer") -> bytes:
    return request(
        "NOTIFY",
        cseq=cseq,
        branch=f"z9hG4bK-n{cseq}",
        to_tag=tag,
        extra=f"Event: {event}\nSubscription-State: active",
        body=frag,
        ctype="message/sipfrag",
    )


def test_refer_accepted_and_the_notify_reports_the_outcome() -> None:
    ua, _ = make_ua()
    _call, tag, refer = _refer(ua)
    events = ua.receive(refer.response(202).encode(), PEER, 1.1)
    assert not [e for e in events if isinstance(e, TransferOutcome)]
    events = ua.receive(_notify(tag, 2, "SIP/2.0 100 Trying\r\n"), PEER, 1.2)
    assert statuses(events) == [200]
    assert not [e for e in events if isinstance(e, TransferOutcome)]
    events = ua.receive(_notify(tag, 3, "SIP/2.0 200 OK\r\n"), PEER, 2.0)
    assert statuses(events) == [200]
    (outcome,) = [e for e in events if isinstance(e, TransferOutcome)]
    assert outcome.ok and outcome.status == 200
    # A NOTIFY for an event we did not subscribe to is refused.
    events = ua.receive(_notify(tag, 4, "x", event="presence"), PEER, 2.1)
    assert statuses(events) == [489]


def test_refer_declined_or_failed_is_an_outcome() -> None:
    ua, _ = make_ua()
    _call, _tag, refer = _refer(ua)
    events = ua.receive(refer.response(603).encode(), PEER, 1.1)
    (outcome,) = [e for e in events if isinstance(e, TransferOutcome)]
    assert not outcome.ok and outcome.status == 603
    assert outcome.refused  # the REFER itself was refused: a bridge may stand in
    ua2, _ = make_ua()
    _call, tag, refer = _refer(ua2)
    ua2.receive(refer.response(202).encode(), PEER, 1.1)
    events = ua2.receive(_notify(tag, 2, "SIP/2.0 486 Busy Here\r\n"), PEER, 1.5)
    (outcome,) = [e for e in events if isinstance(e, TransferOutcome)]
    assert not outcome.ok and outcome.status == 486 and outcome.reason == "Busy Here"
    assert not outcome.refused  # accepted, then the target failed
    assert ua2.active_calls == 1  # a failed transfer leaves the call up


# -- outbound legs (B2BUA bridge) ------------------------------------------------------

DESK = Target("udp", "127.0.0.1", 5099)


def _dial(ua: UserAgent, now: float = 0.0) -> tuple[object, Request]:
    leg, events = ua.dial("sip:desk@127.0.0.1:5099", "support", now, display="Support Agent")
    assert leg is not None and leg.outbound and leg.state is CallState.DIALING
    (invite,) = sent(events)
    assert isinstance(invite, Request) and invite.method == "INVITE"
    assert invite.ruri.user == "desk" and invite.from_.tag == leg.local_tag
    assert invite.from_.display_name == "Support Agent" and invite.to.tag is None
    assert invite.content_type == "application/sdp" and b"m=audio 40000" in invite.body
    return leg, invite


def _answer(invite: Request, status: int = 200, *, tag: str = "b1") -> bytes:
    resp = invite.response(status, to_tag=tag)
    if 200 <= status < 300:
        resp.headers.add("Contact", "<sip:desk@127.0.0.1:5099>")
        resp.headers.add("Record-Route", "<sip:127.0.0.1:5070;lr>")
        resp.headers.add("Content-Type", "application/sdp")
        resp.body = SDP.format(direction="sendrecv").replace("6000", "7000").encode()
    return resp.encode()


def test_dial_answered_acks_and_confirms_then_bye_either_way() -> None:
    ua, media = make_ua()
    leg, invite = _dial(ua)
    assert not [e for e in ua.receive(_answer(invite, 180), DESK, 0.1) if isinstance(e, Send)]
    events = ua.receive(_answer(invite), DESK, 0.2)
    (ack,) = sent(events)
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.cseq.seq == invite.cseq.seq
    assert ack.to.tag == "b1" and ack.headers.get("Route") == "<sip:127.0.0.1:5070;lr>"
    assert [e for e in events if isinstance(e, CallConfirmed)]
    assert leg.state is CallState.CONFIRMED  # type: ignore[attr-defined]
    assert leg.media.remote_port == 7000  # type: ignore[attr-defined]
    # A repeated 2xx (our ACK was lost) is ACKed again, with no second confirmation.
    events = ua.receive(_answer(invite), DESK, 0.3)
    assert [m.method for m in sent(events) if isinstance(m, Request)] == ["ACK"]
    assert not [e for e in events if isinstance(e, CallConfirmed)]
    # The callee hangs up: its BYE is in our dialog.
    bye = (
        "BYE sip:support@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-bye\r\n"
        f"From: <sip:desk@127.0.0.1>;tag=b1\r\nTo: {invite.headers.get('From')}\r\n"
        f"Call-ID: {invite.call_id}\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    events = ua.receive(bye, DESK, 1.0)
    assert statuses(events) == [200]
    (ended,) = [e for e in events if isinstance(e, CallEnded)]
    assert ended.by == "remote" and ua.active_calls == 0 and media.released == [40000]


def test_dial_refused_or_unanswered_ends_the_leg_with_its_status() -> None:
    ua, media = make_ua()
    leg, invite = _dial(ua)
    events = ua.receive(_answer(invite, 486), DESK, 0.1)
    (ack,) = sent(events)  # the transaction ACKs the error itself
    assert isinstance(ack, Request) and ack.method == "ACK"
    (ended,) = [e for e in events if isinstance(e, CallEnded)]
    assert leg.final_status == 486 and ended.by == "remote"  # type: ignore[attr-defined]
    assert media.released == [40000]
    # Nobody answers at all: timer B (64*T1) ends it as a 408.
    ua2, _ = make_ua()
    leg2, _invite = _dial(ua2)
    ended2: list[CallEnded] = []
    for step in range(1, 80):
        ended2 += [e for e in ua2.tick(step * 0.5) if isinstance(e, CallEnded)]
    assert len(ended2) == 1 and leg2.final_status == 408  # type: ignore[attr-defined]


def test_hangup_while_dialing_cancels_after_the_first_provisional() -> None:
    ua, _ = make_ua()
    leg, invite = _dial(ua)
    assert ua.hangup(leg, 0.05, "caller left") == []  # type: ignore[arg-type]
    events = ua.receive(_answer(invite, 100), DESK, 0.1)
    (cancel,) = sent(events)
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert cancel.top_via.branch == invite.top_via.branch and cancel.cseq.seq == invite.cseq.seq
    events = ua.receive(_answer(invite, 487), DESK, 0.2)
    (ended,) = [e for e in events if isinstance(e, CallEnded)]
    assert ended.by == "local" and ended.reason == "caller left"


def test_an_answer_crossing_our_cancel_is_acked_and_ended_with_bye() -> None:
    ua, _ = make_ua()
    leg, invite = _dial(ua)
    ua.receive(_answer(invite, 180), DESK, 0.1)
    (cancel,) = sent(ua.hangup(leg, 0.2))  # type: ignore[arg-type]
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    events = ua.receive(_answer(invite), DESK, 0.3)
    assert [m.method for m in sent(events) if isinstance(m, Request)] == ["ACK", "BYE"]
    assert not [e for e in events if isinstance(e, CallConfirmed)]


def test_dial_refuses_a_non_sip_target_and_reports_no_ports() -> None:
    ua, media = make_ua()
    with pytest.raises(SipParseError):
        ua.dial("tel:+15551234", "support", 0.0)
    media.free.clear()
    assert ua.dial("sip:desk@127.0.0.1", "support", 0.0) == (None, [])
