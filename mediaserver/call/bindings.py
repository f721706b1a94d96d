"""Registrar bindings shared by the workers of a cluster, through the records database.

Each worker keeps its registrar in memory (lookups never wait for a
database). `SharedBindings` writes every change a REGISTER makes there to a
`bindings` table in the records database (the SQLite file the workers of one
machine share, or the PostgreSQL of `records.dsn` for many machines), and
every `interval` seconds reads the changes the other workers made and merges
them into its own registrar. A phone registered through any worker is so
reachable from every worker within `interval`.

One row per (user, contact), a removal being a row with `expires` 0. Times in
the table are wall-clock (`time.time()`): the registrar's clock is monotonic
and per machine, so each side converts. A change carries when it was made
(`updated`); the newer wins, on the database (an upsert that never replaces a
newer row) and in each registrar (`Registrar.merge`). The reader asks for rows
updated since its last read minus `SKEW`, so a slow commit or a clock a little
off between machines loses nothing (re-reading a row is harmless). All the
database work is on one thread; the event loop only queues and merges.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from typing import Any

import structlog

from mediaserver.call.databases import Connection, Database
from mediaserver.sip.registrar import Binding, Registrar
from mediaserver.sip.transaction import Target

__all__ = ["SharedBindings"]

log = structlog.get_logger("mediaserver.call.bindings")

#: Seconds re-read on every poll, for commits that land late or clocks a little off.
SKEW = 5.0
#: Removals stay in the table this long (seconds) so every worker sees them.
TOMBSTONE_TTL = 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bindings (
    aor TEXT NOT NULL,
    contact TEXT NOT NULL,
    expires {real} NOT NULL,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    q {real} NOT NULL,
    source TEXT NOT NULL,
    path TEXT NOT NULL,
    updated {real} NOT NULL,
    PRIMARY KEY (aor, contact)
);
CREATE INDEX IF NOT EXISTS bindings_updated ON bindings (updated)
"""

_UPSERT = (
    "INSERT INTO bindings (aor, contact, expires, call_id, cseq, q, source, path, updated)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (aor, contact) DO UPDATE SET"
    " expires = excluded.expires, call_id = excluded.call_id, cseq = excluded.cseq,"
    " q = excluded.q, source = excluded.source, path = excluded.path,"
    " updated = excluded.updated WHERE excluded.updated >= bindings.updated"
)
_CHANGED = (
    "SELECT aor, contact, expires, call_id, cseq, q, source, path, updated"
    " FROM bindings WHERE updated > ? ORDER BY updated"
)
_FORGET = "DELETE FROM bindings WHERE expires < ?"


class SharedBindings:
    """Keeps `registrar` in step with the `bindings` table of `database`.

    Args:
        database: the records database (SQLite or PostgreSQL).
        registrar: this worker's registrar; its `listener` is taken.
        loop: the event loop that owns the registrar (merges run there).
        interval: seconds between reads of the others' changes.
    """

    def __init__(
        self,
        database: Database,
        registrar: Registrar,
        loop: asyncio.AbstractEventLoop,
        interval: float = 0.5,
    ) -> None:
        self.database = database
        self.registrar = registrar
        self.loop = loop
        self.interval = interval
        #: Wall-clock seconds minus the registrar's clock (the loop's).
        self._offset = time.time() - loop.time()
        self._pending: deque[tuple[Any, ...]] = deque()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        registrar.listener = self._changed

    def start(self) -> None:
        """Start the thread (reads the table once at once: bindings made before)."""
        self._thread = threading.Thread(target=self._run, name="bindings", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Write what is pending (up to `timeout`), then stop the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- the loop's side ------------------------------------------------------------------

    def _changed(self, user: str, contact: str, binding: Binding | None, now: float) -> None:
        """The registrar's listener: queue the change for the table."""
        wall = now + self._offset
        if binding is None:
            row = (user, contact, 0.0, "", 0, 0.0, "", "[]", wall)
        else:
            source = binding.source
            row = (
                user,
                contact,
                binding.expires_at + self._offset,
                binding.call_id,
                binding.cseq,
                binding.q,
                f"{source.transport}:{source.host}:{source.port}",
                json.dumps(list(binding.path)),
                wall,
            )
        self._pending.append(row)
        self._wake.set()

    def _merge(self, rows: list[tuple[Any, ...]]) -> None:
        """Apply rows read from the table (on the loop: the registrar's owner)."""
        for aor, contact, expires, call_id, cseq, q, source, path, updated in rows:
            when = updated - self._offset
            if not expires:
                self.registrar.merge(aor, contact, None, when)
                continue
            transport, _, rest = source.partition(":")
            host, _, port = rest.rpartition(":")
            binding = Binding(
                contact,
                expires - self._offset,
                call_id,
                cseq,
                Target(transport, host, int(port)),
                q,
                tuple(json.loads(path)),
                when,
            )
            self.registrar.merge(aor, contact, binding, when)

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        database = self.database
        db: Connection | None = None
        since = 0.0
        #: (user, contact) -> `updated` of the rows the last read returned.
        passed: dict[tuple[str, str], float] = {}
        last_forget = 0.0
        while True:
            stopping = self._stop.is_set()
            try:
                if db is None:
                    db = database.connect(wait=True)
                    for statement in _SCHEMA.format(real=database.real).split(";"):
                        db.execute(statement)
                self._write(db)
                if not stopping:
                    read_at = time.time()
                    rows = database.query(db, _CHANGED, (since - SKEW,))
                    since = read_at
                    # Only what this thread has not passed on yet: each poll re-reads
                    # the last SKEW seconds, and the loop need not see them again.
                    fresh = [r for r in rows if passed.get((r[0], r[1])) != r[-1]]
                    passed = {(r[0], r[1]): r[-1] for r in rows}
                    if fresh:
                        self.loop.call_soon_threadsafe(self._merge, fresh)
                    if read_at - last_forget > 60:
                        last_forget = read_at
                        db.execute(database.sql(_FORGET), (read_at - TOMBSTONE_TTL,))
                if self._failing:
                    self._failing = False
                    log.info("bindings_sync_recovered", path=str(database))
            except database.errors as exc:
                if not self._failing:
                    self._failing = True
                    log.error("bindings_sync_failed", path=str(database), error=str(exc))
                if db is not None:
                    db.close()
                    db = None
            if stopping:
                break
            self._wake.wait(self.interval)
            self._wake.clear()
        if db is not None:
            db.close()

    def _write(self, db: Connection) -> None:
        """Write the queued changes, oldest first (kept on failure)."""
        while self._pending:
            row = self._pending[0]
            db.execute(self.database.sql(_UPSERT), row)
            self._pending.popleft()
