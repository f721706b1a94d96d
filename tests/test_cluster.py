"""`mediaserver cluster`: the plan (pure), and the real thing: Kamailio (Debian's)
in front of two workers, calls from sipp through it spread over both, a worker
killed with SIGKILL is restarted while new calls go to the other, a SIGHUP
restarts the workers one at a time without a failed call, SIGTERM stops it all.
Loopback only; the cluster is stopped by its PID."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from mediaserver.cluster import plan_workers, render_kamailio, worker_config
from mediaserver.config import Config, ConfigError
from tests.peers import (
    LOCALHOST,
    SIPP_SCENARIOS,
    ServerProcess,
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
    assert ds_list == "1 sip:127.0.0.1:5061 0 0 duid=w1\n1 sip:127.0.0.1:5062 0 0 duid=w2\n"


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
    require_binary("kamailio")
    front = free_port_block(1, tcp=True)
    w0 = free_port_block(2, tcp=True)  # the workers' SIP ports: w0, w0 + 1
    admin = free_port_block(3, tcp=True)
    config = server_config(
        sip={"listen": [{"transport": "udp", "host": LOCALHOST, "port": front}]},
        admin={"port": admin},
        routes={"hold": {"duration": 0}},
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
        assert "workers=2" in cluster.wait_log("cluster_ready", timeout=60), cluster.log_tail()
        time.sleep(2.5)  # Kamailio's probes mark both workers active

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

        calls(20)
        first = calls_on(admin + 1), calls_on(admin + 2)
        assert sum(first) == 20 and min(first) >= 5, first  # both took calls

        log = cluster.log_text()
        pid = int(re.findall(r"component=worker0 .*pid=(\d+)", log)[0])
        os.kill(pid, signal.SIGKILL)
        calls(10)  # the other worker takes them (Kamailio fails over, then probes it out)
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
