"""Whisper's 80-bin log-mel features in numpy, as Smart Turn v3 was trained on.

Smart Turn v3 takes the features of exactly 8 s of 16 kHz audio: the turn's
audio right-aligned (its end at the end of the window, zeros before it). The
recipe is Whisper's feature extractor: zero-mean unit-variance waveform, a
centred STFT (400-sample periodic Hann window, hop 160, reflect padding),
power through a Slaney-normalised 80-filter mel bank over 0-8 kHz, log10
floored at 1e-10, clamped to 8 decades below the peak and scaled to about
[-1, 1]. The last STFT frame is dropped (Whisper keeps 100 frames per second).
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

__all__ = ["FRAMES", "MELS", "SAMPLE_RATE", "WINDOW_SAMPLES", "fit_window", "log_mel"]

SAMPLE_RATE = 16000
#: The model's window: 8 s.
WINDOW_SAMPLES = 8 * SAMPLE_RATE
MELS = 80
#: Feature frames per window (10 ms hop).
FRAMES = 800

_N_FFT = 400
_HOP = 160


def _slaney_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # Linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
    log_step = 27.0 / np.log(6.4)
    return np.where(
        hz < 1000.0, 3.0 * hz / 200.0, 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * log_step
    )


def _slaney_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    log_step = np.log(6.4) / 27.0
    return np.where(mel < 15.0, 200.0 * mel / 3.0, 1000.0 * np.exp(log_step * (mel - 15.0)))


@functools.cache
def _mel_bank() -> npt.NDArray[np.float64]:
    """Triangular filters, shape (MELS, 201), each normalised to unit area."""
    edges_mel = np.linspace(
        _slaney_mel(np.array(0.0)), _slaney_mel(np.array(SAMPLE_RATE / 2)), MELS + 2
    )
    edges = _slaney_hz(edges_mel)
    bins = np.linspace(0.0, SAMPLE_RATE / 2, _N_FFT // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    return bank * (2.0 / (upper - lower))


@functools.cache
def _hann() -> npt.NDArray[np.float64]:
    # Periodic (as torch.hann_window): the symmetric window of N+1, last dropped.
    return np.hanning(_N_FFT + 1)[:-1]


def fit_window(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """`audio` as the model's 8 s window: its last 8 s, zero-padded in front."""
    if len(audio) >= WINDOW_SAMPLES:
        return audio[-WINDOW_SAMPLES:]
    return np.concatenate([np.zeros(WINDOW_SAMPLES - len(audio), np.float32), audio])


def log_mel(window: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The features of one 8 s window (see `fit_window`), shape (MELS, FRAMES).

    Raises:
        ValueError: `window` is not WINDOW_SAMPLES long.
    """
    if window.shape != (WINDOW_SAMPLES,):
        raise ValueError(f"expected {WINDOW_SAMPLES} samples, got shape {window.shape}")
    x = window.astype(np.float32)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), _N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP]
    power = np.abs(np.fft.rfft(frames * _hann(), axis=-1)) ** 2  # (frames, 201)
    mel = np.log10(np.maximum(power @ _mel_bank().T, 1e-10)).T[:, :-1]
    mel = np.maximum(mel, mel.max() - 8.0)
    out: npt.NDArray[np.float32] = ((mel + 4.0) / 4.0).astype(np.float32)
    return out
