"""Steady tones in an audio stream: an answering machine's beep, a fax machine's
CNG (1100 Hz) or CED (2100 Hz), a modem or a special-information tone.

`ToneDetector` looks at 32 ms windows (hop 16 ms): a window is tonal when one
narrow band (the spectral peak and its neighbour bins) holds most of the
window's energy, which speech never does (a voice's energy spreads over its
harmonics and formants), and the window is loud enough to matter. A run of
tonal windows at the same frequency (within `tolerance`) for at least
`min_duration` is a tone; it is reported once, when it ends (or once it has
lasted `report_after`, for a beep that runs into speech).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

__all__ = ["Tone", "ToneDetector"]

#: Fraction of a window's energy in the peak band for the window to count as tonal.
PURITY: Final = 0.6
#: Quietest window considered (RMS of int16 samples): line noise is not a tone.
MIN_RMS: Final = 120.0


@dataclass(frozen=True)
class Tone:
    """A steady tone: its frequency (Hz), start and duration (s, stream time)."""

    frequency: float
    start: float
    duration: float


class ToneDetector:
    """Finds steady tones in mono int16 audio fed in any chunk size.

    Args:
        sample_rate: the audio's rate.
        low, high: the band a tone may be in (Hz).
        min_duration: the shortest tone reported (s).
        tolerance: how far (relative) the frequency may wander within one tone.
        report_after: report a tone still going after this long (s).
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        low: float = 300.0,
        high: float = 3000.0,
        min_duration: float = 0.16,
        tolerance: float = 0.03,
        report_after: float = 0.4,
    ) -> None:
        self.rate = sample_rate
        self.window = 1 << int(np.ceil(np.log2(sample_rate * 0.032)))
        self.hop = self.window // 2
        self._taper = np.hanning(self.window).astype(np.float32)
        freqs = np.fft.rfftfreq(self.window, 1.0 / sample_rate)
        self._freqs = freqs
        self._band = (freqs >= low) & (freqs <= high)
        self.min_duration = min_duration
        self.tolerance = tolerance
        self.report_after = report_after
        self._buffer = np.zeros(0, dtype=np.float32)
        self._consumed = 0  # samples before the buffer's start
        # The run of tonal windows in progress: start time, frequencies, reported yet.
        self._run_start: float | None = None
        self._run_freqs: list[float] = []
        self._reported = False

    @property
    def tonal(self) -> bool:
        """The newest window is part of a tone (a beep still going)."""
        return bool(self._run_freqs)

    def feed(self, pcm: np.ndarray) -> list[Tone]:
        """More audio; the tones that ended (or passed `report_after`) in it."""
        self._buffer = np.concatenate([self._buffer, pcm.astype(np.float32)])
        found: list[Tone] = []
        while len(self._buffer) >= self.window:
            frame = self._buffer[: self.window]
            t = self._consumed / self.rate
            tone = self._step(t, self._frequency(frame))
            if tone is not None:
                found.append(tone)
            self._buffer = self._buffer[self.hop :]
            self._consumed += self.hop
        return found

    def _frequency(self, frame: np.ndarray) -> float | None:
        """The window's tone frequency, or None when it is not tonal."""
        if float(np.sqrt(np.mean(frame * frame))) < MIN_RMS:
            return None
        power = np.abs(np.fft.rfft(frame * self._taper)) ** 2
        total = float(power.sum())
        if total <= 0.0:
            return None
        banded = np.where(self._band, power, 0.0)
        peak = int(np.argmax(banded))
        # A Hann window spreads a pure tone over ~3 bins on each side.
        near = float(power[max(peak - 3, 0) : peak + 4].sum())
        if near / total < PURITY:
            return None
        # Parabolic interpolation of the peak for a finer frequency.
        if 0 < peak < len(power) - 1:
            a, b, c = np.log(power[peak - 1 : peak + 2] + 1e-12)
            offset = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
        else:
            offset = 0.0
        return float((peak + offset) * self.rate / self.window)

    def _step(self, t: float, frequency: float | None) -> Tone | None:
        run = self._run_freqs
        if frequency is not None and run:
            reference = float(np.median(run))
            if abs(frequency - reference) <= self.tolerance * reference:
                run.append(frequency)
                duration = self._duration()
                if not self._reported and duration >= self.report_after:
                    self._reported = True
                    return self._tone(duration)
                return None
        # The run (if any) ended here.
        ended = None
        if run and not self._reported and self._duration() >= self.min_duration:
            ended = self._tone(self._duration())
        self._run_start = t if frequency is not None else None
        self._run_freqs = [frequency] if frequency is not None else []
        self._reported = False
        return ended

    def _duration(self) -> float:
        return (len(self._run_freqs) - 1) * self.hop / self.rate + self.window / self.rate

    def _tone(self, duration: float) -> Tone:
        assert self._run_start is not None
        return Tone(round(float(np.median(self._run_freqs)), 1), self._run_start, duration)
