#!/usr/bin/env python3
"""Count the server's MediaClock wake-ups with one idle paced object, on uvloop.

uvloop's ``loop.time()`` has 1 ms resolution (libuv's cached ``uv_now``). The
clock compares it with float deadlines ``start + tick * 0.001``; when rounding
puts a due deadline a hair above ``now``, the tick looks not yet due, ``call_at``
gets a delay that rounds to 0 ms and the clock runs again at once, over and
over, until the next millisecond. Whether that happens depends on the start
time's float value, so some runs spin and some do not. Each run below uses
the server's own ``MediaClock`` (``_run`` wrapped only to count calls) for
``--seconds`` and prints ticks served, ``_run`` calls and CPU used::

    .venv/bin/python bench/clock_spin.py --runs 3 --seconds 3

Nothing binds a socket; bounded by ``--runs * --seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import uvloop  # noqa: E402

from mediaserver.media import clock as media_clock  # noqa: E402


class Idle(media_clock.Paced):
    """A paced object with nothing to do: counts its ticks."""

    def __init__(self) -> None:
        self.ticks = 0

    def on_tick(self, now: float, late: float) -> None:
        self.ticks += 1


async def one_run(seconds: float) -> dict[str, Any]:
    """Run one MediaClock with one idle object for ``seconds``; count its wake-ups."""
    loop = asyncio.get_running_loop()
    clock = media_clock.MediaClock(loop)
    calls = 0
    original = clock._run

    def counted() -> None:
        nonlocal calls
        calls += 1
        original()

    clock._run = counted  # type: ignore[method-assign]
    idle = Idle()
    cpu0, wall0 = time.process_time(), time.monotonic()
    clock.add(idle)
    await asyncio.sleep(seconds)
    clock.remove(idle)
    wall = time.monotonic() - wall0
    return {
        "ticks": round(wall * 1000),
        "object_ticks": idle.ticks,
        "run_calls": calls,
        "run_calls_per_tick": round(calls / max(1, wall * 1000), 1),
        "cpu_cores": round((time.process_time() - cpu0) / wall, 3),
        "lateness_p99_ms": round(clock.stats.percentile(99) * 1000, 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Several runs; one JSON object on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    runs = [uvloop.run(one_run(args.seconds)) for _ in range(max(1, args.runs))]
    print(json.dumps({"uvloop": version("uvloop"), "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
