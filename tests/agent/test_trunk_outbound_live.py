"""Calling out through a trunk, against sipp playing the provider (tests/sipp/
provider.xml on 127.0.0.4): the server registers with it (401, digest checked
by sipp's verifyauth), an agent's transfer to a number is dialled through it
(407, the digest checked here from the wire) and bridged; a provider that
refuses the registration marks the trunk down in /metrics and the log names
the trunk and the status; a failing trunk hands the call to the next."""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.peers import REPO_ROOT, caller_wav, free_port, run_sipp

AGENT = REPO_ROOT / "tests" / "agent" / "transfer_agent.py"
PROVIDER = REPO_ROOT / "tests" / "sipp" / "provider.xml"
PROVIDER_HOST = "127.0.0.4"
NUMBER = "+15557654321"


def trunk_config(port: int, password: str = "s3cret") -> dict[str, object]:
    return {
        "trunks": {
            "provider": {
                "outbound": {
                    "proxy": f"{PROVIDER_HOST}:{port}",
                    "domain": "provider.test",
                    "username": "acct",
                    "password": password,
                    "register": True,
                    "caller_id": "+15550001111",
                }
            }
        }
    }


def admin(server, path: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    port = int(re.findall(r"admin_listening .*port=(\d+)", server.log_text())[0])
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5.0)


def trunk_up(server) -> float:  # type: ignore[no-untyped-def]
    for family in text_string_to_metric_families(admin(server, "/metrics").text):
        for sample in family.samples:
            if sample.name == "mediaserver_trunk_up" and sample.labels["trunk"] == "provider":
                return sample.value
    raise AssertionError("no mediaserver_trunk_up for the trunk")


def test_registers_and_dials_a_number_through_the_provider(  # type: ignore[no-untyped-def]
    agent_program, baresip, tmp_path: Path
) -> None:
    port = free_port()
    provider_args = [
        "-sf", str(PROVIDER), "-i", PROVIDER_HOST, "-p", str(port),
        "-mi", PROVIDER_HOST, "-rtp_echo", "-m", "2",
    ]  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        provider = pool.submit(run_sipp, provider_args, 60, tmp_path / "provider")
        front = agent_program(AGENT, config=trunk_config(port), WEATHER_DESK_URI=NUMBER)
        front.wait_log("trunk_registered", timeout=15)
        assert trunk_up(front) == 1
        state = admin(front, "/trunks").json()["provider"]["outbound"]
        assert state["registration"]["state"] == "registered"
        assert state["registration"]["expires_in"] > 3000  # the provider granted 3600 s
        source = caller_wav("what is the weather in paris", tmp_path, tail=12)
        result = baresip(front.uri("desk"), seconds=25, source_wav=source)
        assert result.established, result.describe()
        log = front.wait_log("bridge_ended", timeout=15)
        done = provider.result(timeout=60)
    assert done.ok, done.describe()
    assert "number through a trunk" in log and "bridge_connected" in log, front.log_tail()
    # The provider saw our caller ID and the number in E.164, and the digest
    # answering its 407 is right (computed here from what went on the wire).
    messages = done.messages_path.read_text() if done.messages_path else ""
    assert f"INVITE sip:{NUMBER}@provider.test" in messages and "P-Asserted-Identity" in messages
    (header,) = re.findall(r"Proxy-Authorization: (Digest .*)", messages)
    assert proxy_digest_is_right(header, "INVITE", "acct", "s3cret"), header


def proxy_digest_is_right(header: str, method: str, user: str, password: str) -> bool:
    """RFC 2617 with qop=auth, computed independently of mediaserver's code."""
    p = dict(re.findall(r'(\w+)="?([^",]*)"?', header.removeprefix("Digest ")))

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1, ha2 = md5(f"{user}:{p['realm']}:{password}"), md5(f"{method}:{p['uri']}")
    expected = md5(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:{p['qop']}:{ha2}")
    return p["username"] == user and p["response"] == expected


def test_a_refused_registration_marks_the_trunk_down(  # type: ignore[no-untyped-def]
    start_server, tmp_path: Path
) -> None:
    port = free_port()
    provider_args = ["-sf", str(PROVIDER), "-i", PROVIDER_HOST, "-p", str(port), "-m", "1"]
    with ThreadPoolExecutor(1) as pool:
        provider = pool.submit(run_sipp, provider_args, 30, tmp_path / "provider")
        server = start_server(routes={"hold": {}}, **trunk_config(port, password="wrong"))
        line = server.wait_log("trunk_registration_failed", timeout=15)
        provider.result(timeout=30)
    assert "trunk=provider" in line and "status=403" in line, line
    assert trunk_up(server) == 0
    registration = admin(server, "/trunks").json()["provider"]["outbound"]["registration"]
    assert registration["state"] == "failed" and registration["status"] == 403


def test_a_failing_trunk_hands_the_call_to_the_next_which_answers_reliably(  # type: ignore[no-untyped-def]
    agent_program, baresip, tmp_path: Path
) -> None:
    """Trunk a (127.0.0.4) answers 503; the call goes to trunk b (127.0.0.5),
    which sends its answer in a reliable 183: we PRACK it (RAck checked by sipp)
    and take the 200 without SDP."""
    ports = {"a": free_port(), "b": free_port()}
    hosts = {"a": "127.0.0.4", "b": "127.0.0.5"}
    scenarios = {
        "a": REPO_ROOT / "tests/sipp/provider_503.xml",
        "b": REPO_ROOT / "tests/sipp/provider_100rel.xml",
    }
    trunks = {
        name: {"outbound": {"proxy": f"{hosts[name]}:{ports[name]}", "domain": f"{name}.test"}}
        for name in ("a", "b")
    }
    with ThreadPoolExecutor(2) as pool:
        providers = {
            name: pool.submit(
                run_sipp,
                [
                    "-sf",
                    str(scenarios[name]),
                    "-i",
                    hosts[name],
                    "-p",
                    str(ports[name]),
                    "-mi",
                    hosts[name],
                    "-rtp_echo",
                ],
                60,
                tmp_path / f"provider_{name}",
            )
            for name in ("a", "b")
        }
        front = agent_program(AGENT, config={"trunks": trunks}, WEATHER_DESK_URI=NUMBER)
        source = caller_wav("what is the weather in paris", tmp_path, tail=12)
        result = baresip(front.uri("desk"), seconds=25, source_wav=source)
        assert result.established, result.describe()
        log = front.wait_log("bridge_ended", timeout=15)
        done = {name: future.result(timeout=60) for name, future in providers.items()}
    assert done["a"].ok and done["b"].ok, (done["a"].describe(), done["b"].describe())
    connected = next(line for line in log.splitlines() if "bridge_connected" in line)
    assert "trunk=b" in connected and "a:503" in connected, connected
