"""From TTS chunks to tagged 20 ms frames, and from sent tags to heard text.

A reply's audio is cut into frames of exactly one RTP packet at the call's
rate. Every frame carries a `FrameTag` saying how much of the reply text is
fully voiced once that frame has been played (`heard_end`) and which word, if
any, is still being voiced at its last sample (`partial`). The media plane
reports the tag of every frame that leaves on the wire; the last one reported
is therefore exactly what the caller heard, down to the word, and a word cut
mid-way is known as such.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mediaserver.codecs.resample import Resampler
from mediaserver.pipeline.tts.base import TtsChunk

#: Appended to a word the caller heard only part of.
CUT_MARK = "—"


@dataclass(frozen=True)
class FrameTag:
    """What one outbound frame completes (offsets into the reply's text)."""

    reply: int
    index: int
    heard_end: int
    partial: tuple[int, int] | None


@dataclass
class _Span:
    start_sample: int
    end_sample: int
    start: int
    end: int


class Voicing:
    """One reply's audio: framing, tags, and the heard-text account."""

    def __init__(self, reply: int, out_rate: int, frame_samples: int) -> None:
        self.reply = reply
        self.out_rate = out_rate
        self.frame_samples = frame_samples
        self._resamplers: dict[int, Resampler] = {}
        self._pending = np.zeros(0, dtype=np.int16)
        self._base = 0  # sample index of _pending[0] in the reply's audio
        self._spans: list[_Span] = []
        self._voiced_end = 0  # sample index where the audio added so far truly ends
        self._done_end = 0  # text end of the words whose audio is fully framed
        self.frames_made = 0
        self.frames_sent = 0
        self.last_sent: FrameTag | None = None
        #: Every frame made, kept so a paused reply can resume mid-word.
        self.frames: list[tuple[np.ndarray, FrameTag]] = []

    # -- making frames --------------------------------------------------------------

    def add(
        self, chunks: tuple[TtsChunk, ...], rate: int, offset: int
    ) -> list[tuple[np.ndarray, FrameTag]]:
        """Add one clause's chunks (text offsets relative to `offset`); return new frames."""
        resampler = self._resamplers.get(rate)
        if resampler is None:
            # Whole clauses arrive at once: the cheaper bursty mode suits them
            # (the low-latency mode costs about 4x more per second of audio).
            resampler = self._resamplers[rate] = Resampler(rate, self.out_rate, low_latency=False)
        for chunk in chunks:
            pcm = resampler.process(chunk.pcm)
            # The resampler holds back some output (25-80 ms): the chunk's audio
            # ends that much after what it returned, and its words with it.
            self._append(pcm, offset + chunk.start, offset + chunk.end, lag=resampler.pending)
        return self._cut(final=False)

    def finish(self) -> list[tuple[np.ndarray, FrameTag]]:
        """The reply is complete: drain resamplers, pad the last frame."""
        for resampler in self._resamplers.values():
            tail = resampler.flush()
            if len(tail) and self._spans:
                last = self._spans[-1]
                self._append(tail, last.start, last.end, extend=True)
        self._resamplers.clear()
        return self._cut(final=True)

    def _append(
        self, pcm: np.ndarray, start: int, end: int, extend: bool = False, lag: int = 0
    ) -> None:
        self._pending = np.concatenate([self._pending, pcm.astype(np.int16, copy=False)])
        end_sample = self._base + len(self._pending) + lag
        if extend and self._spans:
            self._spans[-1].end_sample = end_sample
        else:
            # A word starts where the previous chunk's audio truly ended.
            self._spans.append(_Span(self._voiced_end, end_sample, start, end))
        self._voiced_end = end_sample

    def _cut(self, final: bool) -> list[tuple[np.ndarray, FrameTag]]:
        n = self.frame_samples
        out: list[tuple[np.ndarray, FrameTag]] = []
        if final and len(self._pending) % n:
            pad = np.zeros(n - len(self._pending) % n, dtype=np.int16)
            self._pending = np.concatenate([self._pending, pad])
        while len(self._pending) >= n:
            frame_end = self._base + n
            # Words whose audio ends within this frame are complete once it plays.
            while self._spans and self._spans[0].end_sample <= frame_end:
                self._done_end = max(self._done_end, self._spans.pop(0).end)
            partial = None
            word = self._spans[0] if self._spans else None
            if word is not None and word.end > word.start and word.start_sample < frame_end:
                partial = (word.start, word.end)
            out.append(
                (
                    self._pending[:n],
                    FrameTag(self.reply, self.frames_made, self._done_end, partial),
                )
            )
            self.frames.append(out[-1])
            self.frames_made += 1
            self._pending = self._pending[n:]
            self._base = frame_end
        return out

    # -- what was heard ----------------------------------------------------------------

    def sent(self, tag: FrameTag) -> None:
        """A frame of this reply left on the wire."""
        self.frames_sent += 1
        if self.last_sent is None or tag.index > self.last_sent.index:
            self.last_sent = tag

    @property
    def all_sent(self) -> bool:
        """Every frame made so far is on the wire (the newest one was sent)."""
        if self.frames_made == 0:
            return True
        return self.last_sent is not None and self.last_sent.index >= self.frames_made - 1

    def replay(self) -> list[tuple[np.ndarray, FrameTag]]:
        """The frames to play to resume after a pause: from the start of the word
        the caller heard only part of (or from the first frame not sent)."""
        tag = self.last_sent
        if tag is None:
            return list(self.frames)
        start = tag.index + 1
        if tag.partial is not None:
            start = next(
                (i for i, (_, t) in enumerate(self.frames) if t.partial == tag.partial),
                start,
            )
        return self.frames[start:]

    def heard(self, text: str) -> tuple[str, str | None]:
        """The part of `text` the caller heard, and the word cut mid-way (if any).

        A cut word is kept whole with `CUT_MARK` after it, so the conversation
        shows both that the agent began saying it and that it did not finish.
        """
        tag = self.last_sent
        if tag is None:
            return "", None
        if tag.partial is None:
            return text[: tag.heard_end], None
        start, end = tag.partial
        return text[:end] + CUT_MARK, text[start:end]
