"""The server process: baresip calls, TLS, draining on SIGTERM, SIGINT, bad config."""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.peers import (
    LOCALHOST,
    REPO_ROOT,
    build_options,
    free_port,
    parse_sip,
    self_signed_cert,
    sip_options,
)


def test_baresip_call_established_and_ends_cleanly(start_server, baresip) -> None:  # type: ignore[no-untyped-def]
    server = start_server(routes={"hold": {"duration": 3}})
    result = baresip(server.uri("hold"), seconds=20, pad_seconds=10)
    assert result.established, result.describe()
    assert result.remote_hangup, result.describe()  # our BYE ended it
    log = server.wait_log("by=local")
    assert "call_confirmed" in log and "by=local" in log
    assert "Traceback" not in log


def test_baresip_hangs_up_first(start_server, baresip) -> None:  # type: ignore[no-untyped-def]
    server = start_server(routes={"hold": {"duration": 0}})
    result = baresip(server.uri("hold"), seconds=20)
    assert result.established, result.describe()
    assert "by=remote" in server.wait_log("call_ended")


def test_tls_listener_answers_options(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cert, key = self_signed_cert(tmp_path / "tls")
    udp, tls = free_port(), free_port()
    server = start_server(
        sip={
            "listen": [
                {"transport": "udp", "host": LOCALHOST, "port": udp},
                {"transport": "tls", "host": LOCALHOST, "port": tls},
            ],
            "tls": {"cert": str(cert), "key": str(key)},
        }
    )
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    with socket.create_connection((LOCALHOST, tls), timeout=5) as raw, ctx.wrap_socket(raw) as conn:
        local = conn.getsockname()[1]
        request = build_options(LOCALHOST, tls, local).replace(b"SIP/2.0/UDP", b"SIP/2.0/TLS")
        # two messages in one write: stream framing must split them
        conn.sendall(request + request.replace(b"CSeq: 1", b"CSeq: 2"))
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b"SIP/2.0 200") < 2 and time.monotonic() < deadline:
            data += conn.recv(65535)
    assert data.count(b"SIP/2.0 200") == 2, data
    assert server.running


def test_sigterm_drains_then_byes_the_rest(start_server, sipp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.peers import SIPP_SCENARIOS

    server = start_server(routes={"hold": {"duration": 60}}, shutdown={"drain_timeout": 2})
    results = {}

    def call() -> None:
        results["sipp"] = sipp(
            ["-sf", str(SIPP_SCENARIOS / "uac_server_bye.xml"), "-s", "hold", server.target],
            timeout=30,
            name="drain",
        )

    caller = threading.Thread(target=call)
    caller.start()
    server.wait_log("call_confirmed", timeout=10)
    server.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # draining: OPTIONS and new INVITEs get 503 with Retry-After
    reply = sip_options(server.host, server.port)
    assert reply is not None and reply.status == 503 and reply.header("Retry-After")
    assert server.wait(15) == 0
    caller.join(30)
    assert results["sipp"].ok, results["sipp"].describe()  # it got our BYE and answered
    log = server.log_text()
    assert "draining" in log and "reason=shutdown" in log


def test_sigint_stops_cleanly(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server()
    server.interrupt()
    assert server.wait(10) == 0
    assert "stopped" in server.log_text()


def test_malformed_flood_does_not_disturb_a_call(start_server, sipp) -> None:  # type: ignore[no-untyped-def]
    server = start_server(routes={"hold": {"duration": 0}})
    junk = [
        b"",
        b"\x00" * 100,
        b"INVITE sip:x SIP/2.0\r\n\r\n",
        b"SIP/2.0 999 x\r\n\r\n",
        b"A" * 70000,
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for data in junk * 20:
            # the 70000-byte datagram is too big for UDP on some stacks
            with contextlib.suppress(OSError):
                sock.sendto(data, (server.host, server.port))
    result = sipp(["-sn", "uac", "-s", "hold", "-m", "5", "-r", "5", server.target], timeout=30)
    assert result.ok, result.describe()
    log = server.log_text()
    assert server.running and "Traceback" not in log
    # 100 rejected messages, but the log is rate limited (20 lines a second)
    assert 0 < log.count("sip_message_rejected") < 100


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("sip:\n  max_calls: 0\n", "sip.max_calls"),
        ("sip:\n  listen:\n    - {transport: sctp, port: 5060}\n", "sip.listen.0.transport"),
        ("media:\n  colour: blue\n", "media.colour"),
        ("sip: [1, 2\n", "not valid YAML"),
        ("sip:\n  listen:\n    - {transport: tls, port: 5061}\n", "tls.cert"),
        ("routes:\n  p: {app: playback, file: nowhere.wav}\n", "routes.p"),
        ("media:\n  codecs: [PCMU, AMR]\n", "media"),
        (
            "sip:\n  auth: {users: {al: {password: a, ha1: 0123456789abcdef0123456789abcdef}}}\n",
            "sip.auth.users.al: give exactly one of password and ha1",
        ),
        ("sip:\n  auth: {users: {bob: {ha1: xyz}}}\n", "sip.auth.users.bob.ha1"),
        ("sip:\n  auth: {invites: all}\n", "sip.auth.invites: all needs users or trunks"),
        ("sip:\n  auth: {algorithms: [SHA-1]}\n", "sip.auth.algorithms.0"),
        (
            "trunks:\n  c: {outbound: {proxy: 'sip:gw.example;transport=sctp'}}\n",
            "trunks.c.outbound: proxy: not a host or SIP URI",
        ),
        (
            "trunks:\n  c: {outbound: {proxy: gw.example, register: true}}\n",
            "trunks.c.outbound: register needs username and password",
        ),
        (
            "trunks:\n  c: {outbound: {proxy: 'gw.example;transport=tls'}}\n",
            "trunks.c.outbound.proxy: no tls listener in sip.listen",
        ),
        (
            "trunks:\n  c: {outbound: {proxy: no-such-host.invalid}}\n",
            "trunks.c.outbound.proxy: cannot resolve 'no-such-host.invalid'",
        ),
        (
            "pipeline:\n  turn: {end_of_speech_timeout: 0.1}\n",
            "pipeline.turn.end_of_speech_timeout",
        ),
        (
            "routes:\n  a: {app: agent, agent: {pipeline: {vad: {threshold: 2}}}}\n",
            "routes.a.agent.pipeline.vad.threshold",
        ),
        (
            "routes:\n  a: {app: agent, agent: {tools: [{name: t, function: 'no_such:f'}]}}\n",
            "routes.a.agent.tools.0.function",
        ),
        # A model that fails to load: one line naming the backend and the path.
        (
            "pipeline: {vad: {model: /nonexistent/vad.onnx}}\nroutes: {a: {app: agent}}\n",
            "silero: VAD model file not found: /nonexistent/vad.onnx",
        ),
        (
            "pipeline: {stt: {backend: pocketsphinx, model: /nonexistent/sphinx}}\n"
            "routes: {a: {app: agent}}\n",
            "pocketsphinx",
        ),
        (
            "pipeline: {stt: {model: /nonexistent/whisper}}\nroutes: {a: {app: agent}}\n",
            "faster-whisper: no model in /nonexistent/whisper",
        ),
    ],
)
def test_broken_config_is_one_line_naming_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    proc = subprocess.run(
        [sys.executable, "-m", "mediaserver", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], proc.stderr


def test_options_over_udp_lists_capabilities(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server()
    reply = sip_options(server.host, server.port)
    assert reply is not None and reply.status == 200
    assert "INVITE" in (reply.header("Allow") or "")
    assert reply.header("Accept") == "application/sdp"
    assert "timer" in (reply.header("Supported") or "")
    assert parse_sip(b"SIP/2.0 200 OK\r\n\r\n").status == 200
