"""Call records: an append-only timeline per call, kept as it happens.

Every call gets a `CallRecord`. Whatever happens on it (SIP events, turns with the
caller's and the assistant's text, tool calls, barge-ins, errors with their
recovery, DTMF, the final state) is appended as an event: kept in memory while
the call is live, and written to SQLite at once, one event per transaction, before
`add` returns. SQLite runs in WAL mode with `synchronous=NORMAL`, where a commit
costs ~16 us here and survives the process being killed: a crash loses at most
the event being written.

The event loop never waits for the database, though: its connection does not
wait for locks (timeout 0). When a write fails (locked, corrupt, disk full), the
event and every later one go to a backlog (bounded; past the limit the oldest
are dropped and counted) that a retry thread writes, in order, every
`retry_interval` seconds, with the error logged once per outage. Once the
backlog is written the loop writes directly again. Calls go on regardless.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("mediaserver.call.store")

#: Finished calls kept in memory (for /calls while the database is unreadable).
RECENT_IN_MEMORY = 200
#: Events held while the database cannot be written, before the oldest are dropped.
BUFFER_LIMIT = 200_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id TEXT PRIMARY KEY,
    call_id TEXT,
    route TEXT,
    agent TEXT,
    caller TEXT,
    started_at REAL,
    ended_at REAL,
    end_reason TEXT,
    ended_by TEXT,
    final_state TEXT
);
CREATE TABLE IF NOT EXISTS events (
    call TEXT NOT NULL,
    seq INTEGER NOT NULL,
    t REAL NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (call, seq)
);
CREATE INDEX IF NOT EXISTS calls_started ON calls (started_at);
"""

#: Summary fields of a call (the `calls` table's columns, minus final_state).
SUMMARY_FIELDS = (
    "id",
    "call_id",
    "route",
    "agent",
    "caller",
    "started_at",
    "ended_at",
    "end_reason",
    "ended_by",
)

EventListener = Callable[["CallRecord", str, dict[str, Any]], None]


def _json(value: Any) -> str:
    # default=str: a record must never fail on an odd value (a Path, a set...).
    try:
        return json.dumps(value, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
        # What default= does not reach: keys JSON cannot take (a tuple...), a cycle.
        return json.dumps(_plain(value, ()), default=str, separators=(",", ":"))


def _plain(value: Any, outer: tuple[int, ...]) -> Any:
    """`value` with every dict key as JSON takes it and every cycle cut."""
    if not isinstance(value, dict | list | tuple):
        return value
    if id(value) in outer:
        return "<cycle>"
    outer = (*outer, id(value))
    if isinstance(value, dict):
        return {
            k if k is None or isinstance(k, str | int | float) else str(k): _plain(v, outer)
            for k, v in value.items()
        }
    return [_plain(v, outer) for v in value]


@dataclass
class CallRecord:
    """One call's record. Only the owner of the call appends to it (the server for
    SIP events, the call actor for the conversation)."""

    id: str
    summary: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    final_state: dict[str, Any] | None = None
    turns: int = 0
    barge_ins: int = 0
    errors: int = 0
    _store: CallStore | None = None

    @property
    def live(self) -> bool:
        """The call has not ended yet."""
        return self.summary.get("ended_at") is None

    def add(self, kind: str, data: dict[str, Any] | None = None) -> None:
        """Append one event (`kind` plus a JSON-able dict) to the timeline."""
        data = dict(data or {})
        event = {"seq": len(self.events) + 1, "t": time.time(), "kind": kind, "data": data}
        self.events.append(event)
        if kind == "turn":
            self.turns += 1
        elif kind == "barge_in":
            self.barge_ins += 1
        elif kind == "error":
            self.errors += 1
        if self._store is not None:
            self._store._event(self, event)
        # After the write: a line here means the event is in the database (or backlog).
        log.debug(
            "record_event",
            record=self.id,
            call_id=self.summary.get("call_id"),
            seq=event["seq"],
            kind=kind,
        )

    def finish(self, reason: str, by: str, final_state: dict[str, Any]) -> None:
        """The call ended: note who ended it and why, and the state it ended in."""
        if not self.live:
            return
        self.summary.update(ended_at=time.time(), end_reason=reason, ended_by=by)
        self.final_state = final_state
        self.add("final", {"reason": reason, "by": by, **final_state})
        if self._store is not None:
            self._store._finished(self)

    def summary_dict(self) -> dict[str, Any]:
        """What /calls lists about this call."""
        return {
            **{k: self.summary.get(k) for k in SUMMARY_FIELDS},
            "turns": self.turns,
            "barge_ins": self.barge_ins,
            "errors": self.errors,
        }

    def detail(self) -> dict[str, Any]:
        """The whole record: summary, timeline and final state."""
        return {**self.summary_dict(), "events": list(self.events), "final_state": self.final_state}


class CallStore:
    """Every call's record, written to SQLite at `path` (None: memory only).

    Args:
        path: the SQLite file (created with its folder); None keeps records in
            memory only (the recent ones).
        retry_interval: seconds between attempts while the database fails.
    """

    def __init__(self, path: Path | None, *, retry_interval: float = 1.0) -> None:
        self.path = path
        self.retry_interval = retry_interval
        self.live: dict[str, CallRecord] = {}
        self.recent_records: OrderedDict[str, CallRecord] = OrderedDict()
        self.listeners: list[EventListener] = []
        #: Events dropped because the backlog overflowed during a long outage.
        self.dropped = 0
        self.write_errors = 0
        self._db: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._backlog: deque[tuple[str, Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._retrier: threading.Thread | None = None
        self._failing = False

    # -- the calls' side (event loop) ---------------------------------------------------

    def start_call(self, call: str, **summary: Any) -> CallRecord:
        """Open the record of a new call (`summary`: call_id, route, agent, caller)."""
        record = CallRecord(
            call,
            {k: summary.get(k) for k in SUMMARY_FIELDS} | {"id": call, "started_at": time.time()},
            _store=self,
        )
        self.live[call] = record
        self._put("call", record.summary_dict())
        return record

    def _event(self, record: CallRecord, event: dict[str, Any]) -> None:
        self._put("event", (record.id, event))
        for listener in self.listeners:
            try:
                listener(record, event["kind"], event["data"])
            except Exception:
                log.exception("record_listener_failed", kind=event["kind"])

    def _finished(self, record: CallRecord) -> None:
        self.live.pop(record.id, None)
        self.recent_records[record.id] = record
        while len(self.recent_records) > RECENT_IN_MEMORY:
            self.recent_records.popitem(last=False)
        self._put("end", (record.summary_dict(), record.final_state))

    def _put(self, what: str, item: Any) -> None:
        if self.path is None:
            return
        with self._lock:
            if not self._backlog:
                try:
                    if self._db is None:
                        self._db = _connect(self.path, timeout=0)
                    _write(self._db, what, item)
                    return
                except sqlite3.Error as exc:
                    self._outage(exc)
                    if self._db is not None:
                        self._db.close()
                        self._db = None
            self._backlog.append((what, item))
            if len(self._backlog) > BUFFER_LIMIT:
                self._backlog.popleft()
                self.dropped += 1
        self._start_retrier()

    def _outage(self, exc: sqlite3.Error) -> None:
        self.write_errors += 1
        if not self._failing:
            # One line per outage, not one per event.
            self._failing = True
            log.error(
                "records_write_failed",
                path=str(self.path),
                error=str(exc),
                buffered=len(self._backlog) + 1,
            )

    def _start_retrier(self) -> None:
        if self._retrier is None:
            self._retrier = threading.Thread(target=self._retry, name="call-records", daemon=True)
            self._retrier.start()
        self._wake.set()

    # -- reading (admin HTTP) -----------------------------------------------------------

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """Finished calls, newest first: from the database, else from memory."""
        rows = self._query(
            "SELECT id, call_id, route, agent, caller, started_at, ended_at, end_reason,"
            " ended_by, (SELECT COUNT(*) FROM events e WHERE e.call = c.id AND e.kind = 'turn'),"
            " (SELECT COUNT(*) FROM events e WHERE e.call = c.id AND e.kind = 'barge_in'),"
            " (SELECT COUNT(*) FROM events e WHERE e.call = c.id AND e.kind = 'error')"
            " FROM calls c WHERE ended_at IS NOT NULL ORDER BY started_at DESC LIMIT ?",
            (limit,),
        )
        if rows is None:
            records = list(reversed(self.recent_records.values()))[:limit]
            return [r.summary_dict() for r in records]
        names = (*SUMMARY_FIELDS, "turns", "barge_ins", "errors")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def detail(self, call: str) -> dict[str, Any] | None:
        """One call's whole record (live or finished), or None."""
        record = self.live.get(call) or self.recent_records.get(call)
        if record is not None:
            return record.detail()
        rows = self._query(
            "SELECT id, call_id, route, agent, caller, started_at, ended_at, end_reason,"
            " ended_by, final_state FROM calls WHERE id = ?",
            (call,),
        )
        if not rows:
            return None
        *summary, final = rows[0]
        out: dict[str, Any] = dict(zip(SUMMARY_FIELDS, summary, strict=True))
        out["final_state"] = json.loads(final) if final else None
        events = self._query(
            "SELECT seq, t, kind, data FROM events WHERE call = ? ORDER BY seq", (call,)
        )
        out["events"] = [
            {"seq": seq, "t": t, "kind": kind, "data": json.loads(data)}
            for seq, t, kind, data in events or []
        ]
        for key, kind in (("turns", "turn"), ("barge_ins", "barge_in"), ("errors", "error")):
            out[key] = sum(1 for e in out["events"] if e["kind"] == kind)
        return out

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
        """Run a read on a connection of its own (WAL lets it read beside the writer)."""
        if self.path is None:
            return None
        try:
            if self._reader is None:
                self._reader = sqlite3.connect(self.path, timeout=0, check_same_thread=False)
            return self._reader.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            log.warning("records_read_failed", path=str(self.path), error=str(exc))
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            return None

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the backlog is written (True) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while self._backlog and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.01)
        return not self._backlog

    @property
    def backlog(self) -> int:
        """Events waiting for the database."""
        return len(self._backlog)

    def close(self, timeout: float = 5.0) -> None:
        """Write the backlog (up to `timeout`), then close the connections."""
        self.flush(timeout)
        self._stop = True
        self._wake.set()
        if self._retrier is not None:
            self._retrier.join(timeout)
            self._retrier = None
        for db in (self._db, self._reader):
            if db is not None:
                db.close()
        self._db = self._reader = None

    # -- the retry thread ---------------------------------------------------------------

    def _retry(self) -> None:
        """Write the backlog in order whenever the database takes it again."""
        assert self.path is not None
        db: sqlite3.Connection | None = None
        while not self._stop:
            self._wake.wait(self.retry_interval)
            self._wake.clear()
            try:
                while True:
                    with self._lock:
                        if not self._backlog:
                            break
                        item = self._backlog[0]
                    if db is None:
                        db = _connect(self.path, timeout=1.0)
                    _write(db, *item)
                    with self._lock:
                        self._backlog.popleft()
                        if not self._backlog and self._failing:
                            self._failing = False
                            log.info("records_write_recovered", path=str(self.path))
            except sqlite3.Error:
                with self._lock:
                    self.write_errors += 1
                if db is not None:
                    db.close()
                    db = None
                time.sleep(self.retry_interval)
        if db is not None:
            db.close()


def _connect(path: Path, timeout: float) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit (isolation_level=None): each statement is its own transaction.
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
    except sqlite3.Error:
        db.close()
        raise
    return db


def _write(db: sqlite3.Connection, what: str, item: Any) -> None:
    if what == "call":
        db.execute(
            "INSERT OR REPLACE INTO calls (id, call_id, route, agent, caller, started_at)"
            " VALUES (:id, :call_id, :route, :agent, :caller, :started_at)",
            item,
        )
    elif what == "event":
        call, event = item
        db.execute(
            "INSERT OR REPLACE INTO events (call, seq, t, kind, data) VALUES (?, ?, ?, ?, ?)",
            (call, event["seq"], event["t"], event["kind"], _json(event["data"])),
        )
    elif what == "end":
        summary, final = item
        db.execute(
            "INSERT INTO calls (id, call_id, route, agent, caller, started_at, ended_at,"
            " end_reason, ended_by, final_state) VALUES (:id, :call_id, :route, :agent,"
            " :caller, :started_at, :ended_at, :end_reason, :ended_by, :final)"
            " ON CONFLICT(id) DO UPDATE SET ended_at = excluded.ended_at,"
            " end_reason = excluded.end_reason, ended_by = excluded.ended_by,"
            " final_state = excluded.final_state",
            {**summary, "final": _json(final)},
        )
