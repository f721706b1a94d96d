"""Recording consent on live calls (baresip callers): the announcement as the
agent's first words, then a key or a spoken yes; the call is recorded only once
consent is given, and the record says how it went and where the file is."""

from __future__ import annotations

import re
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.peers import caller_wav, weather_route, write_wav

pytestmark = pytest.mark.timeout(120)

ANNOUNCE = "This call may be recorded. Press one or say yes to agree."


def detail(server) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    port = int(re.findall(r"admin_listening .*port=(\d+)", server.log_text())[0])
    base = f"http://127.0.0.1:{port}"
    (call,) = httpx.get(f"{base}/calls", timeout=5).json()["recent"]
    return httpx.get(f"{base}/calls/{call['id']}", timeout=5).json()


@pytest.mark.parametrize(
    ("how", "given"),
    [("key 1", True), ("key 2", False), ("says yes", True)],
)
def test_consent_by_key_or_voice(  # type: ignore[no-untyped-def]
    start_server, baresip, tmp_path: Path, how: str, given: bool
) -> None:
    recordings = tmp_path / "rec"
    route = weather_route()
    route["consent"] = {"say": ANNOUNCE, "require": "any", "timeout": 10}
    server = start_server(routes={"support": route}, media={"recordings_dir": str(recordings)})
    if how == "says yes":
        source = caller_wav("yes", tmp_path, lead=5.0, tail=9)
        result = baresip(server.uri("support"), seconds=25, source_wav=source)
    else:
        quiet = write_wav(tmp_path / "quiet.wav", np.zeros(8000 * 14, dtype=np.int16))
        digit = how.split()[1]
        result = baresip(
            server.uri("support"), seconds=25, source_wav=quiet, dtmf=digit, dtmf_delay=5.0
        )
    assert result.established, result.describe()
    server.wait_log("record_written", timeout=15)
    record = detail(server)
    (consent,) = [e["data"] for e in record["events"] if e["kind"] == "consent"]
    assert consent["given"] is given, consent
    assert consent["how"].startswith("voice" if how == "says yes" else f"dtmf {how[-1]}")
    assert record["final_state"]["global_data"]["recording_consent"] is given
    files = sorted(recordings.glob("*.wav*"))
    if not given:
        assert files == [] and "recording" not in consent
        return
    (wav,) = files
    assert wav.suffix == ".wav" and consent["recording"] == str(wav)  # complete, renamed
    assert record["final_state"]["media"]["recordings"] == [str(wav)]
    with wave.open(str(wav)) as f:
        assert f.getnchannels() == 2 and f.getnframes() > 8000 * 3
    # The agent's greeting came after the consent, in the recording's right channel.
    assert "Hello, this is the weather line." in server.log_text()
