"""Fixtures for live agent tests: agent programs run as `mediaserver run PROGRAM`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers import ServerProcess, server_config

#: Small decoder pool (fast start-up) and a quicker end of turn than the default.
AGENT_PIPELINE = {"stt": {"backend": "pocketsphinx", "pool_size": 1}, "turn": {"end_of_speech_timeout": 0.5}}


@pytest.fixture
def agent_program(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start an agent program (.py or .yaml) on free ports; stopped at teardown.

    `start(program, config=None, **env)` deep-merges `config` into the server
    config, sets PORT to the SIP port, passes the other variables through, and
    waits until the server answers OPTIONS.
    """
    started: list[ServerProcess] = []

    def start(program: Path, config: dict[str, Any] | None = None, **env: str) -> ServerProcess:
        config = server_config(pipeline=AGENT_PIPELINE, **(config or {}))
        proc = ServerProcess(
            config,
            tmp_path / f"agent{len(started)}",
            command=[sys.executable, "-m", "mediaserver", "run", str(program), "--config"],
            env={"PORT": str(config["sip"]["listen"][0]["port"]), **env},
        )
        started.append(proc)
        proc.start()
        proc.wait_ready(timeout=30)
        return proc

    yield start
    for proc in started:
        proc.stop()
