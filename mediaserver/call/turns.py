"""Who has the floor: the turn-taking rules of a call, sans-IO.

`TurnTaker` takes VAD probabilities, STT word counts, timer expiries and what
the agent is doing (a `Floor` snapshot), and answers with decisions: a turn
started or ended, the recogniser should guess now (the caller paused), the
agent was interrupted, the interruption was false, the caller owes an answer.
It reads no clock and does no IO. Times are seconds on the media clock (RTP
time of the caller's audio); the shell passes `now` on that clock with every
input, turns `SetTimer.at` into a wall-clock timer, and reports expiries back
through `timer`. A fake clock therefore tests every rule in microseconds.

The rules:

- **Speech** is silero's hysteresis (`SpeechDetector`). The caller's speech
  ends at the last chunk at or above the threshold (a fading word's weaker
  chunks keep "speaking" but do not delay the end of the turn).
- **End of turn**, silence detector: `end_of_speech_timeout` of silence after
  the speech ends. Speech that starts again before that continues the turn.
- **End of turn**, turn model (`smart_turn`): after `smart_turn.pause` of
  silence the shell asks the model (`CheckTurn`). "Complete" ends the turn at
  once, unless the transcript so far ends on a word a sentence does not end on
  ("...my order to"); "incomplete" waits up to the ceiling (`max_wait`, or the
  agent's `end_of_speech_timeout`), or 0.7 s when the transcript looks
  finished; a model that failed is the silence detector. A final transcript
  that still ends unfinished is held (`hold_for`) until the ceiling, so
  the caller can go on; what they add joins it.
- **Barge-in**: speech while the agent's audio plays is a barge-in candidate;
  it interrupts once it lasted `barge_in.min_speech` and STT heard
  `barge_in.min_words` words (both 0: at once), or at once when its words
  match `barge_in.match`, or when it lasted `barge_in.interrupt_on_noise`.
- **False barge-in**: an interruption whose turn brings no words within
  `false_resume_window` of its speech ending (or whose transcript is empty)
  was noise: the agent resumes from the cut word, unless the sound lasted
  `interrupt_on_noise` (then it is kept as a real interruption).
- **Fast pause**: an onset the energy test caught pauses the agent's audio;
  speech silero does not confirm within `confirm_window` lets it play on.
- **Backchannels**: words over the agent that are only what a listener says
  ("mhm", "yeah yeah", `barge_in.backchannels`), or any words in less than
  `barge_in.short_overlap` of speech that hold no `interrupt_words` ("stop",
  "no", "wait") or `match`, are not a turn: an agent still talking goes on,
  an interrupted one resumes from the cut word.
- **Not understood**: a turn with no words is asked again when its speech
  lasted `MIN_UNDERSTOOD_SPEECH`; shorter (a cough, a click) is ignored.
- **Attention**: a silent caller gets the attention prompt after
  `attention_timeout`, then the inactivity hangup after `inactivity_timeout`.
  Not while the call is on hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mediaserver.call.records import Turn
from mediaserver.pipeline.settings import (
    SILENCE_TIMEOUT,
    BargeInSettings,
    TurnSettings,
    VadSettings,
)
from mediaserver.pipeline.vad.detector import SpeechDetector, SpeechStarted, SpeechStopped

__all__ = [
    "MIN_UNDERSTOOD_SPEECH",
    "AttentionDue",
    "BargeInDecided",
    "CheckTurn",
    "Decision",
    "FalseBargeIn",
    "Floor",
    "InactivityDue",
    "NoiseInterruption",
    "NotUnderstood",
    "Preempt",
    "SetTimer",
    "SpeechPaused",
    "SpeechResumed",
    "SpeechStart",
    "SpeechStop",
    "StopTimer",
    "TurnAbandoned",
    "TurnEnded",
    "TurnStarted",
    "TurnTaker",
    "Unpause",
]

#: Speech shorter than this that STT cannot read is ignored (a cough, a click).
MIN_UNDERSTOOD_SPEECH = 0.3
#: Longest turn (seconds) that speech after its end may reopen: the audio kept
#: for the recogniser (the listener keeps 8.5 s).
MAX_REJOIN = 8.0
# Timers fire on the wall clock mapped back to media time: allow rounding.
_EPS = 1e-3
#: The turn model is asked only when its answer could come this long (seconds)
#: before the ceiling: a check takes 30-100 ms on this machine's cores.
MODEL_LEAD = 0.1


@dataclass(frozen=True)
class Floor:
    """What the agent is doing, as the turn rules need it (the actor's snapshot).

    Attributes:
        reply: a reply is in the works (model, tools or audio).
        speaking: ...and its audio is playing (greeting or speaking).
        paused: ...and the fast onset test paused that audio.
        interrupted: a barge-in cut a reply; the caller's words decide whether
            it was real (kept as heard) or false (resumed).
    """

    reply: bool = False
    speaking: bool = False
    paused: bool = False
    interrupted: bool = False


@dataclass(frozen=True)
class SpeechStart:
    """VAD heard speech start at `media_time` (for the record)."""

    media_time: float


@dataclass(frozen=True)
class SpeechStop:
    """VAD heard speech stop at `media_time` (for the record)."""

    media_time: float


@dataclass(frozen=True)
class TurnStarted:
    """The caller took a turn (`turn.barge_in`: over the agent's audio)."""

    turn: Turn


@dataclass(frozen=True)
class SpeechPaused:
    """The caller paused inside the turn: a window recogniser may guess now."""

    turn: Turn


@dataclass(frozen=True)
class SpeechResumed:
    """The caller goes on after a pause: the guess no longer covers the turn."""

    turn: Turn


@dataclass(frozen=True)
class CheckTurn:
    """The caller paused: ask the turn model whether `turn` is complete (its
    speech so far ended at `speech_end`, media time)."""

    turn: Turn
    speech_end: float


@dataclass(frozen=True)
class Preempt:
    """The caller paused on words that look finished: an answer may be started
    now (preemptive generation), to be used if the final transcript is `text`."""

    turn: Turn
    text: str


@dataclass(frozen=True)
class TurnEnded:
    """The turn is over (speech ended at `speech_end`, media time): finalise STT."""

    turn: Turn
    speech_end: float


@dataclass(frozen=True)
class TurnAbandoned:
    """The turn is dropped without a transcript (its final will be ignored)."""

    turn: Turn


@dataclass(frozen=True)
class BargeInDecided:
    """The caller interrupts: cut the agent's reply."""

    turn: Turn


@dataclass(frozen=True)
class FalseBargeIn:
    """The interruption brought no words: resume the reply from the cut word."""

    why: str


@dataclass(frozen=True)
class NoiseInterruption:
    """Wordless sound long enough to interrupt (`interrupt_on_noise`): keep the
    cut reply as heard and give the caller the floor."""

    turn: Turn


@dataclass(frozen=True)
class Unpause:
    """The fast pause was not speech (or the speech is over): play on."""


@dataclass(frozen=True)
class NotUnderstood:
    """Speech that should have had words brought none: ask the caller again."""

    turn: Turn


@dataclass(frozen=True)
class AttentionDue:
    """The caller has been silent for `attention_timeout`: ask if they are there."""


@dataclass(frozen=True)
class InactivityDue:
    """Still silent after the attention prompt: say goodbye and hang up."""


@dataclass(frozen=True)
class SetTimer:
    """Arm (or re-arm) the timer `name` to expire at media time `at`."""

    name: str
    at: float


@dataclass(frozen=True)
class StopTimer:
    """Disarm the timer `name`."""

    name: str


Decision = (
    SpeechStart
    | SpeechStop
    | TurnStarted
    | SpeechPaused
    | SpeechResumed
    | CheckTurn
    | Preempt
    | TurnEnded
    | TurnAbandoned
    | BargeInDecided
    | FalseBargeIn
    | NoiseInterruption
    | Unpause
    | NotUnderstood
    | AttentionDue
    | InactivityDue
    | SetTimer
    | StopTimer
)


class TurnTaker:
    """The turn rules of one call (see the module docstring).

    The settings objects are read live: a tool action that changes
    `end_of_speech_timeout` for this call applies from the next chunk.

    Args:
        model: the turn model runs for this call (`smart_turn` and loaded).
        punctuated: the recogniser ends sentences with punctuation, so a
            transcript without it is not finished.

    Attributes:
        turn: the caller's open turn, if any.
        deaf: speech makes no turn (a tool put the caller on hold, or the
            caller failed authentication and only the refusal flow runs).
        on_hold: the call is on hold (no attention prompts).
    """

    def __init__(
        self,
        vad: VadSettings,
        turn: TurnSettings,
        barge_in: BargeInSettings,
        model: bool = False,
        punctuated: bool = False,
    ) -> None:
        self._vad = vad
        self._turn_cfg = turn
        self._barge_cfg = barge_in
        self.model = model
        self._punctuated = punctuated
        self._detector = SpeechDetector(vad)
        self._confident_end: float | None = None
        # The turn model's opinion of the current pause: asked for the speech
        # end `_asked`; its P(complete), or failed; the transcript's last word.
        self._asked: float | None = None
        self._prob: float | None = None
        self._failed = False
        self._text_unfinished: bool | None = None
        #: Media time the speech of the last ended turn stopped.
        self._ended_speech: float | None = None
        #: Ended turns whose final transcript has not come yet, while the
        #: caller already speaks again (a new open turn).
        self._finalising: dict[int, Turn] = {}
        self._ids = 0
        self._attention_given = False
        self.turn: Turn | None = None
        self.deaf = False
        self.on_hold = False

    # -- inputs -----------------------------------------------------------------

    def vad(self, media_time: float, prob: float, now: float, floor: Floor) -> list[Decision]:
        """One VAD chunk (ending at `media_time`) with its speech probability."""
        if prob >= self._vad.threshold:
            self._confident_end = media_time
        out: list[Decision] = []
        change = self._detector.update(media_time, prob)
        if isinstance(change, SpeechStarted):
            out += self._speech_start(change.media_time, floor)
        elif isinstance(change, SpeechStopped):
            out += self._speech_stop(change.media_time, now, floor)
        turn = self.turn
        if turn is None:
            return out
        if self._detector.speaking:
            turn.speech_s = media_time - turn.started_media
            out += self._maybe_barge_in(turn, floor)
            return out
        if turn.finalising:
            return out
        return out + self._endpoint(turn, media_time)

    def turn_checked(
        self, turn_id: int, speech_end: float, prob: float | None, now: float
    ) -> list[Decision]:
        """The turn model's answer to `CheckTurn` (`prob` None: it failed)."""
        turn = self.turn
        if (
            turn is None
            or turn.id != turn_id
            or turn.finalising
            or self._detector.speaking
            or self._asked != speech_end
        ):
            return []  # the caller went on meanwhile: a new pause asks again
        if prob is None:
            self._failed = True
        else:
            self._prob = prob
        return self._endpoint(turn, now)

    def transcript(self, turn_id: int, text: str, now: float) -> list[Decision]:
        """The recogniser's text of turn `turn_id` so far (a partial or a guess)."""
        turn = self.turn
        if turn is None or turn.id != turn_id or turn.finalising:
            return []
        turn.partial = text
        self._text_unfinished = self.unfinished(text) if text.strip() else None
        if not self.model or self._detector.speaking:
            return []
        out = self._endpoint(turn, now)
        if any(isinstance(d, CheckTurn) for d in out):
            return out  # the check brought its preemptive answer along
        return out + self._preempt(turn)

    def joins_last_turn(self, started_media: float) -> bool:
        """Whether speech starting at `started_media`, before the answer to the
        last turn is heard, joins that turn (the answer in the works is
        dropped): `barge_in.transparent`, within `transparent_max_time`."""
        cfg = self._barge_cfg
        last = self._ended_speech
        return cfg.transparent and (
            last is None or started_media - last <= cfg.transparent_max_time
        )

    def unfinished(self, text: str) -> bool:
        """Whether `text` ends on a word a sentence does not end on, or trails
        off (a recogniser writes "with..." or "to," for a voice that goes on),
        or, from a recogniser that punctuates, ends without a full stop."""
        end = text.rstrip()
        if end.endswith(("...", "\u2026", ",", "-")):
            return True
        if self._punctuated and end and not end.endswith((".", "?", "!")):
            return True
        # Digits count as words here: "...is 452" is finished.
        tokens = re.findall(r"[a-z0-9']+", text.lower())
        return bool(tokens) and tokens[-1] in set(self._turn_cfg.smart_turn.unfinished_words)

    def hold_for(self, text: str, now: float) -> float:
        """How long to hold the final transcript `text` of the turn that just
        ended for the caller to go on (0: answer now). Only with the turn model,
        and only a transcript that ends unfinished, up to the ceiling."""
        if not self.model or self._ended_speech is None or not self.unfinished(text):
            return 0.0
        return max(0.0, self._ended_speech + self._turn_cfg.ceiling(True) - now)

    def words(self, turn_id: int, count: int, floor: Floor) -> list[Decision]:
        """STT heard `count` words so far in turn `turn_id` (a partial transcript)."""
        turn = self.turn
        if turn is None or turn.id != turn_id:
            return []
        turn.words = count
        out: list[Decision] = [StopTimer("false_resume")] if count else []
        return out + self._maybe_barge_in(turn, floor)

    def final(self, turn_id: int) -> Turn | None:
        """STT's final transcript for `turn_id` arrived: the turn closes.

        Returns:
            The closed turn (the open one, or an ended one whose transcript was
            still coming when the caller spoke again), or None (stale).
        """
        turn = self.turn
        if turn is None or turn.id != turn_id:
            return self._finalising.pop(turn_id, None)
        self.turn = None
        return turn

    def empty_final(self, turn: Turn, now: float, floor: Floor) -> list[Decision]:
        """The closed `turn`'s transcript had no words: the interruption it made
        was false; speech long enough to be words gets asked again; a cough or a
        click is ignored."""
        if floor.interrupted:
            if self._noise_interrupts(turn):
                return [NoiseInterruption(turn)]
            return [FalseBargeIn("no words")]
        if turn.speech_s >= MIN_UNDERSTOOD_SPEECH:
            return [NotUnderstood(turn)]
        return self.idle(now)

    def backchannel(self, text: str, speech_s: float, floor: Floor) -> list[Decision] | None:
        """The closed turn (its words, `speech_s` seconds of speech), if it is a
        listener's backchannel said over the agent: the decisions that keep the
        agent's floor (None: it is a turn for the model).

        A backchannel is words that are only `barge_in.backchannels`, or any
        words in less than `barge_in.short_overlap` of speech without an
        `interrupt_words` entry or a `match`.
        """
        cfg = self._barge_cfg
        tokens = _tokens(text)
        if not (floor.speaking or floor.interrupted) or not tokens:
            return None
        if _only(tokens, self._backchannels()):
            why = "backchannel"
        elif speech_s < cfg.short_overlap and not self._wants_floor(text, tokens):
            why = "short overlap"
        else:
            return None
        return [FalseBargeIn(why)] if floor.interrupted else []

    def _wants_floor(self, text: str, tokens: list[str]) -> bool:
        """Whether a short overlap's words claim the floor (an `interrupt_words`
        entry, or `barge_in.match`)."""
        cfg = self._barge_cfg
        if cfg.match and re.search(cfg.match, text, re.IGNORECASE):
            return True
        words = " " + " ".join(tokens) + " "
        return any(f" {' '.join(_tokens(w))} " in words for w in cfg.interrupt_words)

    def content_words(self, text: str) -> int:
        """How many words of `text` count towards a barge-in: none when it is
        only a backchannel."""
        tokens = _tokens(text)
        return 0 if _only(tokens, self._backchannels()) else len(tokens)

    def _backchannels(self) -> list[tuple[str, ...]]:
        phrases = {tuple(_tokens(p)) for p in self._barge_cfg.backchannels}
        # Longest first, so "mm hmm" is not taken as "mm" and an unknown "hmm".
        return sorted((p for p in phrases if p), key=len, reverse=True)

    def drop(self, turn_id: int | None = None) -> Turn | None:
        """Close the open turn without a transcript (a failed recogniser).

        Args:
            turn_id: close only this turn (None: whichever is open).
        """
        turn = self.turn
        if turn is None or (turn_id is not None and turn.id != turn_id):
            return self._finalising.pop(turn_id, None) if turn_id is not None else None
        self.turn = None
        return turn

    def paused(self, now: float) -> list[Decision]:
        """The shell paused the agent's audio on a fast onset: wait for silero."""
        return [SetTimer("confirm", now + self._barge_cfg.confirm_window)]

    def idle(self, now: float) -> list[Decision]:
        """The floor is the caller's and they are silent: start the attention clock."""
        cfg = self._turn_cfg
        if self.on_hold:
            return []
        if not self._attention_given and cfg.attention_timeout > 0:
            return [SetTimer("attention", now + cfg.attention_timeout)]
        if self._attention_given and cfg.inactivity_timeout > 0:
            return [SetTimer("attention", now + cfg.inactivity_timeout)]
        return []

    def timer(self, name: str, floor: Floor, now: float) -> list[Decision]:
        """The timer `name` (armed by a `SetTimer`) expired at `now`."""
        turn = self.turn
        speaking = self._detector.speaking
        if name == "eos":
            if turn is not None and not turn.finalising and not speaking:
                return self._endpoint(turn, now)
        elif name == "confirm":
            if turn is None and not speaking:
                return [Unpause()]
        elif name == "false_resume":
            if (
                turn is not None
                and turn.words == 0
                and not speaking
                and not self._noise_interrupts(turn)
            ):
                self.turn = None
                return [TurnAbandoned(turn), FalseBargeIn("no words within the window")]
        elif name == "attention":
            if turn is not None or floor.reply:
                return []
            if not self._attention_given:
                self._attention_given = True
                return [AttentionDue()]
            return [InactivityDue()]
        return []

    def fast_pause_armed(self, floor: Floor) -> bool:
        """Whether an energy onset may pause the agent before silero confirms.

        Only when every onset is a barge-in (no minimum speech or words): a
        pause must be the first moment of a cut, not a guess that needs undoing.
        """
        cfg = self._barge_cfg
        return (
            cfg.enabled
            and cfg.fast_pause
            and cfg.min_speech == 0
            and cfg.min_words == 0
            and floor.speaking
            and not floor.paused
            and self.turn is None
        )

    # -- rules ------------------------------------------------------------------

    def _speech_start(self, onset: float, floor: Floor) -> list[Decision]:
        out: list[Decision] = [
            SpeechStart(onset),
            StopTimer("eos"),
            StopTimer("false_resume"),
            StopTimer("attention"),
        ]
        self._attention_given = False
        self._asked = self._prob = None
        self._failed = False
        self._text_unfinished = None
        if self.deaf:
            return out
        turn = self.turn
        if turn is not None and not turn.finalising:
            return [*out, SpeechResumed(turn)]
        start = onset
        if turn is not None:
            if self.joins_last_turn(onset) and onset - turn.started_media <= MAX_REJOIN:
                # The caller goes on before the last turn's transcript came:
                # one turn from its start, so the recogniser hears it whole
                # (its own final, now stale, is ignored).
                start = turn.started_media
            else:
                # Its transcript is still coming: it closes when it does.
                self._finalising[turn.id] = turn
        self._ids += 1
        turn = self.turn = Turn(
            self._ids, start, barge_in=floor.speaking and self._barge_cfg.enabled
        )
        out.append(TurnStarted(turn))
        return out + self._maybe_barge_in(turn, floor)

    def _speech_stop(self, end: float, now: float, floor: Floor) -> list[Decision]:
        out: list[Decision] = [SpeechStop(end)]
        turn = self.turn
        if turn is None:
            # Speech that made no turn (it began before this reply, or nobody
            # listens) paused the reply; it is over, so the reply plays on.
            if floor.paused:
                out += [StopTimer("confirm"), Unpause()]
            return out
        if not turn.finalising:
            out.append(SpeechPaused(turn))
        window = self._barge_cfg.false_resume_window
        if floor.interrupted and window > 0 and turn.words == 0:
            out.append(SetTimer("false_resume", now + window))
        return out

    def _maybe_barge_in(self, turn: Turn, floor: Floor) -> list[Decision]:
        cfg = self._barge_cfg
        if not (turn.barge_in and floor.reply):
            return []
        enough = turn.speech_s >= cfg.min_speech and turn.words >= cfg.min_words
        matched = bool(cfg.match and re.search(cfg.match, turn.partial, re.IGNORECASE))
        if not (enough or matched or self._noise_interrupts(turn)):
            return []
        turn.barge_in = False
        return [BargeInDecided(turn)]

    def _endpoint(self, turn: Turn, now: float) -> list[Decision]:
        """In silence at `now`: end the turn, ask the model, or wait (a timer)."""
        last = self._speech_end(turn)
        silence = now - last + _EPS
        out: list[Decision] = []
        if self.model and self._asked != last:
            pause = self._turn_cfg.smart_turn.pause
            if silence < pause:
                return [SetTimer("eos", last + pause)]
            if self._model_may_decide(silence):
                self._asked, self._prob, self._failed = last, None, False
                out += [CheckTurn(turn, last), *self._preempt(turn)]
        wait = self._wait()
        if silence >= wait:
            return out + self._end(turn, last)
        # Decide on time, not at the next chunk: the shell maps `at` to the
        # wall clock by when the audio arrived.
        return [*out, SetTimer("eos", last + wait)]

    def _model_may_decide(self, silence: float) -> bool:
        """Whether the turn model's answer, asked after `silence`, could end the
        turn before the ceiling does. Not when the transcript ends unfinished
        (the turn waits for the ceiling whatever the model says), nor when its
        answer would come after the ceiling: a check costs CPU every call shares."""
        ceiling = self._turn_cfg.ceiling(True)
        return not self._text_unfinished and ceiling - silence >= MODEL_LEAD

    def _preempt(self, turn: Turn) -> list[Decision]:
        """Preemptive generation: the caller paused on a transcript (of this
        stretch of speech) that looks finished."""
        if self._turn_cfg.preemptive and self._text_unfinished is False and not turn.finalising:
            return [Preempt(turn, turn.partial)]
        return []

    def _wait(self) -> float:
        """The silence after the speech that ends the turn, as known now."""
        cfg = self._turn_cfg
        ceiling = cfg.ceiling(self.model)
        if not self.model or self._text_unfinished:
            return ceiling
        if self._failed:
            return min(ceiling, SILENCE_TIMEOUT)
        if self._prob is None:
            return ceiling  # the answer re-decides
        if self._prob >= cfg.smart_turn.threshold:
            return 0.0
        return min(ceiling, SILENCE_TIMEOUT) if self._text_unfinished is False else ceiling

    def _noise_interrupts(self, turn: Turn) -> bool:
        limit = self._barge_cfg.interrupt_on_noise
        return limit > 0 and turn.speech_s >= limit

    def _end(self, turn: Turn, speech_end: float) -> list[Decision]:
        turn.finalising = True
        self._ended_speech = speech_end
        return [StopTimer("eos"), TurnEnded(turn, speech_end)]

    def _speech_end(self, turn: Turn) -> float:
        last = self._confident_end
        if last is None or last < turn.started_media:
            return self._detector.last_speech_end or turn.started_media
        return last


def _tokens(text: str) -> list[str]:
    """Lower-case words, hyphens as spaces ("Uh-huh." -> ["uh", "huh"])."""
    return re.findall(r"[a-z']+", text.lower().replace("-", " "))


def _only(tokens: list[str], phrases: list[tuple[str, ...]]) -> bool:
    """Whether `tokens` is one or more of `phrases`, back to back (and not empty)."""
    at = 0
    while at < len(tokens):
        match = next((p for p in phrases if tuple(tokens[at : at + len(p)]) == p), None)
        if match is None:
            return False
        at += len(match)
    return bool(tokens)
