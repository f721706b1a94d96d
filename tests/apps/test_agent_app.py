"""An agent answers a real SIP/RTP call: baresip asks a question, the agent answers.

baresip dials the `weather` agent and plays a WAV: silence while the greeting
plays, then an espeak-ng question, then silence. What baresip recorded must
contain the agent's spoken answer: it correlates with espeak-ng's audio of the
right answer (synthesised here the same way), clearly better than with a wrong
answer.
"""

from __future__ import annotations

from pathlib import Path

from tests.peers import (
    agent_speech,
    best_alignment,
    caller_wav,
    read_wav_mono,
    weather_route,
)


def test_baresip_asks_and_hears_the_right_answer(start_server, baresip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = start_server(
        routes={"weather": weather_route()},
        pipeline={"stt": {"backend": "pocketsphinx", "pool_size": 1}, "turn": {"end_of_speech_timeout": 0.5}},
    )
    source = caller_wav("what is the weather in paris", tmp_path, lead=4, tail=8)
    _, rate = read_wav_mono(source)
    assert rate == 8000
    result = baresip(server.uri("weather"), seconds=25, source_wav=source)
    assert result.established, result.describe()
    assert result.heard_wav is not None, result.describe()
    heard, heard_rate = read_wav_mono(result.heard_wav)
    assert heard_rate == 8000
    server.wait_log("agent_said", count=2, timeout=10)
    log = server.log_text()
    assert "what is the weather in paris" in log, server.log_tail()

    # baresip records the packets it receives (the agent sends nothing between
    # replies), so the recording is the greeting followed by the answer.
    said_greeting, said_answer, wrong_answer = agent_speech(
        tmp_path,
        "Hello, this is the weather line.",
        "It is sunny in paris today.",
        "It is raining in london today.",
    )
    greeting_at, greeting = best_alignment(said_greeting, heard)
    answer_at, right = best_alignment(said_answer, heard)
    _, wrong = best_alignment(wrong_answer, heard)
    print(f"correlation: greeting {greeting:.3f}, right {right:.3f}, wrong {wrong:.3f}")
    assert greeting >= 0.8, greeting
    assert right >= 0.8, (right, wrong)
    assert right > wrong + 0.2, (right, wrong)
    assert answer_at > greeting_at
