"""Call records: an append-only timeline per call, kept as it happens.

Every call gets a `CallRecord`. Whatever happens on it (SIP events, turns with the
caller's and the assistant's text, tool calls, barge-ins, errors with their
recovery, DTMF, the final state) is appended as an event: kept in memory while
the call is live, and written to SQLite or PostgreSQL by one writer thread.

The event loop never waits for the database: `add` puts the event on a queue
(a few microseconds) and the writer commits whatever has queued up in one
transaction (group commit), in order, as soon as it can. When the calls are few
each event is committed within a fraction of a millisecond; when they are many
the batches grow and a commit carries hundreds of events, so a remote database
costs its latency once per batch, not once per event. The writer logs each
event it committed (`record_event`, debug level): an event logged so is in the
database, whatever happens to the process afterwards.

When a write fails (locked, corrupt, disk full, server gone), the writer keeps
the batch and retries every `retry_interval` seconds, with the error logged
once per outage; later events queue behind it (bounded: past the limit the
oldest are dropped and counted). Calls go on regardless.
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
#: Most writes committed in one transaction.
BATCH = 1000

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
    "worker",
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
        self._reader: Connection | None = None
        #: Writes not yet committed, oldest first (the writer's batch is not in it).
        self._queue: deque[tuple[str, Any]] = deque()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._failing = False

    # -- the calls' side (event loop) ---------------------------------------------------

    def start_call(self, call: str, **summary: Any) -> CallRecord:
        """Open the record of a new call (`summary`: call_id, route, agent, caller,
        worker)."""
        record = CallRecord(
            call,
            {k: summary.get(k) for k in SUMMARY_FIELDS} | {"id": call, "started_at": time.time()},
            _store=self,
        )
        self.live[call] = record
        self._put("call", record.summary_dict())
        return record

    def _event(self, record: CallRecord, event: dict[str, Any]) -> None:
        self._put("event", (record.id, event, record.summary.get("call_id")))
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
        """Queue one write for the writer thread (never waits for the database)."""
        if self.database is None:
            return
        with self._lock:
            self._queue.append((what, item))
            if len(self._queue) + self._in_flight > BUFFER_LIMIT:
                self._queue.popleft()
                self.dropped += 1
            first = len(self._queue) == 1
            self._idle.clear()
        if self._writer is None:
            self._writer = threading.Thread(target=self._write, name="call-records", daemon=True)
            self._writer.start()
        if first:
            # The writer drains the whole queue when it wakes: one wake-up per batch.
            self._wake.set()

    # -- reading (admin HTTP) -----------------------------------------------------------

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """Finished calls, newest first: from the database, else from memory."""
        rows = self._query(
            "SELECT id, call_id, route, agent, caller, started_at, ended_at, end_reason,"
            " ended_by, worker,"
            " (SELECT COUNT(*) FROM events e WHERE e.call = c.id AND e.kind = 'turn'),"
            " (SELECT COUNT(*) FROM events e WHERE e.call = c.id AND e.kind = 'barge_in'),"
            " (SELECT COUNT(*) FROM events e WHERE e.call = c.id AND e.kind = 'error')"
            " FROM calls c WHERE ended_at IS NOT NULL ORDER BY started_at DESC LIMIT ?",
            (limit,),
        )
        kept = [r.summary_dict() for r in reversed(self.recent_records.values())]
        if rows is None:
            return kept[:limit]
        names = (*SUMMARY_FIELDS, "turns", "barge_ins", "errors")
        found = [dict(zip(names, row, strict=True)) for row in rows]
        # Calls that ended moments ago may still be on the writer's queue.
        seen = {c["id"] for c in found}
        found += [c for c in kept if c["id"] not in seen]
        found.sort(key=lambda c: c["started_at"] or 0.0, reverse=True)
        return found[:limit]

    def detail(self, call: str) -> dict[str, Any] | None:
        """One call's whole record (live or finished), or None."""
        record = self.live.get(call) or self.recent_records.get(call)
        if record is not None:
            return record.detail()
        rows = self._query(
            "SELECT id, call_id, route, agent, caller, started_at, ended_at, end_reason,"
            " ended_by, worker, final_state FROM calls WHERE id = ?",
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
        """Wait until everything queued is written (True) or `timeout` passes."""
        return self._idle.wait(timeout)

    @property
    def backlog(self) -> int:
        """Writes not yet committed (queued or being written)."""
        return len(self._queue) + self._in_flight

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (up to `timeout`), then close the connections."""
        self.flush(timeout)
        self._stop.set()
        self._wake.set()
        if self._writer is not None:
            self._writer.join(timeout)
            self._writer = None
        if self._reader is not None:
            self._reader.close()
        self._reader = None

    # -- the writer thread ------------------------------------------------------------

    def _write(self) -> None:
        """Commit the queue in order, a batch per transaction, until closed."""
        database = self.database
        assert database is not None
        db: Connection | None = None
        while not self._stop.is_set() or self._queue:
            self._wake.wait()
            self._wake.clear()  # before taking the batch: a later put wakes us again
            with self._lock:
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                self._in_flight = len(batch)
                if not batch:
                    self._idle.set()
                    continue
            while True:
                try:
                    if db is None:
                        db = database.connect(wait=True)
                    self._commit(database, db, batch)
                    break
                except database.errors as exc:
                    self._outage(exc)
                    if db is not None:
                        db.close()
                        db = None
                    if self._stop.wait(self.retry_interval):
                        return  # closing, and close() has waited long enough
            with self._lock:
                self._in_flight = 0
            if self._failing:
                self._failing = False
                log.info("records_write_recovered", path=str(database))
            self._wake.set()  # more may have queued meanwhile
        if db is not None:
            db.close()

    def _commit(self, database: Database, db: Connection, batch: list[tuple[str, Any]]) -> None:
        """Write `batch` in one transaction; an item the database refuses for what it
        is (retrying cannot help) is dropped and the rest written one by one."""
        try:
            database.write_batch(db, batch)
        except database.bad_item:
            for what, item in batch:
                try:
                    database.write_batch(db, [(what, item)])
                except database.bad_item as exc:
                    self._drop_bad(what, exc)
        for what, item in batch:
            # After the commit: a line here means the event is in the database.
            if what == "event":
                call, event, call_id = item
                log.debug(
                    "record_event",
                    record=call,
                    call_id=call_id,
                    seq=event["seq"],
                    kind=event["kind"],
                )
            elif what == "end":
                summary = item[0]
                log.info("record_written", record=summary["id"], call_id=summary["call_id"])

    def _outage(self, exc: Exception) -> None:
        self.write_errors += 1
        if not self._failing:
            # One line per outage, not one per attempt.
            self._failing = True
            log.error(
                "records_write_failed",
                path=str(self.database),
                error=str(exc),
                buffered=self.backlog,
            )

    def _drop_bad(self, what: str, exc: Exception) -> None:
        """An item the database refuses for what it is: retrying cannot help."""
        self.dropped += 1
        log.error("records_item_refused", what=what, error=str(exc))
