#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of everything that reads bytes
from the network.

Targets, and the only exceptions each may raise (its documented rejections;
anything else, or a run longer than ``--timeout`` seconds on one input, is a
finding):

- ``sip``: `parse_message`, then every header accessor the core uses
  (MessageError, SipParseError);
- ``ua``: the whole SIP core, `UserAgent.receive`, with digest auth, a
  registrar, the edge defences and a trunk (nothing: it answers or drops);
- ``sdp``: `SessionDescription.parse`, then our offer/answer on it (SdpError,
  NegotiationError);
- ``rtp``, ``rtcp``: `RtpPacket.parse` (RtpError), `parse_compound` (RtcpError);
- ``dtmf``: RFC 4733 events through `DtmfReceiver`, and SIP INFO bodies
  (nothing);
- ``digest``: `parse_credentials` (SipParseError) and `DigestAuth.check`
  (SipParseError);
- ``jitter``: the jitter buffer fed packets whose sequence numbers,
  timestamps and arrival times come from the input (nothing).

Seeds: the RFC 4475 torture messages (tests/data/rfc4475) and small valid
messages, SDP, RTP and RTCP made here. One JSON object on stdout (per target:
inputs run, crashes, hangs, coverage edges, seconds); findings are kept under
``--artifacts``. Example::

    .venv/bin/python bench/fuzz.py all --runs 1000000

(`--worker TARGET` is the libFuzzer process itself; it is started by the
above, one subprocess per target, bounded in time.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = (
    "sip", "ua", "sdp", "rtp", "rtcp", "dtmf", "digest", "jitter", "register", "srtp",
)  # fmt: skip

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8 9 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 "
    b"telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)
INVITE = (
    b"INVITE sip:hold@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:alice@192.0.2.1>;tag=a\r\nTo: <sip:hold@127.0.0.1>\r\n"
    b"Call-ID: f1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@192.0.2.1>\r\n"
    b"Content-Type: application/sdp\r\nContent-Length: "
    + str(len(SDP)).encode()
    + b"\r\n\r\n"
    + SDP
)
CRYPTO = b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n"
CHALLENGE = (
    b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-r\r\n"
    b"From: <sip:acct@p.test>;tag=a\r\nTo: <sip:acct@p.test>;tag=b\r\nCall-ID: r1\r\n"
    b'CSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm="p.test", nonce="n1", qop="auth", '
    b'algorithm=MD5, opaque="o"\r\nContact: <sip:acct@127.0.0.1:5060>;expires=600\r\n'
    b"Min-Expires: 1800\r\nContent-Length: 0\r\n\r\n"
)
DIGEST = (
    b'Digest username="alice", realm="mediaserver", nonce="abc", uri="sip:127.0.0.1", '
    b'response="0123456789abcdef0123456789abcdef", qop=auth, nc=00000001, cnonce="x"'
)


def seeds(target: str) -> list[bytes]:
    """The seed corpus of `target`."""
    torture = sorted((ROOT / "tests" / "data" / "rfc4475").glob("*.dat"))
    if target in ("sip", "ua"):
        return [INVITE, *(p.read_bytes() for p in torture)]
    if target == "sdp":
        savp = SDP.replace(b"RTP/AVP", b"RTP/SAVP")
        return [SDP, savp, savp + CRYPTO, SDP + CRYPTO, SDP.replace(b"sendrecv", b"inactive")]
    if target == "register":
        return [CHALLENGE, CHALLENGE.replace(b"401 Unauthorized", b"200 OK")]
    if target == "srtp":
        return [struct.pack("!BBHII", 0x80, 0, 1, 160, 0x1234) + bytes(170)]
    if target in ("rtp", "jitter"):
        return [struct.pack("!BBHII", 0x80, 0, 1, 160, 0x1234) + bytes(160)]
    if target == "rtcp":
        return [struct.pack("!BBHI", 0x81, 201, 7, 1) + bytes(24)]
    if target == "dtmf":
        return [bytes([1, 0x8A, 0x03, 0x20]), b"Signal=5\r\nDuration=160\r\n"]
    return [DIGEST]


def harness(target: str) -> Callable[[bytes], None]:
    """The one-input function of `target` (imports made under atheris's
    instrumentation by the worker)."""
    from mediaserver.codecs.params import MediaOffer
    from mediaserver.media.dtmf import DtmfReceiver
    from mediaserver.media.jitter import JitterBuffer
    from mediaserver.media.rtcp import RtcpError, parse_compound
    from mediaserver.media.rtp import RtpError, RtpPacket
    from mediaserver.sip.auth import Account, DigestAuth, parse_credentials
    from mediaserver.sip.calls import UaConfig, parse_dtmf_info
    from mediaserver.sip.edge import EdgePolicy
    from mediaserver.sip.errors import SipParseError
    from mediaserver.sip.message import MessageError, Request, parse_message
    from mediaserver.sip.offer_answer import SdpSession
    from mediaserver.sip.registrar import Registrar
    from mediaserver.sip.sdp import CODECS, NegotiationError, SdpError, SessionDescription
    from mediaserver.sip.transaction import Target
    from mediaserver.sip.trunks import TrunkTable
    from mediaserver.sip.ua import UserAgent

    def offer() -> MediaOffer:
        return MediaOffer(
            "127.0.0.1", 40000, [CODECS["PCMU"], CODECS["PCMA"], CODECS["TELEPHONE-EVENT"]]
        )

    if target == "sip":

        def one(data: bytes) -> None:
            try:
                msg = parse_message(data)
            except MessageError:
                return
            try:
                _ = (msg.from_, msg.to, msg.call_id, msg.cseq, msg.vias, msg.top_via)
                _ = (msg.contacts, msg.content_type, msg.encode())
                if isinstance(msg, Request):
                    _ = (msg.ruri, msg.tokens("Require"), msg.tokens("Supported"))
            except SipParseError:
                pass

        return one
    if target == "ua":

        class Media:
            def allocate(self) -> MediaOffer:
                return offer()

            def release(self, offer: MediaOffer) -> None:
                pass

        import ipaddress

        from mediaserver.sip.trunks import Trunk

        trunk = Trunk(
            "t", (ipaddress.ip_network("192.0.2.0/24"),), {"+15551230000": "hold"}, country_code="1"
        )
        ua = UserAgent(
            UaConfig(
                local={"udp": ("127.0.0.1", 5060)},
                routes=frozenset({"hold"}),
                auth=DigestAuth("mediaserver", {"alice": Account("alice", password="pw")}),
                registrar=Registrar(),
                edge=EdgePolicy(
                    request_rate=1e9, request_burst=1e9, invite_rate=1e9, invite_burst=1e9
                ),
                trunks=TrunkTable([trunk]),
                srtp="optional",
            ),
            Media(),  # type: ignore[arg-type]
        )
        clock = [0.0]
        sources = [Target("udp", "192.0.2.7", 5060), Target("udp", "198.51.100.1", 5060)]

        def one(data: bytes) -> None:
            clock[0] += 0.01
            ua.receive(data, sources[len(data) % 2], clock[0])
            ua.tick(clock[0])

        return one
    if target == "sdp":

        def one(data: bytes) -> None:
            try:
                sdp = SessionDescription.parse(data)
                mode = ("off", "optional", "required")[len(data) % 3]
                SdpSession(offer(), srtp=mode).answer(sdp)
                ours = SdpSession(offer(), srtp=mode)
                ours.offer()
                ours.accept_answer(sdp)
            except (SdpError, NegotiationError):
                pass

        return one
    if target == "rtp":

        def one(data: bytes) -> None:
            with contextlib.suppress(RtpError):
                RtpPacket.parse(data).serialise()

        return one
    if target == "rtcp":

        def one(data: bytes) -> None:
            with contextlib.suppress(RtcpError):
                parse_compound(data)

        return one
    if target == "dtmf":

        def one(data: bytes) -> None:
            receiver = DtmfReceiver()
            for i in range(0, len(data), 6):
                chunk = data[i : i + 6]
                ts = int.from_bytes(chunk[4:6] or b"\0", "big")
                receiver.feed(RtpPacket(101, i, ts, 1, chunk[:4]), i / 100)
            receiver.flush(len(data))
            parse_dtmf_info(data, "application/dtmf-relay")
            parse_dtmf_info(data, "application/dtmf")

        return one
    if target == "digest":
        auth = DigestAuth("mediaserver", {"alice": Account("alice", password="pw")})

        def one(data: bytes) -> None:
            text = data.decode("utf-8", errors="replace")
            with contextlib.suppress(SipParseError):
                parse_credentials(text)
            with contextlib.suppress(SipParseError):
                auth.check([text], "REGISTER", "sip:127.0.0.1", "192.0.2.1", 1.0)

        return one
    if target == "register":
        from mediaserver.sip.registration import Registration
        from mediaserver.sip.trunks import TrunkOutbound

        out = TrunkOutbound("127.0.0.1", 5060, "udp", "p.test", "acct", "pw", True, 600)

        def one(data: bytes) -> None:
            try:
                msg = parse_message(data)
            except MessageError:
                return
            if isinstance(msg, Request):
                return
            reg = Registration("t", out, ("127.0.0.1", 5060), jitter=lambda: 0.5)
            reg.request()
            for now in (0.1, 0.2):  # twice: the same challenge again is a failure
                again, _ = reg.on_response(msg, now)
                if again is None:
                    break
                again.encode()

        return one
    if target == "srtp":
        from mediaserver.codecs.params import SrtpKeys
        from mediaserver.media.srtp import SrtpContext

        context = SrtpContext(SrtpKeys("AES_CM_128_HMAC_SHA1_80", bytes(30), bytes(30)))

        def one(data: bytes) -> None:
            # libsrtp (C) must reject what it cannot authenticate, never crash.
            context.unprotect(data)
            context.unprotect_rtcp(data)

        return one
    if target == "jitter":

        def one(data: bytes) -> None:
            buffer = JitterBuffer(eager=bool(data[:1] and data[0] & 1))
            now = 0.0
            for i in range(1, len(data) - 6, 7):
                seq, ts, gap = struct.unpack("!HIB", data[i : i + 7])
                now += gap / 1000
                buffer.push(RtpPacket(0, seq, ts, 1, bytes(160)), now)
                buffer.pop(now)
            buffer.pop(now + 1.0)

        return one
    raise ValueError(f"unknown target {target!r}")


def worker(target: str, libfuzzer_args: list[str]) -> None:
    import atheris  # type: ignore[import-not-found]

    with atheris.instrument_imports(include=["mediaserver"]):
        one = harness(target)
    atheris.Setup([sys.argv[0], *libfuzzer_args], one)
    atheris.Fuzz()


def run_target(
    target: str, runs: int, timeout: float, wall: float, artifacts: Path
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"fuzz_{target}_") as tmp:
        corpus = Path(tmp)
        for i, seed in enumerate(seeds(target)):
            (corpus / f"seed{i}").write_bytes(seed)
        out_dir = artifacts / target
        out_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            target,
            "--",
            f"-runs={runs}",
            f"-timeout={int(timeout)}",
            "-rss_limit_mb=2048",
            f"-max_total_time={int(wall)}",
            f"-artifact_prefix={out_dir}/",
            "-print_final_stats=1",
            str(corpus),
        ]
        started = time.monotonic()
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=wall + 60, check=False)
            output = (done.stdout + done.stderr).decode(errors="replace")
            code: int | None = done.returncode
        except subprocess.TimeoutExpired as exc:
            output = ((exc.stdout or b"") + (exc.stderr or b"")).decode(errors="replace")
            code = None
        seconds = time.monotonic() - started
    ran = re.findall(r"stat::number_of_executed_units:\s*(\d+)", output)
    cov = re.findall(r"cov: (\d+)", output)
    crash = "Uncaught Python exception" in output or "deadly signal" in output
    hang = "libFuzzer: timeout" in output or code is None
    result: dict[str, Any] = {
        "inputs": int(ran[-1]) if ran else None,
        "crashes": int(crash),
        "hangs": int(hang),
        "coverage_edges": int(cov[-1]) if cov else None,
        "seconds": round(seconds, 1),
        "exit_code": code,
    }
    if crash or hang:
        tail = output[output.find("=== Uncaught") :] if crash else output[-1500:]
        result["finding"] = tail[:1500]
    return result


def main() -> int:
    if "--worker" in sys.argv:
        at = sys.argv.index("--worker")
        rest = sys.argv[at + 2 :]
        worker(sys.argv[at + 1], rest[1:] if rest[:1] == ["--"] else rest)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help=f"one of {', '.join(TARGETS)}, or all")
    parser.add_argument("--runs", type=int, default=10_000, help="inputs per target")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one input may take")
    parser.add_argument(
        "--max-time", type=float, default=3600.0, help="seconds per target, at most"
    )
    parser.add_argument("--artifacts", default="fuzz-artifacts", help="where findings are kept")
    args = parser.parse_args()
    targets = TARGETS if args.target == "all" else (args.target,)
    report: dict[str, Any] = {"bench": "fuzz", "runs_per_target": args.runs, "targets": {}}
    for target in targets:
        result = run_target(target, args.runs, args.timeout, args.max_time, Path(args.artifacts))
        print(f"[fuzz] {target}: {result}", file=sys.stderr, flush=True)
        report["targets"][target] = result
    print(json.dumps(report, indent=2))
    found = any(r["crashes"] or r["hangs"] for r in report["targets"].values())
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
