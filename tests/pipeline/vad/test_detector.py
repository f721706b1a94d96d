"""Tests for mediaserver.pipeline.vad.detector: hysteresis on hand-made probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mediaserver.pipeline.settings import VadSettings
from mediaserver.pipeline.vad import (
    CHUNK_SAMPLES,
    CHUNK_SECONDS,
    SAMPLE_RATE,
    SpeechDetector,
    SpeechStarted,
    SpeechStopped,
)

C = CHUNK_SECONDS


def feed(
    detector: SpeechDetector, probs: Sequence[float], start: float = 0.0
) -> list[tuple[int, SpeechStarted | SpeechStopped]]:
    """Feed chunk probabilities (chunk i ends at start + (i+1)*C); events with their chunk index."""
    events: list[tuple[int, SpeechStarted | SpeechStopped]] = []
    for i, prob in enumerate(probs):
        event = detector.update(start + (i + 1) * C, prob)
        if event is not None:
            events.append((i, event))
    return events


def test_chunk_seconds_matches_model_chunk() -> None:
    assert CHUNK_SAMPLES / SAMPLE_RATE == CHUNK_SECONDS


def test_start_and_stop_times() -> None:
    det = SpeechDetector(VadSettings())  # threshold .5, neg .35, min_speech 1 chunk, min_silence .1
    probs = [0.1, 0.2, 0.9, 0.95, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1]
    events = feed(det, probs, start=10.0)
    assert [i for i, _ in events] == [2, 8]
    started, stopped = events[0][1], events[1][1]
    assert isinstance(started, SpeechStarted)
    assert started.media_time == pytest.approx(10.0 + 2 * C)  # start of chunk 2
    assert isinstance(stopped, SpeechStopped)
    assert stopped.media_time == pytest.approx(10.0 + 5 * C)  # end of chunk 4
    assert not det.speaking
    assert det.last_speech_end == pytest.approx(10.0 + 5 * C)


def test_hysteresis_between_thresholds_keeps_state() -> None:
    det = SpeechDetector(VadSettings(threshold=0.5, neg_threshold=0.3, min_silence=0.0))
    # Between the thresholds while silent: no start.
    assert feed(det, [0.45, 0.49, 0.31]) == []
    assert not det.speaking
    # Once speaking, the same values keep speech going and extend it.
    events = feed(det, [0.6, 0.45, 0.31, 0.45, 0.29], start=1.0)
    assert [(i, type(e)) for i, e in events] == [(0, SpeechStarted), (4, SpeechStopped)]
    assert events[1][1].media_time == pytest.approx(1.0 + 4 * C)  # the 0.45 chunk was speech
    # Exactly at the thresholds: >= threshold starts, >= neg_threshold keeps going.
    det.reset()
    assert [type(e) for _, e in feed(det, [0.5, 0.3])] == [SpeechStarted]
    assert det.speaking


def test_min_speech_needs_consecutive_chunks() -> None:
    det = SpeechDetector(VadSettings(min_speech=0.1))  # 0.1 s -> 4 chunks (0.128 s)
    # Three chunks then a dip below threshold: not enough, and the run restarts.
    assert feed(det, [0.9, 0.9, 0.9, 0.4, 0.9, 0.9, 0.9]) == []
    events = feed(det, [0.9], start=7 * C)
    assert len(events) == 1
    started = events[0][1]
    assert isinstance(started, SpeechStarted)
    # Speech began at the start of the run's first chunk (chunk 4), not at confirmation.
    assert started.media_time == pytest.approx(4 * C)


@pytest.mark.parametrize("min_speech", [0.0, 0.032, 0.01])
def test_min_speech_of_at_most_one_chunk_starts_at_once(min_speech: float) -> None:
    det = SpeechDetector(VadSettings(min_speech=min_speech))
    events = feed(det, [0.1, 0.7])
    assert [(i, type(e)) for i, e in events] == [(1, SpeechStarted)]
    assert events[0][1].media_time == pytest.approx(C)


def test_min_speech_exact_multiple_is_not_rounded_up() -> None:
    det = SpeechDetector(VadSettings(min_speech=0.096))  # exactly 3 chunks
    assert [i for i, _ in feed(det, [0.9, 0.9, 0.9])] == [2]


def test_min_silence() -> None:
    det = SpeechDetector(VadSettings(min_silence=0.1))  # 4 chunks below neg_threshold
    events = feed(det, [0.9, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1])
    # The first 3-chunk pause does not stop speech; the 4-chunk one does.
    assert [(i, type(e)) for i, e in events] == [(0, SpeechStarted), (8, SpeechStopped)]
    assert events[1][1].media_time == pytest.approx(5 * C)


def test_min_silence_zero_stops_on_first_silent_chunk() -> None:
    det = SpeechDetector(VadSettings(min_silence=0.0))
    events = feed(det, [0.9, 0.9, 0.2])
    assert [(i, type(e)) for i, e in events] == [(0, SpeechStarted), (2, SpeechStopped)]
    assert events[1][1].media_time == pytest.approx(2 * C)


def test_silence_run_broken_by_in_between_probability() -> None:
    det = SpeechDetector(VadSettings(min_silence=0.064))  # 2 chunks
    events = feed(det, [0.9, 0.1, 0.4, 0.1, 0.1])
    assert [(i, type(e)) for i, e in events] == [(0, SpeechStarted), (4, SpeechStopped)]
    assert events[1][1].media_time == pytest.approx(3 * C)


def state(det: SpeechDetector) -> tuple[bool, float | None]:
    # Through a function so mypy does not carry narrowed attributes across updates.
    # (Times are compared exactly: the detector returns the times it was given.)
    return det.speaking, det.last_speech_end


def test_speaking_and_last_speech_end_attributes() -> None:
    det = SpeechDetector(VadSettings(min_silence=0.064))
    assert state(det) == (False, None)
    det.update(C, 0.9)
    assert state(det) == (True, C)
    det.update(2 * C, 0.8)
    assert state(det) == (True, 2 * C)
    det.update(3 * C, 0.0)
    assert state(det) == (True, 2 * C)
    assert det.update(4 * C, 0.0) == SpeechStopped(2 * C)
    assert state(det) == (False, 2 * C)


def test_repeated_utterances() -> None:
    det = SpeechDetector(VadSettings(min_silence=0.032))
    events = feed(det, [0.9, 0.1, 0.9, 0.1, 0.1, 0.9])
    assert [(i, type(e)) for i, e in events] == [
        (0, SpeechStarted),
        (1, SpeechStopped),
        (2, SpeechStarted),
        (3, SpeechStopped),
        (5, SpeechStarted),
    ]
    assert [e.media_time for _, e in events] == pytest.approx([0, C, 2 * C, 3 * C, 5 * C])


def test_reset() -> None:
    det = SpeechDetector(VadSettings(min_speech=0.064))
    feed(det, [0.9, 0.9, 0.9])
    assert state(det) == (True, 3 * C)
    det.reset()
    assert state(det) == (False, None)
    # A half-counted run is forgotten too.
    det.update(C, 0.9)
    det.reset()
    assert det.update(2 * C, 0.9) is None
    assert det.update(3 * C, 0.9) == SpeechStarted(C)
