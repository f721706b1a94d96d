"""Network faults between callers and the server, on a link between two network
namespaces the test creates: a veth pair, the server in one namespace
(10.211.0.1), sipp and baresip in the other (10.211.0.2). The faults are what
``tc netem`` would do, made from what this kernel has (it lacks sch_netem):
random drop and TEE duplication in iptables, delay, jitter and reordering by an
NFQUEUE listener (tests/impair.py). Loss and duplication hit signalling and
media alike; delay, jitter and reordering only the media (sipp aborts a call
on a 100 Trying that overtakes its 200). Nothing touches the host's own interfaces;
the namespaces are deleted at the end, and every process is stopped by its PID.

- loss of 5, 10 and 20 %, reordering, duplication and 50 ms of jitter, in both
  directions: sipp's calls with RTP to the echo app all complete, the server
  keeps sending its 20 ms frames (the jitter buffer conceals what is missing),
  and each call's record shows what the network did (lost, duplicates,
  reordered or late packets, jitter);
- at 5 % loss a baresip caller asks the weather agent its question and gets
  the answer (the tool ran with the right city);
- the caller's link goes down mid-call: the call ends as a
  `network_partition` with its state captured in the record.

Namespaces need root, iproute2 and iptables (scripts/setup.sh); without them
the tests fail, unless MEDIASERVER_ALLOW_SKIP=1 lets them skip (as the peer
tests do).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from shutil import which
from typing import Any

import pytest

from tests import impair
from tests.impair import Faults
from tests.peers import (
    ALLOW_SKIP_ENV,
    REPO_ROOT,
    SIPP_SCENARIOS,
    WEATHER_ANSWER,
    WEATHER_QUESTION,
    ServerProcess,
    caller_wav,
    rtp_stream_wav,
    run_sipp,
    server_config,
    skips_allowed,
    weather_route,
)

SERVER_IP, CALLER_IP = "10.211.0.1", "10.211.0.2"
SIP_PORT = 5060
SCENARIO = SIPP_SCENARIOS / "uac_rr_rtp.xml"
CALLS, HOLD_MS = 6, 4000
#: sipp's and the server's SIP ports: delay and reordering are for the media.
SIP = (SIP_PORT, 5070)


@dataclass
class Link:
    """The two namespaces and the ends of the veth pair between them."""

    server_ns: str
    caller_ns: str
    server_dev: str
    caller_dev: str
    delayers: list[subprocess.Popen[str]] = field(default_factory=list)

    def impair(self, faults: Faults | None) -> None:
        """Apply `faults` to both directions (None: a clean link again)."""
        for proc in self.delayers:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.delayers.clear()
        ends = ((self.server_ns, self.server_dev, CALLER_IP),
                (self.caller_ns, self.caller_dev, SERVER_IP))  # fmt: skip
        for ns, dev, peer in ends:
            if faults is None:
                impair.clear(ns)
                continue
            impair.apply(ns, dev, peer, faults)
            if faults.delays:
                proc = subprocess.Popen(
                    ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.impair",
                     "--delay", str(faults.delay_ms), "--jitter", str(faults.jitter_ms),
                     "--reorder", str(faults.reorder), "--seconds", "300"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT,
                )  # fmt: skip
                self.delayers.append(proc)
                assert proc.stdout is not None
                line = proc.stdout.readline()
                assert "ready" in line, line + proc.stdout.read()

    def caller_link(self, up: bool) -> None:
        _run("ip", "-n", self.caller_ns, "link", "set", self.caller_dev, "up" if up else "down")


def _run(*cmd: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")


@pytest.fixture(scope="module")
def link() -> Iterator[Link]:
    """Two namespaces joined by a veth pair (deleted at the end)."""
    missing = [t for t in ("ip", "iptables-legacy", "sipp", "baresip") if which(t) is None]
    reason = None
    if os.geteuid() != 0:
        reason = "network namespaces need root"
    elif missing:
        reason = f"not installed: {', '.join(missing)} (run scripts/setup.sh)"
    tag = secrets.token_hex(3)
    made = Link(f"mssrv{tag}", f"mscli{tag}", f"vs{tag}", f"vc{tag}")
    try:
        if reason is None:
            _run("ip", "netns", "add", made.server_ns)
            _run("ip", "netns", "add", made.caller_ns)
            _run("ip", "link", "add", made.server_dev, "netns", made.server_ns, "type", "veth",
                 "peer", "name", made.caller_dev, "netns", made.caller_ns)  # fmt: skip
            for ns, dev, ip in ((made.server_ns, made.server_dev, SERVER_IP),
                                (made.caller_ns, made.caller_dev, CALLER_IP)):  # fmt: skip
                _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
                _run("ip", "-n", ns, "link", "set", dev, "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
    except RuntimeError as exc:
        reason = f"cannot make network namespaces here: {exc}"
    try:
        if reason is not None:
            if skips_allowed():
                pytest.skip(f"{reason}; skipped because {ALLOW_SKIP_ENV}=1")
            pytest.fail(f"{reason}; set {ALLOW_SKIP_ENV}=1 to skip instead", pytrace=False)
        yield made
    finally:
        made.impair(None)
        for ns in (made.server_ns, made.caller_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20, check=False)


@pytest.fixture
def server(link: Link, tmp_path: Path) -> Iterator[Any]:
    """Start a server in the server namespace (`make(**config)`); stopped by PID."""
    started: list[ServerProcess] = []

    def make(**overrides: Any) -> ServerProcess:
        config = server_config(**overrides)
        config["sip"]["listen"] = [{"transport": "udp", "host": SERVER_IP, "port": SIP_PORT}]
        config["media"]["address"] = SERVER_IP
        command = ["ip", "netns", "exec", link.server_ns, sys.executable, "-m", "mediaserver",
                   "run"]  # fmt: skip
        proc = ServerProcess(config, tmp_path / f"server{len(started)}", command=command)
        started.append(proc)
        proc.start()
        log = proc.wait_log("[info     ] ready", timeout=60)
        assert "[info     ] ready" in log, proc.log_tail()
        return proc

    yield make
    for proc in started:
        proc.stop()


def _sipp_wrapper(link: Link, folder: Path) -> str:
    """sipp run in the caller's namespace (run_sipp takes the binary's path)."""
    wrapper = folder / "sipp-in-netns"
    sipp = which("sipp")
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {link.caller_ns} {sipp} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _calls_with_rtp(link: Link, folder: Path, route: str, hold_ms: int = HOLD_MS) -> Any:
    """CALLS sipp calls from the caller's namespace, each streaming RTP for hold_ms."""
    folder.mkdir(parents=True, exist_ok=True)
    rtp_stream_wav(folder)
    args = ["-sf", str(SCENARIO), "-s", route, "-r", "5", "-m", str(CALLS), "-d", str(hold_ms),
            "-i", CALLER_IP, "-mi", CALLER_IP, "-p", "5070", "-mp", "6000",
            f"{SERVER_IP}:{SIP_PORT}"]  # fmt: skip
    return run_sipp(args, 90, folder, stats=True, sipp=_sipp_wrapper(link, folder))


def _records(server: ServerProcess) -> list[dict[str, Any]]:
    """Each call's final event (its media counters), from the records database."""
    server.wait_log("record_written", timeout=15, count=1)
    with closing(sqlite3.connect(server.workdir / "records" / "calls.db")) as db:
        rows = db.execute("SELECT data FROM events WHERE kind = 'final'").fetchall()
    return [json.loads(data) for (data,) in rows]


def _errors(server: ServerProcess, kind: str) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(server.workdir / "records" / "calls.db")) as db:
        rows = db.execute("SELECT data FROM events WHERE kind = 'error'").fetchall()
    return [e for e in (json.loads(d) for (d,) in rows) if e.get("kind") == kind]


#: The faults per condition (both directions), and the media counter that shows them.
CONDITIONS = {
    "loss-5": (Faults(loss=0.05), "lost"),
    "loss-10": (Faults(loss=0.10), "lost"),
    "loss-20": (Faults(loss=0.20), "lost"),
    "reorder": (Faults(delay_ms=50, reorder=0.3, undelayed_ports=SIP), "reordered+late"),
    "duplicate": (Faults(duplicate=0.10), "duplicates"),
    "jitter-50ms": (Faults(delay_ms=60, jitter_ms=50, undelayed_ports=SIP), "jitter_ms"),
}


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_calls_complete_and_records_show_the_network(  # type: ignore[no-untyped-def]
    link: Link, server, tmp_path: Path, condition: str
) -> None:
    faults, counter = CONDITIONS[condition]
    echo = server(routes={"echo": {"app": "echo", "duration": 0}}, media={"jitter_window": 0.1})
    link.impair(faults)
    try:
        result = _calls_with_rtp(link, tmp_path / "sipp", "echo")
    finally:
        link.impair(None)
    assert result.stat("SuccessfulCall(C)") == CALLS, result.describe() + echo.log_tail()
    echo.wait_log("record_written", timeout=20, count=CALLS)
    finals = _records(echo)
    assert len(finals) == CALLS, finals
    media = [f["media"] for f in finals]
    seconds = HOLD_MS / 1000
    for m in media:
        # The caller streamed for the whole call; whatever the network lost, the
        # server sent its frames on time: about one every 20 ms.
        assert m["rtp_in"] > 0.5 * seconds * 50, m
        assert m["rtp_out"] >= 0.8 * seconds * 50, m
    if counter == "jitter_ms":
        assert max(m["jitter_ms"] for m in media) >= 5.0, media
    else:
        seen = sum(m[name] for m in media for name in counter.split("+"))
        assert seen > 0, media


def test_an_agent_call_is_answered_at_5_percent_loss(  # type: ignore[no-untyped-def]
    link: Link, server, tmp_path: Path
) -> None:
    agent = server(
        routes={"weather": weather_route()},
        pipeline={"stt": {"backend": "pocketsphinx", "pool_size": 1},
                  "fillers": {"enabled": False}},
    )  # fmt: skip
    source = caller_wav(WEATHER_QUESTION, tmp_path, lead=4, tail=8)
    link.impair(Faults(loss=0.05))
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", link.caller_ns, sys.executable, "-m", "tests.netns_caller",
             f"sip:weather@{SERVER_IP}:{SIP_PORT}", str(tmp_path / "caller"),
             "--host", CALLER_IP, "--source", str(source), "--seconds", "20"],
            capture_output=True, text=True, timeout=90, cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )  # fmt: skip
    finally:
        link.impair(None)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["established"], outcome["describe"]
    log = agent.wait_log(WEATHER_ANSWER, timeout=15)
    assert WEATHER_ANSWER in log, agent.log_tail()
    (final,) = _records(agent)
    assert final["media"]["lost"] > 0, final["media"]  # the loss was there, and is recorded


def test_a_link_that_goes_down_mid_call_ends_as_a_network_partition(  # type: ignore[no-untyped-def]
    link: Link, server, tmp_path: Path
) -> None:
    echo = server(routes={"echo": {"app": "echo", "duration": 0}}, media={"inactivity_timeout": 2})
    with ThreadPoolExecutor(1) as pool:
        # The calls fail, of course: their link goes away mid-call.
        calls = pool.submit(_calls_with_rtp, link, tmp_path / "sipp", "echo", 12000)
        echo.wait_log("call_confirmed", timeout=20, count=CALLS)
        time.sleep(1.0)  # media flows on every call before the link goes
        link.caller_link(False)
        try:
            echo.wait_log("network_partition", timeout=20, count=CALLS)
        finally:
            link.caller_link(True)  # sipp's late BYEs now get their 481
        calls.result(timeout=120)
    partitions = _errors(echo, "network_partition")
    assert len(partitions) == CALLS, partitions
    assert all(p["stage"] == "rtp" and "state captured" in p["recovery"] for p in partitions)
    # A call ends when its BYE's transaction gives up (timer F, 32 s) at the latest.
    assert echo.wait_log("record_written", timeout=60, count=CALLS).count("record_written") >= CALLS
    finals = _records(echo)
    assert len(finals) == CALLS, finals
    for final in finals:
        # We hung up on the RTP timeout; our BYE found no one (the link was still
        # down), so the call ended when its transaction timed out.
        assert final["reason"] in ("rtp timeout", "timer F on BYE"), final
        assert final["media"]["rtp_in"] > 0, final  # media flowed until the link went
