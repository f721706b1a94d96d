"""Receive-side jitter buffer for a machine listener (VAD, STT, echo), sans-IO.

The listener does not play audio out of a sound card, so it needs no
concealment or time stretching: it needs every packet, in RTP order, on the
RTP timeline, with the holes marked, soon after it arrives. The buffer puts
reordered packets right, drops duplicates and stragglers, turns packets that
never came into gap frames, and never waits for a missing packet once a later
one has had its reorder window.

Units. One `Frame` per RTP packet: a 30 ms packet is one 30 ms frame, not
one and a half 20 ms frames (re-framing is the codec stage's business, and
doing it here would only split payloads we cannot decode). The packet
duration is learned from consecutive timestamps (`frame_samples` until the
stream shows otherwise); gap frames get that duration.

Timeline. `Frame.timestamp` is the packet's RTP timestamp unwrapped to 64
bits; `Frame.media_time` is seconds since the stream started, computed from
timestamps and never from arrival times (DESIGN.md: "the RTP clock is the
truth"). Both only increase, even across a sender restart or an SSRC change,
where the new timestamps are placed after the old ones.

Schedule. Packet timestamps are played out on a schedule anchored on the
first packet: the frame with timestamp ``ts`` is due at
``first_arrival + window + (ts - ts_first) / clock_rate``. `pop(now)` returns
every frame due by `now`; `next_deadline()` says when to call it next. The
rules, in the order `pop` applies them to the head (the next sequence number):

========================  ==================================================
head                      released
========================  ==================================================
arrived                   at its due time
missing, a later packet   at the hole's due time, but not before the later
``p`` buffered            packet has waited ``window`` (less the time
                          between the two slots), and never after ``p``'s
                          due time + ``window``; it becomes a gap frame
missing, nothing later    not at all: nothing is invented during silence
                          suppression, hold or an outage
========================  ==================================================

The schedule follows the stream when it drifts. A packet that arrives after
its due time, at the head of an empty buffer, is complete and goes out at
once; the schedule moves later with it so that the packets after it still
get their reorder window. A packet that would wait more than twice the
window (the sender's clock runs fast, or the first packet was delayed) pulls
the schedule earlier, to its arrival + window. With jitter below `window`
neither happens and frames leave exactly on the anchored schedule.

Discontinuities. A timestamp that jumps more than `max_jump` seconds from
what the sequence numbers predict (a talk spurt after silence suppression, a
sender that reset its clock) re-anchors the schedule on that packet without
any gap frames, and counts a `resync`. A sequence jump beyond `max_seq_jump`
or a new SSRC is only believed when a packet just after it in sequence
follows within `max_jump` seconds (RFC 3550 A.1 does the same), so one stray
packet cannot derail the stream; then the old
stream's buffered frames are released at once, the schedule is re-anchored
and `resync` or `ssrc_changes` is counted.

Telephone-events share the stream's sequence numbers but belong to the DTMF
receiver; hand them to `skip` so their sequence numbers do not turn into gap
frames.

Memory is bounded: at most `max_packets` packets wait in the buffer; beyond
that the oldest are forced out (with their gaps) at once. Frames forced out,
or flushed by a discontinuity, wait for the next `pop`, so call `pop` on
every tick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from mediaserver.media.rtp import RtpPacket

__all__ = ["Frame", "JitterBuffer"]

_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32

# How many emitted sequence numbers are remembered to tell a duplicate of an
# emitted frame from a packet that missed its slot (10 s of 20 ms packets).
_EMITTED_MEMORY = 512

# Longest packet duration we learn from timestamps (seconds); a larger step is
# a silence, not a packet.
_MAX_PACKET_DURATION = 0.2

# Sequence numbers a confirming packet may run ahead of an unconfirmed one.
_MAX_CONFIRM_GAP = 3

# What became of an emitted sequence number.
_FRAME, _GAP, _GAP_LATE = 0, 1, 2


class Frame(NamedTuple):
    """One packet's worth of media, or the gap where a packet was lost.

    Attributes:
        timestamp: RTP timestamp unwrapped to 64 bits; strictly increasing.
        media_time: Seconds since the stream start, from RTP timestamps.
        payload: The RTP payload; None for a gap.
        gap: True if the packet was lost (or arrived too late to be used).
        marker: The RTP marker bit (start of a talk spurt); False for gaps.
        payload_type: The packet's payload type; a gap repeats the previous one.
        duration: Frame length in timestamp units (the learned packet duration).
    """

    timestamp: int
    media_time: float
    payload: bytes | None
    gap: bool
    marker: bool
    payload_type: int
    duration: int


@dataclass(slots=True)
class _Slot:
    seq: int  # extended sequence number
    timestamp: int  # unwrapped timestamp
    arrival: float
    packet: RtpPacket


@dataclass(slots=True)
class _Pending:
    packet: RtpPacket
    arrival: float


def _signed(value: int, modulus: int) -> int:
    """Interpret `value` modulo `modulus` as the nearest signed difference."""
    half = modulus >> 1
    return (value + half) % modulus - half


def _forward(value: int, modulus: int) -> int:
    """Interpret `value` modulo `modulus` as a strictly positive step."""
    return value % modulus or modulus


class JitterBuffer:
    """Reorders and schedules one inbound RTP stream; see the module docstring.

    Attributes:
        clock_rate: RTP clock rate (Hz).
        frame_samples: Default packet duration in timestamp units.
        window: Reorder window and playout delay (seconds).
        max_packets: Most packets held at once.
        max_jump: Timestamp discontinuity (seconds) that re-anchors the stream.
        max_seq_jump: Sequence discontinuity that needs confirmation.
    """

    def __init__(
        self,
        clock_rate: int = 8000,
        frame_samples: int = 160,
        window: float = 0.040,
        *,
        max_packets: int | None = None,
        max_jump: float = 1.0,
        max_seq_jump: int = 100,
        eager: bool = False,
    ) -> None:
        """Create an empty buffer.

        Args:
            clock_rate: RTP clock rate of the stream (Hz).
            frame_samples: Packet duration assumed until timestamps show
                another (160 = 20 ms at 8 kHz).
            window: How long a packet may be late (or a hole wait for a
                reordered packet) before its slot is given up, in seconds.
            max_packets: Bound on buffered packets; by default four windows'
                worth of frames plus 16.
            max_jump: Timestamp jump, in seconds beyond what the sequence
                numbers predict, treated as a discontinuity.
            max_seq_jump: Sequence number jump treated as a discontinuity.
            eager: Release a packet as soon as everything before it is out,
                instead of at its due time; only holes wait (up to `window`).
                For listeners that want audio as early as possible (the AI
                pipeline's VAD and STT); may be switched at any time.
        """
        if clock_rate <= 0 or frame_samples <= 0 or window < 0:
            raise ValueError("clock_rate and frame_samples must be positive, window >= 0")
        self.clock_rate = clock_rate
        self.frame_samples = frame_samples
        self.window = window
        self.eager = eager
        if max_packets is None:
            max_packets = round(window * clock_rate / frame_samples) * 4 + 16
        self.max_packets = max(1, max_packets)
        self.max_jump = max_jump
        self.max_seq_jump = max_seq_jump

        self.received = 0
        self.emitted = 0
        self.lost = 0
        self.late = 0
        self.duplicates = 0
        self.reordered = 0
        self.resync = 0
        self.ssrc_changes = 0
        self.invalid = 0

        self._started = False
        self._ssrc = 0
        self._buffer: dict[int, _Slot] = {}
        self._ready: list[Frame] = []
        self._emitted: dict[int, int] = {}
        self._skipped: set[int] = set()  # sequence numbers that carried no audio
        self._candidate: _Pending | None = None
        # The highest packet accepted so far: the reference for unwrapping.
        self._max_seq = 0
        self._max_ts = 0
        self._max_arrival = 0.0
        # Playout position.
        self._next_seq = 0
        self._last_ts: int | None = None
        self._last_payload_type = 0
        # Schedule: due(ts) = _base + (ts - _anchor_ts) / clock_rate.
        self._base = 0.0
        self._anchor_ts = 0
        # Media timeline: media_time(ts) = _media_base + (ts - _media_ts) / clock_rate.
        self._media_base = 0.0
        self._media_ts = 0
        # Packet duration learned from timestamps, and a change waiting to be confirmed.
        self._duration = frame_samples
        self._duration_learned = False
        self._duration_candidate: int | None = None

    # ------------------------------------------------------------ public API

    @property
    def packet_duration(self) -> int:
        """The packet duration in timestamp units, as learned from the stream."""
        return self._duration

    def push(self, packet: RtpPacket, arrival: float) -> None:
        """Add a received packet.

        Args:
            packet: The packet (of the audio payload types only: telephone-events
                go to the DTMF receiver).
            arrival: Arrival time in seconds on the caller's monotonic clock.
        """
        self.received += 1
        if not self._started:
            self._start(packet, arrival)
            return
        if packet.ssrc != self._ssrc:
            self._unconfirmed(packet, arrival)
            return
        delta = _signed(packet.sequence - self._max_seq, _SEQ_MOD)
        if abs(delta) > self.max_seq_jump:
            self._unconfirmed(packet, arrival)
            return
        self._accept(packet, arrival, self._max_seq + delta)

    def skip(self, packet: RtpPacket) -> None:
        """Note a packet of the same stream that carries no audio for this buffer.

        Telephone-events (and comfort noise, if it is decoded elsewhere) share
        the stream's sequence numbers. Skipping them tells the buffer that
        their sequence numbers were not lost, so no gap frames stand in for
        them. They do not move the stream's timing, since a telephone-event
        keeps the timestamp of the event's start.

        Args:
            packet: The packet that went elsewhere.
        """
        if not self._started or packet.ssrc != self._ssrc:
            return
        seq = self._max_seq + _signed(packet.sequence - self._max_seq, _SEQ_MOD)
        if self._next_seq <= seq <= self._max_seq + self.max_seq_jump and seq not in self._buffer:
            self._skipped.add(seq)

    def pop(self, now: float) -> list[Frame]:
        """Return every frame due by `now`, in timestamp order.

        Args:
            now: The current time on the clock `push` is given.
        """
        out, self._ready = self._ready, []
        while self._buffer and self._release_head(now, out):
            pass
        return out

    def flush(self) -> list[Frame]:
        """Release everything buffered at once (the end of the stream), gaps included."""
        return self.pop(math.inf)

    def next_deadline(self) -> float | None:
        """When `pop` next has something to return, or None if it waits for packets.

        Returns `-inf` when frames are already waiting.
        """
        if self._ready:
            return -math.inf
        if not self._buffer:
            return None
        slot = self._buffer.get(self._next_seq)
        if slot is not None:
            return self._due(slot.timestamp)
        if self._next_seq in self._skipped:
            return -math.inf
        hole = self._hole()
        return hole[1] if hole is not None else -math.inf

    def stats(self) -> dict[str, int]:
        """Counters since creation.

        Returns:
            received (packets pushed), emitted (frames returned, gaps
            included), lost (gap frames), late (packets that came after their
            slot was given up), duplicates, reordered (packets put back in
            order), resync (discontinuities), ssrc_changes, invalid (packets
            dropped as unplaceable: unconfirmed jumps, timestamps that go
            backwards), buffered (packets waiting now).
        """
        return {
            "received": self.received,
            "emitted": self.emitted,
            "lost": self.lost,
            "late": self.late,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "resync": self.resync,
            "ssrc_changes": self.ssrc_changes,
            "invalid": self.invalid,
            "buffered": len(self._buffer),
        }

    # ------------------------------------------------------------ intake

    def _start(self, packet: RtpPacket, arrival: float) -> None:
        self._started = True
        self._ssrc = packet.ssrc
        self._max_seq = self._next_seq = packet.sequence
        self._max_ts = packet.timestamp
        self._max_arrival = arrival
        self._media_base, self._media_ts = 0.0, packet.timestamp
        self._last_payload_type = packet.payload_type
        self._anchor(packet.timestamp, arrival)
        self._insert(_Slot(packet.sequence, packet.timestamp, arrival, packet))

    def _anchor(self, timestamp: int, arrival: float) -> None:
        self._base = arrival + self.window
        self._anchor_ts = timestamp

    def _accept(self, packet: RtpPacket, arrival: float, seq: int) -> None:
        if seq < self._next_seq:
            self._already_released(seq)
            return
        if seq in self._buffer:
            self.duplicates += 1
            return
        step = _signed(packet.timestamp - self._max_ts, _TS_MOD)
        if seq > self._max_seq:
            gap = seq - self._max_seq
            if step < gap or step - gap * self._duration > self.max_jump * self.clock_rate:
                # The sequence runs on but the clock jumped (or went back):
                # a talk spurt after silence, or a sender that reset its clock.
                self._restart(packet, arrival, seq, new_source=False)
                return
            if gap == 1 and not packet.marker:
                self._learn_duration(step)
            self._max_seq, self._max_ts, self._max_arrival = seq, self._max_ts + step, arrival
            timestamp = self._max_ts
        else:
            self.reordered += 1
            timestamp = self._max_ts + step
        self._insert(_Slot(seq, timestamp, arrival, packet))

    def _already_released(self, seq: int) -> None:
        state = self._emitted.get(seq)
        if state in (_FRAME, _GAP_LATE):
            self.duplicates += 1
        else:
            # Its slot went out as a gap, or is too old to remember, or lies
            # before the stream's first packet: in every case it missed its slot.
            self.late += 1
            if state == _GAP:
                self._emitted[seq] = _GAP_LATE

    def _unconfirmed(self, packet: RtpPacket, arrival: float) -> None:
        """A packet from another SSRC or far off the sequence: wait for a second one."""
        candidate = self._candidate
        if (
            candidate is not None
            and candidate.packet.ssrc == packet.ssrc
            and 1 <= (packet.sequence - candidate.packet.sequence) % _SEQ_MOD <= _MAX_CONFIRM_GAP
            and arrival - candidate.arrival <= self.max_jump
        ):
            self._candidate = None
            new_source = candidate.packet.ssrc != self._ssrc
            seq = self._max_seq + _forward(candidate.packet.sequence - self._max_seq, _SEQ_MOD)
            self._restart(candidate.packet, candidate.arrival, seq, new_source=new_source)
            delta = (packet.sequence - candidate.packet.sequence) % _SEQ_MOD
            self._accept(packet, arrival, seq + delta)
            return
        if candidate is not None:
            self.invalid += 1  # a stray that nothing followed
        self._candidate = _Pending(packet, arrival)

    def _restart(self, packet: RtpPacket, arrival: float, seq: int, *, new_source: bool) -> None:
        """Start a new stretch of stream at `packet`: flush, re-anchor, no gap frames."""
        if new_source:
            self.ssrc_changes += 1
            self._ssrc = packet.ssrc
        else:
            self.resync += 1
        # The old stream's frames go out now, ahead of the new one (flush()
        # drains _ready too, so what it returns is the whole queue).
        self._ready = self.flush()
        self._skipped.clear()
        step = _signed(packet.timestamp - self._max_ts, _TS_MOD)
        timestamp = self._max_ts + _forward(step, _TS_MOD)
        elapsed = arrival - self._max_arrival
        # Keep the media timeline on RTP time when the jump is the sender's
        # clock running through a silence (it agrees with the wall clock);
        # otherwise the timestamps mean nothing and the wall clock is all we have.
        trusted = (
            not new_source and step > 0 and abs(step / self.clock_rate - elapsed) <= self.max_jump
        )
        if not trusted:
            last_media = self._media_time(self._max_ts)
            self._media_base = last_media + max(self._duration / self.clock_rate, elapsed)
            self._media_ts = timestamp
        self._max_seq, self._max_ts, self._max_arrival = seq, timestamp, arrival
        self._next_seq = seq
        self._anchor(timestamp, arrival)
        self._insert(_Slot(seq, timestamp, arrival, packet))

    def _learn_duration(self, step: int) -> None:
        if step == self._duration:
            self._duration_learned = True
            self._duration_candidate = None
            return
        if not 0 < step <= _MAX_PACKET_DURATION * self.clock_rate:
            self._duration_candidate = None
            return
        # One odd step may be a short silence without a marker bit; believe a
        # new duration when two packets in a row show it (the first at once).
        if not self._duration_learned or step == self._duration_candidate:
            self._duration = step
            self._duration_learned = True
            self._duration_candidate = None
        else:
            self._duration_candidate = step

    def _insert(self, slot: _Slot) -> None:
        was_empty = not self._buffer
        self._buffer[slot.seq] = slot
        due = self._due(slot.timestamp)
        if slot.seq == self._next_seq and was_empty and slot.arrival > due:
            # The stream runs later than the schedule and this frame is
            # complete: it goes out now, and the schedule follows it.
            self._base += slot.arrival - due
        elif due > slot.arrival + 2 * self.window:
            # The stream runs earlier than the schedule: do not let latency creep.
            self._base -= due - (slot.arrival + self.window)
        while len(self._buffer) > self.max_packets:
            self._force_out()

    def _force_out(self) -> None:
        """Release the head at once, up to and including the first buffered packet."""
        before = len(self._buffer)
        while len(self._buffer) == before and self._release_head(math.inf, self._ready):
            pass

    # ------------------------------------------------------------ playout

    def _due(self, timestamp: int) -> float:
        return self._base + (timestamp - self._anchor_ts) / self.clock_rate

    def _media_time(self, timestamp: int) -> float:
        return self._media_base + (timestamp - self._media_ts) / self.clock_rate

    def _hole(self) -> tuple[int, float, int] | None:
        """The missing head's (timestamp, release time, duration), or None to skip it.

        Only called when the head is missing and something later is buffered.
        """
        first_seq = min(self._buffer)
        after = self._buffer[first_seq]
        missing = first_seq - self._next_seq
        if self._skipped:
            missing -= sum(1 for seq in self._skipped if self._next_seq <= seq < first_seq)
        timestamp, duration = self._gap_timestamp(missing, after)
        if duration <= 0:
            return None
        waited = after.arrival + self.window - (after.timestamp - timestamp) / self.clock_rate
        release = max(self._due(timestamp), min(waited, self._due(after.timestamp) + self.window))
        return timestamp, release, duration

    def _gap_timestamp(self, missing: int, after: _Slot) -> tuple[int, int]:
        """Place the first of `missing` lost packets before `after`; (timestamp, duration)."""
        duration = self._duration
        if self._last_ts is None:
            return after.timestamp - missing * duration, duration
        room = after.timestamp - self._last_ts
        if room >= (missing + 1) * duration:
            if after.packet.marker:
                # The packet after the hole starts a talk spurt, so the lost
                # ones ended the previous one: they follow the last frame.
                return self._last_ts + duration, duration
            # Otherwise the hole ends where the next packet begins (this also
            # covers a talk spurt whose first, marked, packet was lost).
            return after.timestamp - missing * duration, duration
        # Less room than whole packets need (the packet size changed): share it.
        step = room // (missing + 1)
        return self._last_ts + step, step

    def _release_head(self, now: float, out: list[Frame]) -> bool:
        """Emit the head slot if it is due by `now`; True if the head moved on."""
        if not self._buffer:
            return False
        slot = self._buffer.get(self._next_seq)
        if slot is not None:
            if not self.eager and now < self._due(slot.timestamp):
                return False
            del self._buffer[slot.seq]
            self._next_seq += 1
            self._skipped.discard(slot.seq)
            if self._last_ts is not None and slot.timestamp <= self._last_ts:
                # A reordered packet whose timestamp contradicts its sequence
                # number: it cannot be placed on the timeline.
                self.invalid += 1
                self._remember(slot.seq, _FRAME)
                return True
            packet = slot.packet
            self._emit(
                out,
                Frame(
                    timestamp=slot.timestamp,
                    media_time=self._media_time(slot.timestamp),
                    payload=packet.payload,
                    gap=False,
                    marker=packet.marker,
                    payload_type=packet.payload_type,
                    duration=self._duration,
                ),
            )
            self._last_payload_type = packet.payload_type
            self._remember(slot.seq, _FRAME)
            return True
        if self._next_seq in self._skipped:
            self._skipped.discard(self._next_seq)
            self._next_seq += 1
            return True
        hole = self._hole()
        if hole is None:
            # No room on the timeline for the missing packets: skip them.
            self._next_seq = min(self._buffer)
            self._skipped = {seq for seq in self._skipped if seq > self._next_seq}
            return True
        timestamp, release, duration = hole
        if now < release:
            return False
        self.lost += 1
        self._emit(
            out,
            Frame(
                timestamp=timestamp,
                media_time=self._media_time(timestamp),
                payload=None,
                gap=True,
                marker=False,
                payload_type=self._last_payload_type,
                duration=duration,
            ),
        )
        self._remember(self._next_seq, _GAP)
        self._next_seq += 1
        return True

    def _emit(self, out: list[Frame], frame: Frame) -> None:
        self.emitted += 1
        self._last_ts = frame.timestamp
        out.append(frame)

    def _remember(self, seq: int, state: int) -> None:
        self._emitted[seq] = state
        if len(self._emitted) > _EMITTED_MEMORY:
            del self._emitted[next(iter(self._emitted))]
