"""End-to-end demo: start mediaserver, call it with baresip and with sipp, stop it.

Run with ``make demo`` (which sets up .venv first) or ``.venv/bin/python scripts/demo.py``.
The server gets conf/mediaserver.yaml with free ports, and its ``hold`` route
rings for 1 s, answers, and hangs up after 4 s. Exits non-zero if a call failed.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.peers import (  # noqa: E402  (needs the repo root on sys.path)
    ServerNotReady,
    ServerProcess,
    best_alignment,
    caller_wav,
    deep_merge,
    free_port,
    free_rtp_range,
    read_wav_mono,
    run_baresip,
    run_sipp,
    which,
)

HOLD_SECONDS = 4
RING_SECONDS = 1


def demo_config(duration: int, ring: int) -> dict[str, Any]:
    """conf/mediaserver.yaml on free ports, with a short ``hold`` route."""
    conf_dir = REPO_ROOT / "conf"
    base = yaml.safe_load((conf_dir / "mediaserver.yaml").read_text())
    # The copy lives in a temporary folder: anchor its relative paths to conf/.
    for route in base.get("routes", {}).values():
        for key in ("file", "directory"):
            if key in route:
                route[key] = str(conf_dir / route[key])
    media = base.setdefault("media", {})
    media["recordings_dir"] = str(conf_dir / media.get("recordings_dir", "recordings"))
    port = free_port()
    rtp_min, rtp_max = free_rtp_range(100)
    return deep_merge(
        base,
        {
            "sip": {
                "listen": [
                    {"transport": "udp", "host": "127.0.0.1", "port": port},
                    {"transport": "tcp", "host": "127.0.0.1", "port": port},
                ]
            },
            "media": {"port_min": rtp_min, "port_max": rtp_max},
            "routes": {
                "hold": {"app": "hold", "duration": duration, "ring": ring},
                "echo": {"app": "echo", "duration": 0},
            },
            "admin": {"port": 0},
            "shutdown": {"drain_timeout": 5},
        },
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=HOLD_SECONDS, help="hold route duration")
    parser.add_argument("--ring", type=int, default=RING_SECONDS, help="seconds of ringing")
    parser.add_argument("--keep", action="store_true", help="keep the work folder on success")
    parser.add_argument(
        "--server-cmd",
        help="command that starts the server, config path appended "
        "(default: the current python -m mediaserver run)",
    )
    args = parser.parse_args()

    missing = [name for name in ("baresip", "sipp", "espeak-ng", "sox") if which(name) is None]
    if missing:
        print(f"missing peers: {', '.join(missing)}; run scripts/setup.sh first", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="mediaserver-demo-"))
    print(f"work folder: {workdir}")
    command = shlex.split(args.server_cmd) if args.server_cmd else None
    server = ServerProcess(
        demo_config(args.duration, args.ring), workdir / "server", command=command
    )
    failures: list[str] = []
    try:
        print(f"starting: {' '.join(server.command)} {server.config_path}")
        server.start()
        try:
            reply = server.wait_ready(15.0)
        except ServerNotReady as exc:
            print(f"server did not come up: {exc}", file=sys.stderr)
            return 1
        print(f"server pid {server.pid} on {server.target}: OPTIONS -> {reply.first_line}")

        # 1. A real softphone. Its audio outlasts the hold, so the server hangs up.
        uri = server.uri("hold")
        print(f"\n[baresip] dialing {uri} (server rings {args.ring} s, holds {args.duration} s)")
        call = run_baresip(
            uri,
            workdir / "baresip",
            seconds=args.ring + args.duration + 20,
            pad_seconds=args.ring + args.duration + 5,
        )
        print(f"[baresip] events: {' '.join(call.event_types())}")
        if call.established:
            if call.remote_hangup:
                who = "the server (BYE)"
            elif call.closed_reason == "end of file":
                who = "the caller (its audio ended)"
            else:
                who = f"unclear ({call.closed_reason or 'no CALL_CLOSED event'})"
            seconds = call.call_seconds
            length = f"{seconds:.1f} s" if seconds is not None else "unknown"
            print(f"[baresip] call established; hung up by {who}; lasted {length}")
            for wav in call.recordings:
                print(f"[baresip] recording: {wav}")
            if not call.remote_hangup:
                failures.append(f"baresip: expected the server to hang up, got {who}")
        else:
            print(f"[baresip] call FAILED\n{call.describe()}")
            failures.append("baresip call was not established")

        # 2. Media: baresip talks to `echo` and presses keys; what it hears back
        # should be what it said, and the server should log the digits.
        uri = server.uri("echo")
        print(f"\n[echo] baresip dials {uri}, speaks, and presses 4 2 #")
        echo_call = run_baresip(
            uri,
            workdir / "echo",
            seconds=20,
            text="hello echo, this is the media server demo",
            pad_seconds=3,
            dtmf="42#",
        )
        if echo_call.established and echo_call.heard_wav is not None:
            said, _ = read_wav_mono(echo_call.source_wav)
            heard, _ = read_wav_mono(echo_call.heard_wav)
            _lag, corr = best_alignment(said, heard)
            print(f"[echo] heard back what it said: correlation {corr:.3f} (1.0 = identical)")
            digits = "".join(
                line.split("digit=")[1].split()[0]
                for line in server.wait_log("call_ended", count=2).splitlines()
                if " dtmf " in f" {line} " and "via=rfc4733" in line
            )
            print(f"[echo] digits the server reported: {digits or '(none)'}")
            if corr < 0.95:
                failures.append(f"echo correlation {corr:.3f} < 0.95")
            if digits != "42#":
                failures.append(f"expected digits 42#, server logged {digits!r}")
        else:
            print(f"[echo] call FAILED\n{echo_call.describe()}")
            failures.append("echo call was not established")

        # 3. The AI agent: baresip asks the weather line a question in everyday words
        # and should hear the answer its tool gives (Whisper -> scripted engine ->
        # espeak-ng).
        uri = server.uri("weather")
        question = "Hi, what's the weather like in Paris today?"
        print(f"\n[agent] baresip dials {uri} and asks: {question}")
        source = caller_wav(question, workdir / "agent-caller")
        agent_call = run_baresip(uri, workdir / "agent", seconds=25, source_wav=source)
        log_text = server.log_text()
        said = [line for line in log_text.splitlines() if "caller_said" in line]
        heard_question = any("paris" in line.lower() for line in said)
        for line in said:
            print(f"[agent] the server heard: {line.split('text=', 1)[-1].split(' turn=')[0]}")
        answered = "text='It is sunny in paris today.'" in log_text
        latency = [line for line in log_text.splitlines() if "turn_latency" in line]
        if agent_call.established:
            print(f"[agent] the server heard the question: {'yes' if heard_question else 'NO'}")
            print(f"[agent] the agent answered 'It is sunny in paris today.': "
                  f"{'yes' if answered else 'NO'}")
            if latency:
                print(f"[agent] {latency[-1].split('turn_latency', 1)[1].strip()}")
            if agent_call.heard_wav is not None:
                print(f"[agent] what baresip heard: {agent_call.heard_wav}")
            if not (heard_question and answered):
                failures.append("the agent did not answer the weather question")
        else:
            print(f"[agent] call FAILED\n{agent_call.describe()}")
            failures.append("agent call was not established")

        # 4. sipp's built-in uac: INVITE, 200, ACK, 1 s pause, BYE.
        print(f"\n[sipp] built-in uac scenario to {server.target} (caller hangs up after 1 s)")
        result = run_sipp(
            ["-sn", "uac", "-s", "hold", "-d", "1000", server.target],
            timeout=args.ring + 20,
            cwd=workdir / "sipp",
            stats=True,
        )
        if result.ok:
            stats = result.stats or {}
            print(
                "[sipp] call succeeded "
                f"(successful={stats.get('SuccessfulCall(C)', '?')}, "
                f"failed={stats.get('FailedCall(C)', '?')}, "
                f"retransmissions={stats.get('Retransmissions(C)', '?')})"
            )
        else:
            print(f"[sipp] call FAILED\n{result.describe()}")
            failures.append(f"sipp uac exited {result.rc}")

        # 3. Graceful stop, by PID.
        print(f"\nstopping server pid {server.pid} with SIGTERM")
        try:
            code = server.terminate(timeout=15.0)
            print(f"server exited with code {code}")
            if code != 0:
                failures.append(f"server exited with code {code} on SIGTERM")
        except subprocess.TimeoutExpired:
            failures.append("server did not exit within 15 s of SIGTERM")
    finally:
        server.stop(grace=10.0)
        print("\n" + server.log_tail(30))
        if failures or args.keep:
            print(f"logs, traces and recordings kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if failures:
        print("\nDEMO FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("\ndemo OK: baresip, agent and sipp calls completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
