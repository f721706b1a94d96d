"""The caller's side of a call: audio in, VAD, the turn taker, the recogniser.

`Listener` is the IO shell around the sans-IO `TurnTaker` (`call/turns.py`):
it resamples the caller's audio for VAD and STT, keeps the recent audio (a
pre-roll so a turn's first syllable reaches the recogniser, and the turn's
last 8 s for the turn model), maps the media clock to the wall clock for
timers, runs the fast onset test, and carries out the decisions that concern
listening (timers, the recogniser feed of each turn, turn model checks).
Decisions about the agent's reply (barge-in, resume, prompts) go to the
actor's `decide`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mediaserver.call import events as ev
from mediaserver.call import turns as tt
from mediaserver.call.listening import SttFeed
from mediaserver.call.ports import CallPorts
from mediaserver.call.records import Turn, TurnMetrics
from mediaserver.call.runtime import PipelineRuntime
from mediaserver.call.spec import AgentSpec
from mediaserver.call.turns import Floor, TurnTaker
from mediaserver.codecs.resample import Resampler
from mediaserver.pipeline.settings import PipelineSettings
from mediaserver.pipeline.stt.base import STT_RATE
from mediaserver.pipeline.vad.onset import OnsetDetector

__all__ = ["PREROLL", "Listener"]

#: Audio kept from before VAD fires, so the first syllable reaches STT.
PREROLL = 0.3
#: Audio before the turn's speech the turn model hears (as it was trained).
MODEL_PREROLL = 0.5
#: Audio kept: the turn model's 8 s window and its pre-roll.
KEPT = 8.5


class Listener:
    """Listens to one caller (see the module docstring).

    Args:
        ports: the actor's plumbing.
        runtime: the shared VAD and STT.
        agent: whose hints bias the recogniser.
        settings: the call's settings (read live).
        sample_rate: the call's audio rate.
        floor: what the agent is doing now (the actor's snapshot).
        decide: the actor's handler for decisions about the reply.
    """

    def __init__(
        self,
        ports: CallPorts,
        runtime: PipelineRuntime,
        agent: AgentSpec,
        settings: PipelineSettings,
        sample_rate: int,
        floor: Callable[[], Floor],
        decide: Callable[[tt.Decision], None],
    ) -> None:
        self._ports = ports
        self._runtime = runtime
        self._settings = settings
        self._rate = sample_rate
        self._floor = floor
        self._decide = decide
        self._turns = runtime.turns_for(settings.turn)
        self.taker = TurnTaker(
            settings.vad,
            settings.turn,
            settings.barge_in,
            model=self._turns is not None,
            punctuated=runtime.stt.punctuates,
        )
        self._resampler = Resampler(sample_rate, STT_RATE)
        #: (media time, 16 kHz audio) of the last `KEPT` seconds.
        self._recent: deque[tuple[float, np.ndarray]] = deque()
        self._onset = OnsetDetector(sample_rate)
        self._vad = runtime.vad.open(lambda t, p: ports.post(ev.VadProb(t, p)))
        self._stt = runtime.stt.open(runtime.hints(agent))
        #: The open turn's recogniser feed.
        self._feed: SttFeed | None = None
        #: Wall clock minus media time, from the newest audio (None before any).
        self.media_offset: float | None = None

    @property
    def turn(self) -> Turn | None:
        """The caller's open turn."""
        return self.taker.turn

    # -- clocks -------------------------------------------------------------------

    def wall(self, media_time: float) -> float:
        """`media_time` on the wall clock (`time.monotonic`), by when its audio arrived."""
        return media_time + (self.media_offset or 0.0)

    def now(self) -> float:
        """Now on the media clock (the turn taker's time)."""
        return time.monotonic() - (self.media_offset or 0.0)

    # -- inputs ---------------------------------------------------------------------

    def media_audio(self, pcm: np.ndarray, media_time: float, gap: bool) -> None:
        """Caller audio from the media plane (with the eager jitter buffer, as it
        arrives). The fast onset test runs here, at once, because barge-in cannot
        wait for the inbox; it only reads state and posts."""
        if self._onset.update(pcm, armed=self.taker.fast_pause_armed(self._floor())):
            self._ports.post(ev.SpeechOnset(time.monotonic()))
        self._ports.post(ev.AudioIn(pcm, media_time, gap))

    def audio(self, event: ev.AudioIn) -> None:
        """The caller's audio, in the inbox's order: to VAD, pre-roll and the open turn."""
        pcm = self._resampler.process(event.pcm)
        if not len(pcm):
            return
        duration = len(event.pcm) / self._rate
        self.media_offset = time.monotonic() - (event.media_time + duration)
        self._vad.push(pcm, event.media_time)
        self._recent.append((event.media_time, pcm))
        while self._recent and self._recent[0][0] < event.media_time - KEPT:
            self._recent.popleft()
        turn = self.taker.turn
        if self._feed is not None and turn is not None and not turn.finalising:
            self._feed.audio(pcm)

    def vad(self, event: ev.VadProb) -> None:
        """A VAD probability."""
        self.apply(self.taker.vad(event.media_time, event.prob, self.now(), self._floor()))

    def partial(self, event: ev.SttPartial) -> None:
        """An interim transcript: its words (backchannels aside) may make a barge-in."""
        turn = self.taker.turn
        if turn is None or turn.id != event.turn:
            return
        turn.partial = event.text
        words = self.taker.content_words(event.text)
        self.apply(self.taker.words(turn.id, words, self._floor()))
        self.apply(self.taker.transcript(turn.id, event.text, self.now()))

    def turn_checked(self, event: ev.TurnChecked) -> None:
        """The turn model's answer."""
        fields: dict[str, object] = {"ms": round(event.seconds * 1000, 1)}
        if event.prob is not None:
            fields["prob"] = round(event.prob, 3)
            fields["complete"] = event.prob >= self._settings.turn.smart_turn.threshold
        if event.error:
            fields["error"] = event.error
        self._ports.note("turn_check", turn=event.turn, **fields)
        self.apply(self.taker.turn_checked(event.turn, event.speech_end, event.prob, self.now()))

    def final(self, event: ev.SttFinal) -> Turn | None:
        """The final transcript closes its turn (None: a stale final, ignored)."""
        turn = self.taker.final(event.turn)
        if turn is not None:
            if self._feed is not None and self._feed.turn == turn.id:
                self._feed = None
            if turn.metrics is not None:
                turn.metrics.stt_final = time.monotonic()
        return turn

    def empty(self, turn: Turn) -> None:
        """`turn`'s transcript had no words."""
        self.apply(self.taker.empty_final(turn, self.now(), self._floor()))

    def drop(self, turn_id: int) -> bool:
        """The recogniser failed on `turn_id`: close it without a transcript."""
        if self.taker.drop(turn_id) is None:
            return False
        if self._feed is not None and self._feed.turn == turn_id:
            self._feed = None
        return True

    def paused(self) -> None:
        """The actor paused the agent on a fast onset: wait for silero to confirm."""
        self.apply(self.taker.paused(self.now()))

    def idle(self) -> None:
        """The floor is the caller's: start the attention clock."""
        self.apply(self.taker.idle(self.now()))

    def timer(self, name: str) -> None:
        """One of the turn taker's timers expired."""
        self.apply(self.taker.timer(name, self._floor(), self.now()))

    def close(self) -> None:
        """The call ended: release VAD and the recogniser stream."""
        self._vad.close()
        if self._feed is None:
            self._stt.close()
        else:
            # A feed (this one, or the last turn's it waits for) may be inside
            # the executor with the stream; close after both.
            stt, feed = self._stt, self._feed
            tasks = {feed.task, *([feed.after] if feed.after is not None else [])}
            pending = [t for t in tasks if not t.done()]

            def closed(task: asyncio.Task[Any]) -> None:
                pending.remove(task)
                if not pending:
                    stt.close()

            for task in pending:
                task.add_done_callback(closed)
            feed.task.cancel()
            if not pending:
                stt.close()

    # -- decisions --------------------------------------------------------------------

    def apply(self, decisions: Sequence[tt.Decision]) -> None:
        """Carry out the turn taker's decisions in order; pass on the reply's."""
        ports = self._ports
        for decision in decisions:
            match decision:
                case tt.SetTimer(name, at):
                    ports.arm(name, max(0.0, self.wall(at) - time.monotonic()))
                case tt.StopTimer(name):
                    ports.disarm(name)
                case tt.SpeechStart(media_time):
                    ports.note("speech_start", media_time=round(media_time, 3))
                case tt.SpeechStop(media_time):
                    ports.note("speech_stop", media_time=round(media_time, 3))
                case tt.TurnStarted(turn):
                    self._decide(decision)  # the reply in the works may be stale
                    self._begin(turn)
                case tt.SpeechPaused():
                    if self._feed is not None:
                        self._feed.pause()
                case tt.SpeechResumed():
                    if self._feed is not None:
                        self._feed.resume()
                    self._decide(decision)  # a preemptive answer is stale
                case tt.CheckTurn(turn, speech_end):
                    self._check(turn, speech_end)
                case tt.TurnEnded(turn, speech_end):
                    if turn.metrics is not None:
                        turn.metrics.speech_end = self.wall(speech_end)
                        turn.metrics.eos_decided = time.monotonic()
                    if self._feed is not None:
                        self._feed.end()
                case tt.TurnAbandoned():
                    if self._feed is not None:
                        self._feed.end()  # its final arrives for a dead turn: ignored
                    self._feed = None
                case _:
                    self._decide(decision)

    def _begin(self, turn: Turn) -> None:
        turn.metrics = TurnMetrics(turn.id)
        last = self._feed.task if self._feed is not None and not self._feed.task.done() else None
        feed = self._feed = SttFeed(
            turn.id,
            self._stt,
            self._settings.stt,
            self._runtime.stt_executor,
            self._runtime.faults,
            self._ports.post,
            self._ports.spawn,
            after=last,
        )
        for t, pcm in self._recent:
            if t >= turn.started_media - PREROLL:
                feed.audio(pcm)

    def _check(self, turn: Turn, speech_end: float) -> None:
        """Ask the turn model about the turn's audio so far; the answer comes
        back through the inbox (`TurnChecked`)."""
        turns = self._turns
        if turns is None:
            return
        start = turn.started_media - MODEL_PREROLL
        audio = np.concatenate([pcm for t, pcm in self._recent if t >= start] or [np.zeros(0)])
        asked = time.monotonic()
        post = self._ports.post

        def answered(future: asyncio.Future[float]) -> None:
            seconds = time.monotonic() - asked
            if future.cancelled():
                return
            error = future.exception()
            if error is None:
                post(ev.TurnChecked(turn.id, speech_end, future.result(), seconds))
            else:
                post(ev.TurnChecked(turn.id, speech_end, None, seconds, repr(error)))

        turns.check(audio).add_done_callback(answered)
