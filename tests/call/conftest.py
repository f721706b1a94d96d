"""Fixtures for the call tests: a private PostgreSQL cluster for the call records."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import ALLOW_SKIP_ENV, free_port, skips_allowed


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A DSN to a throwaway PostgreSQL on 127.0.0.1 (initdb + pg_ctl, run as the
    `postgres` user when we are root; stopped by pg_ctl at the end)."""
    bindir = _pg_bin()
    if bindir is None:
        reason = "PostgreSQL server programs are not installed (run scripts/setup.sh)"
        if skips_allowed():
            pytest.skip(f"{reason}; skipped because {ALLOW_SKIP_ENV}=1")
        pytest.fail(reason, pytrace=False)
    # Not under pytest's tmp folders: those are private to root, and the server
    # runs as `postgres`.
    data = Path(tempfile.mkdtemp(prefix="mediaserver-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    run = lambda *cmd: subprocess.run(  # noqa: E731
        [*as_user, *cmd], check=True, capture_output=True, timeout=60, cwd=data
    )
    cluster = data / "cluster"
    run(str(bindir / "initdb"), "-D", str(cluster), "-A", "trust", "-U", "postgres")
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    # The server's output goes to a log file: it outlives pg_ctl, and pipes it
    # inherited would keep subprocess.run waiting.
    log = str(data / "postgres.log")
    run(str(bindir / "pg_ctl"), "-D", str(cluster), "-l", log, "-o", options, "-w", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(cluster), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
            cwd=data,
        )
        shutil.rmtree(data, ignore_errors=True)
