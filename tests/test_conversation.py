"""The default stack holds a conversation: Whisper hears, the engine acts, over SIP/RTP.

Real calls with `mediaserver call` (G.711 u-law, espeak-ng speech) to a server
running the default pipeline (faster-whisper with the installed base model,
the scripted engine, espeak-ng), asked in everyday words rather than the
phrasings the other live tests use. What the server heard, which tool it
called with which arguments and what it said come from the call record.
The evaluation set with many more phrasings, voices and noise is
bench/conversation.py; this test only proves the default path works end to end.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from typing import Any

import pytest

from tests.peers import REPO_ROOT, ServerProcess

pytestmark = pytest.mark.timeout(180)

#: The default recogniser: no `stt` override (the live-test default pins pocketsphinx).
DEFAULT_STT = {"stt": {"backend": "faster-whisper", "pool_size": 1}}

SUPPORT = {
    "app": "agent",
    "duration": 0,
    "agent": {
        "greeting": "Thanks for calling support.",
        "tools": [
            {
                "name": "check_order",
                "description": "Check the status of a customer order.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "order_id": {"type": "string", "description": "The order ID to look up"}
                    },
                    "required": ["order_id"],
                },
                "response": "Order {order_id}: shipped, ETA April 2nd.",
            }
        ],
    },
}

WEATHER = {
    "app": "agent",
    "duration": 0,
    "agent": {
        "greeting": "Weather line.",
        "tools": [
            {
                "name": "get_weather",
                "description": "Tell the weather forecast for a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "description": "The city"}},
                    "required": ["city"],
                },
                "response": "It is sunny in {city} today.",
            }
        ],
    },
}


def call(server: ServerProcess, route: str, say: str) -> list[dict[str, Any]]:
    """Say `say` to `route` with the test dialer; the call's record events."""
    proc = subprocess.run(
        [sys.executable, "-m", "mediaserver", "call", server.uri(route), "--say", say,
         "--timeout", "25"],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    server.wait_log("record_written", timeout=15)
    with sqlite3.connect(server.workdir / "records" / "calls.db") as db:
        (call_id,) = db.execute("SELECT id FROM calls").fetchone()
        rows = db.execute("SELECT kind, data FROM events WHERE call = ? ORDER BY seq", (call_id,))
        return [{"event": kind, **json.loads(data)} for kind, data in rows]


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == kind]


def test_support_agent_understands_an_everyday_request(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(routes={"support": SUPPORT}, pipeline=DEFAULT_STT)
    server.wait_log("stt=faster-whisper")
    events = call(server, "support", "Hi, can you check the status of my order? It is 312.")
    (tool,) = of(events, "tool_call")
    assert tool["name"] == "check_order" and tool["arguments"] == {"order_id": "312"}, events
    said = " ".join(e["text"] for e in of(events, "agent_said"))
    assert "Order 312: shipped" in said, said


def test_weather_agent_fills_a_free_text_city(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(routes={"weather": WEATHER}, pipeline=DEFAULT_STT)
    events = call(server, "weather", "What's the weather like in Berlin today?")
    (tool,) = of(events, "tool_call")
    assert tool["name"] == "get_weather", events
    assert tool["arguments"]["city"].lower() == "berlin", tool
    said = " ".join(e["text"] for e in of(events, "agent_said"))
    assert "sunny in Berlin" in said.replace("berlin", "Berlin"), said
