"""The `record` app: answer and record what the caller says to a WAV file."""

from __future__ import annotations

import wave

import numpy as np
import structlog

from mediaserver.apps.base import CallControl, answer_and_wait_media, hold_for
from mediaserver.config import Route

log = structlog.get_logger("mediaserver.apps.record")


async def run_record(call: CallControl, route: Route) -> None:
    """Record the caller (mono, the codec's rate) until hangup or `route.duration` s."""
    media = await answer_and_wait_media(call, route)
    if media is None:
        return
    route.directory.mkdir(parents=True, exist_ok=True)
    path = route.directory / f"{call.call_id.replace('/', '_')}.wav"
    wav = wave.open(str(path), "wb")  # noqa: SIM115 - closed below
    wav.setnchannels(1)
    wav.setsampwidth(2)
    wav.setframerate(media.sample_rate)

    def write(pcm: np.ndarray, media_time: float, gap: bool) -> None:
        wav.writeframes(pcm.astype("<i2").tobytes())

    media.on_audio = write
    try:
        await hold_for(call, route.duration)
    finally:
        media.on_audio = None
        wav.close()
        log.info("recorded", call_id=call.call_id, path=str(path))
