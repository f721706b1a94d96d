"""The ten error kinds on live calls: a fault is injected, the recovery happens,
and the call record (the server's SQLite file) holds it.

baresip calls a weather agent over SIP/RTP and asks "what is the weather in
paris" after the greeting; the server runs with one `faults` rule. What baresip
recorded must contain the recovery the caller should hear (a phrase, or the
fallback model's answer), checked by correlation with espeak-ng's audio of it.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.peers import (
    WEATHER_ANSWER,
    WEATHER_GREETING,
    WEATHER_QUESTION,
    BaresipResult,
    ServerProcess,
    agent_speech,
    best_alignment,
    caller_wav,
    deep_merge,
    read_wav_mono,
    weather_route,
)

#: Small decoder pool, quick end of turn, no fillers (the audio stays predictable).
PIPELINE: dict[str, Any] = {
    "stt": {"backend": "pocketsphinx", "pool_size": 1},
    "turn": {"end_of_speech_timeout": 0.5},
    "fillers": {"enabled": False},
}


def _call(
    start_server: Any,
    baresip: Any,
    tmp_path: Path,
    rules: list[dict[str, Any]],
    *,
    route: dict[str, Any] | None = None,
    tail: float = 10,
    **overrides: Any,
) -> tuple[BaresipResult, list[dict[str, Any]]]:
    """One baresip call to the weather agent with `rules` injected; returns
    baresip's result and the call's record events (from SQLite)."""
    config = deep_merge(
        {"pipeline": PIPELINE, "faults": {"enabled": True, "rules": rules}}, overrides
    )
    server = start_server(routes={"weather": route or weather_route()}, **config)
    source = caller_wav(WEATHER_QUESTION, tmp_path, lead=4, tail=tail)
    result = baresip(server.uri("weather"), seconds=4 + 2 + tail, source_wav=source)
    assert result.established, result.describe()
    server.wait_log("record_written", timeout=15)
    return result, _events(server)


def _events(server: ServerProcess) -> list[dict[str, Any]]:
    """The events of the server's only call, read back from its records database,
    as {"event": kind, **data}."""
    with sqlite3.connect(server.workdir / "records" / "calls.db") as db:
        (call,) = db.execute("SELECT id FROM calls").fetchall()
        rows = db.execute(
            "SELECT kind, data FROM events WHERE call = ? ORDER BY seq", call
        ).fetchall()
    return [{"event": kind, **json.loads(data)} for kind, data in rows]


def _errors(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "error" and e["kind"] == kind]


def _heard(result: BaresipResult, tmp_path: Path, *texts: str) -> list[float]:
    """Correlation of each text (said in this order after the greeting) with what
    baresip heard."""
    assert result.heard_wav is not None, result.describe()
    heard, _ = read_wav_mono(result.heard_wav)
    references = agent_speech(tmp_path, WEATHER_GREETING, *texts)[1:]
    return [best_alignment(ref, heard)[1] for ref in references]


def _final(events: list[dict[str, Any]]) -> dict[str, Any]:
    (final,) = [e for e in events if e["event"] == "final"]
    return final


def test_stt_failure_asks_the_caller_to_repeat(start_server, baresip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result, events = _call(
        start_server, baresip, tmp_path, [{"stage": "stt", "mode": "fail", "times": 1}]
    )
    (error,) = _errors(events, "stt_failure")
    assert error["stage"] == "stt" and "repeat" in error["recovery"]
    (said,) = _heard(result, tmp_path, "Sorry, I did not catch that. Could you say it again?")
    assert said >= 0.8, said


@pytest.mark.parametrize("mode", ["hang", "fail"], ids=["llm_timeout", "llm_error"])
def test_llm_failure_retries_then_the_fallback_model_answers(  # type: ignore[no-untyped-def]
    start_server, baresip, tmp_path: Path, mode: str
) -> None:
    llm = {
        "model": "primary",
        "first_token_timeout": 1.0,
        "retries": 1,
        "retry_backoff": 0.1,
        "fallbacks": [{"backend": "scripted", "model": "backup"}],
    }
    rule = {"stage": "llm", "mode": mode, "match": "primary", "status": 503}
    result, events = _call(
        start_server, baresip, tmp_path, [rule], pipeline={**PIPELINE, "llm": llm}
    )
    kind = "llm_timeout" if mode == "hang" else "llm_error"
    errors = _errors(events, kind)
    assert [e["recovery"] for e in errors] == ["retry 1 of 1 in 0.1 s", "fallback to backup"]
    (answer,) = _heard(result, tmp_path, WEATHER_ANSWER)
    assert answer >= 0.8, answer  # the fallback model answered


def test_tts_failure_speaks_with_the_fallback_voice(start_server, baresip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rule = {"stage": "tts", "mode": "fail", "match": "en-us", "after": 1}  # greeting passes
    pipeline = {**PIPELINE, "tts": {"fallback_voice": "en-gb"}}
    result, events = _call(start_server, baresip, tmp_path, [rule], pipeline=pipeline)
    errors = _errors(events, "tts_failure")
    assert errors and errors[0]["recovery"] == "fallback voice en-gb", errors
    said = [e for e in events if e["event"] == "agent_said"]
    assert said[-1]["text"] == WEATHER_ANSWER
    assert result.heard_wav is not None
    heard, _ = read_wav_mono(result.heard_wav)
    (tmp_path / "gb").mkdir()
    gb = agent_speech(
        tmp_path / "gb", WEATHER_ANSWER, "It is raining in london today.", voice="en-gb"
    )
    (us_answer,) = agent_speech(tmp_path, WEATHER_ANSWER)
    answer, wrong, us = (best_alignment(x, heard)[1] for x in (*gb, us_answer))
    # The answer was heard, in the fallback voice (not in the failing one).
    assert answer >= 0.45 and answer > wrong + 0.2 and answer > us + 0.15, (answer, wrong, us)


def test_tool_timeout_tells_the_caller_then_skips(start_server, baresip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rule = {"stage": "tool", "mode": "hang", "match": "get_weather"}
    result, events = _call(
        start_server, baresip, tmp_path, [rule], pipeline={**PIPELINE, "tool_timeout": 1.5}
    )
    (error,) = _errors(events, "tool_timeout")
    assert error["recovery"] == "caller told, skipped"
    (told,) = _heard(result, tmp_path, "This is taking longer than expected.")
    assert told >= 0.8, told
    tools = [e for e in events if e["event"] == "tool"]
    assert tools and tools[0]["error"] == "tool_timeout"


def test_tool_error_says_an_error_phrase(start_server, baresip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rule = {"stage": "tool", "mode": "fail", "match": "get_weather"}
    result, events = _call(start_server, baresip, tmp_path, [rule])
    (error,) = _errors(events, "tool_error")
    assert "injected fault" in error["error"]
    (said,) = _heard(result, tmp_path, "Sorry, I could not do that just now.")
    assert said >= 0.8, said


def test_transfer_failure_tells_the_caller_and_goes_on(
    start_server, baresip, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    route = weather_route()
    route["agent"]["tools"] = [
        {
            "name": "get_weather",
            "description": "Put the caller through to the weather desk.",
            "function": "tests.call.recovery_tools:weather_desk",
        }
    ]
    rule = {"stage": "transfer", "status": 503}
    result, events = _call(start_server, baresip, tmp_path, [rule], route=route)
    (error,) = _errors(events, "transfer_failure")
    assert "503" in error["error"]
    assert _final(events)["by"] == "remote"  # the conversation went on until the caller left
    _, told = _heard(
        result, tmp_path, "Putting you through.", "Sorry, I could not transfer your call."
    )
    assert told >= 0.8, told


def test_media_failure_is_concealed_and_the_call_goes_on(
    start_server, baresip, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    rule = {"stage": "media", "count": 25}  # the first half second does not decode
    result, events = _call(start_server, baresip, tmp_path, [rule])
    (error,) = _errors(events, "media_failure")
    assert error["stage"] == "media" and error["recovery"] == "concealed, call goes on"
    (answer,) = _heard(result, tmp_path, WEATHER_ANSWER)
    assert answer >= 0.8, answer


def test_network_partition_hangs_up_gracefully_with_state(
    start_server, baresip, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    rule = {"stage": "rtp"}  # nothing from the caller arrives
    result, events = _call(start_server, baresip, tmp_path, [rule], media={"inactivity_timeout": 2})
    (error,) = _errors(events, "network_partition")
    assert error["stage"] == "rtp" and "state captured" in error["recovery"]
    final = _final(events)
    assert final["by"] == "local" and final["reason"] == "rtp timeout"
    assert final["state"] and "global_data" in final and final["media"]["rtp_in"] == 0
    assert "CALL_CLOSED" in result.event_types()  # our BYE reached the caller


def test_auth_failure_runs_the_configured_flow(start_server, baresip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    message = "Sorry, this line is closed. Goodbye."
    rule = {"stage": "llm", "mode": "fail", "status": 401}
    pipeline = {**PIPELINE, "recovery": {"auth_failure": {"action": "message", "message": message}}}
    result, events = _call(start_server, baresip, tmp_path, [rule], pipeline=pipeline)
    (error,) = _errors(events, "auth_failure")
    assert error["recovery"] == "message, then hangup"
    assert _final(events)["by"] == "local"
    assert "CALL_CLOSED" in result.event_types()
    (said,) = _heard(result, tmp_path, message)
    assert said >= 0.8, said


def test_sip_digest_failure_of_a_registered_user_runs_the_configured_flow(  # type: ignore[no-untyped-def]
    start_server, baresip, tmp_path: Path
) -> None:
    """alice is a provisioned user; her phone (baresip) has the wrong password.
    Its REGISTER is refused (403), and its INVITE, challenged with 401, comes back
    with a digest that fails: the call is answered by the auth-failure flow
    (the message, then our BYE), not by the agent, and the record holds it."""
    message = "We could not verify your account. Goodbye."
    server = start_server(
        routes={"weather": weather_route()},
        pipeline={
            **PIPELINE,
            "recovery": {"auth_failure": {"action": "message", "message": message}},
        },
        sip={"auth": {"users": {"alice": {"password": "right-password"}}}},
    )
    account = f"<sip:alice@{server.target}>;auth_pass=wrong-password;regint=600"
    source = caller_wav(WEATHER_QUESTION, tmp_path, lead=1, tail=12)
    result = baresip(server.uri("weather"), seconds=15, source_wav=source, account=account)
    assert result.established, result.describe()
    # (It registers at start-up, before the harness's ctrl_tcp link: read its console.)
    assert f"reg: sip:alice@{server.target}: 403 Forbidden" in result.output, result.describe()
    assert "CALL_CLOSED" in result.event_types()  # we hung up, well before its WAV ended
    log = server.wait_log("call_ended", timeout=15)
    assert "sip_auth_rejected" in log and "reason='wrong digest response'" in log
    assert "method=REGISTER" in log and "user=alice" in log
    # Both count in /metrics: the refused REGISTER and the call's failed digest.
    admin = int(re.findall(r"admin_listening .*port=(\d+)", log)[0])
    metrics = httpx.get(f"http://127.0.0.1:{admin}/metrics").text
    assert 'mediaserver_errors_total{kind="auth_failure",stage="sip"} 2.0' in metrics
    events = _events(server)
    (error,) = _errors(events, "auth_failure")
    assert error["stage"] == "sip" and error["recovery"] == "message, then hangup"
    assert error["error"] == "SIP digest failed for alice: wrong digest response"
    assert _final(events)["by"] == "local"
    # Only the message was said: no greeting, and the caller's question never
    # became a turn for the model.
    assert [e["text"] for e in events if e["event"] == "agent_said"] == [message]
    assert not [e for e in events if e["event"] in ("caller_final", "illegal_transition")]
    assert result.heard_wav is not None
    heard, _ = read_wav_mono(result.heard_wav)
    said, greeting = agent_speech(tmp_path, message, WEATHER_GREETING)
    assert best_alignment(said, heard)[1] >= 0.8
    assert best_alignment(greeting, heard)[1] < 0.5


def test_network_partition_on_sip_ends_the_call_with_state(start_server, sipp) -> None:  # type: ignore[no-untyped-def]
    """Our BYE never reaches the caller (injected): timer F fires, and the call is
    over with the partition recorded and the state captured."""
    server = start_server(
        routes={"hold": {"app": "hold", "duration": 1}},
        sip={"t1": 0.05},  # timer F = 64 * T1 = 3.2 s
        faults={"enabled": True, "rules": [{"stage": "sip", "match": "BYE"}]},
    )
    # sipp stays 8 s and then sends its own BYE, which finds the call gone (481).
    sipp(["-sn", "uac", "-s", "hold", "-d", "8000", server.target], timeout=20)
    server.wait_log("call_ended", timeout=15)
    events = _events(server)
    (error,) = _errors(events, "network_partition")
    assert error["stage"] == "sip" and "timer F on BYE" in error["error"], error
    final = _final(events)
    assert final["by"] == "timeout" and final["media"]["rtp_in"] >= 0
