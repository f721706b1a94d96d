"""The `playback` app: answer, play a WAV file, hang up."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np

from mediaserver.apps.base import CallControl, answer_and_wait_media
from mediaserver.codecs.resample import Resampler
from mediaserver.config import Route


def load_wav(path: Path, rate: int) -> np.ndarray:
    """Read a 16-bit WAV as mono int16 at `rate` Hz (channels averaged)."""
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


async def run_playback(call: CallControl, route: Route) -> None:
    """Play `route.file` once, then hang up (or earlier if `route.duration` says so)."""
    media = await answer_and_wait_media(call, route)
    if media is None or route.file is None:
        return
    media.play(load_wav(route.file, media.sample_rate), pad=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + route.duration if route.duration > 0 else None
    while media.queued and not call.ended.is_set():
        if deadline is not None and loop.time() >= deadline:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # let the last frames and the jitter of the far end drain
    call.hangup()
