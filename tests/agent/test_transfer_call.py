"""Actions on a live SIP call (tests/agent/transfer_agent.py answered by baresip or sipp).

Transfer: the tool returns connect(URI), the server sends REFER, baresip calls the
weather desk (a second mediaserver), and the NOTIFY with 200 ends the agent's leg.
When the caller (sipp) refuses the REFER, the server bridges it to the desk itself.
Hangup: the tool returns hangup(), the reply is said, then the server sends BYE.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.peers import (
    REPO_ROOT,
    best_alignment,
    caller_wav,
    read_wav_mono,
    speech_wav,
    write_rtp_pcap,
)

AGENT = REPO_ROOT / "tests" / "agent" / "transfer_agent.py"
QUESTION = "what is the weather in paris"


def test_connect_sends_refer_and_the_caller_reaches_the_desk(  # type: ignore[no-untyped-def]
    start_server, agent_program, baresip, tmp_path: Path
) -> None:
    desk = start_server(routes={"desk": {"app": "hold", "duration": 3}})
    front = agent_program(AGENT, WEATHER_DESK_URI=desk.uri("desk"))
    source = caller_wav(QUESTION, tmp_path, tail=10)
    result = baresip(front.uri("desk"), seconds=25, source_wav=source)
    log = front.log_text()
    assert "Transferring you to the weather desk." in log, front.log_tail()
    front.wait_log("transfer_outcome", timeout=10)
    assert "ok=True" in front.log_text().split("transfer_outcome", 1)[1].splitlines()[0]
    # The caller's new call reached the desk.
    desk.wait_log("call_incoming", timeout=10)
    assert "user=desk" in desk.log_text()
    assert result.established, result.describe()


def test_a_transfer_outside_transfer_allow_is_refused_and_the_agent_says_so(  # type: ignore[no-untyped-def]
    start_server, agent_program, baresip, tmp_path: Path
) -> None:
    """Whatever the model asks for, the call goes only where `sip.transfer_allow`
    lets it: the desk is not on the list, so nothing is dialed or REFERred."""
    desk = start_server(routes={"desk": {"app": "hold", "duration": 3}})
    front = agent_program(
        AGENT,
        config={"sip": {"transfer_allow": ["*@pbx.example.com", "+1555*"]}},
        WEATHER_DESK_URI=desk.uri("desk"),
    )
    source = caller_wav(QUESTION, tmp_path, tail=10)
    result = baresip(front.uri("desk"), seconds=20, source_wav=source)
    assert result.established, result.describe()
    front.wait_log("Sorry, I could not transfer your call.", timeout=10)
    log = front.log_text()
    assert "transfer_refused" in log and "REFER" not in log.split("transfer_refused", 1)[1]
    assert "call_incoming" not in desk.log_text()


def test_hangup_action_ends_the_call_with_bye(  # type: ignore[no-untyped-def]
    agent_program, baresip, tmp_path: Path
) -> None:
    front = agent_program(AGENT, ACTION="hangup")
    source = caller_wav(QUESTION, tmp_path, tail=10)
    result = baresip(front.uri("desk"), seconds=25, source_wav=source)
    assert result.established, result.describe()
    ended = front.wait_log("call_ended", timeout=10)
    line = next(x for x in ended.splitlines() if "call_ended" in x)
    assert "by=local" in line, line  # our BYE, not the caller's
    assert "text='It is sunny. Goodbye.'" in front.log_text()
    assert "CALL_CLOSED" in result.event_types()


def _refusing_caller(tmp_path: Path, for_desk: np.ndarray | None) -> Path:
    """caller.pcap for uac_refuse_refer.xml: the weather question, then (once the
    call is bridged) `for_desk`, if given."""
    question, _ = read_wav_mono(speech_wav(QUESTION, tmp_path / "speech"))
    silence = np.zeros(8000 * 6, dtype=np.int16)
    parts = [silence[: 8000 * 4], question, silence]
    if for_desk is not None:
        parts += [for_desk, silence]
    return write_rtp_pcap(tmp_path / "caller.pcap", np.concatenate(parts))


@pytest.mark.parametrize("desk_user", ["desk", "nobody"], ids=["bridged", "target-404"])
def test_refused_refer_is_bridged_as_a_b2bua(  # type: ignore[no-untyped-def]
    start_server, agent_program, sipp, sipp_scenario, tmp_path: Path, desk_user: str
) -> None:
    """sipp asks for the weather desk and answers the agent's REFER 603 Decline: the
    server dials the desk (an `echo` app on another server) and bridges the media.
    What the caller says once bridged comes back from the desk, so the front's
    recording (right channel: what the caller heard) holds it: both directions.
    A desk that does not exist (404) is a transfer failure: the agent says so."""
    desk = start_server(routes={"desk": {"app": "echo", "duration": 0}})
    front = agent_program(
        AGENT,
        config={"media": {"record_calls": True, "recordings_dir": str(tmp_path / "rec")}},
        WEATHER_DESK_URI=desk.uri(desk_user),
    )
    for_desk, _ = read_wav_mono(speech_wav("hello desk, this is the caller", tmp_path / "speech"))
    # Nothing for a desk that is not there: the agent would take it for a new question.
    _refusing_caller(tmp_path, for_desk if desk_user == "desk" else None)
    scenario = str(sipp_scenario("uac_refuse_refer"))
    result = sipp(["-sf", scenario, "-s", "desk", front.target], timeout=60)
    assert result.ok, result.describe()
    ended = front.wait_log("bridge_ended", timeout=10)
    log = front.log_text()
    assert "transfer_bridging" in log and "refer_status=603" in log, front.log_tail()
    if desk_user == "nobody":
        line = next(x for x in ended.splitlines() if "bridge_ended" in x)
        assert "connected=False" in line and "status=404" in line, line
        front.wait_log("Sorry, I could not transfer your call.", timeout=10)
        return
    assert "bridge_connected" in log, front.log_tail()
    desk.wait_log("call_ended", timeout=10)
    assert "user=desk" in desk.log_text()
    # Caller -> front -> desk (echo) -> front -> caller.
    (recording,) = (tmp_path / "rec").glob("*.wav")
    heard, _ = read_wav_mono(recording, channel=1)  # what the caller heard
    lag, corr = best_alignment(for_desk, heard)
    assert corr >= 0.95, (lag / 8000, corr)
    assert lag / 8000 > 10.0  # after the bridge, not the agent's own words


def test_transfer_to_a_registered_phone_is_bridged_to_its_binding(  # type: ignore[no-untyped-def]
    agent_program, baresip, tmp_path: Path
) -> None:
    """An operator's softphone (baresip, auto-answer) registers with the front
    server; the agent transfers the caller to sip:operator@<front>. Only the front
    knows where that phone is, so it dials the registered contact itself and
    bridges the two calls: the caller (another baresip) hears the operator."""
    front = agent_program(
        AGENT,
        config={"sip": {"auth": {"users": {"operator": {"password": "op-pw"}}}}},
        WEATHER_DESK_URI="sip:operator@127.0.0.1",
    )
    operator_says = "hello, this is the operator speaking"
    operator_wav = caller_wav(operator_says, tmp_path / "op", lead=0.5, tail=20)
    account = f"<sip:operator@{front.target}>;auth_pass=op-pw;regint=600"
    with ThreadPoolExecutor(1) as pool:
        operator = pool.submit(
            baresip, None, seconds=30, source_wav=operator_wav, account=account, answermode="auto"
        )
        front.wait_log("sip_registered", timeout=15)
        # The admin HTTP lists the binding: where the phone is and where it registered from.
        admin = int(re.findall(r"admin_listening .*port=(\d+)", front.log_text())[0])
        (binding,) = httpx.get(f"http://127.0.0.1:{admin}/registrations").json()["operator"]
        assert binding["contact"].startswith("sip:operator")  # baresip adds a suffix
        assert 590 <= binding["expires_in"] <= 600 and binding["source"].startswith("udp:")
        source = caller_wav(QUESTION, tmp_path, tail=14)
        caller = baresip(front.uri("desk"), seconds=22, source_wav=source)
        callee = operator.result(timeout=40)
    assert caller.established, caller.describe()
    assert callee.established, callee.describe()
    log = front.log_text()
    assert "why='registered user'" in log, front.log_tail()
    assert "bridge_connected" in log, front.log_tail()
    # What the operator's phone sent reached the caller through the bridge.
    assert caller.heard_wav is not None
    heard, _ = read_wav_mono(caller.heard_wav)
    said, _ = read_wav_mono(speech_wav(operator_says, tmp_path / "ref"))
    _, corr = best_alignment(said, heard)
    assert corr >= 0.8, corr


@pytest.mark.parametrize("desk_user", ["desk", "nobody"], ids=["briefed", "target-404"])
def test_a_warm_transfer_briefs_the_desk_then_joins_the_caller(  # type: ignore[no-untyped-def]
    start_server, agent_program, baresip, tmp_path: Path, desk_user: str
) -> None:
    """The caller holds while the front dials the desk (a `record` app on another
    server: it keeps what it hears); the desk hears the summary first, then the
    two are joined. A desk that does not exist: the agent is back and says so."""
    recorded = tmp_path / "desk"
    desk = start_server(
        routes={"desk": {"app": "record", "duration": 8, "directory": str(recorded)}}
    )
    front = agent_program(AGENT, ACTION="warm", WEATHER_DESK_URI=desk.uri(desk_user))
    source = caller_wav(QUESTION, tmp_path, tail=16)
    result = baresip(front.uri("desk"), seconds=26, source_wav=source)
    assert result.established, result.describe()
    log = front.wait_log("bridge_connected" if desk_user == "desk" else "bridge_ended", timeout=30)
    assert "Let me get a colleague for you." in log, front.log_tail()
    assert "why='warm transfer'" in log
    if desk_user == "nobody":
        front.wait_log("Sorry, I could not transfer your call.", timeout=10)
        assert "bridge_connected" not in front.log_text()
        return
    # The briefing went out before the join, and it was the caller's own words.
    assert log.index("bridge_briefed") < log.index("bridge_connected"), front.log_tail()
    desk.wait_log("recorded", timeout=20)
    (wav,) = recorded.glob("*.wav")
    heard, _ = read_wav_mono(wav)
    briefing = heard[: 8000 * 3].astype(np.float64)
    assert np.sqrt(np.mean(briefing**2)) > 300, "the desk heard no briefing"


def test_record_call_action_records_from_then_on(  # type: ignore[no-untyped-def]
    agent_program, baresip, tmp_path: Path
) -> None:
    """A tool's record_call starts a stereo recording mid-call; it is complete
    (renamed from .part) when the call ends, and the record has its path."""
    recordings = tmp_path / "rec"
    front = agent_program(
        AGENT, config={"media": {"recordings_dir": str(recordings)}}, ACTION="record"
    )
    source = caller_wav(QUESTION, tmp_path, tail=8)
    result = baresip(front.uri("desk"), seconds=20, source_wav=source)
    assert result.established, result.describe()
    front.wait_log("record_written", timeout=15)
    (wav,) = recordings.glob("*")
    assert wav.name.endswith("-q1.wav"), wav
    heard, _ = read_wav_mono(wav, channel=1)
    assert len(heard) > 8000 and np.abs(heard).max() > 1000  # the agent's reply is in it
    port = int(re.findall(r"admin_listening .*port=(\d+)", front.log_text())[0])
    (call,) = httpx.get(f"http://127.0.0.1:{port}/calls", timeout=5).json()["recent"]
    record = httpx.get(f"http://127.0.0.1:{port}/calls/{call['id']}", timeout=5).json()
    (started,) = [e["data"] for e in record["events"] if e["kind"] == "recording"]
    assert started["event"] == "started" and started["path"] == str(wav)
    assert record["final_state"]["media"]["recordings"] == [str(wav)]
