"""Tests for mediaserver.media.dtmf: RFC 4733 telephone-events in and out."""

from __future__ import annotations

import pytest

from mediaserver.media.dtmf import (
    EVENT_CODES,
    DtmfError,
    DtmfEvent,
    DtmfPacket,
    DtmfReceiver,
    DtmfSender,
    build_event,
    digit_for_event,
    event_for_digit,
    parse_event,
)
from mediaserver.media.rtp import RtpPacket

PT = 101


def event_packet(
    seq: int, ts: int, event: int, end: bool, duration: int, marker: bool = False, volume: int = 10
) -> RtpPacket:
    return RtpPacket(
        PT, seq & 0xFFFF, ts & 0xFFFFFFFF, 0x5EED, build_event(event, end, volume, duration), marker
    )


# ---------------------------------------------------------------- payload


def test_parse_event() -> None:
    assert parse_event(bytes.fromhex("05 8a 0320")) == (5, True, 10, 800)
    assert parse_event(bytes.fromhex("0b 3f ffff")) == (11, False, 63, 65535)
    # The R bit is ignored; extra bytes (further events) too.
    assert parse_event(bytes.fromhex("01 4a 00a0 ffffffff")) == (1, False, 10, 160)


def test_build_event() -> None:
    assert build_event(5, True, 10, 800) == bytes.fromhex("058a0320")
    assert build_event(16, False, 0, 0) == bytes.fromhex("10000000")
    for args in [(5, True, 10, 800), (0, False, 63, 65535), (255, True, 0, 1)]:
        assert parse_event(build_event(*args)) == args


@pytest.mark.parametrize("payload", [b"", b"\x01", b"\x01\x02\x03"])
def test_parse_short_payload(payload: bytes) -> None:
    with pytest.raises(DtmfError):
        parse_event(payload)


@pytest.mark.parametrize(
    "args", [(256, False, 0, 0), (-1, False, 0, 0), (1, False, 64, 0), (1, False, 0, 65536)]
)
def test_build_out_of_range(args: tuple[int, bool, int, int]) -> None:
    with pytest.raises(DtmfError):
        build_event(*args)


def test_digit_mapping() -> None:
    assert [event_for_digit(d) for d in "0123456789*#ABCD"] == list(range(16))
    assert event_for_digit("a") == 12
    assert event_for_digit("flash") == 16
    assert digit_for_event(16) == "flash"
    assert digit_for_event(17) is None
    assert set(EVENT_CODES) == set("0123456789*#ABCD") | {"flash"}
    with pytest.raises(DtmfError):
        event_for_digit("E")


# ---------------------------------------------------------------- receiver


def test_digit_reported_once_on_the_first_end_packet() -> None:
    receiver = DtmfReceiver()
    ts = 48000
    assert receiver.feed(event_packet(1, ts, 5, False, 400, marker=True), 0.00) == []
    assert receiver.feed(event_packet(2, ts, 5, False, 800), 0.05) == []
    events = receiver.feed(event_packet(3, ts, 5, True, 1000), 0.10)
    assert events == [DtmfEvent(digit="5", duration_ms=125, timestamp=ts, volume=10)]
    # The two retransmissions of the end packet are recognised.
    assert receiver.feed(event_packet(4, ts, 5, True, 1000), 0.15) == []
    assert receiver.feed(event_packet(5, ts, 5, True, 1000), 0.20) == []
    assert receiver.flush(10.0) == []


def test_digit_from_end_packets_alone() -> None:
    """The start and updates were lost; the end packet still reports the digit."""
    receiver = DtmfReceiver()
    events = receiver.feed(event_packet(3, 800, 11, True, 1600, volume=7), 1.0)
    assert events == [DtmfEvent("#", 200, 800, 7)]


def test_lost_end_packets_reported_when_next_event_starts() -> None:
    receiver = DtmfReceiver()
    receiver.feed(event_packet(1, 1000, 1, False, 400, marker=True), 0.00)
    receiver.feed(event_packet(2, 1000, 1, False, 800), 0.05)
    # All three end packets of '1' lost; '2' begins.
    events = receiver.feed(event_packet(6, 3000, 2, False, 400, marker=True), 0.30)
    assert events == [DtmfEvent("1", 100, 1000, 10, ended=False)]
    events = receiver.feed(event_packet(7, 3000, 2, True, 800), 0.35)
    assert events == [DtmfEvent("2", 100, 3000, 10)]


def test_lost_end_and_next_event_end_in_one_packet() -> None:
    receiver = DtmfReceiver()
    receiver.feed(event_packet(1, 1000, 1, False, 400, marker=True), 0.00)
    # Only an end packet of the next digit arrives: both digits come out, in order.
    events = receiver.feed(event_packet(9, 5000, 9, True, 800), 0.5)
    assert [e.digit for e in events] == ["1", "9"]
    assert [e.ended for e in events] == [False, True]


def test_lost_end_packets_reported_by_flush_after_timeout() -> None:
    receiver = DtmfReceiver(timeout=2.0)
    receiver.feed(event_packet(1, 1000, 7, False, 400, marker=True), 10.00)
    receiver.feed(event_packet(2, 1000, 7, False, 1200), 10.15)
    assert receiver.flush(12.0) == []  # 1.85 s since the last update
    assert receiver.flush(12.15) == [DtmfEvent("7", 150, 1000, 10, ended=False)]
    assert receiver.flush(20.0) == []
    # A late end packet of the given-up event is not reported again.
    assert receiver.feed(event_packet(3, 1000, 7, True, 1200), 12.2) == []


def test_straggler_of_an_older_event_ignored() -> None:
    receiver = DtmfReceiver()
    receiver.feed(event_packet(1, 1000, 1, False, 400, marker=True), 0.00)
    receiver.feed(event_packet(5, 2000, 2, False, 400, marker=True), 0.20)  # reports '1'
    assert receiver.feed(event_packet(2, 1000, 1, False, 800), 0.21) == []
    assert receiver.feed(event_packet(3, 1000, 1, True, 800), 0.22) == []
    assert receiver.feed(event_packet(6, 2000, 2, True, 800), 0.25) == [
        DtmfEvent("2", 100, 2000, 10)
    ]


def test_reordered_update_does_not_shrink_duration() -> None:
    receiver = DtmfReceiver()
    receiver.feed(event_packet(1, 0, 3, False, 400, marker=True), 0.00)
    receiver.feed(event_packet(3, 0, 3, False, 1200), 0.10)
    receiver.feed(event_packet(2, 0, 3, False, 800), 0.11)
    events = receiver.feed(event_packet(5, 0, 3, True, 0), 0.2)  # a sloppy end packet
    assert events == [DtmfEvent("3", 150, 0, 10)]


def test_timestamp_wrap_between_events() -> None:
    receiver = DtmfReceiver()
    receiver.feed(event_packet(1, 0xFFFFFF00, 4, False, 400, marker=True), 0.0)
    events = receiver.feed(event_packet(4, 0x00000100, 6, False, 400, marker=True), 0.3)
    assert [e.digit for e in events] == ["4"]  # the wrapped timestamp is newer


def test_malformed_and_unsupported_counted() -> None:
    receiver = DtmfReceiver()
    assert receiver.feed(RtpPacket(PT, 1, 0, 1, payload=b"\x01\x80"), 0.0) == []
    assert receiver.feed(RtpPacket(PT, 2, 0, 1, payload=b""), 0.0) == []
    assert receiver.feed(event_packet(3, 0, 70, True, 800), 0.0) == []  # a tone event
    assert receiver.malformed == 2
    assert receiver.unsupported == 1


def test_wideband_clock_rate() -> None:
    receiver = DtmfReceiver(clock_rate=16000)
    events = receiver.feed(event_packet(1, 0, 0, True, 1600), 0.0)
    assert events[0].duration_ms == 100


# ---------------------------------------------------------------- sender


def test_sender_plan() -> None:
    sender = DtmfSender(payload_type=PT, volume=10)
    plan = sender.packets("1", start_timestamp=8000, duration_ms=100, packet_interval_ms=50)
    assert plan == [
        DtmfPacket(0.00, 8000, True, build_event(1, False, 10, 400)),
        DtmfPacket(0.05, 8000, False, build_event(1, False, 10, 800)),
        DtmfPacket(0.10, 8000, False, build_event(1, True, 10, 800)),
        DtmfPacket(0.15, 8000, False, build_event(1, True, 10, 800)),
        DtmfPacket(0.20, 8000, False, build_event(1, True, 10, 800)),
    ]


def test_sender_uneven_duration_and_20ms_updates() -> None:
    sender = DtmfSender(payload_type=PT)
    plan = sender.packets("#", start_timestamp=0, duration_ms=70, packet_interval_ms=20)
    durations = [parse_event(p.payload)[3] for p in plan]
    ends = [parse_event(p.payload)[1] for p in plan]
    assert durations == [160, 320, 480, 560, 560, 560, 560]
    assert ends == [False, False, False, False, True, True, True]
    assert [p.send_offset for p in plan] == pytest.approx([0, 0.02, 0.04, 0.06, 0.07, 0.09, 0.11])
    assert [p.marker for p in plan] == [True] + [False] * 6
    assert {p.timestamp for p in plan} == {0}


def test_sender_timestamp_wraps() -> None:
    plan = DtmfSender(PT).packets("0", start_timestamp=(1 << 32) + 5)
    assert {p.timestamp for p in plan} == {5}


@pytest.mark.parametrize(
    ("digit", "duration_ms", "interval_ms"),
    [("E", 100, 50), ("1", 0, 50), ("1", 100, 0), ("1", 8200, 50)],
)
def test_sender_rejects(digit: str, duration_ms: int, interval_ms: int) -> None:
    with pytest.raises(DtmfError):
        DtmfSender(PT).packets(digit, 0, duration_ms, interval_ms)


def test_sender_rejects_bad_volume() -> None:
    with pytest.raises(DtmfError):
        DtmfSender(PT, volume=64)


# ---------------------------------------------------------------- round trip


def _transmit(
    sender: DtmfSender, digits: str, lose_ends_of: str = ""
) -> list[tuple[float, RtpPacket]]:
    """Plan every digit 300 ms apart on one RTP stream, with its own sequence numbers."""
    wire: list[tuple[float, RtpPacket]] = []
    seq = 100
    for i, digit in enumerate(digits):
        start = i * 0.3
        ts = 0xFFFF0000 + round(start * 8000)  # crosses the 32-bit wrap on the way
        for planned in sender.packets(digit, ts, duration_ms=120, packet_interval_ms=50):
            seq += 1
            end = parse_event(planned.payload)[1]
            if end and digit in lose_ends_of:
                continue
            packet = RtpPacket(
                sender.payload_type,
                seq & 0xFFFF,
                planned.timestamp,
                0xD7,
                planned.payload,
                planned.marker,
            )
            wire.append((start + planned.send_offset, packet))
    return wire


def test_round_trip_all_digits() -> None:
    digits = "0123456789*#ABCD"
    sender = DtmfSender(payload_type=PT)
    receiver = DtmfReceiver()
    events = []
    for arrival, packet in _transmit(sender, digits):
        events += receiver.feed(RtpPacket.parse(packet.serialise()), arrival + 0.01)
    events += receiver.flush(100.0)
    assert "".join(e.digit for e in events) == digits
    assert all(e.duration_ms == 120 and e.ended and e.volume == 10 for e in events)
    assert len({e.timestamp for e in events}) == len(digits)


def test_round_trip_with_lost_end_packets() -> None:
    digits = "159#D"
    sender = DtmfSender(payload_type=PT)
    receiver = DtmfReceiver()
    events = []
    for arrival, packet in _transmit(sender, digits, lose_ends_of="5D"):
        events += receiver.feed(packet, arrival)
    assert "".join(e.digit for e in events) == "159#"  # 'D' waits for the timeout
    events += receiver.flush(1.2 + 2.5)
    assert "".join(e.digit for e in events) == digits
    assert [e.ended for e in events] == [True, False, True, True, False]
    # Without its end packet a digit's duration is the last update seen.
    assert events[1].duration_ms == 120


def test_round_trip_with_reordered_packets() -> None:
    sender = DtmfSender(payload_type=PT)
    receiver = DtmfReceiver()
    wire = _transmit(sender, "42")
    # The first end packet of '4' overtakes the update before it.
    assert parse_event(wire[3][1].payload)[1] and not parse_event(wire[2][1].payload)[1]
    wire[2], wire[3] = wire[3], wire[2]
    events = []
    for arrival, packet in wire:
        events += receiver.feed(packet, arrival)
    assert [(e.digit, e.duration_ms) for e in events] == [("4", 120), ("2", 120)]
