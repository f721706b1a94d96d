"""SRTP on a real RtpSession over loopback: what leaves is encrypted and
authenticated, what comes in is decrypted, and a tampered or replayed packet is
dropped and counted, never decoded."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets

from mediaserver.codecs.g711 import ulaw_encode
from mediaserver.codecs.params import SrtpKeys
from mediaserver.media.clock import MediaClock
from mediaserver.media.rtcp import parse_compound
from mediaserver.media.rtp import RtpPacket
from mediaserver.media.session import RtpSession, SessionSettings
from mediaserver.media.srtp import SrtpContext
from tests.media.test_session import Peer, negotiated, tone, udp

SUITE = "AES_CM_128_HMAC_SHA1_80"


def test_the_context_protects_and_refuses_tampering_and_replay() -> None:
    ours, theirs = secrets.token_bytes(30), secrets.token_bytes(30)
    a = SrtpContext(SrtpKeys(SUITE, ours, theirs))
    b = SrtpContext(SrtpKeys(SUITE, theirs, ours))
    rtp = RtpPacket(0, 1, 160, 42, b"\xff" * 160).serialise()
    wire = a.protect(rtp)
    assert wire is not None and len(wire) == len(rtp) + 10 and wire[12:] != rtp[12:]
    assert b.unprotect(wire) == rtp
    assert b.unprotect(wire) is None  # replayed
    tampered = bytearray(a.protect(RtpPacket(0, 2, 320, 42, b"\xff" * 160).serialise()) or b"")
    tampered[30] ^= 0x01
    assert b.unprotect(bytes(tampered)) is None
    assert a.protect(rtp) is None  # the same index twice would reuse keystream
    # The 32-bit tag suite, and RTCP.
    short = SrtpContext(SrtpKeys("AES_CM_128_HMAC_SHA1_32", ours, theirs))
    assert len(short.protect(rtp) or b"") == len(rtp) + 4
    rtcp = b"\x80\xc9\x00\x01" + (42).to_bytes(4, "big")
    assert b.unprotect_rtcp(a.protect_rtcp(rtcp) or b"") == rtcp
    assert a.rekeyed(a.keys) is a and a.rekeyed(None) is None
    assert a.rekeyed(SrtpKeys(SUITE, theirs, ours)) is not a


def test_a_session_with_srtp_sends_ciphertext_and_drops_what_does_not_verify() -> None:
    ours, theirs = secrets.token_bytes(30), secrets.token_bytes(30)
    peer_ctx = SrtpContext(SrtpKeys(SUITE, theirs, ours))
    result: dict[str, object] = {}

    async def main() -> None:
        peer = Peer()
        loop = asyncio.get_running_loop()
        rtp, rtcp = udp(), udp()
        media = dataclasses.replace(negotiated(peer.port), srtp=SrtpKeys(SUITE, ours, theirs))
        session = RtpSession(rtp, rtcp, media, MediaClock(loop), SessionSettings(), loop.time())
        heard: list[object] = []
        session.on_audio = lambda pcm, t, gap: heard.append(pcm)
        dest = rtp.getsockname()
        try:
            session.play(tone(3))
            await asyncio.sleep(0.12)
            wire = [peer.rtp.recv(2048) for _ in range(3)]
            plain = [peer_ctx.unprotect(w) for w in wire]
            result["sent"] = [RtpPacket.parse(p).payload if p else None for p in plain]
            for i in range(5):
                packet = RtpPacket(0, 500 + i, 160 * i, 7, ulaw_encode(tone(1)).tobytes())
                protected = peer_ctx.protect(packet.serialise())
                assert protected is not None
                peer.rtp.sendto(protected, dest)
                if i == 2:
                    peer.rtp.sendto(protected, dest)  # a replay
                    peer.rtp.sendto(packet.serialise(), dest)  # plain RTP: no tag
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)
            session.close()  # sends an RTCP BYE, protected
            bye = peer.rtcp.recv(2048)
            result["bye"] = parse_compound(peer_ctx.unprotect_rtcp(bye) or b"")
            result["stats"] = session.stats
            result["summary"] = session.summary()
            result["heard"] = len(heard)
        finally:
            rtp.close()
            rtcp.close()
            peer.close()

    asyncio.run(main())
    assert result["sent"] == [
        ulaw_encode(tone(3)[i * 160 : (i + 1) * 160]).tobytes() for i in range(3)
    ]
    stats = result["stats"]
    assert stats.packets_in == 5 and stats.srtp_rejected == 2 and stats.malformed == 0  # type: ignore[attr-defined]
    assert result["heard"] == 5
    assert result["summary"]["srtp"] == SUITE and result["summary"]["srtp_rejected"] == 2  # type: ignore[index]
    assert result["bye"]
