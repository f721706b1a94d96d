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
- **End of turn**: `end_of_speech_timeout` of silence after the speech ends.
  Speech that starts again before that continues the same turn.
- **Barge-in**: speech while the agent's audio plays is a barge-in candidate;
  it interrupts once it lasted `barge_in.min_speech` and STT heard
  `barge_in.min_words` words (both 0: at once).
- **False barge-in**: an interruption whose turn brings no words within
  `false_resume_window` of its speech ending (or whose transcript is empty)
  was noise: the agent resumes from the cut word.
- **Fast pause**: an onset the energy test caught pauses the agent's audio;
  speech silero does not confirm within `confirm_window` lets it play on.
- **Backchannels**: words over the agent that are only what a listener says
  ("mhm", "yeah yeah", `barge_in.backchannels`) are not a turn: an agent still
  talking goes on, an interrupted one resumes from the cut word.
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
from mediaserver.pipeline.settings import BargeInSettings, TurnSettings, VadSettings
from mediaserver.pipeline.vad.detector import SpeechDetector, SpeechStarted, SpeechStopped

__all__ = [
    "MIN_UNDERSTOOD_SPEECH",
    "AttentionDue",
    "BargeInDecided",
    "Decision",
    "FalseBargeIn",
    "Floor",
    "InactivityDue",
    "NotUnderstood",
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
    | TurnEnded
    | TurnAbandoned
    | BargeInDecided
    | FalseBargeIn
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

    Attributes:
        turn: the caller's open turn, if any.
        deaf: speech makes no turn (a tool put the caller on hold, or the
            caller failed authentication and only the refusal flow runs).
        on_hold: the call is on hold (no attention prompts).
    """

    def __init__(self, vad: VadSettings, turn: TurnSettings, barge_in: BargeInSettings) -> None:
        self._vad = vad
        self._turn_cfg = turn
        self._barge_cfg = barge_in
        self._detector = SpeechDetector(vad)
        self._confident_end: float | None = None
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
        last = self._speech_end(turn)
        eos = self._turn_cfg.end_of_speech_timeout
        if media_time - last >= eos:
            out += self._end(turn, last)
        else:
            # Decide on time, not at the next chunk: the shell maps `at` to the
            # wall clock by when the audio arrived.
            out.append(SetTimer("eos", last + eos))
        return out

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
            The closed turn, or None when `turn_id` is not the open turn (stale).
        """
        turn = self.turn
        if turn is None or turn.id != turn_id:
            return None
        self.turn = None
        return turn

    def empty_final(self, turn: Turn, now: float, floor: Floor) -> list[Decision]:
        """The closed `turn`'s transcript had no words: the interruption it made
        was false; speech long enough to be words gets asked again; a cough or a
        click is ignored."""
        if floor.interrupted:
            return [FalseBargeIn("no words")]
        if turn.speech_s >= MIN_UNDERSTOOD_SPEECH:
            return [NotUnderstood(turn)]
        return self.idle(now)

    def backchannel(self, text: str, floor: Floor) -> list[Decision] | None:
        """The closed turn's words, if they are only a listener's backchannel said
        over the agent: the decisions that keep the agent's floor (None: they are
        a turn for the model)."""
        if not (floor.speaking or floor.interrupted) or not _only(
            _tokens(text), self._backchannels()
        ):
            return None
        return [FalseBargeIn("backchannel")] if floor.interrupted else []

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
            return None
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

    def timer(self, name: str, floor: Floor) -> list[Decision]:
        """The timer `name` (armed by a `SetTimer`) expired."""
        turn = self.turn
        speaking = self._detector.speaking
        if name == "eos":
            if turn is not None and not turn.finalising and not speaking:
                return self._end(turn, self._speech_end(turn))
        elif name == "confirm":
            if turn is None and not speaking:
                return [Unpause()]
        elif name == "false_resume":
            if turn is not None and turn.words == 0 and not speaking:
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
        if self.deaf:
            return out
        turn = self.turn
        if turn is not None and not turn.finalising:
            return [*out, SpeechResumed(turn)]
        self._ids += 1
        turn = self.turn = Turn(
            self._ids, onset, barge_in=floor.speaking and self._barge_cfg.enabled
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
        if turn.speech_s < cfg.min_speech or turn.words < cfg.min_words:
            return []
        turn.barge_in = False
        return [BargeInDecided(turn)]

    def _end(self, turn: Turn, speech_end: float) -> list[Decision]:
        turn.finalising = True
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
