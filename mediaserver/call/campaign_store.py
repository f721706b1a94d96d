"""Where outbound campaigns keep their state: the records database (SQLite or the
PostgreSQL of `records.dsn`), so a restart picks every campaign up where it was.
Also the outbound calls' idempotency keys (`dial_keys`), so a request retried
after a restart still finds its first call.

Three campaign tables: `campaigns` (the spec as JSON and the state), `campaign_contacts`
(one row per number: state, attempts, when it may be dialed next, the last
outcome and call), and `dnc` (the do-not-call list). The one rule that keeps a
number from being dialed twice: a contact is *claimed* (state `dialing`,
attempts + 1) in a committed write before its INVITE goes out, and a contact
found `dialing` after a restart is never dialed again: its call's outcome was
lost with the process, so it is closed as `interrupted`.

All database work runs on one thread of its own (`run`); the event loop awaits it.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from mediaserver.call.databases import Connection, Database

__all__ = ["CampaignStore", "Contact"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS campaigns (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    created {real} NOT NULL,
    updated {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS campaign_contacts (
    campaign TEXT NOT NULL,
    idx INTEGER NOT NULL,
    target TEXT NOT NULL,
    variables TEXT NOT NULL,
    tz TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at {real} NOT NULL,
    outcome TEXT,
    call TEXT,
    updated {real} NOT NULL,
    PRIMARY KEY (campaign, idx)
);
CREATE INDEX IF NOT EXISTS campaign_contacts_due ON campaign_contacts (campaign, state, next_at);
CREATE TABLE IF NOT EXISTS dnc (
    number TEXT PRIMARY KEY,
    added {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS dial_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    answer TEXT NOT NULL,
    created {real} NOT NULL
)
"""

#: Contact states: waiting for a first dial or a retry, claimed (being dialed),
#: and done (its `outcome` says how: an outcome of a call, dnc, rejected, interrupted).
PENDING, DIALING, DONE = "pending", "dialing", "done"


@dataclass(frozen=True)
class Contact:
    """One number of a campaign, as stored."""

    campaign: str
    idx: int
    target: str
    variables: dict[str, Any]
    tz: str | None
    state: str
    attempts: int
    next_at: float
    outcome: str | None = None
    call: str | None = None


class CampaignStore:
    """The campaign tables of `database` (see the module docstring)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="campaigns")
        self._db: Connection | None = None

    async def run(self, work: Any, *args: Any) -> Any:
        """`work(db, *args)` on the store's thread, with its connection."""
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self._call, work, args
        )

    def _call(self, work: Any, args: tuple[Any, ...]) -> Any:
        if self._db is None:
            db = self.database.connect(wait=True)
            for statement in _SCHEMA.format(real=self.database.real).split(";"):
                db.execute(statement)
            self._db = db
        return work(self._db, *args)

    def close(self) -> None:
        """Close the connection (on the store's thread) and the thread."""

        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        self._thread.submit(shut).result(timeout=10)
        self._thread.shutdown(wait=True)

    # -- campaigns ----------------------------------------------------------------------

    def create(
        self, db: Connection, cid: str, name: str, spec: dict[str, Any], contacts: list[Any]
    ) -> None:
        """A new campaign and its contacts (`contacts`: (target, variables, tz)), in
        one transaction."""
        sql, now = self.database.sql, time.time()
        db.execute("BEGIN")
        try:
            db.execute(
                sql("INSERT INTO campaigns (id, name, spec, state, created, updated)"
                    " VALUES (?, ?, ?, ?, ?, ?)"),
                (cid, name, json.dumps(spec), "running", now, now),
            )  # fmt: skip
            insert = sql(
                "INSERT INTO campaign_contacts (campaign, idx, target, variables, tz, state,"
                " attempts, next_at, updated) VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?)"
            )
            for idx, (target, variables, tz) in enumerate(contacts):
                db.execute(insert, (cid, idx, target, json.dumps(variables), tz, PENDING, now))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def campaigns(self, db: Connection) -> list[tuple[str, str, dict[str, Any], str, float]]:
        """Every campaign: (id, name, spec, state, created), oldest first."""
        rows = db.execute("SELECT id, name, spec, state, created FROM campaigns ORDER BY created")
        return [(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows.fetchall()]

    def set_state(self, db: Connection, cid: str, state: str) -> None:
        """running, paused, cancelled or completed."""
        sql = self.database.sql("UPDATE campaigns SET state = ?, updated = ? WHERE id = ?")
        db.execute(sql, (state, time.time(), cid))

    def interrupt(self, db: Connection) -> int:
        """Close every contact left `dialing` by a process that ended (at start-up):
        its outcome is unknown, and it is never dialed again."""
        sql = self.database.sql(
            "UPDATE campaign_contacts SET state = ?, outcome = 'interrupted', updated = ?"
            " WHERE state = ?"
        )
        cursor = db.execute(sql, (DONE, time.time(), DIALING))
        return int(getattr(cursor, "rowcount", 0) or 0)

    def progress(self, db: Connection, cid: str) -> dict[str, Any]:
        """Counts by state and by outcome."""
        sql = self.database.sql
        states = dict(
            db.execute(
                sql("SELECT state, COUNT(*) FROM campaign_contacts WHERE campaign = ?"
                    " GROUP BY state"),
                (cid,),
            ).fetchall()
        )  # fmt: skip
        outcomes = dict(
            db.execute(
                sql("SELECT outcome, COUNT(*) FROM campaign_contacts WHERE campaign = ?"
                    " AND outcome IS NOT NULL GROUP BY outcome"),
                (cid,),
            ).fetchall()
        )  # fmt: skip
        return {"contacts": sum(states.values()), "states": states, "outcomes": outcomes}

    def contacts(self, db: Connection, cid: str, limit: int) -> list[Contact]:
        """The first `limit` contacts of a campaign, in list order."""
        sql = self.database.sql(
            "SELECT campaign, idx, target, variables, tz, state, attempts, next_at, outcome, call"
            " FROM campaign_contacts WHERE campaign = ? ORDER BY idx LIMIT ?"
        )
        return [_contact(r) for r in db.execute(sql, (cid, limit)).fetchall()]

    # -- dialing ------------------------------------------------------------------------

    def due(self, db: Connection, cid: str, now: float, limit: int) -> list[Contact]:
        """Contacts that may be dialed at `now` (pending, their time come), soonest first."""
        sql = self.database.sql(
            "SELECT campaign, idx, target, variables, tz, state, attempts, next_at, outcome, call"
            " FROM campaign_contacts WHERE campaign = ? AND state = ? AND next_at <= ?"
            " ORDER BY next_at, idx LIMIT ?"
        )
        return [_contact(r) for r in db.execute(sql, (cid, PENDING, now, limit)).fetchall()]

    def next_due(self, db: Connection, cid: str) -> float | None:
        """When the next pending contact may be dialed (None: none is pending)."""
        sql = self.database.sql(
            "SELECT MIN(next_at) FROM campaign_contacts WHERE campaign = ? AND state = ?"
        )
        row = db.execute(sql, (cid, PENDING)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def unfinished(self, db: Connection, cid: str) -> int:
        """Contacts not done yet (pending or being dialed)."""
        sql = self.database.sql(
            "SELECT COUNT(*) FROM campaign_contacts WHERE campaign = ? AND state <> ?"
        )
        return int(db.execute(sql, (cid, DONE)).fetchone()[0])

    def claim(self, db: Connection, cid: str, idx: int) -> bool:
        """Mark a pending contact `dialing` (attempts + 1), committed; False when it
        was not pending any more (another claim won)."""
        sql = self.database.sql(
            "UPDATE campaign_contacts SET state = ?, attempts = attempts + 1, updated = ?"
            " WHERE campaign = ? AND idx = ? AND state = ?"
        )
        cursor = db.execute(sql, (DIALING, time.time(), cid, idx, PENDING))
        return int(getattr(cursor, "rowcount", 0) or 0) == 1

    def placed(self, db: Connection, cid: str, idx: int, call: str) -> None:
        """The claimed contact's call id."""
        sql = self.database.sql(
            "UPDATE campaign_contacts SET call = ?, updated = ? WHERE campaign = ? AND idx = ?"
        )
        db.execute(sql, (call, time.time(), cid, idx))

    def finish(
        self, db: Connection, cid: str, idx: int, outcome: str, retry_at: float | None
    ) -> None:
        """A contact's call ended with `outcome`: done, or pending again at `retry_at`."""
        sql = self.database.sql(
            "UPDATE campaign_contacts SET state = ?, outcome = ?, next_at = ?, updated = ?"
            " WHERE campaign = ? AND idx = ?"
        )
        state = PENDING if retry_at is not None else DONE
        db.execute(sql, (state, outcome, retry_at or 0.0, time.time(), cid, idx))

    def postpone(self, db: Connection, cid: str, idx: int, until: float) -> None:
        """A pending contact may not be dialed before `until` (quiet hours)."""
        sql = self.database.sql(
            "UPDATE campaign_contacts SET next_at = ?, updated = ? WHERE campaign = ? AND idx = ?"
        )
        db.execute(sql, (until, time.time(), cid, idx))

    # -- do not call ----------------------------------------------------------------------

    def dnc_add(self, db: Connection, numbers: list[str]) -> None:
        """Put numbers on the do-not-call list."""
        sql = self.database.sql(
            "INSERT INTO dnc (number, added) VALUES (?, ?) ON CONFLICT (number) DO NOTHING"
        )
        now = time.time()
        for number in numbers:
            db.execute(sql, (number, now))

    def dnc_remove(self, db: Connection, number: str) -> bool:
        """Take a number off the list; False when it was not on it."""
        cursor = db.execute(self.database.sql("DELETE FROM dnc WHERE number = ?"), (number,))
        return int(getattr(cursor, "rowcount", 0) or 0) > 0

    def dnc_has(self, db: Connection, forms: list[str]) -> bool:
        """Any of `forms` (a number's written forms) on the list."""
        if not forms:
            return False
        marks = ", ".join("?" for _ in forms)
        sql = self.database.sql(f"SELECT 1 FROM dnc WHERE number IN ({marks}) LIMIT 1")
        return db.execute(sql, tuple(forms)).fetchone() is not None

    def dnc_list(self, db: Connection, limit: int) -> list[str]:
        """The list, newest first."""
        sql = self.database.sql("SELECT number FROM dnc ORDER BY added DESC LIMIT ?")
        return [r[0] for r in db.execute(sql, (limit,)).fetchall()]

    # -- idempotency keys of outbound calls ------------------------------------------

    def key_get(self, db: Connection, key: str) -> tuple[str, dict[str, Any]] | None:
        """The fingerprint and first answer of a request with this key, if any."""
        sql = self.database.sql("SELECT fingerprint, answer FROM dial_keys WHERE key = ?")
        row = db.execute(sql, (key,)).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def key_put(
        self, db: Connection, key: str, fingerprint: str, answer: dict[str, Any], ttl: float
    ) -> None:
        """Remember a key's request and answer; forget keys older than `ttl` s."""
        now = time.time()
        db.execute(self.database.sql("DELETE FROM dial_keys WHERE created < ?"), (now - ttl,))
        sql = self.database.sql(
            "INSERT INTO dial_keys (key, fingerprint, answer, created) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (key) DO NOTHING"
        )
        db.execute(sql, (key, fingerprint, json.dumps(answer), now))


def _contact(row: tuple[Any, ...]) -> Contact:
    return Contact(
        row[0], int(row[1]), row[2], json.loads(row[3]), row[4], row[5], int(row[6]),
        float(row[7]), row[8], row[9],
    )  # fmt: skip
