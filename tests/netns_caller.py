"""One baresip call placed from inside a network namespace (tests/test_netem.py
runs this module with ``ip netns exec``): the harness talks to baresip over its
ctrl_tcp socket on 127.0.0.1, which is the namespace's own loopback, so the
harness must run in there too. Prints the outcome as one JSON object.

    python -m tests.netns_caller URI WORKDIR --host ADDR --source WAV --seconds S
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tests.peers import run_baresip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("uri")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--host", required=True, help="this namespace's address")
    parser.add_argument("--source", type=Path, required=True, help="the caller's WAV")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    result = run_baresip(
        args.uri, args.workdir, seconds=args.seconds, source_wav=args.source, host=args.host
    )
    outcome = {
        "established": result.established,
        "events": result.event_types(),
        "describe": result.describe(),
    }
    print(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
