"""The call actor: one asyncio task per call, one inbox, the only owner of call state.

Ordering and cancellation rules, enforced here:

- Every producer (media callbacks, the VAD batcher, child tasks for STT, LLM,
  TTS and tools, timers) only posts events to `inbox`; `run` handles them one
  at a time in arrival order. Nothing else mutates the conversation.
- Child work is tagged with the turn or reply it belongs to. Cancelling a
  reply (barge-in, hangup) cancels its tasks in-process and bumps nothing
  else; anything it posted before dying is recognised as stale by its id.
- What the caller heard is what left on the wire: every outbound frame carries
  a `FrameTag`; the media plane reports tags as frames are sent, and the
  assistant message kept after an interruption is cut at the last sent frame.
- Turn-taking runs on media time (RTP timestamps from the jitter buffer), not
  arrival time: the caller's turn ends after `end_of_speech_timeout` of VAD
  silence in the audio itself, together with the STT final.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import json
import time
import wave
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from mediaserver.call import events as ev
from mediaserver.call.errors import RECOVERY, ErrorKind, llm_error_kind
from mediaserver.call.faults import InjectedFault
from mediaserver.call.lifecycle import CallState, Lifecycle
from mediaserver.call.records import AgentReply, BargeIn, Turn, TurnMetrics
from mediaserver.call.runtime import PipelineRuntime
from mediaserver.call.spec import AgentSpec, Tool, tool_output
from mediaserver.call.voicing import FrameTag, Voicing
from mediaserver.codecs.resample import Resampler
from mediaserver.media.session import RtpSession
from mediaserver.media.wavfile import load_wav
from mediaserver.pipeline.llm.base import (
    Done,
    LlmBackend,
    LlmError,
    LlmOptions,
    LlmTimeout,
    Message,
    Token,
    ToolCall,
    ToolCalls,
)
from mediaserver.pipeline.settings import LlmSettings
from mediaserver.pipeline.stt.base import STT_RATE, SttError, SttStream
from mediaserver.pipeline.stt.normalise import normalise_transcript
from mediaserver.pipeline.tts.base import TtsChunk, TtsError
from mediaserver.pipeline.vad.detector import SpeechDetector, SpeechStarted, SpeechStopped
from mediaserver.pipeline.vad.onset import OnsetDetector

if TYPE_CHECKING:
    from mediaserver.apps.base import CallControl
    from mediaserver.call.store import CallRecord

log = structlog.get_logger("mediaserver.call.actor")

#: Audio kept from before VAD fires, so the first syllable reaches STT.
PREROLL = 0.3
#: Speech shorter than this that STT cannot read is ignored (a cough, a click).
MIN_UNDERSTOOD_SPEECH = 0.3
#: Said when a tool's hold ends.
HOLD_ENDED = "Thank you for holding."
#: Seconds to wait for the outcome of a REFER.
TRANSFER_TIMEOUT = 30.0


class _SttMark(enum.Enum):
    """What the STT feeder passes on besides audio (None ends the turn)."""

    PAUSE = "pause"  # VAD heard the caller stop: SttStream.pause
    RESUME = "resume"  # ...and start again in the same turn: SttStream.resume
    FLUSH = "flush"  # internal: feed the audio gathered so far


_PAUSE, _RESUME, _FLUSH = _SttMark.PAUSE, _SttMark.RESUME, _SttMark.FLUSH
_SttInput = np.ndarray | _SttMark | None


class CallActor:
    """Runs one call's conversation (see the module docstring for the rules)."""

    def __init__(
        self,
        call: CallControl,
        media: RtpSession,
        agent: AgentSpec,
        runtime: PipelineRuntime,
        *,
        llm: LlmBackend | None = None,
        auth_error: str | None = None,
    ) -> None:
        self.call = call
        self.media = media
        self.agent = agent
        self.runtime = runtime
        # A copy: tool actions may change it for this call only.
        self.settings = agent.settings.model_copy(deep=True)
        self.llm = llm or runtime.llm_for(agent)
        self.recovery = self.settings.recovery
        self.faults = runtime.faults
        #: The call record (SQLite timeline) when the server keeps one.
        self.record: CallRecord | None = call.record
        #: Set when the auth-failure flow hands the call to another agent (route user).
        self.handoff: str | None = None
        #: The caller's SIP digest failed: only the auth-failure flow runs, and
        #: nothing the caller says reaches the model.
        self._auth_error = auth_error
        self.log = log.bind(call_id=call.call_id, agent=agent.name)
        self.inbox: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.life = Lifecycle()
        self.messages: list[Message] = [Message("system", agent.system_prompt)]
        #: Append-only timeline of what happened (the call record builds on it).
        self.timeline: list[dict[str, Any]] = []
        self.turns: list[TurnMetrics] = []
        self.barge_ins: list[BargeIn] = []
        self.digits: list[str] = []
        self.end_reason = ""
        #: Call data tools can read and change (SignalWire's global_data).
        self.global_data: dict[str, Any] = dict(agent.global_data)
        self.metadata: dict[str, Any] = {}
        self.disabled_tools: set[str] = set()
        self._stopped = False
        self._transfer_dest: str | None = None
        self._holding = False
        self._loop = asyncio.get_running_loop()
        self._in_rs = Resampler(media.sample_rate, STT_RATE)
        self._preroll: deque[tuple[float, np.ndarray]] = deque()
        self._detector = SpeechDetector(self.settings.vad)
        self._onset = OnsetDetector(media.sample_rate)
        self._confident_end: float | None = None
        self._vad = runtime.vad.open(lambda t, p: self.post(ev.VadProb(t, p)))
        self._stt: SttStream = runtime.stt.open(runtime.hints(agent))
        self._stt_queue: asyncio.Queue[_SttInput] | None = None
        self._stt_task: asyncio.Task[None] | None = None
        self._turn: Turn | None = None
        self._turn_ids = 0
        self._reply: AgentReply | None = None
        self._reply_ids = 0
        self._interrupted: tuple[AgentReply, BargeIn] | None = None
        self._pending_user: str = ""
        #: The LLM backend (0: primary, then the fallbacks) that answered last.
        self._llm_from = 0
        #: What the caller said in each turn, until the turn's record is written.
        self._caller_text: dict[int, str] = {}
        self._timers: dict[str, int] = {}
        self._handles: dict[str, asyncio.TimerHandle] = {}
        self._media_offset: float | None = None  # wall - media time
        self._on_hold = False
        self._attention_given = False
        self._children: set[asyncio.Task[Any]] = set()

    # -- plumbing -------------------------------------------------------------------

    def post(self, event: ev.Event) -> None:
        """Queue an event for the actor (any producer, on the event loop thread)."""
        self.inbox.put_nowait(event)

    def _note(self, what: str, **fields: Any) -> None:
        self.timeline.append({"t": time.time(), "event": what, **fields})
        if self.record is not None:
            self.record.add(what, fields)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro)
        self._children.add(task)
        task.add_done_callback(self._child_done)
        return task

    def _child_done(self, task: asyncio.Task[Any]) -> None:
        self._children.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug in child work: make it visible instead of a silent stall.
            exc = task.exception()
            self.log.error("child_task_failed", task=task.get_name(), error=repr(exc))
            self._note(
                "error", kind=ErrorKind.INTERNAL, stage="child", error=repr(exc), recovery="logged"
            )

    def _arm(self, name: str, delay: float) -> None:
        gen = self._timers.get(name, 0) + 1
        self._timers[name] = gen
        old = self._handles.pop(name, None)
        if old is not None:
            old.cancel()
        self._handles[name] = self._loop.call_later(delay, self.post, ev.Timer(name, gen))

    def _disarm(self, name: str) -> None:
        self._timers[name] = self._timers.get(name, 0) + 1
        old = self._handles.pop(name, None)
        if old is not None:
            old.cancel()

    def _go(self, state: CallState, reason: str) -> None:
        before = self.life.state
        if self.life.go(state, reason):
            if before != state:
                self._note("state", state=state.value, reason=reason)
        else:
            self.log.warning(
                "illegal_transition", source=before.value, target=state.value, reason=reason
            )
            self._note("illegal_transition", source=before.value, target=state.value)

    # -- the loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Answered call in, ended call out."""
        media = self.media
        media.on_audio = self._media_audio
        media.on_sent = lambda tag: self.post(ev.FrameSent(tag))
        media.jitter.eager = self.settings.eager_jitter
        watchers = [self._spawn(self._watch_hangup()), self._spawn(self._watch_digits())]
        self._note("answered", agent=self.agent.name)
        try:
            self._start()
            while self.life.state != CallState.ENDED:
                event = await self.inbox.get()
                try:
                    self._handle(event)
                except Exception as exc:
                    # One bad event must not take the call down; record it and go on.
                    self.log.exception("actor_event_failed", event=type(event).__name__)
                    self._note(
                        "error",
                        kind=ErrorKind.INTERNAL,
                        stage="actor",
                        error=repr(exc),
                        recovery="logged",
                    )
        finally:
            # Only our own hooks: a bridge may have taken the session over already.
            if media.on_audio == self._media_audio:
                media.on_audio = None
                media.on_sent = None
            for task in watchers:
                task.cancel()
            self._shutdown()
        await self._post_call()

    async def _post_call(self) -> None:
        """The agent's post-call summary: ask the model, hand the answer over."""
        agent = self.agent
        if not agent.post_prompt or agent.on_summary is None:
            return
        raw_data: dict[str, Any] = {
            "call_id": self.call.call_id,
            "agent": agent.name,
            "end_reason": self.end_reason,
            "messages": [m.to_openai() for m in self.messages],
            "timeline": list(self.timeline),
            "global_data": dict(self.global_data),
            "metadata": dict(self.metadata),
            "digits": "".join(self.digits),
        }
        text = ""
        try:
            async with asyncio.timeout(self.settings.llm.first_token_timeout + 20):
                ask = [*self.messages, Message("user", agent.post_prompt)]
                async for item in self.llm.stream(ask, []):
                    if isinstance(item, Token):
                        text += item.text
        except (LlmError, TimeoutError) as exc:
            self.log.warning("summary_failed", error=str(exc))
            raw_data["summary_error"] = str(exc)
        summary: Any = text.strip()
        with contextlib.suppress(ValueError):
            summary = json.loads(summary)
        try:
            result = agent.on_summary(summary, raw_data)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.log.exception("on_summary_failed")
        self._note("summary", summary=summary)

    async def _watch_hangup(self) -> None:
        await self.call.ended.wait()
        self.post(ev.CallHangup("remote"))

    async def _watch_digits(self) -> None:
        while True:
            digit = await self.call.digits.get()
            self.post(ev.DtmfIn(digit, 0))

    def _start(self) -> None:
        if self._auth_error is not None:
            self._go(CallState.LISTENING, "auth failure flow")
            self._on_error(
                ev.StageError(ErrorKind.AUTH_FAILURE, stage="sip", error=self._auth_error)
            )
            return
        turn = self.settings.turn
        if turn.agent_speaks_first:
            self._go(CallState.GREETING, "agent speaks first")
            if self.agent.greeting:
                self._say(self.agent.greeting)
            else:
                self._start_llm_reply(None)
        else:
            self._go(CallState.LISTENING, "caller speaks first")
            self._arm_attention()

    def _shutdown(self) -> None:
        for name in list(self._handles):
            self._disarm(name)
        if self._reply is not None:
            self._cancel_reply(self._reply)
        for task in list(self._children):
            task.cancel()
        self._vad.close()
        if self._stt_task is None:
            self._stt.close()
        else:
            # The STT task may be inside the executor with the stream; close after it.
            self._stt_task.add_done_callback(lambda _: self._stt.close())
            self._stt_task.cancel()

    def _handle(self, event: ev.Event) -> None:
        match event:
            case ev.AudioIn():
                self._on_audio(event)
            case ev.VadProb():
                self._on_vad(event)
            case ev.SpeechOnset():
                self._on_onset(event)
            case ev.FrameSent():
                self._on_frame_sent(event.tag)
            case ev.SttPartial():
                self._on_partial(event)
            case ev.SttFinal():
                self._on_final(event)
            case ev.LlmToken():
                self._on_token(event)
            case ev.LlmToolCalls():
                self._on_tool_calls(event)
            case ev.LlmDone():
                self._on_llm_done(event)
            case ev.TtsAudio():
                self._on_tts_audio(event)
            case ev.TtsDone():
                self._on_tts_done(event)
            case ev.ToolResult():
                self._on_tool_result(event)
            case ev.Timer():
                if self._timers.get(event.name) == event.generation:
                    self._handles.pop(event.name, None)
                    self._on_timer(event.name)
            case ev.StageError():
                self._on_error(event)
            case ev.TransferResult():
                self._on_transfer(event)
            case ev.DtmfIn():
                self.digits.append(event.digit)
                self._note("dtmf", digit=event.digit)
                self.log.info("dtmf", digit=event.digit)
            case ev.HoldChanged():
                self._on_hold = event.on_hold
                self._note("hold", on_hold=event.on_hold)
                if event.on_hold:
                    self._disarm("attention")
                else:
                    self._arm_attention()
            case ev.CallHangup():
                self.end_reason = self.end_reason or event.reason
                self._note("hangup", reason=self.end_reason)
                self._go(CallState.ENDED, event.reason)

    # -- caller audio, VAD, turns ----------------------------------------------------

    def _on_audio(self, event: ev.AudioIn) -> None:
        pcm = self._in_rs.process(event.pcm)
        if not len(pcm):
            return
        now = time.monotonic()
        duration = len(event.pcm) / self.media.sample_rate
        self._media_offset = now - (event.media_time + duration)
        self._vad.push(pcm, event.media_time)
        self._preroll.append((event.media_time, pcm))
        while self._preroll and self._preroll[0][0] < event.media_time - PREROLL:
            self._preroll.popleft()
        if self._stt_queue is not None and self._turn is not None and not self._turn.finalising:
            self._stt_queue.put_nowait(pcm)

    def _wall(self, media_time: float) -> float:
        return media_time + (self._media_offset or 0.0)

    def _on_vad(self, event: ev.VadProb) -> None:
        if event.prob >= self.settings.vad.threshold:
            self._confident_end = event.media_time
        change = self._detector.update(event.media_time, event.prob)
        if isinstance(change, SpeechStarted):
            self._on_speech_start(change.media_time)
        elif isinstance(change, SpeechStopped):
            self._on_speech_stop(change.media_time)
        turn = self._turn
        if turn is None:
            return
        if self._detector.speaking:
            turn.speech_s = event.media_time - turn.started_media
            if turn.barge_in and self._reply is not None and self._barge_in_ready(turn):
                self._barge_in(turn)
            return
        last = self._speech_end(turn)
        if turn.finalising:
            return
        eos = self.settings.turn.end_of_speech_timeout
        if event.media_time - last >= eos:
            self._end_turn(turn, last)
        else:
            # Decide on time, not at the next 32 ms chunk: media time maps to the
            # wall clock by when its audio arrived (re-armed with every chunk).
            self._arm("eos", max(0.0, self._wall(last) + eos - time.monotonic()))

    def _speech_end(self, turn: Turn) -> float:
        """Media time the caller's speech ended: the last confident speech chunk.

        The hysteresis keeps "speaking" through the weaker chunks of a fading
        word (down to neg_threshold); counting the silence from the last chunk
        at or above the threshold ends the turn one chunk sooner, as measured
        on espeak-ng speech.
        """
        last = self._confident_end
        if last is None or last < turn.started_media:
            return self._detector.last_speech_end or turn.started_media
        return last

    def _on_speech_start(self, onset: float) -> None:
        self._disarm("eos")
        self._disarm("false_resume")
        self._disarm("attention")
        self._attention_given = False
        self._note("speech_start", media_time=round(onset, 3))
        if self._holding or self._auth_error is not None:
            # On hold (a tool's hold action) the caller waits; a caller who
            # failed authentication is not listened to at all.
            return
        turn = self._turn
        if turn is not None and not turn.finalising:
            # The caller goes on after a short pause: same turn, and the
            # recogniser's guess made at the pause no longer covers it.
            if self._stt_queue is not None:
                self._stt_queue.put_nowait(_RESUME)
            return
        speaking = self._reply is not None and self.life.state in (
            CallState.SPEAKING,
            CallState.GREETING,
        )
        if self.life.state == CallState.THINKING and self._reply is not None:
            # The caller adds to what they said: the reply in the works is stale.
            last_user = self.messages[-1] if self.messages[-1].role == "user" else None
            self._cancel_reply(self._reply)
            self._reply = None
            if last_user is not None:
                self.messages.pop()
                self._pending_user = (last_user.content or "") + " "
            self._go(CallState.LISTENING, "caller continued")
        self._begin_turn(onset, barge_in=speaking and self.settings.barge_in.enabled)
        if self._turn is not None and self._turn.barge_in and self._barge_in_ready(self._turn):
            self._barge_in(self._turn)

    def _on_speech_stop(self, end: float) -> None:
        self._note("speech_stop", media_time=round(end, 3))
        turn = self._turn
        if turn is None:
            reply = self._reply
            if reply is not None and reply.paused_at is not None:
                # Speech that made no turn (it began before this reply, e.g. the
                # recovery phrase of a failed turn, or the caller is not listened
                # to) paused the reply; it is over, so the reply plays on.
                self._disarm("confirm")
                self._resume_paused()
            return
        if self._stt_queue is not None and not turn.finalising:
            # Let a window-decoding recogniser start on the turn while the
            # end-of-speech timeout runs (speculative decoding).
            self._stt_queue.put_nowait(_PAUSE)
        window = self.settings.barge_in.false_resume_window
        if self._interrupted is not None and window > 0 and turn.words == 0:
            self._arm("false_resume", window)

    def _begin_turn(self, onset: float, barge_in: bool) -> None:
        self._turn_ids += 1
        turn = self._turn = Turn(self._turn_ids, onset, barge_in=barge_in)
        turn.metrics = TurnMetrics(turn.id)
        queue: asyncio.Queue[_SttInput] = asyncio.Queue()
        self._stt_queue = queue
        for t, pcm in self._preroll:
            if t >= onset - PREROLL:
                queue.put_nowait(pcm)
        self._stt_task = self._spawn(self._run_stt(turn.id, queue))

    def _barge_in_ready(self, turn: Turn) -> bool:
        cfg = self.settings.barge_in
        return turn.speech_s >= cfg.min_speech and turn.words >= cfg.min_words

    def _end_turn(self, turn: Turn, speech_end_media: float) -> None:
        self._disarm("eos")
        turn.finalising = True
        if turn.metrics is not None:
            turn.metrics.speech_end = self._wall(speech_end_media)
            turn.metrics.eos_decided = time.monotonic()
        if self._stt_queue is not None:
            self._stt_queue.put_nowait(None)

    async def _run_stt(self, turn: int, queue: asyncio.Queue[_SttInput]) -> None:
        """Feed the turn's audio to STT (batched per wake-up), pass VAD pauses on
        in order, then finalise."""
        loop, executor, stream = self._loop, self.runtime.stt_executor, self._stt
        try:
            ended = False
            while not ended:
                pieces = [await queue.get()]
                while not queue.empty():
                    pieces.append(queue.get_nowait())
                audio: list[np.ndarray] = []
                # Audio runs are fed in one call; markers keep their place.
                for piece in [*pieces, _FLUSH]:
                    if isinstance(piece, np.ndarray):
                        audio.append(piece)
                        continue
                    if audio:
                        partial = await loop.run_in_executor(
                            executor, stream.feed, np.concatenate(audio)
                        )
                        audio = []
                        if partial is not None:
                            self.post(ev.SttPartial(turn, partial.text))
                    if piece is None:
                        ended = True
                        break
                    if piece is _PAUSE:
                        partial = await loop.run_in_executor(executor, stream.pause)
                        if partial is not None:
                            self.post(ev.SttPartial(turn, partial.text))
                    elif piece is _RESUME:
                        stream.resume()
            started = time.monotonic()
            rule = self.faults.check("stt")
            timeout = self.settings.stt.timeout
            try:
                async with asyncio.timeout(timeout):
                    await self.faults.inject(rule, SttError("injected fault"))
                    final = await loop.run_in_executor(executor, stream.finalise)
            except TimeoutError:
                raise SttError(f"no transcript within {timeout:g} s") from None
            self.post(ev.SttFinal(turn, final.text, time.monotonic() - started))
        except SttError as exc:
            self.post(ev.StageError(ErrorKind.STT_FAILURE, "stt", str(exc), turn=turn))

    def _on_partial(self, event: ev.SttPartial) -> None:
        turn = self._turn
        if turn is None or turn.id != event.turn:
            return
        turn.partial = event.text
        turn.words = len(event.text.split())
        if turn.words:
            self._disarm("false_resume")
        if turn.barge_in and self._reply is not None and self._barge_in_ready(turn):
            self._barge_in(turn)

    def _on_final(self, event: ev.SttFinal) -> None:
        turn = self._turn
        if turn is None or turn.id != event.turn:
            return
        self._turn = None
        self._stt_queue = None
        self._stt_task = None
        if not self.life.live:
            return
        # Numbers and spellings as the model reads them best ("five eight three"
        # -> 583); the record keeps what the recogniser said too.
        said = normalise_transcript(event.text)
        text = (self._pending_user + said).strip()
        self._pending_user = ""
        metrics = turn.metrics
        if metrics is not None:
            metrics.stt_final = time.monotonic()
            # The wait for the final once the turn ended: the finalise call, and
            # before it any speculative decode still running from the pause.
            waited = metrics.stt_final - metrics.eos_decided if metrics.eos_decided else 0.0
            metrics.stt_finalise_s = max(event.finalise_s, waited)
        normalised = {"normalised": said} if said != event.text else {}
        self._note("caller_final", turn=turn.id, text=event.text, **normalised)
        self._caller_text[turn.id] = text
        self.log.info("caller_said", turn=turn.id, text=event.text, **normalised)
        if not text:
            if self._interrupted is not None:
                self._resume("no words")
            elif turn.speech_s >= MIN_UNDERSTOOD_SPEECH and self.life.live:
                self._note("not_understood", turn=turn.id)
                self._say(self.settings.turn.not_understood)
            else:
                self._arm_attention()
            return
        if self._reply is not None and not self.settings.barge_in.enabled:
            # No interrupting: the caller's words wait until the agent has finished.
            self._pending_user = text + " "
            return
        self._commit_interrupted()
        if self._reply is not None:
            # A barge-in that never cut the reply (min_words not reached):
            # the caller's words take over now.
            self._interrupt_reply(self._reply, turn.started_media)
            self._commit_interrupted()
        self.messages.append(Message("user", text))
        if self._stopped:
            self._arm_attention()
            return
        self._start_llm_reply(metrics)

    # -- barge-in ----------------------------------------------------------------------

    def _fast_pause_armed(self) -> bool:
        cfg = self.settings.barge_in
        reply = self._reply
        return (
            cfg.enabled
            and cfg.fast_pause
            and cfg.min_speech == 0
            and cfg.min_words == 0
            and reply is not None
            and reply.paused_at is None
            and self._turn is None
            and self.life.state in (CallState.SPEAKING, CallState.GREETING)
        )

    def _media_audio(self, pcm: np.ndarray, media_time: float, gap: bool) -> None:
        """Caller audio from the media plane (with the eager jitter buffer, as it
        arrives). The fast onset test runs here, at once, because barge-in cannot
        wait for the inbox; it only reads actor state and posts."""
        if self._onset.update(pcm, armed=self._fast_pause_armed()):
            self.post(ev.SpeechOnset(time.monotonic()))
        self.post(ev.AudioIn(pcm, media_time, gap))

    def _on_onset(self, event: ev.SpeechOnset) -> None:
        """Maybe someone started talking: stop the agent's audio now, keep the reply."""
        reply = self._reply
        if reply is None or not self._fast_pause_armed():
            return
        reply.paused_frames = self.media.flush()
        reply.paused_at = time.monotonic()
        self._note("barge_in_pause", reply=reply.id, flushed_frames=reply.paused_frames)
        self.log.info("barge_in_pause", reply=reply.id, flushed_frames=reply.paused_frames)
        self._arm("confirm", self.settings.barge_in.confirm_window)

    def _resume_paused(self) -> None:
        """Silero did not confirm speech: play on from the word the pause cut."""
        reply = self._reply
        if reply is None or reply.paused_at is None:
            return
        reply.paused_at = None
        reply.paused_frames = 0
        frames = reply.voicing.replay()
        self._note("barge_in_unpause", reply=reply.id, frames=len(frames))
        self.log.info("barge_in_unpause", reply=reply.id, frames=len(frames))
        self._play(reply, frames)

    def _barge_in(self, turn: Turn) -> None:
        reply = self._reply
        if reply is None:
            return
        turn.barge_in = False
        self._interrupt_reply(reply, turn.started_media)

    def _interrupt_reply(self, reply: AgentReply, onset: float) -> None:
        flushed = self.media.flush() + reply.paused_frames
        self._disarm("confirm")
        stopped = reply.paused_at if reply.paused_at is not None else time.monotonic()
        record = BargeIn(reply.id, onset, stopped, flushed)
        self._cancel_reply(reply)
        self._reply = None
        self.barge_ins.append(record)
        self._interrupted = (reply, record)
        self._note("interrupted", reply=reply.id, flushed_frames=flushed)
        self.log.info("barge_in", reply=reply.id, flushed_frames=flushed)
        self._go(CallState.LISTENING, "barge-in")

    def _cancel_reply(self, reply: AgentReply) -> None:
        for task in reply.tasks():
            task.cancel()
        reply.tools_pending.clear()
        self._disarm("filler")

    def _heard(self, reply: AgentReply) -> tuple[str, str | None]:
        heard, cut = reply.voicing.heard(reply.text)
        return reply.prefix + _spoken(heard, reply.unsaid), cut

    def _commit_interrupted(self) -> None:
        """The interruption was real: keep exactly what the caller heard."""
        if self._interrupted is None:
            return
        reply, record = self._interrupted
        self._interrupted = None
        self._disarm("false_resume")
        heard, cut = self._heard(reply)
        record.heard = heard
        record.generated = reply.prefix + reply.text
        self._note("heard", reply=reply.id, heard=heard, generated=record.generated, cut=cut)
        self._record_barge_in(record)
        self._record_turn(reply, generated=record.generated, heard=heard)
        # Earlier LLM steps (text before a tool call) are already in the conversation.
        said = heard[reply.step_start :] if reply.kind == "llm" else heard
        if said.strip():
            self.messages.append(Message("assistant", said))

    def _record_barge_in(self, record: BargeIn) -> None:
        """The call record's view of one interruption, once it is known to be real or false."""
        onset = self._wall(record.onset_media) if self._media_offset is not None else None
        stop_ms = round((record.decided - onset) * 1000, 1) if onset is not None else None
        self._note(
            "barge_in",
            reply=record.reply,
            stop_ms=stop_ms,
            heard=record.heard,
            generated=record.generated,
            false=record.false,
        )

    def _record_turn(self, reply: AgentReply, *, generated: str, heard: str) -> None:
        """One caller turn and the reply to it: the texts and the latency split."""
        metrics = reply.metrics
        if metrics is None:
            return
        self._note(
            "turn",
            turn=metrics.turn,
            caller_text=self._caller_text.pop(metrics.turn, ""),
            assistant_generated=generated,
            assistant_heard=heard,
            latency_ms=metrics.summary() if metrics.first_frame_sent else {},
        )

    def _resume(self, why: str) -> None:
        """A false barge-in: go on from where the agent was cut off."""
        if self._interrupted is None:
            return
        reply, record = self._interrupted
        self._interrupted = None
        record.false = True
        tag = reply.voicing.last_sent
        start = 0
        if tag is not None:
            start = tag.partial[0] if tag.partial is not None else tag.heard_end
        rest = reply.text[start:]
        heard_before = reply.prefix + reply.text[:start]
        self._note("false_barge_in", reply=reply.id, why=why, resume_from=start)
        record.generated = reply.prefix + reply.text
        self._record_barge_in(record)
        self.log.info("false_barge_in", reply=reply.id, resume_chars=len(rest.strip()))
        if rest.strip():
            record.resumed = True
            self._say(rest.lstrip(), prefix=heard_before)
        elif heard_before.strip():
            self.messages.append(Message("assistant", heard_before))
            self._arm_attention()

    # -- replies: LLM, tools, TTS, frames -----------------------------------------------

    def _new_reply(self, kind: str, metrics: TurnMetrics | None) -> AgentReply:
        self._reply_ids += 1
        reply = AgentReply(
            self._reply_ids,
            Voicing(self._reply_ids, self.media.sample_rate, self.media.frame_samples),
            kind,
            metrics=metrics,
        )
        self._reply = reply
        reply.tts_task = self._spawn(self._run_tts(reply))
        return reply

    def _say(self, text: str, *, prefix: str = "", then_hangup: bool = False) -> AgentReply:
        """Speak fixed text (greeting, prompts, recovery phrases, resumed replies)."""
        if self._reply is not None:
            self._cancel_reply(self._reply)
        reply = self._new_reply("fixed", None)
        reply.prefix = prefix
        reply.then_hangup = then_hangup
        reply.text = text
        self._queue_clauses(reply, text, final=True)
        if self.life.state not in (CallState.GREETING, CallState.ENDING):
            self._go(CallState.SPEAKING, "say")
        return reply

    def _start_llm_reply(self, metrics: TurnMetrics | None) -> None:
        if self._reply is not None:
            self._cancel_reply(self._reply)
        reply = self._new_reply("llm", metrics)
        if self.life.state != CallState.GREETING:
            self._go(CallState.THINKING, "caller turn ended")
        self._start_llm_step(reply)

    def _start_llm_step(self, reply: AgentReply, tools: bool = True) -> None:
        reply.llm_done = False
        reply.step_start = len(reply.text)
        if reply.metrics is not None and not reply.metrics.llm_start:
            reply.metrics.llm_start = time.monotonic()
        specs = (
            [t.spec for t in self.agent.tools if t.spec.name not in self.disabled_tools]
            if tools
            else []
        )
        reply.llm_task = self._spawn(self._run_llm(reply.id, list(self.messages), specs))

    async def _run_llm(self, reply: int, messages: list[Message], tools: list[Any]) -> None:
        """Stream one LLM step: retry a failed request with backoff, then the fallback
        backends in order (DESIGN: llm_timeout / llm_error). Once the model has said
        something a failure is final: a retry would say it twice. A call that had to
        fall back stays on the fallback, so later turns do not wait for the same
        failure again."""
        primary = self.settings.llm
        chain = [primary, *primary.fallbacks]
        for index in range(min(self._llm_from, len(chain) - 1), len(chain)):
            cfg = chain[index]
            backend = self.llm if index == 0 else self.runtime.llm_for(self.agent, cfg)
            for attempt in range(cfg.retries + 1):
                started = [False]
                try:
                    await self._stream_llm(reply, backend, cfg, messages, tools, started)
                    self._llm_from = index
                    return
                except LlmError as exc:
                    kind = (
                        ErrorKind.LLM_TIMEOUT
                        if isinstance(exc, LlmTimeout)
                        else llm_error_kind(exc.status)
                    )
                    error = f"{cfg.model}: {exc}"
                    if kind is ErrorKind.AUTH_FAILURE or started[0]:
                        self.post(ev.StageError(kind, "llm", error, reply=reply))
                        return
                    if attempt < cfg.retries:
                        wait = exc.retry_after or cfg.retry_backoff * 2**attempt
                        step = f"retry {attempt + 1} of {cfg.retries} in {wait:g} s"
                    elif index + 1 < len(chain):
                        wait, step = 0.0, f"fallback to {chain[index + 1].model}"
                    else:
                        self.post(ev.StageError(kind, "llm", error, reply=reply))
                        return
                    self.post(ev.StageError(kind, "llm", error, reply, recovery=step, final=False))
                    await asyncio.sleep(wait)

    async def _stream_llm(
        self,
        reply: int,
        backend: LlmBackend,
        cfg: LlmSettings,
        messages: list[Message],
        tools: list[Any],
        started: list[bool],
    ) -> None:
        """One request; tokens and tool calls go to the inbox. Raises `LlmError`."""
        options = LlmOptions(temperature=cfg.temperature, max_tokens=cfg.max_tokens)
        rule = self.faults.check("llm", cfg.model)
        if rule is not None and rule.mode == "fail":
            raise LlmError("injected fault", status=rule.status or 500)
        stream = backend.stream(messages, tools, options)
        timeout = cfg.first_token_timeout
        iterator = aiter(stream)
        while True:
            try:
                async with asyncio.timeout(timeout):
                    if rule is not None:
                        await self.faults.delay(rule)
                        rule = None
                    item = await anext(iterator)
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise LlmTimeout(f"no data from the model within {timeout:g} s") from None
            timeout = cfg.idle_timeout
            if isinstance(item, Token):
                started[0] = True
                self.post(ev.LlmToken(reply, item.text))
            elif isinstance(item, ToolCalls):
                started[0] = True
                self.post(ev.LlmToolCalls(reply, item.calls))
            elif isinstance(item, Done):
                break
        self.post(ev.LlmDone(reply))

    def _current(self, reply_id: int) -> AgentReply | None:
        reply = self._reply
        return reply if reply is not None and reply.id == reply_id else None

    def _on_token(self, event: ev.LlmToken) -> None:
        reply = self._current(event.reply)
        if reply is None:
            return
        if reply.metrics is not None and not reply.metrics.llm_first_token:
            reply.metrics.llm_first_token = time.monotonic()
        reply.text += event.text
        for clause in reply.clauses.push(event.text):
            self._queue_clause(reply, clause)

    def _queue_clauses(self, reply: AgentReply, text: str, final: bool) -> None:
        for clause in reply.clauses.push(text):
            self._queue_clause(reply, clause)
        if final:
            rest = reply.clauses.flush()
            if rest:
                self._queue_clause(reply, rest)
            reply.tts_queue.put_nowait(None)

    def _queue_clause(self, reply: AgentReply, clause: str) -> None:
        metrics = reply.metrics
        if metrics is not None and not metrics.llm_first_sentence and clause.strip():
            metrics.llm_first_sentence = time.monotonic()
        offset = reply.clause_start
        reply.clause_start += len(clause)
        if clause.strip():
            reply.tts_queue.put_nowait((offset, clause))

    async def _run_tts(self, reply: AgentReply) -> None:
        """Synthesise the reply's clauses in order, in the executor."""
        tts = self.runtime.tts
        voice = self.settings.tts.voice if tts.name == "espeak-ng" else None
        while True:
            item = await reply.tts_queue.get()
            if item is None:
                break
            offset, clause = item
            started = time.monotonic()
            async for chunk in self._synthesize(reply.id, offset, clause, voice):
                self.post(
                    ev.TtsAudio(
                        reply.id, offset, (chunk,), tts.sample_rate, time.monotonic() - started
                    )
                )
        self.post(ev.TtsDone(reply.id))

    async def _synthesize(
        self, reply: int, offset: int, clause: str, voice: str | None
    ) -> AsyncIterator[TtsChunk]:
        """One clause's chunks as the backend makes them (a streaming backend's first
        audio plays before the clause is done), each `next` in the executor. On a
        failure before any audio, once more with the fallback voice (DESIGN:
        tts_failure); after some audio, or with no voice left, the rest of the
        clause is skipped (the caller heard what was sent)."""
        tts, cfg = self.runtime.tts, self.settings.tts
        loop, executor = self._loop, self.runtime.executor
        voices = [voice]
        if cfg.fallback_voice and cfg.fallback_voice != voice:
            voices.append(cfg.fallback_voice)
        voiced = 0  # end of the clause text voiced so far
        for i, name in enumerate(voices):
            rule = self.faults.check("tts", name or tts.name)
            spoke = False
            chunks: Iterator[TtsChunk] | None = None
            try:
                async with asyncio.timeout(cfg.timeout):
                    await self.faults.inject(rule, TtsError("injected fault"))
                    chunks = await loop.run_in_executor(executor, tts.synthesize, clause, name)
                    while (chunk := await loop.run_in_executor(executor, next, chunks, None)):
                        spoke = True
                        voiced = max(voiced, chunk.end)
                        yield chunk
                return
            except (TtsError, TimeoutError) as exc:
                error = str(exc) or f"no audio within {cfg.timeout:g} s"
                last = spoke or i + 1 == len(voices)
                step = "clause skipped" if last else f"fallback voice {voices[i + 1]}"
                self.post(
                    ev.StageError(
                        ErrorKind.TTS_FAILURE,
                        "tts",
                        f"{name}: {error}",
                        reply,
                        recovery=step,
                        final=False,
                        unsaid=(offset + voiced, offset + len(clause)) if last else None,
                    )
                )
                if last:
                    return
            finally:
                # A barge-in cancels us mid-clause: a streaming backend's socket
                # closes now, not whenever the generator is collected.
                if chunks is not None:
                    loop.run_in_executor(executor, _close_quietly, chunks)

    def _on_tts_audio(self, event: ev.TtsAudio) -> None:
        reply = self._current(event.reply)
        if reply is None:
            return
        if reply.metrics is not None and not reply.metrics.tts_first_audio_at:
            reply.metrics.tts_first_audio_s = event.synth_s
            reply.metrics.tts_first_audio_at = time.monotonic()
        frames = reply.voicing.add(event.chunks, event.sample_rate, event.offset)
        self._play(reply, frames)

    def _play(self, reply: AgentReply, frames: list[tuple[np.ndarray, FrameTag]]) -> None:
        if not frames or reply.paused_at is not None:
            return  # while paused the frames wait in the voicing (see _resume_paused)
        if self.life.state == CallState.THINKING:
            self._go(CallState.SPEAKING, "first audio")
        self.media.rephase()
        for pcm, tag in frames:
            self.media.play(pcm, tag)

    def _on_tts_done(self, event: ev.TtsDone) -> None:
        reply = self._current(event.reply)
        if reply is None:
            return
        reply.finished_framing = True
        self._play(reply, reply.voicing.finish())
        self._maybe_finished(reply)

    def _on_frame_sent(self, tag: object) -> None:
        if not isinstance(tag, FrameTag):
            return
        reply = self._reply
        if reply is not None and reply.id == tag.reply:
            reply.voicing.sent(tag)
            if not reply.first_frame_seen:
                reply.first_frame_seen = True
                self._first_frame(reply)
            self._maybe_finished(reply)
        elif self._interrupted is not None and self._interrupted[0].id == tag.reply:
            # A frame already in the clock's batch when we flushed: it was heard.
            self._interrupted[0].voicing.sent(tag)

    def _first_frame(self, reply: AgentReply) -> None:
        metrics = reply.metrics
        if metrics is None or not metrics.speech_end:
            return
        metrics.first_frame_sent = time.monotonic()
        self.turns.append(metrics)
        summary = metrics.summary()
        self._note("turn_latency", turn=metrics.turn, **summary)
        self.log.info("turn_latency", turn=metrics.turn, **summary)

    def _maybe_finished(self, reply: AgentReply) -> None:
        if not (
            reply.llm_done
            and not reply.tools_pending
            and reply.finished_framing
            and reply.voicing.all_sent
        ):
            return
        self._reply = None
        # What was voiced: clauses TTS skipped were never heard.
        text = reply.prefix + _spoken(reply.text, reply.unsaid)
        # An LLM reply's earlier steps are already in the conversation (with
        # their tool calls); fixed text (greeting, prompts) is kept whole.
        said = _spoken(reply.text, reply.unsaid, reply.step_start)
        if reply.kind != "llm":
            said = text
        if said.strip():
            self.messages.append(Message("assistant", said))
        self._note("agent_said", reply=reply.id, text=text)
        self.log.info("agent_said", reply=reply.id, text=text)
        self._record_turn(reply, generated=reply.prefix + reply.text, heard=text)
        if reply.then_hangup or self.life.state == CallState.ENDING:
            self._hangup("agent")
            return
        if reply.then_transfer:
            self._start_transfer(reply.then_transfer)
        elif reply.then_hold:
            self._hold(reply.then_hold)
        if not self.life.live:
            return
        self._go(CallState.LISTENING, "reply finished")
        waiting = self._pending_user.strip()
        if waiting and self._turn is None:
            self._pending_user = ""
            self.messages.append(Message("user", waiting))
            self._start_llm_reply(None)
        else:
            self._arm_attention()

    def _on_llm_done(self, event: ev.LlmDone) -> None:
        reply = self._current(event.reply)
        if reply is None:
            return
        if reply.step_has_tools:
            # This step asked for tools: the next step starts once they are all back.
            reply.step_has_tools = False
            if not reply.tools_pending:
                self._after_tools(reply)
            return
        reply.llm_done = True
        reply.llm_task = None
        self._queue_clauses(reply, "", final=True)

    # -- tools ------------------------------------------------------------------------------

    def _on_tool_calls(self, event: ev.LlmToolCalls) -> None:
        reply = self._current(event.reply)
        if reply is None:
            return
        step_text = reply.text[reply.step_start :]
        self.messages.append(Message("assistant", step_text or None, tool_calls=list(event.calls)))
        reply.tool_calls_made += len(event.calls)
        reply.step_has_tools = True
        for call in event.calls:
            turn = reply.metrics.turn if reply.metrics is not None else None
            self._note(
                "tool_call", reply=reply.id, turn=turn, name=call.name, arguments=call.arguments
            )
            tool = self.agent.tool(call.name)
            reply.tools_pending[call.id] = self._spawn(self._run_tool(reply.id, call, tool))
        fillers = self.settings.fillers
        if fillers.enabled and event.calls:
            self._arm("filler", fillers.after)

    async def _run_tool(self, reply: int, call: ToolCall, tool: Tool | None) -> None:
        started = time.monotonic()
        if tool is None:
            self.post(
                ev.ToolResult(reply, call, f"unknown tool {call.name}", 0.0, error="unknown tool")
            )
            return
        timeout = tool.timeout or self.settings.tool_timeout
        on_timeout = tool.on_timeout or self.recovery.tool_timeout_action
        attempts = 2 if on_timeout == "retry" else 1
        raw = {
            "function": call.name,
            "argument": {"parsed": [call.arguments]},
            "call_id": self.call.call_id,
            "global_data": dict(self.global_data),
            "meta_data": dict(self.metadata),
        }
        for attempt in range(attempts):
            rule = self.faults.check("tool", call.name)
            try:
                async with asyncio.timeout(timeout):
                    await self.faults.inject(rule, InjectedFault(f"injected fault in {call.name}"))
                    if tool.is_async:
                        value = await tool.handler(call.arguments, raw)
                    else:
                        value = await asyncio.to_thread(tool.handler, call.arguments, raw)
            except TimeoutError:
                again = attempt + 1 < attempts
                error = f"{call.name} ran past {timeout:g} s"
                step = "caller told, retrying" if again else "caller told, skipped"
                self.post(
                    ev.StageError(
                        ErrorKind.TOOL_TIMEOUT, "tool", error, reply, recovery=step, final=False
                    )
                )
                if again:
                    continue
                content = "The tool timed out."
                self.post(ev.ToolResult(reply, call, content, timeout, error="tool_timeout"))
                return
            except Exception as exc:
                phrase = self._tool_error_phrase(exc)
                error = f"{call.name}: {exc!r}"
                self.post(
                    ev.StageError(
                        ErrorKind.TOOL_ERROR,
                        "tool",
                        error,
                        reply,
                        recovery=f"said: {phrase}",
                        final=False,
                    )
                )
                duration = time.monotonic() - started
                self.post(
                    ev.ToolResult(reply, call, phrase, duration, error=f"tool_error: {exc!r}")
                )
                return
            content, actions = tool_output(value)
            duration = time.monotonic() - started
            self.post(ev.ToolResult(reply, call, content, duration, actions=actions))
            return

    def _tool_error_phrase(self, exc: BaseException) -> str:
        """The recovery phrase for a tool's exception: the most specific configured one."""
        phrases = self.recovery.tool_error_phrases
        for cls in type(exc).__mro__:
            if cls.__name__ in phrases:
                return phrases[cls.__name__]
        return self.recovery.tool_error_phrase

    def _on_tool_result(self, event: ev.ToolResult) -> None:
        reply = self._current(event.reply)
        if reply is None or event.call.id not in reply.tools_pending:
            return
        del reply.tools_pending[event.call.id]
        reply.tool_results.append(event)
        self._note(
            "tool",
            name=event.call.name,
            arguments=event.call.arguments,
            result=event.content,
            duration_s=round(event.duration_s, 4),
            error=event.error,
        )
        if event.error:
            self.log.warning("tool_failed", tool=event.call.name, error=event.error)
        for action in event.actions:
            self._action(reply, action)
        if reply.tools_pending or reply.step_has_tools:
            return  # more results to come, or the step's stream has not ended yet
        self._after_tools(reply)

    def _action(self, reply: AgentReply, action: Any) -> None:
        """Carry out one action of a tool result (SignalWire's action names)."""
        if not isinstance(action, dict) or len(action) != 1:
            self._note("action_ignored", action=repr(action))
            return
        ((name, data),) = action.items()
        self._note("action", name=name, data=data)
        if name == "say":
            self._speak_into(reply, f"{data} ")
        elif name == "hangup":
            reply.then_hangup = True
        elif name == "stop":
            self._stopped = True
        elif name == "toggle_functions":
            for toggle in data or []:
                if toggle.get("active", True):
                    self.disabled_tools.discard(toggle.get("function"))
                else:
                    self.disabled_tools.add(toggle.get("function"))
        elif name == "set_global_data":
            self.global_data.update(data or {})
        elif name == "unset_global_data":
            for key in data or []:
                self.global_data.pop(key, None)
        elif name == "set_meta_data":
            self.metadata.update(data or {})
        elif name == "end_of_speech_timeout":
            self.settings.turn.end_of_speech_timeout = max(0.25, float(data) / 1000)
        elif name == "send_dtmf":
            for digit in str(data):
                self.media.send_dtmf(digit)
        elif name == "user_input":
            self._pending_user = f"{data} "
        elif name == "hold":
            reply.then_hold = max(1.0, float(data or 300))
        elif name == "playback_bg":
            self._background(data.get("file") if isinstance(data, dict) else data)
        elif name == "stop_playback_bg":
            self.media.play_background(None)
        elif name == "wait_for_user":
            pass  # the agent waits for the caller after every reply anyway
        elif name == "transfer":
            # After the reply is said (the caller hears "transferring you"), REFER.
            dest = data.get("dest") if isinstance(data, dict) else data
            reply.then_transfer = str(dest)
        else:
            self.log.warning("action_unsupported", action=name)
            self._note("action_unsupported", name=name)

    def _background(self, path: object) -> None:
        """Mix a WAV (any rate, mono or stereo) under the conversation."""
        try:
            pcm = load_wav(str(path), self.media.sample_rate)
        except (OSError, EOFError, ValueError, wave.Error) as exc:
            error = f"{path}: {exc}"
            self._on_error(
                ev.StageError(
                    ErrorKind.MEDIA_FAILURE, "playback", error, recovery="not played", final=False
                )
            )
            return
        self._note("background_file", file=str(path))
        self.media.rephase()
        self.media.play_background(pcm)

    def _hold(self, seconds: float) -> None:
        """A tool put the caller on hold: no turns (silence) until the time is up."""
        self._holding = True
        self._disarm("attention")
        self._note("hold_started", seconds=seconds)
        self._arm("hold", seconds)

    def _start_transfer(self, dest: str) -> None:
        self._note("transfer", dest=dest)
        self.log.info("transfer", dest=dest)
        self._transfer_dest = dest
        self.call.transfer(dest)
        # Some phones never send the final NOTIFY: do not wait for ever.
        self._arm("transfer", TRANSFER_TIMEOUT)

    def _on_transfer(self, event: ev.TransferResult) -> None:
        self._disarm("transfer")
        dest, self._transfer_dest = self._transfer_dest, None
        if dest is None:
            return
        if event.ok and event.bridged:
            # The caller talks to the target through the server now; the media
            # session is the bridge's, and the call ends when either side hangs up.
            self._note("bridged", dest=dest)
            self.end_reason = "bridged"
            self._go(CallState.ENDED, "bridged")
            return
        if event.ok:
            self._note("transferred", dest=dest, status=event.status)
            self._hangup("transferred")
            return
        # DESIGN's transfer_failure: tell the caller and go on (a caller who
        # failed authentication gets no conversation: the call ends instead).
        error = f"{dest}: {event.status} {event.reason}"
        if self._auth_error is not None:
            recovery = "caller told, call ended"
            self._end_call(self.recovery.transfer_failed_phrase, "auth failure")
        else:
            recovery = RECOVERY[ErrorKind.TRANSFER_FAILURE]
            if self.life.live and self._reply is None:
                self._say(self.recovery.transfer_failed_phrase)
        self._on_error(
            ev.StageError(ErrorKind.TRANSFER_FAILURE, "sip", error, recovery=recovery, final=False)
        )

    def _after_tools(self, reply: AgentReply) -> None:
        """Every tool of the step is back: feed the results to the model again."""
        self._disarm("filler")
        for result in reply.tool_results:
            self.messages.append(
                Message("tool", result.content, tool_call_id=result.call.id, name=result.call.name)
            )
        reply.tool_results = []
        within = reply.tool_calls_made < self.settings.llm.max_tool_calls
        self._start_llm_step(reply, tools=within)

    # -- timers, errors, ending --------------------------------------------------------------

    def _arm_attention(self) -> None:
        turn = self.settings.turn
        if self._on_hold or self._holding or not self.life.live:
            return
        if not self._attention_given and turn.attention_timeout > 0:
            self._arm("attention", turn.attention_timeout)
        elif self._attention_given and turn.inactivity_timeout > 0:
            self._arm("attention", turn.inactivity_timeout)

    def _on_timer(self, name: str) -> None:
        if name == "eos":
            turn = self._turn
            if turn is not None and not turn.finalising and not self._detector.speaking:
                self._end_turn(turn, self._speech_end(turn))
        elif name == "transfer":
            self._on_transfer(ev.TransferResult(False, 408, "no final NOTIFY"))
        elif name == "hold":
            self._holding = False
            self._note("hold_ended")
            if self.life.live:
                self._say(HOLD_ENDED)
        elif name == "confirm":
            if self._turn is None and not self._detector.speaking:
                self._resume_paused()
        elif name == "false_resume":
            turn = self._turn
            if turn is not None and turn.words == 0 and not self._detector.speaking:
                self._abandon_turn(turn)
                self._resume("no words within the window")
        elif name == "attention":
            if self._turn is not None or self._reply is not None or not self.life.live:
                return
            if not self._attention_given:
                self._attention_given = True
                self._note("attention_prompt")
                self._say(self.settings.turn.attention_prompt)
            else:
                self._note("inactivity_hangup")
                self._end_call(self.settings.turn.goodbye, "caller silent")
        elif name == "filler":
            reply = self._reply
            if reply is None or not reply.tools_pending or reply.filler_said:
                return
            phrases = self._filler_phrases(reply)
            if phrases:
                reply.filler_said = True
                phrase = phrases[(reply.id - 1) % len(phrases)]
                self._note("filler", phrase=phrase)
                self._speak_into(reply, phrase + " ")

    def _filler_phrases(self, reply: AgentReply) -> list[str]:
        for task_id in reply.tools_pending:
            call = next((c for m in self.messages for c in m.tool_calls if c.id == task_id), None)
            tool = self.agent.tool(call.name) if call is not None else None
            if tool is not None and tool.fillers:
                return tool.fillers
        return self.settings.fillers.phrases

    def _speak_into(self, reply: AgentReply, text: str) -> None:
        """Voice extra text inside the running reply (a filler while a tool works)."""
        reply.text += text
        for clause in reply.clauses.push(text):
            self._queue_clause(reply, clause)
        rest = reply.clauses.flush()
        if rest:
            self._queue_clause(reply, rest)
        reply.step_start = len(reply.text)

    def _abandon_turn(self, turn: Turn) -> None:
        self._turn = None
        if self._stt_queue is not None:
            self._stt_queue.put_nowait(None)  # the final arrives for a dead turn: ignored
        self._stt_queue = None

    def _on_error(self, event: ev.StageError) -> None:
        """Record a classified failure and apply its kind's recovery (DESIGN's table)."""
        kind = event.kind
        reply = self._current(event.reply) if event.reply is not None else None
        recovery = event.recovery
        if event.final and not recovery:
            recovery = self._final_recovery(kind, event, reply)
        if reply is not None and event.unsaid is not None:
            reply.unsaid.append(event.unsaid)
        self._note(
            "error", kind=kind.value, stage=event.stage, error=event.error, recovery=recovery
        )
        self.log.warning(
            "stage_error", kind=kind.value, stage=event.stage, error=event.error, recovery=recovery
        )
        if kind is ErrorKind.TOOL_TIMEOUT and reply is not None and self.life.live:
            # Tell the caller why it is quiet; the tool is then retried or skipped.
            self._speak_into(reply, self.recovery.tool_timeout_phrase + " ")

    def _final_recovery(
        self, kind: ErrorKind, event: ev.StageError, reply: AgentReply | None
    ) -> str:
        """Carry out the recovery of a stage that gave up; say what was done."""
        if kind is ErrorKind.STT_FAILURE:
            turn = self._turn
            if turn is None or turn.id != event.turn:
                return "turn already over"
            self._turn = None
            self._stt_queue = None
            self._say(self.settings.turn.not_understood)
            return RECOVERY[kind]
        if kind is ErrorKind.AUTH_FAILURE:
            if reply is not None:
                self._cancel_reply(reply)
                self._reply = None
            return self._auth_failure()
        if reply is None:
            return "reply already over"
        if event.stage == "llm":
            self._cancel_reply(reply)
            self._reply = None
            self._say(self.recovery.trouble_phrase)
            return "retries and fallbacks exhausted: trouble phrase said"
        return RECOVERY[kind]

    def _auth_failure(self) -> str:
        """The configured flow for refused credentials: a message and hangup, a
        transfer, or another agent."""
        flow = self.recovery.auth_failure
        if flow.action == "agent" and flow.agent:
            self.handoff = flow.agent
            self.end_reason = f"handed to agent {flow.agent}"
            self._note("handoff", agent=flow.agent)
            self._go(CallState.ENDED, "auth failure: another agent")
            return f"handed to agent {flow.agent}"
        if flow.action == "transfer" and flow.target:
            reply = self._say(flow.message)
            reply.then_transfer = flow.target
            return f"message, then transfer to {flow.target}"
        self._end_call(flow.message, "auth failure")
        return "message, then hangup"

    def _end_call(self, goodbye: str | None, reason: str) -> None:
        """Say goodbye (if any), then hang up."""
        self.end_reason = reason
        self._disarm("attention")
        if goodbye:
            self._say(goodbye, then_hangup=True)
            self._go(CallState.ENDING, reason)
        else:
            self._hangup(reason)

    def _hangup(self, reason: str) -> None:
        self.end_reason = self.end_reason or reason
        self._go(CallState.ENDING, reason)
        self.call.hangup()


def _close_quietly(chunks: Iterator[TtsChunk]) -> None:
    """Close a synthesis generator (in the executor; a no-op while another thread
    is still inside it: that `next` ends by itself and the generator is collected)."""
    close = getattr(chunks, "close", None)
    if close is not None:
        with contextlib.suppress(ValueError, TtsError):
            close()


def _spoken(text: str, unsaid: list[tuple[int, int]], start: int = 0) -> str:
    """`text[start:]` without the `unsaid` spans (offsets into the whole text)."""
    out, at = [], start
    for a, b in sorted(unsaid):
        if b <= at:
            continue
        out.append(text[at : max(a, at)])
        at = b
    out.append(text[at:])
    return "".join(out)
