"""The agent's replies: fixed phrases and model answers, from the first token to
the last frame the caller heard.

`Replies` holds the one reply in the works and carries it through: the model's
steps (streamed in a child task), the tools each step asks for and the
commands their results carry, the text to the `Speaker`, the frames reported
sent, and what ends up in the conversation: only what the caller heard. An
interruption cuts the reply (`Interruptions` keeps it until the caller's words
say whether it was real); a false one resumes from the cut word.

It runs inside the actor's task and is driven by the actor; it moves the
lifecycle through `go` and hands a reply that was fully said back through
`finished`, where the actor decides what the call does next.
"""

from __future__ import annotations

import dataclasses
import time
import wave
from collections.abc import Callable, Coroutine
from typing import Any

from mediaserver.call import commands as cmd
from mediaserver.call import events as ev
from mediaserver.call.conversation import Conversation
from mediaserver.call.errors import ErrorKind, llm_error_kind
from mediaserver.call.flow import BUILTIN_TOOLS, Flow
from mediaserver.call.interruptions import Heard, Interruptions
from mediaserver.call.lifecycle import CallState, Lifecycle
from mediaserver.call.ports import CallPorts
from mediaserver.call.records import AgentReply, Turn, TurnMetrics
from mediaserver.call.speaker import Speaker
from mediaserver.call.tools import ToolRunner
from mediaserver.call.turns import Floor
from mediaserver.call.voicing import FrameTag
from mediaserver.media.session import RtpSession
from mediaserver.media.wavfile import load_wav
from mediaserver.pipeline.llm.base import (
    LlmBackend,
    LlmError,
    Message,
    Token,
    ToolCall,
    ToolCalls,
)
from mediaserver.pipeline.settings import PipelineSettings

__all__ = ["Replies"]


class Replies:
    """The agent's side of the conversation (see the module docstring).

    Args:
        ports: the actor's plumbing.
        life: the call's lifecycle (read; changed only through `go`).
        go: move the lifecycle (the actor's, so every transition is recorded).
        finished: called with a reply the caller heard to its end.
        convo: the conversation.
        llm: the model (with its retries and fallbacks).
        tools: runs the model's tool calls.
        speaker: voices the replies.
        wall: media time to the wall clock (None before any caller audio).
        media: the call's media session (DTMF and background audio commands).
        settings: the call's settings (read live).
        log: the call's logger.
    """

    def __init__(
        self,
        ports: CallPorts,
        life: Lifecycle,
        go: Callable[[CallState, str], None],
        finished: Callable[[AgentReply], None],
        convo: Conversation,
        llm: LlmBackend,
        tools: ToolRunner,
        speaker: Speaker,
        wall: Callable[[float], float | None],
        media: RtpSession,
        settings: PipelineSettings,
        log: Any,
    ) -> None:
        self._ports = ports
        self._life = life
        self._go = go
        self._finished = finished
        self._convo = convo
        self._llm = llm
        self._tools = tools
        self._speaker = speaker
        self._media = media
        self._settings = settings
        self._log = log
        self.interruptions = Interruptions(ports, speaker, wall, log)
        #: Real interruptions acknowledged so far (`barge_in.acknowledge`).
        self._acknowledged = 0
        #: The reply in the works.
        self.current: AgentReply | None = None
        #: Latency of every answered turn, in order.
        self.turns: list[TurnMetrics] = []
        #: What the caller said in each turn, until the turn's record is written.
        self.caller_text: dict[int, str] = {}

    def floor(self) -> Floor:
        """What the agent is doing, for the turn taker."""
        reply = self.current
        return Floor(
            reply=reply is not None,
            speaking=reply is not None
            and self._life.state in (CallState.SPEAKING, CallState.GREETING),
            paused=reply is not None and reply.paused_at is not None,
            interrupted=self.interruptions.pending is not None,
        )

    def of(self, reply_id: int | None) -> AgentReply | None:
        """The reply in the works if it is `reply_id` (else an event for a dead one)."""
        reply = self.current
        return reply if reply is not None and reply.id == reply_id else None

    # -- starting and stopping --------------------------------------------------------

    def say(self, text: str, *, prefix: str = "", then_hangup: bool = False) -> AgentReply:
        """Speak fixed text (greeting, prompts, recovery phrases, resumed replies)."""
        self.cancel()
        reply = self.current = self._speaker.new("fixed", None)
        reply.prefix = prefix
        reply.then_hangup = then_hangup
        self._speaker.speak(reply, text, end=True)
        if self._life.state not in (CallState.GREETING, CallState.ENDING):
            self._go(CallState.SPEAKING, "say")
        return reply

    def answer(self, metrics: TurnMetrics | None, draft: str | None = None) -> None:
        """Ask the model for the next reply (the caller's turn, or the greeting).

        Args:
            metrics: the turn's latency record.
            draft: a preemptive answer to these words of a turn not over yet:
                its audio and tools wait for `confirm`.
        """
        flow = self._convo.flow
        if flow is not None and flow.gathering:
            if draft is None:
                self._gather(flow)
            return  # a gather step's questions are asked here, not by the model
        self.cancel()
        reply = self.current = self._speaker.new("llm", metrics)
        reply.draft, reply.draft_at = draft, time.monotonic()
        if self._life.state != CallState.GREETING:
            self._go(CallState.THINKING, "caller turn ended")
        self._step(reply)

    def _gather(self, flow: Flow) -> None:
        """A gather step: the caller's words answer its question; say the next."""
        last = self._convo.messages[-1]
        said = (last.content or "") if last.role == "user" else ""
        step = flow.step
        outcome = flow.gather(said)
        if outcome.stored is not None:
            key, value = outcome.stored
            self._convo.gathered(key, value, outcome.into)
            self._ports.note("gather", step=step, key=key, value=value)
        if flow.step != step:
            self._convo.move_done()
            self._ports.note("step", context=flow.context, step=flow.step, by="gather")
        self.say(outcome.say)

    @property
    def draft(self) -> str | None:
        """The words the preemptive answer in the works answers (None: none)."""
        return self.current.draft if self.current is not None else None

    def confirm(self, text: str) -> bool:
        """The turn ended on `text`: play the preemptive answer if it answers
        exactly that (True), else drop it (False)."""
        reply = self.current
        if reply is None or reply.draft is None:
            return False
        if reply.draft != text:
            self.drop("the transcript changed")
            return False
        reply.draft = None
        head_start = round((time.monotonic() - reply.draft_at) * 1000, 1)
        self._ports.note("preemptive", reply=reply.id, used=True, head_start_ms=head_start)
        held, reply.held = reply.held, []
        for event in held:
            if isinstance(event, ev.LlmToolCalls):
                self.tool_calls(event)
            else:
                self.llm_done(event)
        self._speaker.unpause(reply)
        self._maybe_finished(reply)
        return True

    def preempt(self, turn: Turn, said: str) -> None:
        """Start answering `said` (normalised words that look finished) before
        `turn` is over: the answer waits for `confirm`."""
        draft = (self._convo.pending_user + said).strip()
        if self.draft == draft or (self.current is not None and self.draft is None):
            return  # the same words, or the agent is busy with something else
        self.drop("the transcript changed")
        self._ports.note("preempt", turn=turn.id, text=draft)
        self._convo.caller(draft)
        self.answer(turn.metrics, draft=draft)

    def drop(self, why: str) -> None:
        """Drop the preemptive answer in the works (and the words it answered)."""
        reply = self.current
        if reply is None or reply.draft is None:
            return
        self._ports.note("preemptive", reply=reply.id, used=False, why=why)
        self.cancel()
        self._convo.take_back_draft(reply.draft)
        self._go(CallState.LISTENING, "preemptive answer dropped")

    def cancel(self) -> None:
        """Drop the reply in the works: its model, TTS and tools stop now."""
        reply, self.current = self.current, None
        if reply is None:
            return
        for task in reply.tasks():
            task.cancel()
        reply.tools_pending.clear()
        self._ports.disarm("filler")

    def speak_into(self, reply: AgentReply, text: str) -> None:
        """Voice extra text inside the running reply (a filler while a tool works)."""
        self._speaker.speak(reply, text, flush=True)
        reply.step_start = len(reply.text)

    # -- the model ----------------------------------------------------------------------

    def _step(self, reply: AgentReply, tools: bool = True) -> None:
        reply.llm_done = False
        reply.step_start = len(reply.text)
        if reply.metrics is not None and not reply.metrics.llm_start:
            reply.metrics.llm_start = time.monotonic()
        specs = self._convo.tools() if tools else []
        messages = list(self._convo.messages)
        reply.llm_task = self._ports.spawn(self._run_llm(reply.id, messages, specs))

    async def _run_llm(self, reply: int, messages: list[Message], tools: list[Any]) -> None:
        """Stream one step into the inbox (retries and fallbacks are the model's;
        what reaches here is final)."""
        post = self._ports.post
        try:
            async for item in self._llm.stream(messages, tools):
                if isinstance(item, Token):
                    post(ev.LlmToken(reply, item.text))
                elif isinstance(item, ToolCalls):
                    post(ev.LlmToolCalls(reply, item.calls))
        except LlmError as exc:
            post(ev.StageError(llm_error_kind(exc), "llm", str(exc), reply=reply))
            return
        post(ev.LlmDone(reply))

    def token(self, event: ev.LlmToken) -> None:
        """Model text: on to the speaker, a clause at a time."""
        reply = self.of(event.reply)
        if reply is None:
            return
        if reply.metrics is not None and not reply.metrics.llm_first_token:
            reply.metrics.llm_first_token = time.monotonic()
        self._speaker.speak(reply, event.text)

    def llm_done(self, event: ev.LlmDone) -> None:
        """A model step ended: the next step waits for its tools, or the text is complete."""
        reply = self.of(event.reply)
        if reply is None:
            return
        if reply.held:
            reply.held.append(event)  # the end of a step whose tools wait (a draft)
            return
        if reply.step_has_tools:
            # This step asked for tools: the next step starts once they are all back.
            reply.step_has_tools = False
            if not reply.tools_pending:
                self._after_tools(reply)
            return
        reply.llm_done = True
        reply.llm_task = None
        self._speaker.speak(reply, "", end=True)

    # -- audio out ---------------------------------------------------------------------

    def tts_audio(self, event: ev.TtsAudio) -> None:
        """Synthesised audio: framed and played."""
        reply = self.of(event.reply)
        if reply is not None:
            self._speaker.audio(reply, event)

    def tts_done(self, event: ev.TtsDone) -> None:
        """TTS has said all the text it was given."""
        reply = self.of(event.reply)
        if reply is not None:
            self._speaker.done(reply)
            self._maybe_finished(reply)

    def frame_sent(self, event: ev.FrameSent) -> None:
        """A frame left on the wire (the caller heard it)."""
        tag = event.tag
        if not isinstance(tag, FrameTag):
            return
        reply = self.current
        if reply is not None and reply.id == tag.reply:
            if self._speaker.sent(reply, tag):
                self._first_frame(reply)
            self._maybe_finished(reply)
        else:
            self.interruptions.sent(tag)

    def _first_frame(self, reply: AgentReply) -> None:
        metrics = reply.metrics
        if metrics is None or not metrics.speech_end:
            return
        metrics.first_frame_sent = time.monotonic()
        self.turns.append(metrics)
        summary = metrics.summary()
        self._ports.note("turn_latency", turn=metrics.turn, **summary)
        self._log.info("turn_latency", turn=metrics.turn, **summary)

    def _maybe_finished(self, reply: AgentReply) -> None:
        if not (
            reply.llm_done
            and reply.draft is None
            and not reply.held
            and not reply.tools_pending
            and reply.finished_framing
            and reply.voicing.all_sent
        ):
            return
        self.current = None
        text = reply.prefix + self._speaker.said(reply)
        # An LLM reply's earlier steps are already in the conversation (with
        # their tool calls); fixed text (greeting, prompts) is kept whole.
        said = self._speaker.said(reply, reply.step_start) if reply.kind == "llm" else text
        self._convo.agent_said(said)
        self._ports.note("agent_said", reply=reply.id, text=text)
        self._log.info("agent_said", reply=reply.id, text=text)
        self._record_turn(reply, heard=text)
        self._finished(reply)

    def _record_turn(self, reply: AgentReply, *, heard: str) -> None:
        """One caller turn and the reply to it: the texts and the latency split."""
        metrics = reply.metrics
        if metrics is None:
            return
        self._ports.note(
            "turn",
            turn=metrics.turn,
            caller_text=self.caller_text.pop(metrics.turn, ""),
            assistant_generated=reply.prefix + reply.text,
            assistant_heard=heard,
            latency_ms=metrics.summary() if metrics.first_frame_sent else {},
        )

    # -- interruptions ------------------------------------------------------------------

    def pause(self, onset: float) -> None:
        """Maybe someone started talking (their sound arrived at `onset`): stop
        the audio now, keep the reply."""
        reply = self.current
        if reply is None:
            return
        self._speaker.pause(reply, onset)
        self._ports.note("barge_in_pause", reply=reply.id, flushed_frames=reply.paused_frames)
        self._log.info("barge_in_pause", reply=reply.id, flushed_frames=reply.paused_frames)

    def unpause(self) -> None:
        """It was not speech: play on from the word the pause cut."""
        reply = self.current
        if reply is None or reply.paused_at is None:
            return
        frames = self._speaker.unpause(reply)
        self._ports.note("barge_in_unpause", reply=reply.id, frames=frames)
        self._log.info("barge_in_unpause", reply=reply.id, frames=frames)

    def interrupt(self, onset_media: float) -> None:
        """The caller barged in (speech from `onset_media`): cut the reply."""
        reply = self.current
        if reply is None:
            return
        self.interruptions.cut(reply, onset_media)
        self.cancel()
        self._go(CallState.LISTENING, "barge-in")

    def commit(self) -> Heard | None:
        """The interruption was real: keep exactly what the caller heard.

        Returns:
            What was heard of the cut reply (None: no interruption pending).
        """
        real = self.interruptions.real()
        if real is None:
            return None
        reply, heard = real.reply, real.heard
        self._record_turn(reply, heard=heard)
        # Earlier LLM steps (text before a tool call) are already in the conversation.
        self._convo.agent_said(heard[reply.step_start :] if reply.kind == "llm" else heard)
        if self._acknowledged < self._settings.barge_in.acknowledge:
            self._acknowledged += 1
            self._ports.note("acknowledge", reply=reply.id)
            self._convo.note(
                "The caller interrupted you: they heard only what you said last. "
                "Briefly acknowledge the interruption, then answer them."
            )
        return real

    def resume(self, why: str) -> bool:
        """A false interruption: go on from the cut word.

        Returns:
            True when nothing was left to say (the floor is the caller's).
        """
        pending = self.interruptions.pending
        late = pending is not None and (
            time.monotonic() - pending[1].decided > self._settings.barge_in.resume_within
        )
        resumption = self.interruptions.false(why)
        if resumption is None:
            return False
        if late:
            # Going on mid-sentence after a long pause sounds broken: ask instead.
            self._convo.agent_said(resumption.heard)
            self._ports.note("go_ahead", reply=resumption.reply.id)
            self.say(self._settings.barge_in.go_ahead)
            return False
        if resumption.rest.strip():
            self.say(resumption.rest.lstrip(), prefix=resumption.heard)
            return False
        self._convo.agent_said(resumption.heard)
        return bool(resumption.heard.strip())

    # -- tools and their commands ---------------------------------------------------------

    def tool_calls(self, event: ev.LlmToolCalls) -> None:
        """The model asks for tools: run them all, a filler if they take long."""
        reply = self.of(event.reply)
        if reply is None:
            return
        if reply.draft is not None:
            reply.held.append(event)  # no side effects before the turn is over
            return
        self._convo.tool_calls(reply.text[reply.step_start :], list(event.calls))
        reply.tool_calls_made += len(event.calls)
        reply.step_has_tools = True
        turn = reply.metrics.turn if reply.metrics is not None else None
        for call in event.calls:
            self._ports.note(
                "tool_call", reply=reply.id, turn=turn, name=call.name, arguments=call.arguments
            )
            run = self._flow_tool(reply, call) or self._tools.run(
                reply.id, call, self._convo.tool_data()
            )
            reply.tools_pending[call.id] = self._ports.spawn(run)
        fillers = self._settings.fillers
        if fillers.enabled and event.calls:
            self._ports.arm("filler", fillers.after)

    def _flow_tool(self, reply: AgentReply, call: ToolCall) -> Coroutine[Any, Any, None] | None:
        """A call the flow answers itself: a move (next_step, change_context), or
        a tool the current step does not allow (refused). None: run the tool."""
        flow = self._convo.flow
        if flow is None:
            return None
        if call.name in BUILTIN_TOOLS:
            target = str(call.arguments.get("step" if call.name == "next_step" else "context", ""))
            move = cmd.ChangeStep(target) if call.name == "next_step" else cmd.ChangeContext(target)
            before = (flow.context, flow.step)
            content, error = self._convo.move(move), None
            if (flow.context, flow.step) != before:
                self._ports.note("step", context=flow.context, step=flow.step, by=call.name)
            else:
                error = "refused"
        elif not flow.allows(call.name):
            content = f"The tool {call.name} is not available in step {flow.step}."
            error = "not_allowed"
            self._ports.note("tool_refused", name=call.name, step=flow.step)
        else:
            return None

        async def answered() -> None:
            self._ports.post(ev.ToolResult(reply.id, call, content, 0.0, error=error))

        return answered()

    def filler(self) -> None:
        """The tools run past the filler threshold: say something."""
        reply = self.current
        if reply is None or not reply.tools_pending or reply.filler_said:
            return
        phrases = self._tools.fillers(self._convo.tool_names(reply.tools_pending))
        if phrases:
            reply.filler_said = True
            phrase = phrases[(reply.id - 1) % len(phrases)]
            self._ports.note("filler", phrase=phrase)
            self.speak_into(reply, phrase + " ")

    def tool_result(self, event: ev.ToolResult) -> None:
        """A tool is back: its commands now, the model's next step once all are back."""
        reply = self.of(event.reply)
        if reply is None or event.call.id not in reply.tools_pending:
            return
        del reply.tools_pending[event.call.id]
        reply.tool_results.append(event)
        self._ports.note(
            "tool",
            name=event.call.name,
            arguments=event.call.arguments,
            result=event.content,
            duration_s=round(event.duration_s, 4),
            error=event.error,
        )
        if event.error:
            self._log.warning("tool_failed", tool=event.call.name, error=event.error)
        for command in event.commands:
            self._execute(reply, command)
        if reply.tools_pending or reply.step_has_tools:
            return  # more results to come, or the step's stream has not ended yet
        self._after_tools(reply)

    def _after_tools(self, reply: AgentReply) -> None:
        """Every tool of the step is back: feed the results to the model again."""
        self._ports.disarm("filler")
        for result in reply.tool_results:
            self._convo.tool_result(result.call, result.content)
        reply.tool_results = []
        self._step(reply, tools=reply.tool_calls_made < self._settings.llm.max_tool_calls)

    def _execute(self, reply: AgentReply, command: cmd.Command) -> None:
        """Carry out one command of a tool result (what follows the reply, on it)."""
        if isinstance(command, cmd.Unsupported):
            self._log.warning("action_unsupported", action=command.action)
            self._ports.note("action_unsupported", name=command.action, data=command.data)
            return
        self._ports.note("action", name=command.name, data=dataclasses.asdict(command))
        flow = self._convo.flow
        before = (flow.context, flow.step) if flow is not None else None
        if self._convo.apply(command):
            if flow is not None and (flow.context, flow.step) != before:
                self._ports.note("step", context=flow.context, step=flow.step, by="action")
            return
        match command:
            case cmd.Say(text):
                self.speak_into(reply, f"{text} ")
            case cmd.Hangup():
                reply.then_hangup = True
            case cmd.SetEndOfSpeech(seconds):
                self._settings.turn.end_of_speech_timeout = seconds
            case cmd.SendDtmf(digits):
                for digit in digits:
                    self._media.send_dtmf(digit)
            case cmd.Hold(seconds):
                reply.then_hold = seconds
            case cmd.PlayBackground(file):
                self.background(file)
            case cmd.StopBackground():
                self._media.play_background(None)
            case cmd.RecordCall() | cmd.StopRecordCall() | cmd.PauseRecordCall():
                self._recording(command)
            case cmd.Transfer(dest):
                # After the reply is said (the caller hears "transferring you"), REFER.
                reply.then_transfer = dest
                reply.warm_transfer = command if command.warm else None

    def _recording(self, command: cmd.Command) -> None:
        """record_call, stop_record_call, pause/resume: on the call's session."""
        media = self._media
        match command:
            case cmd.RecordCall(control):
                folder = media.settings.recordings_dir
                if folder is None:
                    return
                path = folder / f"{media.settings.record_name}-{control}.wav"
                started = media.start_recording(path)
                self._ports.note("recording", event="started" if started else "already_recording",
                                 control_id=control, path=str(path))  # fmt: skip
            case cmd.StopRecordCall():
                ended = media.stop_recording()
                self._ports.note("recording", event="stopped", path=str(ended) if ended else None)
            case cmd.PauseRecordCall(paused):
                if media.pause_recording(paused):
                    self._ports.note("recording", event="paused" if paused else "resumed")

    def background(self, path: str) -> None:
        """Mix a WAV (any rate, mono or stereo) under the conversation."""
        try:
            pcm = load_wav(path, self._media.sample_rate)
        except (OSError, EOFError, ValueError, wave.Error) as exc:
            self._ports.post(
                ev.StageError(
                    ErrorKind.MEDIA_FAILURE,
                    "playback",
                    f"{path}: {exc}",
                    recovery="not played",
                    final=False,
                )
            )
            return
        self._ports.note("background_file", file=path)
        self._media.rephase()
        self._media.play_background(pcm)
