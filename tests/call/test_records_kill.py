"""Killing the server process mid-call (SIGKILL) loses at most the last event of
that call's record.

baresip calls the weather agent and asks "what is the weather in paris"; once the
agent has answered (the call goes on: the caller's WAV has seconds of silence
left), the server gets SIGKILL. Every event the server logged as written
(`record_event`, logged after the write) must be in its records database, in one
unbroken run of seq numbers, and the database must be intact.
"""

from __future__ import annotations

import re
import signal
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

from tests.peers import WEATHER_ANSWER, WEATHER_QUESTION, caller_wav, weather_route

#: Small decoder pool, quick end of turn, no fillers (as in test_recovery_live).
PIPELINE: dict[str, Any] = {
    "stt": {"backend": "pocketsphinx", "pool_size": 1},
    "turn": {"end_of_speech_timeout": 0.5},
    "fillers": {"enabled": False},
}

LEAD = 4.0  # silence while the greeting plays
TAIL = 12.0  # silence after the question: the call is still up when the server dies

#: `record_event kind=... record=... seq=...` (console renderer, keys sorted).
RECORD_EVENT = re.compile(
    r"\brecord_event\b.*?\bkind='?(?P<kind>[^\s']+)'?.*?"
    r"\brecord='?(?P<record>[^\s']+)'?.*?\bseq=(?P<seq>\d+)"
)


def _logged_events(log: str) -> dict[str, dict[int, str]]:
    """Per record, the events the server logged as written: {seq: kind}."""
    logged: dict[str, dict[int, str]] = {}
    for line in log.splitlines():
        match = RECORD_EVENT.search(line)
        if match:
            logged.setdefault(match["record"], {})[int(match["seq"])] = match["kind"]
    return logged


def test_sigkill_mid_call_loses_at_most_the_last_event(  # type: ignore[no-untyped-def]
    start_server, baresip, tmp_path: Path
) -> None:
    server = start_server(routes={"weather": weather_route()}, pipeline=PIPELINE)
    source = caller_wav(WEATHER_QUESTION, tmp_path, lead=LEAD, tail=TAIL)
    seconds = LEAD + 3 + TAIL  # baresip's own bound (-t); it also waits at most +10 s
    with ThreadPoolExecutor(max_workers=1) as pool:
        call = pool.submit(baresip, server.uri("weather"), seconds=seconds, source_wav=source)
        # The answer was said: the turn's events are being written right now.
        log = server.wait_log(WEATHER_ANSWER, timeout=LEAD + 30)
        answered = WEATHER_ANSWER in log
        ended_before = "call_ended" in log
        rc = server.kill()
        result = call.result(timeout=seconds + 30)
    assert answered, f"the agent never answered\n{server.log_tail()}"
    assert not ended_before, f"the call ended before the kill\n{server.log_tail()}"
    assert rc == -signal.SIGKILL, rc  # it was running until killed
    assert result.established, result.describe()

    log = server.log_text()
    logged = _logged_events(log)
    assert len(logged) == 1, sorted(logged)  # the one call
    ((record, events),) = logged.items()
    max_logged = max(events)
    assert max_logged >= 5, events  # the call had a record worth checking
    assert sorted(events) == list(range(1, max_logged + 1)), events

    db_path = server.workdir / "records" / "calls.db"
    with closing(sqlite3.connect(db_path, timeout=5)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        calls = db.execute("SELECT id, route, ended_at FROM calls").fetchall()
        rows = db.execute(
            "SELECT seq, kind FROM events WHERE call = ? ORDER BY seq", (record,)
        ).fetchall()
    assert calls == [(record, "weather", None)]  # it never ended
    seqs = [seq for seq, _ in rows]
    k = len(seqs)
    assert seqs == list(range(1, k + 1)), seqs  # no gaps
    # At most the last event is lost (the log line follows the write: normally none).
    assert k >= max_logged - 1, (k, max_logged)
    for seq, kind in rows:
        if seq in events:
            assert events[seq] == kind, (seq, kind, events[seq])
    kinds = [kind for _, kind in rows]
    assert "agent_said" in kinds and "final" not in kinds, kinds
