"""structlog JSON lines: one JSON object per line, and every line about a call
carries its SIP Call-ID (`call_id`), so one call's story is one grep away."""

from __future__ import annotations

import json
from typing import Any


def test_json_logs_put_the_call_id_on_every_call_line(start_server, sipp) -> None:  # type: ignore[no-untyped-def]
    server = start_server(
        routes={"hold": {"app": "hold", "duration": 0}},
        logging={"level": "debug", "format": "json"},
    )
    result = sipp(["-sn", "uac", "-s", "hold", "-d", "500", server.target], timeout=20)
    assert result.ok, result.describe()
    server.wait_log('"call_ended"', timeout=10)
    lines: list[dict[str, Any]] = [
        json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")
    ]
    assert lines and all("event" in x and "timestamp" in x and "level" in x for x in lines)
    about_call = [x for x in lines if "call" in x or "record" in x]
    assert {"call_incoming", "call_confirmed", "call_ended"} <= {x["event"] for x in about_call}
    call_ids = {x.get("call_id") for x in about_call}
    assert len(call_ids) == 1 and None not in call_ids, about_call
