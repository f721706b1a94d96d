"""The UAS core's edge and trunks, sans-IO: who gets an answer, who gets nothing."""

from __future__ import annotations

import ipaddress

from mediaserver.sip.auth import Account, DigestAuth
from mediaserver.sip.calls import Blocked, CallIncoming, Event
from mediaserver.sip.edge import EdgePolicy
from mediaserver.sip.registrar import Registrar
from mediaserver.sip.transaction import Target
from mediaserver.sip.trunks import Trunk, TrunkTable
from mediaserver.sip.ua import UserAgent
from tests.sip.test_auth import client_header
from tests.sip.test_ua import SDP, make_ua, request, sent, statuses
from tests.sip.test_ua_auth import auth_ua, challenge_of, register_req

STRANGER = Target("udp", "192.0.2.50", 5060)
CARRIER = Target("udp", "198.51.100.10", 5060)
LOCAL = Target("udp", "127.0.0.1", 5061)
TRUNK = Trunk(
    "carrier",
    allow=(ipaddress.ip_network("198.51.100.0/28"),),
    numbers={"+15551230000": "hold"},
    country_code="1",
    max_calls=2,
)
TRUSTED = (ipaddress.ip_network("127.0.0.0/8"),)


def blocked(events: list[Event]) -> list[str]:
    return [e.reason for e in events if isinstance(e, Blocked)]


def edge_ua(**policy: object) -> UserAgent:
    ua, _ = make_ua(
        edge=EdgePolicy(trusted=TRUSTED, **policy),  # type: ignore[arg-type]
        trunks=TrunkTable([TRUNK]),
    )
    return ua


def test_a_scanner_gets_nothing_and_its_transaction_is_forgotten() -> None:
    ua = edge_ua()
    events = ua.receive(request("OPTIONS", extra="User-Agent: friendly-scanner"), STRANGER, 0.0)
    assert sent(events) == [] and blocked(events) == ["scanner"]
    assert len(ua.tx) == 0
    # Configured to answer: 403.
    ua = edge_ua(scanners="reject")
    events = ua.receive(
        request("INVITE", extra="User-Agent: sipcli/v1.8", body=SDP.format(direction="sendrecv")),
        STRANGER,
        0.0,
    )
    assert statuses(events) == [403]


def test_a_stranger_calling_a_user_we_do_not_have_gets_no_answer_not_even_100() -> None:
    ua = edge_ua()
    events = ua.receive(request(user="1000", body=SDP.format(direction="sendrecv")), STRANGER, 0.0)
    assert sent(events) == [] and blocked(events) == ["unknown_user"]
    # From a trusted address (a proxy in front of us) it is a plain 404.
    events = ua.receive(request(user="1000", call_id="c2"), LOCAL, 0.0)
    assert statuses(events) == [404]


def test_an_invite_flood_is_cut_at_the_invite_rate_and_then_banned() -> None:
    ua = edge_ua(invite_rate=1, invite_burst=3, ban_after=5)
    answered = refused = 0
    for i in range(20):
        events = ua.receive(
            request(call_id=f"f{i}", branch=f"z9hG4bK-f{i}", body=SDP.format(direction="sendrecv")),
            STRANGER,
            0.01 * i,
        )
        answered += 100 in statuses(events)
        refused += bool(blocked(events))
    assert answered == 3 and refused == 17
    assert ua.edge is not None and ua.edge.is_banned(STRANGER.host, 0.5)
    assert ua.edge.blocked["banned"] > 0 and ua.edge.blocked["invite_rate"] == 5


def trunk_invite(number: str, call_id: str, extra: str = "") -> bytes:
    return request(
        user=number,
        call_id=call_id,
        branch=f"z9hG4bK-{call_id}",
        extra=extra,
        body=SDP.format(direction="sendrecv"),
    )


def test_a_trunk_calls_without_digest_routed_by_number_up_to_its_max_calls() -> None:
    ua, _ = make_ua(
        edge=EdgePolicy(trusted=TRUSTED),
        trunks=TrunkTable([TRUNK]),
        auth=DigestAuth("mediaserver", {"alice": Account("alice", password="pw")}),
        registrar=Registrar(),
        invite_auth="all",
    )
    extra = "P-Asserted-Identity: <sip:+15559870000@carrier.example;verstat=TN-Validation-Passed>"
    events = ua.receive(trunk_invite("5551230000", "t1", extra), CARRIER, 0.0)
    (incoming,) = [e for e in events if isinstance(e, CallIncoming)]
    call = incoming.call
    assert statuses(events) == [100]
    assert (call.user, call.trunk, call.called) == ("hold", "carrier", "+15551230000")
    assert call.identity["verstat"] == "TN-Validation-Passed"
    # An unknown number: 404 (the carrier is told, it is no stranger).
    assert statuses(ua.receive(trunk_invite("5550000000", "t2"), CARRIER, 0.0)) == [404]
    # max_calls 2: the third call at once gets 503 with Retry-After.
    assert statuses(ua.receive(trunk_invite("+15551230000", "t3"), CARRIER, 0.0)) == [100]
    events = ua.receive(trunk_invite("+15551230000", "t4"), CARRIER, 0.0)
    assert statuses(events) == [503] and blocked(events) == ["trunk_calls"]
    assert sent(events)[0].headers.get("Retry-After")
    assert ua.load["trunk", "carrier"] == 2
    # Anyone else must prove to be a user: challenged, never let through.
    events = ua.receive(request(call_id="s1", body=SDP.format(direction="sendrecv")), STRANGER, 0.0)
    assert statuses(events) == [401]


def test_with_no_users_only_trunks_and_trusted_addresses_may_call() -> None:
    ua, _ = make_ua(edge=EdgePolicy(trusted=TRUSTED), trunks=TrunkTable([TRUNK]), invite_auth="all")
    events = ua.receive(request(body=SDP.format(direction="sendrecv")), STRANGER, 0.0)
    assert sent(events) == [] and blocked(events) == ["not_allowed"]
    assert statuses(ua.receive(request(call_id="c2"), LOCAL, 0.0)) == [100]
    assert statuses(ua.receive(trunk_invite("+15551230000", "t1"), CARRIER, 0.0)) == [100]


def test_calls_at_once_per_source_and_per_user() -> None:
    ua = edge_ua(max_calls_per_source=2, max_calls_per_user=1)
    first = ua.receive(request(call_id="a1", body=SDP.format(direction="sendrecv")), STRANGER, 0.0)
    assert statuses(first) == [100]
    # The same caller (alice) again: over the per-user limit.
    events = ua.receive(
        request(call_id="a2", branch="z9hG4bK-2", body=SDP.format(direction="sendrecv")),
        STRANGER,
        0.0,
    )
    assert statuses(events) == [503] and blocked(events) == ["user_calls"]
    # The first call ends: room again.
    (call,) = [e.call for e in first if isinstance(e, CallIncoming)]
    ua.reject(call, 486, 1.0)
    assert ua.load["user", "alice"] == 0
    events = ua.receive(
        request(call_id="a3", branch="z9hG4bK-3", body=SDP.format(direction="sendrecv")),
        STRANGER,
        1.0,
    )
    assert statuses(events) == [100]


def test_password_guessing_bans_the_address() -> None:
    ua = auth_ua(edge=EdgePolicy(trusted=TRUSTED, ban_after=3))
    for i in range(3):
        challenge = challenge_of(ua.receive(register_req(2 * i + 1), STRANGER, float(i)))
        guess = client_header(
            challenge, method="REGISTER", uri="sip:127.0.0.1:5060", password=f"guess{i}"
        )
        events = ua.receive(
            register_req(2 * i + 2, f"Authorization: {guess}", f"z9hG4bK-g{i}"), STRANGER, float(i)
        )
        assert statuses(events) == [403]
    assert ua.edge is not None and ua.edge.is_banned(STRANGER.host, 3.0)
    events = ua.receive(register_req(9, branch="z9hG4bK-9"), STRANGER, 3.0)
    assert sent(events) == [] and blocked(events) == ["banned"]
