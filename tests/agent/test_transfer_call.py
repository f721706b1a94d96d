"""Actions on a live SIP call (tests/agent/transfer_agent.py answered by baresip).

Transfer: the tool returns connect(URI), the server sends REFER, baresip calls the
weather desk (a second mediaserver), and the NOTIFY with 200 ends the agent's leg.
Hangup: the tool returns hangup(), the reply is said, then the server sends BYE.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tests.peers import (
    REPO_ROOT,
    ServerProcess,
    read_wav_mono,
    server_config,
    speech_wav,
    write_wav,
)


def test_connect_sends_refer_and_the_caller_reaches_the_desk(
    start_server, baresip, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    desk = start_server(routes={"desk": {"app": "hold", "duration": 3}})
    config = server_config(
        pipeline={"stt": {"pool_size": 1}, "turn": {"end_of_speech_timeout": 0.5}}
    )
    front = ServerProcess(
        config,
        tmp_path / "front",
        command=[
            sys.executable,
            "-m",
            "mediaserver",
            "run",
            str(REPO_ROOT / "tests" / "agent" / "transfer_agent.py"),
            "--config",
        ],
        env={
            "PORT": str(config["sip"]["listen"][0]["port"]),
            "WEATHER_DESK_URI": desk.uri("desk"),
        },
    )
    front.start()
    try:
        front.wait_ready(timeout=30)
        question, _ = read_wav_mono(speech_wav("what is the weather in paris", tmp_path / "q"))
        pause = np.zeros(8000 * 5, dtype=np.int16)
        source = write_wav(tmp_path / "caller.wav", np.concatenate([pause, question, pause, pause]))
        result = baresip(front.uri("desk"), seconds=25, source_wav=source)
        log = front.log_text()
        assert "Transferring you to the weather desk." in log, front.log_tail()
        front.wait_log("transfer_outcome", timeout=10)
        assert "ok=True" in front.log_text().split("transfer_outcome", 1)[1].splitlines()[0]
        # The caller's new call reached the desk.
        desk.wait_log("call_incoming", timeout=10)
        assert "user=desk" in desk.log_text()
        assert result.established, result.describe()
    finally:
        front.stop()


def test_hangup_action_ends_the_call_with_bye(baresip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = server_config(
        pipeline={"stt": {"pool_size": 1}, "turn": {"end_of_speech_timeout": 0.5}}
    )
    front = ServerProcess(
        config,
        tmp_path / "front",
        command=[
            sys.executable,
            "-m",
            "mediaserver",
            "run",
            str(REPO_ROOT / "tests" / "agent" / "transfer_agent.py"),
            "--config",
        ],
        env={"PORT": str(config["sip"]["listen"][0]["port"]), "ACTION": "hangup"},
    )
    front.start()
    try:
        front.wait_ready(timeout=30)
        question, _ = read_wav_mono(speech_wav("what is the weather in paris", tmp_path / "q"))
        pause = np.zeros(8000 * 5, dtype=np.int16)
        source = write_wav(tmp_path / "caller.wav", np.concatenate([pause, question, pause, pause]))
        result = baresip(front.uri("desk"), seconds=25, source_wav=source)
        assert result.established, result.describe()
        ended = front.wait_log("call_ended", timeout=10)
        line = next(x for x in ended.splitlines() if "call_ended" in x)
        assert "by=local" in line, line  # our BYE, not the caller's
        assert "text='It is sunny. Goodbye.'" in front.log_text()
        assert "CALL_CLOSED" in result.event_types()
    finally:
        front.stop()
