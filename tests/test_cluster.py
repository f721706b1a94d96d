"""`mediaserver cluster`: the plan (pure), the merged admin view (two real admin
servers behind it), and the real thing: Kamailio (Debian's) in front of two
workers, calls from sipp through it spread over both and listed by the
cluster's one admin endpoint with their worker, a worker killed with SIGKILL
while it has calls up is restarted while new calls go to the other (0 failed)
and every event it logged as written is in the records, a SIGHUP restarts the
workers one at a time without a failed call, SIGTERM stops it all. Loopback
only; the cluster is stopped by its PID."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from mediaserver.cluster import plan_workers, render_kamailio, worker_config
from mediaserver.config import Config, ConfigError
from tests.peers import (
    LOCALHOST,
    SIPP_SCENARIOS,
    ServerProcess,
    caller_wav,
    deep_merge,
    free_port_block,
    require_binary,
    server_config,
    sip_options,
)

UAC_RR = SIPP_SCENARIOS / "uac_rr.xml"


def test_the_plan_splits_ports_and_renders_kamailio() -> None:
    config = Config.model_validate(
        {
            "sip": {"listen": [{"transport": "udp", "host": "192.0.2.10", "port": 5060}]},
            "media": {"port_min": 40000, "port_max": 40999},
            "admin": {"port": 8080},
        }
    )
    slots = plan_workers(config, 3)
    assert [s.sip_port for s in slots] == [5061, 5062, 5063]
    assert [(s.port_min, s.port_max) for s in slots] == [
        (40000, 40331), (40332, 40663), (40664, 40995)
    ]  # fmt: skip
    assert [s.admin_port for s in slots] == [8081, 8082, 8083]
    worker = worker_config(config, slots[1])
    assert [(x.transport, x.host, x.port) for x in worker.sip.listen] == [
        ("udp", "127.0.0.1", 5062), ("tcp", "127.0.0.1", 5062)
    ]  # fmt: skip
    assert worker.media.port_min == 40332 and worker.admin.port == 8082
    assert worker.routes == config.routes  # everything else is shared
    with pytest.raises(ConfigError, match="cannot be split"):
        plan_workers(config.model_copy(update={"media": config.media.model_copy(
            update={"port_max": 40005})}), 3)  # fmt: skip
    text, ds_list = render_kamailio(
        "listen=udp:@LISTEN_HOST@:@LISTEN_PORT@ @MPATH@ @RUNDIR@ @DS_LIST@ @PING_INTERVAL@",
        listen=("192.0.2.10", 5060),
        workers=[("127.0.0.1", 5061), ("127.0.0.1", 5062)],
        rundir=Path("/run/x"),
        mpath="/m",
    )
    assert text == "listen=udp:192.0.2.10:5060 /m /run/x /run/x/dispatcher.list 1"
    assert ds_list == (
        "1 sip:127.0.0.1:5061 0 0 duid=w1;maxload=0\n1 sip:127.0.0.1:5062 0 0 duid=w2;maxload=0\n"
    )


def start_cluster(tmp_path: Path, **overrides: Any) -> tuple[ServerProcess, int, int]:
    """A cluster of two workers, up and probed active: (it, worker 0's SIP port,
    the cluster's admin port; worker I's admin port is that + 1 + I)."""
    require_binary("kamailio")
    front = free_port_block(1, tcp=True)
    w0 = free_port_block(2, tcp=True)  # the workers' SIP ports: w0, w0 + 1
    admin = free_port_block(3, tcp=True)
    config = server_config(
        **deep_merge(
            {
                "sip": {"listen": [{"transport": "udp", "host": LOCALHOST, "port": front}]},
                "admin": {"port": admin},
            },
            overrides,
        )
    )
    cluster = ServerProcess(
        config,
        tmp_path / "cluster",
        command=[sys.executable, "-m", "mediaserver", "cluster", "--workers", "2",
                 "--worker-port", str(w0)],
    )  # fmt: skip
    cluster.start()
    try:
        cluster.wait_ready(timeout=30)  # Kamailio answers for itself
        assert "workers=2" in cluster.wait_log("cluster_ready", timeout=90), cluster.log_tail()
    except BaseException:
        cluster.send_signal(signal.SIGTERM)
        cluster.wait(timeout=40)
        raise
    time.sleep(2.5)  # Kamailio's probes mark both workers active
    return cluster, w0, admin


def test_a_phone_registered_through_the_cluster_is_reached_from_either_worker(  # type: ignore[no-untyped-def]
    baresip, tmp_path: Path
) -> None:
    """The operator's softphone (baresip, auto-answer) registers through Kamailio,
    which adds a Path and hands the REGISTER to one worker; both workers know the
    binding (shared through the records database). Two callers, one while the
    other is up, ask the agent for the weather desk; Kamailio gives one call to
    each worker (by call load), and each worker dials the operator along the
    Path and bridges: the phone takes both calls."""
    desk = {
        "app": "agent",
        "duration": 0,
        "agent": {
            "greeting": "Front desk.",
            "hints": [QUESTION],
            "tools": [
                {
                    "name": "weather_desk",
                    "description": "Transfer the caller to the weather desk.",
                    "function": "tests.agent.yaml_tools:to_operator",
                }
            ],
        },
    }
    cluster, _, admin = start_cluster(
        tmp_path,
        routes={"desk": desk},
        sip={"auth": {"users": {"operator": {"password": "op-pw"}}}},
        pipeline=PIPELINE,
    )
    front = cluster.target
    try:
        operator_wav = caller_wav("hello, this is the operator", tmp_path / "op", tail=40)
        account = f"<sip:operator@{front}>;auth_pass=op-pw;regint=600"
        with ThreadPoolExecutor(1) as pool:
            operator = pool.submit(
                baresip, None, seconds=45, source_wav=operator_wav, account=account,
                answermode="auto", quit_on_close=False,  # stays up for both calls
            )  # fmt: skip
            cluster.wait_log("sip_registered", timeout=20)
            # Both workers know where the phone is, whichever took the REGISTER.
            for worker_admin in (admin + 1, admin + 2):
                wait_until(lambda a=worker_admin: registered(a, "operator"), 5, "the binding")
            (binding,) = httpx.get(f"http://127.0.0.1:{admin}/registrations").json()["operator"]
            assert binding["contact"].startswith("sip:operator")
            # The second caller dials while the first is up: the dispatcher gives it
            # to the worker with fewer calls, the other one.
            with ThreadPoolExecutor(2) as callers:
                dialed = []
                for n in range(2):
                    source = caller_wav(QUESTION, tmp_path / f"caller{n}", tail=12)
                    dialed.append(
                        callers.submit(baresip, f"sip:desk@{front}", seconds=20, source_wav=source)
                    )
                    time.sleep(3)
                for call in dialed:
                    caller = call.result(timeout=60)
                    assert caller.established, caller.describe() + cluster.log_tail()
            callee = operator.result(timeout=90)
        assert callee.established, callee.describe()
        log = cluster.log_text()
        assert log.count("why='registered user'") == 2, cluster.log_tail()
        assert log.count("bridge_connected") >= 2, cluster.log_tail()
    finally:
        cluster.send_signal(signal.SIGTERM)
        assert cluster.wait(timeout=40) == 0, cluster.log_tail()
    with closing(sqlite3.connect(cluster.workdir / "records" / "calls.db")) as db:
        bridged = db.execute(
            "SELECT DISTINCT c.worker FROM calls c JOIN events e ON e.call = c.id"
            " WHERE c.route = 'desk' AND e.kind = 'sip' AND e.data LIKE '%bridge_connected%'"
        ).fetchall()
    assert sorted(w for (w,) in bridged) == ["w0", "w1"]  # each worker reached the phone


QUESTION = "what is the weather in paris"
#: Small decoder pool, quick end of turn, no fillers (as in test_records_kill).
PIPELINE: dict[str, Any] = {
    "stt": {"backend": "pocketsphinx", "pool_size": 1},
    "turn": {"end_of_speech_timeout": 0.5},
    "fillers": {"enabled": False},
}


def registered(admin_port: int, user: str) -> bool:
    """Whether a worker's registrar has a binding of `user` (its /registrations)."""
    try:
        found = httpx.get(f"http://127.0.0.1:{admin_port}/registrations", timeout=2).json()
    except httpx.HTTPError:
        return False
    return bool(found.get(user))


def calls_on(admin_port: int) -> int:
    """Calls a worker has taken so far (its /metrics)."""
    text = httpx.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).text
    found = re.search(r"^mediaserver_calls_total\S* ([0-9.e+]+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_cluster_of_two_spreads_calls_survives_a_killed_worker_and_rolls(  # type: ignore[no-untyped-def]
    sipp, tmp_path: Path
) -> None:
    cluster, w0, admin = start_cluster(tmp_path, routes={"hold": {"duration": 0}})
    try:

        def calls(n: int, hold_ms: int = 0) -> None:
            result = sipp(
                ["-sf", str(UAC_RR), "-s", "hold", "-m", str(n), "-r", "10",
                 "-d", str(hold_ms), cluster.target],
                timeout=90,
                stats=True,
            )  # fmt: skip
            assert result.ok and result.stat("FailedCall(C)") == 0, (
                result.describe() + cluster.log_tail()
            )

        # Calls of 1 s at 10 a second: ~10 up at once, each new one to the worker
        # with fewer calls, so both take about half.
        calls(20, hold_ms=1000)
        first = calls_on(admin + 1), calls_on(admin + 2)
        assert sum(first) == 20 and min(first) >= 7, first
        check_cluster_admin(admin, calls=20)

        # SIGKILL worker 0 while it has calls up: new calls go to the other, 0 failed.
        log = cluster.log_text()
        pid = int(re.findall(r"component=worker0 .*pid=(\d+)", log)[0])
        with ThreadPoolExecutor(max_workers=1) as pool:
            held = pool.submit(
                sipp,
                ["-sf", str(UAC_RR), "-s", "hold", "-m", "6", "-r", "20", "-d", "6000",
                 cluster.target],
                timeout=90,
                stats=True,
            )  # fmt: skip
            wait_until(lambda: live_on(admin + 1) > 0, 15, "calls up on worker 0")
            os.kill(pid, signal.SIGKILL)
            calls(10)  # the other worker takes them (Kamailio fails over, then probes it out)
            held.result()  # its calls on worker 0 died with it: not counted
        restarted = cluster.wait_log("worker_died", timeout=10)
        assert "worker=0" in restarted and "exit_code=-9" in restarted, cluster.log_tail()
        wait_until(lambda: sip_options(LOCALHOST, w0) is not None, 30, "worker 0 back")

        # A rolling restart while calls of 2 s come in for 6 s: not one fails.
        cluster.send_signal(signal.SIGHUP)
        calls(60, hold_ms=2000)
        assert "rolling_restart_done" in cluster.wait_log("rolling_restart_done", timeout=60)
        calls(10)
    finally:
        cluster.send_signal(signal.SIGTERM)
        code = cluster.wait(timeout=40)
    assert code == 0, cluster.log_tail()
    assert "cluster_stopped" in cluster.log_text()
    # Every event a worker logged as committed is in the shared records, the
    # killed worker's included.
    logged = set(RECORD_EVENT.findall(cluster.log_text()))
    with closing(sqlite3.connect(cluster.workdir / "records" / "calls.db")) as db:
        stored = {(call, str(seq)) for call, seq in db.execute("SELECT call, seq FROM events")}
        workers = {w for (w,) in db.execute("SELECT DISTINCT worker FROM calls")}
    assert len(logged) > 100 and logged <= stored, sorted(logged - stored)[:10]
    assert workers == {"w0", "w1"}


#: `record_event ... record=ID seq=N` (console renderer, keys sorted).
RECORD_EVENT = re.compile(r"\brecord_event\b.*?\brecord='?([^\s']+)'?.*?\bseq=(\d+)")


def live_on(admin_port: int) -> int:
    """Calls a worker has up right now (its /calls)."""
    try:
        body = httpx.get(f"http://127.0.0.1:{admin_port}/calls?limit=0", timeout=2).json()
    except httpx.HTTPError:
        return 0
    return len(body["live"])


def check_cluster_admin(port: int, calls: int) -> None:
    """The cluster's admin endpoint lists both workers' calls, each with its worker,
    serves any call's record, and federates the workers' metrics."""
    base = f"http://127.0.0.1:{port}"
    listing = httpx.get(f"{base}/calls?limit=100", timeout=10).json()
    assert len(listing["recent"]) == calls, listing
    assert {c["worker"] for c in listing["recent"]} == {"w0", "w1"}, listing
    for call in (listing["recent"][0], listing["recent"][-1]):
        detail = httpx.get(f"{base}/calls/{call['id']}", timeout=10).json()
        assert detail["worker"] == call["worker"] and detail["events"][-1]["kind"] == "final"
    assert httpx.get(f"{base}/calls/nope", timeout=10).status_code == 404
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    for worker in ("w0", "w1"):
        assert f'mediaserver_cluster_worker_up{{worker="{worker}"}} 1' in metrics, metrics
    taken = re.findall(r'^mediaserver_calls_total\{.*worker="(w\d)".*\} (\S+)$', metrics, re.M)
    assert sum(float(n) for _, n in taken) == calls and {w for w, _ in taken} == {"w0", "w1"}
    assert httpx.get(f"{base}/ready", timeout=10).status_code == 200
    page = httpx.get(f"{base}/", timeout=10)
    assert page.status_code == 200 and "Worker" in page.text
