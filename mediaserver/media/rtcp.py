"""RTCP compound packets (RFC 3550 section 6), sans-IO.

The packet types we act on (SR, RR, SDES, BYE) are plain dataclasses; every
other type (APP, the RFC 4585 feedback messages, XR, ...) is kept as an
`RtcpUnknown` with its raw body, so a compound survives a parse/serialise
round trip even when we do not understand all of it.

`parse_compound` checks the validity rules of RFC 3550 appendix A.2 that make
a compound unambiguous (version, lengths, counts that fit their packet,
padding only at the end) and raises `RtcpError` otherwise. It does not insist
that the compound starts with an SR or RR, because reduced-size RTCP
(RFC 5506) drops that rule and nothing here depends on it.

The timing helpers turn our clock readings into the NTP-format fields of an
SR and the LSR/DLSR fields of a report block.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeAlias

from mediaserver.media.rtp import RtpReceiver

__all__ = [
    "NTP_EPOCH_OFFSET",
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "Bye",
    "ReceiverReport",
    "ReportBlock",
    "RtcpError",
    "RtcpPacket",
    "RtcpUnknown",
    "SdesItem",
    "SenderReport",
    "SourceDescription",
    "ntp_middle32",
    "ntp_time",
    "parse_compound",
    "report_block",
    "serialise_compound",
]

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203

NTP_EPOCH_OFFSET = 2_208_988_800
"""Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01)."""

_VERSION = 2
_MAX_COUNT = 31  # the 5-bit count field
_U32 = 0xFFFFFFFF
_HEADER = struct.Struct("!BBH")
_SR_INFO = struct.Struct("!IQIII")  # ssrc, NTP timestamp, RTP timestamp, packets, octets
_REPORT_BLOCK = struct.Struct("!IIIIII")
_CUMULATIVE_LOST_MIN = -(1 << 23)
_CUMULATIVE_LOST_MAX = (1 << 23) - 1


class RtcpError(ValueError):
    """A compound RTCP packet is malformed, or a packet cannot be serialised."""


class SdesItem(enum.IntEnum):
    """SDES item types (RFC 3550 section 6.5)."""

    END = 0
    CNAME = 1
    NAME = 2
    EMAIL = 3
    PHONE = 4
    LOC = 5
    TOOL = 6
    NOTE = 7
    PRIV = 8


@dataclass
class ReportBlock:
    """Reception report about one source (RFC 3550 section 6.4.1).

    Attributes:
        ssrc: The source this block reports on.
        fraction_lost: Fraction lost since the previous report, in 1/256 units (0-255).
        cumulative_lost: Packets lost since the start, 24-bit signed.
        highest_sequence: Extended highest sequence number received (32 bits).
        jitter: Interarrival jitter in timestamp units.
        lsr: Middle 32 bits of the NTP timestamp of the last SR from the source, or 0.
        dlsr: Delay since that SR, in 1/65536 seconds, or 0.
    """

    ssrc: int
    fraction_lost: int = 0
    cumulative_lost: int = 0
    highest_sequence: int = 0
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0


@dataclass
class SenderReport:
    """SR: sender info plus reception reports (RFC 3550 section 6.4.1).

    Attributes:
        ssrc: The sender.
        ntp_timestamp: 64-bit NTP wallclock time of the report (see `ntp_time`).
        rtp_timestamp: The same instant on the RTP clock.
        packet_count: RTP packets sent since the start.
        octet_count: Payload octets sent since the start.
        reports: Up to 31 report blocks.
    """

    ssrc: int
    ntp_timestamp: int = 0
    rtp_timestamp: int = 0
    packet_count: int = 0
    octet_count: int = 0
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass
class ReceiverReport:
    """RR: reception reports from a participant that does not send (RFC 3550 6.4.2).

    Attributes:
        ssrc: The reporter.
        reports: Up to 31 report blocks.
    """

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass
class SourceDescription:
    """SDES: items describing sources (RFC 3550 section 6.5).

    Attributes:
        chunks: Up to 31 ``(ssrc, [(item_type, text), ...])`` pairs; see
            `SdesItem` for the item types. Every compound we send carries a
            CNAME (type 1).
    """

    chunks: list[tuple[int, list[tuple[int, str]]]] = field(default_factory=list)

    def cname(self, ssrc: int) -> str | None:
        """Return the CNAME given for `ssrc`, or None."""
        for chunk_ssrc, items in self.chunks:
            if chunk_ssrc == ssrc:
                for item_type, text in items:
                    if item_type == SdesItem.CNAME:
                        return text
        return None


@dataclass
class Bye:
    """BYE: sources leaving the session (RFC 3550 section 6.6).

    Attributes:
        ssrcs: Up to 31 sources.
        reason: Optional reason text (at most 255 bytes of UTF-8).
    """

    ssrcs: list[int] = field(default_factory=list)
    reason: str | None = None


@dataclass
class RtcpUnknown:
    """An RTCP packet of a type we do not interpret, kept verbatim.

    Attributes:
        packet_type: The 8-bit packet type (204 APP, 205/206 feedback, ...).
        count: The 5-bit count/subtype field of the header.
        payload: The packet body after the 4-byte header, without padding.
    """

    packet_type: int
    count: int = 0
    payload: bytes = b""


RtcpPacket: TypeAlias = SenderReport | ReceiverReport | SourceDescription | Bye | RtcpUnknown
"""Any packet of a compound."""


# ---------------------------------------------------------------- parsing


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP packet.

    Args:
        data: One UDP payload holding one or more RTCP packets.

    Returns:
        The packets in order.

    Raises:
        RtcpError: The compound is malformed: empty, wrong version, a length
            that runs past the data, a count that does not fit its packet,
            padding anywhere but in the last packet, trailing bytes.
    """
    if not data:
        raise RtcpError("empty RTCP packet")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            raise RtcpError(f"{len(data) - offset} trailing bytes after the last RTCP packet")
        first, packet_type, length = _HEADER.unpack_from(data, offset)
        if first >> 6 != _VERSION:
            raise RtcpError(f"RTCP version {first >> 6}, expected {_VERSION}")
        end = offset + 4 * (length + 1)
        if end > len(data):
            raise RtcpError(
                f"RTCP packet type {packet_type} of {4 * (length + 1)} bytes "
                f"runs past the {len(data) - offset} bytes left"
            )
        body = bytes(data[offset + _HEADER.size : end])
        if first & 0x20:
            if end != len(data):
                raise RtcpError("padding in an RTCP packet that is not the last of the compound")
            padding = body[-1] if body else 0
            if padding == 0 or padding > len(body):
                raise RtcpError(f"bad RTCP padding count {padding}")
            body = body[:-padding]
        packets.append(_parse_packet(packet_type, first & 0x1F, body))
        offset = end
    return packets


def _parse_packet(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == RTCP_SR:
        if len(body) < _SR_INFO.size + count * _REPORT_BLOCK.size:
            raise RtcpError(f"SR with {count} report blocks does not fit {len(body)} bytes")
        ssrc, ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(body)
        return SenderReport(
            ssrc=ssrc,
            ntp_timestamp=ntp,
            rtp_timestamp=rtp_ts,
            packet_count=packets,
            octet_count=octets,
            reports=_parse_report_blocks(body, _SR_INFO.size, count),
        )
    if packet_type == RTCP_RR:
        if len(body) < 4 + count * _REPORT_BLOCK.size:
            raise RtcpError(f"RR with {count} report blocks does not fit {len(body)} bytes")
        (ssrc,) = struct.unpack_from("!I", body)
        return ReceiverReport(ssrc=ssrc, reports=_parse_report_blocks(body, 4, count))
    if packet_type == RTCP_SDES:
        return _parse_sdes(count, body)
    if packet_type == RTCP_BYE:
        return _parse_bye(count, body)
    return RtcpUnknown(packet_type=packet_type, count=count, payload=body)


def _parse_report_blocks(body: bytes, offset: int, count: int) -> list[ReportBlock]:
    blocks = []
    for _ in range(count):
        ssrc, loss, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(body, offset)
        cumulative = loss & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        blocks.append(
            ReportBlock(
                ssrc=ssrc,
                fraction_lost=loss >> 24,
                cumulative_lost=cumulative,
                highest_sequence=highest,
                jitter=jitter,
                lsr=lsr,
                dlsr=dlsr,
            )
        )
        offset += _REPORT_BLOCK.size
    return blocks


def _parse_sdes(count: int, body: bytes) -> SourceDescription:
    chunks: list[tuple[int, list[tuple[int, str]]]] = []
    offset = 0
    for _ in range(count):
        if offset + 4 > len(body):
            raise RtcpError(f"SDES with {count} chunks runs past its packet")
        (ssrc,) = struct.unpack_from("!I", body, offset)
        offset += 4
        items: list[tuple[int, str]] = []
        while True:
            if offset >= len(body):
                raise RtcpError("SDES chunk without an END item")
            item_type = body[offset]
            if item_type == SdesItem.END:
                # The null octet(s) run to the next 32-bit boundary.
                offset = (offset + 4) & ~3
                break
            if offset + 2 > len(body):
                raise RtcpError("SDES item header runs past its packet")
            length = body[offset + 1]
            if offset + 2 + length > len(body):
                raise RtcpError(f"SDES item of {length} bytes runs past its packet")
            text = body[offset + 2 : offset + 2 + length].decode("utf-8", errors="replace")
            items.append((item_type, text))
            offset += 2 + length
        chunks.append((ssrc, items))
    return SourceDescription(chunks=chunks)


def _parse_bye(count: int, body: bytes) -> Bye:
    if len(body) < 4 * count:
        raise RtcpError(f"BYE with {count} sources does not fit {len(body)} bytes")
    ssrcs = list(struct.unpack_from(f"!{count}I", body))
    reason = None
    offset = 4 * count
    if offset < len(body):
        length = body[offset]
        if offset + 1 + length > len(body):
            raise RtcpError(f"BYE reason of {length} bytes runs past its packet")
        reason = body[offset + 1 : offset + 1 + length].decode("utf-8", errors="replace")
    return Bye(ssrcs=ssrcs, reason=reason)


# ---------------------------------------------------------------- serialising


def serialise_compound(packets: Iterable[RtcpPacket]) -> bytes:
    """Serialise packets into one compound RTCP packet.

    Lengths are computed here; SDES chunks and the BYE reason are padded to a
    32-bit boundary. No packet gets the P bit (we never need padding).

    Args:
        packets: The packets in the order they go on the wire.

    Returns:
        The compound's bytes.

    Raises:
        RtcpError: A value does not fit its field (more than 31 report blocks,
            an SDES text over 255 bytes, a cumulative loss beyond 24 bits, ...).
    """
    return b"".join(_serialise_packet(packet) for packet in packets)


def _serialise_packet(packet: RtcpPacket) -> bytes:
    match packet:
        case SenderReport():
            _check_count("report blocks", len(packet.reports))
            body = _SR_INFO.pack(
                _u32("ssrc", packet.ssrc),
                _uint("NTP timestamp", packet.ntp_timestamp, (1 << 64) - 1),
                _u32("RTP timestamp", packet.rtp_timestamp),
                _u32("packet count", packet.packet_count),
                _u32("octet count", packet.octet_count),
            ) + b"".join(_serialise_report_block(block) for block in packet.reports)
            return _with_header(RTCP_SR, len(packet.reports), body)
        case ReceiverReport():
            _check_count("report blocks", len(packet.reports))
            body = struct.pack("!I", _u32("ssrc", packet.ssrc)) + b"".join(
                _serialise_report_block(block) for block in packet.reports
            )
            return _with_header(RTCP_RR, len(packet.reports), body)
        case SourceDescription():
            _check_count("SDES chunks", len(packet.chunks))
            return _with_header(RTCP_SDES, len(packet.chunks), _serialise_sdes(packet))
        case Bye():
            _check_count("BYE sources", len(packet.ssrcs))
            body = b"".join(struct.pack("!I", _u32("ssrc", ssrc)) for ssrc in packet.ssrcs)
            if packet.reason is not None:
                reason = _text("BYE reason", packet.reason)
                body += _pad32(bytes([len(reason)]) + reason)
            return _with_header(RTCP_BYE, len(packet.ssrcs), body)
        case RtcpUnknown():
            _uint("packet type", packet.packet_type, 0xFF)
            _uint("count", packet.count, _MAX_COUNT)
            if len(packet.payload) % 4:
                raise RtcpError(f"RTCP payload of {len(packet.payload)} bytes, not 32-bit aligned")
            return _with_header(packet.packet_type, packet.count, packet.payload)
    raise TypeError(f"not an RTCP packet: {packet!r}")  # pragma: no cover


def _serialise_report_block(block: ReportBlock) -> bytes:
    _uint("fraction lost", block.fraction_lost, 0xFF)
    if not _CUMULATIVE_LOST_MIN <= block.cumulative_lost <= _CUMULATIVE_LOST_MAX:
        raise RtcpError(f"cumulative lost {block.cumulative_lost} does not fit 24 bits signed")
    return _REPORT_BLOCK.pack(
        _u32("ssrc", block.ssrc),
        (block.fraction_lost << 24) | (block.cumulative_lost & 0xFFFFFF),
        _u32("highest sequence", block.highest_sequence),
        _u32("jitter", block.jitter),
        _u32("LSR", block.lsr),
        _u32("DLSR", block.dlsr),
    )


def _serialise_sdes(packet: SourceDescription) -> bytes:
    out = bytearray()
    for ssrc, items in packet.chunks:
        chunk = bytearray(struct.pack("!I", _u32("ssrc", ssrc)))
        for item_type, text in items:
            _uint("SDES item type", item_type, 0xFF)
            if item_type == SdesItem.END:
                raise RtcpError("SDES item type 0 is the END marker, not an item")
            encoded = _text("SDES item", text)
            chunk += bytes([item_type, len(encoded)]) + encoded
        # At least one null octet ends the item list, then up to the boundary.
        chunk += bytes(4 - len(chunk) % 4)
        out += chunk
    return bytes(out)


def _with_header(packet_type: int, count: int, body: bytes) -> bytes:
    if len(body) // 4 > 0xFFFF:
        raise RtcpError("RTCP packet too long")
    return _HEADER.pack((_VERSION << 6) | count, packet_type, len(body) // 4) + body


def _pad32(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _text(name: str, text: str) -> bytes:
    encoded = text.encode("utf-8")
    if len(encoded) > 0xFF:
        raise RtcpError(f"{name} of {len(encoded)} bytes, at most 255 fit")
    return encoded


def _check_count(name: str, count: int) -> None:
    if count > _MAX_COUNT:
        raise RtcpError(f"{count} {name}, at most {_MAX_COUNT} fit one packet")


def _uint(name: str, value: int, maximum: int) -> int:
    if not 0 <= value <= maximum:
        raise RtcpError(f"{name} {value} out of range 0..{maximum}")
    return value


def _u32(name: str, value: int) -> int:
    return _uint(name, value, _U32)


# ---------------------------------------------------------------- timing


def ntp_time(unix_seconds: float) -> int:
    """Convert Unix time to a 64-bit NTP timestamp (32.32 fixed point).

    Args:
        unix_seconds: Seconds since 1970-01-01 UTC, as from the caller's wall clock.

    Returns:
        The NTP timestamp (seconds since 1900 in the high word), wrapping in
        2036 as NTP era 0 does.
    """
    seconds = math.floor(unix_seconds)
    fraction = round((unix_seconds - seconds) * (1 << 32))
    if fraction >= 1 << 32:  # rounding carried into the next second
        seconds += 1
        fraction -= 1 << 32
    return (((seconds + NTP_EPOCH_OFFSET) & _U32) << 32) | fraction


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp, as LSR carries it (16.16 seconds)."""
    return (ntp >> 16) & _U32


def report_block(
    receiver: RtpReceiver,
    ssrc: int,
    last_sr_ntp: int | None,
    last_sr_arrival: float | None,
    now: float,
) -> ReportBlock:
    """Build the report block about one source from its receive statistics.

    This closes the receiver's report interval (see `RtpReceiver.fraction_lost`),
    so build one block per source per report.

    Args:
        receiver: The statistics of the source.
        ssrc: The source's SSRC.
        last_sr_ntp: NTP timestamp of the last SR received from the source, or None.
        last_sr_arrival: When that SR arrived, on the same clock as `now`, or None.
        now: The current time on the caller's monotonic clock.

    Returns:
        The block; cumulative loss is clamped to 24 bits signed, LSR and DLSR
        are 0 until an SR has arrived, DLSR is in 1/65536 seconds.
    """
    lost = min(max(receiver.lost, _CUMULATIVE_LOST_MIN), _CUMULATIVE_LOST_MAX)
    lsr = dlsr = 0
    if last_sr_ntp is not None and last_sr_arrival is not None:
        lsr = ntp_middle32(last_sr_ntp)
        dlsr = min(max(round((now - last_sr_arrival) * 65536), 0), _U32)
    return ReportBlock(
        ssrc=ssrc,
        fraction_lost=receiver.fraction_lost(),
        cumulative_lost=lost,
        highest_sequence=receiver.extended_max_sequence & _U32,
        jitter=min(int(receiver.jitter), _U32),
        lsr=lsr,
        dlsr=dlsr,
    )
