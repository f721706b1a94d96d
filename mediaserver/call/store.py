"""Call records: an append-only timeline per call, kept as it happens.

Every call gets a `CallRecord`. Whatever happens on it (SIP events, turns with the
caller's and the assistant's text, tool calls, barge-ins, errors with their
recovery, DTMF, the final state) is appended as an event: kept in memory while
the call is live, and written to SQLite at once, one event per transaction, before
`add` returns. SQLite runs in WAL mode with `synchronous=NORMAL`, where a commit
costs ~22 us here (bench/records_write.py) and survives the process being killed:
a crash loses at most the event being written.

The event loop never waits for the database, though: its connection does not
wait for locks (timeout 0). When a write fails (locked, corrupt, disk full), the
event and every later one go to a backlog (bounded; past the limit the oldest
are dropped and counted) that a retry thread writes, in order, every
`retry_interval` seconds, with the error logged once per outage. Once the
backlog is written the loop writes directly again. Calls go on regardless.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from mediaserver.call.databases import (
    Connection,
    Database,
    PostgresDatabase,
    SqliteDatabase,
)

log = structlog.get_logger("mediaserver.call.store")

#: Finished calls kept in memory (for /calls while the database is unreadable).
RECENT_IN_MEMORY = 200
#: Events held while the database cannot be written, before the oldest are dropped.
BUFFER_LIMIT = 200_000

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
    """Every call's record, written to SQLite at `path`, or to PostgreSQL at `dsn`.

    Args:
        path: the SQLite file (created with its folder); with neither `path` nor
            `dsn` the records are kept in memory only (the recent ones).
        dsn: a PostgreSQL connection string (takes precedence over `path`).
        retry_interval: seconds between attempts while the database fails.
    """

    def __init__(
        self, path: Path | None, *, dsn: str | None = None, retry_interval: float = 1.0
    ) -> None:
        self.database: Database | None = (
            PostgresDatabase(dsn) if dsn else SqliteDatabase(path) if path is not None else None
        )
        self.retry_interval = retry_interval
        self.live: dict[str, CallRecord] = {}
        self.recent_records: OrderedDict[str, CallRecord] = OrderedDict()
        self.listeners: list[EventListener] = []
        #: Events dropped because the backlog overflowed during a long outage.
        self.dropped = 0
        self.write_errors = 0
        self._db: Connection | None = None
        self._reader: Connection | None = None
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
        database = self.database
        if database is None:
            return
        with self._lock:
            if not self._backlog:
                try:
                    if self._db is None:
                        self._db = database.connect(wait=False)
                    database.write(self._db, what, item)
                    return
                except database.bad_item as exc:
                    self._drop_bad(what, exc)
                    return
                except database.errors as exc:
                    self._outage(exc)
                    if self._db is not None:
                        self._db.close()
                        self._db = None
            self._backlog.append((what, item))
            if len(self._backlog) > BUFFER_LIMIT:
                self._backlog.popleft()
                self.dropped += 1
        self._start_retrier()

    def _outage(self, exc: Exception) -> None:
        self.write_errors += 1
        if not self._failing:
            # One line per outage, not one per event.
            self._failing = True
            log.error(
                "records_write_failed",
                path=str(self.database),
                error=str(exc),
                buffered=len(self._backlog) + 1,
            )

    def _drop_bad(self, what: str, exc: Exception) -> None:
        """An item the database refuses for what it is: retrying cannot help."""
        self.dropped += 1
        log.error("records_item_refused", what=what, error=str(exc))

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
        database = self.database
        if database is None:
            return None
        try:
            if self._reader is None:
                self._reader = database.connect(wait=False)
            return database.query(self._reader, sql, args)
        except database.errors as exc:
            log.warning("records_read_failed", path=str(database), error=str(exc))
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
        database = self.database
        assert database is not None
        db: Connection | None = None
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
                        db = database.connect(wait=True)
                    try:
                        database.write(db, *item)
                    except database.bad_item as exc:
                        self._drop_bad(item[0], exc)
                    with self._lock:
                        # An overflow may have dropped it meanwhile: pop only our item.
                        if self._backlog and self._backlog[0] is item:
                            self._backlog.popleft()
                        if not self._backlog and self._failing:
                            self._failing = False
                            log.info("records_write_recovered", path=str(database))
            except database.errors:
                with self._lock:
                    self.write_errors += 1
                if db is not None:
                    db.close()
                    db = None
                time.sleep(self.retry_interval)
        if db is not None:
            db.close()
