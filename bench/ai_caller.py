#!/usr/bin/env python3
"""Caller for the voice-AI benchmarks: N phone-like calls to an ``agent`` route.

Run as its own process by ``bench/turn_latency.py`` and ``bench/ai_calls.py``
(so its CPU is not the server's), 127.0.0.1 only, one JSON object on stdout.

Each call is a minimal SIP UAC (INVITE with an SDP offering PCMU/8000 and
telephone-event, 200, ACK ... BYE; INVITE/BYE retransmitted on T1 doubling)
with one RTP socket that sends a 20 ms PCMU frame every 20 ms for the whole
call, like a phone: the caller's utterances when it talks, u-law silence
(0xFF) otherwise. One 1 ms ticker with the calls spread over 20 slots sends
every frame on absolute deadlines.

The utterances are espeak-ng WAVs at 8 kHz (``tests.peers.speech_wav``),
trimmed to their speech: the first and last 20 ms frames whose RMS is above
1% of the loudest frame's (and above 30). So the send time of an utterance's
last frame is the caller's *speech end* and the send time of its first frame
the *speech onset*; both are read with ``time.time()`` just before ``sendto``.

The agent's packets are timestamped by the kernel on arrival
(``SO_TIMESTAMPNS``, CLOCK_REALTIME, the clock ``time.time()`` reads), so the
figures do not depend on when this process got round to reading them. The
server sends nothing between talk spurts, so "the agent finished" is "no
packet for ``--quiet`` s" (0.3).

Per call: wait for the greeting to finish, then ``--turns`` turns (say the
question; voice-to-voice = speech end -> the first agent packet that arrives
after it; wait until the answer is over), then ``--barge-ins`` trials (ask
for a story, ~1 s into the answer say "stop stop stop"; barge-in stop =
onset of "stop" -> the last agent packet before a gap > 100 ms), then BYE.
Before each turn a call waits a random 0..``--stagger`` s, so the turns of
concurrent calls do not line up. Every wait is bounded (``--answer-timeout``,
``--time-limit``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import resource
import socket
import sys
import time
import uuid
import wave
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from media_loadgen import (  # noqa: E402
    ANC_SPACE,
    RTP_HEADER,
    SO_TIMESTAMPNS,
    T1,
    TIMESPEC,
    parse_sip,
    proc_cpu_seconds,
    sdp_media,
    tag_of,
    uri_of,
)

from mediaserver.codecs.g711 import ulaw_encode  # noqa: E402

LOCALHOST = "127.0.0.1"
FRAME = 0.020
SLOTS = 20
SAMPLES = 160
SILENCE = b"\xff" * SAMPLES
READ_BURST = 64


def log(message: str) -> None:
    """Progress on stderr (stdout carries the JSON)."""
    print(f"[ai_caller] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- audio


@dataclass
class Utterance:
    """An utterance as PCMU payloads, trimmed to its speech."""

    name: str
    frames: list[bytes]
    trimmed_lead_s: float
    trimmed_tail_s: float

    @property
    def seconds(self) -> float:
        """Length of what is sent."""
        return len(self.frames) * FRAME


def load_utterance(path: Path, name: str) -> Utterance:
    """Read an 8 kHz 16-bit mono WAV; keep the frames from speech onset to speech end."""
    with wave.open(str(path), "rb") as wav:
        if wav.getframerate() != 8000 or wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(f"{path}: need 8 kHz 16-bit mono")
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
    n = len(pcm) // SAMPLES
    frames = pcm[: n * SAMPLES].reshape(n, SAMPLES)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))
    threshold = max(30.0, 0.01 * float(rms.max()))
    loud = np.flatnonzero(rms > threshold)
    if loud.size == 0:
        raise ValueError(f"{path}: no speech")
    first, last = int(loud[0]), int(loud[-1])
    coded: npt.NDArray[np.uint8] = ulaw_encode(frames[first : last + 1])
    return Utterance(
        name,
        [bytes(row) for row in coded],
        round(first * FRAME, 3),
        round((n - 1 - last) * FRAME, 3),
    )


# --------------------------------------------------------------------------- calls


@dataclass
class Outbound:
    """Frames queued on a call, with futures resolved at the first/last frame's send time."""

    frames: deque[bytes]
    first_sent: asyncio.Future[float]
    last_sent: asyncio.Future[float]
    started: bool = False


@dataclass
class Call:
    """One call's sockets, dialog, send queue and arrivals."""

    idx: int
    rtp: socket.socket
    rtcp: socket.socket
    port: int
    call_id: str = field(default_factory=lambda: f"{uuid.uuid4().hex}@{LOCALHOST}")
    from_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    to_tag: str | None = None
    contact: str | None = None
    #: The Record-Route of the 2xx (a proxy in front, e.g. `mediaserver cluster`'s Kamailio).
    route: str | None = None
    remote: tuple[str, int] | None = None
    state: str = "new"
    status: int | None = None
    invite: bytes = b""
    ack: bytes = b""
    bye: bytes = b""
    invite_sent: float = 0.0
    established: asyncio.Event = field(default_factory=asyncio.Event)
    bye_done: asyncio.Event = field(default_factory=asyncio.Event)
    server_bye: bool = False
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    seq: int = field(default_factory=lambda: random.getrandbits(16))
    ts: int = field(default_factory=lambda: random.getrandbits(32))
    buf: bytearray = field(default_factory=lambda: bytearray(12 + SAMPLES))
    queue: deque[Outbound] = field(default_factory=deque)
    arrivals: list[float] = field(default_factory=list)
    arrival_event: asyncio.Event = field(default_factory=asyncio.Event)
    turns: list[dict[str, Any]] = field(default_factory=list)
    barge_ins: list[dict[str, Any]] = field(default_factory=list)
    greeting_s: float | None = None
    error: str | None = None


class Caller(asyncio.DatagramProtocol):
    """The SIP UAC, the RTP ticker and receivers, and the per-call scripts."""

    def __init__(self, args: argparse.Namespace, utterances: dict[str, Utterance]) -> None:
        self.args = args
        self.utt = utterances
        self.loop = asyncio.get_running_loop()
        self.server = (LOCALHOST, args.port)
        self.ruri = f"sip:{args.route}@{LOCALHOST}:{args.port}"
        self.calls: list[Call] = []
        self.by_id: dict[str, Call] = {}
        self.sip: asyncio.DatagramTransport | None = None
        self.sip_port = 0
        self.t0_ms = 0
        self.tick = 0
        self.running = False
        self.ticker_late: list[float] = []
        self.rng = random.Random(args.seed)
        self.marks: dict[str, dict[str, float | None]] = {}
        self.greeted = 0
        self.done = 0

    # -- sockets ---------------------------------------------------------------

    def bind_calls(self) -> None:
        """An RTP (kernel timestamps on) and an RTCP socket per call from --rtp-range."""
        lo, hi = self.args.rtp_range
        port = lo + lo % 2
        while len(self.calls) < self.args.calls and port + 1 <= hi:
            socks: list[socket.socket] = []
            try:
                for p in (port, port + 1):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    socks.append(sock)
                    sock.setblocking(False)
                    sock.bind((LOCALHOST, p))
            except OSError:
                for sock in socks:
                    sock.close()
                port += 2
                continue
            socks[0].setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            call = Call(len(self.calls), socks[0], socks[1], port)
            self.calls.append(call)
            self.by_id[call.call_id] = call
            self.loop.add_reader(socks[0].fileno(), self.on_rtp, call)
            self.loop.add_reader(socks[1].fileno(), self.on_rtcp, call)
            port += 2
        if len(self.calls) < self.args.calls:
            raise RuntimeError(f"bound {len(self.calls)} of {self.args.calls} RTP pairs")

    def close(self) -> None:
        """Remove the readers, close every socket."""
        for call in self.calls:
            for sock in (call.rtp, call.rtcp):
                if sock.fileno() >= 0:
                    self.loop.remove_reader(sock.fileno())
                    sock.close()
        if self.sip is not None:
            self.sip.close()

    # -- SIP -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sip = cast(asyncio.DatagramTransport, transport)
        self.sip_port = transport.get_extra_info("sockname")[1]

    def _request(self, call: Call, method: str, ruri: str, cseq: int, body: bytes = b"") -> bytes:
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        to = f"<{self.ruri}>" + (f";tag={call.to_tag}" if call.to_tag else "")
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP {LOCALHOST}:{self.sip_port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:aicaller@{LOCALHOST}:{self.sip_port}>;tag={call.from_tag}",
            f"To: {to}",
            f"Call-ID: {call.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:aicaller@{LOCALHOST}:{self.sip_port}>",
        ]
        if call.route and method in ("ACK", "BYE"):
            lines.append(f"Route: {call.route}")  # one proxy: its Record-Route as is
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _offer(self, call: Call) -> bytes:
        return (
            "v=0\r\n"
            f"o=aicaller {call.idx + 1} 1 IN IP4 {LOCALHOST}\r\n"
            "s=-\r\n"
            f"c=IN IP4 {LOCALHOST}\r\n"
            "t=0 0\r\n"
            f"m=audio {call.port} RTP/AVP 0 101\r\n"
            "a=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-16\r\n"
            "a=ptime:20\r\n"
            "a=sendrecv\r\n"
        ).encode()

    def _send_sip(self, data: bytes) -> None:
        assert self.sip is not None
        self.sip.sendto(data, self.server)

    async def invite(self, call: Call) -> bool:
        """INVITE (retransmitted on T1 doubling) until a final answer or --sip-timeout."""
        call.invite = self._request(call, "INVITE", self.ruri, 1, self._offer(call))
        call.state = "inviting"
        call.invite_sent = time.monotonic()
        interval = T1
        while call.state == "inviting" and call.status is None:
            self._send_sip(call.invite)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.established.wait(), interval)
            if time.monotonic() - call.invite_sent > self.args.sip_timeout:
                break
            interval *= 2
        if call.state == "inviting":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.established.wait(), self.args.sip_timeout)
        return call.state == "established"

    async def hang_up(self, call: Call) -> None:
        """BYE (retransmitted) until answered or --sip-timeout."""
        if call.state != "established" or call.contact is None:
            return
        call.bye = self._request(call, "BYE", call.contact, 2)
        call.state = "bye"
        started = time.monotonic()
        interval = T1
        while call.state == "bye" and time.monotonic() - started < self.args.sip_timeout:
            self._send_sip(call.bye)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.bye_done.wait(), interval)
            interval = min(interval * 2, 4.0)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            first, headers, body = parse_sip(data)
        except ValueError:
            return
        call = self.by_id.get(headers.get("call-id", ""))
        parts = first.split(" ", 2)
        if call is None or len(parts) < 2:
            return
        if not parts[0].startswith("SIP/"):
            if parts[0] == "BYE":
                self._answer(data, headers)
                call.server_bye = True
                call.state = "ended"
                call.bye_done.set()
            return
        status = int(parts[1])
        method = headers.get("cseq", "").split()[-1:]
        if method == ["INVITE"]:
            self._on_invite_response(call, status, headers, body)
        elif method == ["BYE"] and status >= 200:
            call.state = "ended"
            call.bye_done.set()

    def _answer(self, data: bytes, headers: dict[str, str]) -> None:
        head = data.partition(b"\r\n\r\n")[0].decode("utf-8", "replace").split("\r\n")
        vias = [ln for ln in head[1:] if ln.split(":", 1)[0].strip().lower() in ("via", "v")]
        lines = [
            "SIP/2.0 200 OK",
            *vias,
            f"From: {headers.get('from', '')}",
            f"To: {headers.get('to', '')}",
            f"Call-ID: {headers.get('call-id', '')}",
            f"CSeq: {headers.get('cseq', '')}",
            "Content-Length: 0",
        ]
        self._send_sip(("\r\n".join(lines) + "\r\n\r\n").encode())

    def _on_invite_response(
        self, call: Call, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        if status < 200:
            return
        if call.ack:
            self._send_sip(call.ack)
            return
        call.status = status
        call.to_tag = tag_of(headers.get("to", ""))
        call.contact = uri_of(headers.get("contact", "")) or self.ruri
        call.route = headers.get("record-route")
        media = sdp_media(body) if 200 <= status < 300 else None
        call.ack = self._request(call, "ACK", call.contact if media else self.ruri, 1)
        self._send_sip(call.ack)
        if media is not None:
            call.remote = media
            call.state = "established"
        else:
            call.state = "failed"
        call.established.set()

    # -- RTP -------------------------------------------------------------------

    def start_ticker(self) -> None:
        """A 1 ms ticker; call i sends in slot i % 20 (whole-millisecond deadlines)."""
        self.t0_ms = round(self.loop.time() * 1000)
        self.tick = 0
        self.running = True
        self.loop.call_at(self.t0_ms / 1000, self._on_tick)

    def _on_tick(self) -> None:
        if not self.running:
            return
        now_ms = round(self.loop.time() * 1000)
        calls = self.calls
        while self.t0_ms + self.tick <= now_ms:
            slot = self.tick % SLOTS
            if now_ms - self.t0_ms - self.tick > 0:
                self.ticker_late.append(now_ms - self.t0_ms - self.tick)
            for i in range(slot, len(calls), SLOTS):
                self._send_frame(calls[i])
            self.tick += 1
        self.loop.call_at((self.t0_ms + self.tick) / 1000, self._on_tick)

    def _send_frame(self, call: Call) -> None:
        if call.remote is None or call.state != "established":
            return
        out = call.queue[0] if call.queue else None
        payload = out.frames.popleft() if out is not None else SILENCE
        buf = call.buf
        RTP_HEADER.pack_into(buf, 0, 0x80, 0, call.seq & 0xFFFF, call.ts & 0xFFFFFFFF, call.ssrc)
        buf[12:] = payload
        call.seq += 1
        call.ts += SAMPLES
        now = time.time()
        with contextlib.suppress(OSError):
            call.rtp.sendto(buf, call.remote)
        if out is not None:
            if not out.started:
                out.started = True
                out.first_sent.set_result(now)
            if not out.frames:
                call.queue.popleft()
                out.last_sent.set_result(now)

    def say(self, call: Call, utt: Utterance) -> Outbound:
        """Queue an utterance on the call's stream."""
        out = Outbound(deque(utt.frames), self.loop.create_future(), self.loop.create_future())
        call.queue.append(out)
        return out

    def on_rtp(self, call: Call) -> None:
        """Kernel arrival time of each agent packet."""
        sock = call.rtp
        user_now = time.time()
        for _ in range(READ_BURST):
            try:
                data, anc, _flags, _addr = sock.recvmsg(2048, ANC_SPACE)
            except OSError:
                break
            if len(data) < 12 or data[0] & 0xC0 != 0x80 or data[1] & 0x7F != 0:
                continue  # not PCMU audio (e.g. a telephone-event)
            if anc:
                sec, nsec = TIMESPEC.unpack(anc[0][2])
                call.arrivals.append(sec + nsec * 1e-9)
            else:
                call.arrivals.append(user_now)
        call.arrival_event.set()

    def on_rtcp(self, call: Call) -> None:
        """Drain the server's RTCP."""
        for _ in range(READ_BURST):
            try:
                call.rtcp.recv(2048)
            except OSError:
                return

    # -- waiting on the agent ----------------------------------------------------

    async def first_after(self, call: Call, t: float, limit: float) -> float | None:
        """The arrival time of the first agent packet after wall time ``t`` (None on timeout)."""
        deadline = self.loop.time() + limit
        while True:
            arrivals = call.arrivals
            for k in range(len(arrivals) - 1, -1, -1):
                if arrivals[k] <= t:
                    if k + 1 < len(arrivals):
                        return arrivals[k + 1]
                    break
            else:
                if arrivals:
                    return arrivals[0]
            left = deadline - self.loop.time()
            if left <= 0 or call.state != "established":
                return None
            call.arrival_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.arrival_event.wait(), min(left, 0.05))

    async def quiet(self, call: Call, limit: float) -> bool:
        """Wait until no agent packet has arrived for --quiet s (False after ``limit`` s)."""
        deadline = self.loop.time() + limit
        while self.loop.time() < deadline and call.state == "established":
            last = call.arrivals[-1] if call.arrivals else 0.0
            idle = time.time() - last
            if idle >= self.args.quiet:
                return True
            await asyncio.sleep(self.args.quiet - idle + 0.005)
        return False

    # -- the script of one call -----------------------------------------------------

    async def run_call(self, call: Call, start_delay: float) -> None:
        """Set up, greeting, turns, barge-ins, hang up; every wait bounded."""
        args = self.args
        await asyncio.sleep(start_delay)
        if not await self.invite(call):
            call.error = f"not established (status {call.status})"
            return
        t_est = time.time()
        first = await self.first_after(call, 0.0, args.answer_timeout)
        if first is None:
            call.error = "no greeting"
        else:
            await self.quiet(call, 30.0)
            call.greeting_s = round(call.arrivals[-1] - t_est, 3)
        self.greeted += 1
        if self.greeted == len(self.calls):
            self.mark("turns_start")
        for k in range(args.turns):
            if call.state != "established":
                break
            await asyncio.sleep(self.rng.uniform(0, args.stagger))
            call.turns.append(await self.turn(call, k))
        for k in range(args.barge_ins):
            if call.state != "established":
                break
            await asyncio.sleep(self.rng.uniform(0, args.stagger))
            call.barge_ins.append(await self.barge_in(call, k))
        self.done += 1
        if self.done == len(self.calls):
            self.mark("turns_end")
        await self.hang_up(call)

    async def turn(self, call: Call, k: int) -> dict[str, Any]:
        """Say the question; speech end -> first agent packet; wait for the answer's end."""
        out = self.say(call, self.utt["question"])
        speech_end = await out.last_sent
        first = await self.first_after(call, speech_end, self.args.answer_timeout)
        record: dict[str, Any] = {"turn": k, "speech_end": speech_end}
        if first is None:
            record["v2v_ms"] = None
            return record
        record["v2v_ms"] = round((first - speech_end) * 1000, 2)
        await self.quiet(call, 30.0)
        record["answer_s"] = round(call.arrivals[-1] - first, 3)
        return record

    async def barge_in(self, call: Call, k: int) -> dict[str, Any]:
        """Ask for the story, interrupt it ~1 s in; onset -> last agent packet before a gap."""
        args = self.args
        record: dict[str, Any] = {"trial": k}
        story_end = await self.say(call, self.utt["story"]).last_sent
        first = await self.first_after(call, story_end, args.answer_timeout)
        if first is None:
            record["error"] = "no answer to the story question"
            return record
        record["story_v2v_ms"] = round((first - story_end) * 1000, 2)
        await asyncio.sleep(max(0.0, first + args.barge_after - time.time()))
        out = self.say(call, self.utt["stop"])
        onset = await out.first_sent
        stop_end = await out.last_sent
        # The agent's stream stops: the first gap > --gap s between packets after onset.
        gap = args.gap
        deadline = self.loop.time() + args.answer_timeout
        last_before: float | None = None
        while self.loop.time() < deadline:
            arr = call.arrivals
            after = [t for t in arr if t >= onset]
            before = [t for t in arr if t < onset]
            seq = ([before[-1]] if before else []) + after
            found = None
            for a, b in itertools.pairwise(seq):
                if b - a > gap:
                    found = a
                    break
            if found is None and seq and time.time() - seq[-1] > gap + 0.05:
                found = seq[-1]
            if found is not None:
                last_before = found
                break
            await asyncio.sleep(0.02)
        if last_before is None:
            record["error"] = "agent did not stop"
        elif last_before < onset:
            record["error"] = "agent had already stopped before the onset"
        else:
            record["stop_ms"] = round((last_before - onset) * 1000, 2)
        record["onset"] = onset
        record["last_packet"] = last_before
        record["stop_utterance_s"] = round(stop_end - onset, 3)
        # Whatever the agent says after "stop" (e.g. a reply): let it finish.
        after_stop = await self.first_after(call, stop_end, 3.0)
        if after_stop is not None:
            await self.quiet(call, 30.0)
        return record

    def mark(self, name: str) -> None:
        """The server's CPU seconds and the clocks under ``name``."""
        self.marks[name] = {
            "mono": time.monotonic(),
            "server_cpu_s": proc_cpu_seconds(self.args.server_pid),
            "caller_cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
        }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """All calls, concurrently; their records and the server CPU window."""
    utterances = {
        name: load_utterance(Path(path), name)
        for name, path in (("question", args.question), ("story", args.story), ("stop", args.stop))
    }
    loop = asyncio.get_running_loop()
    caller = Caller(args, utterances)
    hard_stop = time.monotonic() + args.time_limit
    try:
        caller.bind_calls()
        await loop.create_datagram_endpoint(lambda: caller, local_addr=(LOCALHOST, 0))
        caller.start_ticker()
        tasks = [
            asyncio.ensure_future(
                caller.run_call(c, c.idx / args.setup_rate + caller.rng.uniform(0, args.stagger))
            )
            for c in caller.calls
        ]
        _, pending = await asyncio.wait(tasks, timeout=args.time_limit)
        for task in pending:
            task.cancel()
        if pending:
            log(f"time limit: {len(pending)} calls cut short")
            await asyncio.gather(*pending, return_exceptions=True)
            for call in caller.calls:
                if call.state == "established":
                    call.error = call.error or "time limit"
            left = max(1.0, hard_stop + 10 - time.monotonic())
            await asyncio.wait_for(
                asyncio.gather(*(caller.hang_up(c) for c in caller.calls), return_exceptions=True),
                left,
            )
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log(f"call task failed: {task.exception()!r}")
        if "turns_end" not in caller.marks:
            caller.mark("turns_end")
        caller.running = False
    finally:
        caller.close()
    return {
        "calls": [
            {
                "idx": c.idx,
                "established": c.remote is not None,
                "status": c.status,
                "greeting_s": c.greeting_s,
                "server_bye": c.server_bye,
                "error": c.error,
                "turns": c.turns,
                "barge_ins": c.barge_ins,
            }
            for c in caller.calls
        ],
        "marks": caller.marks,
        "utterances": {
            k: {
                "seconds": u.seconds,
                "trimmed_lead_s": u.trimmed_lead_s,
                "trimmed_tail_s": u.trimmed_tail_s,
            }
            for k, u in utterances.items()
        },
        "ticker_late_ticks": len(caller.ticker_late),
        "ticker_late_ms_max": max(caller.ticker_late, default=0),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (the benchmark scripts pass them)."""

    def port_range(text: str) -> tuple[int, int]:
        lo, hi = (int(p) for p in text.split("-"))
        return lo, hi

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True, help="the server's SIP UDP port")
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--route", default="weather")
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--barge-ins", type=int, default=0)
    parser.add_argument("--question", required=True, help="8 kHz WAV of the question")
    parser.add_argument("--story", required=True, help="8 kHz WAV asking for the story")
    parser.add_argument("--stop", required=True, help='8 kHz WAV of "stop stop stop"')
    parser.add_argument("--stagger", type=float, default=0.0, help="random wait before a turn")
    parser.add_argument("--setup-rate", type=float, default=10.0, help="INVITEs per second")
    parser.add_argument("--quiet", type=float, default=0.3, help="agent finished after this gap")
    parser.add_argument("--gap", type=float, default=0.1, help="barge-in: stream stopped gap")
    parser.add_argument("--barge-after", type=float, default=1.0, help="seconds into the story")
    parser.add_argument("--answer-timeout", type=float, default=15.0)
    parser.add_argument("--sip-timeout", type=float, default=16.0)
    parser.add_argument("--time-limit", type=float, default=170.0, help="whole run bound")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--rtp-range", type=port_range, required=True, help="LO-HI")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run once; JSON on stdout."""
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a project dependency
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
