"""Tests for mediaserver.media.rtp: packet parsing/serialising and receive statistics."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver.media.rtp import (
    MAX_DROPOUT,
    RtpError,
    RtpExtension,
    RtpPacket,
    RtpReceiver,
    is_rtcp,
)

# ---------------------------------------------------------------- packets


def test_parse_minimal_packet() -> None:
    data = bytes.fromhex("80 08 1234 00010000 deadbeef") + b"\xd5" * 160
    packet = RtpPacket.parse(data)
    assert packet == RtpPacket(
        payload_type=8,
        sequence=0x1234,
        timestamp=0x10000,
        ssrc=0xDEADBEEF,
        payload=b"\xd5" * 160,
    )
    assert packet.serialise() == data


def test_marker_and_maximum_values() -> None:
    packet = RtpPacket(
        payload_type=127,
        sequence=0xFFFF,
        timestamp=0xFFFFFFFF,
        ssrc=0xFFFFFFFF,
        payload=b"x",
        marker=True,
    )
    data = packet.serialise()
    assert data[:12] == bytes.fromhex("80 ff ffff ffffffff ffffffff")
    assert RtpPacket.parse(data) == packet


def test_csrcs() -> None:
    packet = RtpPacket(0, 1, 2, 3, payload=b"ab", csrcs=[10, 0xFFFFFFFF])
    data = packet.serialise()
    assert data[0] == 0x82  # V=2, CC=2
    assert data[12:20] == struct.pack("!II", 10, 0xFFFFFFFF)
    assert data[20:] == b"ab"
    assert RtpPacket.parse(data) == packet


def test_fifteen_csrcs_fit_sixteen_do_not() -> None:
    packet = RtpPacket(0, 1, 2, 3, csrcs=list(range(15)))
    assert RtpPacket.parse(packet.serialise()).csrcs == list(range(15))
    with pytest.raises(RtpError):
        RtpPacket(0, 1, 2, 3, csrcs=list(range(16))).serialise()


def test_header_extension() -> None:
    ext = RtpExtension(profile=0xBEDE, data=bytes.fromhex("10ff0000"))
    packet = RtpPacket(96, 7, 8, 9, payload=b"opus", csrcs=[5], extension=ext)
    data = packet.serialise()
    assert data[0] == 0x91  # V=2, X=1, CC=1
    assert data[16:24] == bytes.fromhex("bede 0001 10ff0000")
    assert RtpPacket.parse(data) == packet


def test_empty_header_extension() -> None:
    packet = RtpPacket(0, 1, 2, 3, payload=b"p", extension=RtpExtension(profile=1))
    data = packet.serialise()
    assert data[12:16] == bytes.fromhex("0001 0000")
    assert RtpPacket.parse(data) == packet


def test_padding_parsed_and_serialised() -> None:
    data = bytes.fromhex("a0 00 0001 00000002 00000003") + b"abc" + b"\x00\x00\x03"
    packet = RtpPacket.parse(data)
    assert packet.payload == b"abc"
    assert packet.padding == 3
    assert packet.serialise() == data


def test_padding_only_packet() -> None:
    data = bytes.fromhex("a0 00 0001 00000002 00000003 00000004")
    packet = RtpPacket.parse(data)
    assert packet.payload == b""
    assert packet.padding == 4


def test_padding_after_extension() -> None:
    packet = RtpPacket(
        0, 1, 2, 3, payload=b"z", extension=RtpExtension(2, b"abcd"), padding=1, marker=True
    )
    data = packet.serialise()
    assert data[-1] == 1
    assert RtpPacket.parse(data) == packet


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (bytes.fromhex("80 00 0001 00000002"), "too short"),  # 8 bytes
        (bytes.fromhex("40 00 0001 00000002 00000003"), "version 1"),
        (bytes.fromhex("c0 00 0001 00000002 00000003"), "version 3"),
        (bytes.fromhex("00 00 0001 00000002 00000003"), "version 0"),
        (bytes.fromhex("81 00 0001 00000002 00000003"), "CSRC"),  # CC=1, no CSRC
        (bytes.fromhex("8f 00 0001 00000002 00000003") + bytes(56), "CSRC"),  # 14 of 15
        (bytes.fromhex("90 00 0001 00000002 00000003 bede"), "extension"),  # half a header
        (bytes.fromhex("90 00 0001 00000002 00000003 bede0002 00000000"), "extension"),
        (bytes.fromhex("a0 00 0001 00000002 00000003 aabbcc00"), "padding count of 0"),
        (bytes.fromhex("a0 00 0001 00000002 00000003 aabbcc05"), "padding"),
        (bytes.fromhex("a0 00 0001 00000002 0000000d"), "padding"),  # pads into header
        (bytes.fromhex("b0 00 0001 00000002 00000003 00010001 00000000 02"), "padding"),
    ],
)
def test_malformed_packets_rejected(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message.split()[0]):
        RtpPacket.parse(data)


@pytest.mark.parametrize(
    "packet",
    [
        RtpPacket(128, 0, 0, 0),
        RtpPacket(-1, 0, 0, 0),
        RtpPacket(0, 65536, 0, 0),
        RtpPacket(0, 0, 1 << 32, 0),
        RtpPacket(0, 0, 0, -1),
        RtpPacket(0, 0, 0, 0, csrcs=[1 << 32]),
        RtpPacket(0, 0, 0, 0, extension=RtpExtension(0, b"abc")),
        RtpPacket(0, 0, 0, 0, extension=RtpExtension(0x10000, b"")),
        RtpPacket(0, 0, 0, 0, padding=256),
    ],
)
def test_serialise_rejects_out_of_range_fields(packet: RtpPacket) -> None:
    with pytest.raises(RtpError):
        packet.serialise()


def test_rtp_error_is_a_value_error() -> None:
    assert issubclass(RtpError, ValueError)


u32 = st.integers(0, 0xFFFFFFFF)
packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=u32,
    ssrc=u32,
    payload=st.binary(max_size=64),
    marker=st.booleans(),
    csrcs=st.lists(u32, max_size=15),
    extension=st.none()
    | st.builds(
        RtpExtension,
        profile=st.integers(0, 0xFFFF),
        data=st.integers(0, 8).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
    ),
    padding=st.integers(0, 255),
)


@settings(max_examples=300, deadline=None)
@given(packets)
def test_round_trip(packet: RtpPacket) -> None:
    data = packet.serialise()
    assert RtpPacket.parse(data) == packet
    assert RtpPacket.parse(data).serialise() == data


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_garbage_raises_only_rtp_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    # Whatever parses re-serialises to a packet that parses the same.
    assert RtpPacket.parse(packet.serialise()) == packet


@settings(max_examples=200, deadline=None)
@given(packets, st.integers(1, 11))
def test_truncated_packets_never_crash(packet: RtpPacket, cut: int) -> None:
    data = packet.serialise()
    truncated = data[: max(0, len(data) - cut)]
    with contextlib.suppress(RtpError):
        RtpPacket.parse(truncated)


# ---------------------------------------------------------------- rtcp-mux


@pytest.mark.parametrize(
    ("second_byte", "expected"),
    [
        (200, True),  # SR
        (201, True),  # RR
        (202, True),  # SDES
        (203, True),  # BYE
        (205, True),  # RTPFB
        (192, True),  # lowest of the conflicting range
        (223, True),  # highest
        (0, False),  # PCMU
        (8, False),  # PCMA
        (0x88, False),  # PCMA with the marker bit
        (101, False),  # telephone-event
        (96 | 0x80, False),  # dynamic PT with marker
        (63, False),
        (96, False),
    ],
)
def test_is_rtcp(second_byte: int, expected: bool) -> None:
    assert is_rtcp(bytes([0x80, second_byte, 0, 1])) is expected


def test_is_rtcp_short_datagram() -> None:
    assert not is_rtcp(b"")
    assert not is_rtcp(b"\x80")


# ---------------------------------------------------------------- receiver


def pkt(seq: int, ts: int = 0, ssrc: int = 0x1234) -> RtpPacket:
    return RtpPacket(0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload=b"\xff" * 160)


def feed(receiver: RtpReceiver, seqs: list[int], ssrc: int = 0x1234) -> list[bool]:
    return [receiver.update(pkt(s, 160 * s, ssrc), 0.02 * i) for i, s in enumerate(seqs)]


def test_probation_first_packet_discarded() -> None:
    receiver = RtpReceiver(8000)
    assert receiver.expected == 0
    assert feed(receiver, [10, 11, 12]) == [False, True, True]
    assert receiver.received == 2
    assert receiver.expected == 2
    assert receiver.lost == 0
    assert receiver.extended_max_sequence == 12
    assert receiver.discarded == 1


def test_probation_restarts_on_a_non_sequential_packet() -> None:
    receiver = RtpReceiver(8000)
    assert feed(receiver, [10, 20, 21, 22]) == [False, False, True, True]
    assert receiver.received == 2
    assert receiver.expected == 2


def test_sequence_wrap_around() -> None:
    receiver = RtpReceiver(8000)
    assert feed(receiver, [65533, 65534, 65535, 0, 1]) == [False, True, True, True, True]
    assert receiver.extended_max_sequence == 65536 + 1
    assert receiver.expected == 4  # 65534 .. 65537
    assert receiver.received == 4
    assert receiver.lost == 0


def test_reordering_across_the_wrap() -> None:
    receiver = RtpReceiver(8000)
    feed(receiver, [65533, 65534, 0, 65535, 1])
    assert receiver.extended_max_sequence == 65537
    assert receiver.reordered == 1
    assert receiver.lost == 0


def test_loss_and_fraction_lost_by_hand() -> None:
    receiver = RtpReceiver(8000)
    feed(receiver, [0, 1, 2, 4, 5, 6, 8, 9])
    # Valid from 1 (0 was probation): expected 1..9 = 9, received 7.
    assert receiver.expected == 9
    assert receiver.received == 7
    assert receiver.lost == 2
    assert receiver.fraction_lost() == (2 * 256) // 9 == 56
    assert receiver.fraction_lost() == 0  # nothing new since the last report
    feed(receiver, [10, 11, 13])
    # This interval: expected 10..13 = 4, received 3, lost 1 -> 64/256.
    assert receiver.fraction_lost() == 64
    assert receiver.lost == 3


def test_duplicates_make_lost_negative() -> None:
    receiver = RtpReceiver(8000)
    feed(receiver, [0, 1, 2, 2, 3, 3, 3])
    assert receiver.duplicates == 3
    assert receiver.received == 6  # A.3 counts duplicates as received
    assert receiver.expected == 3
    assert receiver.lost == -3
    assert receiver.fraction_lost() == 0


def test_reordered_and_duplicate_of_reordered() -> None:
    receiver = RtpReceiver(8000)
    feed(receiver, [0, 1, 2, 4, 3, 3, 5])
    assert receiver.reordered == 1
    assert receiver.duplicates == 1
    assert receiver.lost == -1


def test_large_jump_accepted_after_two_sequential() -> None:
    receiver = RtpReceiver(8000)
    feed(receiver, [100, 101, 102])
    jump = 102 + MAX_DROPOUT + 10
    assert receiver.update(pkt(jump, 0), 1.0) is False
    assert receiver.update(pkt(jump + 1, 160), 1.02) is True
    # A.1 re-initialises on the confirming packet.
    assert receiver.extended_max_sequence == jump + 1
    assert receiver.expected == 1
    assert receiver.received == 1
    assert receiver.discarded == 2  # the probation packet and the first jump packet


def test_stray_jump_ignored() -> None:
    receiver = RtpReceiver(8000)
    feed(receiver, [100, 101, 102])
    assert receiver.update(pkt(30000), 1.0) is False
    assert receiver.update(pkt(103), 1.02) is True
    assert receiver.extended_max_sequence == 103
    assert receiver.lost == 0


def test_backward_jump_beyond_misorder_needs_confirmation() -> None:
    receiver = RtpReceiver(8000)
    feed(receiver, [1000, 1001, 1002])
    assert receiver.update(pkt(500), 1.0) is False
    assert receiver.update(pkt(501), 1.02) is True
    assert receiver.extended_max_sequence == 501


def test_ssrc_change_reinitialises() -> None:
    receiver = RtpReceiver(8000)
    feed(receiver, [0, 1, 2, 3])
    assert receiver.ssrc == 0x1234
    assert feed(receiver, [5000, 5001, 5002], ssrc=0x9999) == [False, True, True]
    assert receiver.ssrc == 0x9999
    assert receiver.ssrc_changes == 1
    assert receiver.received == 2
    assert receiver.expected == 2
    assert receiver.extended_max_sequence == 5002


def test_jitter_by_hand() -> None:
    """RFC 3550 A.8 worked through by hand.

    Packets every 160 timestamp units (20 ms at 8 kHz) arrive at 0, 20, 45,
    55 and 80 ms = 0, 160, 360, 440, 640 timestamp units. Transit times
    (arrival - timestamp): 0, 0, 40, -40, 0. The first packet only records its
    transit; then D = |transit - previous transit| and J += (D - J) / 16:
        D = 0:  J = 0
        D = 40: J = 0 + 40/16 = 2.5
        D = 80: J = 2.5 + (80 - 2.5)/16 = 7.34375
        D = 40: J = 7.34375 + (40 - 7.34375)/16 = 9.384765625
    """
    receiver = RtpReceiver(8000)
    arrivals = [0.000, 0.020, 0.045, 0.055, 0.080]
    estimates = []
    for i, arrival in enumerate(arrivals):
        receiver.update(pkt(i, 160 * i), arrival)
        estimates.append(receiver.jitter)
    assert estimates == pytest.approx([0.0, 0.0, 2.5, 7.34375, 9.384765625])
    assert int(receiver.jitter) == 9


def test_jitter_unaffected_by_timestamp_wrap() -> None:
    receiver = RtpReceiver(8000)
    base = (1 << 32) - 320
    for i, arrival in enumerate([0.000, 0.020, 0.045, 0.055, 0.080]):
        receiver.update(pkt(i, base + 160 * i), arrival)
    assert receiver.jitter == pytest.approx(9.384765625)


def test_jitter_constant_delay_is_zero() -> None:
    receiver = RtpReceiver(16000)
    for i in range(50):
        receiver.update(pkt(i, 320 * i), 5.0 + 0.02 * i)
    assert receiver.jitter == pytest.approx(0.0, abs=1e-6)


def test_jitter_not_polluted_by_a_confirmed_jump() -> None:
    receiver = RtpReceiver(8000)
    for i in range(10):
        receiver.update(pkt(i, 160 * i), 0.02 * i)
    # Sender restart: new sequence and a timestamp base that means nothing.
    receiver.update(pkt(20000, 123456789), 0.2)
    receiver.update(pkt(20001, 123456789 + 160), 0.22)
    receiver.update(pkt(20002, 123456789 + 320), 0.24)
    assert receiver.jitter == pytest.approx(0.0, abs=1e-6)


def test_invalid_clock_rate() -> None:
    with pytest.raises(ValueError):
        RtpReceiver(0)
