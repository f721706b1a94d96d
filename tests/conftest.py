"""Shared pytest fixtures for live tests against the real server process.

Fixtures:
    start_server: factory ``start_server(*, wait_ready=True, ready_timeout=15.0,
        command=None, env=None, **overrides) -> ServerProcess``. Each call writes
        a config (``tests.peers.server_config`` deep-merged with ``overrides``,
        keyed by top-level section: ``start_server(sip={"t1": 0.05},
        routes={"hold": {"duration": 1}})``), starts ``python -m mediaserver run
        CONFIG`` and waits until it answers OPTIONS. Every server is stopped by
        PID at teardown (SIGTERM, SIGKILL after 10 s), and a server that died on
        its own during the test fails it.
    server: one server with the test defaults (``start_server()``).
    sipp: ``sipp(args, timeout=30.0, *, stats=False, name=None) -> SippResult``,
        run in the test's tmp_path.
    baresip: ``baresip(uri, **kwargs) -> BaresipResult`` (see
        ``tests.peers.run_baresip``), run in the test's tmp_path.
    sipp_scenario: ``sipp_scenario("uac_cancel") -> Path`` of tests/sipp/uac_cancel.xml.
    agent_program: ``agent_program(PROGRAM, config=None, **env) -> ServerProcess``:
        an agent program (.py or .yaml) run as ``mediaserver run PROGRAM``.

Tests that use ``sipp``, ``baresip`` or ``kamailio`` are marked ``peer``
automatically. A missing peer binary fails the test unless
``MEDIASERVER_ALLOW_SKIP=1``, which skips it with a reason.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.peers import (
    SIPP_SCENARIOS,
    BaresipResult,
    ServerProcess,
    SippResult,
    require_binary,
    run_baresip,
    run_sipp,
    server_config,
)

PEER_FIXTURES = {"sipp", "baresip", "kamailio"}


class StartServer(Protocol):
    """Signature of the ``start_server`` fixture."""

    def __call__(
        self,
        *,
        wait_ready: bool = True,
        ready_timeout: float = 15.0,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ServerProcess: ...


class RunSipp(Protocol):
    """Signature of the ``sipp`` fixture."""

    def __call__(
        self,
        args: Sequence[str],
        timeout: float = 30.0,
        *,
        stats: bool = False,
        name: str | None = None,
    ) -> SippResult: ...


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that drives a real peer with ``peer``."""
    for item in items:
        if PEER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.peer)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Factory fixture: start mediaserver processes, stop them all at teardown."""
    servers: list[ServerProcess] = []
    counter = itertools.count()

    def start(
        *,
        wait_ready: bool = True,
        ready_timeout: float = 15.0,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ServerProcess:
        workdir = tmp_path / f"server{next(counter)}"
        proc = ServerProcess(server_config(**overrides), workdir, command=command, env=env)
        servers.append(proc)
        proc.start()
        if wait_ready:
            proc.wait_ready(ready_timeout)
        return proc

    yield start

    died: list[str] = []
    for proc in servers:
        if proc.exited_unexpectedly:
            died.append(f"{proc!r} exited on its own with code {proc.returncode}")
        proc.stop(grace=10.0)
        # Shown by pytest only when the test fails.
        print(proc.log_tail(80))
    if died:
        pytest.fail("server died during the test: " + "; ".join(died), pytrace=False)


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    """A running server with the test defaults."""
    return start_server()


@pytest.fixture
def sipp(tmp_path: Path) -> RunSipp:
    """Run sipp (bounded, traced into tmp_path); fails/skips if sipp is missing."""
    binary = require_binary("sipp")
    counter = itertools.count()

    def run(
        args: Sequence[str],
        timeout: float = 30.0,
        *,
        stats: bool = False,
        name: str | None = None,
    ) -> SippResult:
        return run_sipp(
            args,
            timeout,
            tmp_path,
            stats=stats,
            name=name or f"sipp{next(counter)}",
            sipp=binary,
        )

    return run


@pytest.fixture
def baresip(tmp_path: Path) -> Callable[..., BaresipResult]:
    """Place calls with a headless baresip caller; fails/skips if peers are missing."""
    binary = require_binary("baresip")
    require_binary("espeak-ng")
    require_binary("sox")
    counter = itertools.count()

    def call(uri: str, **kwargs: Any) -> BaresipResult:
        workdir = tmp_path / f"baresip{next(counter)}"
        return run_baresip(uri, workdir, baresip=kwargs.pop("baresip", binary), **kwargs)

    return call


@pytest.fixture
def kamailio() -> str:
    """Path of the kamailio binary; fails/skips if it is missing."""
    return require_binary("kamailio")


@pytest.fixture
def sipp_scenario() -> Callable[[str], Path]:
    """Path of a scenario in tests/sipp by name (with or without ``.xml``)."""

    def path(name: str) -> Path:
        file = SIPP_SCENARIOS / (name if name.endswith(".xml") else f"{name}.xml")
        if not file.is_file():
            raise FileNotFoundError(file)
        return file

    return path


#: Small decoder pool (fast start-up) and a quicker end of turn than the default.
AGENT_PIPELINE = {
    "stt": {"backend": "pocketsphinx", "pool_size": 1},
    "turn": {"end_of_speech_timeout": 0.5},
}


@pytest.fixture
def agent_program(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start an agent program (.py or .yaml) on free ports; stopped at teardown.

    `start(program, config=None, **env)` merges `config` into the server
    config (its `pipeline` section by section), sets PORT to the SIP port, passes the other variables through, and
    waits until the server answers OPTIONS.
    """
    started: list[ServerProcess] = []

    def start(program: Path, config: dict[str, Any] | None = None, **env: str) -> ServerProcess:
        config = dict(config or {})
        pipeline = {**AGENT_PIPELINE, **config.pop("pipeline", {})}  # by section
        config = server_config(pipeline=pipeline, **config)
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
