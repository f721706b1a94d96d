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
  arrival time: the caller's turn ends on silence in the audio itself (the
  turn model's verdict after a short pause, or `end_of_speech_timeout`),
  together with the STT final; a final that ends mid-sentence is held for
  the caller to go on.

The work is done by parts the actor owns and calls, each in its own module:
`Listener` (audio in, VAD, the sans-IO `TurnTaker`, the recogniser),
`Replies` (the agent's answers, their tools and commands, what was heard,
with `Speaker` and `Interruptions`), `Conversation` (history and call data),
`FallbackLlm` (the model with its retries and fallbacks), `ToolRunner`,
`Keypad` (DTMF input), `Failures` (the recovery of failed stages) and
`Timers`. The actor runs the lifecycle, routes events, turns the turn taker's
decisions into replies, carries out call control (hold, transfer, hangup),
supervises child tasks and keeps the record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from mediaserver.call import events as ev
from mediaserver.call import turns as tt
from mediaserver.call.conversation import Conversation
from mediaserver.call.errors import RECOVERY, ErrorKind, llm_error_kind
from mediaserver.call.failures import Failures
from mediaserver.call.keypad import Keypad
from mediaserver.call.lifecycle import CallState, Lifecycle
from mediaserver.call.listener import Listener
from mediaserver.call.ports import CallPorts
from mediaserver.call.records import AgentReply, CallSummary, TurnMetrics, held_over
from mediaserver.call.replies import Replies
from mediaserver.call.runtime import PipelineRuntime
from mediaserver.call.speaker import Speaker
from mediaserver.call.spec import AgentSpec
from mediaserver.call.summary import post_call_summary
from mediaserver.call.timers import Timers
from mediaserver.call.tools import ToolRunner
from mediaserver.call.transfers import Transfers
from mediaserver.call.turns import Floor
from mediaserver.media.session import RtpSession
from mediaserver.pipeline.llm.base import LlmBackend
from mediaserver.pipeline.llm.fallback import FallbackLlm, LlmRetry
from mediaserver.pipeline.stt.normalise import normalise_transcript
from mediaserver.pipeline.tts.fallback import FallbackTts

if TYPE_CHECKING:
    from mediaserver.call.control import CallControl
    from mediaserver.call.store import CallRecord

log = structlog.get_logger("mediaserver.call.actor")

#: Said when a tool's hold ends.
HOLD_ENDED = "Thank you for holding."
#: Seconds to wait for the outcome of a REFER.
#: The turn taker's timers (the others are the actor's own).
_TURN_TIMERS = ("eos", "confirm", "false_resume", "attention")


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
        # A copy: tool commands may change it for this call only.
        self.settings = agent.settings.model_copy(deep=True)
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
        self.convo = Conversation.start(agent)
        #: Append-only timeline of what happened (the call record builds on it).
        self.timeline: list[dict[str, Any]] = []
        self.end_reason = ""
        self._held: TurnMetrics | None = None  # a turn held for the caller to go on
        self._loop = asyncio.get_running_loop()
        self._children: set[asyncio.Task[Any]] = set()
        self.timers = Timers(self._loop, self.post)
        ports = CallPorts(self.post, self._note, self._spawn, self.timers.arm, self.timers.disarm)
        #: The model: the agent's, with its retries and fallbacks.
        self.llm = FallbackLlm(
            llm or runtime.llm_for(agent),
            self.settings.llm,
            lambda cfg: runtime.llm_for(agent, cfg),
            faults=self.faults,
            report=self._llm_retry,
        )
        self.listener = Listener(
            ports, runtime, agent, self.settings, media.sample_rate, self._floor, self._decide
        )
        tts = FallbackTts(runtime.tts, self.settings.tts, runtime.executor, self.faults)
        self.replies = Replies(
            ports,
            self.life,
            self._go,
            self._finished,
            self.convo,
            self.llm,
            ToolRunner(agent, self.settings, self.faults, self.post, call.call_id),
            Speaker(ports, media, tts, self._first_audio),
            self._onset_wall,
            media,
            self.settings,
            self.log,
        )
        listening = lambda: not self.listener.taker.deaf  # noqa: E731
        self.keypad = Keypad(ports, self.settings.dtmf, self.convo, listening, self._keypad)
        self.failures = Failures(
            ports,
            self.replies,
            self.listener,
            self.settings,
            self.log,
            lambda: self.life.live,
            self._end_call,
            self._hand_off,
        )
        self.transfers = Transfers(
            ports, call, self.convo, self.llm, self.settings, self._set_holding,
            lambda path: self.replies.background(path) if path else media.play_background(None),
            self.log,
        )  # fmt: skip
        self._holding = False  # a tool put the caller on hold
        self._on_hold = False  # the call is on hold (re-INVITE)
        self._sync_listener()
        replies = self.replies
        self._handlers: dict[type, Callable[[Any], None]] = {
            ev.AudioIn: self.listener.audio,
            ev.VadProb: self.listener.vad,
            ev.TurnChecked: self.listener.turn_checked,
            ev.SttPartial: self.listener.partial,
            ev.SttFinal: self._on_final,
            ev.SpeechOnset: self._on_onset,
            ev.FrameSent: replies.frame_sent,
            ev.LlmToken: replies.token,
            ev.LlmToolCalls: replies.tool_calls,
            ev.LlmDone: replies.llm_done,
            ev.TtsAudio: replies.tts_audio,
            ev.TtsDone: replies.tts_done,
            ev.ToolResult: replies.tool_result,
            ev.Timer: self._on_timer,
            ev.StageError: self.failures.error,
            ev.TransferResult: self._on_transfer,
            ev.HandoffBriefed: self.transfers.briefed,
            ev.DtmfIn: lambda event: self.keypad.press(event.digit),
            ev.HoldChanged: self._on_hold_changed,
            ev.CallHangup: self._on_hangup,
        }

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

    def _llm_retry(self, retry: LlmRetry) -> None:
        """The model failed and is tried again (or the next one is): on the record."""
        kind = llm_error_kind(retry.error)
        self.post(ev.StageError(kind, "llm", str(retry.error), recovery=retry.step, final=False))

    def _onset_wall(self, media_time: float) -> float | None:
        """`media_time` on the wall clock, or None before any caller audio arrived."""
        listener = self.listener
        return listener.wall(media_time) if listener.media_offset is not None else None

    # -- the loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Answered call in, ended call out."""
        media = self.media
        media.on_audio = self.listener.media_audio
        media.cancel_echo(media.settings.echo_cancel)
        media.on_sent = lambda tag: self.post(ev.FrameSent(tag))
        media.jitter.eager = self.settings.eager_jitter
        watchers = [self._spawn(self._watch_hangup()), self._spawn(self._watch_digits())]
        self._note("answered", agent=self.agent.name)
        try:
            self._start()
            while self.life.state != CallState.ENDED:
                event = await self.inbox.get()
                try:
                    self._handlers[type(event)](event)
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
            if media.on_audio == self.listener.media_audio:
                media.cancel_echo(False)
                media.on_audio = None
                media.on_sent = None
            for task in watchers:
                task.cancel()
            self._shutdown()
        await self._post_call()

    def summary(self) -> CallSummary:
        """How the call went (final once `run` returned)."""
        convo = self.convo
        return CallSummary(
            end_reason=self.end_reason,
            state=self.life.state.value,
            global_data=dict(convo.global_data),
            metadata=dict(convo.metadata),
            digits="".join(convo.digits),
            turns=len(self.replies.turns),
        )

    async def _post_call(self) -> None:
        """The agent's post-call summary: ask the model, hand the answer over."""
        if self.agent.post_prompt and self.agent.on_summary is not None:
            timeout = self.settings.llm.first_token_timeout + 20
            summary = await post_call_summary(
                self.agent, self.llm, self.convo, call_id=self.call.call_id,
                end_reason=self.end_reason, timeline=self.timeline, timeout=timeout,
            )  # fmt: skip
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
            self.failures.error(
                ev.StageError(ErrorKind.AUTH_FAILURE, stage="sip", error=self._auth_error)
            )
            return
        if self.settings.turn.agent_speaks_first:
            self._go(CallState.GREETING, "agent speaks first")
            if self.agent.greeting:
                self.replies.say(self.agent.greeting)
            else:
                self.replies.answer(None)
        else:
            self._go(CallState.LISTENING, "caller speaks first")
            self._idle()

    def _shutdown(self) -> None:
        self.timers.cancel_all()
        self.replies.cancel()
        for task in list(self._children):
            task.cancel()
        self.listener.close()

    def _keypad(self, digits: str) -> None:
        """A complete keypad input: the caller's words for the model."""
        if not self.life.live:
            return
        self.timers.disarm("held")  # "my number is" + keys: one input
        text = self.convo.take_pending(f"Keypad: {digits}")
        self._caller_words(text, self.listener.now(), None)

    def _on_hold_changed(self, event: ev.HoldChanged) -> None:
        self._on_hold = event.on_hold
        self._sync_listener()
        self._note("hold", on_hold=event.on_hold)
        if event.on_hold:
            self.timers.disarm("attention")
        else:
            self._idle()

    def _on_hangup(self, event: ev.CallHangup) -> None:
        self.end_reason = self.end_reason or event.reason
        self._note("hangup", reason=self.end_reason)
        self._go(CallState.ENDED, event.reason)

    # -- the caller's turns ---------------------------------------------------------------

    def _floor(self) -> Floor:
        return self.replies.floor()

    def _sync_listener(self) -> None:
        """A tool's hold or a failed digest means nobody listens; any hold stops
        the attention clock."""
        taker = self.listener.taker
        taker.deaf = self._holding or self._auth_error is not None
        taker.on_hold = self._holding or self._on_hold

    def _idle(self) -> None:
        """The floor is the caller's: start the attention clock."""
        if self.life.live:
            self.listener.idle()

    def _decide(self, decision: tt.Decision) -> None:
        """The turn taker's decisions about the agent's reply."""
        replies = self.replies
        match decision:
            case tt.TurnStarted(turn):
                # The caller goes on: a held transcript waits for this turn's.
                self.timers.disarm("held")
                if (
                    self.life.state == CallState.THINKING
                    and replies.current is not None
                    and self.listener.taker.joins_last_turn(turn.started_media)
                ):
                    # The caller adds to what they said: the reply in the works is stale.
                    replies.cancel()
                    self.convo.take_back_caller()
                    self._go(CallState.LISTENING, "caller continued")
            case tt.Preempt(turn, text):
                replies.preempt(turn, normalise_transcript(text))
            case tt.SpeechResumed():
                replies.drop("the caller went on")
            case tt.BargeInDecided(turn):
                replies.interrupt(turn.started_media)
            case tt.NoiseInterruption(turn):
                self._note("noise_interruption", turn=turn.id)
                replies.commit()
                self._idle()
            case tt.FalseBargeIn(why):
                if replies.resume(why):
                    self._idle()
            case tt.Unpause():
                self.timers.disarm("confirm")
                replies.unpause()
            case tt.NotUnderstood(turn):
                self._note("not_understood", turn=turn.id)
                replies.say(self.settings.turn.not_understood)
            case tt.AttentionDue():
                if self.life.live:
                    self._note("attention_prompt")
                    replies.say(self.settings.turn.attention_prompt)
            case tt.InactivityDue():
                if self.life.live:
                    self._note("inactivity_hangup")
                    self._end_call(self.settings.turn.goodbye, "caller silent")

    def _on_onset(self, event: ev.SpeechOnset) -> None:
        """Maybe someone started talking: stop the agent's audio now, keep the reply."""
        if self.replies.current is None:
            return
        if self.listener.taker.fast_pause_armed(self._floor()):
            self.replies.pause(event.at)
            self.listener.paused()

    def _on_final(self, event: ev.SttFinal) -> None:
        turn = self.listener.final(event)
        if turn is None or not self.life.live:
            return
        replies = self.replies
        # Numbers and spellings as the model reads them best ("five eight three"
        # -> 583); the record keeps what the recogniser said too.
        said = normalise_transcript(event.text)
        keep_floor = self.listener.taker.backchannel(said, turn.speech_s, self._floor())
        if keep_floor is not None:
            # "Mhm" over the agent: a listener's sound, not a turn for the model.
            self._note("backchannel", turn=turn.id, text=event.text)
            self.listener.apply(keep_floor)
            return
        text = self.convo.take_pending(said)
        metrics = turn.metrics
        if metrics is not None:
            # The wait for the final once the turn ended: the finalise call, and
            # before it any speculative decode still running from the pause.
            waited = metrics.stt_final - metrics.eos_decided if metrics.eos_decided else 0.0
            metrics.stt_finalise_s = max(event.finalise_s, waited)
        normalised = {"normalised": said} if said != event.text else {}
        self._note("caller_final", turn=turn.id, text=event.text, **normalised)
        replies.caller_text[turn.id] = text
        self.log.info("caller_said", turn=turn.id, text=event.text, **normalised)
        if replies.confirm(text):
            return  # the preemptive answer to exactly these words plays now
        if text and self.listener.turn is not None:
            # The caller already speaks again: these words join what they say next.
            self.convo.pending_user = text + " "
            return
        if not text:
            self.listener.empty(turn)
            return
        self._caller_words(text, turn.started_media, metrics)

    def _caller_words(self, text: str, started_media: float, metrics: TurnMetrics | None) -> None:
        """Answer what the caller said (or pressed), cutting the agent if it talks."""
        replies = self.replies
        if replies.current is not None and not self.settings.barge_in.enabled:
            # No interrupting: the caller's words wait until the agent has finished.
            self.convo.pending_user = text + " "
            return
        replies.commit()
        if replies.current is not None:
            # A barge-in that never cut the reply (min_words not reached), or
            # keys pressed over the agent: the caller's words take over now.
            replies.interrupt(started_media)
            replies.commit()
        hold = self.listener.taker.hold_for(text, self.listener.now())
        self._held = metrics if hold > 0 else None
        if hold > 0:
            # "...my order to": the caller has not finished; wait for the rest.
            self._note("turn_held", seconds=round(hold, 3))
            self.convo.pending_user = text + " "
            self.timers.arm("held", hold)
            return
        self.convo.caller(text)
        if self.convo.stopped:
            self._idle()
            return
        replies.answer(metrics)

    # -- what follows a reply: the floor, hold, transfer, hangup -------------------------------

    def _first_audio(self) -> None:
        if self.life.state == CallState.THINKING:
            self._go(CallState.SPEAKING, "first audio")

    def _finished(self, reply: AgentReply) -> None:
        """The caller heard `reply` to its end: do what it asked, then listen."""
        if reply.then_hangup or self.life.state == CallState.ENDING:
            self._hangup("agent")
            return
        if reply.then_transfer:
            self.transfers.start(reply.then_transfer, reply.warm_transfer)
        elif reply.then_hold:
            self._hold(reply.then_hold)
        if not self.life.live:
            return
        self._go(CallState.LISTENING, "reply finished")
        self._answer_waiting()

    def _answer_waiting(self) -> None:
        """Answer what the caller said that is still waiting, or listen."""
        waiting = self.convo.pending_user.strip()
        if waiting and self.listener.turn is None and self.replies.current is None:
            self.convo.pending_user = ""
            self.convo.caller(waiting)
            self.replies.answer(held_over(self._held))
            self._held = None
        else:
            self._idle()

    def _hold(self, seconds: float) -> None:
        """A tool put the caller on hold: no turns (silence) until the time is up."""
        self._set_holding(True)
        self._note("hold_started", seconds=seconds)
        self.timers.arm("hold", seconds)

    def _set_holding(self, holding: bool) -> None:
        """The caller waits (no turns, no attention prompts), or is back."""
        self._holding = holding
        self._sync_listener()
        if holding:
            self.timers.disarm("attention")

    def _on_transfer(self, event: ev.TransferResult) -> None:
        dest = self.transfers.finished(event)
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
            if self.life.live and self.replies.current is None:
                self.replies.say(self.recovery.transfer_failed_phrase)
        self.failures.error(
            ev.StageError(ErrorKind.TRANSFER_FAILURE, "sip", error, recovery=recovery, final=False)
        )

    # -- timers, errors, ending --------------------------------------------------------------

    def _on_timer(self, event: ev.Timer) -> None:
        if not self.timers.due(event):
            return
        name = event.name
        if name in _TURN_TIMERS:
            self.listener.timer(name)
        elif name == "held":
            self._answer_waiting()
        elif name == "digits":
            self.keypad.timer()
        elif name == "filler":
            self.replies.filler()
        elif name == "transfer":
            self._on_transfer(ev.TransferResult(False, 408, "no final NOTIFY"))
        elif name == "hold":
            self._set_holding(False)
            self._note("hold_ended")
            if self.life.live:
                self.replies.say(HOLD_ENDED)

    def _hand_off(self, agent: str) -> None:
        """The auth-failure flow gives the call to another agent."""
        self.handoff = agent
        self.end_reason = f"handed to agent {agent}"
        self._note("handoff", agent=agent)
        self._go(CallState.ENDED, "auth failure: another agent")

    def _end_call(self, goodbye: str | None, reason: str) -> None:
        """Say goodbye (if any), then hang up."""
        self.end_reason = reason
        self.timers.disarm("attention")
        if goodbye:
            self.replies.say(goodbye, then_hangup=True)
            self._go(CallState.ENDING, reason)
        else:
            self._hangup(reason)

    def _hangup(self, reason: str) -> None:
        self.end_reason = self.end_reason or reason
        self._go(CallState.ENDING, reason)
        self.call.hangup()
