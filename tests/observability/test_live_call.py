"""A real call, then its analytics: /metrics scraped and parsed (latency histograms
filled by the call), /calls and /calls/{id} from the call record, and the calls
page rendering that finished call's waterfall in headless Chromium (screenshot
kept as ``calls_page_live.png``, see tests/observability/chromium.py)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.observability.chromium import (
    CHROMIUM_TIMEOUT,
    chromium_command,
    keep_artifact,
    parse_dom,
    run_chromium,
)
from tests.peers import caller_wav, require_binary, weather_route

PIPELINE = {
    "stt": {"backend": "pocketsphinx", "pool_size": 1},
    "turn": {"end_of_speech_timeout": 0.5},
}
TOKEN = "live-test-token"


def _samples(text: str) -> dict[str, float]:
    """Prometheus exposition -> {sample name with labels: value}."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def test_a_real_call_fills_metrics_records_and_the_calls_page(  # type: ignore[no-untyped-def]
    start_server, baresip, tmp_path: Path
) -> None:
    chromium = require_binary("chromium")
    server = start_server(
        routes={"weather": weather_route()}, pipeline=PIPELINE, admin={"token": TOKEN}
    )
    port = int(re.findall(r"admin_listening .*port=(\d+)", server.log_text())[0])
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    source = caller_wav("what is the weather in paris", tmp_path, lead=4, tail=8)
    result = baresip(server.uri("weather"), seconds=18, source_wav=source)
    assert result.established, result.describe()
    server.wait_log("call_ended", timeout=15)

    with httpx.Client(base_url=base, timeout=5.0) as http:
        assert http.get("/health").json() == {"status": "ok"}  # open without the token
        assert http.get("/metrics").status_code == 401
        metrics = http.get("/metrics", headers=auth)
        assert metrics.status_code == 200
        samples = _samples(metrics.text)
        calls = http.get("/calls", headers=auth).json()
        (call,) = calls["recent"]
        detail = http.get(f"/calls/{call['id']}", headers=auth).json()

    assert samples["mediaserver_calls_total"] == 1
    assert samples["mediaserver_active_calls"] == 0
    # The question's turn filled the latency histograms.
    parts = ("voice_to_voice", "endpointing", "stt_finalise", "llm_first_token", "first_frame")
    for part in parts:
        assert samples[f"mediaserver_turn_{part}_seconds_count"] >= 1, part
    v2v = samples["mediaserver_turn_voice_to_voice_seconds_sum"]
    assert 0.15 < v2v < 5.0, v2v  # the turn model is asked after 0.2 s of silence
    assert samples["mediaserver_rtp_packets_received_total"] > 100

    assert call["turns"] >= 1 and call["ended_by"] == "remote" and not calls["live"]
    turns = [e for e in detail["events"] if e["kind"] == "turn"]
    assert turns[0]["data"]["caller_text"] == "what is the weather in paris"
    assert turns[0]["data"]["assistant_heard"] == "It is sunny in paris today."
    assert turns[0]["data"]["latency_ms"]["voice_to_voice_ms"] > 0
    assert detail["final_state"]["media"]["rtp_in"] > 100

    # The page, as an operator opens it: the finished call's waterfall.
    url = f"{base}/?call={call['id']}&token={TOKEN}"
    shot = tmp_path / "calls_page_live.png"

    async def render() -> bytes:
        dom = await run_chromium(
            chromium_command(chromium, tmp_path / "profile-dom", "--dump-dom", url), tmp_path
        )
        await run_chromium(
            chromium_command(
                chromium,
                tmp_path / "profile-shot",
                f"--screenshot={shot}",
                "--window-size=1280,1400",
                url,
            ),
            tmp_path,
        )
        return dom

    dom = parse_dom(asyncio.run(asyncio.wait_for(render(), 3 * CHROMIUM_TIMEOUT)).decode())
    keep_artifact(shot, "calls_page_live.png")
    rows = dom.all(cls="waterfall-row")
    assert len(rows) == len(turns), dom.text()[:2000]
    bars = rows[0].all(cls="bar")
    assert any("bar-endpointing" in bar.classes for bar in bars)
    assert "what is the weather in paris" in dom.text()
    assert shot.is_file() and shot.stat().st_size > 10_000
