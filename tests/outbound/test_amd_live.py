"""Answering-machine detection on live calls: a voicemail box (sipp playing a
greeting, its beep, then recording silence) gets the agent's message after the
beep and a hang-up; a person (baresip saying "hello?") gets the agent."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.outbound.test_dial_live import admin_url, outbound_steps, reminder_server
from tests.peers import (
    REPO_ROOT,
    free_port,
    read_wav_mono,
    run_sipp,
    speech_wav,
    write_rtp_pcap,
    write_wav,
)

pytestmark = pytest.mark.timeout(120)

VOICEMAIL_HOST = "127.0.0.4"
GREETING = (
    "Hi, you've reached Dana. I can't take your call right now. "
    "Please leave your name and number after the tone and I'll call you back."
)
MESSAGE = "This is the clinic. Your appointment is tomorrow at nine."


def beep(seconds: float = 0.6, freq: float = 1000.0) -> np.ndarray:
    t = np.arange(round(8000 * seconds)) / 8000
    return (7000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def record(server, call: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return httpx.get(f"{admin_url(server)}/calls/{call}", timeout=5).json()


def amd_event(detail: dict) -> dict:  # type: ignore[type-arg]
    (event,) = [e["data"] for e in detail["events"] if e["kind"] == "amd"]
    return event


def test_a_voicemail_gets_the_message_after_the_beep(  # type: ignore[no-untyped-def]
    start_server, tmp_path: Path
) -> None:
    recordings = tmp_path / "rec"
    server = reminder_server(
        start_server, media={"record_calls": True, "recordings_dir": str(recordings)}
    )
    folder = tmp_path / "voicemail"
    folder.mkdir()
    greeting, _ = read_wav_mono(speech_wav(GREETING, tmp_path / "speech", voice="en-us+f3"))
    silence = np.zeros(8000 * 12, dtype=np.int16)
    beep_at = 0.5 + len(greeting) / 8000 + 0.4
    pcm = np.concatenate(
        [np.zeros(4000, np.int16), greeting, np.zeros(3200, np.int16), beep(), silence]
    )
    write_rtp_pcap(folder / "greeting.pcap", pcm)
    port = free_port()
    args = [
        "-sf", str(REPO_ROOT / "tests" / "sipp" / "uas_voicemail.xml"),
        "-i", VOICEMAIL_HOST, "-p", str(port), "-mi", VOICEMAIL_HOST, "-m", "1",
    ]  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        sipp = pool.submit(run_sipp, args, 60, folder)
        time.sleep(0.5)
        answer = httpx.post(
            f"{admin_url(server)}/calls",
            json={
                "to": f"sip:vm@{VOICEMAIL_HOST}:{port}",
                "route": "remind",
                "amd": "detect_and_leave_message",
                "message": MESSAGE,
            },
            timeout=5,
        )
        assert answer.status_code == 201, answer.text
        call = answer.json()["id"]
        steps = outbound_steps(server, call)
        done = sipp.result(timeout=60)
    assert done.ok, done.describe()
    detail = record(server, call)
    amd = amd_event(detail)
    assert amd["verdict"] == "machine" and amd["message_left"] is True, amd
    assert amd["decision_s"] < beep_at  # the greeting's length gave it away before the beep
    assert steps[-1]["outcome"] == "machine" and steps[-1]["by"] == "local", steps
    assert "agent_said" not in server.log_text()  # the agent never talked to the machine
    # The message went out after the beep: right channel (what we sent) vs left (heard).
    (wav,) = recordings.glob("*.wav")
    heard, _ = read_wav_mono(wav, channel=0)
    sent, _ = read_wav_mono(wav, channel=1)
    loud = np.flatnonzero(np.abs(sent.astype(np.int32)) > 2000)
    assert len(loud), "no message was sent"
    beeping = np.flatnonzero(np.abs(heard.astype(np.int32)) > 5000)
    assert loud[0] > beeping[-1], (loud[0] / 8000, beeping[-1] / 8000)
    metrics = httpx.get(f"{admin_url(server)}/metrics", timeout=5).text
    assert 'mediaserver_amd_results_total{verdict="machine"} 1.0' in metrics
    assert 'mediaserver_outbound_calls_total{outcome="machine"} 1.0' in metrics


def test_a_person_who_says_hello_gets_the_agent(  # type: ignore[no-untyped-def]
    start_server, baresip, tmp_path: Path
) -> None:
    server = reminder_server(start_server, sip={"auth": {"users": {"bob": {"password": "pw"}}}})
    hello, _ = read_wav_mono(speech_wav("hello?", tmp_path / "speech"))
    said = np.concatenate([np.zeros(4000, np.int16), hello, np.zeros(8000 * 20, np.int16)])
    source = write_wav(tmp_path / "hello.wav", said)
    account = f"<sip:bob@{server.target}>;auth_pass=pw;regint=600"
    with ThreadPoolExecutor(1) as pool:
        phone = pool.submit(
            baresip, None, seconds=20, source_wav=source, account=account, answermode="auto"
        )
        server.wait_log("sip_registered", timeout=15)
        answer = httpx.post(
            f"{admin_url(server)}/calls",
            json={"to": "bob", "route": "remind", "amd": "detect"},
            timeout=5,
        )
        assert answer.status_code == 201, answer.text
        call = answer.json()["id"]
        server.wait_log("agent_said", timeout=20)
        httpx.delete(f"{admin_url(server)}/calls/{call}", timeout=5)
        result = phone.result(timeout=40)
    assert result.established, result.describe()
    amd = amd_event(record(server, call))
    assert amd["verdict"] == "human" and amd["decision_s"] < 4.0, amd
    assert outbound_steps(server, call)[-1]["outcome"] == "completed"
