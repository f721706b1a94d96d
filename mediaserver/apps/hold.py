"""The `hold` app: ring, answer, hold the call (sending nothing), hang up."""

from __future__ import annotations

import asyncio

from mediaserver.apps.base import CallControl, hold_for
from mediaserver.config import Route


async def run_hold(call: CallControl, route: Route) -> None:
    """Ring for `route.ring` s, answer, hold for `route.duration` s (0: forever), hang up."""
    if route.ring > 0:
        call.ring()
        await asyncio.sleep(route.ring)
    call.answer()
    await hold_for(call, route.duration)
