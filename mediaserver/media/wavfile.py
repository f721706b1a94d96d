"""Reading and writing whole 16-bit PCM WAV files (prompts, recordings, test audio)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from mediaserver.codecs.resample import Resampler


def load_wav(path: Path | str, rate: int) -> np.ndarray:
    """Read a 16-bit WAV as mono int16 at `rate` Hz (channels averaged).

    Raises:
        OSError, EOFError, wave.Error: unreadable or not a WAV.
        ValueError: not 16-bit PCM.
    """
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        channels, source_rate = wav.getnchannels(), wav.getframerate()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if source_rate == rate:
        return data.astype(np.int16)
    resampler = Resampler(source_rate, rate)
    return np.concatenate([resampler.process(data), resampler.flush()]).astype(np.int16)


def write_wav(path: Path | str, pcm: np.ndarray, rate: int) -> None:
    """Write mono int16 `pcm` as a 16-bit WAV."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.asarray(pcm).astype("<i2").tobytes())
