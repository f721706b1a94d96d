"""Campaigns against sipp callees: caps measured on the callee side, retries by
outcome, the do-not-call list, quiet hours in the callee's time zone, and a
server killed mid-campaign that dials nobody twice after its restart."""

from __future__ import annotations

import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.outbound.test_dial_live import admin_url
from tests.peers import (
    REPO_ROOT,
    ServerProcess,
    SippResult,
    free_port,
    max_overlap,
    parse_sipp_trace,
    run_sipp,
    server_config,
    sipp_uas_calls,
)

pytestmark = pytest.mark.timeout(180)

ANSWER_HOST, BUSY_HOST = "127.0.0.4", "127.0.0.5"


def callee(
    pool: ThreadPoolExecutor, scenario: str, host: str, calls: int, folder: Path, timeout: float
) -> tuple[int, Future[SippResult]]:
    port = free_port()
    args = [
        "-sf", str(REPO_ROOT / "tests" / "sipp" / f"{scenario}.xml"),
        "-i", host, "-p", str(port), "-mi", host, "-m", str(calls),
        "-timeout", f"{int(timeout)}s",
    ]  # fmt: skip
    return port, pool.submit(run_sipp, args, timeout + 20, folder)


def campaign(server: ServerProcess, cid: str) -> dict[str, Any]:
    return httpx.get(f"{admin_url(server)}/campaigns/{cid}", timeout=5).json()


def wait_campaign(
    server: ServerProcess, cid: str, done: int, timeout: float = 90
) -> dict[str, Any]:
    """Until `done` contacts are done (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        state = campaign(server, cid)
        if state["states"].get("done", 0) >= done or time.monotonic() > deadline:
            return state
        time.sleep(0.3)


def test_caps_retries_dnc_and_quiet_hours(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = start_server(routes={"remind": {"app": "hold", "duration": 1.5}})
    base = admin_url(server)
    hour = datetime.now(UTC).hour
    # Quiet from UTC+6 h to UTC+8 h: a contact at UTC+7 is in it, the others not.
    quiet = {"start": f"{(hour + 6) % 24:02d}:00", "end": f"{(hour + 8) % 24:02d}:00"}
    with ThreadPoolExecutor(2) as pool:
        answer_port, answering = callee(pool, "uas_answer", ANSWER_HOST, 12, tmp_path / "a", 60)
        busy_port, busy = callee(pool, "uas_busy", BUSY_HOST, 4, tmp_path / "b", 60)
        time.sleep(0.5)
        contacts: list[Any] = [
            {"to": f"sip:{1000 + i}@{ANSWER_HOST}:{answer_port}", "variables": {"n": i}}
            for i in range(12)
        ]
        contacts += [f"sip:{2000 + i}@{BUSY_HOST}:{busy_port}" for i in range(2)]
        contacts.append(f"sip:+15550009999@{ANSWER_HOST}:{answer_port}")  # on the DNC list
        contacts.append({"to": f"sip:3000@{ANSWER_HOST}:{answer_port}", "tz": "Etc/GMT-7"})
        assert httpx.post(f"{base}/dnc", json={"numbers": ["+1 555 000 9999"]}).status_code == 201
        created = httpx.post(
            f"{base}/campaigns",
            json={
                "name": "reminders",
                "route": "remind",
                "contacts": contacts,
                "max_concurrent": 3,
                "cps": 8,
                "quiet_hours": quiet,
                "retries": {"busy": {"attempts": 1, "delay": 1}},
            },
            timeout=10,
        )
        assert created.status_code == 201, created.text
        cid = created.json()["id"]
        state = wait_campaign(server, cid, done=15)
        done_a, done_b = answering.result(timeout=80), busy.result(timeout=80)
    assert done_a.ok and done_b.ok, (done_a.describe(), done_b.describe())
    calls = sipp_uas_calls(parse_sipp_trace(done_a.messages_path.read_bytes()))  # type: ignore[union-attr]
    users = [c.user for c in calls]
    assert sorted(users) == [str(1000 + i) for i in range(12)]  # each once; not 3000, not DNC
    assert max_overlap(calls, time.time()) <= 3
    busy_calls = sipp_uas_calls(parse_sipp_trace(done_b.messages_path.read_bytes()))  # type: ignore[union-attr]
    assert sorted(c.user for c in busy_calls) == ["2000", "2000", "2001", "2001"]  # one retry
    assert state["outcomes"] == {"completed": 12, "busy": 2, "dnc": 1}, state
    (waiting,) = [c for c in state["contacts"] if c["state"] == "pending"]
    assert waiting["to"].startswith("sip:3000@")
    assert time.time() < waiting["next_at"] <= time.time() + 3600  # the top of the hour
    assert state["state"] == "running" and state["in_progress"] == 0
    metrics = httpx.get(f"{base}/metrics", timeout=5).text
    assert 'mediaserver_campaign_calls_total{outcome="completed"} 12.0' in metrics
    listed = httpx.get(f"{base}/campaigns", timeout=5).json()["campaigns"]
    assert [c["name"] for c in listed] == ["reminders"]


def test_a_restart_mid_campaign_dials_nobody_twice(tmp_path: Path) -> None:
    """The server is killed (SIGKILL) with calls up; a new one on the same
    records database carries the campaign on: the calls that were up are closed
    as interrupted, never redialed, and every other contact is called once."""
    config = server_config(
        routes={"remind": {"app": "hold", "duration": 1.0}},
        records={"path": str(tmp_path / "calls.db")},
    )
    total = 20
    with ThreadPoolExecutor(1) as pool:
        port, answering = callee(pool, "uas_answer", ANSWER_HOST, total, tmp_path / "a", 30)
        time.sleep(0.5)
        first = ServerProcess(config, tmp_path / "one")
        first.start()
        first.wait_ready(timeout=15)
        contacts = [f"sip:{5000 + i}@{ANSWER_HOST}:{port}" for i in range(total)]
        created = httpx.post(
            f"{admin_url(first)}/campaigns",
            json={"route": "remind", "contacts": contacts, "max_concurrent": 3, "cps": 10},
            timeout=10,
        ).json()
        cid = created["id"]
        wait_campaign(first, cid, done=6)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = ServerProcess(config, tmp_path / "two")
        second.start()
        second.wait_ready(timeout=15)
        try:
            state = wait_campaign(second, cid, done=total)
            log = second.log_text()
        finally:
            second.stop()
        done = answering.result(timeout=70)
    calls = sipp_uas_calls(parse_sipp_trace(done.messages_path.read_bytes()))  # type: ignore[union-attr]
    users = [c.user for c in calls]
    assert len(users) == len(set(users)), users  # nobody twice
    interrupted = state["outcomes"].get("interrupted", 0)
    assert state["states"] == {"done": total} and state["state"] == "completed", state
    assert 1 <= interrupted <= 3 and "campaigns_loaded" in log
    assert state["outcomes"].get("completed", 0) + interrupted == total
    # The interrupted were dialed once before the kill (or claimed just before it).
    assert total - interrupted <= len(users) <= total
