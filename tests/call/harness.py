"""A live call actor on real loopback RTP, with a scripted caller on the other end.

The caller is a real RTP endpoint: it sends 20 ms PCMU packets without pause
(silence when it has nothing to say, as phones do) and keeps every packet the
agent sends with its arrival time. The actor gets the real VAD, STT and TTS
through a `PipelineRuntime`; only the SIP side is replaced by `FakeCall`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mediaserver.call.actor import CallActor
from mediaserver.call.runtime import PipelineRuntime
from mediaserver.call.spec import AgentSpec, Reply, Tool
from mediaserver.call.store import CallRecord, CallStore
from mediaserver.codecs.g711 import ulaw_decode, ulaw_encode
from mediaserver.media.clock import MediaClock
from mediaserver.media.rtp import RtpPacket
from mediaserver.media.session import RtpSession, SessionSettings
from mediaserver.pipeline.llm.base import LlmBackend, ToolSpec
from mediaserver.pipeline.settings import PipelineSettings
from mediaserver.sip.sdp import NegotiatedMedia, RtpMap
from tests.peers import read_wav_mono, speech_wav

FRAME = 0.02


@dataclass
class FakeCall:
    """The SIP side of the call, as the actor sees it."""

    call_id: str = "actor-test"
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    media_ready: asyncio.Event = field(default_factory=asyncio.Event)
    digits: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    runtime: Any = None
    agent: Any = None
    actor: Any = None
    hangups: int = 0
    media: Any = None
    transfers: list[str] = field(default_factory=list)
    whispers: list[str | None] = field(default_factory=list)
    #: The call record, in memory (no database).
    record: CallRecord = field(default_factory=lambda: CallStore(None).start_call("actor-test"))
    #: Other routes' agents (for the auth-failure hand-over).
    agents: dict[str, Any] = field(default_factory=dict)
    auth_error: str | None = None
    outbound: bool = False
    amd: str = "off"
    amd_message: str | None = None
    amd_verdict: str | None = None

    def ring(self) -> None:
        pass

    def progress(self) -> bool:
        return False

    def answer(self) -> None:
        pass

    def hangup(self) -> None:
        self.hangups += 1
        self.ended.set()

    def transfer(self, target: str, whisper: str | None = None) -> None:
        self.transfers.append(target)
        self.whispers.append(whisper)

    def agent_for(self, route: str) -> Any:
        return self.agents.get(route)


class Caller:
    """The far end: sends continuous PCMU, records what the agent sends."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.target: tuple[str, int] | None = None
        self._audio: list[np.ndarray] = []
        self.received: list[tuple[float, RtpPacket]] = []
        #: loop time of each speech segment's first and last sent frame.
        self.spoke: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None
        self._seq = 0
        self._ts = 0
        #: (delay seconds, gain) of the agent's own audio coming back in what
        #: the caller sends (a phone with poor echo cancellation); None: none.
        self.echo: tuple[float, float] | None = None
        #: The phone's playout of the agent's stream: (caller time, agent RTP
        #: timestamp) of the first packet heard; decoded audio by timestamp.
        self._playout: tuple[float, int] | None = None
        self._played: dict[int, np.ndarray] = {}
        self._echo_seen = 0

    def start(self, target: tuple[str, int]) -> None:
        self.target = target
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self._read)
        self._task = loop.create_task(self._send_loop())

    def _read(self) -> None:
        now = asyncio.get_running_loop().time()
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return
            with contextlib.suppress(Exception):
                self.received.append((now, RtpPacket.parse(data)))

    async def say(self, pcm: np.ndarray) -> tuple[float, float]:
        """Queue 8 kHz speech and wait until its last frame is sent; (start, end) times."""
        frames = [pcm[i : i + 160] for i in range(0, len(pcm), 160)]
        frames = [np.pad(f, (0, 160 - len(f))) for f in frames]
        self._audio.extend(frames)
        self._marks = [len(self._audio) - len(frames), len(self._audio)]
        self._first_sent: float | None = None
        while self._audio:
            await asyncio.sleep(FRAME)
        start = self._first_sent or 0.0
        end = asyncio.get_running_loop().time()
        self.spoke.append((start, end))
        return start, end

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        n = 0
        silence = np.zeros(160, dtype=np.int16)
        while True:
            n += 1
            await asyncio.sleep(max(0.0, t0 + n * FRAME - loop.time()))
            if self._audio:
                frame = self._audio.pop(0)
                if getattr(self, "_first_sent", 0.0) is None:
                    self._first_sent = loop.time()
            else:
                frame = silence
            if self.echo is not None:
                frame = self._with_echo(frame, t0 + n * FRAME, *self.echo)
            pkt = RtpPacket(
                payload_type=0,
                sequence=self._seq,
                timestamp=self._ts,
                ssrc=0x1234,
                payload=ulaw_encode(frame).tobytes(),
            )
            self._seq = (self._seq + 1) & 0xFFFF
            self._ts = (self._ts + 160) & 0xFFFFFFFF
            assert self.target is not None
            with contextlib.suppress(OSError):
                self.sock.sendto(pkt.serialise(), self.target)

    def _with_echo(self, frame: np.ndarray, at: float, delay: float, gain: float) -> np.ndarray:
        """`frame` (sent at caller time `at`) plus the agent's audio that the
        phone played `delay` seconds before, at `gain`.

        Like a phone, the agent's packets are played by their RTP timestamps
        from a fixed playout point (the first packet's arrival), so the echo
        path is steady however packets bunch up on the way; missing ones play
        as silence.
        """
        for t, p in self.received[self._echo_seen :]:
            if self._playout is None:
                self._playout = (t, p.timestamp)
            self._played[p.timestamp] = ulaw_decode(p.payload)
        self._echo_seen = len(self.received)
        if self._playout is None:
            return frame
        first_t, first_ts = self._playout
        end = first_ts + round((at - delay - first_t) * 8000)  # timestamp played `delay` ago
        start = end - 160
        echo = np.zeros(160, dtype=np.float32)
        # Our 160 samples span at most two of the agent's 20 ms packets.
        for ts in {start - (start - first_ts) % 160, end - 1 - (end - 1 - first_ts) % 160}:
            pcm = self._played.get(ts & 0xFFFFFFFF)
            if pcm is None:
                continue
            a, b = max(start, ts), min(end, ts + len(pcm))
            if a < b:
                echo[a - start : b - start] = pcm[a - ts : b - ts]
        return np.clip(frame.astype(np.float32) + echo * gain, -32768, 32767).astype(np.int16)

    def agent_audio(self, since: float = 0.0, until: float = float("inf")) -> np.ndarray:
        """What the agent sent in a time window, decoded, packets in arrival order."""
        parts = [ulaw_decode(p.payload) for t, p in self.received if since <= t < until]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def arrivals(self) -> list[float]:
        return [t for t, _ in self.received]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


def speech(text: str, folder: Path, pad_seconds: float = 0.0) -> np.ndarray:
    """`text` spoken by espeak-ng at 8 kHz (via the test peers' helper)."""
    pcm, rate = read_wav_mono(speech_wav(text, folder, pad_seconds=pad_seconds))
    assert rate == 8000
    return pcm


def weather_agent(settings: PipelineSettings, greeting: str | None = None) -> AgentSpec:
    """A small agent with one tool, as the tests and the demo use it."""

    def get_weather(args: dict[str, Any], raw: dict[str, Any]) -> str:
        return f"It is sunny in {args['city']} today."

    tool = Tool(
        ToolSpec(
            "get_weather",
            "Tell the weather forecast for a city.",
            {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "enum": ["paris", "london", "berlin"]},
                },
                "required": ["city"],
            },
        ),
        get_weather,
    )
    return AgentSpec(
        name="weather",
        greeting=greeting or "Hello, this is the weather line.",
        tools=[tool],
        hints=["what is the weather in", "tell me a story", "stop", "thank you", "hello"],
        replies=[
            Reply(
                ("story",),
                "Once upon a time there was a small robot who lived in a lighthouse by "
                "the sea, and every night it counted the ships that passed, one by one, "
                "until the morning came and the fishermen went home to sleep.",
            )
        ],
        settings=settings,
    )


@dataclass
class Live:
    """A running actor, its caller and its RTP session."""

    actor: CallActor
    caller: Caller
    session: RtpSession
    call: FakeCall


@contextlib.asynccontextmanager
async def live_actor(
    agent: AgentSpec,
    runtime: PipelineRuntime,
    llm: LlmBackend | None = None,
    auth_error: str | None = None,
    echo_cancel: bool = True,
) -> AsyncIterator[Live]:
    """Start an actor on a real RTP session talking to a `Caller` (`auth_error`: the
    caller's SIP digest failed; `echo_cancel`: the session's setting)."""
    loop = asyncio.get_running_loop()
    caller = Caller()
    clock = MediaClock(loop)
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.setblocking(False)
    media = NegotiatedMedia(
        codec=RtpMap(0, "PCMU", 8000),
        dtmf=None,
        remote_address="127.0.0.1",
        remote_port=caller.port,
        direction="sendrecv",
        remote_direction="sendrecv",
        on_hold=False,
        ptime=20,
        rtcp_mux=True,
    )
    session = RtpSession(
        rtp, None, media, clock, SessionSettings(echo_cancel=echo_cancel), loop.time()
    )
    call = FakeCall(runtime=runtime, agent=agent)
    actor = CallActor(call, session, agent, runtime, llm=llm, auth_error=auth_error)
    caller.start(rtp.getsockname())
    task = loop.create_task(actor.run())
    try:
        yield Live(actor, caller, session, call)
    finally:
        if not task.done():
            call.ended.set()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
        await caller.stop()
        session.close()
        rtp.close()


@contextlib.asynccontextmanager
async def agent_call(
    agent: AgentSpec,
    llm: LlmBackend | None = None,
    auth_error: str | None = None,
    echo_cancel: bool = True,
) -> AsyncIterator[Live]:
    """`live_actor` with a `PipelineRuntime` made from the agent's settings (closed after)."""
    runtime = PipelineRuntime(agent.settings)
    try:
        async with live_actor(agent, runtime, llm, auth_error, echo_cancel) as live:
            yield live
    finally:
        await runtime.aclose()


async def wait_for(predicate: Any, timeout: float, step: float = 0.02) -> bool:
    """Poll `predicate()` until true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())
