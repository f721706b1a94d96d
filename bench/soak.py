#!/usr/bin/env python3
"""Soak: a cluster under steady call churn with media for a long time.

Starts ``mediaserver cluster --workers N`` (Kamailio in front, 127.0.0.1 only)
with an ``echo`` route, then sipp (``bench/sipp/uac_rr_rtp.xml``) places
``--rate`` calls a second through Kamailio, each streaming PCMU RTP for
``--hold`` seconds (the workers echo it), for ``--duration`` seconds. Meanwhile:

* every ``--sample`` seconds: each worker's RSS, open file descriptors and
  threads (/proc), Kamailio's RSS, the calls up;
* every ``--pacing-every`` seconds (and in the last window): a ``--window``
  second capture of the workers' outbound RTP on loopback (tshark, kernel
  timestamps), from which the pacing of each stream, |inter-arrival gap -
  20 ms|, is pooled into p50/p99: the first and the last window side by side;
* at the end: sipp's own counts (calls placed, successful, failed, retransmits)
  and each worker's RSS and fds at the start (after the first minute's ramp),
  peak and end.

One JSON object goes to stdout, progress to stderr. From the repository root::

    .venv/bin/python bench/soak.py --duration 1800 --rate 50 --hold 4

Every process is started here, bounded by timeouts and stopped by its PID.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from media_loadgen import proc_tree  # noqa: E402
from sip_cps import (  # noqa: E402
    cluster_command,
    cpu_model,
    git_commit,
    proc_rss_mb,
    stop_process,
    wait_workers,
)

from tests.peers import (  # noqa: E402
    LOCALHOST,
    ServerProcess,
    free_port_block,
    rtp_stream_wav,
)

SCENARIO = REPO_ROOT / "tests" / "sipp" / "uac_rr_rtp.xml"
FRAME_MS = 20.0


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cluster_pids(supervisor: int) -> dict[str, int]:
    """The supervisor's children by role: workerI (from `--worker I/N`), kamailio."""
    out: dict[str, int] = {}
    for pid in proc_tree(supervisor)[1:]:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--worker" in argv:
            out[f"worker{argv[argv.index(b'--worker') + 1].split(b'/')[0].decode()}"] = pid
        elif Path(argv[0].decode()).name == "kamailio" and "kamailio" not in out:
            out["kamailio"] = pid  # the main process (its children share its memory)
    return out


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def threads(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


def capture_pacing(
    ports: tuple[int, int], seconds: float, folder: Path, name: str
) -> dict[str, Any]:
    """Capture the workers' outbound RTP (source ports in `ports`) for `seconds`
    and pool each stream's |gap - 20 ms| (kernel timestamps)."""
    pcap = folder / f"{name}.pcap"
    capture = subprocess.run(
        ["tshark", "-i", "lo", "-f", f"udp and src portrange {ports[0]}-{ports[1]}",
         "-a", f"duration:{seconds:g}", "-w", str(pcap), "-q"],
        capture_output=True, timeout=seconds + 60, check=False,
    )  # fmt: skip
    if capture.returncode != 0 or not pcap.exists():
        return {"error": capture.stderr.decode(errors="replace")[-300:]}
    fields = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.time_epoch",
         "-e", "udp.srcport", "-e", "udp.dstport"],
        capture_output=True, text=True, timeout=300, check=False,
    ).stdout  # fmt: skip
    pcap.unlink(missing_ok=True)
    streams: dict[tuple[str, str], list[float]] = {}
    for line in fields.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and not int(parts[1]) % 2:  # RTP (even ports), not RTCP
            streams.setdefault((parts[1], parts[2]), []).append(float(parts[0]))
    deviations: list[float] = []
    for times in streams.values():
        deviations += [abs((b - a) * 1000 - FRAME_MS) for a, b in itertools.pairwise(times)]
    if not deviations:
        return {"streams": 0}
    deviations.sort()
    pick = lambda q: round(deviations[min(len(deviations) - 1, int(q * len(deviations)))], 3)  # noqa: E731
    return {
        "streams": len(streams),
        "packets": sum(map(len, streams.values())),
        "pacing_p50_ms": pick(0.50),
        "pacing_p99_ms": pick(0.99),
        "pacing_max_ms": round(deviations[-1], 3),
    }


class Sampler(threading.Thread):
    """RSS, fds and threads of each worker and Kamailio every `every` seconds."""

    def __init__(self, pids: dict[str, int], every: float, started: float) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.every = every
        self.started = started
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            row: dict[str, Any] = {"t": round(time.monotonic() - self.started, 1)}
            for name, pid in self.pids.items():
                row[name] = {"rss_mb": proc_rss_mb(pid), "fds": open_fds(pid),
                             "threads": threads(pid)}  # fmt: skip
            self.samples.append(row)


def summarise_samples(samples: list[dict[str, Any]], after: float) -> dict[str, Any]:
    """Per process: RSS and fds at the start (first sample after `after` s),
    peak and end."""
    steady = [s for s in samples if s["t"] >= after] or samples
    out: dict[str, Any] = {}
    if not steady:
        return out
    for name in steady[0]:
        if name == "t":
            continue
        rss = [s[name]["rss_mb"] for s in steady if s[name]["rss_mb"] is not None]
        fds = [s[name]["fds"] for s in steady if s[name]["fds"] is not None]
        if not rss:
            continue
        out[name] = {
            "rss_mb_start": rss[0],
            "rss_mb_peak": max(rss),
            "rss_mb_end": rss[-1],
            "rss_mb_end_minus_start": round(rss[-1] - rss[0], 1),
            "fds_start": fds[0] if fds else None,
            "fds_peak": max(fds) if fds else None,
            "fds_end": fds[-1] if fds else None,
        }
    return out


def sipp_totals(stats_csv: Path) -> dict[str, Any]:
    """The last row of sipp's -trace_stat file: its cumulative counters."""
    try:
        lines = [x for x in stats_csv.read_text().splitlines() if x.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    head, last = lines[0].split(";"), lines[-1].split(";")
    row = dict(zip(head, last, strict=False))
    keys = {
        "calls_placed": "OutgoingCall(C)",
        "successful": "SuccessfulCall(C)",
        "failed": "FailedCall(C)",
        "retransmissions": "Retransmissions(C)",
        "unexpected_messages": "FailedUnexpectedMessage(C)",
        "timeouts": "FailedCallTimeout(C)",
    }
    return {k: int(row[v]) for k, v in keys.items() if row.get(v, "").strip().isdigit()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds of churn")
    parser.add_argument("--rate", type=float, default=50.0, help="new calls per second")
    parser.add_argument("--hold", type=float, default=4.0, help="seconds each call lasts")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--window", type=float, default=10.0, help="pacing capture seconds")
    parser.add_argument("--pacing-every", type=float, default=300.0, help="seconds")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args(argv)
    for tool in ("sipp", "tshark", "sox", "kamailio"):
        if shutil.which(tool) is None:
            print(f"soak: {tool} is not installed (scripts/setup.sh)", file=sys.stderr)
            return 2

    folder = Path(tempfile.mkdtemp(prefix="mediaserver-soak-"))
    rtp_stream_wav(folder)
    admin = free_port_block(args.workers + 1, tcp=True)
    rtp = (20000, 29999)
    concurrent = round(args.rate * args.hold)
    config = {
        "sip": {"listen": [{"transport": "udp", "host": LOCALHOST, "port": free_port_block(1)}],
                "max_calls": max(500, 2 * concurrent)},
        "media": {"port_min": rtp[0], "port_max": rtp[1]},
        "routes": {"echo": {"app": "echo", "duration": 0}},
        "admin": {"port": admin},
        "records": {"path": str(folder / "records" / "calls.db")},
        "shutdown": {"drain_timeout": 10},
        "logging": {"level": "warning"},
    }  # fmt: skip
    command, workers = cluster_command(sys.executable, args.workers)
    cluster = ServerProcess(config, folder / "cluster", command=command)
    out: dict[str, Any] = {
        "benchmark": "soak",
        "command": " ".join(["python", "bench/soak.py", *(argv or sys.argv[1:])]),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "commit": git_commit(),
        "rate": args.rate,
        "hold_s": args.hold,
        "concurrent_calls": concurrent,
        "workers": args.workers,
        "duration_s": args.duration,
    }
    sipp: subprocess.Popen[bytes] | None = None
    sampler: Sampler | None = None
    try:
        cluster.start()
        cluster.wait_ready(timeout=30)
        wait_workers(cluster, workers, timeout=90)
        pids = cluster_pids(cluster.pid)
        log(f"cluster up: {pids}")
        calls = round(args.rate * args.duration)
        started = time.monotonic()
        sampler = Sampler(pids, args.sample, started)
        sampler.start()
        sipp = subprocess.Popen(
            ["sipp", "-sf", str(SCENARIO), "-s", "echo", "-r", f"{args.rate:g}",
             "-m", str(calls), "-l", str(concurrent * 3), "-d", str(round(args.hold * 1000)),
             "-i", LOCALHOST, "-mi", LOCALHOST, "-nostdin", "-trace_stat", "-fd", "10",
             "-stf", str(folder / "sipp_stats.csv"), "-trace_err",
             "-timeout", f"{round(args.duration + args.hold + 120)}s", cluster.target],
            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        windows: list[dict[str, Any]] = []
        # The first window once the calls are at their steady count, then every
        # --pacing-every seconds, and the last one before the churn ends.
        marks = [min(60.0, args.duration / 4)]
        while marks[-1] + args.pacing_every < args.duration - args.window - 5:
            marks.append(marks[-1] + args.pacing_every)
        marks.append(max(marks[-1] + args.window + 1, args.duration - args.window - 5))
        for mark in marks:
            wait = started + mark - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if sipp.poll() is not None:
                log("sipp ended early")
                break
            window = capture_pacing(rtp, args.window, folder, f"w{round(mark)}")
            window["at_s"] = round(time.monotonic() - started, 1)
            windows.append(window)
            log(f"pacing at {window['at_s']} s: {window}")
        sipp.wait(timeout=max(10.0, started + args.duration + args.hold + 180 - time.monotonic()))
        out["sipp_exit"] = sipp.returncode
        out["elapsed_s"] = round(time.monotonic() - started, 1)
        sampler.stop.set()
        out["sipp"] = sipp_totals(folder / "sipp_stats.csv")
        out["pacing_windows"] = windows
        if len(windows) >= 2:
            out["pacing_p99_first_ms"] = windows[0].get("pacing_p99_ms")
            out["pacing_p99_last_ms"] = windows[-1].get("pacing_p99_ms")
        out["processes"] = summarise_samples(sampler.samples, after=min(60.0, args.duration / 4))
        out["samples"] = len(sampler.samples)
        # RSS over time, one point a minute (or every sample in a short run).
        step = max(1, round(60 / args.sample))
        out["rss_mb_series"] = {
            name: [[row["t"], row[name]["rss_mb"]] for row in sampler.samples[::step]]
            for name in pids
        }
        p99s = [w["pacing_p99_ms"] for w in windows if "pacing_p99_ms" in w]
        out["pacing_p99_median_ms"] = statistics.median(p99s) if p99s else None
        out["workers_restarted"] = cluster.log_text().count("worker_died")
    finally:
        if sampler is not None:
            sampler.stop.set()
        if sipp is not None:
            stop_process(sipp)
        if cluster.running():
            cluster.send_signal(signal.SIGTERM)
            out["cluster_exit"] = cluster.wait(timeout=60)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            out["folder"] = str(folder)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
