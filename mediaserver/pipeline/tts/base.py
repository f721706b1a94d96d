"""The text-to-speech interface every TTS backend implements.

`synthesize` turns one piece of text (a clause) into audio, in chunks that say
which characters of that text they voice. The call actor cuts the chunks into
20 ms frames and tags every frame with its text span; the media plane reports
which tags went out on the wire, which is how barge-in keeps exactly the text
the caller heard.

`synthesize` blocks (synthesis is CPU work): the call actor iterates it in the
pipeline's bounded executor, so chunks stream out as the backend makes them
(first audio after the first word, not after the whole clause).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


class TtsError(Exception):
    """Synthesis failed (classified as `tts_failure` by the call actor)."""


@dataclass(frozen=True)
class TtsChunk:
    """Mono int16 PCM at the backend's `sample_rate`, voicing text[start:end].

    Chunks of one `synthesize` call come in text order; a chunk that voices no
    text (a pause) has start == end at the position it sits in the text.
    Backends with word timing give one chunk per word (plus pauses); others
    may give a whole clause as one chunk.
    """

    pcm: np.ndarray
    start: int
    end: int


class TtsBackend(ABC):
    """A loaded voice that synthesises text."""

    #: Registry name, e.g. "espeak-ng".
    name: str = ""
    #: Output sample rate of `synthesize`.
    sample_rate: int = 16000
    #: Whether `synthesize` takes the agent's `tts.voice` per call (espeak-ng);
    #: other backends speak the voice of their own configuration.
    takes_voice: bool = False

    @abstractmethod
    def synthesize(self, text: str, voice: str | None = None) -> Iterator[TtsChunk]:
        """Yield the audio of `text` in text order (blocking; see the module docstring)."""

    def voices(self) -> list[str]:
        """Names of the voices this backend can speak with."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine."""
