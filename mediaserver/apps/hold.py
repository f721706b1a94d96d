"""The `hold` app: ring, answer, hold the call (sending nothing), hang up."""

from __future__ import annotations

from mediaserver.apps.base import CallControl, hold_for, ring_and_answer
from mediaserver.config import Route


async def run_hold(call: CallControl, route: Route) -> None:
    """Ring for `route.ring` s, answer, hold for `route.duration` s (0: forever), hang up."""
    await ring_and_answer(call, route)
    await hold_for(call, route.duration)
