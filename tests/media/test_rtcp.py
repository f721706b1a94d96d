"""Tests for mediaserver.media.rtcp: compound packets, timing helpers, report blocks."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver.media.rtcp import (
    NTP_EPOCH_OFFSET,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    RtcpPacket,
    RtcpUnknown,
    SdesItem,
    SenderReport,
    SourceDescription,
    ntp_middle32,
    ntp_time,
    parse_compound,
    report_block,
    serialise_compound,
)
from mediaserver.media.rtp import RtpPacket, RtpReceiver

BLOCK = ReportBlock(
    ssrc=0x11223344,
    fraction_lost=56,
    cumulative_lost=2,
    highest_sequence=0x0001_0009,
    jitter=9,
    lsr=0xAABBCCDD,
    dlsr=32768,
)


def test_sender_report_and_sdes_bytes() -> None:
    sr = SenderReport(
        ssrc=0xCAFEBABE,
        ntp_timestamp=0x0102030405060708,
        rtp_timestamp=160,
        packet_count=3,
        octet_count=480,
        reports=[BLOCK],
    )
    sdes = SourceDescription(chunks=[(0xCAFEBABE, [(SdesItem.CNAME, "ab")])])
    data = serialise_compound([sr, sdes])
    # SR: 4-byte header + 24 bytes sender info + 24 bytes block = 52 bytes = 13 words.
    assert data[:4] == bytes([0x81, 200, 0, 12])
    assert data[4:28] == bytes.fromhex("cafebabe 0102030405060708 000000a0 00000003 000001e0")
    assert data[28:52] == bytes.fromhex("11223344 38000002 00010009 00000009 aabbccdd 00008000")
    # SDES: header + ssrc + (type, len, "ab") + 4 null octets (END, then to the boundary).
    assert data[52:] == bytes.fromhex("81ca0003 cafebabe 01026162 00000000")
    assert parse_compound(data) == [sr, sdes]


def test_receiver_report_sdes_bye_round_trip() -> None:
    packets: list[RtcpPacket] = [
        ReceiverReport(ssrc=1, reports=[BLOCK, ReportBlock(ssrc=2, cumulative_lost=-5)]),
        SourceDescription(
            chunks=[
                (1, [(SdesItem.CNAME, "user@host"), (SdesItem.TOOL, "mediaserver")]),
                (2, [(SdesItem.CNAME, "abc")]),  # 4 + 2 + 3 = 9 bytes -> padded to 12
                (3, []),
            ]
        ),
        Bye(ssrcs=[1, 2], reason="hanging up"),
    ]
    data = serialise_compound(packets)
    assert len(data) % 4 == 0
    assert parse_compound(data) == packets


def test_empty_receiver_report() -> None:
    data = serialise_compound([ReceiverReport(ssrc=0xFFFFFFFF)])
    assert data == bytes.fromhex("80c90001 ffffffff")
    assert parse_compound(data) == [ReceiverReport(ssrc=0xFFFFFFFF)]


def test_negative_cumulative_lost_is_24_bit_twos_complement() -> None:
    block = ReportBlock(ssrc=1, fraction_lost=0, cumulative_lost=-5)
    data = serialise_compound([ReceiverReport(ssrc=9, reports=[block])])
    assert data[12:16] == bytes.fromhex("00fffffb")
    assert parse_compound(data)[0] == ReceiverReport(ssrc=9, reports=[block])


@pytest.mark.parametrize("lost", [-(1 << 23), (1 << 23) - 1, 0, -1])
def test_cumulative_lost_extremes(lost: int) -> None:
    rr = ReceiverReport(
        ssrc=9, reports=[ReportBlock(ssrc=1, fraction_lost=255, cumulative_lost=lost)]
    )
    assert parse_compound(serialise_compound([rr])) == [rr]


def test_bye_without_reason_and_reason_padding() -> None:
    assert serialise_compound([Bye(ssrcs=[7])]) == bytes.fromhex("81cb0001 00000007")
    data = serialise_compound([Bye(ssrcs=[7], reason="bye")])
    # reason: length byte + 3 bytes = 4, no padding needed.
    assert data == bytes.fromhex("81cb0002 00000007 03627965")
    data = serialise_compound([Bye(ssrcs=[], reason="x")])
    assert data == bytes.fromhex("80cb0001 01780000")
    assert parse_compound(data) == [Bye(ssrcs=[], reason="x")]


def test_unknown_packet_types_kept_raw() -> None:
    app = RtcpUnknown(packet_type=204, count=3, payload=b"\x00\x00\x00\x01name" + b"data")
    fb = RtcpUnknown(packet_type=205, count=1, payload=bytes(8))
    packets: list[RtcpPacket] = [ReceiverReport(ssrc=1), app, fb]
    assert parse_compound(serialise_compound(packets)) == packets


def test_padding_on_the_last_packet() -> None:
    rr = bytes.fromhex("80c90001 00000001")
    bye = bytes.fromhex("a1cb0002 00000001 00000004")  # P bit, 4 padding bytes
    assert parse_compound(rr + bye) == [ReceiverReport(ssrc=1), Bye(ssrcs=[1])]


def test_sdes_unicode_and_unknown_items() -> None:
    sdes = SourceDescription(chunks=[(5, [(SdesItem.NAME, "Zoë"), (42, "custom")])])
    parsed = parse_compound(serialise_compound([sdes]))
    assert parsed == [sdes]
    assert isinstance(parsed[0], SourceDescription)
    assert parsed[0].cname(5) is None


def test_sdes_cname_helper() -> None:
    sdes = SourceDescription(chunks=[(1, [(SdesItem.NOTE, "n")]), (2, [(1, "cname@2")])])
    assert sdes.cname(2) == "cname@2"
    assert sdes.cname(3) is None


def test_sdes_invalid_utf8_replaced() -> None:
    data = bytes.fromhex("81ca0002 00000001 0101ff00")
    (sdes,) = parse_compound(data)
    assert sdes == SourceDescription(chunks=[(1, [(1, "\ufffd")])])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(bytes.fromhex("40c90001 00000001"), id="version 1"),
        pytest.param(bytes.fromhex("c0c90001 00000001"), id="version 3"),
        pytest.param(bytes.fromhex("80c90002 00000001"), id="length beyond data"),
        pytest.param(bytes.fromhex("81c90001 00000001"), id="RR count beyond length"),
        pytest.param(bytes.fromhex("81c80006") + bytes(24), id="SR count beyond length"),
        pytest.param(bytes.fromhex("80c80001 00000001"), id="SR too short"),
        pytest.param(bytes.fromhex("80c90001 00000001 8000"), id="trailing bytes"),
        pytest.param(bytes.fromhex("82ca0002 00000001 00000000"), id="SDES chunk count"),
        pytest.param(bytes.fromhex("81ca0002 00000001 01056162"), id="SDES item beyond"),
        pytest.param(bytes.fromhex("81ca0002 00000001 01026162"), id="SDES without END"),
        pytest.param(bytes.fromhex("81ca0001 00000001"), id="SDES chunk without items"),
        pytest.param(bytes.fromhex("82cb0001 00000001"), id="BYE count beyond length"),
        pytest.param(bytes.fromhex("81cb0002 00000001 09616263"), id="BYE reason beyond"),
        pytest.param(
            bytes.fromhex("a0c90002 00000001 00000004 80c90001 00000001"),
            id="padding not in the last packet",
        ),
        pytest.param(bytes.fromhex("a0c90002 00000001 00000000"), id="padding count 0"),
        pytest.param(bytes.fromhex("a0c90001 00000009"), id="padding beyond packet"),
        pytest.param(bytes.fromhex("80c90001 00000001 40c90001 00000001"), id="bad second"),
    ],
)
def test_malformed_compounds_rejected(data: bytes) -> None:
    with pytest.raises(RtcpError):
        parse_compound(data)


@pytest.mark.parametrize(
    "packet",
    [
        ReceiverReport(ssrc=1, reports=[ReportBlock(ssrc=i) for i in range(32)]),
        SenderReport(ssrc=1, ntp_timestamp=1 << 64),
        ReceiverReport(ssrc=1, reports=[ReportBlock(ssrc=1, cumulative_lost=1 << 23)]),
        ReceiverReport(ssrc=1, reports=[ReportBlock(ssrc=1, fraction_lost=256)]),
        ReceiverReport(ssrc=1 << 32),
        SourceDescription(chunks=[(1, [(1, "x" * 256)])]),
        SourceDescription(chunks=[(1, [(0, "end is not an item")])]),
        SourceDescription(chunks=[(i, []) for i in range(32)]),
        Bye(ssrcs=list(range(32))),
        Bye(ssrcs=[1], reason="é" * 128),
        RtcpUnknown(packet_type=204, payload=b"abc"),
        RtcpUnknown(packet_type=256),
        RtcpUnknown(packet_type=204, count=32),
    ],
)
def test_serialise_rejects_what_does_not_fit(packet: RtcpPacket) -> None:
    with pytest.raises(RtcpError):
        serialise_compound([packet])


def test_sdes_text_of_255_bytes_fits() -> None:
    sdes = SourceDescription(chunks=[(1, [(1, "x" * 255)])])
    assert parse_compound(serialise_compound([sdes])) == [sdes]


u32 = st.integers(0, 0xFFFFFFFF)
blocks = st.builds(
    ReportBlock,
    ssrc=u32,
    fraction_lost=st.integers(0, 255),
    cumulative_lost=st.integers(-(1 << 23), (1 << 23) - 1),
    highest_sequence=u32,
    jitter=u32,
    lsr=u32,
    dlsr=u32,
)
text = st.text(max_size=20)
rtcp_packets = st.one_of(
    st.builds(
        SenderReport,
        ssrc=u32,
        ntp_timestamp=st.integers(0, (1 << 64) - 1),
        rtp_timestamp=u32,
        packet_count=u32,
        octet_count=u32,
        reports=st.lists(blocks, max_size=3),
    ),
    st.builds(ReceiverReport, ssrc=u32, reports=st.lists(blocks, max_size=3)),
    st.builds(
        SourceDescription,
        chunks=st.lists(
            st.tuples(u32, st.lists(st.tuples(st.integers(1, 255), text), max_size=3)),
            max_size=3,
        ),
    ),
    st.builds(Bye, ssrcs=st.lists(u32, max_size=4), reason=st.none() | text),
    st.builds(
        RtcpUnknown,
        packet_type=st.integers(204, 255),
        count=st.integers(0, 31),
        payload=st.integers(0, 4).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(rtcp_packets, min_size=1, max_size=4))
def test_compound_round_trip(packets: list[RtcpPacket]) -> None:
    data = serialise_compound(packets)
    assert len(data) % 4 == 0
    assert parse_compound(data) == packets


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=96))
def test_garbage_raises_only_rtcp_error(data: bytes) -> None:
    with contextlib.suppress(RtcpError):
        parse_compound(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(rtcp_packets, min_size=1, max_size=3), st.integers(1, 7))
def test_truncated_compounds_rejected(packets: list[RtcpPacket], cut: int) -> None:
    data = serialise_compound(packets)
    try:
        parsed = parse_compound(data[:-cut])
    except RtcpError:
        return
    # Only a cut on a packet boundary parses, and then as the packets before it.
    assert len(parsed) < len(packets)
    assert parsed == packets[: len(parsed)]


# ---------------------------------------------------------------- timing


def test_ntp_time() -> None:
    assert ntp_time(0.0) == NTP_EPOCH_OFFSET << 32
    assert ntp_time(1.5) == ((NTP_EPOCH_OFFSET + 1) << 32) | 0x8000_0000
    assert ntp_time(1.25) == ((NTP_EPOCH_OFFSET + 1) << 32) | 0x4000_0000
    # 2024-01-01T00:00:00Z
    assert ntp_time(1_704_067_200.0) >> 32 == 3_913_056_000


def test_ntp_time_rounding_does_not_overflow_the_fraction() -> None:
    almost = 10.0 - 1e-12
    assert ntp_time(almost) & 0xFFFFFFFF < 1 << 32
    assert ntp_time(almost) >> 32 in (NTP_EPOCH_OFFSET + 9, NTP_EPOCH_OFFSET + 10)


def test_ntp_middle32() -> None:
    assert ntp_middle32(0x0102030405060708) == 0x03040506
    assert ntp_middle32(ntp_time(1.5)) == ((NTP_EPOCH_OFFSET + 1) & 0xFFFF) << 16 | 0x8000


def _receiver_with_loss() -> RtpReceiver:
    receiver = RtpReceiver(8000)
    arrivals = {0: 0.0, 1: 0.020, 2: 0.045, 4: 0.080, 5: 0.100, 6: 0.120, 8: 0.160, 9: 0.180}
    for seq, arrival in arrivals.items():
        receiver.update(RtpPacket(0, seq, 160 * seq, 0xABC, payload=b"x"), arrival)
    return receiver


def test_report_block_by_hand() -> None:
    """Figures worked out by hand.

    Sequence 0 is probation, so the source is valid from 1: expected 1..9 = 9,
    received 7, lost 2, fraction (2 << 8) // 9 = 56. Highest sequence 9.
    Jitter: transit (arrival*8000 - ts) is 0, 0, 40, 0, 0, 0, 0, 0 for
    sequences 0, 1, 2, 4, 5, 6, 8, 9, so D = 0, 40, 40, 0, 0, 0, 0 from
    sequence 1 on: J = 0, 2.5, 4.84375, then 15/16 of that four times =
    3.7417, reported as 3. The last SR was sent at Unix 1000.25 s: its NTP
    seconds 2208989800 have low 16 bits 33384, the fraction .25 gives 0x4000,
    so LSR = 33384 << 16 | 0x4000 = 2187870208. It arrived at 10.0 s and the
    report goes at 10.5 s: DLSR = 0.5 * 65536 = 32768.
    """
    receiver = _receiver_with_loss()
    block = report_block(receiver, 0xABC, ntp_time(1000.25), 10.0, 10.5)
    assert block == ReportBlock(
        ssrc=0xABC,
        fraction_lost=56,
        cumulative_lost=2,
        highest_sequence=9,
        jitter=3,
        lsr=2187870208,
        dlsr=32768,
    )
    assert receiver.jitter == pytest.approx(4.84375 * (15 / 16) ** 4)
    # The interval is closed: the next block has no new loss.
    assert report_block(receiver, 0xABC, None, None, 11.0).fraction_lost == 0


def test_report_block_without_sender_report() -> None:
    block = report_block(_receiver_with_loss(), 0xABC, None, None, 3.0)
    assert (block.lsr, block.dlsr) == (0, 0)


def test_report_block_extended_sequence_after_wrap() -> None:
    receiver = RtpReceiver(8000)
    for i, seq in enumerate([65534, 65535, 0, 1, 2]):
        receiver.update(RtpPacket(0, seq, 160 * i, 1), 0.02 * i)
    assert report_block(receiver, 1, None, None, 1.0).highest_sequence == 65536 + 2


class _HugeLoss(RtpReceiver):
    def __init__(self, lost: int) -> None:
        super().__init__(8000)
        self._fake_lost = lost

    @property
    def lost(self) -> int:
        return self._fake_lost


@pytest.mark.parametrize(
    ("lost", "reported"),
    [(10_000_000, (1 << 23) - 1), (-10_000_000, -(1 << 23)), (-3, -3)],
)
def test_report_block_clamps_cumulative_lost(lost: int, reported: int) -> None:
    block = report_block(_HugeLoss(lost), 1, None, None, 0.0)
    assert block.cumulative_lost == reported
    serialise_compound([ReceiverReport(ssrc=2, reports=[block])])  # fits the field


def test_sr_report_block_is_24_bytes_each() -> None:
    sr = SenderReport(ssrc=1, reports=[ReportBlock(ssrc=i) for i in range(31)])
    data = serialise_compound([sr])
    assert len(data) == 28 + 31 * 24
    assert struct.unpack_from("!H", data, 2)[0] == (28 + 31 * 24) // 4 - 1
    assert parse_compound(data) == [sr]
