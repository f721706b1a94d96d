"""Speech start/stop decisions from per-chunk VAD probabilities (sans-IO).

`SpeechDetector` turns the stream of ``(media_time, probability)`` pairs that a
`VadStream` reports into `SpeechStarted` / `SpeechStopped` events. It holds no
clock and does no IO: times are the media (RTP) times of the chunks, so the
decisions are the same whether the audio arrived on time, late or in a test.

Hysteresis: while silent, a chunk is speech when its probability reaches
``threshold``; while speaking, a chunk stays speech down to ``neg_threshold``.
A probability between the two therefore never changes the state: it does not
count towards starting speech, nor towards stopping it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mediaserver.pipeline.settings import VadSettings

__all__ = ["CHUNK_SECONDS", "SpeechDetector", "SpeechEvent", "SpeechStarted", "SpeechStopped"]

#: Duration of one silero chunk: 512 samples at 16 kHz.
CHUNK_SECONDS = 0.032

# Durations are compared in whole chunks; this slack keeps 0.096 s (3 chunks,
# which is 3 * 0.032 = 0.09600000000000002 in floats) from needing a 4th chunk.
_EPS = 1e-6


@dataclass(frozen=True)
class SpeechStarted:
    """The caller started speaking.

    Attributes:
        media_time: media time (seconds) of the start of the first chunk of the
            speech, i.e. when speech began, not when it was confirmed.
    """

    media_time: float


@dataclass(frozen=True)
class SpeechStopped:
    """The caller stopped speaking.

    Attributes:
        media_time: media time (seconds) of the end of the last speech chunk,
            i.e. when speech ended, not when the silence was confirmed.
    """

    media_time: float


SpeechEvent = SpeechStarted | SpeechStopped


def _chunks_for(seconds: float, chunk_seconds: float) -> int:
    # At least one chunk: a zero minimum still needs one chunk to observe.
    return max(1, math.ceil(seconds / chunk_seconds - _EPS))


class SpeechDetector:
    """Hysteresis speech detector over 32 ms VAD probabilities of one stream.

    Args:
        settings: thresholds and minimum durations (``threshold``,
            ``neg_threshold``, ``min_speech``, ``min_silence``).
        chunk_seconds: duration of one probability's chunk.

    Attributes:
        speaking: whether the caller is currently speaking.
        last_speech_end: media time of the end of the newest speech chunk
            (updated while speaking; after `SpeechStopped` it is that event's
            time), or None before any speech.
    """

    def __init__(self, settings: VadSettings, chunk_seconds: float = CHUNK_SECONDS) -> None:
        self._threshold = settings.threshold
        self._neg_threshold = settings.neg_threshold
        self._chunk = chunk_seconds
        # Counting chunks rather than subtracting times: the chunks of a stream
        # are contiguous by construction, and counts have no rounding drift.
        self._speech_chunks_needed = _chunks_for(settings.min_speech, chunk_seconds)
        self._silence_chunks_needed = _chunks_for(settings.min_silence, chunk_seconds)
        self.speaking = False
        self.last_speech_end: float | None = None
        self._run_start: float | None = None
        self._run_chunks = 0
        self._silence_chunks = 0

    def reset(self) -> None:
        """Forget everything (e.g. after a gap in the audio or a new turn)."""
        self.speaking = False
        self.last_speech_end = None
        self._run_start = None
        self._run_chunks = 0
        self._silence_chunks = 0

    def update(self, media_time: float, prob: float) -> SpeechStarted | SpeechStopped | None:
        """Feed the probability of the chunk ending at `media_time`.

        Args:
            media_time: media time (seconds) of the end of the chunk.
            prob: speech probability of the chunk, in [0, 1].

        Returns:
            `SpeechStarted` or `SpeechStopped` when the state changes, else None.
        """
        if not self.speaking:
            if prob < self._threshold:
                # Speech must be min_speech of consecutive chunks.
                self._run_start = None
                self._run_chunks = 0
                return None
            if self._run_start is None:
                self._run_start = media_time - self._chunk
            self._run_chunks += 1
            if self._run_chunks < self._speech_chunks_needed:
                return None
            start = self._run_start
            self.speaking = True
            self.last_speech_end = media_time
            self._run_start = None
            self._run_chunks = 0
            self._silence_chunks = 0
            return SpeechStarted(start)

        if prob >= self._neg_threshold:
            self.last_speech_end = media_time
            self._silence_chunks = 0
            return None
        self._silence_chunks += 1
        if self._silence_chunks < self._silence_chunks_needed:
            return None
        self.speaking = False
        self._silence_chunks = 0
        # last_speech_end is set: speaking implies a speech chunk was seen.
        end = self.last_speech_end if self.last_speech_end is not None else media_time
        return SpeechStopped(end)
