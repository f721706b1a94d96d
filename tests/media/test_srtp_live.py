"""SDES-SRTP against baresip (its srtp module, `mediaenc=srtp-mand`): keys over
TLS, the echo app's audio comes back through two SRTP legs intact, nothing was
rejected; a plain caller to a server that requires SRTP gets 488; keys over
UDP work but are warned about."""

from __future__ import annotations

import re
from pathlib import Path

from tests.peers import LOCALHOST, best_alignment, free_port, read_wav_mono, self_signed_cert

SUITE = "AES_CM_128_HMAC_SHA1_80"


def srtp_server(start_server, tmp_path: Path, mode: str = "required"):  # type: ignore[no-untyped-def]
    cert, key = self_signed_cert(tmp_path / "tls")
    port, tls = free_port(), free_port()
    server = start_server(
        sip={
            "listen": [
                {"transport": "udp", "host": LOCALHOST, "port": port},
                {"transport": "tls", "host": LOCALHOST, "port": tls},
            ],
            "tls": {"cert": str(cert), "key": str(key)},
        },
        media={"srtp": mode},
        routes={"echo": {"app": "echo", "duration": 0}},
    )
    return server, cert, tls


def srtp_caller(cert: Path) -> dict[str, str]:
    return {
        "extra_config": f"module srtp.so\nsip_cafile {cert}\n",
        "account": f"<sip:alice@{LOCALHOST}>;regint=0;mediaenc=srtp-mand",
    }


def test_baresip_talks_srtp_over_tls_and_hears_its_echo(  # type: ignore[no-untyped-def]
    start_server, baresip, tmp_path: Path
) -> None:
    server, cert, tls = srtp_server(start_server, tmp_path)
    uri = f"sip:echo@{LOCALHOST}:{tls};transport=tls"
    result = baresip(uri, seconds=12, pad_seconds=2, **srtp_caller(cert))
    assert result.established, result.describe()
    log = server.wait_log("call_ended", timeout=10)
    ended = next(line for line in log.splitlines() if "call_ended" in line)
    assert "srtp=AES_CM_128_HMAC_SHA1" in ended, ended
    # baresip sends one unprotected RTCP APP "PING" at the start (a keepalive):
    # rightly refused, as it carries no authentication tag; nothing else may be.
    assert int(re.findall(r"srtp_rejected=(\d+)", ended)[0]) <= 1, ended
    assert int(re.findall(r"rtp_in=(\d+)", ended)[0]) > 300, ended
    assert "transport=tls" in log and "srtp_keys_in_clear" not in log
    # What baresip said came back through both encrypted directions.
    assert result.heard_wav is not None and result.source_wav is not None
    sent, _ = read_wav_mono(result.source_wav)
    heard, _ = read_wav_mono(result.heard_wav)
    _lag, corr = best_alignment(sent, heard)
    assert corr >= 0.9, corr


def test_a_plain_caller_gets_488_and_keys_over_udp_are_warned_about(  # type: ignore[no-untyped-def]
    start_server, baresip, tmp_path: Path
) -> None:
    server, cert, _tls = srtp_server(start_server, tmp_path)
    plain = baresip(server.uri("echo"), seconds=6)
    assert not plain.established
    assert "status=488" in server.wait_log("488", timeout=5) or "488" in plain.describe()
    # SRTP offered over UDP: the call works, and the log says the keys were exposed.
    result = baresip(server.uri("echo"), seconds=8, **srtp_caller(cert))
    assert result.established, result.describe()
    log = server.wait_log("srtp_keys_in_clear", timeout=5)
    assert "srtp_keys_in_clear" in log and "transport=udp" in log
