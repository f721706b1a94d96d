"""`mediaserver` command line.

mediaserver run conf/mediaserver.yaml            a server config
mediaserver run examples/support_agent.py        a Python agent program
mediaserver run agent.py --config server.yaml    ... with a server config
mediaserver cluster conf/mediaserver.yaml        N workers behind Kamailio
mediaserver dial sip:bob@pbx --agent reminders   a running server calls bob
mediaserver campaign list.csv --agent reminders  ... calls a list, within caps
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from typing import TYPE_CHECKING

import uvloop

from mediaserver.config import ConfigError, load_config
from mediaserver.observability.logging import configure

if TYPE_CHECKING:
    from mediaserver.agent.base import AgentBase


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mediaserver` console script."""
    parser = argparse.ArgumentParser(prog="mediaserver")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a server config, or a Python agent program")
    run.add_argument(
        "target", help="a YAML server config (see conf/mediaserver.yaml) or an agent .py file"
    )
    run.add_argument(
        "--config", help="with an agent .py: the server config for media, models and logging"
    )
    run.add_argument("--worker", help=argparse.SUPPRESS)  # I/N, set by `cluster`
    run.add_argument("--worker-port", type=int, help=argparse.SUPPRESS)
    cluster = sub.add_parser(
        "cluster", help="run a server config as N workers behind Kamailio (one per core)"
    )
    cluster.add_argument("target", help="a YAML server config; Kamailio takes its UDP listener")
    cluster.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="worker processes (cores)"
    )
    cluster.add_argument(
        "--worker-port", type=int, help="first worker SIP port (default: the front port + 1)"
    )
    call = sub.add_parser("call", help="place a test call and print what the agent said")
    call.add_argument("uri", help="e.g. sip:support@127.0.0.1:5060")
    what = call.add_mutually_exclusive_group()
    what.add_argument("--say", help="say this (espeak-ng) after the greeting")
    what.add_argument("--play", help="play this WAV after the greeting")
    call.add_argument("--record", help="write what the agent said to this WAV")
    call.add_argument("--dtmf", help="then press these keys (RFC 4733)")
    call.add_argument("--timeout", type=float, default=30.0, help="seconds for the whole call")
    dial = sub.add_parser(
        "dial", help="have a running server call someone (POST /calls on its admin HTTP)"
    )
    dial.add_argument("to", help="a SIP URI, a number (through the trunks) or a registered user")
    dial.add_argument("--agent", required=True, help="the route whose app talks to the callee")
    dial.add_argument("--config", help="the server's config (for its admin address and token)")
    dial.add_argument("--admin", help="the admin URL instead, e.g. http://127.0.0.1:8080")
    dial.add_argument("--token", help="admin token (default: $MEDIASERVER_ADMIN_TOKEN, config)")
    dial.add_argument("--caller-id", help="the number or user we call from")
    dial.add_argument("--caller-name", help="the display name we call with")
    dial.add_argument("--ring-timeout", type=float, help="seconds to ring (default 30)")
    dial.add_argument(
        "--var", action="append", default=[], metavar="KEY=VALUE", help="into global data"
    )
    dial.add_argument("--idempotency-key", help="a retry with the same key never dials twice")
    dial.add_argument("--webhook", help="POST status reports (ringing, answered, ended) here")
    dial.add_argument("--amd", choices=("off", "detect", "detect_and_leave_message"))
    dial.add_argument("--wait", action="store_true", help="follow the call until it ends")
    campaign = sub.add_parser(
        "campaign", help="have a running server call a CSV list (POST /campaigns)"
    )
    campaign.add_argument("csv", help="a CSV file with a header row and a `to` column")
    campaign.add_argument("--agent", required=True, help="the route whose app talks")
    campaign.add_argument("--name", help="the campaign's name (default: the file's)")
    campaign.add_argument("--concurrency", type=int, default=10, help="calls up at most")
    campaign.add_argument("--cps", type=float, default=1.0, help="new calls a second at most")
    campaign.add_argument("--quiet-hours", help="HH:MM-HH:MM, callee's local time")
    campaign.add_argument("--timezone", help="for contacts without a tz column (UTC)")
    campaign.add_argument(
        "--retry", action="append", default=[], metavar="OUTCOME=NxSECONDS",
        help="e.g. busy=2x300 (up to 2 more tries, 5 minutes apart)",
    )  # fmt: skip
    for shared in ("--config", "--admin", "--token", "--caller-id", "--amd"):
        campaign.add_argument(shared)
    demo = sub.add_parser("demo", help="run the support agent and call it, printing the turns")
    demo.add_argument(
        "--say",
        default="Hi, could you check on my order? The number is forty two.",
        help="what the caller says",
    )
    args = parser.parse_args(argv)

    if args.command == "call":
        return _call(args)
    if args.command == "dial":
        from mediaserver.dial_cli import dial as place_call

        return place_call(args)
    if args.command == "campaign":
        from mediaserver.dial_cli import campaign as start_campaign

        return start_campaign(args)
    if args.command == "demo":
        return _demo(args.say)

    if args.command == "cluster":
        return _cluster(args)
    if args.command == "run" and args.target.endswith((".yaml", ".yml")) and not args.worker:
        agent = _yaml_agent(args.target)
        if agent is not None:
            agent.config_path = args.config or agent.config_path
            agent.run()
            return 0
    if args.command == "run" and args.target.endswith(".py"):
        if args.config:
            os.environ["MEDIASERVER_CONFIG"] = args.config
        # The program builds its agents and calls run(); it owns the process.
        sys.argv = [args.target]
        runpy.run_path(args.target, run_name="__main__")
        return 0
    if args.command == "run":
        try:
            config = load_config(args.target)
            if args.worker:
                from mediaserver.cluster import parse_worker

                config = parse_worker(args.worker, config, args.worker_port)
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return 2
        configure(config.logging.level, config.logging.format)
        from mediaserver.pipeline.errors import ModelLoadError
        from mediaserver.server import serve

        try:
            return uvloop.run(serve(config))
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return 2
        except ModelLoadError as exc:
            print(f"model error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"cannot start: {exc}", file=sys.stderr)
            return 1
    return 2


def _cluster(args: argparse.Namespace) -> int:
    """`mediaserver cluster`: Kamailio and the workers, supervised."""
    from mediaserver.cluster import Supervisor

    try:
        if not args.target.endswith((".yaml", ".yml")):
            raise ConfigError(f"{args.target}: the cluster runs a YAML server config")
        config = load_config(args.target)
        if args.workers < 1:
            raise ConfigError("--workers: at least 1")
        supervisor = Supervisor(args.target, config, args.workers, args.worker_port)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    configure(config.logging.level, config.logging.format)
    try:
        return uvloop.run(supervisor.run())
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2


def _yaml_agent(path: str) -> AgentBase | None:
    """The agent a YAML file declares, or None when it is a server config."""
    import yaml

    from mediaserver.agent.yaml_agent import is_agent_file, load_agent

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError):
        return None  # load_config reports it, naming the file
    if not is_agent_file(data):
        return None
    try:
        return load_agent(path)
    except ConfigError as exc:
        print(f"agent error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _call(args: argparse.Namespace) -> int:
    """`mediaserver call`: 0 when the call was answered, 1 otherwise."""
    import asyncio
    from pathlib import Path

    from mediaserver.dialer import place_call, print_report

    configure("warning", "console")
    try:
        report = asyncio.run(
            place_call(
                args.uri,
                say=args.say,
                play=Path(args.play) if args.play else None,
                dtmf=args.dtmf,
                record=Path(args.record) if args.record else None,
                timeout=args.timeout,
            )
        )
    except ValueError as exc:
        print(f"call error: {exc}", file=sys.stderr)
        return 2
    print_report(report)
    return 0 if report is not None and report.answered else 1


def _demo(say: str) -> int:
    """`mediaserver demo`: examples/support_agent.py on free local ports, one call to it."""
    import asyncio
    import json
    import signal
    import socket
    import subprocess
    import tempfile
    import time
    from pathlib import Path

    from mediaserver.dialer import place_call, print_report

    program = Path(__file__).resolve().parent.parent / "examples" / "support_agent.py"
    if not program.is_file():
        print(f"demo error: {program} not found (run from a source checkout)", file=sys.stderr)
        return 2
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    work = Path(tempfile.mkdtemp(prefix="mediaserver-demo-"))
    config = work / "server.yaml"
    config.write_text(
        "media: {port_min: 47000, port_max: 47999}\n"
        "logging: {format: json}\n"
        "admin: {port: 0}\n"
        "pipeline: {stt: {pool_size: 1}, turn: {end_of_speech_timeout: 0.5}}\n"
    )
    log_path = work / "server.log"
    report = None
    print(f"starting {program.name} on sip:support@127.0.0.1:{port} (log: {log_path})")
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "mediaserver", "run", str(program), "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PORT": str(port), "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 30
            while b'"ready"' not in log_path.read_bytes():
                if server.poll() is not None or time.monotonic() > deadline:
                    print(log_path.read_text(errors="replace")[-2000:], file=sys.stderr)
                    print("demo error: the agent did not start", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            print(f'calling it; the caller will say: "{say}"\n')
            report = asyncio.run(place_call(f"sip:support@127.0.0.1:{port}", say=say, timeout=30))
            print_report(report)
            time.sleep(0.5)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
    print("\nthe conversation, as the server saw it:")
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "agent_said":
            print(f"  agent:  {event['text']}")
        elif event.get("event") == "caller_said":
            print(f"  caller: {event['text']}")
        elif event.get("event") == "turn_latency":
            parts = ", ".join(
                f"{k.removesuffix('_ms')} {event[k]:.0f} ms"
                for k in (
                    "voice_to_voice_ms",
                    "endpointing_ms",
                    "stt_finalise_ms",
                    "llm_first_token_ms",
                    "tts_first_audio_ms",
                    "overhead_ms",
                )
            )
            print(f"          ({parts})")
    return 0 if report is not None and report.answered else 1
