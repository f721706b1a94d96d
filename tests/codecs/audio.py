"""Test signals and measurements shared by the codec tests."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]

SENTENCE = "Thank you for calling. Please say the name of the person you want to reach."


def tone(freq: float, rate: int, seconds: float, amplitude: float = 8000.0) -> Pcm:
    """A sine of `freq` Hz as int16."""
    t = np.arange(round(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def speech_like(rate: int, seconds: float, seed: int = 0) -> Pcm:
    """A synthetic voice: harmonics of a gliding pitch under formant peaks, syllable bursts, noise.

    Used when espeak-ng is not installed; it has speech's spectral tilt, pitch
    movement and on/off envelope, which is what waveform codecs care about.
    """
    rng = np.random.default_rng(seed)
    n = round(rate * seconds)
    t = np.arange(n) / rate
    f0 = 120 + 25 * np.sin(2 * np.pi * 0.7 * t) + 8 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    signal = np.zeros(n)
    for k in range(1, int(min(rate / 2, 7000) // 120)):
        freq = k * f0.mean()
        # Two formants near 600 Hz and 1800 Hz, over a -6 dB/octave tilt.
        envelope = (
            np.exp(-(((freq - 600) / 300) ** 2))
            + 0.5 * np.exp(-(((freq - 1800) / 400) ** 2))
            + 0.05
        ) / k**0.5
        signal += envelope * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 3.5 * t) ** 2
    signal = signal * syllables + rng.normal(0, 0.02, n)
    scaled: npt.NDArray[np.float64] = np.round(signal / np.abs(signal).max() * 12000)
    return scaled.astype(np.int16)


def espeak_speech(workdir: Path) -> tuple[Pcm, int] | None:
    """Synthesise `SENTENCE` with espeak-ng, or None if the binary is missing."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        return None
    path = workdir / "speech.wav"
    subprocess.run([binary, "-w", str(path), SENTENCE], check=True, timeout=30)
    with wave.open(str(path)) as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 1
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
    return pcm, rate


def whole_frames(pcm: Pcm, frame: int) -> Pcm:
    """Trim `pcm` to a whole number of `frame`-sample frames."""
    return pcm[: len(pcm) // frame * frame]


def frames_of(pcm: Pcm, frame: int) -> list[Pcm]:
    """Split `pcm` into consecutive `frame`-sample frames (dropping a partial tail)."""
    return [pcm[i : i + frame] for i in range(0, len(pcm) - frame + 1, frame)]


def find_delay(reference: npt.ArrayLike, output: npt.ArrayLike, max_lag: int) -> int:
    """The lag (0..max_lag) at which `output` best matches `reference`, by cross-correlation."""
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(output, dtype=np.float64)
    n = min(len(ref), len(out) - max_lag)
    scores = [float(np.dot(ref[:n], out[lag : lag + n])) for lag in range(max_lag + 1)]
    return int(np.argmax(scores))


def aligned(
    reference: npt.ArrayLike, output: npt.ArrayLike, delay: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """`reference` and `output` shifted by `delay` and cut to a common length, as float."""
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(output, dtype=np.float64)[delay:]
    n = min(len(ref), len(out))
    return ref[:n], out[:n]


def snr_db(reference: npt.ArrayLike, output: npt.ArrayLike) -> float:
    """Signal-to-noise ratio of `output` against `reference` (same length), in dB."""
    ref = np.asarray(reference, dtype=np.float64)
    err = np.asarray(output, dtype=np.float64) - ref
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum(err**2), 1e-12)))


def rms_db(pcm: npt.ArrayLike) -> float:
    """RMS level in dB (relative to 1 LSB)."""
    values = np.asarray(pcm, dtype=np.float64)
    return float(20 * np.log10(np.sqrt(np.mean(values**2)) + 1e-12))
