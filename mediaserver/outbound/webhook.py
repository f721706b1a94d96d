"""Status webhooks of outbound calls: each report POSTed as JSON, in order, with
retries and backoff, in a task of its own so a slow or failing receiver never
holds up the call."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Final

import httpx
import structlog

__all__ = ["StatusWebhook"]

log = structlog.get_logger("mediaserver.outbound")

#: Tries per report, the first retry's delay (doubling) and its ceiling, seconds.
ATTEMPTS: Final = 5
FIRST_DELAY: Final = 0.5
MAX_DELAY: Final = 8.0
#: One POST's whole budget (connect, send, answer), seconds.
TIMEOUT: Final = 5.0
#: Reports waiting for a receiver that does not answer; more are dropped (logged).
MAX_QUEUED: Final = 32


class StatusWebhook:
    """One call's status reports to `url` (see the module docstring).

    Each report carries the call id, a sequence number (1, 2, ...; a receiver
    sees them in order and can drop a retry it already has) and the time it
    happened. A 2xx ends a report; a 4xx other than 408 and 429 is final (the
    receiver refuses it); anything else, a timeout or a connection error is
    tried again after 0.5, 1, 2, 4 s. After the last try it is logged
    (`webhook_failed`) and the next report goes.
    """

    def __init__(
        self,
        url: str,
        call: str,
        client: httpx.AsyncClient,
        *,
        attempts: int = ATTEMPTS,
        first_delay: float = FIRST_DELAY,
    ) -> None:
        self.url = url
        self.call = call
        self._client = client
        self._attempts = attempts
        self._first_delay = first_delay
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(MAX_QUEUED)
        self._task: asyncio.Task[None] | None = None
        self._seq = 0
        #: Reports delivered and given up on (for tests and the record).
        self.delivered = 0
        self.failed = 0

    def report(self, status: str, **data: Any) -> None:
        """Queue one report (`status`: ringing, answered, ended, ...)."""
        self._seq += 1
        payload = {"id": self.call, "status": status, "sequence": self._seq, "time": time.time()}
        payload.update(data)
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            self.failed += 1
            log.warning("webhook_dropped", call=self.call, url=self.url, status=status)
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._queue.empty():
            payload = self._queue.get_nowait()
            if await self._deliver(payload):
                self.delivered += 1
            else:
                self.failed += 1

    async def _deliver(self, payload: dict[str, Any]) -> bool:
        delay = self._first_delay
        error = ""
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._client.post(self.url, json=payload, timeout=TIMEOUT)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return True
                error = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    break  # the receiver refuses this report: trying again will not help
            if attempt < self._attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY)
        log.warning(
            "webhook_failed",
            call=self.call,
            url=self.url,
            status=payload["status"],
            attempts=attempt,
            error=error,
        )
        return False

    async def aclose(self, timeout: float = 10.0) -> None:
        """Give the reports still queued up to `timeout` seconds, then stop."""
        task = self._task
        if task is None or task.done():
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), timeout)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
