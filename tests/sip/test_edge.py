"""The edge defences, sans-IO: token buckets, bans, scanners, bounded memory."""

from __future__ import annotations

import ipaddress

import pytest

from mediaserver.sip.edge import EdgeGuard, EdgePolicy, TokenBucket, destination_allowed


def test_a_bucket_gives_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5)  # one token back after half a second at 2/s
    assert not bucket.take(0.5)
    assert [bucket.take(10.0) for _ in range(4)] == [True, True, True, False]  # capped


def test_a_flooding_address_is_limited_then_banned_and_the_ban_ends() -> None:
    guard = EdgeGuard(
        EdgePolicy(request_rate=1, request_burst=5, ban_after=3, ban_window=10, ban_time=60)
    )
    verdicts = [guard.admit("192.0.2.7", 0.0) for _ in range(10)]
    assert verdicts[:5] == [None] * 5
    # Three breaches are three strikes: banned, so the rest is dropped unread.
    assert verdicts[5:8] == ["rate"] * 3
    assert verdicts[8:] == ["banned"] * 2
    assert guard.banned(1.0) == 1 and guard.blocked["bans"] == 1
    # Others are not affected.
    assert guard.admit("192.0.2.8", 1.0) is None
    assert guard.admit("192.0.2.7", 59.0) == "banned"
    assert guard.admit("192.0.2.7", 61.0) is None
    assert guard.banned(61.0) == 0


def test_strikes_outside_the_window_do_not_add_up() -> None:
    guard = EdgeGuard(EdgePolicy(ban_after=3, ban_window=10))
    assert not guard.strike("198.51.100.1", 0.0)
    assert not guard.strike("198.51.100.1", 5.0)
    assert not guard.strike("198.51.100.1", 20.0)  # the first two are old by now
    assert not guard.strike("198.51.100.1", 21.0)
    assert guard.strike("198.51.100.1", 22.0)
    assert guard.is_banned("198.51.100.1", 23.0)


def test_new_invites_have_their_own_tighter_limit() -> None:
    guard = EdgeGuard(EdgePolicy(invite_rate=1, invite_burst=2))
    assert [guard.admit_invite("203.0.113.5", 0.0) for _ in range(3)] == [True, True, False]
    assert guard.blocked["invite_rate"] == 1


def test_memory_is_bounded_whatever_the_number_of_addresses() -> None:
    guard = EdgeGuard(EdgePolicy(max_sources=100, max_bans=10, ban_after=1))
    for i in range(5000):
        host = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        guard.admit(host, float(i))
        guard.strike(host, float(i))  # each one banned at once
    assert len(guard._sources) <= 100
    assert guard.banned(5000.0) <= 10


@pytest.mark.parametrize(
    ("agent", "scanner"),
    [
        ("friendly-scanner", True),
        ("sipvicious/0.3.4", True),
        ("SIPCLI/v1.8", True),
        ("VaxSIPUserAgent/3.1", True),
        ("Zoiper rv2.10.19.1", False),
        ("baresip v3.10.1", False),
        (None, False),
    ],
)
def test_scanners_are_known_by_their_user_agent(agent: str | None, scanner: bool) -> None:
    assert EdgeGuard(EdgePolicy()).scanner(agent) is scanner


def test_trusted_networks() -> None:
    guard = EdgeGuard(
        EdgePolicy(
            trusted=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
        )
    )
    assert guard.trusts("127.0.0.9") and guard.trusts("[2001:db8::1]")
    assert not guard.trusts("192.0.2.1") and not guard.trusts("not-an-address")


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("+15551234567", True),
        ("tel:+15551234567", True),
        ("sip:+15551234567@carrier.example", True),
        ("sip:support@pbx.example.com", True),
        ("sip:SUPPORT@PBX.EXAMPLE.COM;transport=tcp", True),
        ("sip:1042@10.0.0.5", True),
        ("sip:10420@10.0.0.5", False),
        ("+19005550000", False),
        ("sip:attacker@evil.example", False),
        ("sip:operator@127.0.0.1", False),
    ],
)
def test_transfers_go_only_where_transfer_allow_says(target: str, allowed: bool) -> None:
    patterns = ["+1555*", "*@pbx.example.com", "1???", "registered"]
    assert destination_allowed(target, patterns, registered=False) is allowed
    assert destination_allowed(target, None, registered=False)  # unset: anywhere
    assert destination_allowed("sip:operator@127.0.0.1", patterns, registered=True)
    assert not destination_allowed("sip:operator@127.0.0.1", ["+1555*"], registered=True)
