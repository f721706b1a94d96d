"""A voice that falls back to another backend, with the same interface.

`tts.fallback` in the config wraps the configured backend (typically a cloud
one) with a second (typically espeak-ng, which cannot fail for network
reasons). A clause the first backend fails before giving any audio (refused
key, 5xx, timeout, connection refused) is synthesised by the second, resampled
to the first's rate so the call's frames do not change, with its per-word
spans. A failure after some audio was given still raises: the caller heard
part of the clause, and the actor keeps exactly that. Each switch is logged
(`tts_fallback`) with the error.
"""

from __future__ import annotations

from collections.abc import Iterator

import structlog

from mediaserver.codecs.resample import resample
from mediaserver.pipeline.tts.base import TtsBackend, TtsChunk, TtsError

__all__ = ["FallbackTtsBackend"]

log = structlog.get_logger("mediaserver.pipeline.tts")


class FallbackTtsBackend(TtsBackend):
    """`primary`, and `fallback` for the clauses it fails before any audio.

    Args:
        primary: the backend tried first for every clause; its rate is ours.
        fallback: the backend that speaks a clause the primary failed.
    """

    def __init__(self, primary: TtsBackend, fallback: TtsBackend) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name
        self.sample_rate = primary.sample_rate

    def synthesize(self, text: str, voice: str | None = None) -> Iterator[TtsChunk]:
        """The primary's chunks; on a failure before its first, the fallback's.

        Raises:
            TtsError: the fallback failed too, or the primary failed mid-clause.
        """
        chunks = self.primary.synthesize(text, voice)
        try:
            first = next(chunks, None)
        except TtsError as exc:
            log.warning(
                "tts_fallback",
                backend=self.primary.name,
                fallback=self.fallback.name,
                error=str(exc),
            )
            # The voice names the primary's voice; the fallback speaks its own.
            yield from self._resampled(self.fallback.synthesize(text, None))
            return
        if first is not None:
            yield first
            yield from chunks

    def _resampled(self, chunks: Iterator[TtsChunk]) -> Iterator[TtsChunk]:
        rate_in, rate_out = self.fallback.sample_rate, self.sample_rate
        for chunk in chunks:
            # Chunk by chunk, each time-aligned: the word spans stay exact.
            pcm = chunk.pcm if rate_in == rate_out else resample(chunk.pcm, rate_in, rate_out)
            yield TtsChunk(pcm, chunk.start, chunk.end)

    def voices(self) -> list[str]:
        """The primary's voices."""
        return self.primary.voices()

    def close(self) -> None:
        """Release both backends."""
        self.primary.close()
        self.fallback.close()
