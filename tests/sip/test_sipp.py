"""The running server against sipp: load, CANCEL, 488, OPTIONS, missing ACK, BYE, re-INVITE."""

from __future__ import annotations

import itertools

import pytest

from tests.peers import SIPP_SCENARIOS


def test_uac_200_calls_at_50_cps(start_server, sipp) -> None:  # type: ignore[no-untyped-def]
    server = start_server(routes={"hold": {"duration": 0}})
    result = sipp(
        ["-sn", "uac", "-s", "hold", "-r", "50", "-m", "200", server.target],
        timeout=60,
        stats=True,
    )
    assert result.ok, result.describe()
    assert result.stat("SuccessfulCall(C)") == 200
    assert result.stat("FailedCall(C)") == 0
    log = server.wait_log("call_ended", count=200)
    assert log.count("call_ended") == 200
    assert "Traceback" not in log


def test_uac_over_tcp(start_server, sipp) -> None:  # type: ignore[no-untyped-def]
    server = start_server(routes={"hold": {"duration": 0}})
    result = sipp(
        ["-sn", "uac", "-s", "hold", "-t", "t1", "-r", "20", "-m", "20", server.target],
        timeout=60,
        stats=True,
    )
    assert result.ok, result.describe()
    assert result.stat("SuccessfulCall(C)") == 20


def test_cancel(start_server, sipp) -> None:  # type: ignore[no-untyped-def]
    server = start_server(routes={"hold": {"duration": 10, "ring": 5}})
    result = sipp(
        ["-sf", str(SIPP_SCENARIOS / "uac_cancel.xml"), "-s", "hold", server.target], timeout=20
    )
    assert result.ok, result.describe()
    assert "reason=cancelled" in server.wait_log("reason=cancelled")


def test_only_unknown_codec_gets_488(start_server, sipp) -> None:  # type: ignore[no-untyped-def]
    server = start_server()
    result = sipp(
        ["-sf", str(SIPP_SCENARIOS / "uac_488.xml"), "-s", "hold", server.target], timeout=20
    )
    assert result.ok, result.describe()


def test_options(start_server, sipp) -> None:  # type: ignore[no-untyped-def]
    server = start_server()
    result = sipp(
        ["-sf", str(SIPP_SCENARIOS / "options.xml"), "-s", "hold", server.target], timeout=20
    )
    assert result.ok, result.describe()


def test_200_never_acked_is_retransmitted_then_byed(start_server, sipp) -> None:  # type: ignore[no-untyped-def]
    t1 = 0.05
    server = start_server(sip={"t1": t1, "t2": 0.4}, routes={"hold": {"duration": 0}})
    result = sipp(
        ["-sf", str(SIPP_SCENARIOS / "uac_noack.xml"), "-s", "hold", server.target], timeout=30
    )
    assert result.ok, result.describe()
    oks = [e.time for e in result.received(status=200, method="INVITE")]
    byes = [e.time for e in result.received(method="BYE")]
    assert len(oks) >= 6 and byes
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(oks)]
    # timer G: T1, 2T1, 4T1, ... capped at T2 (0.4 s)
    expected = [t1, 2 * t1, 4 * t1, 0.4, 0.4]
    for got, want in zip(gaps, expected):
        assert got == pytest.approx(want, abs=0.04), gaps
    # timer H: BYE once 64*T1 passed without ACK
    assert byes[0] - oks[0] == pytest.approx(64 * t1, abs=0.3)
    assert "no ACK for 2xx" in server.wait_log("no ACK for 2xx")


def test_bye_from_sipp(start_server, sipp) -> None:  # type: ignore[no-untyped-def]
    server = start_server(routes={"hold": {"duration": 30}})
    result = sipp(["-sn", "uac", "-s", "hold", "-d", "500", server.target], timeout=20)
    assert result.ok, result.describe()
    assert "by=remote" in server.wait_log("by=remote")


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_bye_from_server(start_server, sipp, transport: str) -> None:  # type: ignore[no-untyped-def]
    server = start_server(routes={"hold": {"duration": 1}})
    result = sipp(
        [
            "-sf",
            str(SIPP_SCENARIOS / "uac_server_bye.xml"),
            "-s",
            "hold",
            "-t",
            transport,
            server.target,
        ],
        timeout=20,
    )
    assert result.ok, result.describe()
    assert "by=local" in server.wait_log("by=local")


def test_reinvite_sendonly_answered_recvonly(start_server, sipp) -> None:  # type: ignore[no-untyped-def]
    server = start_server(routes={"hold": {"duration": 0}})
    result = sipp(
        ["-sf", str(SIPP_SCENARIOS / "uac_reinvite_sendonly.xml"), "-s", "hold", server.target],
        timeout=20,
    )
    assert result.ok, result.describe()
    oks = result.received(status=200, method="INVITE")
    assert len(oks) >= 2 and b"a=recvonly" in oks[-1].raw
    assert "on_hold=True" in server.wait_log("on_hold=True")
