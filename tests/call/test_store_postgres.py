"""Call records in PostgreSQL (`records.dsn`): the store against a private cluster,
and a server that keeps its call's record there."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from mediaserver.call.databases import PostgresDatabase
from mediaserver.call.store import CallStore


def _rows(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as db:
        return db.execute(sql, args).fetchall()


def test_records_round_trip_through_postgres(postgres_dsn: str) -> None:
    store = CallStore(None, dsn=postgres_dsn)
    try:
        record = store.start_call("pg-1", call_id="abc@host", route="support", caller="sip:a@b")
        record.add("turn", {"turn": 1, "caller_text": "it's 50% off? :name ?", "latency_ms": {}})
        record.add("error", {"kind": "tool_error", "stage": "tool", "odd": {(1, 2): {1, 2}}})
        record.finish("remote BYE", "remote", {"global_data": {"plan": "gold"}})
        assert store.flush(10.0)  # the writer committed: another connection sees it all
        seqs = _rows(
            postgres_dsn, "SELECT seq, kind FROM events WHERE call = %s ORDER BY seq", "pg-1"
        )
        assert seqs == [(1, "turn"), (2, "error"), (3, "final")]
        assert store.backlog == 0 and store.write_errors == 0
    finally:
        store.close()
    again = CallStore(None, dsn=postgres_dsn)
    try:
        (summary,) = [c for c in again.recent(10) if c["id"] == "pg-1"]
        assert summary["route"] == "support" and summary["turns"] == 1 and summary["errors"] == 1
        detail = again.detail("pg-1")
        assert detail is not None and detail["final_state"] == {"global_data": {"plan": "gold"}}
        assert detail["events"][0]["data"]["caller_text"] == "it's 50% off? :name ?"
    finally:
        again.close()


def test_a_server_keeps_its_records_in_postgres(start_server, sipp, postgres_dsn: str) -> None:  # type: ignore[no-untyped-def]
    server = start_server(
        routes={"hold": {"app": "hold", "duration": 0}}, records={"dsn": postgres_dsn}
    )
    result = sipp(["-sn", "uac", "-s", "hold", "-d", "500", server.target], timeout=20)
    assert result.ok, result.describe()
    server.wait_log("record_written", timeout=10)
    rows = _rows(
        postgres_dsn,
        "SELECT c.route, c.ended_by, e.kind, e.data FROM calls c JOIN events e ON e.call = c.id"
        " WHERE c.route = 'hold' ORDER BY e.seq",
    )
    assert rows and rows[0][0] == "hold" and rows[0][1] == "remote"
    assert [r[2] for r in rows][-1] == "final"
    assert not (server.workdir / "records").exists()  # not in SQLite as well


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://rec:s3cret@db.example:5432/calls",
        "host=db.example user=rec password=s3cret dbname=calls",
        "host=db.example PASSWORD = 's3 cret' dbname=calls",
    ],
)
def test_logged_dsn_never_shows_the_password(dsn: str) -> None:
    shown = str(PostgresDatabase(dsn))
    assert "s3" not in shown and "db.example" in shown and "calls" in shown
