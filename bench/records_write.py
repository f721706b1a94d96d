"""Cost of writing call-record events: what `CallRecord.add` costs the event loop,
and how fast the writer thread commits them.

`add` queues the event; one writer thread commits the queue in batches (one
transaction each). Side by side in one run, per store (memory only, a fresh
SQLite file in WAL mode, and PostgreSQL when --dsn is given):

- `direct`: one transaction per event on the caller's thread, as the store did
  before the writer thread (the baseline the ratios are taken against);
- `queued`: `add` through a real `CallStore`: the loop's cost per event, then
  how long the writer takes to commit the burst (events per second);
- `paced` (with --rate): events at a steady rate spread over many calls (the
  event rate of 10,000 concurrent calls, say) for --seconds: the loop's cost and
  the writer's backlog (max and at the end), i.e. whether the writer keeps up.

    .venv/bin/python bench/records_write.py --events 20000 --rate 5000 --seconds 10
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


def direct(store: CallStore, events: int, repeats: int) -> dict[str, float]:
    """One committed transaction per event on this thread (the old path)."""
    database = store.database
    assert database is not None
    db = database.connect(wait=False)
    rounds = []
    for r in range(repeats):
        call = f"direct-{r}"
        summary = dict.fromkeys(("call_id", "agent", "caller"))
        database.write(db, "call", {**summary, "id": call, "route": "bench", "started_at": 0.0})
        started = time.perf_counter()
        for seq in range(1, events + 1):
            event = {"seq": seq, "t": time.time(), "kind": "turn", "data": TURN}
            database.write(db, "event", (call, event, None))
        rounds.append((time.perf_counter() - started) / events * 1e6)
    db.close()
    return _spread(rounds)


def queued(store: CallStore, events: int, repeats: int) -> dict[str, Any]:
    """`add` through the store: the caller's cost, then the writer's drain."""
    rounds, drains = [], []
    for r in range(repeats):
        record = store.start_call(f"bench-{r}", call_id=f"{r}@bench", route="bench")
        started = time.perf_counter()
        for _ in range(events):
            record.add("turn", TURN)
        added = time.perf_counter()
        record.finish("bench", "local", {})
        if not store.flush(120):
            raise SystemExit("the writer did not drain within 120 s")
        rounds.append((added - started) / events * 1e6)
        drains.append(time.perf_counter() - started)
    return {
        **_spread(rounds),
        "writer_events_per_s_median": round(events / statistics.median(drains)),
    }


def paced(store: CallStore, rate: int, seconds: float, calls: int) -> dict[str, Any]:
    """Events at `rate` per second over `calls` open calls for `seconds`."""
    records = [store.start_call(f"paced-{n}", route="bench") for n in range(calls)]
    store.flush(30)
    tick = 0.01  # add in 10 ms chunks, as a loop serving many calls would
    per_tick = max(1, round(rate * tick))
    added = 0
    spent = 0.0
    max_backlog = 0
    started = time.perf_counter()
    deadline = started + seconds
    next_tick = started
    while (now := time.perf_counter()) < deadline:
        if now < next_tick:
            time.sleep(next_tick - now)
        t0 = time.perf_counter()
        for _ in range(per_tick):
            records[added % calls].add("turn", TURN)
            added += 1
        spent += time.perf_counter() - t0
        max_backlog = max(max_backlog, store.backlog)
        next_tick += tick
    elapsed = time.perf_counter() - started
    end_backlog = store.backlog
    drain_started = time.perf_counter()
    store.flush(120)
    return {
        "target_events_per_s": rate,
        "events_per_s": round(added / elapsed),
        "calls": calls,
        "loop_us_per_event": round(spent / added * 1e6, 2),
        "max_backlog": max_backlog,
        "backlog_at_end": end_backlog,
        "drain_after_end_s": round(time.perf_counter() - drain_started, 3),
        "dropped": store.dropped,
        "write_errors": store.write_errors,
    }


def _spread(rounds: list[float]) -> dict[str, float]:
    return {
        "us_per_event_median": round(statistics.median(rounds), 2),
        "us_per_event_min": round(min(rounds), 2),
        "us_per_event_max": round(max(rounds), 2),
    }


def measure(store: CallStore, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "direct": direct(store, args.events, args.repeats),
        "queued": queued(store, args.events, args.repeats),
    }
    out["loop_cost_ratio_direct_over_queued"] = round(
        out["direct"]["us_per_event_median"] / out["queued"]["us_per_event_median"], 1
    )
    if args.rate:
        out["paced"] = paced(store, args.rate, args.seconds, args.calls)
    store.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rate", type=int, default=0, help="paced events per second (0: skip)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--calls", type=int, default=10000, help="open calls in the paced run")
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
    out["memory_only"] = queued(CallStore(None), args.events, args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        out["sqlite_wal"] = measure(CallStore(Path(folder) / "calls.db"), args)
    if args.dsn:
        out["postgres"] = measure(CallStore(None, dsn=args.dsn), args)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
