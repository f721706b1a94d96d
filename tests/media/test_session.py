"""RtpSession on real loopback sockets: pacing, tags, flush, talk spurts, latching, DTMF, hold."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from mediaserver.codecs.g711 import ulaw_encode
from mediaserver.media.clock import MediaClock
from mediaserver.media.dtmf import build_event, parse_event
from mediaserver.media.rtcp import Bye, parse_compound
from mediaserver.media.rtp import RtpPacket
from mediaserver.media.session import RtpSession, SessionSettings
from mediaserver.sip.sdp import NegotiatedMedia, RtpMap


def udp(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def negotiated(peer_port: int, direction: str = "sendrecv") -> NegotiatedMedia:
    return NegotiatedMedia(
        codec=RtpMap(0, "PCMU", 8000),
        dtmf=RtpMap(101, "telephone-event", 8000, fmtp="0-16"),
        remote_address="127.0.0.1",
        remote_port=peer_port,
        direction=direction,
        remote_direction="sendrecv",
        on_hold=False,
        ptime=20,
        rtcp_mux=False,
    )


class Peer:
    """The far end: an RTP and an RTCP socket."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.rtp = udp(host)
        self.rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtcp.bind((host, self.rtp.getsockname()[1] + 1))
        self.rtcp.setblocking(False)
        self.port = self.rtp.getsockname()[1]

    def received(self) -> list[RtpPacket]:
        out = []
        while True:
            try:
                data = self.rtp.recv(2048)
            except BlockingIOError:
                return out
            out.append(RtpPacket.parse(data))

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


def run(
    body: Callable[[RtpSession, Peer, dict[str, Any]], Awaitable[None]], **settings: Any
) -> dict[str, Any]:
    """Run `body` with a session talking to a fresh peer; returns what it recorded."""
    record: dict[str, Any] = {"sent": [], "audio": [], "digits": [], "timeouts": 0}

    async def main() -> None:
        # the peer's RTCP port must be free too: retry until port+1 binds
        for _ in range(20):
            try:
                peer = Peer()
                break
            except OSError:
                continue
        loop = asyncio.get_running_loop()
        clock = MediaClock(loop)
        rtp, rtcp = udp(), udp()
        session = RtpSession(
            rtp, rtcp, negotiated(peer.port), clock, SessionSettings(**settings), loop.time()
        )
        session.on_sent = record["sent"].append
        session.on_audio = lambda pcm, t, gap: record["audio"].append((pcm, t, gap))
        session.on_dtmf = lambda d, ms: record["digits"].append(d)

        def timed_out() -> None:
            record["timeouts"] += 1

        session.on_timeout = timed_out
        try:
            await body(session, peer, record)
        finally:
            session.close()
            record["stats"] = session.stats
            record["jitter"] = session.jitter.stats()
            record["summary"] = session.summary()
            rtp.close()
            rtcp.close()
            peer.close()

    asyncio.run(main())
    return record


def tone(frames: int, rate: int = 8000) -> np.ndarray:
    t = np.arange(frames * 160) / rate
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def test_frames_are_paced_tagged_and_numbered() -> None:
    async def body(session: RtpSession, peer: Peer, record: dict[str, Any]) -> None:
        session.play(tone(3), tag="first")
        session.play(tone(2), tag="second")
        await asyncio.sleep(0.2)
        record["packets"] = peer.received()

    rec = run(body)
    packets = rec["packets"]
    assert len(packets) == 5
    assert [p.payload_type for p in packets] == [0] * 5
    seqs = [p.sequence for p in packets]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
    stamps = [p.timestamp for p in packets]
    assert all((b - a) % 2**32 == 160 for a, b in itertools.pairwise(stamps))
    assert [p.marker for p in packets] == [True, False, False, False, False]
    assert len({p.ssrc for p in packets}) == 1
    # tags are reported as the frames leave, in order
    assert rec["sent"] == ["first"] * 3 + ["second"] * 2
    # the payload is the G.711 encoding of what was played
    assert packets[0].payload == ulaw_encode(tone(1)).tobytes()


def test_flush_stops_audio_within_one_tick() -> None:
    async def body(session: RtpSession, peer: Peer, record: dict[str, Any]) -> None:
        session.play(tone(100), tag="reply")
        await asyncio.sleep(0.1)
        before = len(peer.received())
        record["dropped"] = session.flush()
        await asyncio.sleep(0.025)  # at most one tick may have been in flight
        after_one_tick = len(peer.received())
        await asyncio.sleep(0.1)
        record["counts"] = (before, after_one_tick, len(peer.received()))

    rec = run(body)
    before, in_flight, later = rec["counts"]
    assert before >= 3
    assert in_flight <= 1 and later == 0
    assert rec["dropped"] >= 90
    assert len(rec["sent"]) == before + in_flight  # only frames on the wire count as heard


def test_talk_spurts_keep_sequence_and_mark_each_start() -> None:
    async def body(session: RtpSession, peer: Peer, record: dict[str, Any]) -> None:
        session.play(tone(2))
        await asyncio.sleep(0.15)
        session.play(tone(2))
        await asyncio.sleep(0.1)
        record["packets"] = peer.received()

    packets = run(body)["packets"]
    assert len(packets) == 4
    seqs = [p.sequence for p in packets]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
    assert [p.marker for p in packets] == [True, False, True, False]
    # the pause shows as a timestamp jump, not a sequence jump
    assert (packets[2].timestamp - packets[1].timestamp) % 2**32 > 160 * 3


def test_receive_latches_ignores_strangers_and_counts_junk() -> None:
    async def body(session: RtpSession, peer: Peer, record: dict[str, Any]) -> None:
        dest = session.rtp_sock.getsockname()
        stranger = udp("127.0.0.2")
        try:
            # before latching, a stranger's packets are ignored
            stranger.sendto(RtpPacket(0, 1, 0, 99, b"\xff" * 160).serialise(), dest)
            for i in range(10):
                payload = ulaw_encode(tone(1)).tobytes()
                peer.rtp.sendto(
                    RtpPacket(0, 1000 + i, 160 * i, 7, payload, marker=i == 0).serialise(), dest
                )
                await asyncio.sleep(0.02)
            stranger.sendto(RtpPacket(0, 5, 0, 99, b"\xff" * 160).serialise(), dest)
            peer.rtp.sendto(b"\x00\x01garbage", dest)
            peer.rtp.sendto(RtpPacket(96, 2000, 0, 7, b"x").serialise(), dest)
            await asyncio.sleep(0.15)
        finally:
            stranger.close()

    rec = run(body)
    stats = rec["stats"]
    assert stats.strangers == 2 and stats.malformed == 1 and stats.unknown_pt == 1
    assert stats.packets_in == 10
    audio = rec["audio"]
    assert len(audio) == 10 and not any(gap for _, _, gap in audio)
    times = [t for _, t, _ in audio]
    assert times == sorted(times) and abs(times[1] - times[0] - 0.02) < 1e-9  # media time from RTP


def test_dtmf_in_and_out() -> None:
    async def body(session: RtpSession, peer: Peer, record: dict[str, Any]) -> None:
        dest = session.rtp_sock.getsockname()
        for i, (end, duration) in enumerate(
            [(False, 160), (False, 320), (True, 480), (True, 480), (True, 480)]
        ):
            pkt = RtpPacket(101, 10 + i, 8000, 7, build_event(5, end, 10, duration), marker=i == 0)
            peer.rtp.sendto(pkt.serialise(), dest)
        assert session.send_dtmf("7")
        await asyncio.sleep(0.4)
        record["packets"] = peer.received()

    rec = run(body)
    assert rec["digits"] == ["5"]  # three end packets, one digit
    events = [parse_event(p.payload) for p in rec["packets"] if p.payload_type == 101]
    assert {e[0] for e in events} == {7}
    assert sum(1 for e in events if e[1]) == 3  # three end packets
    assert len({p.timestamp for p in rec["packets"] if p.payload_type == 101}) == 1
    assert rec["packets"][0].marker


def test_hold_sends_nothing_and_inactivity_times_out() -> None:
    async def body(session: RtpSession, peer: Peer, record: dict[str, Any]) -> None:
        session.update(negotiated(peer.port, direction="recvonly"))
        session.play(tone(5))
        await asyncio.sleep(0.15)
        record["held"] = len(peer.received())
        await asyncio.sleep(0.6)  # the timeout is checked every 0.25 s

    rec = run(body, inactivity_timeout=0.3)
    assert rec["held"] == 0
    assert rec["timeouts"] == 1


def test_close_sends_rtcp_bye() -> None:
    async def body(session: RtpSession, peer: Peer, record: dict[str, Any]) -> None:
        session.play(tone(2))
        await asyncio.sleep(0.1)
        session.close()
        await asyncio.sleep(0.02)
        record["rtcp"] = parse_compound(peer.rtcp.recv(2048))

    rec = run(body)
    assert any(isinstance(p, Bye) for p in rec["rtcp"])


def test_clock_spreads_sessions_over_slots() -> None:
    async def main() -> list[int]:
        clock = MediaClock(asyncio.get_running_loop())
        ticks: list[int] = []

        class Counter:
            def __init__(self) -> None:
                self.n = 0

            def on_tick(self, now: float, late: float) -> None:
                self.n += 1

        loop = asyncio.get_running_loop()
        counters = [Counter() for _ in range(40)]
        start = loop.time()
        for c in counters:
            clock.add(c)
        await asyncio.sleep(0.2)
        elapsed = loop.time() - start
        for c in counters:
            clock.remove(c)
            ticks.append(c.n)
        assert len(clock) == 0
        # every object is served once per 20 ms of elapsed time (late ticks are caught up)
        expected = elapsed / 0.02
        assert all(abs(n - expected) <= 2 for n in ticks), (ticks, elapsed)
        return ticks

    asyncio.run(main())


def test_background_plays_alone_and_under_queued_audio() -> None:
    from mediaserver.codecs.g711 import ulaw_decode

    async def body(session: RtpSession, peer: Peer, record: dict[str, Any]) -> None:
        hum = np.full(160 * 6, 1000, dtype=np.int16)
        session.play_background(hum)  # 6 frames, nothing else queued
        await asyncio.sleep(0.08)
        session.play(np.full(160 * 2, 2000, dtype=np.int16), tag="speech")
        await asyncio.sleep(0.2)
        record["packets"] = peer.received()

    rec = run(body)
    levels = [int(np.median(ulaw_decode(p.payload))) for p in rec["packets"]]
    # Background alone, then mixed under the two queued frames, then it ends (played once).
    def count(level: int) -> int:
        return sum(1 for lv in levels if lv == pytest.approx(level, rel=0.05))

    assert levels[0] == pytest.approx(1000, rel=0.05)
    assert count(3000) >= 1  # mixed
    assert count(1000) + count(3000) == 6  # every background frame, once
    assert count(2000) + count(3000) == 2  # every speech frame
    assert len(levels) == count(1000) + count(2000) + count(3000)
    assert rec["sent"] == ["speech", "speech"]
