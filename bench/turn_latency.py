#!/usr/bin/env python3
"""Turn latency of one voice-AI call: voice-to-voice, its server-side split, barge-in stop.

Starts the server (``python -m mediaserver run`` via ``tests/peers.py``'s
ServerProcess, 127.0.0.1 only, JSON logs) with an ``agent`` route
``weather`` (scripted LLM with a ``get_weather`` tool and a canned story
reply; pocketsphinx STT with hints; espeak-ng TTS; silero VAD), then runs
``bench/ai_caller.py`` in another process with one call:

1. INVITE (PCMU/8000 + telephone-event), 200, ACK; continuous 20 ms RTP from
   then on (u-law silence when the caller is not talking, like a phone);
2. waits for the greeting to finish (no agent packet for 300 ms);
3. ``--turns`` times: says "what is the weather in paris" (espeak-ng, 8 kHz,
   trimmed to its speech), then silence until the answer is over.
   *Voice-to-voice* = send time of the last frame that contains speech ->
   kernel receive time (SO_TIMESTAMPNS) of the first agent packet after it;
4. ``--barge-ins`` times: says "tell me a story", ~1 s into the answer says
   "stop stop stop". *Barge-in stop* = send time of the first speech frame of
   "stop" -> kernel arrival time of the last agent packet before the agent's
   stream stops (the first gap > 100 ms);
5. BYE.

The server logs one ``turn_latency`` JSON line per answered turn (from the
speech end the server's VAD found to the first frame sent): the split
endpointing (end-of-speech wait) + STT finalise + LLM first token + TTS first
audio + overhead (the rest: queues, event loop, the wait for the next 20 ms
clock tick). Those lines are read from the server's log and summarised
(p50/p95/p99). Barge-in stop here includes the VAD's onset detection (silero,
32 ms chunks, ``vad.min_speech``), the flush, and the frames already on the
wire.

Goals: overhead p99 <= 5 ms; barge-in stop p95 <= 100 ms; voice-to-voice p50
<= 400 ms with ``turn.end_of_speech_timeout`` 0.25 s. One JSON object on
stdout (and in ``--json-out``), progress on stderr. From the repository root::

    .venv/bin/python bench/turn_latency.py --turns 10 --barge-ins 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from sip_cps import (  # noqa: E402
    cluster_command,
    cpu_model,
    emit,
    git_commit,
    stop_process,
    wait_workers,
)

from tests.peers import (  # noqa: E402
    LOCALHOST,
    ServerNotReady,
    ServerProcess,
    free_port,
    free_rtp_range,
    speech_wav,
)

CALLER = BENCH_DIR / "ai_caller.py"
ROUTE = "weather"
QUESTION = "what is the weather in paris"
STORY = "tell me a story"
STOP = "stop stop stop"
SPLIT = (
    "voice_to_voice_ms",
    "endpointing_ms",
    "stt_finalise_ms",
    "llm_first_token_ms",
    "tts_first_audio_ms",
    "overhead_ms",
)
GOAL_OVERHEAD_P99_MS = 5.0
GOAL_BARGE_IN_P95_MS = 100.0
GOAL_V2V_P50_MS = 400.0


def log(message: str) -> None:
    """Progress on stderr; stdout carries the JSON."""
    print(f"[{Path(sys.argv[0]).stem}] {message}", file=sys.stderr, flush=True)


def agent_config(
    port: int,
    rtp: tuple[int, int],
    eos: float,
    executor_threads: int,
    max_calls: int,
    stt_pool: int = 1,
    stt: str = "pocketsphinx",
    detector: str = "smart_turn",
) -> dict[str, Any]:
    """The server config: one UDP listener, the weather agent, JSON logs at info."""
    return {
        "sip": {
            "listen": [{"transport": "udp", "host": LOCALHOST, "port": port}],
            "max_calls": max_calls,
        },
        "media": {"address": LOCALHOST, "port_min": rtp[0], "port_max": rtp[1]},
        "logging": {"level": "info", "format": "json"},
        "shutdown": {"drain_timeout": 2},
        "pipeline": {
            "stt": {"backend": stt, "pool_size": stt_pool},
            # eos 0: no ceiling set, the detector's own (smart_turn: max_wait).
            "turn": {"detector": detector, **({"end_of_speech_timeout": eos} if eos else {})},
            "llm": {"backend": "scripted"},
            "executor_threads": executor_threads,
        },
        "routes": {
            ROUTE: {
                "app": "agent",
                "duration": 0,
                "agent": {
                    "greeting": "Hello, this is the weather line.",
                    "hints": ["what is the weather in", "tell me a story", "stop", "thank you"],
                    "replies": [
                        {
                            "match": ["story"],
                            "reply": "Once upon a time there was a small robot who lived in "
                            "a lighthouse by the sea, and every night it counted the ships "
                            "that passed, one by one, until the morning came.",
                        }
                    ],
                    "tools": [
                        {
                            "name": "get_weather",
                            "description": "Tell the weather forecast for a city.",
                            "parameters": {
                                "type": "object",
                                "properties": {
                                    "city": {
                                        "type": "string",
                                        "enum": ["paris", "london", "berlin"],
                                    }
                                },
                                "required": ["city"],
                            },
                            "response": "It is sunny in {city} today.",
                        }
                    ],
                },
            }
        },
    }


def make_wavs(folder: Path) -> dict[str, Path]:
    """The caller's three utterances as 8 kHz WAVs (espeak-ng + sox, cached in ``folder``)."""
    return {
        "question": speech_wav(QUESTION, folder),
        "story": speech_wav(STORY, folder),
        "stop": speech_wav(STOP, folder),
    }


def stats(values: list[float]) -> dict[str, Any]:
    """n, p50/p95/p99, min/max of ``values`` (ms), rounded."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "min": None, "max": None}
    arr = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "n": int(arr.size),
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "min": round(float(arr.min()), 2),
        "max": round(float(arr.max()), 2),
    }


def server_events(server: ServerProcess, name: str) -> list[dict[str, Any]]:
    """The server's JSON log lines whose ``event`` is ``name``."""
    found: list[dict[str, Any]] = []
    for line in server.log_text().splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("event") == name:
            found.append(record)
    return found


def start_server(
    folder: Path,
    eos: float,
    executor_threads: int,
    max_calls: int,
    python: str,
    stt_pool: int = 1,
    stt: str = "pocketsphinx",
    detector: str = "smart_turn",
    cluster: int = 0,
) -> tuple[ServerProcess, tuple[int, int]]:
    """A fresh server with the agent route; wait until it answers OPTIONS.

    ``cluster`` > 0: `mediaserver cluster --workers N` instead (Kamailio on the
    listener, ``max_calls`` and ``stt_pool`` per worker, the RTP range split).
    """
    rtp = free_rtp_range((2 * max_calls + 20) * max(cluster, 1))
    config = agent_config(
        free_port(), rtp, eos, executor_threads, max_calls, stt_pool, stt, detector
    )
    command, workers = [python, "-m", "mediaserver", "run"], []
    if cluster:
        command, workers = cluster_command(python, cluster)
    server = ServerProcess(config, folder, command=command)
    server.start()
    server.wait_ready(timeout=60)
    wait_workers(server, workers, timeout=120)
    return server, rtp


def run_caller(
    python: str,
    server: ServerProcess,
    wavs: dict[str, Path],
    folder: Path,
    extra: list[str],
    timeout: float,
) -> tuple[dict[str, Any], subprocess.Popen[bytes] | None]:
    """Run bench/ai_caller.py to completion (bounded by ``timeout``); its JSON or {}."""
    caller_rtp = free_rtp_range(200)
    command = [
        python,
        str(CALLER),
        "--port",
        str(server.port),
        "--server-pid",
        str(server.pid),
        "--question",
        str(wavs["question"]),
        "--story",
        str(wavs["story"]),
        "--stop",
        str(wavs["stop"]),
        "--rtp-range",
        f"{caller_rtp[0]}-{caller_rtp[1]}",
        "--time-limit",
        str(max(10.0, timeout - 20)),
        *extra,
    ]
    out_path, err_path = folder / "caller.json", folder / "caller.log"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"caller timed out after {timeout:.0f} s: stopping pid {proc.pid}")
            stop_process(proc)
    try:
        result: dict[str, Any] = json.loads(out_path.read_text() or "{}")
    except json.JSONDecodeError:
        result = {}
    if not result:
        tail = err_path.read_text(errors="replace").splitlines()[-8:]
        log(f"caller gave no result: {tail}")
    return result, None


def machine() -> dict[str, Any]:
    """What the run ran on."""
    return {
        "cpu_cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def barge_in_decisions(caller: dict[str, Any], barge: list[dict[str, Any]]) -> dict[str, Any]:
    """Onset -> the server's ``barge_in`` log line (its wall-clock timestamp), and that line ->
    the last agent packet: where the barge-in stop time goes (log timestamps: 1 us, same clock).
    """
    trials = (caller.get("calls") or [{}])[0].get("barge_ins", [])
    decided: list[float] = []
    drained: list[float] = []
    for trial in trials:
        onset, last = trial.get("onset"), trial.get("last_packet")
        if onset is None:
            continue
        # The first barge_in line logged after this trial's onset.
        for line in barge:
            try:
                at = datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00"))
            except (KeyError, ValueError):
                continue
            ts = at.timestamp()
            if ts >= onset:
                decided.append((ts - onset) * 1000)
                if last is not None:
                    drained.append((last - ts) * 1000)
                break
    return {
        "onset_to_server_barge_in": stats(decided),
        "server_barge_in_to_last_packet": stats(drained),
    }


def summarise(
    args: argparse.Namespace, caller: dict[str, Any], lines: list[dict[str, Any]], barge_lines: int
) -> dict[str, Any]:
    """The report: caller-measured figures, the server's split, the goals."""
    call = (caller.get("calls") or [{}])[0]
    turns = call.get("turns", [])
    v2v = [t["v2v_ms"] for t in turns if t.get("v2v_ms") is not None]
    trials = call.get("barge_ins", [])
    stops = [b["stop_ms"] for b in trials if b.get("stop_ms") is not None]
    # The server's turn_latency lines: the K question turns first, then each story turn.
    question_lines = lines[: len(turns)]
    split = {
        key.removesuffix("_ms"): stats([float(ln[key]) for ln in question_lines if key in ln])
        for key in SPLIT
    }
    all_overhead = [float(ln["overhead_ms"]) for ln in lines if "overhead_ms" in ln]
    v2v_stats = stats(v2v)
    stop_stats = stats(stops)
    overhead_p99 = stats(all_overhead)["p99"]
    goals = {
        "overhead_p99_le_5ms": {
            "value": overhead_p99,
            "pass": overhead_p99 is not None and overhead_p99 <= GOAL_OVERHEAD_P99_MS,
        },
        "barge_in_stop_p95_le_100ms": {
            "value": stop_stats["p95"],
            "pass": stop_stats["p95"] is not None and stop_stats["p95"] <= GOAL_BARGE_IN_P95_MS,
        },
        "voice_to_voice_p50_le_400ms_at_eos_250ms": {
            "value": v2v_stats["p50"],
            "eos_s": args.eos,
            "pass": v2v_stats["p50"] is not None
            and v2v_stats["p50"] <= GOAL_V2V_P50_MS
            and abs(args.eos - 0.25) < 1e-9,
        },
    }
    return {
        "benchmark": "turn_latency",
        "config": {
            "end_of_speech_timeout_s": args.eos,
            "detector": args.detector,
            "llm": "scripted",
            "stt": "pocketsphinx (pool_size 1, hints)",
            "tts": "espeak-ng",
            "vad": "silero (defaults)",
            "executor_threads": args.executor_threads,
            "question": QUESTION,
            "utterances": caller.get("utterances"),
        },
        "turns_requested": args.turns,
        "turns_answered": len(v2v),
        "barge_in_trials_requested": args.barge_ins,
        "barge_in_trials_measured": len(stops),
        "voice_to_voice_ms": v2v_stats,
        "server_split_ms": split,
        "server_turn_latency_lines": len(lines),
        "server_overhead_ms_all_turns": stats(all_overhead),
        "barge_in_stop_ms": stop_stats,
        "server_barge_in_lines": barge_lines,
        "goals": goals,
        "all_goals_pass": all(g["pass"] for g in goals.values()),
        "per_turn": [
            {
                "turn": t.get("turn"),
                "v2v_ms": t.get("v2v_ms"),
                "answer_s": t.get("answer_s"),
                "server": question_lines[i] if i < len(question_lines) else None,
            }
            for i, t in enumerate(turns)
        ],
        "barge_in_trials": trials,
        "greeting_s": call.get("greeting_s"),
        "call_error": call.get("error"),
        "caller_ticker_late_ticks": caller.get("ticker_late_ticks"),
        "caller_ticker_late_ms_max": caller.get("ticker_late_ms_max"),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=10, help="question turns (10)")
    parser.add_argument("--barge-ins", type=int, default=5, help="barge-in trials (5)")
    parser.add_argument(
        "--eos", type=float, default=0.25, help="end_of_speech_timeout s (0.25; 0: the detector's)"
    )
    parser.add_argument(
        "--detector", default="smart_turn", help="turn.detector: smart_turn (default) or silence"
    )
    parser.add_argument("--executor-threads", type=int, default=2, help="pipeline threads (2)")
    parser.add_argument("--json-out", help="also write the JSON report here")
    parser.add_argument("--workdir", help="keep the server log and caller output here")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    if not 1 <= args.turns <= 100 or not 0 <= args.barge_ins <= 50:
        parser.error("need 1 <= --turns <= 100 and 0 <= --barge-ins <= 50")
    return args


def main(argv: list[str] | None = None) -> int:
    """Start the server, run the caller, read the logs, print the report."""
    args = parse_args(argv)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    workdir = (
        Path(args.workdir).resolve()
        if args.workdir
        else Path(tempfile.mkdtemp(prefix="turn_latency_"))
    )
    workdir.mkdir(parents=True, exist_ok=True)
    server: ServerProcess | None = None
    report: dict[str, Any] = {}
    error: str | None = None

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.monotonic()
    try:
        wavs = make_wavs(workdir / "wavs")
        server, _ = start_server(
            workdir / "server",
            args.eos,
            args.executor_threads,
            10,
            args.python,
            detector=args.detector,
        )
        log(f"server pid {server.pid} ready in {time.monotonic() - t0:.1f} s")
        # ~4 s per turn, ~8 s per barge-in trial, plus set-up and greeting.
        timeout = 40 + 6 * args.turns + 12 * args.barge_ins
        caller, _ = run_caller(
            args.python,
            server,
            wavs,
            workdir,
            ["--calls", "1", "--turns", str(args.turns), "--barge-ins", str(args.barge_ins)],
            timeout,
        )
        time.sleep(0.5)  # let the last log lines land
        lines = server_events(server, "turn_latency")
        barge = server_events(server, "barge_in")
        report = summarise(args, caller, lines, len(barge))
        report["barge_in_server_decision_ms"] = barge_in_decisions(caller, barge)
    except KeyboardInterrupt as exc:
        error = f"interrupted ({exc})"
    except (ServerNotReady, OSError, RuntimeError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        log(error)
    finally:
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop(grace=10.0)
    report = {
        **report,
        "command": shlex.join(["python", *sys.argv]),
        "started_at": started_at,
        "wall_s": round(time.monotonic() - t0, 1),
        "commit": git_commit(),
        "machine": machine(),
        "error": error,
        "workdir": str(workdir) if args.workdir else None,
    }
    emit(report, args.json_out)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main())
