"""Cost of writing call-record events: what `CallRecord.add` costs the event loop.

Each event is committed before `add` returns (SQLite WAL, synchronous=NORMAL),
so this is the price of "a crash loses at most the event being written". Runs
N events of a realistic size through a real `CallStore` into a fresh SQLite
file (and into PostgreSQL when --dsn is given), side by side with a memory-only
store, and prints one JSON object.

    .venv/bin/python bench/records_write.py --events 20000
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mediaserver.call.store import CallStore
from mediaserver.observability.logging import configure

#: A turn event as the actor writes it (texts and the latency split).
TURN: dict[str, Any] = {
    "turn": 3,
    "caller_text": "what is the status of order four two",
    "assistant_generated": "Order 42: shipped, ETA April 2nd.",
    "assistant_heard": "Order 42: shipped, ETA April 2nd.",
    "latency_ms": {
        "voice_to_voice_ms": 512.3,
        "endpointing_ms": 500.1,
        "stt_finalise_ms": 3.4,
        "llm_first_token_ms": 1.1,
        "llm_first_sentence_ms": 1.2,
        "tts_first_audio_ms": 1.5,
        "overhead_ms": 6.2,
    },
}


def run(store: CallStore, events: int, repeats: int) -> dict[str, float]:
    """Per-event cost of `add` over `repeats` rounds of `events` events (microseconds)."""
    rounds = []
    for r in range(repeats):
        record = store.start_call(f"bench-{r}", call_id=f"{r}@bench", route="bench")
        started = time.perf_counter()
        for _ in range(events):
            record.add("turn", TURN)
        rounds.append((time.perf_counter() - started) / events * 1e6)
        record.finish("bench", "local", {})
    return {
        "us_per_event_median": round(statistics.median(rounds), 2),
        "us_per_event_min": round(min(rounds), 2),
        "us_per_event_max": round(max(rounds), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dsn", default=None, help="also measure PostgreSQL at this DSN")
    args = parser.parse_args()
    configure("info")  # as the server runs: the per-event debug line is filtered out
    out: dict[str, Any] = {
        "benchmark": "records_write",
        "command": " ".join(["python", *sys.argv]),
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "events_per_round": args.events,
        "repeats": args.repeats,
    }
    memory = CallStore(None)
    out["memory_only"] = run(memory, args.events, args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        sqlite = CallStore(Path(folder) / "calls.db")
        out["sqlite_wal"] = run(sqlite, args.events, args.repeats)
        out["sqlite_backlog"] = sqlite.backlog
        sqlite.close()
    if args.dsn:
        pg = CallStore(None, dsn=args.dsn)
        out["postgres"] = run(pg, args.events, args.repeats)
        out["postgres_backlog"] = pg.backlog
        pg.close()
    out["sqlite_over_memory_us"] = round(
        out["sqlite_wal"]["us_per_event_median"] - out["memory_only"]["us_per_event_median"], 2
    )
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
