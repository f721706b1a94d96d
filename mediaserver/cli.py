"""`mediaserver` command line.

    mediaserver run conf/mediaserver.yaml            a server config
    mediaserver run examples/support_agent.py        a Python agent program
    mediaserver run agent.py --config server.yaml    ... with a server config
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
    args = parser.parse_args(argv)

    if args.command == "run" and args.target.endswith((".yaml", ".yml")):
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
