"""`SipServer` in the test's own event loop, called by real sipp: the switchboard's
event dispatch, its call handles, the records it closes with the actor's summary,
and a malformed datagram costing nothing (tests/test_server.py runs the process)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from mediaserver.config import Config
from mediaserver.server import SipServer
from tests.peers import LOCALHOST, SIPP_SCENARIOS, run_sipp, server_config, sip_options

pytestmark = pytest.mark.timeout(120)


def config(**routes: Any) -> Config:
    raw = server_config(routes=routes, records={"path": None}, admin={"enabled": False})
    return Config.model_validate(raw)


async def finished(server: SipServer, within: float = 15.0) -> dict[str, Any]:
    """The detail of the first call to finish."""
    async with asyncio.timeout(within):
        while not server.store.recent_records:
            await asyncio.sleep(0.05)
    (record,) = server.store.recent_records.values()
    return record.detail()


def run(body: Any) -> None:
    async def main() -> None:
        async with asyncio.timeout(90):
            await body()

    asyncio.run(main())


def test_a_call_through_the_switchboard_is_recorded_and_released(tmp_path: Path) -> None:
    async def body() -> None:
        server = SipServer(config(hold={"app": "hold", "duration": 1}))
        await server.start()
        try:
            host, port = server.bound["udp"]
            scenario = str(SIPP_SCENARIOS / "uac_server_bye.xml")
            args = ["-sf", scenario, "-s", "hold", f"{host}:{port}"]
            result = await asyncio.to_thread(run_sipp, args, 20, tmp_path)
            assert result.ok, result.describe()
            detail = await finished(server)
            assert detail["route"] == "hold" and detail["ended_by"] == "local"
            events = [e["kind"] for e in detail["events"]]
            assert events[0] == "sip" and events[-1] == "final"
            assert server.apps == {} and server.calls_total == 1
            assert server.ua.active_calls == 0
        finally:
            await server.close()

    run(body)


def test_an_agent_call_ends_with_the_actors_summary(tmp_path: Path) -> None:
    agent = {
        "app": "agent",
        "agent": {"greeting": "Hello there.", "prompt": "You answer the phone."},
    }

    async def body() -> None:
        server = SipServer(config(desk=agent))
        await server.start()
        try:
            host, port = server.bound["udp"]
            # INVITE, ACK, 3 s of the greeting, then the caller hangs up.
            scenario = str(SIPP_SCENARIOS / "uac_rr.xml")
            args = ["-sf", scenario, "-s", "desk", "-d", "3000", f"{host}:{port}"]
            result = await asyncio.to_thread(run_sipp, args, 30, tmp_path)
            assert result.ok, result.describe()
            detail = await finished(server)
            final = detail["final_state"]
            assert final["agent_end_reason"] == "remote"
            assert final["state"] == "ended"
            assert final["turns"] == 0 and final["digits"] == ""
            kinds = [e["kind"] for e in detail["events"]]
            assert "agent_said" in kinds or "state" in kinds
            assert server.apps == {}
        finally:
            await server.close()

    run(body)


def test_garbage_and_options_are_answered_without_a_call(tmp_path: Path) -> None:
    async def body() -> None:
        server = SipServer(config())
        await server.start()
        try:
            host, port = server.bound["udp"]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"\x00\x01 not SIP at all\r\n\r\n", (LOCALHOST, port))
            reply = await asyncio.to_thread(sip_options, host, port, 2.0)
            assert reply is not None and reply.status == 200
            assert server.calls_total == 0 and server.apps == {}
        finally:
            await server.close()

    run(body)
