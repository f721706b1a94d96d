"""examples/skills_agent.py answers real SIP calls: a skill's tool runs and its
answer is what the caller hears.

The program runs unchanged (`mediaserver run examples/skills_agent.py`) with
Whisper as the recogniser; baresip calls sip:skills@..., waits for the
greeting and asks its question. The server's log must show the skill's tool
call and the agent saying the tool's answer.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.peers import REPO_ROOT, caller_wav

WHISPER = {"pipeline": {"stt": {"backend": "faster-whisper"}}}


@pytest.mark.parametrize(
    ("question", "tool", "answer"),
    [
        ("what time is it in Tokyo?", "get_current_time", r"The current time is [\d:]+ [AP]M JST"),
        ("what is twelve times seven?", "calculate", r"12 times 7 is 84"),
    ],
)
def test_skills_agent_answers_with_its_skills(  # type: ignore[no-untyped-def]
    agent_program, baresip, tmp_path: Path, question: str, tool: str, answer: str
) -> None:
    server = agent_program(REPO_ROOT / "examples" / "skills_agent.py", WHISPER)
    source = caller_wav(question, tmp_path, tail=6)
    result = baresip(server.uri("skills"), seconds=25, source_wav=source)
    assert result.established, result.describe()
    server.wait_log("record_written", timeout=15)
    said = [line for line in server.log_text().splitlines() if "agent_said" in line]
    assert any(re.search(answer, line) for line in said), server.log_tail()
    # The call record has the skill's tool call and its answer.
    port = int(re.findall(r"admin_listening .*port=(\d+)", server.log_text())[0])
    (call,) = httpx.get(f"http://127.0.0.1:{port}/calls", timeout=5).json()["recent"]
    record = httpx.get(f"http://127.0.0.1:{port}/calls/{call['id']}", timeout=5).json()
    (ran,) = [e["data"] for e in record["events"] if e["kind"] == "tool"]
    assert ran["name"] == tool and not ran["error"], ran
    assert re.search(answer, ran["result"]), ran
