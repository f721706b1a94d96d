"""Outbound calls against real callees: a registered baresip that answers, sipp
callees that are busy, never answer, or answer after early media; the status
webhook (a local HTTP server that fails first); `mediaserver dial`; and the
requests that must dial nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.peers import (
    REPO_ROOT,
    ServerProcess,
    free_port,
    run_sipp,
    server_config,
    weather_route,
    write_wav,
)

pytestmark = pytest.mark.timeout(120)

CALLEE_HOST = "127.0.0.4"


def admin_url(server: ServerProcess) -> str:
    port = int(re.findall(r"admin_listening .*port=(\d+)", server.log_text())[0])
    return f"http://127.0.0.1:{port}"


def outbound_steps(server: ServerProcess, call: str, until: str = "ended") -> list[dict[str, Any]]:
    """The call record's outbound steps, waiting (bounded) for `until`."""
    deadline = time.monotonic() + 30
    steps: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        record = httpx.get(f"{admin_url(server)}/calls/{call}", timeout=5).json()
        steps = [e["data"] for e in record.get("events", []) if e["kind"] == "outbound"]
        if any(s["event"] == until for s in steps):
            return steps
        time.sleep(0.2)
    raise AssertionError(f"no {until!r} step: {steps}")


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers 500 to the first `fail` POSTs."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.posts: list[dict[str, Any]] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                if receiver.attempts <= receiver.fail:
                    self.send_response(500)
                else:
                    receiver.posts.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/status"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def statuses(self, until: str = "ended", timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not any(p["status"] == until for p in self.posts):
            time.sleep(0.1)
        return [p["status"] for p in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver(fail=2)
    yield hook
    hook.close()


def reminder_server(start_server, **config: Any) -> ServerProcess:  # type: ignore[no-untyped-def]
    route = weather_route()
    route["agent"]["greeting"] = "Hello, this is a reminder of your appointment tomorrow."
    return start_server(routes={"remind": route}, **config)


def test_a_registered_phone_is_called_and_the_agent_talks_once_it_answers(  # type: ignore[no-untyped-def]
    start_server, baresip, receiver: Receiver, tmp_path: Path
) -> None:
    server = reminder_server(start_server, sip={"auth": {"users": {"alice": {"password": "pw"}}}})
    account = f"<sip:alice@{server.target}>;auth_pass=pw;regint=600"
    silence = write_wav(tmp_path / "quiet.wav", np.zeros(8000 * 25, dtype=np.int16))
    with ThreadPoolExecutor(1) as pool:
        phone = pool.submit(
            baresip, None, seconds=30, source_wav=silence, account=account, answermode="auto"
        )
        server.wait_log("sip_registered", timeout=15)
        answer = httpx.post(
            f"{admin_url(server)}/calls",
            json={
                "to": "alice",
                "route": "remind",
                "caller_id": "+15550001111",
                "variables": {"patient": "Sam", "slot": 9},
                "webhook": receiver.url,
            },
            timeout=5,
        )
        assert answer.status_code == 201, answer.text
        call = answer.json()["id"]
        server.wait_log("agent_said", timeout=20)
        time.sleep(1.0)
        # The API ends it, as a dashboard's hang-up button would.
        assert httpx.delete(f"{admin_url(server)}/calls/{call}", timeout=5).status_code == 202
        result = phone.result(timeout=40)
    assert result.established, result.describe()
    steps = outbound_steps(server, call)
    assert steps[0]["event"] == "dialing"
    assert "answered" in [s["event"] for s in steps]
    assert steps[-1]["outcome"] == "completed" and steps[-1]["by"] == "local"
    record = httpx.get(f"{admin_url(server)}/calls/{call}", timeout=5).json()
    data = record["final_state"]["global_data"]
    assert data["patient"] == "Sam" and data["slot"] == 9
    assert data["call"]["direction"] == "outbound" and data["call"]["to"] == "alice"
    # The greeting went out after the answer, not while the phone rang.
    said = server.log_text().index("agent_said")
    assert server.log_text().index("call_confirmed") < said
    # The webhook failed twice (500) and was retried: every report arrived, in order.
    assert receiver.statuses()[-1] == "ended"
    statuses = receiver.statuses()
    assert statuses[0] in ("ringing", "answered") and statuses[-2:] == ["answered", "ended"]
    assert [p["sequence"] for p in receiver.posts] == list(range(1, len(receiver.posts) + 1))
    assert receiver.posts[-1]["outcome"] == "completed"
    metrics = httpx.get(f"{admin_url(server)}/metrics", timeout=5).text
    assert 'mediaserver_outbound_calls_total{outcome="completed"} 1.0' in metrics


def callee(scenario: str, tmp_path: Path, pool: ThreadPoolExecutor):  # type: ignore[no-untyped-def]
    port = free_port()
    args = [
        "-sf", str(REPO_ROOT / "tests" / "sipp" / f"{scenario}.xml"),
        "-i", CALLEE_HOST, "-p", str(port), "-mi", CALLEE_HOST, "-m", "1",
    ]  # fmt: skip
    future = pool.submit(run_sipp, args, 40, tmp_path / scenario)
    time.sleep(0.5)  # sipp binds its port
    return f"sip:callee@{CALLEE_HOST}:{port}", future


@pytest.mark.parametrize(
    ("scenario", "outcome", "status"),
    [("uas_busy", "busy", 486), ("uas_no_answer", "no-answer", 487)],
)
def test_a_callee_that_does_not_take_the_call_gets_its_outcome(  # type: ignore[no-untyped-def]
    start_server, tmp_path: Path, scenario: str, outcome: str, status: int
) -> None:
    server = reminder_server(start_server)
    with ThreadPoolExecutor(1) as pool:
        uri, sipp = callee(scenario, tmp_path, pool)
        answer = httpx.post(
            f"{admin_url(server)}/calls",
            json={"to": uri, "route": "remind", "ring_timeout": 2},
            timeout=5,
        )
        assert answer.status_code == 201, answer.text
        steps = outbound_steps(server, answer.json()["id"])
        done = sipp.result(timeout=40)
    assert done.ok, done.describe()
    assert [s["event"] for s in steps] == ["dialing", "ringing", "ended"], steps
    assert steps[-1]["outcome"] == outcome and steps[-1]["sip_status"] == status
    assert "agent_said" not in server.log_text()  # nobody answered: the agent never spoke


def test_mediaserver_dial_follows_a_call_answered_after_early_media(  # type: ignore[no-untyped-def]
    start_server, tmp_path: Path
) -> None:
    server = reminder_server(start_server)
    with ThreadPoolExecutor(1) as pool:
        uri, sipp = callee("uas_183_answer", tmp_path, pool)
        dial = subprocess.run(
            [sys.executable, "-m", "mediaserver", "dial", uri, "--agent", "remind",
             "--admin", admin_url(server), "--var", "patient=Sam", "--wait"],
            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
        )  # fmt: skip
        done = sipp.result(timeout=40)
    assert dial.returncode == 0, dial.stderr
    lines = [json.loads(line) for line in dial.stdout.splitlines()]
    assert lines[0]["state"] == "dialing" and lines[0]["route"] == "remind"
    events = [line.get("event") for line in lines[1:]]
    assert events == ["dialing", "ringing", "answered", "ended"], lines
    assert lines[-1]["outcome"] == "completed" and lines[-1]["by"] == "remote"
    assert lines[2]["sip_status"] == 183
    assert done.ok, done.describe()
    assert "agent_said" in server.log_text()


def test_a_retried_request_dials_once_and_bad_requests_dial_nothing(  # type: ignore[no-untyped-def]
    start_server, tmp_path: Path
) -> None:
    server = reminder_server(start_server, sip={"transfer_allow": [f"*@{CALLEE_HOST}*"]})
    base = admin_url(server)

    def post(body: Any, **headers: str) -> httpx.Response:
        return httpx.post(f"{base}/calls", json=body, headers=headers, timeout=5)

    refused = {
        "unknown route": ({"to": "sip:x@127.0.0.4", "route": "nope"}, 422, "route"),
        "malformed URI": ({"to": "sip:@", "route": "remind"}, 422, "to"),
        "not allowed": ({"to": "sip:bob@198.51.100.7", "route": "remind"}, 403, "not allowed"),
        "not registered": ({"to": "carol", "route": "remind"}, 404, "not registered"),
        "unknown field": ({"to": "carol", "route": "remind", "colour": 1}, 422, "colour"),
        "bad timeout": ({"to": "carol", "route": "remind", "ring_timeout": -1}, 422, "ring"),
    }
    for name, (body, status, why) in refused.items():
        response = post(body)
        assert response.status_code == status, (name, response.text)
        assert why in response.json()["error"], (name, response.text)
    bad_json = httpx.post(f"{base}/calls", content=b"{nope", timeout=5)
    assert bad_json.status_code == 400
    assert "outbound_dialing" not in server.log_text()  # none of them dialed anything
    with ThreadPoolExecutor(1) as pool:
        uri, sipp = callee("uas_183_answer", tmp_path, pool)
        first = post({"to": uri, "route": "remind"}, **{"Idempotency-Key": "rem-42"})
        again = post({"to": uri, "route": "remind"}, **{"Idempotency-Key": "rem-42"})
        other = post({"to": uri, "route": "remind", "ring_timeout": 5, "idempotency_key": "rem-42"})
        done = sipp.result(timeout=40)
    assert first.status_code == 201 and again.status_code == 200, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"] and again.json()["duplicate"] is True
    assert other.status_code == 409
    assert done.ok, done.describe()  # sipp -m 1: a second INVITE would have failed it
    assert server.log_text().count("outbound_dialing") == 1


def test_an_agent_program_places_its_own_call(agent_program, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """AgentBase.dial from a thread of the agent's program, once its server is up."""
    with ThreadPoolExecutor(1) as pool:
        uri, sipp = callee("uas_183_answer", tmp_path, pool)
        program = agent_program(REPO_ROOT / "tests" / "outbound" / "dialing_agent.py", CALLEE=uri)
        log = program.wait_log('"event": "dialed"', timeout=20)
        done = sipp.result(timeout=40)
    assert done.ok, done.describe()
    dialed = json.loads(next(x for x in log.splitlines() if '"event": "dialed"' in x))
    assert dialed["route"] == "remind" and dialed["state"] == "dialing"
    steps = outbound_steps(program, dialed["id"])
    assert steps[-1]["outcome"] == "completed", steps
    record = httpx.get(f"{admin_url(program)}/calls/{dialed['id']}", timeout=5).json()
    assert record["final_state"]["global_data"]["patient"] == "Sam"
    assert "Hello, this is your appointment reminder." in program.log_text()


def test_a_number_is_dialed_through_the_trunk_with_our_caller_id(  # type: ignore[no-untyped-def]
    start_server, tmp_path: Path
) -> None:
    """sipp plays the provider (tests/sipp/provider.xml): it takes our REGISTER,
    challenges the INVITE with 407, answers; the number goes out in E.164 with
    the caller ID the request asked for (From and P-Asserted-Identity)."""
    port = free_port()
    provider = REPO_ROOT / "tests" / "sipp" / "provider.xml"
    args = ["-sf", str(provider), "-i", "127.0.0.4", "-p", str(port), "-m", "2"]
    with ThreadPoolExecutor(1) as pool:
        sipp = pool.submit(run_sipp, args, 60, tmp_path / "provider")
        server = start_server(
            routes={"remind": {"app": "hold", "duration": 2}},
            trunks={
                "provider": {
                    "outbound": {
                        "proxy": f"127.0.0.4:{port}",
                        "domain": "provider.test",
                        "username": "acct",
                        "password": "s3cret",
                        "register": True,
                        "caller_id": "+15550001111",
                    }
                }
            },
        )
        server.wait_log("trunk_registered", timeout=15)
        answer = httpx.post(
            f"{admin_url(server)}/calls",
            json={"to": "+1 (555) 765-4321", "route": "remind", "caller_id": "+15550002222"},
            timeout=5,
        )
        assert answer.status_code == 201, answer.text
        steps = outbound_steps(server, answer.json()["id"])
        done = sipp.result(timeout=60)
    assert done.ok, done.describe()
    assert steps[0]["trunk"] == "provider" and steps[-1]["outcome"] == "completed", steps
    messages = done.messages_path.read_text() if done.messages_path else ""
    assert "INVITE sip:+15557654321@provider.test" in messages
    assert "P-Asserted-Identity: <sip:+15550002222@provider.test>" in messages
    assert "Proxy-Authorization: Digest" in messages


def test_an_idempotency_key_outlives_a_restart(tmp_path: Path) -> None:
    """The key is kept in the records database: the same request after a restart
    answers the first call, dials nothing."""
    config = server_config(
        routes={"remind": {"app": "hold", "duration": 1}},
        records={"path": str(tmp_path / "calls.db")},
    )
    body = {"to": "", "route": "remind", "idempotency_key": "reminder-7"}
    with ThreadPoolExecutor(1) as pool:
        uri, sipp = callee("uas_busy", tmp_path, pool)
        body["to"] = uri
        first = ServerProcess(config, tmp_path / "one")
        first.start()
        first.wait_ready(timeout=15)
        answer = httpx.post(f"{admin_url(first)}/calls", json=body, timeout=5)
        assert answer.status_code == 201, answer.text
        outbound_steps(first, answer.json()["id"])  # until it ended (busy)
        first.stop()
        second = ServerProcess(config, tmp_path / "two")
        second.start()
        second.wait_ready(timeout=15)
        try:
            again = httpx.post(f"{admin_url(second)}/calls", json=body, timeout=5)
            other = httpx.post(
                f"{admin_url(second)}/calls", json={**body, "ring_timeout": 9}, timeout=5
            )
            log = second.log_text()
        finally:
            second.stop()
        done = sipp.result(timeout=40)
    assert again.status_code == 200 and again.json()["id"] == answer.json()["id"], again.text
    assert again.json()["duplicate"] is True and other.status_code == 409
    assert "outbound_dialing" not in log
    assert done.ok, done.describe()
