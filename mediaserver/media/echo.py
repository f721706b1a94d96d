"""Removing the agent's own voice from what the caller sends back (sans-IO).

A phone with poor echo cancellation (a speakerphone, a cheap handset, a
gateway without an echo canceller) returns what we sent it: a delayed,
attenuated and filtered copy on the inbound stream. To the VAD that copy is
speech, so without this the agent would interrupt itself.

We know exactly what left on the wire and when, so the echo can be predicted
and subtracted: `EchoCanceller` keeps the audio we sent (`far`) and the
audio we received (`near`), finds the echo path's delay by cross-correlating
the two (re-estimated while we talk), fits a short FIR filter around that
delay by least squares over the recent audio, and returns each inbound frame
minus the predicted echo. The caller's own voice is not correlated with ours,
so it passes through; when nothing we said explains the inbound audio (no
echo, or the caller talking alone) the frame passes unchanged.

Both streams are at the call's rate. Times are counted in samples of each
stream (the far stream advances one frame per clock tick, sent or silent;
the near stream by the frames delivered), so the path delay also absorbs
the jitter buffer's: it only has to be steady, not known.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["EchoCanceller", "EchoStats"]

FloatArray = npt.NDArray[np.float64]

#: Longest echo path searched (network, phone and room), seconds.
MAX_DELAY = 0.5
#: Audio the delay search correlates, seconds.
SEARCH_WINDOW = 1.0
#: How often the delay is searched again while we talk, seconds: often while
#: no echo is being cancelled, rarely once it is (the path is steady).
SEARCH_EVERY = 0.2
SEARCH_EVERY_LOCKED = 1.0
#: Audio the echo filter is fitted on, and how often it is fitted again, seconds.
FIT_WINDOW = 0.3
FIT_EVERY = 0.1
#: Taps of the echo filter: a few before the bulk delay, more after (the room).
TAPS_BEFORE = 2
TAPS_AFTER = 10
#: Normalised cross-correlation from which a delay is believed: on a short
#: window (the first moments of an echo, to lock on before the VAD hears it)
#: only a strong one; on a longer window a moderate one.
MIN_CORRELATION = 0.4
MIN_CORRELATION_SHORT = 0.7
#: Near audio (seconds) from which a search is tried, and from which it is long.
SHORT_WINDOW = 0.04
LONG_WINDOW = 0.25
#: Far-end RMS (int16 units) below which we are silent: nothing to cancel.
FAR_SILENT = 30.0


class EchoStats:
    """Counters for the call record and /metrics."""

    def __init__(self) -> None:
        self.frames = 0
        self.cancelled = 0
        #: The echo path's delay (seconds) once found.
        self.delay: float | None = None
        #: Energy removed from cancelled frames, dB (the last one).
        self.erle_db = 0.0


class EchoCanceller:
    """Subtracts the predicted echo of the far stream from the near stream.

    Args:
        rate: the call's sample rate.
    """

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._keep = int((MAX_DELAY + SEARCH_WINDOW + FIT_WINDOW) * rate) + TAPS_AFTER + 1
        self._far = np.zeros(0)
        self._near = np.zeros(0)
        #: Samples of each stream ever seen (absolute positions).
        self._far_total = 0
        self._near_total = 0
        #: Far samples behind near ones: near[n] echoes far[n - lag], absolute.
        self._lag: int | None = None
        self._since_search = 0
        self._filter: FloatArray | None = None
        self._since_fit = 0
        self._locked = False
        self._far_active = 0  # samples since the far stream was last loud
        self.stats = EchoStats()

    def far(self, pcm: npt.ArrayLike | None, samples: int) -> None:
        """What we sent this tick (None: nothing; `samples` of silence)."""
        chunk = np.zeros(samples) if pcm is None else np.asarray(pcm, dtype=np.float64)
        self._far = _tail(np.concatenate([self._far, chunk]), self._keep)
        self._far_total += len(chunk)
        loud = len(chunk) and float(np.sqrt(np.mean(chunk**2))) > FAR_SILENT
        self._far_active = 0 if loud else self._far_active + len(chunk)

    def near(self, pcm: npt.ArrayLike) -> np.ndarray:
        """One inbound frame (int16): the same frame without our echo."""
        frame = np.asarray(pcm)
        x = frame.astype(np.float64)
        self._near = _tail(np.concatenate([self._near, x]), self._keep)
        self._near_total += len(x)
        self.stats.frames += 1
        # Nothing we said in the last MAX_DELAY can be echoing now.
        if self._far_active > MAX_DELAY * self._rate or not len(x):
            return frame
        self._since_search += len(x)
        every = SEARCH_EVERY_LOCKED if self._locked else SEARCH_EVERY
        if self._lag is None or self._since_search >= every * self._rate:
            self._since_search = 0
            lag = self._lag
            self._search()
            if self._lag != lag:
                self._filter = None
        if self._lag is None:
            return frame
        cleaned = self._cancel(x)
        self._locked = cleaned is not None
        if cleaned is None:
            return frame
        self.stats.cancelled += 1
        return np.clip(np.round(cleaned), -32768, 32767).astype(frame.dtype)

    # -- internals ----------------------------------------------------------------------

    def _far_at(self, start: int, length: int) -> FloatArray | None:
        """Far samples [start, start + length) by absolute position, if kept."""
        first = self._far_total - len(self._far)
        if start < first or start + length > self._far_total:
            return None
        return self._far[start - first : start - first + length]

    def _search(self) -> None:
        """Find the lag where the far stream best explains the near stream."""
        max_lag = int(MAX_DELAY * self._rate)
        near = self._near[-int(SEARCH_WINDOW * self._rate) :]
        loud = np.flatnonzero(np.abs(near) > FAR_SILENT)
        if not len(loud) or (len(near) - loud[0]) < SHORT_WINDOW * self._rate:
            return
        near = near[loud[0] :]
        heard = len(near) / self._rate
        start = self._near_total - len(near)  # absolute position of near[0]
        # far[start - max_lag, start + len(near)), zeros where we have nothing.
        far = np.zeros(len(near) + max_lag)
        first = self._far_total - len(self._far)
        lo, hi = max(start - max_lag, first), min(start + len(near), self._far_total)
        if hi <= lo:
            return
        far[lo - (start - max_lag) : hi - (start - max_lag)] = self._far[lo - first : hi - first]
        # corr[k] = sum near[i] * far[i + k]; near[i] echoes far[i + max_lag - lag].
        size = 1 << (len(far) + len(near) - 1).bit_length()
        spectrum = np.fft.rfft(far, size) * np.conj(np.fft.rfft(near, size))
        corr = np.fft.irfft(spectrum, size)[: max_lag + 1]
        cumulative = np.concatenate([[0.0], np.cumsum(far**2)])
        k = np.arange(max_lag + 1)
        energy = cumulative[k + len(near)] - cumulative[k]
        score = corr / (np.sqrt(energy * float(np.sum(near**2))) + 1e-9)
        # Where we had (almost) nothing to send, a tiny energy is no evidence.
        score[energy < 0.05 * energy.max()] = 0.0
        best = int(np.argmax(score))
        if score[best] >= (MIN_CORRELATION if heard >= LONG_WINDOW else MIN_CORRELATION_SHORT):
            self._lag = max_lag - best
            self.stats.delay = self._lag / self._rate

    def _cancel(self, x: FloatArray) -> FloatArray | None:
        """`x` (the newest near frame) minus its predicted echo; None when the
        fit explains too little of it to be an echo."""
        assert self._lag is not None
        fit = min(int(FIT_WINDOW * self._rate), len(self._near))
        taps = TAPS_BEFORE + TAPS_AFTER + 1
        end = self._near_total
        # Row i: far samples that echo into near sample (end - fit + i).
        start = end - fit - self._lag - TAPS_AFTER
        far = self._far_at(start, fit + taps - 1)
        if far is None:
            return None
        rows = np.lib.stride_tricks.sliding_window_view(far, taps)
        self._since_fit += len(x)
        h = self._filter
        if h is None or self._since_fit >= FIT_EVERY * self._rate:
            self._since_fit = 0
            gram = rows.T @ rows
            gram += np.eye(taps) * (1e-3 * float(np.trace(gram)) / taps + 1.0)
            h = self._filter = np.asarray(
                np.linalg.solve(gram, rows.T @ self._near[-fit:]), dtype=np.float64
            )
        echo = rows[-len(x) :] @ h
        residual = x - echo
        before, after = float(np.sum(x**2)), float(np.sum(residual**2))
        if after >= before * 0.5:  # less than 3 dB removed: not (only) our echo
            return None
        self.stats.erle_db = float(10 * np.log10((before + 1e-9) / (after + 1e-9)))
        return residual


def _tail(a: FloatArray, n: int) -> FloatArray:
    return a[-n:] if len(a) > n else a
