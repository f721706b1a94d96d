"""RTP packets and per-source receive statistics (RFC 3550), sans-IO.

`RtpPacket` turns the wire format into a plain dataclass and back. Parsing is
strict about anything that would make the packet ambiguous (version, lengths
that run past the datagram, a zero padding count) and raises `RtpError`; the
caller drops the datagram and counts it.

`RtpReceiver` keeps the receive statistics of one source the way RFC 3550
appendix A prescribes: sequence validation and wrap-around (A.1), expected and
lost packets and the fraction lost per report interval (A.3), and the
interarrival jitter estimate (A.8). It takes arrival times from the caller's
clock, so it runs as well under a fake clock in tests as under the event loop.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "MAX_DROPOUT",
    "MAX_MISORDER",
    "MIN_SEQUENTIAL",
    "RTP_HEADER_SIZE",
    "RTP_VERSION",
    "RtpError",
    "RtpExtension",
    "RtpPacket",
    "RtpReceiver",
    "is_rtcp",
]

RTP_VERSION = 2
"""The only RTP version we speak."""

RTP_HEADER_SIZE = 12
"""Size of the fixed RTP header, before CSRCs and the header extension."""

MAX_DROPOUT = 3000
"""Largest forward sequence jump accepted without re-validation (RFC 3550 A.1)."""

MAX_MISORDER = 100
"""Largest backward sequence jump treated as reordering (RFC 3550 A.1)."""

MIN_SEQUENTIAL = 2
"""Sequential packets needed before a new source is valid (RFC 3550 A.1)."""

_SEQ_MOD = 1 << 16
_U32 = 0xFFFFFFFF
_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """A datagram is not a valid RTP packet, or a packet cannot be serialised."""


@dataclass
class RtpExtension:
    """An RTP header extension (RFC 3550 section 5.3.1).

    Attributes:
        profile: The 16-bit profile-defined value (0xBEDE for RFC 8285 one-byte
            headers, for example).
        data: The extension body; its length must be a multiple of 4 bytes.
    """

    profile: int
    data: bytes = b""


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 section 5.1).

    Attributes:
        payload_type: 7-bit payload type.
        sequence: 16-bit sequence number.
        timestamp: 32-bit RTP timestamp.
        ssrc: 32-bit synchronisation source.
        payload: The payload, without padding.
        marker: The marker bit (start of a talk spurt for audio).
        csrcs: Contributing sources, at most 15.
        extension: The header extension, if any.
        padding: Number of padding bytes (including the count byte itself) that
            were present, or that `serialise` appends; 0 means no P bit.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: list[int] = field(default_factory=list)
    extension: RtpExtension | None = None
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one RTP packet.

        Args:
            data: The UDP payload.

        Returns:
            The packet. Padding bytes are stripped from the payload and only
            their number is kept.

        Raises:
            RtpError: The datagram is not a well-formed RTP version 2 packet.
        """
        if len(data) < RTP_HEADER_SIZE:
            raise RtpError(f"RTP packet too short: {len(data)} bytes")
        first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        if first == 0x80:
            # The usual packet (no padding, extension or CSRC): this runs for every
            # packet of every call, so skip the general path's work.
            return cls(second & 0x7F, sequence, timestamp, ssrc, data[12:], second > 0x7F)
        version = first >> 6
        if version != RTP_VERSION:
            raise RtpError(f"RTP version {version}, expected {RTP_VERSION}")
        has_padding = bool(first & 0x20)
        has_extension = bool(first & 0x10)
        csrc_count = first & 0x0F

        offset = RTP_HEADER_SIZE + 4 * csrc_count
        if offset > len(data):
            raise RtpError(f"{csrc_count} CSRCs run past the end of the packet")
        csrcs = list(struct.unpack_from(f"!{csrc_count}I", data, RTP_HEADER_SIZE))

        extension = None
        if has_extension:
            if offset + 4 > len(data):
                raise RtpError("header extension runs past the end of the packet")
            profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
            offset += 4
            if offset + 4 * words > len(data):
                raise RtpError(f"header extension of {words} words runs past the packet")
            extension = RtpExtension(profile=profile, data=bytes(data[offset : offset + 4 * words]))
            offset += 4 * words

        end = len(data)
        padding = 0
        if has_padding:
            padding = data[-1]
            if padding == 0:
                raise RtpError("P bit set with a padding count of 0")
            if padding > end - offset:
                raise RtpError(f"{padding} padding bytes run into the header")
            end -= padding

        return cls(
            payload_type=second & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(second & 0x80),
            csrcs=csrcs,
            extension=extension,
            padding=padding,
        )

    def serialise(self) -> bytes:
        """Return the wire form of the packet.

        Padding, when `padding` is non-zero, is that many bytes: zeros followed
        by the count, as RFC 3550 section 5.1 describes.

        Raises:
            RtpError: A field is out of range (payload type beyond 7 bits, more
                than 15 CSRCs, an extension not a multiple of 4 bytes, ...).
        """
        _check_range("payload_type", self.payload_type, 0x7F)
        _check_range("sequence", self.sequence, 0xFFFF)
        _check_range("timestamp", self.timestamp, _U32)
        _check_range("ssrc", self.ssrc, _U32)
        _check_range("padding", self.padding, 0xFF)
        if len(self.csrcs) > 15:
            raise RtpError(f"{len(self.csrcs)} CSRCs, at most 15 fit the header")
        for csrc in self.csrcs:
            _check_range("csrc", csrc, _U32)

        first = (RTP_VERSION << 6) | len(self.csrcs)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = self.payload_type | (0x80 if self.marker else 0)
        parts = [
            _HEADER.pack(first, second, self.sequence, self.timestamp, self.ssrc),
            struct.pack(f"!{len(self.csrcs)}I", *self.csrcs),
        ]
        if self.extension is not None:
            ext = self.extension
            _check_range("extension profile", ext.profile, 0xFFFF)
            if len(ext.data) % 4:
                raise RtpError(f"extension data of {len(ext.data)} bytes, not a multiple of 4")
            if len(ext.data) // 4 > 0xFFFF:
                raise RtpError("extension data too long")
            parts.append(_EXTENSION_HEADER.pack(ext.profile, len(ext.data) // 4))
            parts.append(ext.data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def _check_range(name: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise RtpError(f"{name} {value} out of range 0..{maximum}")


def is_rtcp(data: bytes) -> bool:
    """Tell RTCP from RTP on a multiplexed port (RFC 5761 section 4).

    RTCP packet types 192-223 occupy the byte where RTP has the marker bit and
    payload type, so RTP payload types 64-95 are never used with rtcp-mux.

    Args:
        data: A datagram received on the RTP port.

    Returns:
        True if the datagram should go to the RTCP parser.
    """
    return len(data) >= 2 and 64 <= (data[1] & 0x7F) <= 95


class RtpReceiver:
    """Receive statistics of one RTP source (RFC 3550 appendix A.1, A.3, A.8).

    Feed every packet of the stream to `update`; it follows the source that
    sent the most recent packet. A packet from another SSRC starts over with a
    fresh source (counted in `ssrc_changes`), because a sender that restarts
    picks a new SSRC and its sequence and timestamp bases mean nothing to the
    old statistics.

    The sequence validation is A.1's algorithm: a new source is on probation
    until `MIN_SEQUENTIAL` packets arrive in sequence, and a jump of more than
    `MAX_DROPOUT` ahead (or `MAX_MISORDER` behind) is only believed when the
    next packet follows it. `update` returns False for the packets A.1 says to
    discard; counters and jitter only take the packets it accepts.

    Attributes:
        clock_rate: RTP clock rate of the payload (Hz).
        ssrc: The current source, or None before the first packet.
        received: Packets accepted from the current source, duplicates included
            (as in A.3, which is why `lost` can be negative).
        duplicates: Accepted packets whose sequence number was already seen.
        reordered: Accepted packets older than the highest sequence number,
            duplicates excluded.
        discarded: Packets refused while on probation or after a large jump.
        ssrc_changes: Times the source changed after the first packet.
        last_arrival: Arrival time of the last accepted packet, or None.
    """

    # How far back (in sequence numbers) duplicates are recognised. A.1 treats
    # anything within MAX_MISORDER behind the highest as reordered, so the
    # window has to cover that.
    _SEEN_WINDOW = 2 * MAX_MISORDER

    def __init__(self, clock_rate: int) -> None:
        """Create the statistics for a stream with the given RTP clock rate.

        Args:
            clock_rate: RTP clock rate in Hz; arrival seconds are converted to
                this unit for the jitter estimate.
        """
        if clock_rate <= 0:
            raise ValueError(f"clock_rate must be positive, got {clock_rate}")
        self.clock_rate = clock_rate
        self.ssrc: int | None = None
        self.ssrc_changes = 0
        self._reset_source()

    def _reset_source(self) -> None:
        self.received = 0
        self.duplicates = 0
        self.reordered = 0
        self.discarded = 0
        self.last_arrival: float | None = None
        self._jitter = 0.0
        self._max_seq = 0
        self._base_seq = 0
        self._bad_seq = _SEQ_MOD + 1  # impossible value: no pending jump
        self._cycles = 0
        self._probation = MIN_SEQUENTIAL
        self._expected_prior = 0
        self._received_prior = 0
        self._seen = 0  # bit i set: extended sequence (highest - i) was accepted
        self._last_transit: tuple[float, int] | None = None  # (arrival, timestamp)

    def _init_seq(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = _SEQ_MOD + 1
        self._cycles = 0
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._seen = 0

    def update(self, packet: RtpPacket, arrival: float) -> bool:
        """Account for one received packet.

        Args:
            packet: The parsed packet.
            arrival: Arrival time in seconds on the caller's monotonic clock.

        Returns:
            False if A.1 says to discard the packet (source still on probation,
            or an unconfirmed large sequence jump); True otherwise.
        """
        if packet.ssrc != self.ssrc:
            if self.ssrc is not None:
                self.ssrc_changes += 1
            self.ssrc = packet.ssrc
            self._reset_source()
            self._init_seq(packet.sequence)
            self._max_seq = (packet.sequence - 1) % _SEQ_MOD
            self._probation = MIN_SEQUENTIAL

        accepted, duplicate = self._update_seq(packet.sequence)
        if not accepted:
            self.discarded += 1
            if self._probation:
                # Probation packets still give the jitter estimate its first
                # transit time, so the first valid packet already yields a sample.
                self._last_transit = (arrival, packet.timestamp)
            return False
        if duplicate:
            self.duplicates += 1
        self.last_arrival = arrival
        self._update_jitter(packet.timestamp, arrival)
        return True

    def _update_seq(self, seq: int) -> tuple[bool, bool]:
        """A.1's update_seq; returns (accepted, duplicate)."""
        udelta = (seq - self._max_seq) % _SEQ_MOD
        if self._probation:
            if seq == (self._max_seq + 1) % _SEQ_MOD:
                self._probation -= 1
                self._max_seq = seq
                if self._probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    self._seen = 1
                    return True, False
            else:
                self._probation = MIN_SEQUENTIAL - 1
                self._max_seq = seq
            return False, False
        if udelta < MAX_DROPOUT:
            if udelta == 0:
                duplicate = bool(self._seen & 1)
                self._seen |= 1
            else:
                duplicate = False
                if seq < self._max_seq:
                    self._cycles += _SEQ_MOD  # wrapped around 65535 -> 0
                self._max_seq = seq
                self._seen = ((self._seen << udelta) | 1) & ((1 << self._SEEN_WINDOW) - 1)
        elif udelta <= _SEQ_MOD - MAX_MISORDER:
            if seq == self._bad_seq:
                # Two sequential packets after a big jump: the sender restarted
                # its sequence (A.1), so believe it and start counting afresh.
                self._init_seq(seq)
                self._seen = 1
                self._last_transit = None  # its timestamps may have jumped too
                duplicate = False
            else:
                self._bad_seq = (seq + 1) % _SEQ_MOD
                return False, False
        else:
            # Behind the highest sequence number: a duplicate or a late packet.
            behind = _SEQ_MOD - udelta
            bit = 1 << behind
            duplicate = bool(self._seen & bit)
            if not duplicate:
                self.reordered += 1
                self._seen |= bit
        self.received += 1
        return True, duplicate

    def _update_jitter(self, timestamp: int, arrival: float) -> None:
        # A.8 with the transit difference taken directly, so a 32-bit
        # timestamp wrap between the two packets does not look like a jump.
        if self._last_transit is not None:
            last_arrival, last_timestamp = self._last_transit
            elapsed = timestamp - last_timestamp
            elapsed = ((elapsed + (1 << 31)) & _U32) - (1 << 31)
            d = abs((arrival - last_arrival) * self.clock_rate - elapsed)
            self._jitter += (d - self._jitter) / 16.0
        self._last_transit = (arrival, timestamp)

    @property
    def jitter(self) -> float:
        """Interarrival jitter estimate in timestamp units (A.8), as a float."""
        return self._jitter

    @property
    def extended_max_sequence(self) -> int:
        """Highest sequence number received, extended with the wrap-around count."""
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        """Packets expected from the current source since it became valid (A.3)."""
        if self._probation or self.ssrc is None:
            return 0
        return self.extended_max_sequence - self._base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (A.3); negative when duplicates outnumber losses."""
        return self.expected - self.received

    def fraction_lost(self) -> int:
        """Fraction lost since the previous call, in 1/256 units (A.3).

        This closes the report interval: call it once per RTCP report.

        Returns:
            0-255; 0 when nothing was expected or more packets arrived than
            were expected (duplicates).
        """
        expected = self.expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self.received - self._received_prior
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            return 0
        return min(255, (lost_interval << 8) // expected_interval)
