#!/usr/bin/env python3
"""Load generator for bench/media_capacity.py: N SIP calls to ``echo``, RTP on every call.

Runs in its own process (so its CPU is not counted as the server's), on uvloop,
127.0.0.1 only. One run:

1. binds one RTP socket (even port) and one RTCP socket (the odd port above)
   per call from ``--rtp-range``;
2. sets the calls up with its own minimal SIP UAC over one UDP socket
   (INVITE with an SDP naming the call's own RTP port, 200, ACK; INVITE and
   BYE retransmitted on T1 doubling, like RFC 3261 timer A/E);
3. sends 172-byte PCMU RTP (12-byte header + 160-byte payload) every 20 ms on
   every call for ``--warmup`` + ``--duration`` seconds. One 1 ms ticker with
   the calls spread over 20 slots (the server's own layout), absolute
   deadlines. The payload starts with an ASCII marker ``MC<call:4 hex><k:8 hex>``
   (every byte survives the server's u-law decode + encode; only 0x7F does
   not, and the payload has none), so each echoed packet maps back to the
   packet ``k`` it echoes;
4. receives the echoes with kernel receive timestamps (``SO_TIMESTAMPNS``) so
   the timing of what the server sent does not depend on when this process
   got round to reading it; user-space receive times are kept too, to show
   the difference;
5. reads the server's CPU time (/proc/PID/stat) and RSS at the start and end
   of the measured window (after the warm-up), hangs up with BYE and prints
   one JSON object on stdout.

The figures (echo delay, loss, pacing) are computed after the run, with numpy,
from per-call arrays of send and receive times, so the hot path per packet is
a recvmsg, a slice compare and two array stores.

With ``--srtp`` every call offers RTP/SAVP with an SDES key
(AES_CM_128_HMAC_SHA1_80): its packets are protected before they are sent and
the echoes (and the server's RTCP) unprotected, with libsrtp via pylibsrtp, the
way a phone or carrier would; a packet that fails authentication counts as
``srtp_failed``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import math
import os
import random
import re
import resource
import socket
import struct
import sys
import time
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

LOCALHOST = "127.0.0.1"
FRAME = 0.020
SLOTS = 20
TS_STEP = 160  # PCMU, 8 kHz, 20 ms
PAYLOAD_BYTES = 160
HEADER_BYTES = 12
MARKER = b"MC"
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
MARKER_END = HEADER_BYTES + 14  # b"MC" + 4 hex (call) + 8 hex (packet index)
#: Linux's SO_TIMESTAMPNS (and SCM_TIMESTAMPNS); Python does not export the name.
SO_TIMESTAMPNS = 35
ANC_SPACE = socket.CMSG_SPACE(16)
TIMESPEC = struct.Struct("qq")
RTP_HEADER = struct.Struct("!BBHII")
READ_BURST = 64
T1 = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _tone_tail() -> bytes:
    """The payload after the marker: a 400 Hz u-law tone without the byte 0x7F."""
    out = bytearray()
    for n in range(PAYLOAD_BYTES - (MARKER_END - HEADER_BYTES)):
        sample = int(8000 * math.sin(2 * math.pi * 400 * n / 8000))
        out.append(_ulaw(sample))
    return bytes(b if b != 0x7F else 0xFF for b in out)


def _ulaw(sample: int) -> int:
    """G.711 u-law of one 16-bit sample (reference algorithm)."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), clip) + bias
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not magnitude & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


TAIL = _tone_tail()


def log(message: str) -> None:
    """Progress on stderr (stdout carries the JSON)."""
    print(f"[loadgen] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc


def proc_tree(pid: int) -> list[int]:
    """`pid` and its descendants (a cluster: the supervisor, Kamailio, the workers)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return out


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process and its descendants in seconds, None if it is gone."""
    total, seen = 0.0, False
    for member in proc_tree(pid):
        try:
            text = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        seen = True
    return total if seen else None


def proc_rss_mb(pid: int) -> float | None:
    """VmRSS of a process and its descendants in MiB, None if unreadable."""
    total, seen = 0.0, False
    for member in proc_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
                    seen = True
        except OSError:
            continue
    return total if seen else None


def self_cpu_seconds() -> float:
    """This process's user + system CPU seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def udp_drops_by_port() -> dict[int, int]:
    """Kernel drops per local UDP port on 127.0.0.1 (/proc/net/udp, last column)."""
    drops: dict[int, int] = {}
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return drops
    for line in lines:
        cols = line.split()
        if len(cols) > 12 and cols[1].startswith("0100007F:"):
            port = int(cols[1].split(":")[1], 16)
            drops[port] = drops.get(port, 0) + int(cols[-1])
    return drops


# --------------------------------------------------------------------------- SIP


def parse_sip(data: bytes) -> tuple[str, dict[str, str], bytes]:
    """Start line, first value of each header (lower-case, compact forms expanded), body."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    compact = {"i": "call-id", "t": "to", "f": "from", "m": "contact", "l": "content-length"}
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        key = compact.get(key, key)
        headers.setdefault(key, value.strip())
    return lines[0], headers, body


def sdp_media(body: bytes) -> tuple[str, int] | None:
    """(connection address, audio port) of an SDP body, None if it has no audio."""
    host: str | None = None
    port: int | None = None
    for raw in body.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line.startswith("c=") and (host is None or port is not None):
            host = line.split()[-1]
        elif line.startswith("m=audio ") and port is None:
            port = int(line.split()[1])
    if host is None or port is None:
        return None
    return host, port


def tag_of(value: str) -> str | None:
    """The ``tag`` parameter of a From/To value."""
    for part in value.split(";")[1:]:
        name, _, tag = part.strip().partition("=")
        if name.lower() == "tag":
            return tag
    return None


def uri_of(value: str) -> str:
    """The URI inside ``<...>`` of a Contact value (or the value itself)."""
    if "<" in value:
        return value[value.index("<") + 1 : value.index(">")]
    return value.split(";")[0].strip()


@dataclass
class Call:
    """One call: its sockets, SIP dialog and the per-packet records."""

    idx: int
    rtp_sock: socket.socket
    rtcp_sock: socket.socket
    port: int
    packets: int
    call_id: str = field(default_factory=lambda: f"{uuid.uuid4().hex}@{LOCALHOST}")
    from_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    to_tag: str | None = None
    contact: str | None = None
    #: The Record-Route of the 2xx (a proxy in front, e.g. `mediaserver cluster`'s Kamailio).
    route: str | None = None
    remote: tuple[str, int] | None = None
    state: str = "new"  # new, inviting, established, failed, bye, ended
    status: int | None = None
    invite_sent: float = 0.0
    setup_ms: float | None = None
    invite: bytes = b""
    ack: bytes = b""
    bye: bytes = b""
    invite_branch: str = ""
    bye_result: int | None = None
    retransmissions: int = 0
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    seq0: int = field(default_factory=lambda: random.getrandbits(16))
    ts0: int = field(default_factory=lambda: random.getrandbits(32))
    buf: bytearray = field(default_factory=lambda: bytearray(HEADER_BYTES + PAYLOAD_BYTES))
    sent_at: array[float] = field(default_factory=lambda: array("d"))
    recv_at: array[float] = field(default_factory=lambda: array("d"))
    arrivals_kernel: array[float] = field(default_factory=lambda: array("d"))
    arrivals_user: array[float] = field(default_factory=lambda: array("d"))
    duplicates: int = 0
    unmarked: int = 0
    corrupt: int = 0
    foreign: int = 0
    rtcp_packets: int = 0
    sr_packet_count: int | None = None
    rr_cumulative_lost: int | None = None
    rr_jitter: int | None = None
    #: --srtp: our master key + salt, and the contexts once the answer names theirs.
    srtp_key: bytes = field(default_factory=lambda: os.urandom(30))
    srtp_out: Any = None
    srtp_in: Any = None
    srtp_failed: int = 0

    def __post_init__(self) -> None:
        self.sent_at = array("d", bytes(8 * self.packets))
        self.recv_at = array("d", bytes(8 * self.packets))
        self.buf[MARKER_END:] = TAIL


class LoadGen(asyncio.DatagramProtocol):
    """The SIP UAC, the RTP sender ticker and the receivers."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.server = (args.host, args.port)
        self.ruri = f"sip:echo@{args.host}:{args.port}"
        self.calls: list[Call] = []
        self.by_call_id: dict[str, Call] = {}
        self.sip: asyncio.DatagramTransport | None = None
        self.sip_port = 0
        self.packets = round((args.warmup + args.duration) / FRAME)
        self.warm_packets = round(args.warmup / FRAME)
        self.tick = 0
        self.t0 = 0.0
        self.t0_ms = 0
        self.slots: list[list[Call]] = []
        self.lateness: array[float] = array("d")
        self.media_done: asyncio.Future[None] = self.loop.create_future()
        self.marks: dict[str, Any] = {}
        self.unknown_sip = 0
        self.rtp_send_errors = 0
        self.established_event = asyncio.Event()
        self.byes_done = asyncio.Event()
        self.pending_byes = 0

    # -- sockets -----------------------------------------------------------------

    def bind_calls(self) -> None:
        """One RTP/RTCP socket pair per call, from --rtp-range (taken pairs are skipped)."""
        lo, hi = self.args.rtp_range
        port = lo + lo % 2
        n = self.args.calls
        while len(self.calls) < n and port + 1 <= hi:
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
            self.calls.append(Call(len(self.calls), socks[0], socks[1], port, self.packets))
            port += 2
        if len(self.calls) < n:
            raise RuntimeError(f"bound only {len(self.calls)} of {n} RTP pairs in {lo}-{hi}")
        for call in self.calls:
            self.by_call_id[call.call_id] = call
            self.loop.add_reader(call.rtp_sock.fileno(), self.on_rtp, call)
            self.loop.add_reader(call.rtcp_sock.fileno(), self.on_rtcp, call)

    def close(self) -> None:
        """Remove the readers and close every socket."""
        for call in self.calls:
            for sock in (call.rtp_sock, call.rtcp_sock):
                if sock.fileno() >= 0:
                    self.loop.remove_reader(sock.fileno())
                    sock.close()
        if self.sip is not None:
            self.sip.close()

    # -- SIP -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDPTransport is not a subclass of asyncio.DatagramTransport.
        self.sip = cast(asyncio.DatagramTransport, transport)
        self.sip_port = transport.get_extra_info("sockname")[1]

    def _via(self) -> tuple[str, str]:
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        return branch, f"SIP/2.0/UDP {LOCALHOST}:{self.sip_port};branch={branch};rport"

    def _request(
        self, call: Call, method: str, ruri: str, cseq: int, via: str, body: bytes = b""
    ) -> bytes:
        to = f"<{self.ruri}>" + (f";tag={call.to_tag}" if call.to_tag else "")
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: {via}",
            "Max-Forwards: 70",
            f"From: <sip:loadgen@{LOCALHOST}:{self.sip_port}>;tag={call.from_tag}",
            f"To: {to}",
            f"Call-ID: {call.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:loadgen@{LOCALHOST}:{self.sip_port}>",
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
            f"o=loadgen {call.idx + 1} 1 IN IP4 {LOCALHOST}\r\n"
            "s=-\r\n"
            f"c=IN IP4 {LOCALHOST}\r\n"
            "t=0 0\r\n"
            f"m=audio {call.port} {'RTP/SAVP' if self.args.srtp else 'RTP/AVP'} 0 101\r\n"
            "a=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-16\r\n"
            "a=ptime:20\r\n"
            + (
                f"a=crypto:1 {SRTP_SUITE} inline:{base64.b64encode(call.srtp_key).decode()}\r\n"
                if self.args.srtp
                else ""
            )
            + "a=sendrecv\r\n"
        ).encode()

    def _send_sip(self, data: bytes) -> None:
        assert self.sip is not None
        self.sip.sendto(data, self.server)

    def send_invite(self, call: Call) -> None:
        """Send the INVITE and arm its retransmissions (T1, 2*T1, ... while no answer)."""
        call.invite_branch, via = self._via()
        call.invite = self._request(call, "INVITE", self.ruri, 1, via, self._offer(call))
        call.state = "inviting"
        call.invite_sent = time.monotonic()
        self._send_sip(call.invite)
        self.loop.call_later(T1, self._retransmit_invite, call, T1)

    def _retransmit_invite(self, call: Call, interval: float) -> None:
        if call.state != "inviting" or call.status is not None:
            return  # answered (a 1xx stops INVITE retransmissions over UDP too)
        if time.monotonic() - call.invite_sent > self.args.sip_timeout:
            call.state = "failed"
            self._check_established()
            return
        call.retransmissions += 1
        self._send_sip(call.invite)
        self.loop.call_later(interval * 2, self._retransmit_invite, call, interval * 2)

    def send_bye(self, call: Call) -> None:
        """Send BYE and arm its retransmissions (T1 doubling up to 4 s) until a final answer."""
        if call.contact is None:
            return
        _, via = self._via()
        call.bye = self._request(call, "BYE", call.contact, 2, via)
        call.state = "bye"
        self._send_sip(call.bye)
        self.loop.call_later(T1, self._retransmit_bye, call, T1, time.monotonic())

    def _retransmit_bye(self, call: Call, interval: float, started: float) -> None:
        if call.state != "bye":
            return
        if time.monotonic() - started > self.args.sip_timeout:
            call.state = "ended"
            call.bye_result = None
            self._bye_finished()
            return
        call.retransmissions += 1
        self._send_sip(call.bye)
        nxt = min(interval * 2, 4.0)
        self.loop.call_later(nxt, self._retransmit_bye, call, nxt, started)

    def _bye_finished(self) -> None:
        self.pending_byes -= 1
        if self.pending_byes <= 0:
            self.byes_done.set()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            first, headers, body = parse_sip(data)
        except ValueError:
            self.unknown_sip += 1
            return
        call = self.by_call_id.get(headers.get("call-id", ""))
        parts = first.split(" ", 2)
        if call is None or len(parts) < 2 or not parts[0].startswith("SIP/"):
            if call is not None and parts and parts[0] == "BYE":
                # The server hung up (e.g. RTP timeout): answer 200 so it stops resending.
                self._answer_request(data, headers)
                call.state = "ended"
            else:
                self.unknown_sip += 1
            return
        status = int(parts[1])
        method = headers.get("cseq", "").split()[-1:]
        if method == ["INVITE"]:
            self._on_invite_response(call, status, headers, body)
        elif method == ["BYE"] and status >= 200 and call.state == "bye":
            call.state = "ended"
            call.bye_result = status
            self._bye_finished()

    def _answer_request(self, data: bytes, headers: dict[str, str]) -> None:
        head = data.partition(b"\r\n\r\n")[0].decode("utf-8", "replace").split("\r\n")
        keep = [ln for ln in head[1:] if ln.split(":", 1)[0].strip().lower() in ("via", "v")]
        lines = [
            "SIP/2.0 200 OK",
            *keep,
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
            if call.status is None or call.status < 200:
                call.status = status
            return
        if call.ack:  # a retransmitted final response: the ACK was lost
            self._send_sip(call.ack)
            return
        call.status = status
        call.to_tag = tag_of(headers.get("to", ""))
        if 200 <= status < 300:
            media = sdp_media(body)
            call.contact = uri_of(headers.get("contact", "")) or self.ruri
            call.route = headers.get("record-route")
            _, via = self._via()
            call.ack = self._request(call, "ACK", call.contact, 1, via)
            self._send_sip(call.ack)
            if self.args.srtp and not self._start_srtp(call, body):
                media = None
            if media is None:
                call.state = "failed"
            else:
                call.remote = media
                call.state = "established"
                call.setup_ms = (time.monotonic() - call.invite_sent) * 1000
        else:
            # ACK for a non-2xx answer reuses the INVITE's branch (RFC 3261 17.1.1.3).
            via = f"SIP/2.0/UDP {LOCALHOST}:{self.sip_port};branch={call.invite_branch};rport"
            call.ack = self._request(call, "ACK", self.ruri, 1, via)
            self._send_sip(call.ack)
            call.state = "failed"
        self._check_established()

    def _start_srtp(self, call: Call, body: bytes) -> bool:
        """The SRTP contexts of a call from the answer's a=crypto (False: none)."""
        from pylibsrtp import Policy, Session

        pattern = rb"a=crypto:1 " + SRTP_SUITE.encode() + rb" inline:([A-Za-z0-9+/=]+)"
        found = re.search(pattern, body)
        if found is None:
            return False
        profile = Policy.SRTP_PROFILE_AES128_CM_SHA1_80
        ours = Policy(call.srtp_key, Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        key = base64.b64decode(found.group(1))
        theirs = Policy(key, Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
        call.srtp_out, call.srtp_in = Session(ours), Session(theirs)
        return True

    def _check_established(self) -> None:
        if all(c.state in ("established", "failed") for c in self.calls):
            self.established_event.set()

    async def set_up_calls(self) -> None:
        """INVITE every call at --setup-rate calls/s; wait for every answer or timeout."""
        start = self.loop.time()
        rate = self.args.setup_rate
        for i, call in enumerate(self.calls):
            due = start + i / rate
            delay = due - self.loop.time()
            if delay > 0.002:
                await asyncio.sleep(delay)
            self.send_invite(call)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.established_event.wait(), self.args.sip_timeout + 2)
        for call in self.calls:
            if call.state == "inviting":
                call.state = "failed"

    async def hang_up(self) -> None:
        """BYE every established call at --setup-rate; wait for the answers."""
        live = [c for c in self.calls if c.state == "established"]
        if not live:
            return
        # Counted up front: an early 200 must not look like the last one.
        self.pending_byes = len(live)
        start = self.loop.time()
        for i, call in enumerate(live):
            due = start + i / self.args.setup_rate
            delay = due - self.loop.time()
            if delay > 0.002:
                await asyncio.sleep(delay)
            self.send_bye(call)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.byes_done.wait(), self.args.sip_timeout + 2)

    # -- RTP -------------------------------------------------------------------------

    def start_media(self, slots: list[list[Call]]) -> None:
        """Start the 1 ms sender ticker now.

        Deadlines are kept in whole milliseconds of the loop clock: uvloop's
        ``loop.time()`` has 1 ms resolution, and comparing it with float
        deadlines (``t0 + n * 0.001``) makes a due tick look not yet due by a
        rounding error, so ``call_at`` fires again at once, over and over, until
        the next millisecond (a busy spin).
        """
        self.slots = slots
        self.t0 = self.loop.time()
        self.t0_ms = round(self.t0 * 1000)
        self.tick = 0
        self.loop.call_at(self.t0, self._on_tick)

    def _on_tick(self) -> None:
        now_ms = round(self.loop.time() * 1000)
        t0_ms = self.t0_ms
        last_tick = self.packets * SLOTS
        send_time = time.time
        header = RTP_HEADER.pack_into
        while self.tick < last_tick and t0_ms + self.tick <= now_ms:
            tick = self.tick
            self.lateness.append((now_ms - t0_ms - tick) / 1000)
            k = tick // SLOTS
            marker_bit = 0x80 if k == 0 else 0
            for call in self.slots[tick % SLOTS]:
                if call.remote is None:
                    continue
                buf = call.buf
                header(
                    buf,
                    0,
                    0x80,
                    marker_bit,
                    (call.seq0 + k) & 0xFFFF,
                    (call.ts0 + TS_STEP * k) & 0xFFFFFFFF,
                    call.ssrc,
                )
                buf[HEADER_BYTES:MARKER_END] = b"MC%04x%08x" % (call.idx & 0xFFFF, k)
                call.sent_at[k] = send_time()
                try:
                    if call.srtp_out is not None:
                        call.rtp_sock.sendto(call.srtp_out.protect(bytes(buf)), call.remote)
                    else:
                        call.rtp_sock.sendto(buf, call.remote)
                except OSError:
                    call.sent_at[k] = 0.0
                    self.rtp_send_errors += 1
            self.tick += 1
        if self.tick < last_tick:
            self.loop.call_at((t0_ms + self.tick) / 1000, self._on_tick)
        elif not self.media_done.done():
            self.media_done.set_result(None)

    def on_rtp(self, call: Call) -> None:
        """Read what the server echoed on one call (up to READ_BURST datagrams)."""
        sock = call.rtp_sock
        user_now = time.time()
        unpack = TIMESPEC.unpack
        recv_at = call.recv_at
        n = self.packets
        for _ in range(READ_BURST):
            try:
                data, anc, _flags, _addr = sock.recvmsg(2048, ANC_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if anc:
                sec, nsec = unpack(anc[0][2])
                kts = sec + nsec * 1e-9
            else:
                kts = user_now
            if call.srtp_in is not None:
                try:
                    data = call.srtp_in.unprotect(data)
                except Exception:  # pylibsrtp.Error: failed authentication or replayed
                    call.srtp_failed += 1
                    continue
            if len(data) < MARKER_END or data[0] & 0xC0 != 0x80:
                call.foreign += 1
                continue
            call.arrivals_kernel.append(kts)
            call.arrivals_user.append(user_now)
            if data[HEADER_BYTES : HEADER_BYTES + 2] != MARKER:
                call.unmarked += 1  # concealment silence, or not our audio
                continue
            try:
                k = int(data[HEADER_BYTES + 6 : MARKER_END], 16)
            except ValueError:
                call.corrupt += 1
                continue
            if data[MARKER_END:] != TAIL:
                call.corrupt += 1
            if 0 <= k < n:
                if recv_at[k]:
                    call.duplicates += 1
                else:
                    recv_at[k] = kts

    def on_rtcp(self, call: Call) -> None:
        """The server's RTCP: keep its SR packet count and its report on our stream."""
        sock = call.rtcp_sock
        for _ in range(READ_BURST):
            try:
                data = sock.recv(2048)
            except OSError:
                return
            call.rtcp_packets += 1
            if call.srtp_in is not None:
                try:
                    data = call.srtp_in.unprotect_rtcp(data)
                except Exception:  # pylibsrtp.Error
                    call.srtp_failed += 1
                    continue
            if len(data) >= 28 and data[1] == 200:
                call.sr_packet_count = struct.unpack_from("!I", data, 20)[0]
                if data[0] & 0x1F and len(data) >= 52:
                    lost = int.from_bytes(data[33:36], "big", signed=True)
                    call.rr_cumulative_lost = lost
                    call.rr_jitter = struct.unpack_from("!I", data, 40)[0]
            elif len(data) >= 32 and data[1] == 201 and data[0] & 0x1F:
                call.rr_cumulative_lost = int.from_bytes(data[13:16], "big", signed=True)
                call.rr_jitter = struct.unpack_from("!I", data, 20)[0]

    async def wait_last_echoes(self, settle: float = 0.3, limit: float = 3.0) -> None:
        """Wait until no echo has arrived for ``settle`` s (at most ``limit`` s).

        A server running behind still owes the last packets; stopping at once
        would count them as lost.
        """
        deadline = self.loop.time() + limit
        last = -1
        quiet_since = self.loop.time()
        while self.loop.time() < deadline:
            await asyncio.sleep(0.1)
            count = sum(len(c.arrivals_kernel) for c in self.calls)
            if count != last:
                last = count
                quiet_since = self.loop.time()
            elif self.loop.time() - quiet_since >= settle:
                return

    # -- measurement marks ------------------------------------------------------------

    def mark(self, name: str) -> None:
        """Sample the server's CPU/RSS, our CPU and the clocks under ``name``."""
        self.marks[name] = {
            "wall": time.time(),
            "mono": time.monotonic(),
            "server_cpu_s": proc_cpu_seconds(self.args.server_pid),
            "server_rss_mb": proc_rss_mb(self.args.server_pid),
            "loadgen_cpu_s": self_cpu_seconds(),
            "loadgen_rss_mb": proc_rss_mb(os.getpid()),
        }


# --------------------------------------------------------------------------- figures


def percentiles(values: npt.NDArray[np.float64], scale: float = 1000.0) -> dict[str, Any]:
    """p50/p90/p99/max of ``values`` times ``scale`` (seconds -> ms), rounded."""
    if values.size == 0:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99]) * scale
    return {
        "n": int(values.size),
        "p50": round(float(p50), 3),
        "p90": round(float(p90), 3),
        "p99": round(float(p99), 3),
        "max": round(float(values.max() * scale), 3),
    }


def pacing(
    calls: list[Call], which: Callable[[Call], array[float]], start: float, end: float
) -> tuple[npt.NDArray[np.float64], list[float]]:
    """|gap - 20 ms| between consecutive arrivals in [start, end] of each call.

    Returns every deviation pooled, and each call's own p99 (for the worst call).
    """
    pooled: list[npt.NDArray[np.float64]] = []
    per_call: list[float] = []
    for call in calls:
        times = np.frombuffer(which(call), dtype=np.float64)
        times = times[(times >= start) & (times <= end)]
        if times.size < 2:
            continue
        dev = np.abs(np.diff(times) - FRAME)
        pooled.append(dev)
        per_call.append(float(np.percentile(dev, 99)))
    if not pooled:
        return np.zeros(0), per_call
    return np.concatenate(pooled), per_call


def quiet_cores(before: dict[str, Any], after: dict[str, Any]) -> float | None:
    """Server cores used between two marks (None if the server was gone)."""
    if before["server_cpu_s"] is None or after["server_cpu_s"] is None:
        return None
    wall = after["mono"] - before["mono"]
    return round((after["server_cpu_s"] - before["server_cpu_s"]) / wall, 3) if wall else None


def figures(gen: LoadGen, drops: dict[str, int]) -> dict[str, Any]:
    """Everything measured, as one JSON-able mapping."""
    args = gen.args
    calls = gen.calls
    est = [c for c in calls if c.remote is not None]
    w = gen.warm_packets
    sent_total = 0
    recv_total = 0
    sent_window = 0
    recv_window = 0
    delays: list[npt.NDArray[np.float64]] = []
    lost_calls = 0
    for call in est:
        sent = np.frombuffer(call.sent_at, dtype=np.float64)
        recv = np.frombuffer(call.recv_at, dtype=np.float64)
        s_mask = sent > 0
        r_mask = recv > 0
        sent_total += int(s_mask.sum())
        recv_total += int((s_mask & r_mask).sum())
        sw = s_mask[w:]
        both = sw & r_mask[w:]
        sent_window += int(sw.sum())
        recv_window += int(both.sum())
        if int(sw.sum()) != int(both.sum()):
            lost_calls += 1
        delays.append((recv[w:] - sent[w:])[both])
    delay = np.concatenate(delays) if delays else np.zeros(0)
    start = gen.marks["window_start"]["wall"]
    end = gen.marks["window_end"]["wall"]
    # Echoes of the window's packets arrive up to ~60 ms after they were sent.
    k_dev, per_call_k = pacing(est, lambda c: c.arrivals_kernel, start + 0.1, end + 0.1)
    u_dev, per_call_u = pacing(est, lambda c: c.arrivals_user, start + 0.1, end + 0.1)
    # Our own send regularity, same definition, for the input side.
    s_dev, _ = pacing(est, lambda c: c.sent_at, start, end)
    lost = sent_window - recv_window
    ws, we = gen.marks["window_start"], gen.marks["window_end"]
    wall = we["mono"] - ws["mono"]
    server_cpu = (
        we["server_cpu_s"] - ws["server_cpu_s"]
        if we["server_cpu_s"] is not None and ws["server_cpu_s"] is not None
        else None
    )
    lateness = np.frombuffer(gen.lateness, dtype=np.float64)
    setup = [c.setup_ms for c in est if c.setup_ms is not None]
    sr_counts = [c.sr_packet_count for c in est if c.sr_packet_count is not None]
    rr_lost = [c.rr_cumulative_lost for c in est if c.rr_cumulative_lost is not None]
    rr_jitter = [c.rr_jitter for c in est if c.rr_jitter is not None]
    statuses: dict[str, int] = {}
    for call in calls:
        key = str(call.status) if call.status is not None else "none"
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "n_calls": args.calls,
        "calls_established": len(est),
        "calls_failed": len(calls) - len(est),
        "final_status_counts": statuses,
        "setup_ms": percentiles(np.array(setup, dtype=np.float64), scale=1.0),
        "sip_retransmissions": sum(c.retransmissions for c in calls),
        "bye_ok": sum(1 for c in est if c.bye_result == 200),
        "unknown_sip": gen.unknown_sip,
        "window_s": round(wall, 3),
        "warmup_s": args.warmup,
        "packets_sent_total": sent_total,
        "packets_echoed_total": recv_total,
        "packets_sent": sent_window,
        "packets_received": recv_window,
        "packets_lost": lost,
        "loss_pct": round(100.0 * lost / sent_window, 4) if sent_window else None,
        "calls_with_loss": lost_calls,
        "duplicates": sum(c.duplicates for c in est),
        "unmarked_received": sum(c.unmarked for c in est),
        "corrupt_payloads": sum(c.corrupt for c in est),
        "foreign_datagrams": sum(c.foreign for c in est),
        "srtp_failed": sum(c.srtp_failed for c in est),
        "rtp_send_errors": gen.rtp_send_errors,
        "echo_delay_ms": percentiles(delay),
        "pacing_dev_ms": percentiles(k_dev),
        "pacing_dev_ms_worst_call_p99": round(max(per_call_k) * 1000, 3) if per_call_k else None,
        "pacing_gaps_over_2ms": int((k_dev > 0.002).sum()),
        "pacing_dev_ms_user_space": percentiles(u_dev),
        "pacing_dev_ms_user_space_worst_call_p99": (
            round(max(per_call_u) * 1000, 3) if per_call_u else None
        ),
        "loadgen_send_dev_ms": percentiles(s_dev),
        "loadgen_tick_lateness_ms": percentiles(lateness),
        "server_cpu_s": round(server_cpu, 3) if server_cpu is not None else None,
        "server_cpu_cores": round(server_cpu / wall, 3) if server_cpu is not None else None,
        "server_cpu_cores_quiet": quiet_cores(gen.marks["established"], gen.marks["quiet_end"]),
        "server_rss_mb_before_setup": gen.marks["before_setup"]["server_rss_mb"],
        "server_rss_mb_established": gen.marks["established"]["server_rss_mb"],
        "server_rss_mb_loaded": we["server_rss_mb"],
        "loadgen_cpu_cores": round((we["loadgen_cpu_s"] - ws["loadgen_cpu_s"]) / wall, 3),
        "loadgen_rss_mb": we["loadgen_rss_mb"],
        "socket_drops": drops,
        "server_rtcp": {
            "calls_reporting": len(sr_counts),
            "sr_packets_sent_sum": sum(sr_counts),
            "rr_cumulative_lost_sum": sum(rr_lost),
            "rr_jitter_max_ms": round(max(rr_jitter) / 8, 2) if rr_jitter else None,
            "rtcp_packets_received": sum(c.rtcp_packets for c in est),
        },
    }


# --------------------------------------------------------------------------- main


def dump(gen: LoadGen, path: Path) -> None:
    """Save the raw per-call times (seconds, wall clock) for a closer look (numpy .npz)."""
    arrays: dict[str, npt.NDArray[np.float64]] = {}
    for call in gen.calls:
        arrays[f"sent_{call.idx}"] = np.frombuffer(call.sent_at, dtype=np.float64)
        arrays[f"recv_{call.idx}"] = np.frombuffer(call.recv_at, dtype=np.float64)
        arrays[f"arrivals_{call.idx}"] = np.frombuffer(call.arrivals_kernel, dtype=np.float64)
    window = [gen.marks["window_start"]["wall"], gen.marks["window_end"]["wall"]]
    arrays["window"] = np.array(window, dtype=np.float64)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Set up, stream, measure, hang up; return the figures."""
    loop = asyncio.get_running_loop()
    gen = LoadGen(args)
    server_ports = range(args.server_rtp_range[0], args.server_rtp_range[1] + 1)
    try:
        gen.bind_calls()
        await loop.create_datagram_endpoint(lambda: gen, local_addr=(LOCALHOST, 0))
        gen.mark("before_setup")
        t_setup = time.monotonic()
        await gen.set_up_calls()
        established = [c for c in gen.calls if c.state == "established"]
        log(
            f"{len(established)}/{len(gen.calls)} calls established in "
            f"{time.monotonic() - t_setup:.1f} s"
        )
        # Let the last 200s' sessions settle; then one quiet second (sessions open, no
        # RTP yet): the server's CPU in it is its clock and timers with nothing to send.
        await asyncio.sleep(0.5)
        gen.mark("established")
        await asyncio.sleep(args.quiet)
        gen.mark("quiet_end")
        drops_before = udp_drops_by_port()
        slots: list[list[Call]] = [[] for _ in range(SLOTS)]
        for i, call in enumerate(established):
            slots[i % SLOTS].append(call)
        gc.collect()
        gc.freeze()
        gc.disable()
        gen.start_media(slots)
        loop.call_at(gen.t0 + args.warmup, gen.mark, "window_start")
        loop.call_at(gen.t0 + args.warmup + args.duration - FRAME / 2, gen.mark, "window_end")
        await asyncio.wait_for(gen.media_done, args.warmup + args.duration + 30)
        await gen.wait_last_echoes()
        gc.enable()
        if "window_end" not in gen.marks:
            gen.mark("window_end")
        drops_after = udp_drops_by_port()
        drops = {"server": 0, "loadgen": 0}
        for port, value in drops_after.items():
            delta = value - drops_before.get(port, 0)
            if port in server_ports:
                drops["server"] += delta
            elif args.rtp_range[0] <= port <= args.rtp_range[1]:
                drops["loadgen"] += delta
        for call in gen.calls:
            loop.remove_reader(call.rtp_sock.fileno())
        await gen.hang_up()
        if args.dump:
            dump(gen, Path(args.dump))
        return figures(gen, drops)
    finally:
        gen.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (media_capacity.py passes them all)."""

    def port_range(text: str) -> tuple[int, int]:
        lo, hi = (int(p) for p in text.split("-"))
        return lo, hi

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=LOCALHOST)
    parser.add_argument("--port", type=int, required=True, help="the server's SIP UDP port")
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=0.5, help="media seconds not counted")
    parser.add_argument("--setup-rate", type=float, default=400.0, help="INVITEs (BYEs) per s")
    parser.add_argument("--sip-timeout", type=float, default=16.0)
    parser.add_argument("--dump", help="save the raw per-call times here (.npz)")
    parser.add_argument("--srtp", action="store_true", help="SDES-SRTP on every call")
    parser.add_argument(
        "--quiet", type=float, default=1.0, help="seconds with calls up and no RTP (measured)"
    )
    parser.add_argument("--rtp-range", type=port_range, required=True, help="LO-HI")
    parser.add_argument("--server-rtp-range", type=port_range, required=True, help="LO-HI")
    args = parser.parse_args(argv)
    if args.host != LOCALHOST:
        parser.error("127.0.0.1 only")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run once; JSON on stdout."""
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.calls + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the project depends on uvloop
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
