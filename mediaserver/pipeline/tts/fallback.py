"""Voices that fall back: to another backend, and to another voice.

`FallbackTtsBackend` (the `tts.fallback` setting) and `FallbackTts` (the call's
voice chain: `tts.voice`, then `tts.fallback_voice`) are the two halves.


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

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass

import structlog

from mediaserver.codecs.resample import resample
from mediaserver.faults import Faults
from mediaserver.pipeline.settings import TtsSettings
from mediaserver.pipeline.tts.base import TtsBackend, TtsChunk, TtsError
from mediaserver.pipeline.tts.pronounce import Pronouncer, Pronunciation

__all__ = ["FallbackTts", "FallbackTtsBackend", "TtsFailure"]

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
        self.takes_voice = primary.takes_voice

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


@dataclass(frozen=True)
class TtsFailure:
    """A voice failed on a clause; `step` says what came next.

    Attributes:
        error: the failure, naming the voice.
        step: "fallback voice NAME", or "clause skipped" when the clause is given up.
        unsaid: when given up, the span of the clause (character offsets) the
            caller never heard: everything after the last voiced word.
    """

    error: str
    step: str
    unsaid: tuple[int, int] | None = None


class FallbackTts:
    """One call's voice: the backend in the executor, a timeout, a fallback voice.

    A clause the voice fails (an error, or no audio within `settings.timeout`)
    before any audio is spoken again with `settings.fallback_voice` (DESIGN:
    tts_failure). After some audio, or with no voice left, the rest of the
    clause is skipped: the caller heard what was sent. Injected faults for the
    "tts" stage (matched on the voice) are checked here, once per attempt.

    Args:
        backend: the (shared) synthesiser.
        settings: the call's TTS settings (read at every clause).
        executor: where the blocking synthesis runs.
        faults: the fault injection rules (none: no faults).
    """

    def __init__(
        self,
        backend: TtsBackend,
        settings: TtsSettings,
        executor: Executor,
        faults: Faults | None = None,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self._executor = executor
        self._faults = faults or Faults()

    @property
    def sample_rate(self) -> int:
        """The rate of the chunks."""
        return self.backend.sample_rate

    def _voices(self) -> list[str | None]:
        cfg = self.settings
        voice = cfg.voice if self.backend.takes_voice else None
        voices = [voice]
        if cfg.fallback_voice and cfg.fallback_voice != voice:
            voices.append(cfg.fallback_voice)
        return voices

    async def clause(
        self, text: str, report: Callable[[TtsFailure], None]
    ) -> AsyncIterator[TtsChunk]:
        """The chunks of `text` as the backend makes them (each `next` in the
        executor, so a streaming backend's first audio plays before the clause
        is done); every failure goes to `report`."""
        loop = asyncio.get_running_loop()
        executor, timeout = self._executor, self.settings.timeout
        voices = self._voices()
        voiced = 0  # end of the clause text voiced so far
        # Pronunciations change what is said; the chunks keep the clause's offsets.
        rules = [
            Pronunciation(p.replace, p.with_text, p.ignore_case)
            for p in self.settings.pronunciations
        ]
        said, back = Pronouncer(rules).apply(text)
        for i, name in enumerate(voices):
            rule = self._faults.check("tts", name or self.backend.name)
            spoke = False
            chunks: Iterator[TtsChunk] | None = None
            try:
                async with asyncio.timeout(timeout):
                    await self._faults.inject(rule, TtsError("injected fault"))
                    chunks = await loop.run_in_executor(
                        executor, self.backend.synthesize, said, name
                    )
                    while chunk := await loop.run_in_executor(executor, next, chunks, None):
                        if said is not text:
                            chunk = TtsChunk(chunk.pcm, back(chunk.start), back(chunk.end))
                        spoke = True
                        voiced = max(voiced, chunk.end)
                        yield chunk
                return
            except (TtsError, TimeoutError) as exc:
                error = str(exc) or f"no audio within {timeout:g} s"
                last = spoke or i + 1 == len(voices)
                step = "clause skipped" if last else f"fallback voice {voices[i + 1]}"
                unsaid = (voiced, len(text)) if last else None
                report(TtsFailure(f"{name}: {error}", step, unsaid))
                if last:
                    return
            finally:
                # A barge-in cancels us mid-clause: a streaming backend's socket
                # closes now, not whenever the generator is collected.
                if chunks is not None:
                    loop.run_in_executor(executor, _close_quietly, chunks)


def _close_quietly(chunks: Iterator[TtsChunk]) -> None:
    """Close a synthesis generator (in the executor; a no-op while another thread
    is still inside it: that `next` ends by itself and the generator is collected)."""
    close = getattr(chunks, "close", None)
    if close is not None:
        with contextlib.suppress(ValueError, TtsError):
            close()
