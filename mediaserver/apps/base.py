"""What a built-in app may do with its call, and helpers shared by the apps."""

from __future__ import annotations

import asyncio

from mediaserver.call.control import CallControl
from mediaserver.config import Route
from mediaserver.media.session import RtpSession

__all__ = ["CallControl", "answer_and_wait_media", "hold_for", "ring_and_answer"]


async def ring_and_answer(call: CallControl, route: Route) -> None:
    """Send 180 Ringing for `route.ring` seconds (if any), then answer."""
    if route.ring > 0:
        call.ring()
        await asyncio.sleep(route.ring)
    call.answer()


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
