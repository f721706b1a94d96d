#!/usr/bin/env python3
"""SIP call setup rate: ramp sipp's call rate against the server's hold app.

One server (``python -m mediaserver run``) is started for the whole ramp on
127.0.0.1, with a route ``service`` that answers at once and holds the call
until the caller's BYE. Each step runs sipp's built-in ``uac`` scenario
(INVITE, 200, ACK, no pause, BYE, 200) at a target rate for ``--duration``
seconds, split across one or more sipp instances with their own local ports.
The server's CPU time (utime + stime from /proc/PID/stat) is read before and
after each step; divided by the step's wall time it gives the cores the
server used. The ramp stops at the first step with a failed call, a sipp
error, or an achieved rate more than 10% below the target.

One JSON object goes to stdout; progress goes to stderr. Example, from the
repository root::

    .venv/bin/python bench/sip_cps.py --start 100 --step 100 --max 1500 --duration 8

``--cluster N`` runs ``mediaserver cluster --workers N`` instead (Kamailio in
front; sipp then runs ``tests/sipp/uac_rr.xml``, which follows Record-Route),
and the CPU is summed over the whole process tree.

Every subprocess is bounded by a timeout and stopped by its PID; nothing binds
outside 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import re
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

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.peers import (  # noqa: E402  (needs the repo root on sys.path)
    LOCALHOST,
    SIPP_SCENARIOS,
    ServerNotReady,
    ServerProcess,
    free_port,
    free_port_block,
    free_rtp_range,
    sip_options,
    which,
)

SERVICE = "service"
#: One sipp UAC saturates around 1,000-1,250 calls/s here (PEERS.md): keep each below this.
SIPP_CPS_PER_INSTANCE = 800
#: A step passes when the achieved rate is at least this fraction of the target.
ACHIEVED_FRACTION = 0.9
CLK_TCK = os.sysconf("SC_CLK_TCK")
GOAL_CPS_PER_CORE = 500.0


UAC_RR = SIPP_SCENARIOS / "uac_rr.xml"


def log(message: str) -> None:
    """Progress for the human watching; stdout is reserved for the JSON."""
    print(f"[sip_cps] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its descendants (a cluster: the supervisor,
    Kamailio and the workers), in seconds (fields 14 and 15 of /proc/PID/stat)."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            text = Path(f"/proc/{current}/stat").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            if current == pid:
                raise
            continue  # a child that just ended
        fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        todo.extend(int(c) for c in children)
    return total


def proc_threads(pid: int) -> int:
    """Number of threads of a process."""
    return len(os.listdir(f"/proc/{pid}/task"))


def proc_rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MiB, None if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def main_thread_run_seconds(pid: int) -> float | None:
    """Time on CPU of the process's main thread (/proc/PID/schedstat, nanoseconds).

    A cross-check of the utime + stime figure: the event loop runs on this thread.
    """
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def udp_socket_drops(port: int) -> int | None:
    """Datagrams the kernel dropped on our UDP socket bound to 127.0.0.1:port (/proc/net/udp)."""
    want = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        cols = line.split()
        if len(cols) > 12 and cols[1] == want:
            return int(cols[-1])
    return None


def udp_rcvbuf_errors() -> int | None:
    """The machine's UDP RcvbufErrors counter (/proc/net/snmp): datagrams dropped, full buffer."""
    try:
        lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()]
    except OSError:
        return None
    udp = [ln for ln in lines if ln and ln[0] == "Udp:"]
    if len(udp) < 2 or "RcvbufErrors" not in udp[0]:
        return None
    return int(udp[1][udp[0].index("RcvbufErrors")])


def children_cpu_seconds() -> float:
    """CPU seconds of every reaped child of this process (the sipp instances)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def emit(report: dict[str, Any], json_out: str | None) -> None:
    """Print the report as JSON on stdout and, when asked, write it to `json_out`."""
    text = json.dumps(report, indent=2)
    print(text)
    if json_out:
        Path(json_out).write_text(text + "\n")


def git_commit() -> str | None:
    """HEAD of the repository, with ``+dirty`` when the work tree has changes."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        head = subprocess.run(
            [git, "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [git, "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


# --------------------------------------------------------------------------- sipp


@dataclass
class SippRun:
    """One sipp instance of one step."""

    rate: int
    calls: int
    local_port: int
    media_port: int
    stats_path: Path
    out_path: Path
    cmd: list[str]
    proc: subprocess.Popen[bytes] | None = None
    rc: int | None = None
    timed_out: bool = False


@dataclass
class StepResult:
    """What one step of the ramp measured."""

    target_cps: int
    duration_s: float
    sipp_instances: int
    calls_attempted: int = 0
    calls_created: int = 0
    successful_calls: int = 0
    failed_calls: int = 0
    failed_max_udp_retrans: int = 0
    failed_timeout_on_recv: int = 0
    failed_unexpected_message: int = 0
    retransmissions: int = 0
    dead_call_msgs: int = 0
    out_of_call_msgs: int = 0
    achieved_cps: float = 0.0
    min_periodic_cps: float | None = None
    response_time_ms_mean: float | None = None
    response_time_ms_buckets: dict[str, int] = field(default_factory=dict)
    call_length_ms_mean: float | None = None
    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    server_cpu_cores: float = 0.0
    cps_per_server_core: float | None = None
    server_cpu_pause_cores: float | None = None
    sipp_cpu_cores: float = 0.0
    server_main_thread_cores: float | None = None
    server_udp_drops: int | None = None
    machine_udp_rcvbuf_errors: int | None = None
    server_rss_mb: float | None = None
    server_alive: bool = True
    server_answers_options: bool | None = None
    server_log_warnings: int = 0
    server_log_samples: list[str] = field(default_factory=list)
    sipp_exit_codes: list[int | None] = field(default_factory=list)
    sipp_timed_out: bool = False
    passed: bool = False
    stop_reason: str | None = None


def split_rate(rate: int, instances: int) -> list[int]:
    """Split a rate into ``instances`` integer parts that add up to it."""
    base, extra = divmod(rate, instances)
    return [base + (1 if i < extra else 0) for i in range(instances)]


def instances_for(rate: int, requested: int | None) -> int:
    """How many sipp instances a step uses: the requested count, else one per 800 cps."""
    if requested is not None:
        return max(1, requested)
    return max(1, math.ceil(rate / SIPP_CPS_PER_INSTANCE))


def sipp_command(
    sipp: str,
    target: str,
    transport: str,
    rate: int,
    calls: int,
    local_port: int,
    media_port: int,
    stats_path: Path,
    timeout_s: int,
    record_route: bool = False,
) -> list[str]:
    """The sipp command line for one instance of a step (`record_route`: through
    Kamailio, whose Record-Route the built-in uac would not follow)."""
    scenario = ["-sf", str(UAC_RR)] if record_route else ["-sn", "uac"]
    return [
        sipp,
        *scenario,
        target,
        "-s",
        SERVICE,
        "-t",
        "u1" if transport == "udp" else "t1",
        "-i",
        LOCALHOST,
        "-p",
        str(local_port),
        "-mi",
        LOCALHOST,
        "-mp",
        str(media_port),
        "-r",
        str(rate),
        "-m",
        str(calls),
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(stats_path),
        "-fd",
        "1",
        "-timeout",
        f"{timeout_s}s",
        "-timeout_error",
    ]


def read_stats(path: Path) -> list[dict[str, str]]:
    """Every row of a sipp ``-stf`` CSV (';' separated, header first)."""
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            rows = [row for row in csv.reader(fh, delimiter=";") if row]
    except FileNotFoundError:
        return []
    if len(rows) < 2:
        return []
    header = rows[0]
    return [{k: v for k, v in zip(header, row) if k} for row in rows[1:]]


def sipp_epoch(value: str) -> float:
    """sipp's ``2026-11-24<TAB>04:20:45.831932<TAB>1795494045.831932`` -> epoch seconds."""
    return float(value.split()[-1])


def sipp_duration_ms(value: str) -> float | None:
    """sipp's ``HH:MM:SS:uuuuuu`` -> milliseconds."""
    match = re.fullmatch(r"(\d+):(\d+):(\d+):(\d+)", value.strip())
    if match is None:
        return None
    h, m, s, us = (int(g) for g in match.groups())
    return ((h * 60 + m) * 60 + s) * 1000.0 + us / 1000.0


def _int(row: dict[str, str], name: str) -> int:
    try:
        return int(row.get(name, "0") or 0)
    except ValueError:
        return 0


def merge_stats(step: StepResult, runs: list[SippRun]) -> None:
    """Fill a step's call counts, rates and response times from its sipp CSVs."""
    starts: list[float] = []
    ends: list[float] = []
    rt_weighted = 0.0
    cl_weighted = 0.0
    weight = 0
    periodic_min: float | None = None
    buckets: dict[str, int] = {}
    for run in runs:
        rows = read_stats(run.stats_path)
        if not rows:
            continue
        last = rows[-1]
        step.calls_created += _int(last, "OutgoingCall(C)")
        ok = _int(last, "SuccessfulCall(C)")
        step.successful_calls += ok
        step.failed_calls += _int(last, "FailedCall(C)")
        step.failed_max_udp_retrans += _int(last, "FailedMaxUDPRetrans(C)")
        step.failed_timeout_on_recv += _int(last, "FailedTimeoutOnRecv(C)")
        step.failed_unexpected_message += _int(last, "FailedUnexpectedMessage(C)")
        step.retransmissions += _int(last, "Retransmissions(C)")
        step.dead_call_msgs += _int(last, "DeadCallMsgs(C)")
        step.out_of_call_msgs += _int(last, "OutOfCallMsgs(C)")
        starts.append(sipp_epoch(last["StartTime"]))
        ends.append(sipp_epoch(last["CurrentTime"]))
        rt = sipp_duration_ms(last.get("ResponseTime1(C)", ""))
        cl = sipp_duration_ms(last.get("CallLength(C)", ""))
        if ok and rt is not None and cl is not None:
            rt_weighted += rt * ok
            cl_weighted += cl * ok
            weight += ok
        for name, value in last.items():
            if name.startswith("ResponseTimeRepartition1_") and value.isdigit():
                label = name.removeprefix("ResponseTimeRepartition1_")
                buckets[label] = buckets.get(label, 0) + int(value)
        # Full one-second periods only: the first and last rows are partial.
        for row in rows[2:-2]:
            try:
                rate = float(row.get("CallRate(P)", "") or "nan")
            except ValueError:
                continue
            if not math.isnan(rate):
                rate *= len(runs)  # instances run in parallel at equal rates (+-1)
                periodic_min = rate if periodic_min is None else min(periodic_min, rate)
    if starts and ends and max(ends) > min(starts):
        step.achieved_cps = round(step.successful_calls / (max(ends) - min(starts)), 1)
    if weight:
        step.response_time_ms_mean = round(rt_weighted / weight, 2)
        step.call_length_ms_mean = round(cl_weighted / weight, 2)
    step.response_time_ms_buckets = buckets
    if periodic_min is not None:
        step.min_periodic_cps = round(periodic_min, 1)


def cluster_command(python: str, workers: int) -> tuple[list[str], list[int]]:
    """`mediaserver cluster` with `workers` workers (Kamailio on the config's
    listener), and the workers' own SIP ports."""
    first = free_port_block(workers, tcp=True)
    command = [python, "-m", "mediaserver", "cluster", "--workers", str(workers),
               "--worker-port", str(first)]  # fmt: skip
    return command, list(range(first, first + workers))


def wait_workers(server: ServerProcess, ports: list[int], timeout: float = 60.0) -> None:
    """Wait until every cluster worker answers OPTIONS and Kamailio has probed them."""
    for port in ports:
        deadline = time.monotonic() + timeout
        while sip_options(LOCALHOST, port, timeout=0.5) is None:
            if time.monotonic() > deadline or not server.running():
                raise ServerNotReady(f"cluster worker on {port} did not come up")
    if ports:
        time.sleep(2.5)  # Kamailio's probes mark the workers active


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> int | None:
    """SIGTERM then SIGKILL one child, by its PID; return its exit code."""
    if proc.poll() is not None:
        return proc.returncode
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None


# --------------------------------------------------------------------------- the ramp


class Bench:
    """One server, one ramp of sipp steps."""

    def __init__(self, args: argparse.Namespace, workdir: Path, sipp: str) -> None:
        self.args = args
        self.workdir = workdir
        self.sipp = sipp
        self.server: ServerProcess | None = None
        self.log_offset = 0
        self.live: list[subprocess.Popen[bytes]] = []
        self.server_pid: int | None = None
        self.threads: int | None = None

    # -- server

    def server_config(self) -> dict[str, Any]:
        """A config with one listener, the hold app on ``service`` and room for the calls."""
        port = free_port()
        # Calls last milliseconds, but leave room for every call of a slow second.
        pairs = max(500, min(4000, self.args.max * 2))
        rtp_min, rtp_max = free_rtp_range(pairs * 2)
        return {
            "sip": {
                "listen": [{"transport": self.args.transport, "host": LOCALHOST, "port": port}],
                "max_calls": self.args.max_calls,
            },
            "media": {"address": LOCALHOST, "port_min": rtp_min, "port_max": rtp_max},
            "routes": {SERVICE: {"app": "hold", "duration": 0, "ring": 0}},
            "shutdown": {"drain_timeout": 2},
            "logging": {"level": self.args.log_level, "format": "console"},
        }

    def start_server(self) -> ServerProcess:
        """Start the server and wait until it answers OPTIONS."""
        command = [self.args.python, "-m", "mediaserver", "run"]
        if self.args.profile:
            command = [
                self.args.python,
                "-m",
                "cProfile",
                "-o",
                str(Path(self.args.profile).resolve()),
                "-m",
                "mediaserver",
                "run",
            ]
        env = {"MEDIASERVER_GC_THRESHOLD": self.args.gc_threshold} if self.args.gc_threshold else {}
        workers: list[int] = []
        if self.args.cluster:
            command, workers = cluster_command(self.args.python, self.args.cluster)
        server = ServerProcess(
            self.server_config(), self.workdir / "server", command=command, env=env
        )
        self.server = server
        server.start()
        self.server_pid = server.pid
        if self.args.transport == "udp":
            server.wait_ready(timeout=30)
        else:  # OPTIONS over UDP cannot reach a TCP-only listener: wait for the port
            self.wait_tcp(server, timeout=30)
        wait_workers(server, workers)
        log(f"server pid {server.pid} ready on {server.target} ({self.args.transport})")
        return server

    @staticmethod
    def wait_tcp(server: ServerProcess, timeout: float) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not server.running():
                raise ServerNotReady(f"server exited\n{server.log_tail()}")
            try:
                with socket.create_connection((server.host, server.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise ServerNotReady(f"server did not listen on TCP within {timeout} s")

    def new_log_lines(self) -> list[str]:
        """Server log lines written since the last call."""
        assert self.server is not None
        try:
            with self.server.log_path.open("rb") as fh:
                fh.seek(self.log_offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self.log_offset += len(data)
        return [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]

    # -- steps

    def run_step(self, index: int, rate: int, duration: float) -> StepResult:
        """Run sipp at ``rate`` calls/s for ``duration`` s and measure the server."""
        server = self.server
        assert server is not None
        instances = instances_for(rate, self.args.sipp_instances)
        step = StepResult(target_cps=rate, duration_s=duration, sipp_instances=instances)
        folder = self.workdir / f"step{index:02d}_{rate}cps"
        folder.mkdir(parents=True, exist_ok=True)
        sipp_timeout = int(duration * 3 + 20)
        runs: list[SippRun] = []
        for i, part in enumerate(split_rate(rate, instances)):
            if part <= 0:
                continue
            calls = max(1, round(part * duration))
            local_port = free_port_block(1, tcp=self.args.transport == "tcp")
            media_port = free_port_block(4, align=2)
            stats_path = folder / f"sipp{i}_stats.csv"
            cmd = sipp_command(
                self.sipp,
                server.target,
                self.args.transport,
                part,
                calls,
                local_port,
                media_port,
                stats_path,
                sipp_timeout,
                record_route=bool(self.args.cluster),
            )
            runs.append(
                SippRun(
                    part, calls, local_port, media_port, stats_path, folder / f"sipp{i}.out", cmd
                )
            )
        step.calls_attempted = sum(r.calls for r in runs)

        self.new_log_lines()  # skip what the pause logged
        child_before = children_cpu_seconds()
        sched_before = main_thread_run_seconds(server.pid)
        drops_before = udp_socket_drops(server.port) if self.args.transport == "udp" else None
        rcvbuf_before = udp_rcvbuf_errors()
        cpu_before = proc_cpu_seconds(server.pid)
        started = time.monotonic()
        for run in runs:
            with run.out_path.open("wb") as out:
                run.proc = subprocess.Popen(
                    run.cmd, cwd=folder, stdin=subprocess.DEVNULL, stdout=out, stderr=out
                )
            self.live.append(run.proc)
        deadline = started + sipp_timeout + 15
        for run in runs:
            assert run.proc is not None
            try:
                run.rc = run.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                run.timed_out = True
                run.rc = stop_process(run.proc)
            self.live.remove(run.proc)
        wall = time.monotonic() - started
        alive = server.running()
        cpu_after = proc_cpu_seconds(server.pid) if alive else cpu_before
        sched_after = main_thread_run_seconds(server.pid) if alive else None
        drops_after = udp_socket_drops(server.port) if drops_before is not None else None
        rcvbuf_after = udp_rcvbuf_errors()
        child_after = children_cpu_seconds()

        step.wall_s = round(wall, 3)
        step.server_cpu_s = round(cpu_after - cpu_before, 3)
        step.server_cpu_cores = round((cpu_after - cpu_before) / wall, 3)
        step.sipp_cpu_cores = round((child_after - child_before) / wall, 3)
        if sched_before is not None and sched_after is not None:
            step.server_main_thread_cores = round((sched_after - sched_before) / wall, 3)
        if drops_before is not None and drops_after is not None:
            step.server_udp_drops = drops_after - drops_before
        if rcvbuf_before is not None and rcvbuf_after is not None:
            step.machine_udp_rcvbuf_errors = rcvbuf_after - rcvbuf_before
        step.sipp_exit_codes = [r.rc for r in runs]
        step.sipp_timed_out = any(r.timed_out for r in runs)
        step.server_alive = alive
        step.server_rss_mb = proc_rss_mb(server.pid) if alive else None
        merge_stats(step, runs)
        if step.server_cpu_cores > 0:
            step.cps_per_server_core = round(step.achieved_cps / step.server_cpu_cores, 1)

        # Let the last calls and their transactions settle; measure the server meanwhile.
        if alive:
            pause_cpu = proc_cpu_seconds(server.pid)
            pause_start = time.monotonic()
            time.sleep(self.args.pause)
            if server.running():
                step.server_cpu_pause_cores = round(
                    (proc_cpu_seconds(server.pid) - pause_cpu) / (time.monotonic() - pause_start),
                    3,
                )
            step.server_alive = server.running()
            if self.args.transport == "udp" and step.server_alive:
                step.server_answers_options = (
                    sip_options(server.host, server.port, timeout=2.0) is not None
                )
        lines = self.new_log_lines()
        step.server_log_warnings = len(lines)
        step.server_log_samples = lines[:5]
        self.judge(step)
        return step

    @staticmethod
    def judge(step: StepResult) -> None:
        """Decide whether the step sustained its rate; say why not."""
        reasons = []
        if not step.server_alive:
            reasons.append("server exited")
        if step.sipp_timed_out:
            reasons.append("sipp timed out")
        if step.failed_calls:
            reasons.append(f"{step.failed_calls} failed calls")
        if step.failed_max_udp_retrans:
            reasons.append(f"{step.failed_max_udp_retrans} calls failed on max UDP retransmissions")
        if step.successful_calls < step.calls_attempted:
            reasons.append(f"{step.successful_calls}/{step.calls_attempted} calls succeeded")
        if any(rc not in (0,) for rc in step.sipp_exit_codes):
            reasons.append(f"sipp exit codes {step.sipp_exit_codes}")
        if step.achieved_cps < ACHIEVED_FRACTION * step.target_cps:
            reasons.append(
                f"achieved {step.achieved_cps} cps < {ACHIEVED_FRACTION:.0%} of {step.target_cps}"
            )
        step.passed = not reasons
        step.stop_reason = "; ".join(reasons) or None

    def ramp(self) -> tuple[list[StepResult], StepResult | None]:
        """Run the warm-up, then the steps until one fails or ``--max`` is passed."""
        args = self.args
        warmup: StepResult | None = None
        if args.warmup > 0:
            log(f"warm-up: {args.start} cps for {args.warmup} s")
            warmup = self.run_step(0, args.start, args.warmup)
        steps: list[StepResult] = []
        rate = args.start
        index = 1
        while rate <= args.max:
            log(f"step {index}: {rate} cps for {args.duration} s")
            step = self.run_step(index, rate, args.duration)
            steps.append(step)
            log(
                f"  achieved {step.achieved_cps} cps, ok {step.successful_calls}, "
                f"failed {step.failed_calls}, retrans {step.retransmissions}, "
                f"server {step.server_cpu_cores} cores, sipp {step.sipp_cpu_cores} cores, "
                f"rt {step.response_time_ms_mean} ms, server udp drops {step.server_udp_drops}"
                + ("" if step.passed else f"  -> STOP: {step.stop_reason}")
            )
            if not step.passed:
                break
            rate += args.step
            index += 1
        return steps, warmup

    def stop_all(self) -> int | None:
        """Stop sipp instances still running and the server, each by its PID."""
        for proc in list(self.live):
            stop_process(proc)
            self.live.remove(proc)
        if self.server is None:
            return None
        return self.server.stop(grace=15.0)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="Ramp sipp's call rate against the hold app; print one JSON object."
    )
    parser.add_argument("--start", type=int, default=100, help="first rate, calls/s (100)")
    parser.add_argument("--step", type=int, default=100, help="rate increment, calls/s (100)")
    parser.add_argument("--max", type=int, default=2000, help="highest rate tried, calls/s (2000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step (10)")
    parser.add_argument(
        "--sipp-instances",
        type=int,
        default=None,
        help="sipp UACs per step, the rate split between them "
        f"(default: 1 per {SIPP_CPS_PER_INSTANCE} cps, as one sipp saturates near 1,000 cps)",
    )
    parser.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between steps (2)")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds at --start before the ramp, not counted"
    )
    parser.add_argument("--max-calls", type=int, default=5000, help="the server's sip.max_calls")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="warning"
    )
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter that runs the server (this one)"
    )
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="run the server under cProfile and write its stats here (slows it down)",
    )
    parser.add_argument(
        "--gc-threshold",
        metavar="A,B,C",
        help="the server's MEDIASERVER_GC_THRESHOLD (default: the server's own)",
    )
    parser.add_argument(
        "--cluster",
        type=int,
        default=0,
        metavar="N",
        help="run `mediaserver cluster --workers N` (Kamailio in front) instead of one process",
    )
    parser.add_argument("--workdir", help="keep logs and sipp CSVs here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.cluster and args.transport != "udp":
        parser.error("--cluster: Kamailio listens on UDP")
    if args.start <= 0 or args.step <= 0 or args.max < args.start:
        parser.error("need 0 < --start <= --max and --step > 0")
    if args.duration <= 0:
        parser.error("--duration must be positive")
    return args


def summarise(
    args: argparse.Namespace,
    steps: list[StepResult],
    warmup: StepResult | None,
    bench: Bench,
    started_at: str,
    server_rc: int | None,
    error: str | None,
) -> dict[str, Any]:
    """The JSON report."""
    passed = [s for s in steps if s.passed]
    best = max(passed, key=lambda s: s.target_cps) if passed else None
    clean = [s for s in passed if s.retransmissions == 0 and not s.server_udp_drops]
    best_clean = max(clean, key=lambda s: s.target_cps) if clean else None
    per_core = best.cps_per_server_core if best else None
    first_fail = next((s for s in steps if not s.passed), None)
    return {
        "benchmark": "sip_call_setup_rate",
        "command": shlex.join(["python", *sys.argv]),
        "started_at": started_at,
        "commit": git_commit(),
        "machine": {
            "cpu_cores": os.cpu_count(),
            "cpu_model": cpu_model(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "loadavg_at_start": list(os.getloadavg()),
        },
        "server": {
            "pid": bench.server_pid,
            "threads": bench.threads,
            "exit_code": server_rc,
            "transport": args.transport,
            "profile": args.profile,
            "cluster_workers": args.cluster,
        },
        "sipp": {
            "binary": bench.sipp,
            "scenario": "built-in uac (INVITE, 200, ACK, 0 ms pause, BYE, 200)",
            "instances": args.sipp_instances or f"auto (1 per {SIPP_CPS_PER_INSTANCE} cps)",
        },
        "settings": {
            "start": args.start,
            "step": args.step,
            "max": args.max,
            "duration_s": args.duration,
            "pause_s": args.pause,
            "warmup_s": args.warmup,
            "pass_rule": "0 failed calls, every call succeeded, sipp exit 0, "
            f"achieved >= {ACHIEVED_FRACTION:.0%} of target",
        },
        "best_target_cps": best.target_cps if best else None,
        "best_cps": best.achieved_cps if best else None,
        "best_clean_target_cps": best_clean.target_cps if best_clean else None,
        "best_clean_note": "highest passing step that also had 0 sipp retransmissions "
        "and 0 datagrams dropped on the server's socket",
        "best_step_server_cpu_cores": best.server_cpu_cores if best else None,
        "cps_per_core": per_core,
        "goal_cps_per_core": GOAL_CPS_PER_CORE,
        "meets_goal": per_core is not None and per_core >= GOAL_CPS_PER_CORE,
        "max_reached_without_failure": first_fail is None and bool(steps),
        "stopped_at": (
            {"target_cps": first_fail.target_cps, "reason": first_fail.stop_reason}
            if first_fail
            else None
        ),
        "error": error,
        "warmup": asdict(warmup) if warmup else None,
        "steps": [asdict(s) for s in steps],
        "workdir": str(bench.workdir) if args.workdir else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the ramp; print the JSON report on stdout."""
    args = parse_args(argv)
    sipp = which("sipp")
    if sipp is None:
        log("sipp is not installed (Debian package sip-tester)")
        return 2
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="sip_cps_"))
    bench = Bench(args, workdir, sipp)
    steps: list[StepResult] = []
    warmup: StepResult | None = None
    error: str | None = None
    server_rc: int | None = None

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        server = bench.start_server()
        bench.threads = proc_threads(server.pid)
        steps, warmup = bench.ramp()
        if server.running():
            bench.threads = proc_threads(server.pid)
    except KeyboardInterrupt as exc:
        error = f"interrupted ({exc})"
    except (ServerNotReady, OSError, RuntimeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        log(error)
    finally:
        server_rc = bench.stop_all()
    if bench.server is not None:
        tail = bench.new_log_lines()
        if tail:
            log(f"server log after the ramp ({len(tail)} lines), first: {tail[:3]}")
    report = summarise(args, steps, warmup, bench, started_at, server_rc, error)
    print(json.dumps(report, indent=2))
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if error is None and steps else 1


if __name__ == "__main__":
    sys.exit(main())
