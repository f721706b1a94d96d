"""examples/support_agent.py (and .yaml) answers a real SIP call: its tool's answer is heard.

The program runs unchanged (`mediaserver run examples/support_agent.py`, the
SIP port from PORT, media ports and models from a server config); baresip
calls sip:support@..., waits for the greeting, asks about order four two, and
records what it hears. The recording must hold the agent's spoken answer,
"Order 42: shipped, ETA April 2nd", in the agent's voice (espeak-ng en-us+m3,
the local voice for rime.spore), clearly better than a wrong answer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.peers import (
    REPO_ROOT,
    ServerProcess,
    best_alignment,
    read_wav_mono,
    server_config,
    speech_wav,
    write_wav,
)

_REFERENCE = """
import sys
import numpy as np
from mediaserver.codecs.resample import resample
from mediaserver.pipeline.tts.clauses import ClauseAggregator
from mediaserver.pipeline.tts.espeak import EspeakBackend
tts = EspeakBackend()
out = {}
for i, text in enumerate(sys.argv[3:]):
    # Clause by clause, as the agent speaks a reply.
    clauses = ClauseAggregator()
    parts = clauses.push(text) + [clauses.flush() or ""]
    pcm = np.concatenate(
        [c.pcm for part in parts if part.strip() for c in tts.synthesize(part, sys.argv[2])]
    )
    out[f"a{i}"] = resample(pcm, tts.sample_rate, 8000)
np.savez(sys.argv[1], **out)
"""


def _reference(folder: Path, voice: str, *texts: str) -> list[np.ndarray]:
    """espeak-ng audio of `texts` made in order in a fresh process (as the server did)."""
    path = folder / "reference.npz"
    subprocess.run(
        [sys.executable, "-c", _REFERENCE, str(path), voice, *texts],
        check=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    with np.load(path) as data:
        return [data[f"a{i}"] for i in range(len(texts))]


@pytest.mark.parametrize("program", ["support_agent.py", "support_agent.yaml"])
def test_support_agent_answers_an_order_question(baresip, tmp_path: Path, program: str) -> None:  # type: ignore[no-untyped-def]
    config = server_config(
        pipeline={"stt": {"pool_size": 1}, "turn": {"end_of_speech_timeout": 0.5}}
    )
    server = ServerProcess(
        config,
        tmp_path / "server",
        command=[
            sys.executable,
            "-m",
            "mediaserver",
            "run",
            str(REPO_ROOT / "examples" / program),
            "--config",
        ],
        env={"PORT": str(config["sip"]["listen"][0]["port"])},
    )
    server.start()
    try:
        server.wait_ready(timeout=30)
        question, _ = read_wav_mono(speech_wav("check order four two", tmp_path / "q"))
        pause = np.zeros(8000 * 5, dtype=np.int16)
        source = write_wav(tmp_path / "caller.wav", np.concatenate([pause, question, pause]))
        result = baresip(server.uri("support"), seconds=25, source_wav=source)
        assert result.established, result.describe()
        assert result.heard_wav is not None, result.describe()
        server.wait_log("agent_said", count=2, timeout=10)
        log = server.log_text()
        assert "check order four two" in log, server.log_tail()
        assert "Order 42: shipped, ETA April 2nd" in log, server.log_tail()
        heard, _ = read_wav_mono(result.heard_wav)
        greeting, answer, wrong = _reference(
            tmp_path,
            "en-us+m3",
            "Hello, this is Support Agent. How can I help you?",
            "Order 42: shipped, ETA April 2nd",
            "Order 17: cancelled, refund sent",
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
    finally:
        server.stop()
