"""Early media against real peers: a route's announcement goes out as a 183
with SDP before the answer; sipp requires 100rel, PRACKs the reliable 183 and
UPDATEs the session before the answer (tests/sipp/uac_100rel.xml); baresip
hears the announcement before the call is answered."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.peers import best_alignment, read_wav_mono, speech_wav

ANNOUNCEMENT = "this call may be recorded for quality and training"


def test_a_caller_requiring_100rel_pracks_and_updates_before_the_answer(  # type: ignore[no-untyped-def]
    start_server, sipp, sipp_scenario, tmp_path: Path
) -> None:
    announce = speech_wav(ANNOUNCEMENT, tmp_path / "announce")
    server = start_server(routes={"hold": {"duration": 1, "announce": str(announce)}})
    result = sipp(["-sf", str(sipp_scenario("uac_100rel")), "-s", "hold", server.target], timeout=30)
    assert result.ok, result.describe()
    log = server.wait_log("call_ended", timeout=10)
    # The UPDATE put us on hold before the 200 to the INVITE went out.
    changed = log.index("call_media_changed")
    assert "on_hold=True" in log[changed : changed + 300]
    assert changed < log.index("call_confirmed")


def test_baresip_hears_the_announcement_before_the_answer(  # type: ignore[no-untyped-def]
    start_server, baresip, tmp_path: Path
) -> None:
    announce = speech_wav(ANNOUNCEMENT, tmp_path / "announce")
    server = start_server(routes={"hold": {"duration": 2, "announce": str(announce)}})
    result = baresip(server.uri("hold"), seconds=15, pad_seconds=10)
    assert result.established, result.describe()
    server.wait_log("call_ended", timeout=10)
    assert result.heard_wav is not None
    played, _ = read_wav_mono(announce)
    heard, _ = read_wav_mono(result.heard_wav)
    lag, corr = best_alignment(played, heard)
    assert corr >= 0.9, corr
    # It came first: within the first second of what baresip played out.
    assert lag < 8000 and float(np.abs(heard).max()) > 1000, lag
