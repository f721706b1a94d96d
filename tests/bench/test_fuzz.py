"""A short run of bench/fuzz.py: a few thousand coverage-guided inputs into every
parser that reads the network, none of which may raise anything but its
documented rejection or hang (the long runs are in docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "bench" / "fuzz.py"
RUNS = 3000


@pytest.mark.timeout(600)
def test_every_network_parser_survives_a_short_fuzzing_run(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(FUZZ),
            "all",
            "--runs",
            str(RUNS),
            "--max-time",
            "120",
            "--artifacts",
            str(tmp_path),
        ],
        capture_output=True,
        timeout=550,
        check=False,
    )
    report = json.loads(done.stdout)
    findings = {
        name: result.get("finding")
        for name, result in report["targets"].items()
        if result["crashes"] or result["hangs"]
    }
    assert not findings, findings
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    for name, result in report["targets"].items():
        assert result["inputs"] == RUNS, (name, result)
        # Coverage shows the instrumentation works; srtp's code under test is libsrtp
        # (C), of which atheris sees only the thin Python wrapper.
        assert result["coverage_edges"] > (2 if name == "srtp" else 20), (name, result)
