"""One call's RTP session: sockets, latching, jitter buffer, DTMF, paced sending.

Receive path (socket readers, on the event loop): parse -> latch/ignore
strangers -> statistics -> jitter buffer (codec payload) or DTMF receiver
(telephone-event) -> counters for anything else.

Every 20 ms the shared `MediaClock` calls `on_tick` in this session's slot:

1. frames whose playout is due leave the jitter buffer, are decoded (gaps
   become silence) and handed to `on_audio` in RTP-timestamp order, with their
   media time;
2. one outbound frame (or DTMF packet) is encoded and sent; its tag is
   reported through `on_sent` only once it is on the wire, which is what lets
   the AI pipeline keep exactly the text the caller heard;
3. RTCP reports and the inactivity check.

`flush()` drops queued outbound audio; the next tick sends nothing of it.
Sequence numbers run on across talk spurts; timestamps follow the clock, so a
pause shows as a timestamp jump with the marker bit set on the first packet of
the next spurt (RFC 3551 section 4.1).
"""

from __future__ import annotations

import random
import socket
import struct
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

from mediaserver.codecs import Codec, CodecError, create
from mediaserver.codecs.g711 import alaw_encode, ulaw_encode
from mediaserver.codecs.params import NegotiatedMedia
from mediaserver.media.clock import FRAME, MediaClock
from mediaserver.media.dtmf import DtmfPacket, DtmfReceiver, DtmfSender
from mediaserver.media.echo import EchoCanceller
from mediaserver.media.jitter import JitterBuffer
from mediaserver.media.recording import StereoRecorder
from mediaserver.media.rtcp import (
    Bye,
    ReceiverReport,
    RtcpError,
    SenderReport,
    SourceDescription,
    ntp_time,
    parse_compound,
    report_block,
    serialise_compound,
)
from mediaserver.media.rtp import RtpError, RtpPacket, RtpReceiver, is_rtcp
from mediaserver.media.srtp import SrtpContext

log = structlog.get_logger("mediaserver.media.session")

#: Seconds between our RTCP reports (RFC 3550 suggests 5 s minimum).
RTCP_INTERVAL = 5.0
#: Seconds between inactivity checks (the timeout is coarse; checking every
#: tick costs more than it buys).
INACTIVITY_CHECK = 0.25
#: Most RTCP datagrams read per socket wake-up, so one flooded call cannot starve others.
READ_BURST = 64
CNAME = f"mediaserver@{socket.gethostname()}"

AudioHandler = Callable[[np.ndarray, float, bool], None]
_EMPTY = np.zeros(0, dtype=np.int16)
_RTP_HEADER = struct.Struct("!BBHII")
#: RFC 3389 comfort noise: accepted and treated as silence (no decoder yet).
COMFORT_NOISE_PT = 13
#: Decode errors this far apart are separate incidents (each one reported once).
MEDIA_ERROR_QUIET = 1.0
DigitHandler = Callable[[str, int], None]


@dataclass
class SessionSettings:
    """One session's settings (`MediaSettings.for_call` makes them from the config)."""

    jitter_window: float = 0.040
    inactivity_timeout: float = 30.0
    #: Latch to packets from any address; by default only the SDP address's host
    #: may start the stream (a stranger's packets are ignored until then).
    latch_any_address: bool = False
    #: Subtract the echo of what we send from what we receive.
    echo_cancel: bool = True
    record_path: Path | None = None
    #: Where recordings started mid-call go (`record_call`), and the call's name
    #: in their file names.
    recordings_dir: Path | None = None
    record_name: str = "call"


@dataclass
class SessionStats:
    """Counters of one session (exported on hangup and by the admin API later)."""

    packets_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    malformed: int = 0
    malformed_rtcp: int = 0
    strangers: int = 0
    unknown_pt: int = 0
    decode_errors: int = 0
    latched: int = 0
    dtmf_in: int = 0
    dtmf_out: int = 0
    rtcp_in: int = 0
    rtcp_out: int = 0
    frames_out: int = 0
    flushed_frames: int = 0
    #: SRTP/SRTCP packets dropped: failed authentication or replayed.
    srtp_rejected: int = 0


@dataclass(slots=True)
class _Outbound:
    pcm: np.ndarray
    tag: object | None


class RtpSession:
    """The media of one call. Created after offer/answer; closed on hangup."""

    def __init__(
        self,
        rtp_sock: socket.socket,
        rtcp_sock: socket.socket | None,
        media: NegotiatedMedia,
        clock: MediaClock,
        settings: SessionSettings,
        now: float,
    ) -> None:
        self.rtp_sock = rtp_sock
        self.rtcp_sock = rtcp_sock
        self.clock = clock
        self.settings = settings
        self.stats = SessionStats()
        self.media = media
        #: SRTP of this call (None: plain RTP).
        self.srtp = SrtpContext(media.srtp) if media.srtp is not None else None
        self.codec: Codec = _codec_for(media)
        self.decoder: _Decoder = _codec_for(media)
        self.payload_type = media.codec.payload_type
        self.dtmf_pt = media.dtmf.payload_type if media.dtmf else None
        self.sample_rate = self.codec.sample_rate
        self.frame_samples = self.codec.frame_samples
        self._ts_step = round(self.codec.clock_rate * FRAME)
        # Where we send; replaced by the caller's real source once latched.
        self.remote = (media.remote_address, media.remote_port)
        self.remote_rtcp = (media.remote_address, media.remote_port + 1)
        self.latched = False
        self.receiver = RtpReceiver(self.codec.clock_rate)
        self.jitter = JitterBuffer(
            clock_rate=self.codec.clock_rate,
            frame_samples=self._ts_step,
            window=settings.jitter_window,
        )
        self.dtmf_in = DtmfReceiver(self.codec.clock_rate)
        self.dtmf_out = (
            DtmfSender(self.dtmf_pt, self.codec.clock_rate) if self.dtmf_pt is not None else None
        )
        self._dtmf_queue: deque[tuple[float, DtmfPacket]] = deque()
        self._out: deque[_Outbound] = deque()
        self._carry = _EMPTY
        self.ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._talkspurt = True
        self._last_rtp_in = now
        self._next_rtcp = now + RTCP_INTERVAL * (0.5 + random.random())
        self._last_sr: tuple[int, float] | None = None
        self._timed_out = False
        self._batch = _batch_for(clock)
        self._batch_key = _batch_key(self.codec)
        self._next_inactivity_check = now + INACTIVITY_CHECK
        self._loop = clock.loop
        self.closed = False
        self.on_audio: AudioHandler | None = None
        self.on_dtmf: DigitHandler | None = None
        self.on_sent: Callable[[object], None] | None = None
        self.on_timeout: Callable[[], None] | None = None
        #: Told (once per burst) when received audio cannot be decoded; the
        #: frames are concealed as silence gaps and the call goes on.
        self.on_media_error: Callable[[str], None] | None = None
        self._last_media_error = -MEDIA_ERROR_QUIET
        self._background: np.ndarray | None = None
        self._background_pos = 0
        # Audio released between ticks (eager jitter buffer), for the recorder.
        self._delivered: list[np.ndarray] = []
        #: Removes our own voice coming back from the caller's phone, while an
        #: agent talks on this session (`cancel_echo`); not for relays and apps
        #: whose outbound audio is the caller's own (an echo app, a bridge).
        self.echo: EchoCanceller | None = None
        self._echo_held: deque[tuple[float, bool]] = deque()
        self._recorder: StereoRecorder | None = None
        #: Recordings finished so far (their final paths).
        self.recordings: list[str] = []
        if settings.record_path is not None:
            self.start_recording(settings.record_path)
        loop = clock.loop
        loop.add_reader(rtp_sock.fileno(), self._read_rtp)
        if rtcp_sock is not None:
            loop.add_reader(rtcp_sock.fileno(), self._read_rtcp)
        clock.add(self)

    # -- application side -------------------------------------------------------

    def play(self, pcm: np.ndarray, tag: object | None = None, *, pad: bool = False) -> None:
        """Queue PCM (int16 at `sample_rate`) for sending, in 20 ms frames.

        Consecutive calls form one continuous stream: a remainder shorter than a
        frame waits for the next call (an echo of 30 ms packets must not grow
        silence in between). `pad=True` ends the stream: the remainder is sent,
        padded with silence. Each frame carries the tag of its last samples.
        """
        n = self.frame_samples
        pcm = np.asarray(pcm, dtype=np.int16)
        if len(pcm) == n and not len(self._carry):
            self._out.append(_Outbound(pcm, tag))  # one whole frame: the echo's case
            return
        if len(self._carry):
            pcm = np.concatenate([self._carry, pcm])
        full = len(pcm) - len(pcm) % n
        for start in range(0, full, n):
            self._out.append(_Outbound(pcm[start : start + n], tag))
        self._carry = pcm[full:]
        if pad and len(self._carry):
            padding = np.zeros(n - len(self._carry), dtype=np.int16)
            self._out.append(_Outbound(np.concatenate([self._carry, padding]), tag))
            self._carry = _EMPTY

    def play_background(self, pcm: np.ndarray | None) -> None:
        """Mix `pcm` (int16 at `sample_rate`, played once) under whatever is sent,
        and send it alone while nothing else is queued; None stops it."""
        self._background = None if pcm is None or not len(pcm) else np.asarray(pcm, np.int16)
        self._background_pos = 0

    def _mix_background(self, frame: np.ndarray) -> np.ndarray:
        assert self._background is not None
        start = self._background_pos
        chunk = self._background[start : start + len(frame)]
        self._background_pos = start + len(frame)
        if self._background_pos >= len(self._background):
            self._background = None  # played once
        mixed = frame.astype(np.int32)
        mixed[: len(chunk)] += chunk
        return np.clip(mixed, -32768, 32767).astype(np.int16)

    def rephase(self) -> None:
        """Before a talk spurt that starts after silence: send its first frame at the
        next clock tick instead of waiting for this session's slot.

        Between talk spurts nothing is sent, so moving the slot is invisible to the
        far end (the marker bit starts the spurt, timestamps run on); it saves up to
        20 ms of the agent's answer latency. A no-op while audio is queued.
        """
        if not self._out and self._talkspurt:
            self.clock.advance(self)

    def flush(self) -> int:
        """Drop every queued outbound frame (barge-in); returns how many."""
        dropped = len(self._out)
        self._out.clear()
        self._carry = _EMPTY
        self.stats.flushed_frames += dropped
        self._talkspurt = True
        return dropped

    @property
    def queued(self) -> int:
        """Outbound frames waiting."""
        return len(self._out)

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> bool:
        """Send a digit as RFC 4733 events; False when telephone-event was not negotiated."""
        if self.dtmf_out is None:
            return False
        now = self._loop.time()
        # Digits queue up one after the other, 60 ms apart.
        start = now if not self._dtmf_queue else self._dtmf_queue[-1][0] + 0.06
        ts = (self._ts + round((start - now) / FRAME) * self._ts_step) & 0xFFFFFFFF
        for pkt in self.dtmf_out.packets(digit, ts, duration_ms):
            self._dtmf_queue.append((start + pkt.send_offset, pkt))
        self.stats.dtmf_out += 1
        return True

    def update(self, media: NegotiatedMedia) -> None:
        """Apply a re-negotiation (hold/unhold, new address or codec)."""
        if (media.remote_address, media.remote_port) != (
            self.media.remote_address,
            self.media.remote_port,
        ):
            self.remote = (media.remote_address, media.remote_port)
            self.remote_rtcp = (media.remote_address, media.remote_port + 1)
            self.latched = False
        if media.codec != self.media.codec:
            self.codec = _codec_for(media)
            self.decoder = _codec_for(media)
            self._batch_key = _batch_key(self.codec)
        self.payload_type = media.codec.payload_type
        self.dtmf_pt = media.dtmf.payload_type if media.dtmf else None
        if self.srtp is not None:
            self.srtp = self.srtp.rekeyed(media.srtp)
        elif media.srtp is not None:
            self.srtp = SrtpContext(media.srtp)
        self.media = media
        # A held caller legitimately goes quiet: restart the inactivity clock.
        self._last_rtp_in = self._loop.time()

    def close(self) -> None:
        """Stop sending and receiving, send RTCP BYE, release nothing else."""
        if self.closed:
            return
        self.closed = True
        self.clock.remove(self)
        loop = self.clock.loop
        loop.remove_reader(self.rtp_sock.fileno())
        if self.rtcp_sock is not None:
            loop.remove_reader(self.rtcp_sock.fileno())
        self._send_rtcp(loop.time(), bye=True)
        self.stop_recording()

    def start_recording(self, path: Path) -> bool:
        """Record both directions to a stereo WAV at `path` (caller left, us
        right) from now; False when a recording is already going."""
        if self._recorder is not None or self.closed:
            return False
        self._recorder = StereoRecorder(path, self.sample_rate)
        self._delivered = []
        return True

    def stop_recording(self) -> Path | None:
        """End the recording (the file gets its final name); its path, or None."""
        recorder, self._recorder = self._recorder, None
        if recorder is None:
            return None
        recorder.close()
        self.recordings.append(str(recorder.path))
        return recorder.path

    def pause_recording(self, paused: bool) -> bool:
        """Pause (silence is kept instead) or resume; False when not recording."""
        if self._recorder is None:
            return False
        self._recorder.paused = paused
        return True

    def summary(self) -> dict[str, Any]:
        """Counters for the log line at hangup."""
        jb = self.jitter.stats()
        return {
            "rtp_in": self.stats.packets_in,
            "rtp_out": self.stats.packets_out,
            "lost": jb.get("lost", 0),
            "late": jb.get("late", 0),
            "duplicates": jb.get("duplicates", 0),
            "reordered": jb.get("reordered", 0),
            "jitter_ms": round(self.receiver.jitter / self.codec.clock_rate * 1000, 2),
            "malformed": self.stats.malformed + self.stats.malformed_rtcp,
            "strangers": self.stats.strangers,
            "unknown_pt": self.stats.unknown_pt,
            **({"recordings": list(self.recordings)} if self.recordings else {}),
            **(
                {"srtp": self.srtp.keys.suite, "srtp_rejected": self.stats.srtp_rejected}
                if self.srtp is not None
                else {}
            ),
        }

    # -- receive path -------------------------------------------------------------

    def _accept_source(self, addr: tuple[str, int]) -> bool:
        """Symmetric RTP latching: the first packet from the caller fixes the peer."""
        if self.latched:
            return addr == self.remote
        if self.settings.latch_any_address or addr[0] == self.media.remote_address:
            if addr != self.remote:
                log.debug("rtp_latched", was=self.remote, now=addr)
            self.remote = addr
            self.remote_rtcp = (addr[0], addr[1] + 1)
            self.latched = True
            self.stats.latched += 1
            return True
        return False

    def _read_rtp(self) -> None:
        # One datagram per wake-up. Readiness is level-triggered, so a datagram
        # still queued wakes us again on the next loop iteration; reading on to
        # EAGAIN would cost a failed syscall and an exception for nearly every
        # packet (an RTP socket rarely holds more than one), and one per wake-up
        # is also the fairest share between calls when one is flooded.
        try:
            data, addr = self.rtp_sock.recvfrom(2048)
        except OSError:
            # A spurious wake-up, or an ICMP error from our sends: nothing to read.
            return
        self._on_datagram(data, addr, self._loop.time())

    def fail_decodes(self, count: int) -> None:
        """Fault injection: the next `count` audio frames fail to decode (a wrapped
        decoder, so the packet path pays nothing when no fault is set)."""
        self.decoder = _FailingDecoder(self.decoder, count)

    def drop_inbound(self) -> None:
        """Fault injection: read nothing from now on (a network partition); the
        kernel drops what piles up. Costs the packet path nothing."""
        self._loop.remove_reader(self.rtp_sock.fileno())
        if self.rtcp_sock is not None:
            self._loop.remove_reader(self.rtcp_sock.fileno())

    def _on_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        if self.media.rtcp_mux and is_rtcp(data):
            self._on_rtcp(data, now)
            return
        if self.srtp is not None:
            # Authenticated and replay-checked before anything reads it.
            plain = self.srtp.unprotect(data)
            if plain is None:
                self.stats.srtp_rejected += 1
                return
            data = plain
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self.stats.malformed += 1
            return
        pt = packet.payload_type
        if pt != self.payload_type and pt != self.dtmf_pt and pt != COMFORT_NOISE_PT:
            self.stats.unknown_pt += 1
            return
        if not self._accept_source(addr):
            self.stats.strangers += 1
            return
        self.stats.packets_in += 1
        self._last_rtp_in = now
        self.receiver.update(packet, now)
        if pt != self.payload_type:
            # Events and comfort noise use the stream's sequence numbers: tell the
            # jitter buffer, or it would conceal them as lost audio.
            self.jitter.skip(packet)
            if pt == self.dtmf_pt:
                for event in self.dtmf_in.feed(packet, now):
                    self._digit(event.digit, event.duration_ms)
            return
        self.jitter.push(packet, now)
        if self.jitter.eager:
            # In-order audio goes to the listener now, not at the next tick.
            self._deliver(now)

    def _read_rtcp(self) -> None:
        assert self.rtcp_sock is not None
        now = self._loop.time()
        for _ in range(READ_BURST):
            try:
                data, _addr = self.rtcp_sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._on_rtcp(data, now)

    def _on_rtcp(self, data: bytes, now: float) -> None:
        if self.srtp is not None:
            plain = self.srtp.unprotect_rtcp(data)
            if plain is None:
                self.stats.srtp_rejected += 1
                return
            data = plain
        try:
            packets = parse_compound(data)
        except RtcpError:
            self.stats.malformed_rtcp += 1
            return
        self.stats.rtcp_in += 1
        for pkt in packets:
            if isinstance(pkt, SenderReport):
                self._last_sr = (pkt.ntp_timestamp, now)

    def _digit(self, digit: str, duration_ms: int) -> None:
        self.stats.dtmf_in += 1
        if self.on_dtmf is not None:
            self.on_dtmf(digit, duration_ms)

    # -- the tick ---------------------------------------------------------------------

    def on_tick(self, now: float, late: float) -> None:
        """Called by the media clock every 20 ms (see the module docstring)."""
        self._deliver(now)
        sent = self._send_next(now)
        if self.echo is not None:
            self.echo.far(sent, self.frame_samples)
        if self._recorder is not None:
            caller = self._delivered
            self._recorder.add(
                0, np.concatenate(caller) if len(caller) > 1 else (caller[0] if caller else None)
            )
            self._recorder.add(1, sent)
            self._recorder.tick(self.frame_samples)
            self._delivered = []
        for event in self.dtmf_in.flush(now):
            self._digit(event.digit, event.duration_ms)
        if now >= self._next_rtcp:
            self._send_rtcp(now)
            self._next_rtcp = now + RTCP_INTERVAL * (0.5 + random.random())
        if now >= self._next_inactivity_check:
            self._next_inactivity_check = now + INACTIVITY_CHECK
            self._check_inactivity(now)

    def _deliver(self, now: float) -> None:
        """Pop due frames, decode, hand them to `on_audio` (and keep them for the
        recorder until the tick; an eager jitter buffer also releases on arrival)."""
        for frame in self.jitter.pop(now):
            gap = frame.gap
            if frame.payload is None:
                # Concealment by silence; the frame is marked so VAD/STT know.
                samples = max(1, round(frame.duration * self.sample_rate / self.codec.clock_rate))
                pcm = np.zeros(samples, dtype=np.int16)
            else:
                try:
                    pcm = self.decoder.decode(frame.payload)
                except CodecError as exc:
                    # Concealed like a lost packet, so the listener's timeline has no hole.
                    self.stats.decode_errors += 1
                    self._media_error(now, f"undecodable {self.codec.name} frame: {exc}")
                    pcm, gap = np.zeros(self.frame_samples, dtype=np.int16), True
            if self._recorder is not None:
                self._delivered.append(pcm)
            if self.echo is None:
                self._hand_over(pcm, frame.media_time, gap)
                continue
            # Concealed frames too: the canceller counts samples to align. It
            # may hold frames back a little (see media/echo.py), in order.
            self._echo_held.append((frame.media_time, gap))
            for cleaned in self.echo.near(pcm):
                media_time, held_gap = self._echo_held.popleft()
                self._hand_over(cleaned, media_time, held_gap)

    def cancel_echo(self, on: bool) -> None:
        """Start (with a fresh canceller) or stop subtracting our echo; frames
        the canceller held back go on unchanged when it stops."""
        echo, self.echo = self.echo, EchoCanceller(self.sample_rate) if on else None
        if echo is not None:
            for pcm, _ in echo.held_frames():
                media_time, gap = self._echo_held.popleft()
                self._hand_over(pcm, media_time, gap)
        self._echo_held.clear()

    def _hand_over(self, pcm: np.ndarray, media_time: float, gap: bool) -> None:
        if self.on_audio is not None:
            self.on_audio(pcm, media_time, gap)

    def _media_error(self, now: float, error: str) -> None:
        if now - self._last_media_error >= MEDIA_ERROR_QUIET and self.on_media_error is not None:
            self.on_media_error(error)
        self._last_media_error = now

    def _send_next(self, now: float) -> np.ndarray | None:
        """Send this tick's packet (DTMF first, then audio); return the audio sent."""
        ts = self._ts
        self._ts = (self._ts + self._ts_step) & 0xFFFFFFFF
        if self.media.direction in ("recvonly", "inactive"):
            return None  # on hold: we must not send
        if self._dtmf_queue and self._dtmf_queue[0][0] <= now + 0.001:
            while self._dtmf_queue and self._dtmf_queue[0][0] <= now + 0.001:
                _, pkt = self._dtmf_queue.popleft()
                assert self.dtmf_pt is not None
                self._send(self.dtmf_pt, pkt.timestamp, pkt.marker, pkt.payload)
            self._talkspurt = True
            return None
        if not self._out:
            if self._background is None:
                self._talkspurt = True
                return None
            item = _Outbound(np.zeros(self.frame_samples, dtype=np.int16), None)
        else:
            item = self._out.popleft()
        if self._background is not None:
            item = _Outbound(self._mix_background(item.pcm), item.tag)
        marker, self._talkspurt = self._talkspurt, False
        if self._batch_key is not None:
            # G.711: coded together with the rest of this clock slot, then sent.
            self._batch.add(self._batch_key, self, item.pcm, ts, marker, item.tag)
        else:
            self._emit(ts, marker, self.codec.encode(item.pcm), item.tag)
        return item.pcm

    def _emit(self, ts: int, marker: bool, payload: bytes, tag: object | None) -> None:
        """Send one coded audio frame and report its tag as heard."""
        if self.closed:
            return
        self._send(self.payload_type, ts, marker, payload)
        self.stats.frames_out += 1
        if tag is not None and self.on_sent is not None:
            self.on_sent(tag)

    def _send(self, pt: int, ts: int, marker: bool, payload: bytes) -> None:
        # The plain 12-byte header, packed directly: this runs for every call
        # every 20 ms, and our own fields need none of RtpPacket's checks.
        header = _RTP_HEADER.pack(0x80, pt | (0x80 if marker else 0), self._seq, ts, self.ssrc)
        self._seq = (self._seq + 1) & 0xFFFF
        packet = header + payload
        if self.srtp is not None:
            protected = self.srtp.protect(packet)
            if protected is None:
                return
            packet = protected
        try:
            self.rtp_sock.sendto(packet, self.remote)
        except OSError:
            return  # e.g. ICMP unreachable pending on the socket; RTP is best effort
        self.stats.packets_out += 1
        self.stats.bytes_out += len(payload)

    def _send_rtcp(self, now: float, bye: bool = False) -> None:
        blocks = []
        if self.receiver.received and self.receiver.ssrc is not None:
            last_ntp, last_at = self._last_sr if self._last_sr else (None, None)
            blocks.append(report_block(self.receiver, self.receiver.ssrc, last_ntp, last_at, now))
        report: SenderReport | ReceiverReport
        if self.stats.packets_out:
            report = SenderReport(
                ssrc=self.ssrc,
                ntp_timestamp=ntp_time(time.time()),  # RTCP carries wall-clock time
                rtp_timestamp=self._ts,
                packet_count=self.stats.packets_out & 0xFFFFFFFF,
                octet_count=self.stats.bytes_out & 0xFFFFFFFF,
                reports=blocks,
            )
        else:
            report = ReceiverReport(ssrc=self.ssrc, reports=blocks)
        packets: list[Any] = [report, SourceDescription(chunks=[(self.ssrc, [(1, CNAME)])])]
        if bye:
            packets.append(Bye(ssrcs=[self.ssrc], reason=None))
        target = self.remote if self.media.rtcp_mux else self.remote_rtcp
        sock = self.rtp_sock if self.media.rtcp_mux or self.rtcp_sock is None else self.rtcp_sock
        data = serialise_compound(packets)
        if self.srtp is not None:
            protected = self.srtp.protect_rtcp(data)
            if protected is None:
                return
            data = protected
        try:
            sock.sendto(data, target)
        except OSError:
            return
        self.stats.rtcp_out += 1

    def _check_inactivity(self, now: float) -> None:
        timeout = self.settings.inactivity_timeout
        if timeout <= 0 or self._timed_out:
            return
        # A caller who put us on hold with inactive/recvonly stops sending: fine.
        if self.media.remote_direction in ("inactive", "recvonly"):
            self._last_rtp_in = now
            return
        if now - self._last_rtp_in > timeout:
            self._timed_out = True
            if self.on_timeout is not None:
                self.on_timeout()


def _codec_for(media: NegotiatedMedia) -> Codec:
    """A codec instance (one per direction) for the negotiated rtpmap."""
    rtpmap = media.codec
    return create(
        rtpmap.encoding,
        clock_rate=rtpmap.clock_rate,
        channels=rtpmap.channels,
        fmtp=rtpmap.fmtp,
        ptime_ms=media.ptime,
    )


#: Stateless codecs whose frames a clock slot codes in one numpy call: one call
#: for N frames costs about what one frame costs alone (DESIGN: batch across calls).
_BATCH_ENCODERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "PCMU": ulaw_encode,
    "PCMA": alaw_encode,
}


def _batch_key(codec: Codec) -> tuple[str, int] | None:
    name = codec.name.upper()
    return (name, codec.frame_samples) if name in _BATCH_ENCODERS else None


class _EncodeBatch:
    """Outbound frames of one clock slot, coded together once the slot has run."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, int], list[tuple[RtpSession, np.ndarray, int, bool, object]]]
        self.items = {}

    def add(
        self,
        key: tuple[str, int],
        session: RtpSession,
        pcm: np.ndarray,
        ts: int,
        marker: bool,
        tag: object | None,
    ) -> None:
        self.items.setdefault(key, []).append((session, pcm, ts, marker, tag))

    def flush(self) -> None:
        for (name, _), items in self.items.items():
            codes = _BATCH_ENCODERS[name](np.stack([item[1] for item in items]))
            for (session, _pcm, ts, marker, tag), row in zip(items, codes):
                session._emit(ts, marker, row.tobytes(), tag)
        self.items.clear()


_batches: weakref.WeakKeyDictionary[MediaClock, _EncodeBatch] = weakref.WeakKeyDictionary()


def _batch_for(clock: MediaClock) -> _EncodeBatch:
    """The clock's encode batch, flushed after every slot it serves."""
    batch = _batches.get(clock)
    if batch is None:
        batch = _batches[clock] = _EncodeBatch()
        clock.after_slot.append(batch.flush)
    return batch


class _Decoder(Protocol):
    def decode(self, payload: bytes) -> np.ndarray: ...


class _FailingDecoder:
    """Fault injection: the first `count` decodes fail, then `inner` decodes."""

    def __init__(self, inner: _Decoder, count: int) -> None:
        self.inner = inner
        self.count = count

    def decode(self, payload: bytes) -> np.ndarray:
        if self.count > 0:
            self.count -= 1
            raise CodecError("injected fault")
        return self.inner.decode(payload)
