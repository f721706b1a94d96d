"""The agent's side of a call: a reply's text to clauses, TTS, frames on the wire.

`Speaker` voices one reply at a time for the actor: text arrives (model
tokens, fixed phrases, fillers), whole clauses go to TTS in a child task, the
audio is framed by the reply's `Voicing` and queued on the media session with
a tag per frame. The media plane reports each tag as its frame leaves, so the
speaker can always say what the caller heard, to the word, and where to
resume. It decides nothing about the conversation: the actor does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from mediaserver.call import events as ev
from mediaserver.call.errors import ErrorKind
from mediaserver.call.ports import CallPorts
from mediaserver.call.records import AgentReply, TurnMetrics
from mediaserver.call.voicing import FrameTag, Voicing
from mediaserver.media.session import RtpSession
from mediaserver.pipeline.tts.fallback import FallbackTts, TtsFailure

__all__ = ["Speaker", "spoken"]


class Speaker:
    """Voices the agent's replies (see the module docstring).

    Args:
        ports: the actor's plumbing.
        media: the call's media session.
        tts: the call's voice (with its fallback voice).
        playing: called before frames go out (the actor's "first audio" moment).
    """

    def __init__(
        self, ports: CallPorts, media: RtpSession, tts: FallbackTts, playing: Callable[[], None]
    ) -> None:
        self._ports = ports
        self.media = media
        self.tts = tts
        self._playing = playing
        self._ids = 0

    def new(self, kind: str, metrics: TurnMetrics | None) -> AgentReply:
        """A new reply ("llm" or "fixed") with its TTS task running."""
        self._ids += 1
        reply = AgentReply(
            self._ids,
            Voicing(self._ids, self.media.sample_rate, self.media.frame_samples),
            kind,
            metrics=metrics,
        )
        reply.tts_task = self._ports.spawn(self._run_tts(reply))
        return reply

    def speak(
        self, reply: AgentReply, text: str, *, flush: bool = False, end: bool = False
    ) -> None:
        """Add `text` to what `reply` says: whole clauses go to TTS now; `flush`
        sends the rest too (a phrase said as a whole); `end` means no more text."""
        reply.text += text
        for clause in reply.clauses.push(text):
            self._queue(reply, clause)
        if flush or end:
            rest = reply.clauses.flush()
            if rest:
                self._queue(reply, rest)
        if end:
            reply.tts_queue.put_nowait(None)

    def _queue(self, reply: AgentReply, clause: str) -> None:
        metrics = reply.metrics
        if metrics is not None and not metrics.llm_first_sentence and clause.strip():
            metrics.llm_first_sentence = time.monotonic()
        offset = reply.clause_start
        reply.clause_start += len(clause)
        if clause.strip():
            reply.tts_queue.put_nowait((offset, clause))

    async def _run_tts(self, reply: AgentReply) -> None:
        """Synthesise the reply's clauses in order (fallback voice, timeout and
        faults are the voice's; a clause given up is reported as unsaid)."""
        tts, post = self.tts, self._ports.post
        while True:
            item = await reply.tts_queue.get()
            if item is None:
                break
            offset, clause = item
            started = time.monotonic()

            def report(failure: TtsFailure, offset: int = offset) -> None:
                unsaid = failure.unsaid
                post(
                    ev.StageError(
                        ErrorKind.TTS_FAILURE,
                        "tts",
                        failure.error,
                        reply.id,
                        recovery=failure.step,
                        final=False,
                        unsaid=None if unsaid is None else (offset + unsaid[0], offset + unsaid[1]),
                    )
                )

            async for chunk in tts.clause(clause, report):
                synth_s = time.monotonic() - started
                post(ev.TtsAudio(reply.id, offset, (chunk,), tts.sample_rate, synth_s))
        post(ev.TtsDone(reply.id))

    def audio(self, reply: AgentReply, event: ev.TtsAudio) -> None:
        """TTS audio of `reply`: frame it and play it (unless paused)."""
        metrics = reply.metrics
        if metrics is not None and not metrics.tts_first_audio_at:
            metrics.tts_first_audio_s = event.synth_s
            metrics.tts_first_audio_at = time.monotonic()
        self._play(reply, reply.voicing.add(event.chunks, event.sample_rate, event.offset))

    def done(self, reply: AgentReply) -> None:
        """TTS finished `reply`: play the last partial frame."""
        reply.finished_framing = True
        self._play(reply, reply.voicing.finish())

    def _play(self, reply: AgentReply, frames: list[tuple[np.ndarray, FrameTag]]) -> None:
        if not frames or reply.paused_at is not None or reply.draft is not None:
            return  # while paused (or a draft) the frames wait in the voicing (see unpause)
        self._playing()
        self.media.rephase()
        for pcm, tag in frames:
            self.media.play(pcm, tag)

    @staticmethod
    def sent(reply: AgentReply, tag: FrameTag) -> bool:
        """A frame of `reply` left on the wire; True when it was the first."""
        reply.voicing.sent(tag)
        first = not reply.first_frame_seen
        reply.first_frame_seen = True
        return first

    def pause(self, reply: AgentReply, onset: float) -> None:
        """Stop `reply`'s audio now, for the sound that arrived at `onset` (the
        frames not yet sent wait to be replayed)."""
        reply.paused_frames = self.media.flush()
        reply.paused_at, reply.paused_onset = time.monotonic(), onset

    def unpause(self, reply: AgentReply) -> int:
        """Play on from the word the pause cut; returns the frames replayed."""
        reply.paused_at = None
        reply.paused_frames = 0
        frames = reply.voicing.replay()
        self._play(reply, frames)
        return len(frames)

    def cut(self, reply: AgentReply) -> tuple[int, float]:
        """Stop `reply`'s audio for good: (frames never sent, when it stopped)."""
        flushed = self.media.flush() + reply.paused_frames
        stopped = reply.paused_at if reply.paused_at is not None else time.monotonic()
        return flushed, stopped

    @staticmethod
    def heard(reply: AgentReply) -> tuple[str, str | None]:
        """What the caller heard of `reply` (its prefix included) and the word cut, if any."""
        heard, cut = reply.voicing.heard(reply.text)
        return reply.prefix + spoken(heard, reply.unsaid), cut

    @staticmethod
    def said(reply: AgentReply, start: int = 0) -> str:
        """`reply.text[start:]` as voiced: clauses TTS skipped were never heard."""
        return spoken(reply.text, reply.unsaid, start)

    @staticmethod
    def resume_at(reply: AgentReply) -> int:
        """Where in `reply.text` to go on after a false interruption: the cut word."""
        tag = reply.voicing.last_sent
        if tag is None:
            return 0
        return tag.partial[0] if tag.partial is not None else tag.heard_end


def spoken(text: str, unsaid: list[tuple[int, int]], start: int = 0) -> str:
    """`text[start:]` without the `unsaid` spans (offsets into the whole text)."""
    out, at = [], start
    for a, b in sorted(unsaid):
        if b <= at:
            continue
        out.append(text[at : max(a, at)])
        at = b
    out.append(text[at:])
    return "".join(out)
