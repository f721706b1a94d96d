"""The replies the caller cut off: what they heard of each, and resuming false ones.

When the turn taker decides a barge-in, the reply is cut at once; whether the
interruption was real is only known when the caller's words arrive (or do not).
`Interruptions` keeps the cut reply until then: a real one is kept as heard
(cut at the last frame that left on the wire), a false one is resumed from the
cut word. Every interruption goes on the call record with its stop time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from mediaserver.call.ports import CallPorts
from mediaserver.call.records import AgentReply, BargeIn
from mediaserver.call.speaker import Speaker
from mediaserver.call.voicing import FrameTag

__all__ = ["Heard", "Interruptions", "Resumption"]


@dataclass(frozen=True)
class Heard:
    """A real interruption: `heard` is what the caller heard of `reply`."""

    reply: AgentReply
    heard: str


@dataclass(frozen=True)
class Resumption:
    """A false interruption: say `rest` after `heard` (what was already heard)."""

    reply: AgentReply
    heard: str
    rest: str


class Interruptions:
    """Cut replies and their outcome (see the module docstring).

    Args:
        ports: the actor's plumbing (record notes, timers).
        speaker: the call's speaker (cuts audio, knows what was heard).
        wall: media time to the wall clock (None before any caller audio).
        log: the call's logger.
    """

    def __init__(
        self,
        ports: CallPorts,
        speaker: Speaker,
        wall: Callable[[float], float | None],
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._ports = ports
        self._speaker = speaker
        self._wall = wall
        self._log = log
        #: Every interruption of the call, in order.
        self.all: list[BargeIn] = []
        #: The last cut reply, while the caller's words are awaited.
        self.pending: tuple[AgentReply, BargeIn] | None = None

    def cut(self, reply: AgentReply, onset_media: float) -> None:
        """Stop `reply`'s audio: the caller started speaking at `onset_media`."""
        flushed, stopped = self._speaker.cut(reply)
        self._ports.disarm("confirm")
        record = BargeIn(reply.id, onset_media, stopped, flushed)
        if reply.paused_at is not None:
            record.onset = reply.paused_onset
        self.all.append(record)
        self.pending = (reply, record)
        self._ports.note("interrupted", reply=reply.id, flushed_frames=flushed)
        self._log.info("barge_in", reply=reply.id, flushed_frames=flushed)

    def sent(self, tag: FrameTag) -> bool:
        """A frame of the cut reply left anyway (it was in the clock's batch when
        the audio was flushed): it was heard."""
        if self.pending is None or self.pending[0].id != tag.reply:
            return False
        self._speaker.sent(self.pending[0], tag)
        return True

    def real(self) -> Heard | None:
        """The caller's words came: the interruption was real (None: none pending)."""
        if self.pending is None:
            return None
        reply, record = self.pending
        self.pending = None
        self._ports.disarm("false_resume")
        heard, cut = self._speaker.heard(reply)
        record.heard = heard
        record.generated = reply.prefix + reply.text
        self._ports.note("heard", reply=reply.id, heard=heard, generated=record.generated, cut=cut)
        self._record(record)
        return Heard(reply, heard)

    def false(self, why: str) -> Resumption | None:
        """No words came: the interruption was false (None: none pending)."""
        if self.pending is None:
            return None
        reply, record = self.pending
        self.pending = None
        record.false = True
        start = self._speaker.resume_at(reply)
        rest = reply.text[start:]
        self._ports.note("false_barge_in", reply=reply.id, why=why, resume_from=start)
        record.generated = reply.prefix + reply.text
        record.resumed = bool(rest.strip())
        self._record(record)
        self._log.info("false_barge_in", reply=reply.id, resume_chars=len(rest.strip()))
        return Resumption(reply, reply.prefix + reply.text[:start], rest)

    def _record(self, record: BargeIn) -> None:
        """The call record's view of one interruption, once it is known to be real or false."""
        onset = self._wall(record.onset_media)
        if record.onset is not None:
            # The fast test heard the sound before silero called it speech.
            onset = record.onset if onset is None else min(onset, record.onset)
        stop_ms = round((record.decided - onset) * 1000, 1) if onset is not None else None
        self._ports.note(
            "barge_in",
            reply=record.reply,
            stop_ms=stop_ms,
            heard=record.heard,
            generated=record.generated,
            false=record.false,
        )
