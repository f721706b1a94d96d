"""RFC 4475 torture messages, fed to the parser directly and to the running server."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from mediaserver.sip.message import MessageError, Request, Response, parse_message
from tests.peers import LOCALHOST, parse_sip, sip_options

DATA = Path(__file__).resolve().parent.parent / "data" / "rfc4475"


def manifest() -> list[tuple[str, str, str]]:
    rows = []
    for line in (DATA / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _section, _title, cls, expect = line.split("\t")
        rows.append((name, cls, expect))
    return rows


MANIFEST = manifest()

#: What the running server must answer to each message: the acceptable status
#: codes, or None when no response may be sent (the message is a response, or
#: cannot be answered). Derived from the manifest's "what the RFC expects".
LIVE_EXPECT: dict[str, set[int] | None] = {
    # valid
    "wsinv.dat": {481},  # parsed and handled: its To has a tag, and no such dialog exists
    "intmeth.dat": {405},
    "esc01.dat": {404},
    "escnull.dat": {405},  # REGISTER: we are not a registrar
    "esc02.dat": {405},
    "lwsdisp.dat": {200},
    "longreq.dat": {404},
    "dblreq.dat": {405},
    "semiuri.dat": {200},
    "transports.dat": {200},
    "mpart01.dat": {405},
    "unreason.dat": None,
    "noreason.dat": None,
    # invalid
    "badinv01.dat": {400},
    "clerr.dat": {400},
    "ncl.dat": {400},
    "scalar02.dat": {400},
    "scalarlg.dat": None,
    "quotbal.dat": {400},
    "ltgtruri.dat": {400},
    "lwsruri.dat": {400},
    "lwsstart.dat": {400},
    "trws.dat": {400},
    "escruri.dat": {400},
    "baddate.dat": {404},  # the bad Date is ignored (the RFC allows it)
    "regbadct.dat": {400},
    "badaspec.dat": {400},
    "baddn.dat": {400},
    "badvers.dat": {505},
    "mismatch01.dat": {400},
    "mismatch02.dat": {400},
    "bigcode.dat": None,
    # transaction / application / compat
    "badbranch.dat": {200},
    "insuf.dat": {400},
    "unkscm.dat": {416},
    "novelsc.dat": {416},
    "unksm2.dat": {405},
    "bext01.dat": {420},
    "invut.dat": {415},
    "regaut01.dat": {405},
    "multi01.dat": {400},
    "mcl01.dat": {400},
    "bcast.dat": None,
    "zeromf.dat": {200},
    "cparam01.dat": {405},
    "cparam02.dat": {405},
    "regescrt.dat": {405},
    "sdp01.dat": {406},
    "inv2543.dat": {404},
}


def test_all_49_are_covered() -> None:
    assert len(MANIFEST) == 49
    assert {name for name, _, _ in MANIFEST} == set(LIVE_EXPECT)


@pytest.mark.parametrize(("name", "cls", "expect"), MANIFEST, ids=[m[0] for m in MANIFEST])
def test_parser(name: str, cls: str, expect: str) -> None:
    data = (DATA / name).read_bytes()
    if cls == "valid" or cls == "compat" or LIVE_EXPECT[name] in ({200}, {404}, {405}):
        msg = parse_message(data)
        assert isinstance(msg, Request | Response)
        if name == "longreq.dat":
            assert len(msg.headers.get("To") or "") > 100
        if name == "dblreq.dat":
            assert isinstance(msg, Request) and msg.method == "REGISTER" and msg.body == b""
        if name == "esc01.dat":
            assert isinstance(msg, Request)
            assert msg.to.uri.equivalent(
                msg.to.uri.__class__(scheme="sip", user="user", host="example.com")
            )
        if name == "mpart01.dat":
            assert msg.content_type == "multipart/mixed"
        return
    expected = LIVE_EXPECT[name]
    try:
        msg = parse_message(data)
    except MessageError as exc:
        if expected is None:
            assert exc.partial is None or not isinstance(exc.partial, Request)
        else:
            assert exc.status in expected, exc.reason
        return
    # Parsed: then it is a semantic matter for the UAS (415, 416, 420, 406...),
    # or a response that the transaction layer drops.
    assert expected is None or not expected & {400, 505}, f"{name} should not parse"


def test_server_answers_each_torture_message(start_server) -> None:  # type: ignore[no-untyped-def]
    # A short T1 makes finished transactions go away quickly (timer J = 64*T1):
    # some torture messages reuse another's branch and sent-by, and RFC 3261
    # matching would rightly treat them as retransmissions of the earlier one.
    server = start_server(sip={"t1": 0.01})
    # Most torture messages name a sent-by we cannot reach; the server answers
    # to `received` (127.0.0.1) at the sent-by port, 5060 by default (RFC 3261
    # section 18.2.2), so that is where we listen.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((LOCALHOST, 5060))
    except OSError:
        pytest.fail("127.0.0.1:5060 is busy; the torture test needs it to receive answers")
    failures = []
    last_sent: dict[tuple[str | None, str | None], float] = {}
    with sock:
        for name, _cls, _expect in MANIFEST:
            data = (DATA / name).read_bytes()
            msg = parse_sip(data)
            key = (msg.header("Via"), msg.method)
            if key in last_sent:
                time.sleep(max(0.0, last_sent[key] + 1.0 - time.monotonic()))
            last_sent[key] = time.monotonic()
            sock.sendto(data, (server.host, server.port))
            # Earlier INVITEs' error answers are retransmitted (we never ACK
            # them): keep only answers to this message.
            call_id = msg.header("Call-ID")
            replies = [
                r
                for r in _collect(sock, 0.4 if LIVE_EXPECT[name] is None else 2.0)
                if call_id is None or r.header("Call-ID") == call_id
            ]
            finals = [r.status for r in replies if r.status is not None and r.status >= 200]
            expected = LIVE_EXPECT[name]
            if expected is None:
                if replies:
                    failures.append(
                        f"{name}: expected no answer, got {[r.status for r in replies]}"
                    )
            elif not finals or finals[0] not in expected:
                failures.append(f"{name}: expected {sorted(expected)}, got {finals}")
            elif name == "intmeth.dat" and "INVITE" not in (replies[-1].header("Allow") or ""):
                failures.append("intmeth.dat: 405 without Allow")
            elif name == "bext01.dat" and "nothingSupportsThis" not in (
                replies[-1].header("Unsupported") or ""
            ):
                failures.append("bext01.dat: 420 without Unsupported")
            elif name == "invut.dat" and "application/sdp" not in (
                replies[-1].header("Accept") or ""
            ):
                failures.append("invut.dat: 415 without Accept")
    assert not failures, "\n".join(failures)
    # Nothing escaped the event loop and the server still serves.
    reply = sip_options(server.host, server.port)
    assert reply is not None and reply.status == 200
    log = server.log_text()
    assert "Traceback" not in log and "message_handling_failed" not in log
    assert server.running


def _collect(sock: socket.socket, wait: float) -> list:  # type: ignore[type-arg]
    """Every datagram within `wait` s, stopping shortly after the first final."""
    out = []
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, _ = sock.recvfrom(65535)
        except (TimeoutError, OSError):
            break
        msg = parse_sip(data)
        out.append(msg)
        if msg.status is not None and msg.status >= 200:
            deadline = min(deadline, time.monotonic() + 0.05)
    return out
