"""examples/support_agent.py (and .yaml) answers a real SIP call: its tool's answer is heard.

The program runs unchanged (`mediaserver run examples/support_agent.py`, the
SIP port from PORT, media ports and models from a server config); baresip
calls sip:support@..., waits for the greeting, asks about order four two, and
records what it hears. The recording must hold the agent's spoken answer,
"Order 42: shipped, ETA April 2nd", in the agent's voice (espeak-ng en-us+m3,
the local voice for rime.spore), clearly better than a wrong answer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers import REPO_ROOT, agent_speech, best_alignment, caller_wav, read_wav_mono


@pytest.mark.parametrize("program", ["support_agent.py", "support_agent.yaml"])
def test_support_agent_answers_an_order_question(  # type: ignore[no-untyped-def]
    agent_program, baresip, tmp_path: Path, program: str
) -> None:
    server = agent_program(REPO_ROOT / "examples" / program)
    source = caller_wav("check order four two", tmp_path, tail=5)
    result = baresip(server.uri("support"), seconds=25, source_wav=source)
    assert result.established, result.describe()
    assert result.heard_wav is not None, result.describe()
    server.wait_log("agent_said", count=2, timeout=10)
    log = server.log_text()
    assert "check order four two" in log, server.log_tail()
    assert "Order 42: shipped, ETA April 2nd" in log, server.log_tail()
    heard, _ = read_wav_mono(result.heard_wav)
    greeting, answer, wrong = agent_speech(
        tmp_path,
        "Hello, this is Support Agent. How can I help you?",
        "Order 42: shipped, ETA April 2nd",
        "Order 17: cancelled, refund sent",
        voice="en-us+m3",  # the local voice for rime.spore
    )
    _, said_greeting = best_alignment(greeting, heard)
    _, said_answer = best_alignment(answer, heard)
    _, said_wrong = best_alignment(wrong, heard)
    print(
        f"correlation: greeting {said_greeting:.3f}, answer {said_answer:.3f}, "
        f"wrong {said_wrong:.3f}"
    )
    assert said_greeting >= 0.8
    assert said_answer >= 0.8
    assert said_answer > said_wrong + 0.2
