"""`mediaserver call`: a SIP/RTP test dialer that says something and tells what it heard.

    mediaserver call sip:support@127.0.0.1:5060 --say "check order four two"

It places one call over UDP with the server's own SIP user-agent core (INVITE
with PCMU and telephone-event, ACK, BYE; CANCEL when it is not answered in time),
sends continuous 20 ms RTP like a phone (silence when it has nothing to say),
waits for the agent's greeting to end, says its line (espeak-ng in-process, or
a WAV), presses DTMF keys if asked, waits for the answer, hangs up, and prints
what it heard, turn by turn, through the embedded STT, with timings: call
setup, first audio, and the reply delay after its own speech ended.

Every wait is bounded (`--timeout`); it talks only to the address in the URI.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mediaserver.codecs.g711 import ulaw_decode, ulaw_encode
from mediaserver.codecs.params import MediaOffer, codec
from mediaserver.codecs.resample import resample
from mediaserver.media.dtmf import DtmfSender
from mediaserver.media.rtp import RtpError, RtpPacket
from mediaserver.media.wavfile import load_wav, write_wav
from mediaserver.sip.calls import (
    Call,
    CallConfirmed,
    CallEnded,
    Event,
    UaConfig,
)
from mediaserver.sip.transaction import Send, Target
from mediaserver.sip.transport import Transports
from mediaserver.sip.ua import UserAgent
from mediaserver.sip.uri import parse_uri

#: The dialer's User-Agent header.
USER_AGENT = "mediaserver-call"
FRAME = 0.02
SAMPLES = 160
#: Agent audio counts as finished after this much silence from it.
QUIET = 0.8
#: A new talk spurt of the agent starts after a gap this long.
SPURT_GAP = 0.3


@dataclass
class CallReport:
    """What happened on the call (also printed by `print_report`)."""

    uri: str
    answered: bool = False
    status: int | None = None
    setup_ms: float | None = None
    first_audio_ms: float | None = None
    said_at: tuple[float, float] | None = None
    reply_delay_ms: float | None = None
    heard: list[tuple[float, float, str]] = field(default_factory=list)
    ended_by: str = ""
    error: str | None = None
    recording: Path | None = None


class _OnePort:
    """The dialer's media: one RTP port, offered once (`MediaProvider`)."""

    def __init__(self, offer: MediaOffer) -> None:
        self.offer = offer

    def allocate(self) -> MediaOffer | None:
        return self.offer

    def release(self, offer: MediaOffer) -> None:
        pass


class _Dialer:
    """One call: the SIP user-agent core as UAC on one UDP socket, RTP on another.

    The same `UserAgent` the server runs does the signalling (INVITE with our
    offer, retransmissions, ACK, CANCEL, BYE, re-INVITEs and session timers);
    this shell moves its datagrams and keeps its one wake-up armed.
    """

    def __init__(self, uri: str, local_host: str) -> None:
        self.uri = uri
        target = parse_uri(uri)
        if not target.is_sip or not target.host:
            raise ValueError(f"not a sip: URI: {uri}")
        self.local_host = local_host
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((local_host, 0))
        self.rtp.setblocking(False)
        self.rtp_port = self.rtp.getsockname()[1]
        self.transports = Transports(self._on_message)
        self.ua: UserAgent | None = None
        self.leg: Call | None = None
        self.answered = asyncio.Event()
        self.ended = asyncio.Event()
        #: How the call ended (the reason of the core's `CallEnded`), once it has.
        self.end_reason = ""
        self.remote_bye = asyncio.Event()
        self.media_target: tuple[str, int] | None = None
        #: Negotiated payload types: the audio codec's and telephone-event's.
        self.audio_pt = 0
        self.dtmf_pt: int | None = None
        self.received: list[tuple[float, np.ndarray]] = []
        self._wakeup: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        """Bind the SIP socket and build the core."""
        host, port = await self.transports.listen_udp(self.local_host, 0)
        offer = MediaOffer(host, self.rtp_port, [codec("PCMU"), codec("telephone-event")])
        config = UaConfig(local={"udp": (host, port)}, routes=frozenset(), user_agent=USER_AGENT)
        self.ua = UserAgent(config, _OnePort(offer))

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _on_message(self, data: bytes, source: Target) -> None:
        assert self.ua is not None
        self._handle(self.ua.receive(data, source, self._now()))

    def _on_wakeup(self) -> None:
        self._wakeup = None
        assert self.ua is not None
        self._handle(self.ua.tick(self._now()))

    def _handle(self, events: list[Event]) -> None:
        assert self.ua is not None
        for event in events:
            if isinstance(event, Send):
                self.transports.send(event.message.encode(), event.target)
            elif isinstance(event, CallConfirmed) and event.call.media is not None:
                media = event.call.media
                self.media_target = (media.remote_address, media.remote_port)
                self.audio_pt = media.codec.payload_type
                self.dtmf_pt = media.dtmf.payload_type if media.dtmf is not None else None
                self.answered.set()
            elif isinstance(event, CallEnded):
                self.end_reason = event.reason
                if event.by == "remote" and self.answered.is_set():
                    self.remote_bye.set()
                self.ended.set()
        deadline = self.ua.next_deadline()
        if deadline is not None:
            if self._wakeup is not None:
                self._wakeup.cancel()
            self._wakeup = asyncio.get_running_loop().call_at(deadline, self._on_wakeup)

    async def invite(self, deadline: float) -> bool:
        """Dial the URI; True once the call is answered, False if it ended first
        or `deadline` passed (then the INVITE is cancelled)."""
        assert self.ua is not None
        self.leg, events = self.ua.dial(self.uri, "dialer", self._now())
        self._handle(events)
        answered = asyncio.ensure_future(self.answered.wait())
        ended = asyncio.ensure_future(self.ended.wait())
        await asyncio.wait(
            {answered, ended},
            timeout=max(0.0, deadline - self._now()),
            return_when=asyncio.FIRST_COMPLETED,
        )
        answered.cancel()
        ended.cancel()
        if self.answered.is_set():
            return True
        if not self.ended.is_set():
            await self.bye()  # CANCEL while it rings
        return False

    async def bye(self) -> None:
        """Hang up (BYE, or CANCEL while ringing) and wait a moment for the answer."""
        if self.ua is None or self.leg is None or self.ended.is_set():
            return
        self._handle(self.ua.hangup(self.leg, self._now()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ended.wait(), 2.0)

    async def close(self) -> None:
        if self._wakeup is not None:
            self._wakeup.cancel()
        await self.transports.close()

    # -- RTP ------------------------------------------------------------------------------

    def read_rtp(self) -> None:
        now = time.monotonic()
        while True:
            try:
                data = self.rtp.recv(2048)
            except BlockingIOError:
                return
            try:
                packet = RtpPacket.parse(data)
            except RtpError:
                continue
            if packet.payload_type == self.audio_pt:
                self.received.append((now, ulaw_decode(packet.payload)))


class _Sender:
    """Continuous 20 ms PCMU (silence between utterances) and RFC 4733 digits."""

    def __init__(self, dialer: _Dialer) -> None:
        self.dialer = dialer
        self.queue: list[np.ndarray] = []
        self.dtmf: list[tuple[float, bytes, bool, int]] = []
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.ssrc = random.getrandbits(32)
        self.last_speech_sent: float | None = None
        self.first_speech_sent: float | None = None

    def say(self, pcm: np.ndarray) -> None:
        pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % SAMPLES, dtype=np.int16)])
        self.queue.extend(pcm.reshape(-1, SAMPLES))

    def press(self, digits: str) -> None:
        pt = self.dialer.dtmf_pt
        if pt is None:
            return  # the far end did not take telephone-event
        sender = DtmfSender(pt, 8000)
        start = time.monotonic()
        for i, digit in enumerate(digits):
            ts = (self.ts + int((0.3 * i + 0.1) * 8000)) & 0xFFFFFFFF
            for pkt in sender.packets(digit, ts, 120):
                self.dtmf.append((start + 0.3 * i + pkt.send_offset, pkt.payload, pkt.marker, ts))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        silence = np.zeros(SAMPLES, dtype=np.int16)
        while True:
            n += 1
            await asyncio.sleep(max(0.0, start + n * FRAME - loop.time()))
            target = self.dialer.media_target
            if target is None:
                continue
            now = time.monotonic()
            while self.dtmf and self.dtmf[0][0] <= now:
                _, payload, marker, ts = self.dtmf.pop(0)
                self._send(self.dialer.dtmf_pt or 101, payload, marker, ts, target)
            if self.queue:
                frame = self.queue.pop(0)
                if self.first_speech_sent is None:
                    self.first_speech_sent = now
                if not self.queue:
                    self.last_speech_sent = now
            else:
                frame = silence
            self._send(self.dialer.audio_pt, ulaw_encode(frame).tobytes(), False, self.ts, target)
            self.ts = (self.ts + SAMPLES) & 0xFFFFFFFF

    def _send(
        self, pt: int, payload: bytes, marker: bool, ts: int, target: tuple[str, int]
    ) -> None:
        packet = RtpPacket(pt, self.seq, ts, self.ssrc, payload, marker)
        self.seq = (self.seq + 1) & 0xFFFF
        with contextlib.suppress(OSError):
            self.dialer.rtp.sendto(packet.serialise(), target)


async def _agent_quiet(dialer: _Dialer, since: float, quiet: float, limit: float) -> None:
    """Wait until the agent has sent audio after `since` and then paused for `quiet` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and not dialer.remote_bye.is_set():
        heard = [t for t, _ in dialer.received if t >= since]
        if heard and time.monotonic() - heard[-1] >= quiet:
            return
        await asyncio.sleep(0.05)


async def place_call(
    uri: str,
    *,
    say: str | None = None,
    play: Path | None = None,
    dtmf: str | None = None,
    record: Path | None = None,
    timeout: float = 30.0,
    local_host: str = "127.0.0.1",
) -> CallReport:
    """Place the call (see the module docstring); never waits longer than `timeout`."""
    report = CallReport(uri)
    loop = asyncio.get_running_loop()
    # Before dialing: a bad WAV is an error, not a call that goes quiet.
    audio = _utterance(say, play)
    dialer = _Dialer(uri, local_host)
    await dialer.start()
    loop.add_reader(dialer.rtp.fileno(), dialer.read_rtp)
    sender = _Sender(dialer)
    sending = loop.create_task(sender.run())
    deadline = loop.time() + timeout
    started = time.monotonic()
    try:
        if not await dialer.invite(min(deadline, loop.time() + 32)):
            status = dialer.leg.final_status if dialer.leg is not None else None
            report.status = status
            if status:
                report.error = f"call rejected: {dialer.end_reason}"
            else:
                report.error = "no final response to INVITE"
            return report
        report.status = 200
        report.answered = True
        answered = time.monotonic()
        report.setup_ms = (answered - started) * 1000

        def budget() -> float:
            return max(0.0, deadline - loop.time())

        # The agent speaks first: let the greeting finish.
        await _agent_quiet(dialer, answered, QUIET, min(10.0, budget()))
        if dialer.received:
            report.first_audio_ms = (dialer.received[0][0] - answered) * 1000
        if audio is not None and not dialer.remote_bye.is_set():
            sender.say(audio)
            while sender.queue and budget() > 0 and not dialer.remote_bye.is_set():
                await asyncio.sleep(FRAME)
            if sender.first_speech_sent and sender.last_speech_sent:
                report.said_at = (sender.first_speech_sent, sender.last_speech_sent)
        if dtmf and not dialer.remote_bye.is_set():
            sender.press(dtmf)
            await asyncio.sleep(min(0.3 * len(dtmf) + 0.3, budget()))
        mark = time.monotonic()
        await _agent_quiet(dialer, mark, 1.5, budget())
        if report.said_at is not None:
            after = [t for t, _ in dialer.received if t > report.said_at[1]]
            if after:
                report.reply_delay_ms = (after[0] - report.said_at[1]) * 1000
        report.ended_by = "remote" if dialer.remote_bye.is_set() else "us"
        if not dialer.remote_bye.is_set():
            await dialer.bye()
        return report
    finally:
        sending.cancel()
        loop.remove_reader(dialer.rtp.fileno())
        dialer.rtp.close()
        await dialer.close()
        report.heard = _transcribe(dialer.received, started)
        if record is not None and dialer.received:
            write_wav(record, np.concatenate([pcm for _, pcm in dialer.received]), 8000)
            report.recording = record


def _utterance(say: str | None, play: Path | None) -> np.ndarray | None:
    if play is not None:
        try:
            return load_wav(play, 8000)
        except (OSError, EOFError, wave.Error) as exc:
            raise ValueError(f"cannot play {play}: {exc}") from None
    if say:
        from mediaserver.pipeline.tts.espeak import EspeakBackend

        tts = EspeakBackend()
        pcm = np.concatenate([chunk.pcm for chunk in tts.synthesize(say)])
        return resample(pcm, tts.sample_rate, 8000)
    return None


def _transcribe(
    received: list[tuple[float, np.ndarray]], origin: float
) -> list[tuple[float, float, str]]:
    """The agent's talk spurts (by arrival gaps) through pocketsphinx's open vocabulary."""
    if not received:
        return []
    from mediaserver.pipeline.settings import SttSettings
    from mediaserver.pipeline.stt import load_stt
    from mediaserver.pipeline.stt.base import SttHints

    stt = load_stt(SttSettings(pool_size=1))
    spurts: list[list[tuple[float, np.ndarray]]] = [[received[0]]]
    for item in received[1:]:
        if item[0] - spurts[-1][-1][0] > SPURT_GAP:
            spurts.append([])
        spurts[-1].append(item)
    out = []
    try:
        for spurt in spurts:
            pcm = resample(np.concatenate([p for _, p in spurt]), 8000, 16000)
            stream = stt.open(SttHints())
            stream.feed(pcm)
            text = stream.finalise().text
            out.append((spurt[0][0] - origin, spurt[-1][0] - origin, text))
    finally:
        stt.close()
    return out


def print_report(report: CallReport) -> None:
    """The call, as a person would want to read it."""
    print(f"call {report.uri}")
    if not report.answered:
        print(f"  not answered: {report.error}")
        return
    print(f"  answered in {report.setup_ms:.0f} ms")
    if report.first_audio_ms is not None:
        print(f"  first audio {report.first_audio_ms:.0f} ms after the answer")
    if report.heard:
        print("  what it heard (pocketsphinx, open vocabulary: a rough transcript):")
    for start, end, text in report.heard:
        print(f"  [{start:6.2f}-{end:6.2f} s] agent: {text or '(nothing recognised)'}")
    if report.reply_delay_ms is not None:
        print(f"  reply began {report.reply_delay_ms:.0f} ms after we stopped talking")
    if report.recording is not None:
        print(f"  recording: {report.recording}")
    print(f"  hung up by {report.ended_by}")
