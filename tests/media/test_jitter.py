"""Tests for mediaserver.media.jitter: the receive-side jitter buffer, on a fake clock."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest

from mediaserver.media.jitter import Frame, JitterBuffer
from mediaserver.media.rtp import RtpPacket

RATE = 8000
PTIME = 0.020
STEP = 160
WINDOW = 0.040
TICK = 0.005


def packet(
    i: int,
    *,
    seq0: int = 1000,
    ts0: int = 50_000,
    step: int = STEP,
    ssrc: int = 0xA1,
    marker: bool = False,
    ts: int | None = None,
) -> RtpPacket:
    """Packet number `i` of a regular stream; the payload names it."""
    timestamp = ts0 + step * i if ts is None else ts
    return RtpPacket(
        payload_type=8,
        sequence=(seq0 + i) & 0xFFFF,
        timestamp=timestamp & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=i.to_bytes(4, "big"),
        marker=marker,
    )


def index(frame: Frame) -> int:
    assert frame.payload is not None
    return int.from_bytes(frame.payload, "big")


def simulate(
    jb: JitterBuffer, arrivals: list[tuple[float, RtpPacket]], tail: float = 1.0
) -> list[tuple[float, Frame]]:
    """Push packets at their arrival times and pop every TICK; (pop time, frame) pairs."""
    arrivals = sorted(arrivals, key=lambda a: a[0])
    out: list[tuple[float, Frame]] = []
    i = 0
    end = arrivals[-1][0] + tail
    n = 0
    while True:
        now = n * TICK
        while i < len(arrivals) and arrivals[i][0] <= now:
            jb.push(arrivals[i][1], arrivals[i][0])
            i += 1
        out += [(now, frame) for frame in jb.pop(now + 1e-9)]  # float slack on the ticks
        if now > end:
            return out
        n += 1


def frames_of(out: list[tuple[float, Frame]]) -> list[Frame]:
    return [frame for _, frame in out]


def assert_timeline(frames: list[Frame]) -> None:
    for a, b in itertools.pairwise(frames):
        assert b.timestamp > a.timestamp
        assert b.media_time > a.media_time


# ---------------------------------------------------------------- schedule


def test_first_frame_due_one_window_after_the_first_packet() -> None:
    jb = JitterBuffer()
    assert jb.pop(0.0) == []
    assert jb.next_deadline() is None
    jb.push(packet(0), 10.0)
    assert jb.next_deadline() == pytest.approx(10.0 + WINDOW)
    assert jb.pop(10.0 + WINDOW - 1e-6) == []
    (frame,) = jb.pop(10.0 + WINDOW)
    assert frame == Frame(
        timestamp=50_000,
        media_time=0.0,
        payload=(0).to_bytes(4, "big"),
        gap=False,
        marker=False,
        payload_type=8,
        duration=STEP,
    )


def test_one_frame_per_period_on_the_anchored_schedule() -> None:
    """Jitter below the window: frame k leaves at first_arrival + window + k * ptime."""
    rng = random.Random(7)
    jb = JitterBuffer()
    first = 3.0
    arrivals = [first] + [first + k * PTIME + rng.uniform(0, 0.030) for k in range(1, 100)]
    pushed = 0
    for k in range(100):
        due = first + WINDOW + k * PTIME
        while pushed < 100 and arrivals[pushed] <= due - 1e-6:
            jb.push(packet(pushed), arrivals[pushed])
            pushed += 1
        assert jb.pop(due - 1e-6) == []
        (frame,) = jb.pop(due + 1e-9)
        assert index(frame) == k
        assert frame.media_time == pytest.approx(k * PTIME)
    assert jb.stats()["emitted"] == 100


def test_in_order_stream_passes_unchanged() -> None:
    jb = JitterBuffer()
    out = simulate(jb, [(k * PTIME, packet(k)) for k in range(50)])
    frames = frames_of(out)
    assert [index(f) for f in frames] == list(range(50))
    assert [f.timestamp for f in frames] == [50_000 + STEP * k for k in range(50)]
    assert all(not f.gap for f in frames)
    assert all(t - k * PTIME <= WINDOW + TICK for k, (t, _) in enumerate(out))
    stats = jb.stats()
    assert stats == {
        "received": 50,
        "emitted": 50,
        "lost": 0,
        "late": 0,
        "duplicates": 0,
        "reordered": 0,
        "resync": 0,
        "ssrc_changes": 0,
        "invalid": 0,
        "buffered": 0,
    }


# ---------------------------------------------------------------- loss, reorder, duplicates


def test_missing_packet_becomes_a_gap_without_stalling() -> None:
    jb = JitterBuffer()
    arrivals = [(k * PTIME, packet(k)) for k in range(10) if k != 4]
    out = simulate(jb, arrivals)
    frames = frames_of(out)
    assert len(frames) == 10
    gap = frames[4]
    assert gap.gap and gap.payload is None and not gap.marker
    assert gap.timestamp == 50_000 + 4 * STEP
    assert gap.media_time == pytest.approx(4 * PTIME)
    assert gap.duration == STEP
    assert gap.payload_type == 8
    # The gap leaves on the slot's own schedule; nothing waits for the lost packet.
    pop_times = [t for t, _ in out]
    assert pop_times[4] == pytest.approx(WINDOW + 4 * PTIME)
    assert pop_times[5] == pytest.approx(WINDOW + 5 * PTIME)
    assert jb.stats()["lost"] == 1


def test_burst_loss() -> None:
    jb = JitterBuffer()
    arrivals = [(k * PTIME, packet(k)) for k in range(20) if not 5 <= k < 12]
    frames = frames_of(simulate(jb, arrivals))
    assert [f.gap for f in frames] == [False] * 5 + [True] * 7 + [False] * 8
    assert [f.timestamp for f in frames] == [50_000 + STEP * k for k in range(20)]
    assert jb.stats()["lost"] == 7


def test_nothing_invented_while_nothing_arrives() -> None:
    """With no packet after the hole there is no evidence of loss: no gap frames."""
    jb = JitterBuffer()
    for k in range(5):
        jb.push(packet(k), k * PTIME)
    assert len(jb.pop(100.0)) == 5
    assert jb.pop(200.0) == []
    assert jb.next_deadline() is None
    assert jb.stats()["lost"] == 0


def test_reordered_packets_put_right() -> None:
    jb = JitterBuffer()
    arrivals = [(k * PTIME, packet(k)) for k in range(10)]
    arrivals[3] = (3 * PTIME + 0.030, packet(3))  # overtaken by 4
    arrivals[7] = (7 * PTIME + 0.035, packet(7))  # overtaken by 8
    frames = frames_of(simulate(jb, arrivals))
    assert [index(f) for f in frames] == list(range(10))
    assert jb.stats()["reordered"] == 2
    assert jb.stats()["late"] == 0


def test_late_packet_dropped_and_counted() -> None:
    jb = JitterBuffer()
    for k in [0, 1, 2, 4, 5]:
        jb.push(packet(k), k * PTIME)
    frames = jb.pop(5 * PTIME + WINDOW)
    assert [f.gap for f in frames] == [False, False, False, True, False, False]
    jb.push(packet(3), 0.2)  # far too late: its slot went out as a gap
    jb.push(packet(3), 0.21)  # and a copy of it
    jb.push(packet(1), 0.22)  # a copy of an emitted frame
    assert jb.pop(1.0) == []
    stats = jb.stats()
    assert (stats["late"], stats["duplicates"], stats["lost"]) == (1, 2, 1)


def test_packet_before_the_stream_start_is_late() -> None:
    jb = JitterBuffer()
    jb.push(packet(1), 0.0)
    jb.push(packet(0), 0.005)
    frames = jb.pop(1.0)
    assert [index(f) for f in frames] == [1]
    assert jb.stats()["late"] == 1


def test_duplicates_dropped() -> None:
    jb = JitterBuffer()
    arrivals = [(k * PTIME, packet(k)) for k in range(6)]
    arrivals += [(2 * PTIME + 0.001, packet(2)), (2 * PTIME + 0.3, packet(2))]
    frames = frames_of(simulate(jb, arrivals))
    assert [index(f) for f in frames] == list(range(6))
    assert jb.stats()["duplicates"] == 2
    assert jb.stats()["received"] == 8


@dataclass
class Generated:
    arrivals: list[tuple[float, RtpPacket]] = field(default_factory=list)
    dropped: set[int] = field(default_factory=set)
    duplicates: int = 0


def generate(
    seed: int,
    n: int,
    *,
    loss: float = 0.05,
    dup: float = 0.03,
    reorder: float = 0.03,
    jitter: float = 0.030,
    seq0: int = 65_000,
    ts0: int = (1 << 32) - 100_000,
) -> Generated:
    """A stream with seeded jitter, loss, duplicates and reordering; wraps seq and ts."""
    rng = random.Random(seed)
    gen = Generated()
    for i in range(n):
        if 0 < i < n - 1 and rng.random() < loss:
            gen.dropped.add(i)
            continue
        delay = rng.uniform(0, jitter)
        if rng.random() < reorder:
            delay += 0.025  # held up long enough for the next packet to overtake
        arrival = i * PTIME + delay
        pkt = packet(i, seq0=seq0, ts0=ts0)
        gen.arrivals.append((arrival, pkt))
        if rng.random() < dup:
            gen.arrivals.append((arrival + rng.uniform(0, 0.060), pkt))
            gen.duplicates += 1
    gen.arrivals.sort(key=lambda a: a[0])
    return gen


@pytest.mark.parametrize("seed", range(6))
def test_generated_stream(seed: int) -> None:
    n = 1500
    ts0 = (1 << 32) - 100_000
    gen = generate(seed, n, ts0=ts0)
    jb = JitterBuffer()
    out = simulate(jb, gen.arrivals)
    frames = frames_of(out)
    stats = jb.stats()

    # The stream starts at whichever packet arrived first.
    first_index = int.from_bytes(gen.arrivals[0][1].payload, "big")
    assert len(frames) == n - first_index  # no stall, no extra frame
    assert [f.timestamp for f in frames] == [ts0 + STEP * i for i in range(first_index, n)]
    assert frames[-1].timestamp > 1 << 32  # the timestamp wrapped and was unwrapped
    assert [f.media_time for f in frames] == pytest.approx(
        [PTIME * i for i in range(n - first_index)]
    )
    real = [f for f in frames if not f.gap]
    assert all(index(f) == first_index + k for k, f in enumerate(frames) if not f.gap)

    # Counters match what the generator did.
    first_arrival: dict[int, float] = {}
    out_of_order = 0
    highest = -1
    for arrival, pkt in gen.arrivals:
        i = int.from_bytes(pkt.payload, "big")
        if i in first_arrival:
            continue
        first_arrival[i] = arrival
        if i < highest:
            out_of_order += 1
        highest = max(highest, i)
    assert stats["received"] == len(gen.arrivals)
    assert stats["duplicates"] == gen.duplicates
    assert stats["emitted"] == len(frames)
    assert stats["lost"] == len(frames) - len(real)
    assert stats["late"] + len(real) == len(first_arrival)
    # Every gap is a dropped packet or one that came too late for its slot
    # (a packet from before the first arrival is late but never had a slot).
    slotless = sum(1 for i in first_arrival if i < first_index)
    assert (
        stats["lost"] == sum(1 for i in gen.dropped if i > first_index) + stats["late"] - slotless
    )
    assert stats["reordered"] + stats["late"] == out_of_order
    assert stats["resync"] == stats["ssrc_changes"] == stats["invalid"] == 0
    assert stats["buffered"] == 0
    # A late packet is a rare event with a 40 ms window.
    assert stats["late"] <= 0.01 * n

    # No complete frame is held long: at most two windows after it arrived.
    for pop_time, frame in out:
        if not frame.gap:
            assert pop_time - first_arrival[index(frame)] <= 2 * WINDOW + TICK + 1e-9


# ---------------------------------------------------------------- drift


def test_arrivals_drifting_late_emitted_as_soon_as_complete() -> None:
    """The sender's clock is 1% slow: by the end packets are 400 ms behind the anchor."""
    rng = random.Random(3)
    arrivals = [(i * PTIME * 1.01 + rng.uniform(0, 0.005), packet(i)) for i in range(2000)]
    jb = JitterBuffer()
    out = simulate(jb, arrivals)
    frames = frames_of(out)
    assert [index(f) for f in frames] == list(range(2000))
    arrival = {int.from_bytes(p.payload, "big"): a for a, p in arrivals}
    holds = [t - arrival[index(f)] for t, f in out]
    assert max(holds) <= WINDOW + TICK
    assert jb.stats()["late"] == jb.stats()["lost"] == 0


def test_reordering_still_repaired_under_late_drift() -> None:
    rng = random.Random(4)
    arrivals = []
    for i in range(2000):
        delay = rng.uniform(0, 0.005) + (0.025 if i % 50 == 25 else 0.0)
        arrivals.append((i * PTIME * 1.01 + delay, packet(i)))
    jb = JitterBuffer()
    frames = frames_of(simulate(jb, arrivals))
    assert [index(f) for f in frames] == list(range(2000))
    stats = jb.stats()
    assert stats["reordered"] == 40
    assert stats["late"] == stats["lost"] == 0


def test_arrivals_drifting_early_do_not_build_latency() -> None:
    """The sender's clock is 1% fast: without correction frames would wait ever longer."""
    rng = random.Random(5)
    arrivals = [(i * PTIME * 0.99 + rng.uniform(0, 0.010), packet(i)) for i in range(2000)]
    jb = JitterBuffer()
    out = simulate(jb, arrivals)
    assert [index(f) for _, f in out] == list(range(2000))
    arrival = {int.from_bytes(p.payload, "big"): a for a, p in arrivals}
    assert max(t - arrival[index(f)] for t, f in out) <= 2 * WINDOW + TICK
    assert jb.stats()["lost"] == 0


def test_outage_burst_then_normal() -> None:
    """A path outage: packets 40.. queue up and arrive in one burst 300 ms late."""
    arrivals = [
        (max(i * PTIME, 0.8 + 0.3) if i >= 40 else i * PTIME, packet(i)) for i in range(100)
    ]
    jb = JitterBuffer()
    out = simulate(jb, arrivals)
    assert [index(f) for _, f in out] == list(range(100))
    arrival = {int.from_bytes(p.payload, "big"): a for a, p in arrivals}
    holds = [t - arrival[index(f)] for t, f in out]
    # The late burst goes out as soon as it is complete (paced once it has
    # caught up with its timestamps), and the latency settles back between
    # one and two windows: the schedule is pulled in, not left 300 ms behind.
    assert holds[40] == 0.0
    assert max(holds) <= 2 * WINDOW + TICK
    assert all(WINDOW - 1e-9 <= h <= 2 * WINDOW + 1e-9 for h in holds[60:])
    assert jb.stats()["lost"] == jb.stats()["late"] == 0


# ---------------------------------------------------------------- wrap-around


def test_wrap_of_sequence_and_timestamp() -> None:
    seq0, ts0 = 65_530, (1 << 32) - 3 * STEP
    arrivals = [(k * PTIME, packet(k, seq0=seq0, ts0=ts0)) for k in range(12) if k != 6]
    frames = frames_of(simulate(JitterBuffer(), arrivals))
    assert [f.timestamp for f in frames] == [ts0 + STEP * k for k in range(12)]
    assert frames[3].timestamp == 1 << 32
    assert frames[6].gap
    assert_timeline(frames)


# ---------------------------------------------------------------- discontinuities


def test_talk_spurt_after_long_silence_does_not_flood_gaps() -> None:
    jb = JitterBuffer()
    arrivals = [(k * PTIME, packet(k)) for k in range(50)]
    silence = 5.0  # seconds without packets (silence suppression); seq runs on
    jump = round(silence * RATE)
    for k in range(50, 100):
        arrivals.append(
            (k * PTIME + silence, packet(k, ts=50_000 + STEP * k + jump, marker=k == 50))
        )
    frames = frames_of(simulate(jb, arrivals))
    assert len(frames) == 100
    assert not any(f.gap for f in frames)
    assert frames[50].marker
    assert frames[50].media_time == pytest.approx(50 * PTIME + silence)
    assert_timeline(frames)
    assert jb.stats()["resync"] == 1


def test_talk_spurt_with_its_first_packet_lost() -> None:
    jb = JitterBuffer()
    arrivals = [(k * PTIME, packet(k)) for k in range(50)]
    jump = 3 * RATE
    for k in range(51, 100):  # 50, the marked packet, is lost
        arrivals.append((k * PTIME + 3.0, packet(k, ts=50_000 + STEP * k + jump)))
    frames = frames_of(simulate(jb, arrivals))
    assert len(frames) == 99
    assert sum(f.gap for f in frames) == 0
    assert_timeline(frames)


def test_short_silence_keeps_the_schedule() -> None:
    """300 ms of silence suppression is no discontinuity: no resync, no gaps."""
    jb = JitterBuffer()
    pause = round(0.3 * RATE)
    arrivals = [(k * PTIME, packet(k)) for k in range(20)]
    arrivals += [
        (k * PTIME + 0.3, packet(k, ts=50_000 + STEP * k + pause, marker=k == 20))
        for k in range(20, 40)
    ]
    out = simulate(jb, arrivals)
    frames = frames_of(out)
    assert len(frames) == 40 and not any(f.gap for f in frames)
    assert frames[20].media_time - frames[19].media_time == pytest.approx(PTIME + 0.3)
    assert out[20][0] == pytest.approx(20 * PTIME + 0.3 + WINDOW)
    assert jb.stats()["resync"] == 0


def test_lost_packets_at_a_talk_spurt_boundary_are_placed_sensibly() -> None:
    jb = JitterBuffer()
    pause = round(0.2 * RATE)
    arrivals = [(k * PTIME, packet(k)) for k in range(10) if k != 9]  # spurt 1 ends at 9
    arrivals += [
        (k * PTIME + 0.2, packet(k, ts=50_000 + STEP * k + pause, marker=k == 10))
        for k in range(10, 20)
        if k != 15
    ]
    frames = frames_of(simulate(jb, arrivals))
    gaps = [f for f in frames if f.gap]
    # 9 ended the first spurt (10 carries the marker): its gap follows 8.
    assert gaps[0].timestamp == 50_000 + 9 * STEP
    assert gaps[1].timestamp == 50_000 + 15 * STEP + pause
    assert_timeline(frames)

    jb = JitterBuffer()
    arrivals = [(k * PTIME, packet(k)) for k in range(10)]
    arrivals += [
        (k * PTIME + 0.2, packet(k, ts=50_000 + STEP * k + pause, marker=k == 10))
        for k in range(11, 20)  # the marked first packet of spurt 2 is lost
    ]
    frames = frames_of(simulate(jb, arrivals))
    (gap,) = [f for f in frames if f.gap]
    # It belonged just before 11, not in the silence.
    assert gap.timestamp == 50_000 + 10 * STEP + pause


def test_sender_restart_with_new_sequence_and_timestamps() -> None:
    jb = JitterBuffer()
    arrivals = [(k * PTIME, packet(k)) for k in range(30)]
    arrivals += [(k * PTIME + 0.1, packet(k, seq0=20_000, ts0=7, step=STEP)) for k in range(30, 60)]
    out = simulate(jb, arrivals)
    frames = frames_of(out)
    assert [index(f) for f in frames] == list(range(60))
    assert_timeline(frames)
    assert frames[30].timestamp % (1 << 32) == 7 + STEP * 30
    # Across the restart the media timeline follows the wall clock.
    assert frames[30].media_time - frames[29].media_time == pytest.approx(PTIME + 0.1)
    assert jb.stats()["resync"] == 1
    assert jb.stats()["lost"] == 0


def test_ssrc_change() -> None:
    jb = JitterBuffer()
    arrivals = [(k * PTIME, packet(k)) for k in range(30)]
    arrivals += [(k * PTIME, packet(k, seq0=5, ts0=999, ssrc=0xB2)) for k in range(30, 60)]
    frames = frames_of(simulate(jb, arrivals))
    assert [index(f) for f in frames] == list(range(60))
    assert_timeline(frames)
    assert frames[30].media_time - frames[29].media_time == pytest.approx(PTIME)
    stats = jb.stats()
    assert (stats["ssrc_changes"], stats["resync"], stats["lost"]) == (1, 0, 0)


def test_ssrc_change_flushes_the_old_stream() -> None:
    jb = JitterBuffer()
    for k in range(5):
        jb.push(packet(k), 0.0)  # a burst: all waiting
    jb.push(packet(100, ssrc=0xB2, seq0=0), 0.001)
    jb.push(packet(101, ssrc=0xB2, seq0=0), 0.002)
    frames = jb.pop(0.002)
    assert [index(f) for f in frames] == [0, 1, 2, 3, 4]
    assert [index(f) for f in jb.pop(1.0)] == [100, 101]


def test_single_stray_packet_ignored() -> None:
    jb = JitterBuffer()
    arrivals = [(k * PTIME, packet(k)) for k in range(40)]
    arrivals.append((10 * PTIME + 0.001, packet(5000, seq0=1000)))  # seq far off
    arrivals.append((20 * PTIME + 0.001, packet(21, ssrc=0xBAD)))  # another SSRC
    frames = frames_of(simulate(jb, arrivals))
    assert [index(f) for f in frames] == list(range(40))
    stats = jb.stats()
    assert (stats["resync"], stats["ssrc_changes"], stats["invalid"]) == (0, 0, 1)


# ---------------------------------------------------------------- packet sizes, memory, DTMF


def test_30ms_packets() -> None:
    """The sipp PCMA pcap sends 240-sample packets: one frame per packet."""
    jb = JitterBuffer()
    ptime = 0.030
    arrivals = [(k * ptime, packet(k, step=240)) for k in range(20) if k != 7]
    out = simulate(jb, arrivals)
    frames = frames_of(out)
    assert len(frames) == 20
    assert [f.timestamp for f in frames] == [50_000 + 240 * k for k in range(20)]
    assert [f.media_time for f in frames] == pytest.approx([ptime * k for k in range(20)])
    assert frames[7].gap and frames[7].duration == 240
    assert jb.packet_duration == 240
    assert out[8][0] == pytest.approx(WINDOW + 8 * ptime)


def test_occasional_odd_step_does_not_change_the_duration() -> None:
    jb = JitterBuffer()
    for k in range(10):
        jb.push(packet(k), k * PTIME)
    # A step of 400 (a 30 ms pause without a marker bit) seen once.
    jb.push(packet(10, ts=50_000 + 10 * STEP + 240), 10 * PTIME + 0.03)
    assert jb.packet_duration == STEP


def test_memory_bounded() -> None:
    assert JitterBuffer().max_packets == 24  # 40 ms / 20 ms * 4 + 16
    jb = JitterBuffer(window=1.0, max_packets=10)
    jb.push(packet(0), 0.0)
    # Packet 1 never comes; 2..40 arrive in one burst and nobody pops.
    for k in range(2, 41):
        jb.push(packet(k), 0.001)
        assert jb.stats()["buffered"] <= 10
    # 40 packets arrived, 10 still wait: 30 were forced out, before their time,
    # with the gap at 1.
    frames = jb.pop(0.001)
    assert len(frames) == 31
    frames += jb.flush()
    assert [f.timestamp for f in frames] == [50_000 + STEP * k for k in range(41)]
    assert [f.gap for f in frames] == [False, True] + [False] * 39


def test_burst_far_ahead_of_schedule_is_not_held_for_long() -> None:
    jb = JitterBuffer()
    for k in range(100):
        jb.push(packet(k), 0.001)  # a sender faster than real time
    # Pulled in to within two windows of arrival, not left on the first packet's pace.
    frames = jb.pop(0.001 + 2 * WINDOW + 1e-9)
    assert [index(f) for f in frames] == list(range(100))


def test_skipped_sequence_numbers_are_not_loss() -> None:
    """Telephone-events share the stream's sequence numbers but go to the DTMF receiver."""
    jb = JitterBuffer()
    arrivals = [(k * PTIME, packet(k)) for k in range(10)]
    dtmf = [
        RtpPacket(101, 1000 + k, 50_000 + 10 * STEP, 0xA1, b"\x01\x0a\x00\xa0")
        for k in range(10, 15)
    ]
    # Audio pauses during the event and resumes after it.
    arrivals += [(k * PTIME, packet(k)) for k in range(15, 25)]
    out: list[Frame] = []
    for k, (arrival, pkt) in enumerate(sorted(arrivals, key=lambda a: a[0])):
        jb.push(pkt, arrival)
        if k == 9:
            for event in dtmf:
                jb.skip(event)
        out += jb.pop(arrival)
    out += jb.flush()
    assert not any(f.gap for f in out)
    assert [index(f) for f in out] == [*range(10), *range(15, 25)]
    assert jb.stats()["lost"] == 0


def test_skipped_and_lost_together() -> None:
    jb = JitterBuffer()
    for k in range(5):
        jb.push(packet(k), k * PTIME)
    jb.skip(packet(5))  # a telephone-event
    jb.push(packet(7, ts=50_000 + 6 * STEP), 7 * PTIME)  # 6 was lost
    jb.push(packet(8, ts=50_000 + 7 * STEP), 8 * PTIME)
    frames = jb.flush()
    assert [f.gap for f in frames] == [False] * 5 + [True, False, False]
    assert frames[5].timestamp == 50_000 + 5 * STEP


def test_skipped_sequence_number_that_carried_audio_after_all() -> None:
    jb = JitterBuffer()
    for k in range(5):
        jb.push(packet(k), k * PTIME)
    jb.skip(packet(5))
    jb.push(packet(5), 5 * PTIME)  # it was audio after all: it is played
    for k in [6, 7, 9, 10]:
        jb.push(packet(k), k * PTIME)
    frames = jb.flush()
    assert [f.gap for f in frames] == [False] * 8 + [True, False, False]
    assert frames[8].timestamp == 50_000 + 8 * STEP


def test_next_deadline_for_a_hole() -> None:
    jb = JitterBuffer()
    jb.push(packet(0), 0.0)
    jb.push(packet(2), 2 * PTIME)
    assert jb.next_deadline() == pytest.approx(WINDOW)
    jb.pop(WINDOW)
    # The hole at 1 is due at its slot; packet 2 arrived on time, so no extra wait.
    assert jb.next_deadline() == pytest.approx(WINDOW + PTIME)
    assert jb.pop(WINDOW + PTIME)[0].gap


def test_frames_are_frozen_dataclasses() -> None:
    frame = Frame(1, 0.0, None, True, False, 0, 160)
    with pytest.raises(AttributeError):
        frame.gap = False  # type: ignore[misc]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(clock_rate=0)
    with pytest.raises(ValueError):
        JitterBuffer(window=-1)


# ---------------------------------------------------------------- eager mode


def test_eager_releases_in_order_packets_on_arrival() -> None:
    jb = JitterBuffer(eager=True)
    jb.push(packet(0), 10.0)
    (frame,) = jb.pop(10.0)  # no window to wait
    assert index(frame) == 0 and frame.media_time == 0.0
    jb.push(packet(1), 10.02)
    assert [index(f) for f in jb.pop(10.02)] == [1]


def test_eager_still_waits_for_a_hole_and_reorders() -> None:
    jb = JitterBuffer(eager=True)
    arrivals = [(k * PTIME, packet(k)) for k in range(10)]
    arrivals[3] = (3 * PTIME + 0.030, packet(3))  # overtaken by 4: the hole waits
    out = simulate(jb, arrivals)
    assert [index(f) for f in frames_of(out)] == list(range(10))
    assert jb.stats()["reordered"] == 1 and jb.stats()["lost"] == 0
    # Packet 4 waited for 3; the in-order ones left at their arrival tick.
    released = {index(f): t for t, f in out}
    assert released[2] == pytest.approx(2 * PTIME, abs=TICK)
    assert released[4] >= 3 * PTIME + 0.030 - 1e-9


def test_eager_gives_up_on_a_lost_packet_after_the_window() -> None:
    jb = JitterBuffer(eager=True)
    arrivals = [(k * PTIME, packet(k)) for k in range(8) if k != 3]
    frames = frames_of(simulate(jb, arrivals))
    assert [None if f.gap else index(f) for f in frames] == [0, 1, 2, None, 4, 5, 6, 7]
    assert_timeline(frames)
