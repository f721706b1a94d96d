#!/usr/bin/env python3
"""A campaign of N numbers against a sipp callee, with a restart in the middle.

One `mediaserver run` (127.0.0.1; route `remind`: the hold app, hanging up
after `--hold` seconds) is given a campaign of `--numbers` contacts (distinct
users at one sipp UAS on 127.0.0.4 that answers every call) with a cap of
`--concurrency` calls up and `--cps` new calls a second. When half the
contacts are done the server is stopped (`--restart term`: SIGTERM, it stops
dialing and drains its calls; `kill`: SIGKILL, calls up are cut) and a new
server on the same records database carries on. Everything is measured on
the callee's side, from sipp's message trace: calls per number (duplicates),
the most calls up at once, the most INVITEs in any one second; and from the
campaign's own counts: every contact done, with which outcome. One JSON
object on stdout. From the repository root::

    .venv/bin/python bench/campaign.py                       # 500 numbers, cap 50, ~1 min
    .venv/bin/python bench/campaign.py --restart kill
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from sip_cps import emit, git_commit  # noqa: E402

from tests.peers import (  # noqa: E402
    ServerProcess,
    free_port,
    free_rtp_range,
    max_overlap,
    parse_sipp_trace,
    run_sipp,
    server_config,
    sipp_uas_calls,
)

CALLEE = "127.0.0.4"


def log(message: str) -> None:
    print(f"[campaign] {message}", file=sys.stderr, flush=True)


def admin(server: ServerProcess) -> str:
    for line in server.log_text().splitlines():
        if "admin_listening" in line:
            record = json.loads(line)
            return f"http://127.0.0.1:{record['port']}"
    raise RuntimeError("the server logged no admin address")


def progress(server: ServerProcess, cid: str) -> dict[str, Any]:
    return httpx.get(f"{admin(server)}/campaigns/{cid}", timeout=10).json()


def wait_done(server: ServerProcess, cid: str, done: int, limit: float) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        state = progress(server, cid)
        if state["states"].get("done", 0) >= done or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--numbers", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--cps", type=float, default=25.0)
    parser.add_argument("--hold", type=float, default=2.0, help="seconds each call lasts")
    parser.add_argument("--restart", choices=("term", "kill", "none"), default="term")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="campaign_bench_"))
    rtp = free_rtp_range(4 * args.concurrency + 40)
    config = server_config(
        routes={"remind": {"app": "hold", "duration": args.hold}},
        records={"path": str(work / "calls.db")},
        media={"port_min": rtp[0], "port_max": rtp[1]},
        sip={"max_calls": 4 * args.concurrency},
        logging={"level": "info", "format": "json"},
        shutdown={"drain_timeout": args.hold + 5},
    )
    port = free_port()
    expected = args.numbers / min(args.cps, args.concurrency / args.hold) + 60
    sipp_args = [
        "-sf", str(REPO_ROOT / "tests" / "sipp" / "uas_answer.xml"),
        "-i", CALLEE, "-p", str(port), "-mi", CALLEE, "-m", str(args.numbers),
        "-timeout", f"{int(expected)}s", "-l", str(4 * args.concurrency),
    ]  # fmt: skip
    started = time.monotonic()
    servers: list[ServerProcess] = []
    report: dict[str, Any] = {}
    with ThreadPoolExecutor(1) as pool:
        sipp = pool.submit(run_sipp, sipp_args, expected + 30, work / "sipp")
        time.sleep(0.5)
        try:
            server = ServerProcess(config, work / "server0")
            servers.append(server)
            server.start()
            server.wait_ready(timeout=30)
            contacts = [f"sip:{100000 + i}@{CALLEE}:{port}" for i in range(args.numbers)]
            answer = httpx.post(
                f"{admin(server)}/campaigns",
                json={
                    "name": "bench",
                    "route": "remind",
                    "contacts": contacts,
                    "max_concurrent": args.concurrency,
                    "cps": args.cps,
                },
                timeout=60,
            )
            answer.raise_for_status()
            cid = answer.json()["id"]
            log(f"campaign {cid}: {args.numbers} numbers")
            if args.restart != "none":
                wait_done(server, cid, args.numbers // 2, expected)
                log(f"restart ({args.restart}) at {progress(server, cid)['states']}")
                sig = signal.SIGTERM if args.restart == "term" else signal.SIGKILL
                server.send_signal(sig)
                server.wait(timeout=args.hold + 30)
                server = ServerProcess(config, work / "server1")
                servers.append(server)
                server.start()
                server.wait_ready(timeout=30)
            state = wait_done(server, cid, args.numbers, expected)
            report["campaign"] = {k: state[k] for k in ("state", "states", "outcomes")}
        finally:
            for proc in servers:
                proc.stop()
        done = sipp.result(timeout=expected + 60)
    calls = sipp_uas_calls(parse_sipp_trace(done.messages_path.read_bytes()))  # type: ignore[union-attr]
    per_number = Counter(c.user for c in calls)
    starts = sorted(c.start for c in calls)
    busiest = max(
        (sum(1 for t in starts[i:] if t < s + 1.0) for i, s in enumerate(starts)), default=0
    )
    report.update(
        {
            "benchmark": "campaign",
            "command": shlex.join(["python", *sys.argv]),
            "commit": git_commit(),
            "numbers": args.numbers,
            "concurrency_cap": args.concurrency,
            "cps_cap": args.cps,
            "restart": args.restart,
            "callee_calls": len(calls),
            "numbers_dialed": len(per_number),
            "duplicate_dials": sum(n - 1 for n in per_number.values()),
            "max_calls_up_at_callee": max_overlap(calls, time.time()),
            "max_invites_in_one_second": busiest,
            "wall_s": round(time.monotonic() - started, 1),
        }
    )
    emit(report, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
