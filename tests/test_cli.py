"""The `mediaserver call` dialer and `mediaserver demo`, as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.peers import REPO_ROOT


def mediaserver(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mediaserver", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )


def test_call_echo_says_records_and_reports(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = start_server(routes={"echo": {"app": "echo", "duration": 0}})
    heard = tmp_path / "heard.wav"
    proc = mediaserver(
        "call",
        server.uri("echo"),
        "--say",
        "hello there",
        "--record",
        str(heard),
        "--dtmf",
        "12",
        "--timeout",
        "15",
    )
    assert proc.returncode == 0, proc.stderr
    assert "answered in" in proc.stdout
    assert "agent:" in proc.stdout  # the echo of what it said came back
    assert "reply began" in proc.stdout
    assert heard.is_file() and heard.stat().st_size > 8000
    server.wait_log("via=rfc4733", count=2)


def test_call_to_an_unknown_user_is_not_answered(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server()
    proc = mediaserver("call", server.uri("nobody"), "--timeout", "10")
    assert proc.returncode == 1
    assert "call rejected: 404" in proc.stdout


def test_call_rejects_a_bad_uri() -> None:
    proc = mediaserver("call", "http://example.com")
    assert proc.returncode == 2 and "not a sip: URI" in proc.stderr


def test_call_with_a_missing_wav_is_one_line(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = start_server()
    missing = tmp_path / "nope.wav"
    proc = mediaserver("call", server.uri("hold"), "--play", str(missing), "--timeout", "10")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"call error: cannot play {missing}: " + (
        f"[Errno 2] No such file or directory: '{missing}'"
    )


def test_demo_runs_the_support_agent_and_prints_the_turns() -> None:
    proc = mediaserver("demo", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    # Whisper's reading of espeak over G.711 varies ("could you check on" ->
    # "hope you can come"); the order number and the answer must not. The
    # caller's two sentences may be one turn or two (joined for the model).
    said = [line.split("caller: ", 1)[1] for line in out.splitlines() if "caller: " in line]
    assert any("42" in line for line in said), out
    assert "agent:  Order 42: shipped, ETA April 2nd" in out
    assert "voice_to_voice" in out
