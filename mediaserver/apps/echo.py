"""The `echo` app: send back what the caller says, through the jitter buffer.

Operators use it to test a trunk: what comes back is what arrived, in order, with
gaps filled by silence, one 20 ms frame later than it was decoded.
"""

from __future__ import annotations

import numpy as np

from mediaserver.apps.base import CallControl, answer_and_wait_media, hold_for
from mediaserver.config import Route


async def run_echo(call: CallControl, route: Route) -> None:
    """Answer and echo until the caller hangs up (or `route.duration` s)."""
    media = await answer_and_wait_media(call, route)
    if media is None:
        return

    def echo(pcm: np.ndarray, media_time: float, gap: bool) -> None:
        media.play(pcm)

    media.on_audio = echo
    await hold_for(call, route.duration)
