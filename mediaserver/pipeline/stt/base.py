"""The speech-to-text interface every STT backend implements.

A backend is loaded once per process (models are big) and hands out one
`SttStream` per caller turn. Streams are fed 16 kHz mono int16 PCM and give
partial transcripts while the caller talks and a final one at end of turn.

Every method of a stream may block (decoding is CPU work): the call actor runs
them in the pipeline's bounded executor, never on the event loop, and never two
at once on the same stream. A remote backend (a websocket STT service) fits the
same interface: `feed` sends and returns the newest partial it has received,
`finalise` waits for the final result.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from mediaserver.pipeline.errors import ModelLoadError

__all__ = [
    "STT_RATE",
    "ModelLoadError",
    "SttBackend",
    "SttError",
    "SttHints",
    "SttStream",
    "Transcript",
]

#: The rate every STT stream is fed at (pocketsphinx's and whisper's models).
STT_RATE = 16000


class SttError(Exception):
    """Recognition failed (classified as `stt_failure` by the call actor)."""


@dataclass(frozen=True)
class Transcript:
    """What the recogniser heard so far (partial) or in the whole turn (final)."""

    text: str
    final: bool
    #: Backend-specific confidence in [0, 1] when it has one.
    confidence: float | None = None


@dataclass(frozen=True)
class SttHints:
    """Vocabulary bias from the agent: its hints and its tools' argument types.

    `phrases` are whole phrases the caller is likely to say (agent hints, tool
    names spelled as words, enum values); `words` are single words to keep in
    the vocabulary (digits, letters of the spelling alphabet, numbers).
    Backends that cannot bias ignore them.
    """

    phrases: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    #: What the agent asks callers about, as words: its tools' argument names
    #: ("order id", "city"). Vocabulary for a prompt or key terms, not phrases a
    #: caller says whole (a grammar-based recogniser ignores them).
    terms: tuple[str, ...] = ()
    #: Keep open (free) speech possible besides the hinted vocabulary.
    open_vocabulary: bool = True
    extra: dict[str, str] = field(default_factory=dict)


class SttStream(ABC):
    """One caller's recogniser for one or more turns (blocking methods)."""

    @abstractmethod
    def feed(self, pcm: np.ndarray) -> Transcript | None:
        """Add 16 kHz int16 audio; return a new partial when the hypothesis changed."""

    @abstractmethod
    def finalise(self) -> Transcript:
        """End the turn and return its final transcript (the stream may be reused)."""

    @abstractmethod
    def close(self) -> None:
        """Give back decoder resources (a pooled decoder returns to its pool)."""

    def pause(self) -> Transcript | None:
        """VAD heard the caller stop (the turn may still go on).

        A backend that decodes whole windows starts its final decode here, so
        the transcript is ready when the turn ends; a streaming one may ignore
        it. Returns a new partial when there is one.
        """
        return None

    def resume(self) -> None:  # noqa: B027 - optional hook
        """VAD heard the caller speak again in the same turn (after `pause`)."""


class SttBackend(ABC):
    """A loaded STT model that opens streams."""

    #: Registry name, e.g. "pocketsphinx".
    name: str = ""
    #: Its transcripts end sentences with punctuation (so a transcript without
    #: it is a sentence not finished yet: the end-of-turn rules use that).
    punctuates: bool = False

    @abstractmethod
    def open(self, hints: SttHints) -> SttStream:
        """A new stream biased by `hints`; cheap (no decoder is held until audio arrives)."""

    def prepare(self, hints: SttHints) -> None:  # noqa: B027 - optional hook
        """Get ready for streams with `hints` (e.g. make decoders) before calls arrive."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model."""
