"""DTMF over RTP: RFC 4733 telephone-event packets, sans-IO.

An event is one key press. The sender keeps the RTP timestamp at the event's
start for every packet of the event and grows the duration field as the key
stays down; the packet that ends the event has the E bit set and is sent
three times, because a lost end would otherwise leave the receiver guessing
(RFC 4733 section 2.5.1.4).

`DtmfReceiver` therefore keys events on their RTP timestamp: the first end
packet reports the digit, the retransmissions are recognised and dropped. If
every end packet is lost, the digit is still reported once, when the next
event (a new timestamp) starts or when `flush` finds it idle for too long.

`DtmfSender` plans the packets of one digit with their send offsets; the RTP
session stamps them with its own sequence numbers and puts them on the wire
when their time comes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from mediaserver.media.rtp import RtpPacket

__all__ = [
    "EVENT_CODES",
    "DtmfError",
    "DtmfEvent",
    "DtmfPacket",
    "DtmfReceiver",
    "DtmfSender",
    "build_event",
    "digit_for_event",
    "event_for_digit",
    "parse_event",
]

EVENT_CODES: dict[str, int] = {
    **{str(n): n for n in range(10)},
    "*": 10,
    "#": 11,
    "A": 12,
    "B": 13,
    "C": 14,
    "D": 15,
    "flash": 16,
}
"""RFC 4733 section 3.2 event codes of the DTMF digits and hook flash."""

_DIGITS = {code: digit for digit, code in EVENT_CODES.items()}
_EVENT_SIZE = 4
_MAX_DURATION = 0xFFFF
_U32 = 0xFFFFFFFF


class DtmfError(ValueError):
    """A telephone-event payload is malformed or a value does not fit its field."""


def event_for_digit(digit: str) -> int:
    """Return the event code of a digit ('0'-'9', '*', '#', 'A'-'D', 'flash').

    Raises:
        DtmfError: Not a DTMF digit.
    """
    key = digit if digit == "flash" else digit.upper()
    try:
        return EVENT_CODES[key]
    except KeyError:
        raise DtmfError(f"not a DTMF digit: {digit!r}") from None


def digit_for_event(event: int) -> str | None:
    """Return the digit of an event code, or None for codes outside 0-16."""
    return _DIGITS.get(event)


def parse_event(payload: bytes) -> tuple[int, bool, int, int]:
    """Parse a telephone-event payload (RFC 4733 section 2.3).

    Only the first event is read; a payload may carry more (section 2.5.1.5)
    but the first is the current one.

    Args:
        payload: The RTP payload.

    Returns:
        ``(event, end, volume, duration)``: event code, E bit, volume in -dBm0
        (0-63), duration in timestamp units.

    Raises:
        DtmfError: The payload is shorter than 4 bytes.
    """
    if len(payload) < _EVENT_SIZE:
        raise DtmfError(f"telephone-event payload of {len(payload)} bytes, need 4")
    return (
        payload[0],
        bool(payload[1] & 0x80),
        payload[1] & 0x3F,
        int.from_bytes(payload[2:4], "big"),
    )


def build_event(event: int, end: bool, volume: int, duration: int) -> bytes:
    """Build a telephone-event payload (RFC 4733 section 2.3); R bit zero.

    Args:
        event: Event code (0-255).
        end: The E bit.
        volume: Power level in -dBm0 (0-63).
        duration: Duration so far in timestamp units (0-65535).

    Raises:
        DtmfError: A value does not fit its field.
    """
    for name, value, maximum in (
        ("event", event, 0xFF),
        ("volume", volume, 0x3F),
        ("duration", duration, _MAX_DURATION),
    ):
        if not 0 <= value <= maximum:
            raise DtmfError(f"{name} {value} out of range 0..{maximum}")
    return bytes([event, (0x80 if end else 0) | volume]) + duration.to_bytes(2, "big")


@dataclass(frozen=True)
class DtmfEvent:
    """One digit received.

    Attributes:
        digit: '0'-'9', '*', '#', 'A'-'D', or 'flash' (event 16).
        duration_ms: How long the key was down, from the last duration seen.
        timestamp: RTP timestamp of the event's start (identifies the event).
        volume: Power level in -dBm0 from the last packet seen.
        ended: False when no end packet arrived and the digit was reported
            because a new event started or the event went idle.
    """

    digit: str
    duration_ms: int
    timestamp: int
    volume: int
    ended: bool = True


@dataclass
class _Current:
    timestamp: int
    event: int
    duration: int
    volume: int
    last_update: float


class DtmfReceiver:
    """Turns received telephone-event packets into digits, each reported once.

    Feed it only the packets of the negotiated telephone-event payload type.

    Attributes:
        clock_rate: RTP clock rate of the telephone-event payload.
        timeout: Seconds without an update after which `flush` reports an
            event whose end packets were all lost.
        malformed: Payloads too short to hold an event.
        unsupported: Events outside the DTMF range (codes above 16), ignored.
    """

    # Timestamps of recently finished events, to recognise the end packet
    # retransmissions and stragglers. A handful is plenty: retransmissions
    # arrive within a few packet intervals of the first end packet.
    _FINISHED_MEMORY = 16

    def __init__(self, clock_rate: int = 8000, timeout: float = 2.0) -> None:
        """Create a receiver.

        Args:
            clock_rate: RTP clock rate of the telephone-event payload (Hz).
            timeout: Seconds of silence after which `flush` gives up on an end packet.
        """
        self.clock_rate = clock_rate
        self.timeout = timeout
        self.malformed = 0
        self.unsupported = 0
        self._current: _Current | None = None
        self._finished: deque[int] = deque(maxlen=self._FINISHED_MEMORY)

    def feed(self, packet: RtpPacket, arrival: float) -> list[DtmfEvent]:
        """Account for one telephone-event packet.

        Args:
            packet: The RTP packet.
            arrival: Arrival time in seconds on the caller's clock.

        Returns:
            The digits completed by this packet: none, the digit it ends, and/or
            a previous digit whose end packets were lost (that one first).
        """
        try:
            event, end, volume, duration = parse_event(packet.payload)
        except DtmfError:
            self.malformed += 1
            return []
        if digit_for_event(event) is None:
            self.unsupported += 1
            return []
        timestamp = packet.timestamp
        if timestamp in self._finished:
            return []  # a retransmitted end packet, or a straggler of a reported event

        out: list[DtmfEvent] = []
        current = self._current
        if current is not None and current.timestamp != timestamp:
            if _serial_less(timestamp, current.timestamp):
                return []  # reordered packet of an event older than the current one
            # A new event began before the current one's end arrived.
            out.append(self._finish(current, ended=False))
            current = None
        if current is None:
            current = _Current(timestamp, event, duration, volume, arrival)
            self._current = current
        else:
            current.duration = max(current.duration, duration)
            current.volume = volume
            current.last_update = arrival
        if end:
            out.append(self._finish(current, ended=True))
        return out

    def flush(self, now: float) -> list[DtmfEvent]:
        """Report the current event if it has been idle for `timeout` seconds.

        Args:
            now: The current time on the clock `feed` is given.

        Returns:
            The digit given up on, if any.
        """
        current = self._current
        if current is not None and now - current.last_update >= self.timeout:
            return [self._finish(current, ended=False)]
        return []

    def _finish(self, current: _Current, *, ended: bool) -> DtmfEvent:
        self._current = None
        self._finished.append(current.timestamp)
        digit = digit_for_event(current.event)
        assert digit is not None  # feed() only starts events with a known digit
        return DtmfEvent(
            digit=digit,
            duration_ms=round(current.duration * 1000 / self.clock_rate),
            timestamp=current.timestamp,
            volume=current.volume,
            ended=ended,
        )


def _serial_less(a: int, b: int) -> bool:
    """True if 32-bit timestamp `a` comes before `b`, allowing for wrap-around."""
    return a != b and ((b - a) & _U32) < 1 << 31


@dataclass(frozen=True)
class DtmfPacket:
    """One planned telephone-event packet.

    Attributes:
        send_offset: Seconds after the event start at which to send it.
        timestamp: RTP timestamp of the event start (the same for every packet).
        marker: The RTP marker bit, set on the first packet of the event only.
        payload: The 4-byte telephone-event payload.
    """

    send_offset: float
    timestamp: int
    marker: bool
    payload: bytes


class DtmfSender:
    """Plans the telephone-event packets of a digit (RFC 4733 section 2.5.1).

    Attributes:
        payload_type: The negotiated telephone-event payload type.
        clock_rate: Its RTP clock rate.
        volume: Power level to signal, in -dBm0 (0-63).
    """

    END_REPEATS = 3
    """How many times the end packet is sent (RFC 4733 section 2.5.1.4)."""

    def __init__(self, payload_type: int, clock_rate: int = 8000, volume: int = 10) -> None:
        """Create a sender.

        Args:
            payload_type: The negotiated telephone-event payload type.
            clock_rate: Its RTP clock rate (Hz).
            volume: Power level in -dBm0 (0-63).
        """
        if not 0 <= volume <= 0x3F:
            raise DtmfError(f"volume {volume} out of range 0..63")
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.volume = volume

    def packets(
        self,
        digit: str,
        start_timestamp: int,
        duration_ms: int = 100,
        packet_interval_ms: int = 50,
    ) -> list[DtmfPacket]:
        """Plan the packets of one key press.

        The start packet goes out at once with the marker bit; an update
        follows every `packet_interval_ms`, each carrying the duration
        reached by the end of its interval (capped at the total); at
        `duration_ms` the end packet goes out, and is repeated twice more
        at the packet interval.

        Args:
            digit: '0'-'9', '*', '#', 'A'-'D' or 'flash'.
            start_timestamp: RTP timestamp of the event start, on the stream's clock.
            duration_ms: How long the key is held.
            packet_interval_ms: Interval between updates (and end repeats).

        Returns:
            The packets in send order.

        Raises:
            DtmfError: Unknown digit, a non-positive duration or interval, or a
                duration too long for the 16-bit field (over 8.19 s at 8 kHz).
        """
        event = event_for_digit(digit)
        if duration_ms <= 0 or packet_interval_ms <= 0:
            raise DtmfError("duration and packet interval must be positive")
        total = round(duration_ms * self.clock_rate / 1000)
        if total > _MAX_DURATION:
            # Longer events need RFC 4733 segments; no DTMF key press lasts that long.
            raise DtmfError(f"event of {duration_ms} ms does not fit the duration field")
        timestamp = start_timestamp & _U32
        out = []
        offset_ms = 0
        while offset_ms < duration_ms:
            reached_ms = min(offset_ms + packet_interval_ms, duration_ms)
            reached = round(reached_ms * self.clock_rate / 1000)
            payload = build_event(event, False, self.volume, reached)
            out.append(DtmfPacket(offset_ms / 1000, timestamp, offset_ms == 0, payload))
            offset_ms += packet_interval_ms
        end = build_event(event, True, self.volume, total)
        for repeat in range(self.END_REPEATS):
            send_ms = duration_ms + repeat * packet_interval_ms
            out.append(DtmfPacket(send_ms / 1000, timestamp, False, end))
        return out
