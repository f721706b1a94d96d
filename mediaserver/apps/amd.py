"""Answering-machine detection on a call we placed, before the agent says a word.

`detect` listens to the callee's first seconds (VAD for the cadence, a tone
detector for beeps and fax tones, the recogniser for a short greeting's words)
and returns the `AmdClassifier`'s verdict; the agent app then hands the call to
the agent (a person, or silence: someone waiting for us to speak), leaves the
agent's message after the greeting's beep, or hangs up.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from mediaserver.apps.speech import speak
from mediaserver.call.control import CallControl
from mediaserver.call.runtime import PipelineRuntime
from mediaserver.call.spec import AgentSpec
from mediaserver.codecs.resample import Resampler
from mediaserver.media.session import RtpSession
from mediaserver.media.tones import Tone, ToneDetector
from mediaserver.pipeline.amd import AmdClassifier, AmdResult, AmdSettings
from mediaserver.pipeline.stt.base import SttError, SttHints

__all__ = [
    "AmdOutcome",
    "Listening",
    "Quiet",
    "detect",
    "leave_message",
    "screen",
    "transcribe",
]

STT_RATE = 16000
#: Waiting for the greeting's end before leaving a message: the silence that
#: ends a greeting without a beep, and the longest greeting we wait out.
GREETING_END_SILENCE = 1.5
MAX_GREETING = 30.0
#: How long a short greeting's verdict waits for its words (s): past it, the
#: cadence alone decides (a busy recogniser must not keep a person waiting).
WORDS_BUDGET = 0.3


@dataclass(frozen=True)
class AmdOutcome:
    """The verdict and how long the detection listened (s)."""

    result: AmdResult
    listened: float
    #: A beep was heard (the message may start at once).
    beep: bool = False


class Listening:
    """The callee's audio while nobody talks to them: VAD, tones, kept PCM."""

    def __init__(self, media: RtpSession, runtime: PipelineRuntime) -> None:
        self.media = media
        self.rate = media.sample_rate
        self.queue: asyncio.Queue[tuple[str, float, object]] = asyncio.Queue()
        self.tones = ToneDetector(self.rate)
        self.resampler = Resampler(self.rate, STT_RATE)
        self.audio: list[np.ndarray] = []  # 16 kHz, from the answer
        self.origin: float | None = None  # media time of the first audio
        self.vad = runtime.vad.open(lambda t, p: self.queue.put_nowait(("vad", t, p)))
        media.on_audio = self._on_audio

    def _on_audio(self, pcm: np.ndarray, media_time: float, gap: bool) -> None:
        if self.origin is None:
            self.origin = media_time
        start = media_time - self.origin
        for tone in self.tones.feed(pcm):
            self.queue.put_nowait(("tone", start, tone))
        wide = self.resampler.process(pcm)
        if len(wide):
            self.audio.append(wide)
            self.vad.push(wide, media_time)

    async def next(self, timeout: float) -> tuple[str, float, object]:
        """The next ("vad" | "tone", media time, value), or ("", 0, None) after
        `timeout` seconds without one."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return "", 0.0, None

    def since_answer(self, media_time: float) -> float:
        return media_time - (media_time if self.origin is None else self.origin)

    def close(self) -> None:
        self.media.on_audio = None
        self.vad.close()


class Quiet:
    """Has the line been quiet for `seconds`? Fed VAD probabilities; with
    `after_speech`, the quiet counts only once someone has spoken."""

    def __init__(self, seconds: float, after_speech: bool = False) -> None:
        self.seconds = seconds
        self.after_speech = after_speech
        self.spoke = False
        self.since: float | None = None

    def vad(self, probability: float, now: float) -> None:
        if probability >= 0.5:
            self.spoke = True
            self.since = None
        elif self.since is None and (self.spoke or not self.after_speech):
            self.since = now

    def over(self, now: float) -> bool:
        return self.since is not None and now - self.since >= self.seconds


async def screen(
    call: CallControl, media: RtpSession, runtime: PipelineRuntime, agent: AgentSpec
) -> bool:
    """Run the call's AMD (`call.amd`); True when the agent should talk now.

    human and silence: the agent talks. machine: with
    ``detect_and_leave_message`` the agent's message (`call.amd_message`, else
    its greeting) goes after the beep, then we hang up; with ``detect`` we hang
    up. fax: we hang up. The verdict, its time and reason go into the record
    (kind ``amd``) and onto the handle for the call's outcome.
    """
    outcome = await detect(media, runtime, runtime.hints(agent))
    result = outcome.result
    call.amd_verdict = result.verdict
    data = {
        "verdict": result.verdict,
        "decision_s": result.at,
        "reason": result.reason,
        "speech_s": result.speech,
        "mode": call.amd,
    }
    if result.verdict in ("human", "silence"):
        if call.record is not None:
            call.record.add("amd", data)
        return True
    if result.verdict == "machine" and call.amd == "detect_and_leave_message":
        message = call.amd_message or agent.greeting or ""
        data["message_left"] = bool(message) and await leave_message(
            media, runtime, agent, message, outcome.beep
        )
    if call.record is not None:
        call.record.add("amd", data)
    if not call.ended.is_set():
        call.hangup()
    return False


async def detect(
    media: RtpSession,
    runtime: PipelineRuntime,
    hints: SttHints,
    settings: AmdSettings | None = None,
) -> AmdOutcome:
    """Listen until the classifier decides (bounded by its `max_time`); `hints`:
    the agent's (its recogniser streams are made at start-up)."""
    classifier = AmdClassifier(settings)
    ears = Listening(media, runtime)
    started = time.monotonic()
    beep = False
    asking: asyncio.Task[str] | None = None
    asked_at: float | None = None
    waited_since: float | None = None
    try:
        while classifier.result is None:
            kind, t, value = await ears.next(0.1)
            if not kind:
                classifier.tick(time.monotonic() - started)
            if kind == "vad":
                classifier.vad(ears.since_answer(t), float(value))  # type: ignore[arg-type]
            elif kind == "tone":
                assert isinstance(value, Tone)
                beep = classifier.tone(t, value) is not None and classifier.decided
            paused = classifier.paused_at
            if paused is not None and paused != asked_at:
                # Transcribe at each pause, so the words are ready when the
                # silence after them has lasted long enough to decide.
                if asking is not None:
                    asking.cancel()
                asked_at = paused
                asking = asyncio.ensure_future(transcribe(runtime, hints, list(ears.audio)))
            if classifier.awaiting_words:
                now = time.monotonic() - started
                waited_since = waited_since if waited_since is not None else now
                if asking is not None and asking.done() and not asking.cancelled():
                    classifier.words(now, asking.result())
                elif now - waited_since >= WORDS_BUDGET:
                    classifier.words(now, "")  # the recogniser is late: cadence decides
    finally:
        ears.close()
        if asking is not None and not asking.done():
            asking.cancel()
    result = classifier.result
    assert result is not None
    return AmdOutcome(result, round(time.monotonic() - started, 3), beep)


async def transcribe(runtime: PipelineRuntime, hints: SttHints, audio: list[np.ndarray]) -> str:
    """The words in `audio` (16 kHz), or "" when the recogniser fails.

    AMD asks with the agent's hints, not steered towards the machine phrases: a
    recogniser biased to "leave a message" hears it in a "hello" (bench/amd.py);
    the phrases are matched after.
    """
    if not audio:
        return ""

    def run() -> str:
        stream = runtime.stt.open(hints)
        try:
            stream.feed(np.concatenate(audio))
            return stream.finalise().text
        finally:
            stream.close()

    try:
        return await asyncio.get_running_loop().run_in_executor(runtime.stt_executor, run)
    except SttError:
        return ""


async def leave_message(
    media: RtpSession,
    runtime: PipelineRuntime,
    agent: AgentSpec,
    message: str,
    beep_heard: bool,
) -> bool:
    """Wait for the greeting's beep to end (or the greeting to end, without one),
    say `message`; True once it was sent."""
    await _greeting_end(media, runtime, beep_heard)
    return await speak(media, runtime, agent.settings.tts, message)


async def _greeting_end(media: RtpSession, runtime: PipelineRuntime, beeping: bool) -> None:
    """Until the beep is over (`beeping`: it was heard already), or
    `GREETING_END_SILENCE` of silence after speech (a machine without a beep), at
    most `MAX_GREETING` seconds."""
    ears = Listening(media, runtime)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_GREETING
    quiet = Quiet(GREETING_END_SILENCE)
    quiet.since = loop.time()
    try:
        while loop.time() < deadline:
            kind, _, value = await ears.next(0.1)
            beeping = beeping or kind == "tone"
            if beeping and ears.audio and not ears.tones.tonal:
                return  # the beep is over: the machine records now
            if kind == "vad":
                quiet.vad(float(value), loop.time())  # type: ignore[arg-type]
            if quiet.over(loop.time()):
                return
    finally:
        ears.close()
