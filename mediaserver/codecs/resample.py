"""Streaming sample-rate conversion between the rates the media plane meets.

Telephony codecs run at 8 kHz (G.711), 16 kHz (G.722, L16, most STT models),
48 kHz (Opus); TTS voices at 16, 22.05 or 24 kHz. A `Resampler` converts one
continuous stream frame by frame with libsoxr (through ``soxr.ResampleStream``),
keeping the filter history between calls so that frame edges leave no clicks.

Two libsoxr engines, chosen by ``low_latency``:

* ``low_latency=True`` (default) is libsoxr's variable-rate engine run at a fixed
  ratio. After the first frame or two it returns exactly one 20 ms frame out per
  20 ms frame in (320 samples at 16 kHz for 160 at 8 kHz, and so on), holds
  5-30 ms of audio depending on the pair, and rejects aliases by >100 dB. Its
  output sits up to 0.25 ms later than the ideal (a constant offset, not a
  distortion). This is what live audio needs: the VAD, the jitter buffer and
  the 20 ms clock expect steady frames.
* ``low_latency=False`` is libsoxr's ordinary HQ engine: 2-5x cheaper per frame
  and exactly delay-compensated, but it works in large FFT blocks, so output
  comes in bursts with empty returns in between (up to 175 ms behind, for
  8 <-> 48 kHz). Use it, or the one-shot `resample`, for audio not paced by the
  clock, such as a whole TTS utterance or a prompt file.

Internally the stream runs in float32 and we round to int16 ourselves: libsoxr's
own int16 output adds TPDF dither, which turns digital silence into +-1 noise
and makes the output depend on how the input was chunked.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr  # type: ignore[import-untyped]

from mediaserver.codecs.base import PcmArray, as_mono_int16

__all__ = ["COMMON_RATES", "Resampler", "resample"]

COMMON_RATES = (8000, 16000, 22050, 24000, 48000)
"""The rates the media plane converts between (any pair works; these are tested)."""

_EMPTY_FLOAT = np.zeros(0, dtype=np.float32)


def _to_int16(samples: npt.NDArray[np.float32]) -> PcmArray:
    # Round to nearest and saturate: a full-scale input can overshoot slightly
    # after filtering (Gibbs ripple) and must clip, not wrap.
    np.rint(samples, out=samples)
    np.clip(samples, -32768.0, 32767.0, out=samples)
    return samples.astype(np.int16)


def _check_rate(rate: int, what: str) -> None:
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise ValueError(f"{what} must be a positive integer number of Hz, not {rate!r}")


class Resampler:
    """Convert one continuous int16 mono stream from `in_rate` to `out_rate`.

    One instance per stream: it keeps the filter history between `process`
    calls. When the rates are equal it is the identity and returns its input
    without copying.

    Args:
        in_rate: input sample rate in Hz.
        out_rate: output sample rate in Hz.
        low_latency: steady per-frame output (True) or cheaper bursty output
            (False); see the module docstring.

    Example:
        >>> up = Resampler(8000, 16000)
        >>> pcm16k = up.process(pcm8k_frame)   # 0..320 samples early on, then 320
        >>> tail = up.flush()                  # at the end of the stream
    """

    def __init__(self, in_rate: int, out_rate: int, *, low_latency: bool = True) -> None:
        _check_rate(in_rate, "in_rate")
        _check_rate(out_rate, "out_rate")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.low_latency = low_latency
        self._samples_in = 0
        self._samples_out = 0
        self._stream: soxr.ResampleStream | None = None
        if in_rate != out_rate:
            self._stream = self._new_stream()

    def _new_stream(self) -> soxr.ResampleStream:
        return soxr.ResampleStream(
            self.in_rate,
            self.out_rate,
            1,
            dtype="float32",
            quality="HQ",
            vr=self.low_latency,
        )

    @property
    def is_identity(self) -> bool:
        """True when the rates are equal and frames pass through untouched."""
        return self._stream is None

    @property
    def pending(self) -> int:
        """Output samples owed but not yet returned: the current latency, in output samples.

        Measured against the ideal length ``samples_in * out_rate / in_rate``
        (to within a sample); `flush` returns them.
        """
        expected = self._samples_in * self.out_rate // self.in_rate
        return expected - self._samples_out

    def process(self, frame: npt.ArrayLike) -> PcmArray:
        """Convert the next chunk of the stream.

        Args:
            frame: 1-D int16 samples at `in_rate` (any length; 20 ms is typical).

        Returns:
            int16 samples at `out_rate`: the input itself for the identity,
            otherwise whatever the filter has ready (shorter than the ideal
            ``len * out_rate / in_rate`` while it fills, then steady in
            low-latency mode).

        Raises:
            TypeError: `frame` is not int16.
            ValueError: `frame` is not 1-D.
        """
        pcm = as_mono_int16(frame)
        if self._stream is None:
            return pcm
        self._samples_in += len(pcm)
        out = self._stream.resample_chunk(pcm.astype(np.float32))
        self._samples_out += len(out)
        return _to_int16(out)

    def flush(self) -> PcmArray:
        """End the stream: return the samples still inside the filter, then reset.

        After `flush` the resampler starts a fresh stream (no history), ready
        for the next utterance.

        Returns:
            The remaining int16 samples at `out_rate` (empty for the identity).
        """
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        tail = self._stream.resample_chunk(_EMPTY_FLOAT, last=True)
        self.reset()
        return _to_int16(tail)

    def reset(self) -> None:
        """Drop the filter history and any pending output, as if newly built."""
        if self._stream is not None:
            # clear() keeps the designed filter, which is the costly part to build.
            self._stream.clear()
        self._samples_in = 0
        self._samples_out = 0

    def __repr__(self) -> str:
        mode = "low-latency" if self.low_latency else "block"
        return f"<Resampler {self.in_rate}->{self.out_rate} Hz {mode}>"


def resample(pcm: npt.ArrayLike, in_rate: int, out_rate: int) -> PcmArray:
    """Convert a whole signal at once (no streaming state), e.g. a TTS utterance.

    Args:
        pcm: 1-D int16 samples at `in_rate`.
        in_rate: input sample rate in Hz.
        out_rate: output sample rate in Hz.

    Returns:
        ``round(len(pcm) * out_rate / in_rate)`` int16 samples at `out_rate`,
        time-aligned with the input (the filter delay is compensated).

    Raises:
        TypeError: `pcm` is not int16.
        ValueError: `pcm` is not 1-D, or a rate is not positive.
    """
    _check_rate(in_rate, "in_rate")
    _check_rate(out_rate, "out_rate")
    samples = as_mono_int16(pcm)
    if in_rate == out_rate:
        return samples
    out = soxr.resample(samples.astype(np.float32), in_rate, out_rate, quality="HQ")
    return _to_int16(np.asarray(out, dtype=np.float32))
