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

An echo can start at any moment (a speakerphone switched on) and its path
can move (a phone's playout buffer grows or shrinks): an inbound frame that
could be our echo and that the known path does not explain waits a frame or
two while a short search over it finds the path (or the path's new place),
each candidate checked by how much of the frame its filter removes, since
voiced speech also correlates with itself a pitch period away.

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
#: How far the path may move at once (a phone's adaptive playout growing or
#: shrinking its buffer) and still be found again from the one frame that
#: shows it moved, seconds.
MOVE_RANGE = 0.1
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
#: While we talk and no echo path is known, an inbound frame that could be
#: our echo waits up to this many frames while a short search over it looks
#: for the path: so the first moments of an echo (from the call's first word,
#: or a speakerphone switched on mid-call) are cancelled too instead of
#: reaching the VAD. One frame costs a barge-in that starts quietly 20 ms;
#: two caught hardly more echoes (bench/echo_cancel.py). A frame cannot be
#: our echo when it is louder than the loudest we sent in the last
#: `MAX_DELAY` less `ECHO_LOSS` dB (a phone's echo is attenuated: ITU-T G.168
#: assumes at least 6 dB): it goes on at once.
HOLD_FRAMES = 1
ECHO_LOSS = 6.0
#: The first moments of an echo: the best lags tried, and the share of the
#: held audio (dB removed) a lag's filter must explain to be taken.
ONSET_CANDIDATES = 5
ONSET_REMOVED = 10.0
#: Short searches in a row that found no path in the same sound: it is not
#: our echo, so the rest of it is neither held nor searched (each ~0.3 ms).
MAX_MISSES = 10
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
        #: Near position from which the echo has had that lag (the filter is
        #: fitted on audio after it only).
        self._lag_from = 0
        self._since_search = 0
        self._filter: FloatArray | None = None
        #: Inbound frames waiting (frame, its end position); short searches in a
        #: row that found nothing in the sound going on now.
        self._held: deque[tuple[np.ndarray, int]] = deque()
        self._misses = 0
        #: The newest frame's cleaning by `_explains`: (its end, the lag, result).
        self._explained: tuple[int, int | None, FloatArray | None] = (-1, None, None)
        #: RMS of each far frame of the last `MAX_DELAY`.
        self._far_levels: deque[float] = deque()
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
        level = _rms(chunk)
        self._far_active = 0 if level > FAR_SILENT else self._far_active + len(chunk)
        self._far_levels.append(level)
        while len(self._far_levels) * samples > MAX_DELAY * self._rate + samples:
            self._far_levels.popleft()

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
        level = _rms(x)
        if level <= FAR_SILENT:
            self._misses = 0  # a new sound starts after this silence
        # Nothing we said in the last MAX_DELAY can be echoing now.
        if self._far_active > MAX_DELAY * self._rate or not len(x):
            return self._release(hold=False)
        if self._could_be_echo(level) and not self._explains(x):
            # Maybe our echo, and the path we know (if any) does not explain
            # it: an echo's first moments, or its path moved (a phone's playout
            # buffer grew or shrank, a frame was lost on one side). Look for
            # the path in the frames held so far, holding this one meanwhile.
            window = sum(len(f) for f, _ in self._held)
            if self._lag is None:
                self._search(window=window, threshold=MIN_CORRELATION, verify=True)
            else:
                self._moved(window)
            if not self._explains(x):
                self._misses += 1
                return self._release(hold=True)
        self._since_search += len(x)
        every = SEARCH_EVERY_LOCKED if self._locked else SEARCH_EVERY
        # At most every `SEARCH_EVERY` (loud audio that is not our echo would
        # otherwise cost a search per frame).
        if self._since_search >= every * self._rate:
            self._research()
        return self._release(hold=False)

    def _explains(self, x: FloatArray) -> bool:
        """Whether the path we know explains the newest near frame `x` (the
        filter fitted again on the newest audio if the last one does not)."""
        if self._lag is None:
            return False
        cleaned = self._cancel(x, self._near_total)
        if cleaned is None:
            self._filter = None
            cleaned = self._cancel(x, self._near_total)
        # Kept for when the frame is released (it is cleaned once).
        self._explained = (self._near_total, self._lag, cleaned)
        return cleaned is not None

    def _could_be_echo(self, level: float) -> bool:
        """Whether a near frame at RMS `level` may be (only) our echo: not
        silent, not louder than what we sent could come back, and not part of
        a sound that `MAX_MISSES` searches found no echo in."""
        loudest = max(self._far_levels, default=0.0)
        return (
            level > FAR_SILENT
            and level <= loudest * 10 ** (-ECHO_LOSS / 20)
            and self._misses < MAX_MISSES
        )

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
        if self._explained[:2] == (end, self._lag):
            cleaned = self._explained[2]
        else:
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

    def _moved(self, window: int) -> bool:
        """Whether the newest `window` near samples show the path has moved
        to a lag within `MOVE_RANGE` of the one we had (and it now has it)."""
        lag = self._lag
        if lag is None:
            return False
        reach = int(MOVE_RANGE * self._rate)
        self._search(lag - reach, lag + reach, window, MIN_CORRELATION, verify=True)
        return self._lag != lag

    def _search(
        self,
        lo: int | None = None,
        hi: int | None = None,
        window: int | None = None,
        threshold: float | None = None,
        verify: bool = False,
    ) -> None:
        """Find the lag in [lo, hi] where the far stream best explains the
        newest `window` near samples, if it explains them by `threshold`.

        Positions count each stream's own samples, and the streams did not
        start together, so near[n] echoes far[n - lag] with lag = the echo's
        delay plus the streams' offset (how far the near count runs ahead of
        the far count, measured now: both advance in real time). By default
        every delay up to `MAX_DELAY` is searched over `SEARCH_WINDOW`.
        `verify`: on a window too short for the correlation alone (voiced
        speech correlates with itself a pitch period away), the best few lags
        are tried in turn and one is taken only if its filter removes
        `ONSET_REMOVED` dB of the window.
        """
        offset = self._near_total - self._far_total
        lo = offset - int(OFFSET_SLACK * self._rate) if lo is None else lo
        hi = offset + int(MAX_DELAY * self._rate) if hi is None else hi
        window = window or int(SEARCH_WINDOW * self._rate)
        near = self._near[-window:]
        loud = np.flatnonzero(np.abs(near) > FAR_SILENT)
        if not len(loud) or (len(near) - loud[0]) < min(window // 2, SHORT_WINDOW * self._rate):
            return
        near = near[loud[0] :]
        heard = len(near) / self._rate
        if threshold is None:
            threshold = MIN_CORRELATION if heard >= LONG_WINDOW else MIN_CORRELATION_SHORT
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
        # Where we said nothing, a correlation is no evidence.
        score[energy <= FAR_SILENT**2 * len(near)] = 0.0
        if verify:
            taps = TAPS_BEFORE + TAPS_AFTER + 1
            for k in np.argsort(score)[::-1][:ONSET_CANDIDATES]:
                if score[k] < threshold:
                    return
                solved = self._solve(int(hi - k), len(near), taps)
                if solved is not None and solved[1] >= ONSET_REMOVED:
                    self._lag, self._lag_from, self._filter = int(hi - k), start, solved[0]
                    self.stats.delay = (self._lag - offset) / self._rate
                    # As good as a lock: the next long search (over audio
                    # mostly from before the move) must not undo it.
                    self._locked, self._since_search = True, 0
                    return
            return
        best = int(np.argmax(score))
        if score[best] >= threshold:
            if self._lag != hi - best:
                self._lag_from = start
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
        self.stats.erle_db = _removed_db(x, residual)
        return residual

    def _fit(self, taps: int) -> FloatArray | None:
        """The echo path's filter, by least squares over the newest audio both
        streams have (early in a call, not much yet; held frames use it too)."""
        assert self._lag is not None
        end = self._near_total
        first = self._near_total - len(self._near)
        far_first = self._far_total - len(self._far)
        fit = min(
            int(FIT_WINDOW * self._rate),
            end - max(first, self._lag_from),
            end - self._lag - TAPS_AFTER - far_first,
        )
        solved = self._solve(self._lag, fit, taps)
        return None if solved is None else solved[0]

    def _solve(self, lag: int, fit: int, taps: int) -> tuple[FloatArray, float] | None:
        """The filter at `lag` that best explains the newest `fit` near samples,
        and how much of them it explains (dB removed); None: nothing to fit."""
        end = self._near_total
        first = self._near_total - len(self._near)
        far = self._far_at(end - fit - lag - TAPS_AFTER, fit + taps - 1)
        if fit < FRAME_MIN or far is None or _rms(far) <= FAR_SILENT:
            return None
        rows = np.lib.stride_tricks.sliding_window_view(far, taps)
        gram = rows.T @ rows
        gram += np.eye(taps) * (1e-3 * float(np.trace(gram)) / taps + 1.0)
        near = self._near[end - fit - first : end - first]
        weights = np.asarray(np.linalg.solve(gram, rows.T @ near), dtype=np.float64)
        return weights, _removed_db(near, near - rows @ weights)


def _removed_db(x: FloatArray, residual: FloatArray) -> float:
    """How much of `x` (dB of its energy) is gone from `residual`."""
    return float(10 * np.log10((np.sum(x**2) + 1e-9) / (np.sum(residual**2) + 1e-9)))


def _rms(x: FloatArray) -> float:
    return float(np.sqrt(np.dot(x, x) / len(x))) if len(x) else 0.0


def _tail(a: FloatArray, n: int) -> FloatArray:
    return a[-n:] if len(a) > n else a
