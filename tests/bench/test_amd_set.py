"""bench/amd.py on a small set of its own (another seed than the documented run):
the server's answering-machine detection, played in real time, must classify it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

AMD = Path(__file__).resolve().parents[2] / "bench" / "amd.py"


@pytest.mark.timeout(240)
def test_the_detection_classifies_a_fresh_set(tmp_path: Path) -> None:
    out = tmp_path / "amd.json"
    done = subprocess.run(
        [sys.executable, str(AMD), "--per-class", "8", "--seed", "11", "--stt", "pocketsphinx",
         "--concurrency", "8", "--json-out", str(out)],
        capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["samples"] == 20
    assert report["accuracy"] >= 0.95, report["errors"]
    assert report["decision_s"]["human"]["p50"] <= 2.5, report["decision_s"]
