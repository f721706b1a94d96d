"""CallStore / CallRecord: the per-call timeline in SQLite (WAL), committed by one
writer thread in batches, read back by a new store, kept in memory without a
file, and never in the calls' way when the database fails: a corrupt file or a
lock held by another connection keeps events queued, and they are written, in
order, once the database takes them again."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from mediaserver.call import store as store_module
from mediaserver.call.store import RECENT_IN_MEMORY, CallRecord, CallStore

#: Seconds between the writer's attempts during an outage in these tests.
RETRY = 0.05
#: Bound on any wait for the writer.
DRAIN_TIMEOUT = 10.0

Logs = list[MutableMapping[str, Any]]


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Logs:
    """The store module's log lines (all levels), whatever structlog's global setup."""
    capture = LogCapture()
    logger = structlog.wrap_logger(
        None,
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    monkeypatch.setattr(store_module, "log", logger)
    return capture.entries


@pytest.fixture
def new_store() -> Iterator[Callable[..., CallStore]]:
    """Factory for stores that are closed (their writer stopped) at teardown."""
    stores: list[CallStore] = []

    def make(path: Path | None, **kwargs: Any) -> CallStore:
        store = CallStore(path, **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close(timeout=1.0)


def _named(logs: Logs, event: str) -> Logs:
    return [entry for entry in logs if entry["event"] == event]


def _logged(logs: Logs, event: str, count: int) -> Callable[[], bool]:
    return lambda: len(_named(logs, event)) == count


def _wait_for(condition: Callable[[], bool], timeout: float = DRAIN_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """A read on a connection of its own (as another process would see the file)."""
    with closing(sqlite3.connect(path, timeout=0)) as db:
        return db.execute(sql, args).fetchall()


def _written(path: Path) -> list[tuple[str, int, str]]:
    """Every event in the file as (call, seq, kind), in the order it was written."""
    return [
        (call, seq, kind)
        for call, seq, kind in _rows(path, "SELECT call, seq, kind FROM events ORDER BY rowid")
    ]


def _added(*records: CallRecord) -> set[tuple[str, int, str]]:
    return {(r.id, e["seq"], e["kind"]) for r in records for e in r.events}


def _assert_in_order(path: Path, *records: CallRecord) -> None:
    """Every event of `records` is in the file exactly once, each call's with seq
    1..n, written in the order of seq (rowid order)."""
    written = _written(path)
    assert len(written) == len(set(written))
    assert set(written) == _added(*records)
    for record in records:
        seqs = [seq for call, seq, _ in written if call == record.id]
        assert seqs == list(range(1, len(record.events) + 1)), (record.id, seqs)


def _json_round_trip(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _lock(path: Path) -> sqlite3.Connection:
    """Another connection holding the write lock (BEGIN EXCLUSIVE); verified."""
    # Waits for a commit of the writer's in progress, if any.
    other = sqlite3.connect(path, isolation_level=None, timeout=DRAIN_TIMEOUT)
    other.execute("BEGIN EXCLUSIVE")
    probe = sqlite3.connect(path, isolation_level=None, timeout=0)
    with closing(probe), pytest.raises(sqlite3.OperationalError, match="locked"):
        probe.execute("INSERT INTO events VALUES ('probe', 1, 0, 'probe', '{}')")
    return other


def _unlock(other: sqlite3.Connection) -> None:
    other.execute("ROLLBACK")
    other.close()


# ---------------------------------------------------------------- round trip


def _sample_call(store: CallStore, call: str = "c1") -> CallRecord:
    record = store.start_call(
        call,
        call_id=f"{call}@127.0.0.1",
        route="weather",
        agent="weather",
        caller="sip:alice@127.0.0.1:5070",
    )
    record.add(
        "sip",
        {
            "event": "incoming",
            "peer": "127.0.0.1:5070",
            "sdp": {"codecs": ["pcmu", "telephone-event"], "ptime": 20, "extra": None},
        },
    )
    record.add("agent_said", {"reply": 1, "text": "Hello, this is the weather line."})
    record.add(
        "turn",
        {"turn": 1, "heard": "what is the weather in paris", "latency": {"stt_ms": 12.5}},
    )
    record.add("tool", {"name": "get_weather", "args": {"city": "paris"}, "result": "sunny"})
    record.add("barge_in", {"at_ms": 1234, "words": ["stop"]})
    record.add(
        "error",
        {"kind": "tts_failure", "file": Path("/tmp/voice.wav"), "recovery": "fallback voice"},
    )
    record.add("turn", {"turn": 2, "heard": "thank you", "latency": {"stt_ms": 9.0}})
    record.add("dtmf")  # no data
    return record


def test_round_trip_through_a_new_store(tmp_path: Path, new_store: Any) -> None:
    path = tmp_path / "records" / "calls.db"  # the folder is created
    store = new_store(path)
    first = _sample_call(store, "c1")
    final_state = {"state": {"step": "done", "slots": {"city": "paris"}}, "media": {"rtp_in": 10}}
    first.finish("bye", "remote", final_state)
    first.finish("again", "local", {})  # a second finish is ignored
    second = _sample_call(store, "c2")
    second.finish("rtp timeout", "local", {"state": None})
    live = _sample_call(store, "c3")  # never finished
    assert [e["kind"] for e in first.events][-1] == "final"
    assert first.events[-1]["data"] == {"reason": "bye", "by": "remote", **final_state}
    store.close()
    store.close()  # idempotent

    again = CallStore(path)
    try:
        recent = again.recent()
        assert [r["id"] for r in recent] == ["c2", "c1"]  # finished only, newest first
        (c1,) = [r for r in recent if r["id"] == "c1"]
        assert c1 == first.summary_dict()
        assert c1 == {
            "id": "c1",
            "call_id": "c1@127.0.0.1",
            "route": "weather",
            "agent": "weather",
            "caller": "sip:alice@127.0.0.1:5070",
            "started_at": first.summary["started_at"],
            "ended_at": first.summary["ended_at"],
            "end_reason": "bye",
            "ended_by": "remote",
            "worker": None,
            "turns": 2,
            "barge_ins": 1,
            "errors": 1,
        }
        assert [r["id"] for r in again.recent(limit=1)] == ["c2"]

        detail = again.detail("c1")
        assert detail is not None
        assert detail == _json_round_trip(first.detail())
        assert [e["seq"] for e in detail["events"]] == list(range(1, 10))
        assert [e["kind"] for e in detail["events"]] == [
            "sip", "agent_said", "turn", "tool", "barge_in", "error", "turn", "dtmf", "final"
        ]  # fmt: skip
        assert detail["events"][0]["data"]["sdp"]["codecs"] == ["pcmu", "telephone-event"]
        assert detail["events"][5]["data"]["file"] == "/tmp/voice.wav"  # a Path, as str
        assert detail["events"][7]["data"] == {}
        assert detail["final_state"] == final_state
        assert (detail["turns"], detail["barge_ins"], detail["errors"]) == (2, 1, 1)

        unfinished = again.detail("c3")  # a call that never ended reads back too
        assert unfinished is not None
        assert unfinished["ended_at"] is None and unfinished["final_state"] is None
        assert len(unfinished["events"]) == len(live.events) == 8

        assert again.detail("nope") is None
    finally:
        again.close()


def test_odd_values_never_fail_a_record(tmp_path: Path, new_store: Any) -> None:
    path = tmp_path / "calls.db"
    store = new_store(path)
    record = store.start_call("c1")
    cyclic: dict[str, Any] = {"name": "loop"}
    cyclic["self"] = cyclic
    record.add("odd", {"path": Path("/a/b"), "set": {3}, "key": {(1, 2): "tuple key"}})
    record.add("cycle", {"value": cyclic})
    record.add("after")
    assert store.flush(DRAIN_TIMEOUT) and store.backlog == 0 and store.write_errors == 0
    rows = _rows(path, "SELECT kind, data FROM events WHERE call = 'c1' ORDER BY seq")
    assert [kind for kind, _ in rows] == ["odd", "cycle", "after"]
    odd = json.loads(rows[0][1])
    assert odd == {"path": "/a/b", "set": "{3}", "key": {"(1, 2)": "tuple key"}}
    assert json.loads(rows[1][1])["value"]["name"] == "loop"


def test_each_event_is_committed_by_the_writer_in_order(
    tmp_path: Path, logs: Logs, new_store: Any
) -> None:
    path = tmp_path / "calls.db"
    store = new_store(path)
    record = store.start_call("c1", route="hold")
    assert store.flush(DRAIN_TIMEOUT)
    assert _rows(path, "SELECT id, route, ended_at FROM calls") == [("c1", "hold", None)]
    for n in range(1, 6):
        record.add("step", {"n": n})
        # Without flush too: the writer commits within moments, not at close.
        assert _wait_for(lambda n=n: bool(_written(path)) and _written(path)[-1][1] == n)
        assert _written(path)[-1] == ("c1", n, "step")
    record.finish("bye", "remote", {})
    assert store.flush(DRAIN_TIMEOUT) and store.backlog == 0 and store.write_errors == 0
    assert _rows(path, "SELECT end_reason, ended_by FROM calls") == [("bye", "remote")]
    assert _written(path)[-1] == ("c1", 6, "final")
    # Each event was logged as written only once it was in the file.
    assert [(e["record"], e["seq"]) for e in _named(logs, "record_event")] == [
        ("c1", n) for n in range(1, 7)
    ]


def test_a_burst_is_committed_in_batches(tmp_path: Path, new_store: Any) -> None:
    """Thousands of events queued at once go in a few transactions, in order."""
    path = tmp_path / "calls.db"
    store = new_store(path)
    records = [store.start_call(f"c{n}") for n in range(20)]
    for i in range(5000):
        records[i % 20].add("step", {"i": i})
    assert store.flush(DRAIN_TIMEOUT), store.backlog
    _assert_in_order(path, *records)


def test_the_file_is_in_wal_mode(tmp_path: Path, new_store: Any) -> None:
    path = tmp_path / "calls.db"
    store = new_store(path)
    store.start_call("c1").add("x")
    assert store.flush(DRAIN_TIMEOUT)
    assert _rows(path, "PRAGMA journal_mode") == [("wal",)]


# ---------------------------------------------------------------- memory only


def test_memory_only_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_store: Any) -> None:
    monkeypatch.chdir(tmp_path)
    store = new_store(None)
    first = _sample_call(store, "c1")
    first.finish("bye", "remote", {"state": 1})
    second = _sample_call(store, "c2")
    assert store.detail("c2") == second.detail()  # live
    second.finish("bye", "local", {})
    assert store.recent() == [second.summary_dict(), first.summary_dict()]
    assert store.recent()[1]["turns"] == 2 and store.recent()[1]["errors"] == 1
    assert store.detail("c1") == first.detail()
    assert store.detail("nope") is None
    for n in range(RECENT_IN_MEMORY + 5):
        store.start_call(f"x{n}").finish("bye", "remote", {})
    assert len(store.recent(limit=10_000)) == RECENT_IN_MEMORY
    assert store.detail("c1") is None  # the oldest fell out of memory
    assert store.flush(1.0) and store.backlog == 0 and store.write_errors == 0
    store.close()
    store.close()
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere
    assert store._writer is None  # no database, no writer thread


# ---------------------------------------------------------------- failures


def _replace_with_empty(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def test_corrupt_database_buffers_then_drains_in_order(
    tmp_path: Path, logs: Logs, new_store: Any
) -> None:
    path = tmp_path / "calls.db"
    path.write_bytes((b"not a database" * 300)[:4096])
    store = new_store(path, retry_interval=RETRY)
    first = store.start_call("c1", route="weather")  # does not raise
    second = store.start_call("c2", route="weather")
    for n in range(10):
        first.add("step", {"n": n})
        second.add("step", {"n": n})
    first.finish("bye", "remote", {"ok": True})
    queued = 2 + 2 * 10 + 2  # two calls, twenty events, one final event and one end
    assert store.backlog == queued
    assert _wait_for(lambda: store.write_errors > 0)

    # The writer keeps failing, quietly: the file is still garbage.
    assert _wait_for(lambda: store.write_errors >= 3)
    assert store.backlog == queued
    assert len(_named(logs, "records_write_failed")) == 1
    assert not _named(logs, "records_write_recovered")
    # Reads fall back to memory meanwhile.
    assert [r["id"] for r in store.recent()] == ["c1"]
    assert store.detail("c2") == second.detail()

    _replace_with_empty(path)
    assert store.flush(DRAIN_TIMEOUT), store.backlog
    assert store.backlog == 0
    _assert_in_order(path, first, second)
    assert _rows(path, "SELECT id, ended_at IS NOT NULL FROM calls ORDER BY id") == [
        ("c1", 1),
        ("c2", 0),
    ]
    assert _wait_for(_logged(logs, "records_write_recovered", 1))
    (failed,) = _named(logs, "records_write_failed")
    assert failed["log_level"] == "error" and failed["path"] == str(path)
    assert "not a database" in failed["error"]

    # Written at once again.
    errors = store.write_errors
    second.add("later")
    assert store.flush(DRAIN_TIMEOUT)
    assert store.backlog == 0 and store.write_errors == errors
    assert _written(path)[-1] == ("c2", len(second.events), "later")
    assert len(_named(logs, "records_write_failed")) == 1
    assert _rows(path, "PRAGMA integrity_check") == [("ok",)]


def test_locked_database_never_blocks_add(tmp_path: Path, logs: Logs, new_store: Any) -> None:
    path = tmp_path / "calls.db"
    store = new_store(path, retry_interval=RETRY)
    record = store.start_call("c1")
    record.add("before")
    assert store.flush(DRAIN_TIMEOUT)
    other = _lock(path)
    try:
        took = []
        for n in range(20):
            start = time.monotonic()
            record.add("locked", {"n": n})
            took.append(time.monotonic() - start)
        # A bound (the lock is held all along), not a benchmark.
        assert sum(took) < 0.5, took
        assert store.backlog == 20
        assert _wait_for(_logged(logs, "records_write_failed", 1))
        assert "locked" in _named(logs, "records_write_failed")[0]["error"]
        # Readers still see the file; nothing of the backlog is in it.
        time.sleep(5 * RETRY)
        assert store.backlog == 20
        assert [seq for _, seq, _ in _written(path)] == [1]
    finally:
        _unlock(other)
    assert store.flush(DRAIN_TIMEOUT), store.backlog
    _assert_in_order(path, record)
    assert [kind for _, _, kind in _written(path)] == ["before", *["locked"] * 20]
    assert _wait_for(_logged(logs, "records_write_recovered", 1))
    assert len(_named(logs, "records_write_failed")) == 1


def test_backlog_keeps_order_while_it_drains(tmp_path: Path, logs: Logs, new_store: Any) -> None:
    """Events added while the backlog is being written queue behind it."""
    path = tmp_path / "calls.db"
    store = new_store(path, retry_interval=RETRY)
    first = store.start_call("c1")
    assert store.flush(DRAIN_TIMEOUT)
    other = _lock(path)
    try:
        second = store.start_call("c2")  # queued behind the first outage event
        for n in range(1000):
            (first if n % 2 else second).add("queued", {"n": n})
        first.finish("bye", "remote", {})
        assert store.backlog == 1 + 1000 + 2
        assert _wait_for(_logged(logs, "records_write_failed", 1))
    finally:
        _unlock(other)
    # Keep adding (at 1 kHz, far above a call's pace) while the writer drains:
    # nothing may jump the queue. The first add comes microseconds after the unlock,
    # long before the 1003 queued writes are done.
    added_while_draining = 0
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while added_while_draining == 0 or (store.backlog and time.monotonic() < deadline):
        second.add("draining", {"n": added_while_draining})
        added_while_draining += 1
        time.sleep(0.001)
    assert store.flush(DRAIN_TIMEOUT), store.backlog
    _assert_in_order(path, first, second)
    written = _written(path)
    # The end of c1 and the events added during the drain came after the backlog.
    assert written.index(("c1", len(first.events), "final")) < written.index(
        ("c2", 501, "draining")
    )

    # Recovered: later events are written, no new outage.
    errors = store.write_errors
    second.add("after")
    assert store.flush(DRAIN_TIMEOUT)
    assert store.backlog == 0 and store.write_errors == errors
    assert _written(path) == [*written, ("c2", len(second.events), "after")]
    assert len(_named(logs, "records_write_failed")) == 1
    assert _wait_for(_logged(logs, "records_write_recovered", 1))


def test_a_second_outage_is_logged_once_again(tmp_path: Path, logs: Logs, new_store: Any) -> None:
    path = tmp_path / "calls.db"
    store = new_store(path, retry_interval=RETRY)
    record = store.start_call("c1")
    for outage in (1, 2):
        other = _lock(path)
        try:
            for n in range(5):
                record.add("locked", {"outage": outage, "n": n})
            assert _wait_for(_logged(logs, "records_write_failed", outage))
        finally:
            _unlock(other)
        assert store.flush(DRAIN_TIMEOUT)
        assert _wait_for(_logged(logs, "records_write_recovered", outage))
        assert len(_named(logs, "records_write_failed")) == outage
    _assert_in_order(path, record)


def test_close_writes_what_it_can_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    store = CallStore(path, retry_interval=RETRY)
    record = store.start_call("c1")
    other = _lock(path)
    try:
        for n in range(10):
            record.add("locked", {"n": n})
    finally:
        _unlock(other)
    store.close()  # writes the backlog before closing
    assert store.backlog == 0
    _assert_in_order(path, record)
    store.close()
    store.close(timeout=0)

    # Still locked at close: close gives up within its timeout, without raising.
    stuck = CallStore(tmp_path / "stuck.db", retry_interval=RETRY)
    held = stuck.start_call("s1")
    assert stuck.flush(DRAIN_TIMEOUT)
    other = _lock(tmp_path / "stuck.db")
    try:
        for n in range(3):
            held.add("locked", {"n": n})
        writer = stuck._writer
        assert writer is not None
        start = time.monotonic()
        stuck.close(timeout=0.3)
        # flush (0.3 s) + join (0.3 s): bounded even if the thread is in a 1 s busy wait.
        assert time.monotonic() - start < 3.0
        assert stuck.backlog == 3  # kept, not written, nothing raised
        stuck.close(timeout=0.1)
        # The writer may still be in its busy wait: let it end before unlocking.
        writer.join(DRAIN_TIMEOUT)
        assert not writer.is_alive()
    finally:
        _unlock(other)
    assert _rows(tmp_path / "stuck.db", "SELECT COUNT(*) FROM events") == [(0,)]
