"""examples/contexts_agent.py answers a real SIP call: the gather step asks the
caller's name and stores it, the flow moves on to the orders step, and there the
step's one tool answers the caller's question (all checked in the call record).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np

from tests.peers import REPO_ROOT, read_wav_mono, speech_wav, write_wav

WHISPER = {"pipeline": {"stt": {"backend": "faster-whisper"}}}


def caller(folder: Path) -> Path:
    """The greeting and its question (9 s), the name, the thanks (4 s), the order."""
    silence = lambda s: np.zeros(int(8000 * s), np.int16)  # noqa: E731
    said = [
        read_wav_mono(speech_wav(text, folder / "speech"))[0]
        for text in ("my name is Peter", "please check order forty two")
    ]
    pcm = np.concatenate([silence(9), said[0], silence(4), said[1], silence(7)])
    return write_wav(folder / "caller.wav", pcm)


def test_contexts_agent_gathers_then_moves_to_the_orders_step(  # type: ignore[no-untyped-def]
    agent_program, baresip, tmp_path: Path
) -> None:
    server = agent_program(REPO_ROOT / "examples" / "contexts_agent.py", WHISPER)
    result = baresip(server.uri("desk"), seconds=32, source_wav=caller(tmp_path))
    assert result.established, result.describe()
    server.wait_log("record_written", timeout=15)
    log = server.log_text()
    said = [line for line in log.splitlines() if "agent_said" in line]
    assert any("What is your name?" in line for line in said), server.log_tail()
    port = int(re.findall(r"admin_listening .*port=(\d+)", log)[0])
    (call,) = httpx.get(f"http://127.0.0.1:{port}/calls", timeout=5).json()["recent"]
    events = httpx.get(f"http://127.0.0.1:{port}/calls/{call['id']}", timeout=5).json()["events"]
    of = lambda kind: [e["data"] for e in events if e["kind"] == kind]  # noqa: E731
    (gathered,) = of("gather")
    assert gathered == {"step": "identify", "key": "name", "value": "Peter"}, log
    assert of("step") == [{"context": "default", "step": "orders", "by": "gather"}]
    # The step's one tool ran (the number is the recogniser's: Whisper base hears
    # "forty two" from espeak as 42 or 2, issue 12), and its answer was said.
    (tool,) = of("tool")
    assert tool["name"] == "check_order" and tool["arguments"]["order_id"], tool
    assert any(f"Order {tool['arguments']['order_id']}: shipped" in line for line in said), log
