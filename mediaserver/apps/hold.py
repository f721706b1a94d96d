"""The `hold` app: ring, answer, hold the call for a while, hang up.

It proves signalling end to end before the media plane and agents exist.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from mediaserver.config import Route


class CallControl(Protocol):
    """What an app may do with its call (the server implements it)."""

    ended: asyncio.Event

    def ring(self) -> None:
        """Send 180 Ringing."""

    def answer(self) -> None:
        """Answer with 200 OK."""

    def hangup(self) -> None:
        """End the call from our side."""


async def run_hold(call: CallControl, route: Route) -> None:
    """Ring for `route.ring` s, answer, hold for `route.duration` s (0: forever), hang up."""
    if route.ring > 0:
        call.ring()
        await asyncio.sleep(route.ring)
    call.answer()
    if route.duration > 0:
        try:
            await asyncio.wait_for(call.ended.wait(), timeout=route.duration)
        except TimeoutError:
            call.hangup()
    else:
        await call.ended.wait()
