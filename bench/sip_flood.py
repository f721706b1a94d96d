#!/usr/bin/env python3
"""Legitimate calls under an INVITE flood and password guessing.

For each flood rate (``--floods``), a fresh server (``python -m mediaserver run``)
takes, at the same time and for ``--duration`` seconds:

- **legitimate calls**: sipp's built-in ``uac_pcap`` from 127.0.0.2, a trunk
  (``trunks.carrier.allow``), at ``--legit-rate`` calls/s to the trunk's
  number; each call plays 8 s of G.711 audio (RTP) and hangs up;
- **the flood**: sipp instances from 127.0.0.3 sending INVITEs to a user we
  do not have (``bench/sipp/flood_invite.xml``: one INVITE per call, nothing
  awaited, no retransmissions), split so no instance goes past 1,000/s;
- **password guessing**: sipp from 127.0.0.4 answering each REGISTER
  challenge with a wrong password (``bench/sipp/guess_register.xml``).

Loopback is not trusted here (``sip.edge.trusted: []``), so the edge
defences apply to 127.0.0.3 and .4; ``--no-edge`` turns them off, for a
side-by-side run. Reported per rate: the legitimate calls
that succeeded, the flood rate sipp achieved, the server's CPU (cores) and
peak RSS, and what /metrics counted as blocked. One JSON object on stdout;
progress on stderr::

    .venv/bin/python bench/sip_flood.py --floods 0,2500,5000 --duration 15

Every subprocess is bounded by a timeout and stopped by its PID; everything
is on 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sip_cps import (  # noqa: E402
    cpu_model,
    git_commit,
    proc_cpu_seconds,
    proc_rss_mb,
    read_stats,
    sipp_epoch,
    stop_process,
)

from tests.peers import ServerProcess, free_port, free_rtp_range, which  # noqa: E402

NUMBER = "+15551230000"
LEGIT, FLOOD, GUESS = "127.0.0.2", "127.0.0.3", "127.0.0.4"
SCENARIOS = ROOT / "bench" / "sipp"
PCAPS = Path("/usr/share/sip-tester")


def log(message: str) -> None:
    print(f"[sip_flood] {message}", file=sys.stderr, flush=True)


def config(edge: bool) -> dict[str, Any]:
    rtp_min, rtp_max = free_rtp_range(2000)
    return {
        "sip": {
            "listen": [{"transport": "udp", "host": "127.0.0.1", "port": free_port()}],
            "max_calls": 1000,
            "auth": {"users": {"alice": {"password": "a-long-secret"}}},
            "edge": {"enabled": edge, "trusted": []},
        },
        "media": {"address": "127.0.0.1", "port_min": rtp_min, "port_max": rtp_max},
        "routes": {"hold": {"app": "hold", "duration": 0}},
        "trunks": {"carrier": {"allow": [f"{LEGIT}/32"], "numbers": {NUMBER: "hold"}}},
        "admin": {"port": 0},
        "shutdown": {"drain_timeout": 2},
        "logging": {"level": "info", "format": "console"},
    }


def sipp(
    binary: str, target: str, ip: str, rate: float, calls: int, stats: Path, extra: list[str]
) -> list[str]:
    return [
        binary,
        target,
        "-i",
        ip,
        "-p",
        str(free_port()),
        "-r",
        str(rate),
        "-m",
        str(calls),
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(stats),
        "-fd",
        "1",
        *extra,
    ]


def blocked(server: ServerProcess) -> dict[str, float]:
    port = int(re.findall(r"admin_listening .*port=(\d+)", server.log_text())[0])
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mediaserver_sip_blocked_total":
                out[sample.labels["reason"]] = sample.value
            elif sample.name == "mediaserver_sip_banned_sources":
                out["banned_now"] = sample.value
    return out


def last_row(path: Path) -> dict[str, str]:
    rows = read_stats(path)
    return rows[-1] if rows else {}


def step(args: argparse.Namespace, binary: str, flood_rate: int, folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True)
    (folder / "pcap").symlink_to(PCAPS)
    server = ServerProcess(config(not args.no_edge), folder / "server")
    server.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server.wait_ready(timeout=30)
        assert server.pid is not None
        target = server.target
        duration = args.duration
        cpu0, t0, rss_peak = proc_cpu_seconds(server.pid), time.monotonic(), 0.0
        legit_calls = int(args.legit_rate * duration)
        legit_stats = folder / "legit.csv"
        run = dict(cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(
            subprocess.Popen(
                sipp(
                    binary,
                    target,
                    LEGIT,
                    args.legit_rate,
                    legit_calls,
                    legit_stats,
                    [
                        "-sn",
                        "uac_pcap",
                        "-s",
                        NUMBER,
                        "-mi",
                        LEGIT,
                        "-timeout",
                        f"{duration + 30}s",
                    ],
                ),
                **run,  # type: ignore[arg-type]
            )
        )
        flood_stats = []
        instances = math.ceil(flood_rate / 1000) if flood_rate else 0
        for i in range(instances):
            rate = flood_rate / instances
            path = folder / f"flood{i}.csv"
            flood_stats.append(path)
            procs.append(
                subprocess.Popen(
                    sipp(
                        binary,
                        target,
                        FLOOD,
                        rate,
                        int(rate * duration),
                        path,
                        [
                            "-sf",
                            str(SCENARIOS / "flood_invite.xml"),
                            "-s",
                            "1000",
                            "-nr",
                            "-l",
                            "100000",
                            "-timeout",
                            f"{duration + 10}s",
                        ],
                    ),
                    **run,  # type: ignore[arg-type]
                )
            )
        guess_stats = folder / "guess.csv"
        procs.append(
            subprocess.Popen(
                sipp(
                    binary,
                    target,
                    GUESS,
                    args.guess_rate,
                    int(args.guess_rate * duration),
                    guess_stats,
                    [
                        "-sf",
                        str(SCENARIOS / "guess_register.xml"),
                        "-s",
                        "alice",
                        "-au",
                        "alice",
                        "-ap",
                        "wrong-guess",
                        "-timeout",
                        f"{duration + 10}s",
                    ],
                ),
                **run,  # type: ignore[arg-type]
            )
        )
        deadline = t0 + duration + 40
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            rss_peak = max(rss_peak, proc_rss_mb(server.pid) or 0.0)
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
        cpu = proc_cpu_seconds(server.pid) - cpu0
        legit = last_row(legit_stats)
        rows = [last_row(p) for p in flood_stats]
        flood_sent = sum(int(r.get("OutgoingCall(C)", "0") or 0) for r in rows)
        # The flood's own span (first instance started -> last one done): the
        # rate sipp achieved, not the one asked for.
        spans = [(sipp_epoch(r["StartTime"]), sipp_epoch(r["CurrentTime"])) for r in rows if r]
        flood_s = max(e for _, e in spans) - min(s for s, _ in spans) if spans else duration
        return {
            "flood_rate_target": flood_rate,
            "flood_invites_sent": flood_sent,
            "flood_seconds": round(flood_s, 2),
            "flood_rate_achieved": round(flood_sent / max(flood_s, 1e-9), 1),
            "legit_calls": legit_calls,
            "legit_successful": int(legit.get("SuccessfulCall(C)", "0") or 0),
            "legit_failed": int(legit.get("FailedCall(C)", "0") or 0),
            "guesses": int(last_row(guess_stats).get("OutgoingCall(C)", "0") or 0),
            "server_cores": round(cpu / elapsed, 3),
            "server_rss_peak_mb": rss_peak,
            "blocked": blocked(server),
        }
    finally:
        for proc in procs:
            stop_process(proc)
        server.stop(grace=5.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floods", default="0,2500,5000", help="INVITE flood rates per second")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per step")
    parser.add_argument("--legit-rate", type=float, default=20.0, help="legitimate calls/s")
    parser.add_argument("--guess-rate", type=float, default=20.0, help="REGISTER guesses/s")
    parser.add_argument(
        "--no-edge", action="store_true", help="sip.edge.enabled: false (for comparison)"
    )
    args = parser.parse_args()
    binary = which("sipp")
    if binary is None:
        log("sipp is not installed")
        return 2
    steps = []
    with tempfile.TemporaryDirectory(prefix="sip_flood_") as tmp:
        for rate in (int(r) for r in args.floods.split(",")):
            log(f"flood {rate}/s ...")
            result = step(args, binary, rate, Path(tmp) / f"flood{rate}")
            log(json.dumps(result))
            steps.append(result)
    report = {
        "bench": "sip_flood",
        "commit": git_commit(),
        "cpu": cpu_model(),
        "duration_s": args.duration,
        "legit_rate": args.legit_rate,
        "guess_rate": args.guess_rate,
        "edge": not args.no_edge,
        "steps": steps,
        "all_legit_calls_completed_up_to": max(
            (s["flood_rate_achieved"] for s in steps if s["legit_successful"] == s["legit_calls"]),
            default=None,
        ),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
