"""`mediaserver` command line: `mediaserver run CONFIG`."""

from __future__ import annotations

import argparse
import sys

import uvloop

from mediaserver.config import ConfigError, load_config
from mediaserver.observability.logging import configure


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mediaserver` console script."""
    parser = argparse.ArgumentParser(prog="mediaserver")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the server with a YAML config")
    run.add_argument("config", help="path to the YAML config (see conf/mediaserver.yaml)")
    args = parser.parse_args(argv)

    if args.command == "run":
        try:
            config = load_config(args.config)
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
