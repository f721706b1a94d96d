"""Where call records are kept: SQLite (the default) or PostgreSQL (`records.dsn`).

Both take the same three writes (a call starts, an event, a call ends) and the
same reads, in SQL written once with `?` / `:name` placeholders; the PostgreSQL
side converts them to psycopg's `%s` / `%(name)s`. Writes are idempotent
(`ON CONFLICT`), so a write retried after an unclear failure does no harm.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sqlite3
from pathlib import Path
from typing import Any, Protocol

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id TEXT PRIMARY KEY,
    call_id TEXT,
    route TEXT,
    agent TEXT,
    caller TEXT,
    started_at {real},
    ended_at {real},
    end_reason TEXT,
    ended_by TEXT,
    final_state TEXT,
    worker TEXT
);
CREATE TABLE IF NOT EXISTS events (
    call TEXT NOT NULL,
    seq INTEGER NOT NULL,
    t {real} NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (call, seq)
);
CREATE INDEX IF NOT EXISTS calls_started ON calls (started_at)
"""

_INSERT_CALL = (
    "INSERT INTO calls (id, call_id, route, agent, caller, started_at, worker)"
    " VALUES (:id, :call_id, :route, :agent, :caller, :started_at, :worker)"
    " ON CONFLICT (id) DO NOTHING"
)
#: Databases made before the column existed get it (each database's own form).
_ADD_WORKER = "ALTER TABLE calls ADD COLUMN worker TEXT"
_INSERT_EVENT = (
    "INSERT INTO events (call, seq, t, kind, data) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (call, seq) DO NOTHING"
)
_END_CALL = (
    "INSERT INTO calls (id, call_id, route, agent, caller, started_at, ended_at,"
    " end_reason, ended_by, final_state, worker) VALUES (:id, :call_id, :route, :agent,"
    " :caller, :started_at, :ended_at, :end_reason, :ended_by, :final, :worker)"
    " ON CONFLICT (id) DO UPDATE SET ended_at = excluded.ended_at,"
    " end_reason = excluded.end_reason, ended_by = excluded.ended_by,"
    " final_state = excluded.final_state"
)


@functools.cache
def _pyformat(text: str) -> str:
    """SQLite's placeholders (`:name`, `?`) as psycopg's (`%(name)s`, `%s`); cached,
    since the same few statements are written for every event."""
    text = re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", text)
    return text.replace("?", "%s")


def to_json(value: Any) -> str:
    """Compact JSON that never fails: odd values become strings, odd keys
    strings, cycles "<cycle>"."""
    try:
        return json.dumps(value, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
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


class Connection(Protocol):
    """The part of a DB-API connection the store uses (sqlite3 and psycopg share it)."""

    def execute(self, sql: str, params: Any = ...) -> Any:
        """Run one statement."""

    def close(self) -> None:
        """Close the connection."""


class Database:
    """One records database: how to connect, and what its errors look like."""

    #: Exceptions that mean "the database did not take it" (retry later).
    errors: tuple[type[Exception], ...] = ()
    #: Of those, the ones that mean the item itself is bad (retrying cannot help).
    bad_item: tuple[type[Exception], ...] = ()
    #: The column type of a float.
    real = "REAL"

    def connect(self, *, wait: bool) -> Connection:
        """A new connection with the schema in place; `wait=False` for the event
        loop's own (it must not wait for locks or a slow server)."""
        raise NotImplementedError

    def sql(self, text: str) -> str:
        """`text` in this database's placeholder style."""
        return text

    def __str__(self) -> str:
        raise NotImplementedError

    def write(self, db: Connection, what: str, item: Any) -> None:
        """One of the store's writes: "call" (summary), "event" (call, event, call_id),
        "end" (summary, final state)."""
        if what == "call":
            db.execute(self.sql(_INSERT_CALL), item)
        elif what == "event":
            call, event, _ = item
            row = (call, event["seq"], event["t"], event["kind"], to_json(event["data"]))
            db.execute(self.sql(_INSERT_EVENT), row)
        elif what == "end":
            summary, final = item
            db.execute(self.sql(_END_CALL), {**summary, "final": to_json(final)})

    def write_batch(self, db: Connection, batch: list[tuple[str, Any]]) -> None:
        """The writes of `batch` (what, item) in one transaction: all or none."""
        db.execute("BEGIN")
        try:
            for what, item in batch:
                self.write(db, what, item)
        except BaseException:
            with contextlib.suppress(*self.errors):  # no transaction left to end
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def query(self, db: Connection, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Rows of a read."""
        rows: list[tuple[Any, ...]] = db.execute(self.sql(sql), args).fetchall()
        return rows


class SqliteDatabase(Database):
    """A SQLite file in WAL mode with `synchronous=NORMAL`: a commit survives the
    process being killed, and readers do not block the writer."""

    errors = (sqlite3.Error,)
    bad_item = (sqlite3.InterfaceError, sqlite3.ProgrammingError)

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def connect(self, *, wait: bool) -> Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit (isolation_level=None): each statement is its own transaction.
        db = sqlite3.connect(
            self.path, timeout=1.0 if wait else 0, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA.format(real=self.real))
            columns = {row[1] for row in db.execute("PRAGMA table_info(calls)")}
            if "worker" not in columns:
                db.execute(_ADD_WORKER)
        except sqlite3.Error:
            db.close()
            raise
        return db


class PostgresDatabase(Database):
    """PostgreSQL through a DSN (psycopg 3, the `postgres` extra)."""

    real = "DOUBLE PRECISION"

    def __init__(self, dsn: str) -> None:
        import psycopg  # the optional extra; checked at start-up

        self._psycopg = psycopg
        self.dsn = dsn
        self.errors = (psycopg.Error,)
        self.bad_item = (psycopg.DataError, psycopg.ProgrammingError)

    def __str__(self) -> str:
        # Never log a password (URL or key=value form): host, port and database are enough.
        text = re.sub(r"//([^:@/]*)(:[^@/]*)?@", r"//\1@", self.dsn)
        return re.sub(r"(?i)\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S*)", "password=***", text)

    def connect(self, *, wait: bool) -> Connection:
        # The loop's connection gives up fast on locks and statements; commits do
        # not wait for the server's disk (a crash of ours loses nothing sent).
        limits = (
            "-c lock_timeout=1000 -c statement_timeout=2000"
            if wait
            else ("-c lock_timeout=50 -c statement_timeout=250")
        )
        db = self._psycopg.connect(
            self.dsn,
            autocommit=True,
            connect_timeout=2 if wait else 1,
            options=f"{limits} -c synchronous_commit=off",
        )
        try:
            for statement in _SCHEMA.format(real=self.real).split(";"):
                db.execute(statement)
            db.execute(_ADD_WORKER.replace("COLUMN", "COLUMN IF NOT EXISTS"))
        except self._psycopg.Error:
            db.close()
            raise
        return db

    def sql(self, text: str) -> str:
        return _pyformat(text)

    def write_batch(self, db: Connection, batch: list[tuple[str, Any]]) -> None:
        # Pipeline mode: the statements go out without waiting for each answer,
        # so a batch costs about one round trip to the server, not one per write.
        pg: Any = db
        with pg.pipeline(), pg.transaction():
            for what, item in batch:
                self.write(db, what, item)
