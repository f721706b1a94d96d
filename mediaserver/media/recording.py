"""Per-call stereo WAV recording: the caller on the left, the server on the right."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


class StereoRecorder:
    """Writes both directions of a call, one 20 ms step at a time.

    Audio is queued per channel as it comes (the caller's packets may be 30 ms
    long, or arrive two at once) and every media tick writes exactly one tick's
    worth of samples per channel, padding with silence when a side has nothing.
    That keeps the channels aligned on the media clock.
    """

    #: A channel's backlog is capped (e.g. after a burst) so the two sides
    #: cannot drift apart by more than this many ticks.
    MAX_BACKLOG_TICKS = 10

    def __init__(self, path: Path, sample_rate: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._wav = wave.open(str(path), "wb")  # noqa: SIM115 - closed in close()
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(sample_rate)
        self._pending: list[np.ndarray] = [np.zeros(0, np.int16), np.zeros(0, np.int16)]
        self.frames = 0

    def add(self, channel: int, pcm: np.ndarray | None) -> None:
        """Queue audio for channel 0 (caller) or 1 (server)."""
        if pcm is not None and len(pcm):
            self._pending[channel] = np.concatenate([self._pending[channel], pcm])

    def tick(self, samples: int) -> None:
        """Write `samples` samples per channel from what is queued (silence if short)."""
        out = np.zeros((samples, 2), dtype="<i2")
        for ch in (0, 1):
            queued = self._pending[ch]
            n = min(samples, len(queued))
            out[:n, ch] = queued[:n]
            rest = queued[n:]
            limit = samples * self.MAX_BACKLOG_TICKS
            self._pending[ch] = rest[-limit:] if len(rest) > limit else rest
        self._wav.writeframes(out.tobytes())
        self.frames += samples

    def close(self) -> None:
        """Write what is still queued and finish the WAV header."""
        while any(len(p) for p in self._pending):
            self.tick(max(len(p) for p in self._pending))
        self._wav.close()
