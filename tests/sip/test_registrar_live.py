"""The registrar with a real phone: baresip registers with its password, and its
calls are authenticated (digest challenge answered) before the app sees them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.peers import caller_wav


def test_phone_registers_and_its_call_is_authenticated(  # type: ignore[no-untyped-def]
    start_server, baresip, tmp_path: Path
) -> None:
    server = start_server(
        routes={"hold": {"app": "hold", "duration": 2}},
        sip={"auth": {"users": {"alice": {"password": "alice-pw"}}}},
    )
    account = f"<sip:alice@{server.target}>;auth_pass=alice-pw;regint=600"
    source = caller_wav("hello", tmp_path, tail=6)
    result = baresip(server.uri("hold"), seconds=8, source_wav=source, account=account)
    assert result.established, result.describe()
    assert "200 OK (mediaserver) [1 binding]" in result.output, result.describe()
    log = server.wait_log("record_written", timeout=10)
    assert "sip_registered" in log and "user=alice" in log, server.log_tail()
    assert "sip_auth_rejected" not in log and "sip_message_rejected" not in log
    with sqlite3.connect(server.workdir / "records" / "calls.db") as db:
        rows = db.execute("SELECT data FROM events WHERE kind = 'sip' ORDER BY seq").fetchall()
    incoming = json.loads(rows[0][0])
    assert incoming["event"] == "incoming" and incoming["auth_user"] == "alice"
    # baresip removes its binding when it quits (REGISTER with expires 0).
    assert "bindings=0" in server.wait_log("bindings=0", timeout=5)
