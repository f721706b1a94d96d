"""The `playback` app: answer, play a WAV file, hang up."""

from __future__ import annotations

import asyncio

from mediaserver.apps.base import CallControl, answer_and_wait_media
from mediaserver.config import Route
from mediaserver.media.wavfile import load_wav


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
