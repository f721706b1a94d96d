"""What a built-in app may do with its call, and helpers shared by the apps."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mediaserver.call.control import CallControl
from mediaserver.config import Route
from mediaserver.media.session import RtpSession
from mediaserver.media.wavfile import load_wav

__all__ = ["CallControl", "announce", "answer_and_wait_media", "hold_for", "ring_and_answer"]


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
    pcm = load_wav(path, media.sample_rate)
    media.play(pcm, pad=True)
    # Bounded by its length: a caller who holds the early session (UPDATE
    # sendonly) stops our sending, and the answer must not wait for ever.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + len(pcm) / media.sample_rate + 1.0
    while media.queued and not call.ended.is_set() and loop.time() < deadline:
        await asyncio.sleep(0.02)
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
