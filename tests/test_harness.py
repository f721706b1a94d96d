"""Checks of the live-test harness itself (tests/peers.py) and of the sipp scenarios."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import RunSipp
from tests.peers import (
    RTP_PORTS,
    SIPP_SCENARIOS,
    _netstrings,
    build_options,
    deep_merge,
    free_port,
    free_port_block,
    free_rtp_range,
    parse_sip,
    parse_sipp_trace,
    rtp_stream_wav,
    server_config,
    sip_request,
    write_rtp_pcap,
)

SCENARIOS = sorted(p.name for p in SIPP_SCENARIOS.glob("*.xml"))
# A scenario whose first step is a <recv> plays a server (a provider): it waits for calls.
UAS_SCENARIOS = [
    s for s in SCENARIOS if re.search(r"<scenario[^>]*>\s*<recv", (SIPP_SCENARIOS / s).read_text())
]
UAC_SCENARIOS = [s for s in SCENARIOS if s not in UAS_SCENARIOS]


def test_deep_merge_merges_mappings_and_replaces_lists() -> None:
    base: dict[str, Any] = {
        "sip": {"t1": 0.5, "t2": 4.0, "listen": [1, 2]},
        "logging": {"level": "info"},
    }
    merged = deep_merge(base, {"sip": {"t1": 0.05, "listen": [3]}, "routes": {"x": {}}})
    assert merged == {
        "sip": {"t1": 0.05, "t2": 4.0, "listen": [3]},
        "logging": {"level": "info"},
        "routes": {"x": {}},
    }
    assert base["sip"]["t1"] == 0.5  # inputs untouched


def test_server_config_uses_one_free_port_and_an_even_rtp_block() -> None:
    config = server_config(sip={"t1": 0.05})
    listen = config["sip"]["listen"]
    assert {item["transport"] for item in listen} == {"udp", "tcp"}
    assert len({item["port"] for item in listen}) == 1
    assert config["sip"]["t1"] == 0.05
    assert config["sip"]["t2"] == 4.0
    low, high = config["media"]["port_min"], config["media"]["port_max"]
    assert low % 2 == 0
    assert RTP_PORTS[0] <= low < high <= RTP_PORTS[1]
    assert config["routes"]["hold"] == {"app": "hold", "duration": 30, "ring": 0}


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    for port in list(ports)[:3]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", port))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind(("127.0.0.1", port))
    base = free_port_block(4, align=2)
    assert base % 2 == 0
    low, high = free_rtp_range(10)
    assert (low % 2, high - low) == (0, 9)


def test_parse_sip_handles_compact_names_and_folding() -> None:
    raw = (
        b"SIP/2.0 180 Ringing\r\n"
        b"v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc\r\n"
        b"Subject: first\r\n  second\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"l: 4\r\n\r\nbody"
    )
    message = parse_sip(raw)
    assert (message.status, message.reason, message.method) == (180, "Ringing", None)
    assert message.header("Via") == "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc"
    assert message.header("subject") == "first second"
    assert message.header("Content-Length") == "4"
    assert message.body == b"body"
    request = parse_sip(build_options("127.0.0.1", 5060, 5070))
    assert request.method == "OPTIONS"
    assert request.status is None
    assert "127.0.0.1:5070" in (request.header("Via") or "")


def test_parse_sipp_trace() -> None:
    invite = b"INVITE sip:hold@127.0.0.1:5060 SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n"
    ok = b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    log = (
        b"----------------------------------------------- 2026-01-02 03:04:05.000100\n"
        b"UDP message sent (%d bytes):\n\n%s\n\n"
        b"----------------------------------------------- 2026-01-02 03:04:05.250100\n"
        b"UDP message received [%d] bytes :\n\n%s\n\n"
    ) % (len(invite), invite, len(ok), ok)
    entries = parse_sipp_trace(log)
    assert [(e.direction, e.transport) for e in entries] == [("sent", "UDP"), ("received", "UDP")]
    assert entries[0].message.method == "INVITE"
    assert entries[1].message.status == 200
    assert entries[1].time - entries[0].time == pytest.approx(0.25)


def test_netstrings_split_across_reads() -> None:
    buffer = bytearray(b'11:{"event":1},3:abc,5:ab')
    assert list(_netstrings(buffer)) == [b'{"event":1}', b"abc"]
    buffer.extend(b"cde,")
    assert list(_netstrings(buffer)) == [b"abcde"]
    assert buffer == b""


@pytest.fixture
def udp_responder() -> Iterator[int]:
    """A UDP socket that answers each datagram with 100 Trying then 200 OK."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                _, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            sock.sendto(b"SIP/2.0 100 Trying\r\nContent-Length: 0\r\n\r\n", addr)
            sock.sendto(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(2)
    sock.close()


def test_sip_request_collects_replies(udp_responder: int) -> None:
    replies = sip_request("127.0.0.1", udp_responder, b"OPTIONS x SIP/2.0\r\n\r\n", 0.5)
    assert [parse_sip(r).status for r in replies] == [100, 200]
    seen: list[int] = []

    def make(local_port: int) -> bytes:
        seen.append(local_port)
        return build_options("127.0.0.1", udp_responder, local_port)

    replies = sip_request("127.0.0.1", udp_responder, make, 5.0, stop_on_final=True)
    assert [parse_sip(r).status for r in replies] == [100, 200]
    assert seen and seen[0] > 0


@pytest.mark.parametrize("scenario", UAS_SCENARIOS)
def test_sipp_server_scenario_loads(scenario: str, sipp: RunSipp, tmp_path: Path) -> None:
    """Each server scenario parses and waits: with no caller it can only time out."""
    # The voicemail plays greeting.pcap from sipp's folder.
    write_rtp_pcap(tmp_path / "greeting.pcap", np.zeros(1600, dtype=np.int16))
    result = sipp(["-sf", str(SIPP_SCENARIOS / scenario)], timeout=1)
    assert "timed out" in result.stderr, result.describe()
    assert not result.trace(), result.describe()  # nothing to answer, nothing sent


@pytest.mark.parametrize("scenario", UAC_SCENARIOS)
def test_sipp_scenario_loads(scenario: str, sipp: RunSipp, tmp_path: Path) -> None:
    """Each scenario parses and starts: against a silent port it can only time out."""
    # Scenarios that play the caller's audio read caller.pcap or soak_ulaw.wav from
    # sipp's folder.
    write_rtp_pcap(tmp_path / "caller.pcap", np.zeros(1600, dtype=np.int16))
    rtp_stream_wav(tmp_path)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        result = sipp(["-sf", str(SIPP_SCENARIOS / scenario), "-s", "hold", target], timeout=1)
    finally:
        silent.close()
    assert "timed out" in result.stderr, result.describe()
    assert result.trace(), result.describe()  # the first request went out
    assert result.trace()[0].direction == "sent"
