"""The `dtmf` app: answer, log every digit the caller sends, say nothing."""

from __future__ import annotations

import asyncio

import structlog

from mediaserver.apps.base import CallControl, answer_and_wait_media, hold_for
from mediaserver.config import Route

log = structlog.get_logger("mediaserver.apps.dtmf")


async def run_dtmf(call: CallControl, route: Route) -> None:
    """Answer and log digits until the caller hangs up (or `route.duration` s)."""
    if await answer_and_wait_media(call, route) is None:
        return

    async def collect() -> None:
        received = ""
        while True:
            digit = await call.digits.get()
            received += digit
            log.info("dtmf_collected", call_id=call.call_id, digit=digit, so_far=received)

    collector = asyncio.ensure_future(collect())
    try:
        await hold_for(call, route.duration)
    finally:
        collector.cancel()
