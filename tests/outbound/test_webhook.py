"""StatusWebhook against a local HTTP server: order, retries with backoff, a refusal
that is final, a receiver that never answers; the call never waits for any of it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from mediaserver.outbound import StatusWebhook


class Receiver:
    """An HTTP/1.1 receiver on 127.0.0.1 answering each POST with the next status
    of `script` (then 204); `hang` makes it never answer."""

    def __init__(self, script: list[int] | None = None, hang: bool = False) -> None:
        self.script = list(script or [])
        self.hang = hang
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        body = await reader.readexactly(length)
        self.attempts += 1
        if self.hang:
            await asyncio.sleep(30)
        status = self.script.pop(0) if self.script else 204
        if status == 204:
            self.bodies.append(json.loads(body))
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    async def close(self) -> None:
        self.server.close()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_reports_arrive_in_order_after_retries() -> None:
    async def main() -> None:
        receiver = Receiver([500, 503])
        url = await receiver.start()
        async with httpx.AsyncClient() as client:
            hook = StatusWebhook(url, "c1", client, first_delay=0.05)
            hook.report("ringing", sip_status=180)
            hook.report("answered")
            hook.report("ended", outcome="completed")
            await hook.aclose(10)
        await receiver.close()
        assert [b["status"] for b in receiver.bodies] == ["ringing", "answered", "ended"]
        assert [b["sequence"] for b in receiver.bodies] == [1, 2, 3]
        assert receiver.bodies[0]["sip_status"] == 180 and receiver.bodies[0]["id"] == "c1"
        assert receiver.attempts == 5 and hook.delivered == 3 and hook.failed == 0

    run(main())


def test_a_refusal_is_final_and_the_next_report_goes() -> None:
    async def main() -> None:
        receiver = Receiver([400])
        url = await receiver.start()
        async with httpx.AsyncClient() as client:
            hook = StatusWebhook(url, "c1", client, first_delay=0.05)
            hook.report("ringing")
            hook.report("ended")
            await hook.aclose(10)
        await receiver.close()
        assert [b["status"] for b in receiver.bodies] == ["ended"]
        assert receiver.attempts == 2 and hook.failed == 1

    run(main())


def test_nobody_listening_gives_up_after_the_last_try() -> None:
    async def main() -> None:
        receiver = Receiver()
        url = await receiver.start()
        await receiver.close()  # the port is closed now: connection refused
        await asyncio.sleep(0.05)
        async with httpx.AsyncClient() as client:
            hook = StatusWebhook(url, "c1", client, attempts=3, first_delay=0.01)
            loop = asyncio.get_running_loop()
            started = loop.time()
            hook.report("ended")
            assert loop.time() - started < 0.01  # report() never waits
            await hook.aclose(10)
        assert hook.failed == 1 and hook.delivered == 0

    run(main())


def test_a_receiver_that_hangs_is_cut_off_at_close() -> None:
    async def main() -> None:
        receiver = Receiver(hang=True)
        url = await receiver.start()
        async with httpx.AsyncClient() as client:
            hook = StatusWebhook(url, "c1", client)
            hook.report("ended")
            await asyncio.sleep(0.2)
            await hook.aclose(0.5)
        await receiver.close()
        assert hook.delivered == 0

    run(main())
