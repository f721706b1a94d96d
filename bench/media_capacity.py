#!/usr/bin/env python3
"""Media capacity: how many concurrent echo calls one server carries cleanly.

Each step starts a fresh server (``python -m mediaserver run``, via
``tests/peers.py``'s ServerProcess, on 127.0.0.1) with a route ``echo`` ->
``{app: echo, duration: 0}``, then runs ``bench/media_loadgen.py`` in its own
process: N SIP calls (its own minimal UAC: INVITE with an SDP naming a distinct
local RTP port per call, 200, ACK ... BYE), and on each call 172-byte PCMU RTP
every 20 ms for ``--warmup`` + ``--duration`` s, with the echoes read back on
the same socket. The load generator maps every echoed packet back to the one it
echoes (a marker in the payload) and reports:

* loss: packets sent after the warm-up whose echo never came back;
* echo delay: send time -> kernel receive time of the same payload (the
  server's 40 ms jitter window plus up to one 20 ms clock period);
* outbound pacing: |inter-arrival gap - 20 ms| of the echoed packets per call,
  pooled over all calls (p50/p99), from kernel receive timestamps
  (SO_TIMESTAMPNS), so the figure is about when the server sent, not when the
  load generator got round to reading; the same from user-space receive times
  is reported beside it;
* the server's CPU (utime + stime from /proc/PID/stat) over the measured
  window, its RSS (VmRSS) idle and loaded -> KB per call, and the load
  generator's own CPU.

A step passes with every call established, 0 packets lost and pacing p99 <=
``--pacing-limit`` ms (2). A failing step is retried ``--retries`` times (1);
the ramp stops when it still fails. One JSON object goes to stdout, progress to
stderr. From the repository root::

    .venv/bin/python bench/media_capacity.py --start 100 --step 100 --max 1500 --duration 20

``--srtp`` runs the same ramp with SDES-SRTP on every call (the server set to
``media.srtp: required``), for the side-by-side cost of encryption. ``--cluster N``
runs ``mediaserver cluster --workers N`` instead of one process: SIP through
Kamailio, RTP straight to the workers; CPU and RSS are summed over the whole
process tree (supervisor, Kamailio, workers).

Every process is started by this script, bounded by a timeout and stopped by
its PID; nothing binds outside 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from media_loadgen import proc_rss_mb  # noqa: E402  (the whole process tree: a cluster too)
from sip_cps import (  # noqa: E402  (bench/ and the repo root must be on sys.path first)
    cluster_command,
    cpu_model,
    git_commit,
    proc_threads,
    stop_process,
    udp_rcvbuf_errors,
    wait_workers,
)

from tests.peers import (  # noqa: E402
    LOCALHOST,
    ServerNotReady,
    ServerProcess,
    free_port,
    free_rtp_range,
)

LOADGEN = BENCH_DIR / "media_loadgen.py"
ROUTE = "echo"
GOAL_CALLS_PER_CORE = 1000.0
#: Above this the load generator (one core, one thread) is itself the limit.
LOADGEN_SATURATED_CORES = 0.9


def log(message: str) -> None:
    """Progress for the human watching; stdout is reserved for the JSON."""
    print(f"[media_capacity] {message}", file=sys.stderr, flush=True)


@dataclass
class Step:
    """One attempt at N concurrent calls."""

    n_calls: int
    attempt: int
    passed: bool = False
    stop_reason: str | None = None
    calls_established: int = 0
    packets_sent: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    loss_pct: float | None = None
    echo_delay_ms_p50: float | None = None
    echo_delay_ms_p99: float | None = None
    pacing_dev_ms_p50: float | None = None
    pacing_dev_ms_p99: float | None = None
    pacing_dev_ms_max: float | None = None
    pacing_dev_ms_user_space_p99: float | None = None
    server_cpu_cores: float | None = None
    server_cpu_cores_quiet: float | None = None
    calls_per_server_core: float | None = None
    server_rss_mb_idle: float | None = None
    server_rss_mb_loaded: float | None = None
    server_rss_kb_per_call: float | None = None
    loadgen_cpu_cores: float | None = None
    loadgen_saturated: bool = False
    server_alive: bool = True
    server_log_lines: int = 0
    server_log_samples: list[str] = field(default_factory=list)
    machine_udp_rcvbuf_errors: int | None = None
    loadgen_exit_code: int | None = None
    wall_s: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


class Bench:
    """Starts one server per step and one load generator against it."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        room = args.max + 50
        # Chosen once: every step's server is stopped before the next one binds them.
        self.server_rtp = free_rtp_range(2 * room + 2)
        self.loadgen_rtp = free_rtp_range(2 * args.max + 200)
        self.max_calls = room
        self.server: ServerProcess | None = None
        self.loadgen: subprocess.Popen[bytes] | None = None
        self.server_threads: int | None = None

    def server_config(self) -> dict[str, Any]:
        """One UDP listener, the echo route, ports and max_calls sized for --max."""
        setup_s = self.args.max / self.args.setup_rate
        return {
            "sip": {
                "listen": [{"transport": "udp", "host": LOCALHOST, "port": free_port()}],
                "max_calls": self.max_calls,
            },
            "media": {
                "address": LOCALHOST,
                "port_min": self.server_rtp[0],
                "port_max": self.server_rtp[1],
                "jitter_window": 0.040,
                "inactivity_timeout": max(30.0, round(setup_s + 15)),
                "srtp": "required" if self.args.srtp else "off",
            },
            "routes": {ROUTE: {"app": "echo", "duration": 0, "ring": 0}},
            "admin": {"port": 0},
            "shutdown": {"drain_timeout": 2},
            "logging": {"level": "warning", "format": "console"},
        }

    def start_server(self, folder: Path, profile: Path | None) -> ServerProcess:
        """A fresh server; wait until it answers OPTIONS."""
        python = self.args.python
        command = [python, "-m", "mediaserver", "run"]
        if profile is not None:
            command = [python, "-m", "cProfile", "-o", str(profile), "-m", "mediaserver", "run"]
        env = {"MEDIASERVER_GC_THRESHOLD": self.args.gc_threshold} if self.args.gc_threshold else {}
        workers: list[int] = []
        if self.args.cluster:
            command, workers = cluster_command(python, self.args.cluster)
        server = ServerProcess(self.server_config(), folder, command=command, env=env)
        self.server = server
        server.start()
        server.wait_ready(timeout=30)
        wait_workers(server, workers)
        self.server_threads = proc_threads(server.pid)
        return server

    def run_step(self, n: int, attempt: int, index: int) -> Step:
        """Start a server, run the load generator with ``n`` calls, stop the server."""
        args = self.args
        step = Step(n_calls=n, attempt=attempt)
        folder = self.workdir / f"step{index:02d}_{n}calls_try{attempt}"
        folder.mkdir(parents=True, exist_ok=True)
        profile = Path(args.profile) / f"{folder.name}.prof" if args.profile else None
        if profile is not None:
            profile.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        server = self.start_server(folder / "server", profile)
        time.sleep(0.5)  # let start-up settle before the idle RSS
        step.server_rss_mb_idle = proc_rss_mb(server.pid)
        rcvbuf_before = udp_rcvbuf_errors()
        setup_s = n / args.setup_rate
        timeout = 2 * setup_s + 2 * args.sip_timeout + args.warmup + args.duration + 60
        command = [
            args.python,
            str(LOADGEN),
            "--port",
            str(server.port),
            "--server-pid",
            str(server.pid),
            "--calls",
            str(n),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            "--setup-rate",
            str(args.setup_rate),
            "--sip-timeout",
            str(args.sip_timeout),
            "--rtp-range",
            f"{self.loadgen_rtp[0]}-{self.loadgen_rtp[1]}",
            "--server-rtp-range",
            f"{self.server_rtp[0]}-{self.server_rtp[1]}",
        ]
        if args.dump:
            command += ["--dump", str(folder / "times.npz")]
        if args.srtp:
            command += ["--srtp"]
        out_path = folder / "loadgen.json"
        err_path = folder / "loadgen.log"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            self.loadgen = subprocess.Popen(
                command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
            try:
                step.loadgen_exit_code = self.loadgen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                step.loadgen_exit_code = stop_process(self.loadgen)
                step.stop_reason = f"load generator timed out after {timeout:.0f} s"
            self.loadgen = None
        step.server_alive = server.running()
        rcvbuf_after = udp_rcvbuf_errors()
        if rcvbuf_before is not None and rcvbuf_after is not None:
            step.machine_udp_rcvbuf_errors = rcvbuf_after - rcvbuf_before
        lines = [ln for ln in server.log_text().splitlines() if ln.strip()]
        step.server_log_lines = len(lines)
        step.server_log_samples = lines[:5]
        server.stop(grace=15.0)
        self.server = None
        step.wall_s = round(time.monotonic() - started, 1)
        try:
            detail: dict[str, Any] = json.loads(out_path.read_text() or "{}")
        except json.JSONDecodeError:
            detail = {}
        if not detail:
            tail = err_path.read_text(errors="replace").splitlines()[-5:]
            step.stop_reason = step.stop_reason or f"load generator gave no result: {tail}"
        self.fill(step, detail)
        self.judge(step)
        return step

    @staticmethod
    def fill(step: Step, detail: dict[str, Any]) -> None:
        """Copy the load generator's figures into the step's flat fields."""
        if not detail:
            return
        step.detail = detail
        step.calls_established = detail["calls_established"]
        step.packets_sent = detail["packets_sent"]
        step.packets_received = detail["packets_received"]
        step.packets_lost = detail["packets_lost"]
        step.loss_pct = detail["loss_pct"]
        step.echo_delay_ms_p50 = detail["echo_delay_ms"]["p50"]
        step.echo_delay_ms_p99 = detail["echo_delay_ms"]["p99"]
        step.pacing_dev_ms_p50 = detail["pacing_dev_ms"]["p50"]
        step.pacing_dev_ms_p99 = detail["pacing_dev_ms"]["p99"]
        step.pacing_dev_ms_max = detail["pacing_dev_ms"]["max"]
        step.pacing_dev_ms_user_space_p99 = detail["pacing_dev_ms_user_space"]["p99"]
        step.server_cpu_cores = detail["server_cpu_cores"]
        step.server_cpu_cores_quiet = detail["server_cpu_cores_quiet"]
        if step.server_cpu_cores:
            step.calls_per_server_core = round(step.calls_established / step.server_cpu_cores, 1)
        step.server_rss_mb_loaded = detail["server_rss_mb_loaded"]
        if (
            step.server_rss_mb_idle is not None
            and step.server_rss_mb_loaded is not None
            and step.calls_established
        ):
            delta_kb = (step.server_rss_mb_loaded - step.server_rss_mb_idle) * 1024
            step.server_rss_kb_per_call = round(delta_kb / step.calls_established, 1)
            step.server_rss_mb_idle = round(step.server_rss_mb_idle, 1)
            step.server_rss_mb_loaded = round(step.server_rss_mb_loaded, 1)
        step.loadgen_cpu_cores = detail["loadgen_cpu_cores"]
        step.loadgen_saturated = (step.loadgen_cpu_cores or 0) > LOADGEN_SATURATED_CORES

    def judge(self, step: Step) -> None:
        """Pass: every call up, 0 loss, pacing p99 within the limit, server alive."""
        reasons = [step.stop_reason] if step.stop_reason else []
        if not step.server_alive:
            reasons.append("server exited")
        if step.detail:
            if step.calls_established < step.n_calls:
                reasons.append(f"{step.calls_established}/{step.n_calls} calls established")
            if step.packets_lost:
                reasons.append(f"{step.packets_lost} packets lost ({step.loss_pct}%)")
            if step.packets_sent == 0:
                reasons.append("no packets sent")
            p99 = step.pacing_dev_ms_p99
            if p99 is None or p99 > self.args.pacing_limit:
                reasons.append(f"pacing p99 {p99} ms > {self.args.pacing_limit} ms")
        step.passed = not reasons
        step.stop_reason = "; ".join(reasons) or None

    def ramp(self) -> list[Step]:
        """Steps from --start by --step to --max; stop at a step that fails every try."""
        args = self.args
        steps: list[Step] = []
        n = args.start
        index = 1
        while n <= args.max:
            passed = False
            for attempt in range(1, args.retries + 2):
                log(f"step {index}: {n} calls, try {attempt}")
                step = self.run_step(n, attempt, index)
                steps.append(step)
                log(
                    f"  {step.calls_established}/{n} up, lost {step.packets_lost}/"
                    f"{step.packets_sent}, delay p50/p99 {step.echo_delay_ms_p50}/"
                    f"{step.echo_delay_ms_p99} ms, pacing p50/p99 {step.pacing_dev_ms_p50}/"
                    f"{step.pacing_dev_ms_p99} ms (user space p99 "
                    f"{step.pacing_dev_ms_user_space_p99}), server {step.server_cpu_cores} "
                    f"cores (quiet {step.server_cpu_cores_quiet}), "
                    f"loadgen {step.loadgen_cpu_cores} cores, "
                    f"{step.server_rss_kb_per_call} KB/call"
                    + ("" if step.passed else f"  -> FAIL: {step.stop_reason}")
                )
                time.sleep(args.pause)
                if step.passed:
                    passed = True
                    break
            if not passed:
                break
            n += args.step
            index += 1
        return steps

    def stop_all(self) -> None:
        """Stop the load generator and the server if still running, by PID."""
        if self.loadgen is not None:
            stop_process(self.loadgen)
            self.loadgen = None
        if self.server is not None:
            self.server.stop(grace=15.0)
            self.server = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="Ramp concurrent echo calls with RTP; print one JSON object."
    )
    parser.add_argument("--start", type=int, default=100, help="first N (100)")
    parser.add_argument("--step", type=int, default=100, help="N increment (100)")
    parser.add_argument("--max", type=int, default=1500, help="highest N tried (1500)")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="measured seconds of media per step (20)"
    )
    parser.add_argument(
        "--warmup", type=float, default=0.5, help="media seconds before the window (0.5)"
    )
    parser.add_argument(
        "--setup-rate", type=float, default=400.0, help="INVITEs (and BYEs) per second (400)"
    )
    parser.add_argument(
        "--sip-timeout", type=float, default=16.0, help="give up on an INVITE/BYE after (16 s)"
    )
    parser.add_argument(
        "--pacing-limit", type=float, default=2.0, help="pass: pacing p99 <= this, ms (2)"
    )
    parser.add_argument("--retries", type=int, default=1, help="extra tries of a failing step")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between steps (1)")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter for the server and load generator"
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="run each step's server under cProfile, stats in DIR (slows it down)",
    )
    parser.add_argument(
        "--gc-threshold",
        metavar="A,B,C",
        help="the server's MEDIASERVER_GC_THRESHOLD (default: the server's own)",
    )
    parser.add_argument(
        "--dump",
        action="store_true",
        help="save each step's raw per-call times as times.npz in its folder (needs --workdir)",
    )
    parser.add_argument(
        "--cluster",
        type=int,
        default=0,
        metavar="N",
        help="run `mediaserver cluster --workers N` (Kamailio in front) instead of one process",
    )
    parser.add_argument(
        "--srtp",
        action="store_true",
        help="SDES-SRTP on every call (the server requires it; the load generator protects)",
    )
    parser.add_argument("--workdir", help="keep logs and per-step JSON here (default: temp dir)")
    args = parser.parse_args(argv)
    if args.start <= 0 or args.step <= 0 or args.max < args.start:
        parser.error("need 0 < --start <= --max and --step > 0")
    if args.duration <= 0 or args.warmup < 0 or args.setup_rate <= 0:
        parser.error("--duration and --setup-rate must be positive, --warmup not negative")
    if args.dump and not args.workdir:
        parser.error("--dump needs --workdir (the files would be deleted)")
    if args.max > 4000:
        parser.error("--max above 4000 does not fit the RTP port plan (20000-29999)")
    return args


def uvloop_version() -> str | None:
    """uvloop's version, if installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("uvloop")
    except PackageNotFoundError:
        return None


def rss_slope_kb_per_call(steps: list[Step]) -> float | None:
    """Least-squares slope of (loaded - idle RSS) against established calls, KB per call.

    The first calls also pay one-off costs (lazily imported modules, the loop's
    first buffers), so the slope across steps is the better per-call figure.
    """
    points = [
        (s.calls_established, (s.server_rss_mb_loaded - s.server_rss_mb_idle) * 1024)
        for s in steps
        if s.calls_established and s.server_rss_mb_loaded is not None
        if s.server_rss_mb_idle is not None
    ]
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return round(sxy / sxx, 1)


def summarise(
    args: argparse.Namespace, steps: list[Step], bench: Bench, started_at: str, error: str | None
) -> dict[str, Any]:
    """The JSON report."""
    passed = [s for s in steps if s.passed]
    best = max(passed, key=lambda s: s.n_calls) if passed else None
    passed_n = {s.n_calls for s in passed}
    failed_final = next(
        (s for s in reversed(steps) if not s.passed and s.n_calls not in passed_n), None
    )
    per_core = best.calls_per_server_core if best else None
    return {
        "benchmark": "media_capacity_echo",
        "command": shlex.join(["python", *sys.argv]),
        "started_at": started_at,
        "commit": git_commit(),
        "machine": {
            "cpu_cores": os.cpu_count(),
            "cpu_model": cpu_model(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "uvloop": uvloop_version(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {
            "start": args.start,
            "step": args.step,
            "max": args.max,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "setup_rate": args.setup_rate,
            "retries": args.retries,
            "server_max_calls": bench.max_calls,
            "server_rtp_range": list(bench.server_rtp),
            "loadgen_rtp_range": list(bench.loadgen_rtp),
            "jitter_window_s": 0.040,
            "pass_rule": "every call established, 0 packets lost after the warm-up, "
            f"pacing p99 <= {args.pacing_limit} ms (kernel receive timestamps)",
            "profile": args.profile,
            "gc_threshold": args.gc_threshold or "server default",
        },
        "server_threads": bench.server_threads,
        "best_n_calls": best.n_calls if best else None,
        "best_step_server_cpu_cores": best.server_cpu_cores if best else None,
        "n_per_core": per_core,
        "goal_calls_per_core": GOAL_CALLS_PER_CORE,
        "meets_goal": per_core is not None and per_core >= GOAL_CALLS_PER_CORE,
        "server_rss_kb_per_call_slope": rss_slope_kb_per_call(steps),
        "max_reached": bool(steps) and best is not None and best.n_calls >= args.max,
        "stopped_at": (
            {"n_calls": failed_final.n_calls, "reason": failed_final.stop_reason}
            if failed_final
            else None
        ),
        "error": error,
        "steps": [asdict(s) for s in steps],
        "workdir": str(bench.workdir) if args.workdir else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the ramp; print the JSON report on stdout."""
    args = parse_args(argv)
    if not LOADGEN.is_file():
        log(f"missing {LOADGEN}")
        return 2
    # Each call holds 2 sockets in the server and 2 in the load generator; children inherit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * (args.max + 50) + 512
    if soft < need and hard >= need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="media_capacity_"))
    bench = Bench(args, workdir)
    steps: list[Step] = []
    error: str | None = None

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        steps = bench.ramp()
    except KeyboardInterrupt as exc:
        error = f"interrupted ({exc})"
    except (ServerNotReady, OSError, RuntimeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        log(error)
    finally:
        with contextlib.suppress(Exception):
            bench.stop_all()
    report = summarise(args, steps, bench, started_at, error)
    print(json.dumps(report, indent=2))
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if error is None and steps else 1


if __name__ == "__main__":
    sys.exit(main())
