"""A recogniser that falls back to another one, with the same interface.

`stt.fallback` in the config wraps the configured backend (typically a cloud
one) with a second (typically the local Whisper). The wrapper keeps the turn's
audio, so when the first backend fails in the middle of an utterance (its
WebSocket closes, a timeout, an auth error) the second transcribes the whole
turn and the caller is not asked to repeat: `stt_failure` is only raised when
both fail. The next turn tries the first backend again (a cloud stream
reconnects). Each switch is logged (`stt_fallback`) with the error.
"""

from __future__ import annotations

import numpy as np
import structlog

from mediaserver.pipeline.stt.base import SttBackend, SttError, SttHints, SttStream, Transcript

__all__ = ["FallbackSttBackend", "FallbackSttStream"]

log = structlog.get_logger("mediaserver.pipeline.stt")


class FallbackSttBackend(SttBackend):
    """`primary`, and `fallback` for the turns where it fails.

    Args:
        primary: the backend tried first on every turn.
        fallback: the backend that transcribes a turn the primary failed.
    """

    def __init__(self, primary: SttBackend, fallback: SttBackend) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name
        self.punctuates = primary.punctuates and fallback.punctuates

    def open(self, hints: SttHints) -> FallbackSttStream:
        """A stream of each backend, biased by `hints`."""
        return FallbackSttStream(self.primary.open(hints), self.fallback.open(hints), self)

    def prepare(self, hints: SttHints) -> None:
        """Prepare both backends for `hints`."""
        self.primary.prepare(hints)
        self.fallback.prepare(hints)

    def close(self) -> None:
        """Release both backends."""
        self.primary.close()
        self.fallback.close()


class FallbackSttStream(SttStream):
    """Feeds the primary stream and keeps the turn's audio for the fallback."""

    def __init__(self, primary: SttStream, fallback: SttStream, backend: FallbackSttBackend):
        self._primary = primary
        self._fallback = fallback
        self._backend = backend
        self._audio: list[np.ndarray] = []
        #: The primary failed this turn: the fallback has the turn's audio and goes on.
        self._failed = False

    def _switch(self, error: SttError) -> None:
        log.warning(
            "stt_fallback",
            backend=self._backend.primary.name,
            fallback=self._backend.fallback.name,
            error=str(error),
        )
        # The primary is not fed again this turn: a backend that failed drops its
        # turn (the cloud ones also their connection) and starts afresh next turn.
        self._failed = True
        if self._audio:
            self._fallback.feed(np.concatenate(self._audio))

    def feed(self, pcm: np.ndarray) -> Transcript | None:
        """Feed the stream in use; a primary failure moves the turn to the fallback.

        Raises:
            SttError: the fallback failed too.
        """
        self._audio.append(np.array(pcm, copy=True))
        if self._failed:
            return self._fallback.feed(pcm)
        try:
            return self._primary.feed(pcm)
        except SttError as exc:
            self._switch(exc)
            return None

    def pause(self) -> Transcript | None:
        """Pass VAD's pause to the stream in use (a Whisper fallback starts decoding)."""
        if self._failed:
            return self._fallback.pause()
        try:
            return self._primary.pause()
        except SttError as exc:
            self._switch(exc)
            return self._fallback.pause()

    def resume(self) -> None:
        """Pass VAD's resume to the stream in use."""
        (self._fallback if self._failed else self._primary).resume()

    def finalise(self) -> Transcript:
        """The turn's transcript from the primary, or from the fallback if it failed.

        Raises:
            SttError: both failed.
        """
        try:
            if not self._failed:
                try:
                    return self._primary.finalise()
                except SttError as exc:
                    self._switch(exc)
            return self._fallback.finalise()
        finally:
            self._audio = []
            self._failed = False

    def close(self) -> None:
        """Close both streams."""
        self._audio = []
        self._primary.close()
        self._fallback.close()
