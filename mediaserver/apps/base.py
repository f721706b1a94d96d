"""What a built-in app may do with its call, and helpers shared by the apps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from mediaserver.call.control import CallControl
from mediaserver.config import Route
from mediaserver.media.session import RtpSession
from mediaserver.media.wavfile import load_wav

__all__ = [
    "CallControl",
    "announce",
    "answer_and_wait_media",
    "hold_for",
    "play_out",
    "ring_and_answer",
]


async def ring_and_answer(call: CallControl, route: Route) -> None:
    """Send 180 Ringing for `route.ring` seconds (if any), play `route.announce`
    as early media (if any), then answer (nothing for a call we placed: the
    callee has answered it)."""
    if call.outbound:
        return
    if route.ring > 0:
        call.ring()
        await asyncio.sleep(route.ring)
    if route.announce is not None:
        await announce(call, route.announce)
    if not call.ended.is_set():
        call.answer()


async def announce(call: CallControl, path: Path) -> None:
    """Play `path` before the answer, as early media (183 with SDP); nothing
    when the call cannot have early media."""
    media = call.media
    if media is None or not call.progress():
        return
    # A caller who holds the early session (UPDATE sendonly) stops our
    # sending: play_out's bound keeps the answer from waiting for ever.
    await play_out(media, load_wav(path, media.sample_rate), slack=1.0, ended=call.ended)
    media.flush()


async def answer_and_wait_media(call: CallControl, route: Route) -> RtpSession | None:
    """Ring if the route says so, answer, and wait for the RTP session.

    Returns None when the call ended first (e.g. the caller hung up).
    """
    await ring_and_answer(call, route)
    ready = asyncio.ensure_future(call.media_ready.wait())
    ended = asyncio.ensure_future(call.ended.wait())
    await asyncio.wait({ready, ended}, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    ended.cancel()
    return call.media if not call.ended.is_set() else None


async def hold_for(call: CallControl, seconds: float) -> None:
    """Wait until the caller hangs up, or hang up after `seconds` (0: no limit)."""
    if seconds <= 0:
        await call.ended.wait()
        return
    try:
        await asyncio.wait_for(call.ended.wait(), timeout=seconds)
    except TimeoutError:
        call.hangup()


async def play_out(
    media: RtpSession, pcm: np.ndarray, slack: float = 2.0, ended: asyncio.Event | None = None
) -> None:
    """Send `pcm` and wait until it has left, or the call `ended`. Bounded by
    its length plus `slack`: a peer that holds the session (sendonly) stops our
    sending, and nothing may wait for ever on it."""
    media.play(pcm, pad=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + len(pcm) / media.sample_rate + slack
    while media.queued and loop.time() < deadline and not (ended and ended.is_set()):
        await asyncio.sleep(0.02)
