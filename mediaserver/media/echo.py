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

from collections import deque

import numpy as np
import numpy.typing as npt

__all__ = ["EchoCanceller", "EchoStats"]

FloatArray = npt.NDArray[np.float64]

#: Longest echo path searched (network, phone and room), seconds.
MAX_DELAY = 0.5
#: How far the two streams' sample counts may drift from their offset now
#: (the jitter buffer, a late packet), seconds.
OFFSET_SLACK = 0.06
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
#: While we talk and no echo path is known yet, inbound frames wait this many
#: frames, so the first moments of an echo (before its path is found, ~40 ms
#: in) are cancelled too instead of reaching the VAD. Only at the start of a
#: call: until a path is found, or `PROBATION` seconds of our speech found none.
HOLD_FRAMES = 2
PROBATION = 1.5
#: Fewest samples the echo filter is fitted on.
FRAME_MIN = 160
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
        #: Inbound frames waiting (frame, its end position), and whether the
        #: call is still in its first words without a known echo path.
        self._held: deque[tuple[np.ndarray, int]] = deque()
        self._on_probation = True
        self._probation_left = int(PROBATION * rate)
        self._since_fit = 0
        self._locked = False
        # Samples since the far stream was last loud (we have not talked yet).
        self._far_active = int(MAX_DELAY * rate) + 1
        self.stats = EchoStats()

    def far(self, pcm: npt.ArrayLike | None, samples: int) -> None:
        """What we sent this tick (None: nothing; `samples` of silence)."""
        chunk = np.zeros(samples) if pcm is None else np.asarray(pcm, dtype=np.float64)
        self._far = _tail(np.concatenate([self._far, chunk]), self._keep)
        self._far_total += len(chunk)
        loud = _rms(chunk) > FAR_SILENT
        self._far_active = 0 if loud else self._far_active + len(chunk)

    def near(self, pcm: npt.ArrayLike) -> list[np.ndarray]:
        """One inbound frame (int16) in; the frames ready to go on, without our
        echo, in order: this one, or none while frames wait for the echo path
        to be found (see `HOLD_FRAMES`), or several when they are released."""
        frame = np.asarray(pcm)
        x = frame.astype(np.float64)
        self._near = _tail(np.concatenate([self._near, x]), self._keep)
        self._near_total += len(x)
        self.stats.frames += 1
        self._held.append((frame, self._near_total))
        # Nothing we said in the last MAX_DELAY can be echoing now.
        if self._far_active > MAX_DELAY * self._rate or not len(x):
            return self._release(hold=False)
        self._since_search += len(x)
        every = SEARCH_EVERY_LOCKED if self._locked else SEARCH_EVERY
        # Every frame while a first echo may be starting (probation), to find
        # it within ~40 ms; then at most every `SEARCH_EVERY` (loud audio that
        # is not our echo would otherwise cost a search per frame).
        if self._on_probation or self._since_search >= every * self._rate:
            self._research()
        if self._on_probation:
            # Our first words: until the path is found (or we have talked long
            # enough to know there is no echo), inbound audio waits a little.
            self._probation_left -= len(x)
            self._on_probation = self._lag is None and self._probation_left > 0
        return self._release(hold=self._on_probation)

    def held_frames(self) -> list[tuple[np.ndarray, int]]:
        """The frames held back, as they came (the canceller is being dropped)."""
        held, self._held = list(self._held), deque()
        return held

    def _release(self, hold: bool) -> list[np.ndarray]:
        out = []
        while self._held and (not hold or len(self._held) > HOLD_FRAMES):
            frame, end = self._held.popleft()
            out.append(self._clean(frame, end))
        return out

    def _clean(self, frame: np.ndarray, end: int) -> np.ndarray:
        """`frame` (its last sample at near position `end`) without our echo."""
        if self._lag is None or self._far_active > MAX_DELAY * self._rate:
            return frame
        x = frame.astype(np.float64)
        loud = _rms(x) > FAR_SILENT
        cleaned = self._cancel(x, end)
        if cleaned is None and loud and end == self._near_total:
            # A loud frame our path does not explain: fit the filter on the
            # newest audio, and if that fails too the path moved (a frame lost
            # on one side shifts the counts): find it again, now.
            self._filter = None
            cleaned = self._cancel(x, end)
            if cleaned is None and self._locked:
                self._research()
                cleaned = self._cancel(x, end)
        if loud:  # quiet frames say nothing about the path
            self._locked = cleaned is not None
        if cleaned is None:
            return frame
        self.stats.cancelled += 1
        return np.clip(np.round(cleaned), -32768, 32767).astype(frame.dtype)

    # -- internals ----------------------------------------------------------------------

    def _research(self) -> None:
        self._since_search = 0
        lag = self._lag
        self._search()
        if self._lag != lag:
            self._filter = None

    def _far_at(self, start: int, length: int) -> FloatArray | None:
        """Far samples [start, start + length) by absolute position, if kept."""
        first = self._far_total - len(self._far)
        if start < first or start + length > self._far_total:
            return None
        return self._far[start - first : start - first + length]

    def _search(self) -> None:
        """Find the lag where the far stream best explains the near stream.

        Positions count each stream's own samples, and the streams did not
        start together, so near[n] echoes far[n - lag] with lag = the echo's
        delay plus the streams' offset (how far the near count runs ahead of
        the far count, measured now: both advance in real time).
        """
        offset = self._near_total - self._far_total
        lo = offset - int(OFFSET_SLACK * self._rate)
        hi = offset + int(MAX_DELAY * self._rate)
        near = self._near[-int(SEARCH_WINDOW * self._rate) :]
        loud = np.flatnonzero(np.abs(near) > FAR_SILENT)
        if not len(loud) or (len(near) - loud[0]) < SHORT_WINDOW * self._rate:
            return
        near = near[loud[0] :]
        heard = len(near) / self._rate
        start = self._near_total - len(near)  # absolute position of near[0]
        # far[start - hi, start + len(near) - lo), zeros where we have nothing;
        # near[i] echoes far[start + i - lag] = far_seg[i + hi - lag].
        far = np.zeros(len(near) + hi - lo)
        first = self._far_total - len(self._far)
        seg_start = start - hi
        a, b = max(seg_start, first), min(seg_start + len(far), self._far_total)
        if b <= a:
            return
        far[a - seg_start : b - seg_start] = self._far[a - first : b - first]
        size = 1 << (len(far) + len(near) - 1).bit_length()
        spectrum = np.fft.rfft(far, size) * np.conj(np.fft.rfft(near, size))
        corr = np.fft.irfft(spectrum, size)[: hi - lo + 1]  # corr[k]: lag hi - k
        cumulative = np.concatenate([[0.0], np.cumsum(far**2)])
        k = np.arange(hi - lo + 1)
        energy = cumulative[k + len(near)] - cumulative[k]
        score = corr / (np.sqrt(energy * float(np.sum(near**2))) + 1e-9)
        # Where we had (almost) nothing to send, a tiny energy is no evidence.
        score[energy < 0.05 * energy.max()] = 0.0
        best = int(np.argmax(score))
        if score[best] >= (MIN_CORRELATION if heard >= LONG_WINDOW else MIN_CORRELATION_SHORT):
            self._lag = hi - best
            self.stats.delay = (self._lag - offset) / self._rate

    def _cancel(self, x: FloatArray, end: int) -> FloatArray | None:
        """`x` (the near frame ending at position `end`) minus its predicted
        echo; None when the fit explains too little of it to be an echo."""
        assert self._lag is not None
        taps = TAPS_BEFORE + TAPS_AFTER + 1
        self._since_fit += len(x)
        if self._filter is None or self._since_fit >= FIT_EVERY * self._rate:
            self._since_fit = 0
            # A window where we said nothing fits nothing: keep the last filter.
            fitted = self._fit(taps)
            if fitted is not None:
                self._filter = fitted
        # Row i: the far samples that echo into near sample (end - len(x) + i).
        far = self._far_at(end - len(x) - self._lag - TAPS_AFTER, len(x) + taps - 1)
        if self._filter is None or far is None:
            return None
        echo = np.lib.stride_tricks.sliding_window_view(far, taps) @ self._filter
        residual = x - echo
        before, after = float(np.sum(x**2)), float(np.sum(residual**2))
        if after >= before * 0.5:  # less than 3 dB removed: not (only) our echo
            return None
        self.stats.erle_db = float(10 * np.log10((before + 1e-9) / (after + 1e-9)))
        return residual

    def _fit(self, taps: int) -> FloatArray | None:
        """The echo path's filter, by least squares over the newest audio both
        streams have (early in a call, not much yet; held frames use it too)."""
        assert self._lag is not None
        end = self._near_total
        first = self._near_total - len(self._near)
        far_first = self._far_total - len(self._far)
        fit = min(
            int(FIT_WINDOW * self._rate), end - first, end - self._lag - TAPS_AFTER - far_first
        )
        far = self._far_at(end - fit - self._lag - TAPS_AFTER, fit + taps - 1)
        if fit < FRAME_MIN or far is None or _rms(far) <= FAR_SILENT:
            return None
        rows = np.lib.stride_tricks.sliding_window_view(far, taps)
        gram = rows.T @ rows
        gram += np.eye(taps) * (1e-3 * float(np.trace(gram)) / taps + 1.0)
        near = self._near[end - fit - first : end - first]
        return np.asarray(np.linalg.solve(gram, rows.T @ near), dtype=np.float64)


def _rms(x: FloatArray) -> float:
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


def _tail(a: FloatArray, n: int) -> FloatArray:
    return a[-n:] if len(a) > n else a
