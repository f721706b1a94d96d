#!/usr/bin/env python3
"""AI calls per core: the most concurrent agent calls whose turn latency stays near one call's.

Each step starts a fresh server (as ``bench/turn_latency.py`` does: 127.0.0.1,
agent route ``weather``, scripted LLM, pocketsphinx, espeak-ng, silero VAD,
``pipeline.executor_threads`` 2 by default) and runs ``bench/ai_caller.py`` in
its own process with N concurrent calls. The calls are set up at
``--setup-rate`` per second, each waits for its greeting to finish, then does
``--turns`` turns ("what is the weather in paris", then silence until the
answer is over), each turn after a random 0..``--stagger`` s pause so the
calls' turns do not line up. Voice-to-voice per turn is measured by the caller
as in turn_latency.py: send time of the last speech frame -> kernel receive
time (SO_TIMESTAMPNS) of the first agent packet after it.

The first step is the single-call baseline (N = first of ``--steps``, 1 by
default, with ``--baseline-turns`` turns). A step passes when every call is
set up, every turn is answered, and its p95 voice-to-voice is <= ``--ratio``
(1.5) x the baseline's p95. A failing step is tried once more; the ramp stops
when it fails twice.

``pipeline.stt.pool_size`` is N by default (``--stt-pool``): one pocketsphinx
decoder per call, made at start-up, so none is made mid-call (a decoder takes
~0.2 s to make, on the inference executor the VAD also uses; with a pool of 1
a 10-call step once stalled for ~2 s, see docs/benchmarks.md). Each decoder
costs ~91 MB RSS.

Server CPU: utime + stime from /proc/PID/stat, between the moment every call
has been greeted and the moment every call has finished its turns (the turn
window), and over the whole step; ``server_cpu_cores`` = CPU seconds / wall
seconds of the window. ``calls_per_core`` = N / that. The server is one process
(one event loop plus ``executor_threads`` inference threads and onnxruntime's
own), so it can use more than one core; the machine has 2, shared with the
caller. ``--cluster N`` runs ``mediaserver cluster --workers N`` instead
(Kamailio in front, the caller follows its Record-Route; CPU and RSS are the
whole process tree: supervisor, Kamailio and workers; each worker gets
``ceil(N_calls / workers) + 2`` pocketsphinx decoders). One JSON object on
stdout, progress on stderr. From the repository root::

    .venv/bin/python bench/ai_calls.py                  # steps 1,20,40,60, ~2.5 min
    .venv/bin/python bench/ai_calls.py --steps 1,80,100 # further up the ramp
    .venv/bin/python bench/ai_calls.py --cluster 2      # the same ramp on 2 workers
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from media_loadgen import proc_cpu_seconds, proc_rss_mb  # noqa: E402
from sip_cps import emit, git_commit  # noqa: E402
from turn_latency import (  # noqa: E402  (bench/ must be on sys.path first)
    log,
    machine,
    make_wavs,
    run_caller,
    server_events,
    start_server,
    stats,
)

from tests.peers import ServerNotReady, ServerProcess  # noqa: E402

GOAL_CALLS_PER_CORE = 50.0


@dataclass
class Step:
    """One attempt at N concurrent AI calls."""

    n_calls: int
    attempt: int
    turns_per_call: int
    passed: bool = False
    reason: str | None = None
    established: int = 0
    turns_requested: int = 0
    turns_answered: int = 0
    v2v_ms: dict[str, Any] = field(default_factory=dict)
    p95_ratio_to_single: float | None = None
    server_split_ms_p95: dict[str, float | None] = field(default_factory=dict)
    server_cpu_cores: float | None = None
    server_cpu_cores_whole_step: float | None = None
    caller_cpu_cores: float | None = None
    window_s: float | None = None
    calls_per_core: float | None = None
    greeting_s_max: float | None = None
    call_errors: list[str] = field(default_factory=list)
    server_alive: bool = True
    stt_pool_size: int = 0
    server_rss_mb_idle: float | None = None
    server_rss_mb_end: float | None = None
    wall_s: float = 0.0


def run_step(
    args: argparse.Namespace,
    wavs: dict[str, Path],
    workdir: Path,
    n: int,
    turns: int,
    attempt: int,
    baseline_p95: float | None,
) -> Step:
    """A fresh server, the caller with ``n`` calls, the figures."""
    step = Step(n_calls=n, attempt=attempt, turns_per_call=turns, turns_requested=n * turns)
    folder = workdir / f"n{n}_try{attempt}"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    server: ServerProcess | None = None
    try:
        if args.stt_pool is not None:
            pool = args.stt_pool
        else:
            # pocketsphinx: a decoder per call (a worker's share of them, plus
            # two for an uneven spread); Whisper: transcriptions at once over the
            # one shared model, one per core.
            workers = max(args.cluster, 1)
            share = -(-n // workers) + (2 if workers > 1 else 0)
            pool = share if args.stt == "pocketsphinx" else max(1, 2 // workers)
        step.stt_pool_size = pool
        server, _ = start_server(
            folder / "server",
            args.eos,
            args.executor_threads,
            n + 10,
            args.python,
            pool,
            args.stt,
            args.detector,
            args.cluster,
        )
        step.server_rss_mb_idle = proc_rss_mb(server.pid)
        cpu0, t0 = proc_cpu_seconds(server.pid), time.monotonic()
        timeout = 30 + n / args.setup_rate + args.stagger + turns * (6 + args.stagger) + n * 0.5
        extra = [
            "--calls",
            str(n),
            "--turns",
            str(turns),
            "--stagger",
            str(args.stagger),
            "--setup-rate",
            str(args.setup_rate),
            "--seed",
            str(args.seed + n + attempt),
        ]
        result, _ = run_caller(args.python, server, wavs, folder, extra, timeout)
        cpu1, t1 = proc_cpu_seconds(server.pid), time.monotonic()
        step.server_rss_mb_end = proc_rss_mb(server.pid)
        step.server_alive = server.running()
        if cpu0 is not None and cpu1 is not None:
            step.server_cpu_cores_whole_step = round((cpu1 - cpu0) / (t1 - t0), 3)
        time.sleep(0.3)
        lines = server_events(server, "turn_latency")
    finally:
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop(grace=10.0)
    calls = result.get("calls", [])
    step.established = sum(1 for c in calls if c.get("established"))
    v2v = [t["v2v_ms"] for c in calls for t in c.get("turns", []) if t.get("v2v_ms") is not None]
    step.turns_answered = len(v2v)
    step.v2v_ms = stats(v2v)
    step.call_errors = sorted({c["error"] for c in calls if c.get("error")})
    greetings = [c["greeting_s"] for c in calls if c.get("greeting_s") is not None]
    step.greeting_s_max = max(greetings) if greetings else None
    for key in ("endpointing_ms", "stt_finalise_ms", "tts_first_audio_ms", "overhead_ms"):
        step.server_split_ms_p95[key] = stats([float(ln[key]) for ln in lines if key in ln])["p95"]
    marks = result.get("marks", {})
    start, end = marks.get("turns_start"), marks.get("turns_end")
    if start and end and start.get("server_cpu_s") is not None and end.get("server_cpu_s"):
        wall = end["mono"] - start["mono"]
        if wall > 0:
            step.window_s = round(wall, 2)
            step.server_cpu_cores = round((end["server_cpu_s"] - start["server_cpu_s"]) / wall, 3)
            if end.get("caller_cpu_s") is not None and start.get("caller_cpu_s") is not None:
                step.caller_cpu_cores = round(
                    (end["caller_cpu_s"] - start["caller_cpu_s"]) / wall, 3
                )
    if step.server_cpu_cores:
        step.calls_per_core = round(n / step.server_cpu_cores, 1)
    p95 = step.v2v_ms.get("p95")
    if baseline_p95 and p95 is not None:
        step.p95_ratio_to_single = round(p95 / baseline_p95, 3)
    reasons = []
    if not result:
        reasons.append("caller gave no result")
    if step.established < n:
        reasons.append(f"{step.established}/{n} calls established")
    if step.turns_answered < step.turns_requested:
        reasons.append(f"{step.turns_answered}/{step.turns_requested} turns answered")
    if not step.server_alive:
        reasons.append("server exited")
    ratio = step.p95_ratio_to_single
    if baseline_p95 is not None and (ratio is None or ratio > args.ratio):
        reasons.append(f"p95 v2v {p95} ms = {ratio} x single-call p95 (> {args.ratio})")
    step.passed = not reasons
    step.reason = "; ".join(reasons) or None
    step.wall_s = round(time.monotonic() - started, 1)
    return step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--steps", default="1,20,40,60", help="N per step; the first is the baseline (1,20,40,60)"
    )
    parser.add_argument("--turns", type=int, default=3, help="turns per call (3)")
    parser.add_argument("--baseline-turns", type=int, default=8, help="turns of the 1st step (8)")
    parser.add_argument("--stagger", type=float, default=2.0, help="random pause before a turn")
    parser.add_argument("--setup-rate", type=float, default=10.0, help="INVITEs per second (10)")
    parser.add_argument("--ratio", type=float, default=1.5, help="pass: p95 <= ratio x single")
    parser.add_argument(
        "--eos", type=float, default=0.25, help="end_of_speech_timeout s (0.25; 0: the detector's)"
    )
    parser.add_argument(
        "--detector", default="smart_turn", help="turn.detector: smart_turn (default) or silence"
    )
    parser.add_argument("--executor-threads", type=int, default=2, help="pipeline threads (2)")
    parser.add_argument(
        "--stt-pool",
        type=int,
        default=None,
        help="pipeline.stt.pool_size (default: N, one decoder per call made at start-up,"
        " none made mid-call; see docs/benchmarks.md)",
    )
    parser.add_argument(
        "--stt",
        choices=("pocketsphinx", "faster-whisper"),
        default="pocketsphinx",
        help="pipeline.stt.backend (pocketsphinx)",
    )
    parser.add_argument(
        "--cluster",
        type=int,
        default=0,
        help="run `mediaserver cluster --workers N` (Kamailio in front) instead of one process",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json-out", help="also write the JSON report here")
    parser.add_argument("--workdir", help="keep server logs and caller output here")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    try:
        args.step_list = [int(x) for x in args.steps.split(",") if x.strip()]
    except ValueError:
        parser.error("--steps: comma-separated integers")
    if not args.step_list or min(args.step_list) < 1 or max(args.step_list) > 200:
        parser.error("--steps: 1..200 calls")
    if not 1 <= args.turns <= 20 or not 1 <= args.baseline_turns <= 50:
        parser.error("--turns 1..20, --baseline-turns 1..50")
    return args


def main(argv: list[str] | None = None) -> int:
    """The ramp; the JSON report on stdout."""
    args = parse_args(argv)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    workdir = (
        Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="ai_calls_"))
    )
    workdir.mkdir(parents=True, exist_ok=True)
    steps: list[Step] = []
    error: str | None = None
    baseline: Step | None = None

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.monotonic()
    try:
        wavs = make_wavs(workdir / "wavs")
        for index, n in enumerate(args.step_list):
            turns = args.baseline_turns if index == 0 else args.turns
            ok = False
            for attempt in (1, 2):
                base_p95 = baseline.v2v_ms.get("p95") if baseline else None
                log(f"step N={n}, try {attempt}, {turns} turns per call")
                step = run_step(args, wavs, workdir, n, turns, attempt, base_p95)
                steps.append(step)
                log(
                    f"  N={n}: {step.established} up, {step.turns_answered}/"
                    f"{step.turns_requested} turns, v2v p50/p95 {step.v2v_ms.get('p50')}/"
                    f"{step.v2v_ms.get('p95')} ms (x{step.p95_ratio_to_single}), server "
                    f"{step.server_cpu_cores} cores -> {step.calls_per_core} calls/core, "
                    f"caller {step.caller_cpu_cores} cores"
                    + ("" if step.passed else f"  FAIL: {step.reason}")
                )
                if step.passed:
                    ok = True
                    break
            if index == 0:
                if not ok:
                    error = "the single-call baseline failed"
                    break
                baseline = step
            elif not ok:
                break
    except KeyboardInterrupt as exc:
        error = f"interrupted ({exc})"
    except (ServerNotReady, OSError, RuntimeError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        log(error)
    passed = [s for s in steps[1:] if s.passed] if baseline else []
    best = max(passed, key=lambda s: s.n_calls) if passed else None
    passed_n = {s.n_calls for s in passed}
    stopped = next((s for s in reversed(steps) if not s.passed and s.n_calls not in passed_n), None)
    report = {
        "benchmark": "ai_calls",
        "command": shlex.join(["python", *sys.argv]),
        "started_at": started_at,
        "commit": git_commit(),
        "machine": machine(),
        "settings": {
            "steps": args.step_list,
            "turns_per_call": args.turns,
            "baseline_turns": args.baseline_turns,
            "stagger_s": args.stagger,
            "setup_rate": args.setup_rate,
            "end_of_speech_timeout_s": args.eos,
            "detector": args.detector,
            "executor_threads": args.executor_threads,
            "stt": args.stt,
            "stt_pool_size": args.stt_pool
            if args.stt_pool is not None
            else ("N / workers (per step)" if args.stt == "pocketsphinx" else 2),
            "cluster_workers": args.cluster,
            "llm": "scripted",
            "pass_rule": f"all calls up, every turn answered, p95 voice-to-voice <= {args.ratio}"
            " x the single-call p95 (caller-measured)",
        },
        "single_call_v2v_ms": baseline.v2v_ms if baseline else None,
        "best_n_calls": best.n_calls if best else None,
        "best_server_cpu_cores": best.server_cpu_cores if best else None,
        "best_calls_per_core": best.calls_per_core if best else None,
        "goal_calls_per_core": GOAL_CALLS_PER_CORE,
        "meets_goal": bool(
            best and best.calls_per_core and best.calls_per_core >= GOAL_CALLS_PER_CORE
        ),
        "stopped_at": {"n_calls": stopped.n_calls, "reason": stopped.reason} if stopped else None,
        "steps": [asdict(s) for s in steps],
        "wall_s": round(time.monotonic() - t0, 1),
        "error": error,
        "workdir": str(workdir) if args.workdir else None,
    }
    emit(report, args.json_out)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main())
