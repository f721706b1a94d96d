"""examples/info_gatherer_agent.py (the SDK's InfoGatherer prefab) over a real SIP
call: both questions asked, the second read back and confirmed, the answers in
the call's global data as the SDK keeps them."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from mediaserver import InfoGatherer
from tests.peers import REPO_ROOT, read_wav_mono, speech_wav, write_wav

WHISPER = {"pipeline": {"stt": {"backend": "faster-whisper"}}}


def test_questions_are_checked() -> None:
    with pytest.raises(ValueError, match="Question 1 is missing 'question_text'"):
        InfoGatherer(questions=[{"key_name": "x"}])
    agent = InfoGatherer(questions=[{"key_name": "name", "question_text": "Your name?"}])
    spec = agent.to_spec()
    assert spec.greeting == "Hello. I have a few questions for you. Your name?"
    assert spec.global_data == {"answers": []}


def test_info_gatherer_asks_confirms_and_keeps_the_answers(  # type: ignore[no-untyped-def]
    agent_program, baresip, tmp_path: Path
) -> None:
    server = agent_program(REPO_ROOT / "examples" / "info_gatherer_agent.py", WHISPER)
    said = [
        read_wav_mono(speech_wav(text, tmp_path / "speech"))[0]
        for text in ("my name is Peter", "I would like to book a table", "yes")
    ]
    gap = lambda s: np.zeros(int(8000 * s), np.int16)  # noqa: E731
    source = write_wav(
        tmp_path / "caller.wav",
        np.concatenate([gap(9), said[0], gap(5), said[1], gap(7), said[2], gap(6)]),
    )
    result = baresip(server.uri("intake"), seconds=45, source_wav=source)
    assert result.established, result.describe()
    server.wait_log("record_written", timeout=15)
    log = server.log_text()
    agent_said = "\n".join(line for line in log.splitlines() if "agent_said" in line)
    assert "How can we help you today?" in agent_said, server.log_tail()
    assert "Is that right?" in agent_said, server.log_tail()
    port = int(re.findall(r"admin_listening .*port=(\d+)", log)[0])
    (call,) = httpx.get(f"http://127.0.0.1:{port}/calls", timeout=5).json()["recent"]
    record = httpx.get(f"http://127.0.0.1:{port}/calls/{call['id']}", timeout=5).json()
    gathered = [e["data"] for e in record["events"] if e["kind"] == "gather"]
    assert [g["key"] for g in gathered] == ["full_name", "reason"], log
    assert gathered[0]["value"] == "Peter"
    assert "table" in gathered[1]["value"].lower()
    answers = record["final_state"]["global_data"]["answers"]
    assert answers == [
        {"key_name": "full_name", "answer": "Peter"},
        {"key_name": "reason", "answer": gathered[1]["value"]},
    ]
