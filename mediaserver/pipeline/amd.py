"""Answering-machine detection: who (or what) picked up a call we placed.

`AmdClassifier` is sans-IO: it is given the VAD's speech probabilities, the
tones a `ToneDetector` found, the transcript of the first words when there is
one, and the time; it answers once with a `AmdResult`:

- **human**: a short greeting ("hello?", "hi, this is Sam") and then silence,
  the person waiting for an answer;
- **machine**: a greeting that goes on (longer than a person says before
  waiting: `max_human_speech`), words that only a recording says ("leave a
  message", "not available", "after the tone"), or a beep after speech;
- **fax**: a steady tone before anyone speaks (fax CNG 1100 Hz, CED 2100 Hz,
  a modem, a special-information tone);
- **silence**: nothing within `initial_silence` (a person who waits for us
  to speak first, or a dead line).

The thresholds follow the speech cadence that tells the two apart on the
phone (the classic AMD rules: a greeting's length, the silence after it, the
number of words), tuned on bench/amd.py's set (espeak-ng voices over G.711).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from mediaserver.media.tones import Tone

__all__ = ["MACHINE_PHRASES", "AmdClassifier", "AmdResult", "AmdSettings"]

Verdict = Literal["human", "machine", "fax", "silence"]

#: Words only a recorded greeting says (matched on the normalised transcript).
MACHINE_PHRASES: Final = (
    "leave a message",
    "leave your message",
    "leave me a message",
    "leave your name",
    "not available",
    "unavailable",
    "after the tone",
    "after the beep",
    "at the tone",
    "at the beep",
    "voicemail",
    "voice mail",
    "mailbox",
    "record your message",
    "get back to you",
    "call you back",
    "you have reached",
    "you've reached",
    "can't take your call",
    "cannot take your call",
    "can't come to the phone",
    "away from the phone",
)
#: Fax calling (CNG) and answer (CED) tones, Hz.
FAX_TONES: Final = (1100.0, 2100.0)


@dataclass(frozen=True)
class AmdSettings:
    """Thresholds, seconds."""

    #: No speech this long after the answer: silence.
    initial_silence: float = 3.5
    #: A first utterance longer than this: a machine (people say hello and wait).
    max_human_speech: float = 2.4
    #: Silence after speech that ends a person's greeting.
    end_silence: float = 0.6
    #: Speech shorter than this (a click, a breath) is not a greeting.
    min_speech: float = 0.1
    #: VAD probability for speech.
    threshold: float = 0.5
    #: Longest analysis: then whatever the evidence says (speech still going: machine).
    max_time: float = 6.0


@dataclass(frozen=True)
class AmdResult:
    """The verdict, when it was reached (s after the answer) and why."""

    verdict: Verdict
    at: float
    reason: str
    #: Seconds of greeting speech heard before the verdict.
    speech: float = 0.0


def machine_words(text: str) -> str | None:
    """The machine phrase in `text`, if any."""
    words = " ".join(re.findall(r"[a-z']+", text.lower()))
    return next((p for p in MACHINE_PHRASES if p in words), None)


class AmdClassifier:
    """One call's answering-machine detection (see the module docstring).

    Times are seconds of call audio since the answer.
    """

    def __init__(self, settings: AmdSettings | None = None) -> None:
        self.settings = settings or AmdSettings()
        self.result: AmdResult | None = None
        self._speaking = False
        self._speech_start: float | None = None
        #: Speech heard so far (first utterance), and when the last speech ended.
        self._speech = 0.0
        self._last_end: float | None = None
        self._first_heard: float | None = None
        #: The first utterance ended (silence long enough) and awaits its words.
        self.awaiting_words = False

    @property
    def paused_at(self) -> float | None:
        """When the greeting's speech last stopped, while it is quiet (None while
        speaking or before any speech): its words can be transcribed now."""
        return None if self._speaking else self._last_end

    @property
    def decided(self) -> bool:
        """A verdict was reached."""
        return self.result is not None

    def _decide(self, verdict: Verdict, at: float, reason: str) -> AmdResult:
        if self.result is None:
            self.result = AmdResult(verdict, round(at, 3), reason, round(self._speech, 3))
        return self.result

    def vad(self, t: float, prob: float) -> AmdResult | None:
        """A VAD probability for the audio at `t`."""
        if self.result is not None:
            return None
        s = self.settings
        speech = prob >= s.threshold
        if speech and not self._speaking:
            self._speaking = True
            self._speech_start = t
            if self._first_heard is None:
                self._first_heard = t
        elif not speech and self._speaking:
            self._speaking = False
            assert self._speech_start is not None
            length = t - self._speech_start
            if length >= s.min_speech:
                self._speech += length
                self._last_end = t
        return self.tick(t)

    def tick(self, now: float) -> AmdResult | None:
        """Time passed (with or without audio)."""
        if self.result is not None:
            return None
        s = self.settings
        start = self._speech_start
        ongoing = now - start if self._speaking and start is not None else 0.0
        heard = self._speech + ongoing
        if heard > s.max_human_speech:
            return self._decide("machine", now, f"greeting over {s.max_human_speech:g} s")
        if self._first_heard is None:
            if now >= s.initial_silence:
                return self._decide("silence", now, f"no speech in {s.initial_silence:g} s")
            return None
        quiet = not self._speaking and self._last_end is not None
        if quiet and now - (self._last_end or now) >= s.end_silence:
            # A short greeting and then silence: a person, unless its words say
            # recording (the caller of `words` decides then).
            self.awaiting_words = True
        if now >= s.max_time:
            if self._speaking:
                return self._decide("machine", now, "still speaking at the end of analysis")
            return self._decide("human", now, "short greeting")
        return None

    def words(self, now: float, text: str) -> AmdResult | None:
        """The transcript of the greeting so far (its first utterance, or more)."""
        if self.result is not None:
            return None
        phrase = machine_words(text)
        if phrase is not None:
            return self._decide("machine", now, f"said {phrase!r}")
        if self.awaiting_words:
            return self._decide("human", now, "short greeting, then silence")
        return None

    def tone(self, now: float, tone: Tone) -> AmdResult | None:
        """A steady tone (`ToneDetector`)."""
        if self.result is not None:
            return None
        if self._first_heard is None:
            fax = any(abs(tone.frequency - f) <= 30.0 for f in FAX_TONES)
            kind = "fax tone" if fax else "tone"
            return self._decide("fax", now, f"{kind} {tone.frequency:g} Hz before any speech")
        return self._decide("machine", now, f"beep {tone.frequency:g} Hz after the greeting")
