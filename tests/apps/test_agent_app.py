"""An agent answers a real SIP/RTP call: baresip asks a question, the agent answers.

baresip dials the `weather` agent and plays a WAV: silence while the greeting
plays, then an espeak-ng question, then silence. What baresip recorded must
contain the agent's spoken answer: it correlates with espeak-ng's audio of the
right answer (synthesised here the same way), clearly better than with a wrong
answer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tests.peers import REPO_ROOT, best_alignment, read_wav_mono, speech_wav, write_wav

AGENT: dict[str, Any] = {
    "app": "agent",
    "duration": 0,
    "agent": {
        "greeting": "Hello, this is the weather line.",
        "hints": ["what is the weather in", "thank you"],
        "tools": [
            {
                "name": "get_weather",
                "description": "Tell the weather forecast for a city.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "enum": ["paris", "london", "berlin"]}
                    },
                    "required": ["city"],
                },
                "response": "It is sunny in {city} today.",
            }
        ],
    },
}


_REFERENCE = """
import sys
import numpy as np
from mediaserver.codecs.resample import resample
from mediaserver.pipeline.tts.espeak import EspeakBackend
tts = EspeakBackend()
out = {}
for i, text in enumerate(sys.argv[2:]):
    pcm = np.concatenate([c.pcm for c in tts.synthesize(text)])
    out[f"a{i}"] = resample(pcm, tts.sample_rate, 8000)
np.savez(sys.argv[1], **out)
"""


def _tts_8k(folder: Path, *texts: str) -> list[np.ndarray]:
    """espeak-ng's audio of `texts`, synthesised in order in a fresh process.

    libespeak-ng keeps state from one synthesis to the next (the same text
    comes out a few samples longer or shorter), so the reference is made the
    way the server made it: a new process saying the same things in order.
    """
    path = folder / "reference.npz"
    subprocess.run(
        [sys.executable, "-c", _REFERENCE, str(path), *texts],
        check=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    with np.load(path) as data:
        return [data[f"a{i}"] for i in range(len(texts))]


def test_baresip_asks_and_hears_the_right_answer(start_server, baresip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = start_server(
        routes={"weather": AGENT},
        pipeline={"stt": {"pool_size": 1}, "turn": {"end_of_speech_timeout": 0.5}},
    )
    question, rate = read_wav_mono(speech_wav("what is the weather in paris", tmp_path / "q"))
    assert rate == 8000
    silence = np.zeros(8000 * 4, dtype=np.int16)
    source = write_wav(
        tmp_path / "caller.wav", np.concatenate([silence, question, silence, silence])
    )
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
    said_greeting, said_answer, wrong_answer = _tts_8k(
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
