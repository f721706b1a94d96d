"""Trunks and the edge against sipp on loopback aliases: a carrier's address is let
in without digest and routed by the number it dials; any other address gets
nothing at all (not even 100 Trying), and /metrics counts it."""

from __future__ import annotations

import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

NUMBER = "+15551230000"


def trunk_server(start_server, **edge: object):  # type: ignore[no-untyped-def]
    return start_server(
        routes={"hold": {"duration": 1}},
        trunks={
            "carrier": {
                "allow": ["127.0.0.2/32"],
                "numbers": {NUMBER: "hold"},
                "country_code": "1",
            }
        },
        # Only trunks may call; loopback is not trusted here, so 127.0.0.3 is a stranger.
        sip={"auth": {"invites": "all"}, "edge": {"trusted": [], **edge}},
    )


def blocked(server) -> dict[str, float]:  # type: ignore[no-untyped-def]
    port = int(re.findall(r"admin_listening .*port=(\d+)", server.log_text())[0])
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0).text
    return {
        s.labels["reason"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "mediaserver_sip_blocked_total"
    }


def test_the_carrier_calls_by_number_and_a_stranger_gets_silence(start_server, sipp) -> None:  # type: ignore[no-untyped-def]
    server = trunk_server(start_server)
    # The carrier dials the national form of the number: routed to `hold`.
    ok = sipp(["-sn", "uac", "-s", "5551230000", "-i", "127.0.0.2", server.target], timeout=20)
    assert ok.ok, ok.describe()
    log = server.wait_log("call_incoming")
    assert "trunk=carrier" in log and f"called={NUMBER}" in log
    # Anyone else: no answer, not even 100 Trying; sipp gives up.
    stranger = sipp(["-sn", "uac", "-s", NUMBER, "-i", "127.0.0.3", server.target], timeout=4)
    assert not stranger.ok
    assert stranger.received() == []
    assert blocked(server).get("not_allowed", 0) >= 1
    assert "sip_blocked" in server.wait_log("sip_blocked")


def test_a_scanner_is_not_answered(start_server, sipp, sipp_scenario) -> None:  # type: ignore[no-untyped-def]
    server = trunk_server(start_server)
    result = sipp(
        [
            "-sf",
            str(sipp_scenario("options_scanner")),
            "-s",
            "100",
            "-i",
            "127.0.0.3",
            server.target,
        ],
        timeout=4,
    )
    assert not result.ok and result.received() == []
    assert blocked(server).get("scanner", 0) >= 1
