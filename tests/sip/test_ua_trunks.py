"""Calling out through trunks, sans-IO: registering through the user-agent
core, INVITEs to numbers with digest on 407, failover to the next trunk."""

from __future__ import annotations

import ipaddress

import pytest

from mediaserver.sip.auth import Account, Authorized, DigestAuth
from mediaserver.sip.calls import CallConfirmed, CallEnded, Event, TrunkRegistration
from mediaserver.sip.errors import SipParseError
from mediaserver.sip.message import Request, Response, parse_message
from mediaserver.sip.transaction import Send, Target
from mediaserver.sip.trunks import Trunk, TrunkOutbound, TrunkTable
from mediaserver.sip.ua import UserAgent
from mediaserver.sip.ua_trunks import NoTrunk
from tests.sip.test_ua import SDP, make_ua

PROVIDER = DigestAuth("provider.test", {"acct": Account("acct", "s3cret")})


def trunk(name: str, host: str, *, register: bool = False, max_calls: int = 0) -> Trunk:
    out = TrunkOutbound(
        host, 5060, "udp", "provider.test", "acct", "s3cret", register, 600,
        caller_id="+15550001111", caller_name="Acme",
    )  # fmt: skip
    return Trunk(name, (ipaddress.ip_network(f"{host}/32"),), max_calls=max_calls, outbound=out)


A = trunk("a", "198.51.100.1")
B = trunk("b", "198.51.100.2")


def sends(events: list[Event]) -> list[tuple[Request | Response, Target]]:
    out = []
    for e in events:
        if isinstance(e, Send):
            msg = parse_message(e.message.encode())
            assert isinstance(msg, Request | Response)
            out.append((msg, e.target))
    return out


def answer(req: Request, status: int, *, challenge: str | None = None) -> bytes:
    resp = req.response(status, to_tag="prov1")
    if challenge is not None:
        for value in PROVIDER.challenges(0.0):
            resp.headers.add(challenge, value)
    if status == 200 and req.method == "INVITE":
        resp.headers.add("Contact", "<sip:gw@198.51.100.1>")
        resp.headers.add("Content-Type", "application/sdp")
        resp.body = SDP.format(direction="sendrecv").encode()
    elif status == 200:
        resp.headers.add("Contact", (req.headers.get("Contact") or "") + ";expires=600")
    return resp.encode()


def source(trunk: Trunk) -> Target:
    assert trunk.outbound is not None
    return Target("udp", trunk.outbound.host, 5060)


def dial(ua: UserAgent, number: str = "+1 (555) 765-4321") -> tuple[object, Request, Target]:
    leg, events = ua.dial(number, "front", 0.0, display="Front Desk")
    assert leg is not None
    ((invite, target),) = sends(events)
    assert isinstance(invite, Request)
    return leg, invite, target


def test_registers_through_the_core_and_a_number_waits_for_the_registration() -> None:
    ua, _ = make_ua(trunks=TrunkTable([trunk("a", "198.51.100.1", register=True)]))
    with pytest.raises(NoTrunk) as refused:
        ua.dial("+15557654321", "front", 0.0)
    assert refused.value.status == 503
    assert ua.next_deadline() == 0.0
    ((register, target),) = sends(ua.tick(0.0))
    assert isinstance(register, Request) and register.method == "REGISTER"
    assert target == source(A)
    ((again, _),) = sends(
        ua.receive(answer(register, 401, challenge="WWW-Authenticate"), target, 0.1)
    )
    assert isinstance(again, Request)
    check = PROVIDER.check(again.headers.get_all("Authorization"), "REGISTER", again.uri, "h", 0.2)
    assert check == Authorized("acct")
    events = ua.receive(answer(again, 200), target, 0.2)
    (change,) = [e for e in events if isinstance(e, TrunkRegistration)]
    assert change.state == "registered" and ua.registrations["a"].up
    assert ua.registrations["a"].next_at == pytest.approx(0.2 + 600 * 0.85)
    _leg, invite, _ = dial(ua)
    assert invite.method == "INVITE"


def test_a_number_goes_to_the_provider_with_our_caller_id_and_answers_407() -> None:
    ua, media = make_ua(trunks=TrunkTable([A]))
    leg, invite, target = dial(ua)
    assert target == source(A)
    assert invite.uri == "sip:+15557654321@provider.test"
    assert invite.from_.uri.user == "+15550001111" and invite.from_.display_name == "Acme"
    assert invite.headers.get("P-Asserted-Identity") == "<sip:+15550001111@provider.test>"
    assert ua.load["trunk", "a"] == 1
    events = ua.receive(answer(invite, 407, challenge="Proxy-Authenticate"), target, 0.1)
    (ack, _ack_to), (again, again_to) = sends(events)
    assert isinstance(ack, Request) and ack.method == "ACK" and again_to == target
    assert isinstance(again, Request) and again.method == "INVITE"
    creds = again.headers.get_all("Proxy-Authorization")
    assert PROVIDER.check(creds, "INVITE", again.uri, "h", 0.2) == Authorized("acct")
    assert again.call_id == invite.call_id and again.from_.tag == invite.from_.tag
    assert again.cseq.seq == 2 and again.top_via.branch != invite.top_via.branch
    assert again.body == invite.body
    # A second challenge to our credentials is a failure, not a loop.
    events = ua.receive(answer(again, 407, challenge="Proxy-Authenticate"), target, 0.3)
    (_ended,) = [e for e in events if isinstance(e, CallEnded)]
    assert leg.final_status == 407 and ua.load["trunk", "a"] == 0  # type: ignore[attr-defined]
    assert media.released == [40000]


def test_a_trunk_that_cannot_take_the_call_hands_it_to_the_next() -> None:
    ua, _ = make_ua(trunks=TrunkTable([A, B]))
    leg, invite, target = dial(ua)
    events = ua.receive(answer(invite, 503), target, 0.1)
    (_ack, _), (second, second_to) = sends(events)
    assert isinstance(second, Request) and second.method == "INVITE" and second_to == source(B)
    assert second.call_id != invite.call_id  # a new call at another provider
    assert leg.failovers == ["a:503"] and leg.trunk == "b"  # type: ignore[attr-defined]
    assert ua.load["trunk", "a"] == 0 and ua.load["trunk", "b"] == 1
    # The second one answers: the leg is confirmed through it.
    events = ua.receive(answer(second, 200), second_to, 0.2)
    assert [e for e in events if isinstance(e, CallConfirmed)]


def test_an_answer_about_the_callee_ends_the_call_and_silence_fails_over() -> None:
    ua, _ = make_ua(trunks=TrunkTable([A, B]))
    leg, invite, target = dial(ua)
    events = ua.receive(answer(invite, 486), target, 0.1)
    assert [e for e in events if isinstance(e, CallEnded)] and leg.final_status == 486  # type: ignore[attr-defined]
    # Trunk a never answers: timer B (64*T1) moves the call to b.
    leg, invite, target = dial(ua)
    moved = []
    for step in range(1, 80):
        moved += [m for m, t in sends(ua.tick(step * 0.5)) if t == source(B)]
    assert [m.method for m in moved if isinstance(m, Request)][:1] == ["INVITE"]
    assert leg.failovers == ["a:408"]  # type: ignore[attr-defined]


def test_a_full_trunk_is_skipped_and_bad_targets_are_refused() -> None:
    ua, _ = make_ua(trunks=TrunkTable([trunk("a", "198.51.100.1", max_calls=1), B]))
    _, _, first = dial(ua)
    _, _, second = dial(ua)
    assert first == source(A) and second == source(B)
    with pytest.raises(SipParseError):
        ua.dial("call me maybe", "front", 0.0)
    bare, _ = make_ua()
    with pytest.raises(NoTrunk):
        bare.dial("tel:+15557654321", "front", 0.0)
