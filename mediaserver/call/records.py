"""What the call actor keeps about turns, replies and interruptions.

Plain records, mutated only by `CallActor` (one owner per call); kept apart so
the actor module holds behaviour and this one the shapes it works on.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from mediaserver.call import events as ev
from mediaserver.call.commands import Transfer
from mediaserver.call.voicing import Voicing
from mediaserver.pipeline.tts.clauses import ClauseAggregator


@dataclass
class TurnMetrics:
    """Per-turn latency (wall-clock seconds, `time.monotonic`)."""

    turn: int
    speech_end: float = 0.0
    eos_decided: float = 0.0
    stt_final: float = 0.0
    stt_finalise_s: float = 0.0
    llm_start: float = 0.0
    llm_first_token: float = 0.0
    #: When the first whole clause was ready for TTS.
    llm_first_sentence: float = 0.0
    tts_first_audio_s: float = 0.0
    #: When the first clause's audio reached the actor.
    tts_first_audio_at: float = 0.0
    first_frame_sent: float = 0.0

    def summary(self) -> dict[str, float]:
        """The split of voice-to-voice latency (milliseconds)."""
        v2v = self.first_frame_sent - self.speech_end
        eos = self.eos_decided - self.speech_end
        llm = self.llm_first_token - self.llm_start if self.llm_first_token else 0.0
        sentence = self.llm_first_sentence - self.llm_start if self.llm_first_sentence else 0.0
        parts = {
            "voice_to_voice_ms": v2v,
            "endpointing_ms": eos,
            "stt_finalise_ms": self.stt_finalise_s,
            "llm_first_token_ms": llm,
            "llm_first_sentence_ms": sentence,
            "tts_first_audio_ms": self.tts_first_audio_s,
        }
        # The split is sequential up to the first sentence (later tokens stream
        # while TTS works), so overhead is what none of the stages accounts for.
        parts["overhead_ms"] = v2v - eos - self.stt_finalise_s - llm - self.tts_first_audio_s
        if self.tts_first_audio_at:
            # First audio to the first frame on the wire (the wait for the media
            # clock's tick): a part of the overhead, shown on its own.
            parts["first_frame_ms"] = self.first_frame_sent - self.tts_first_audio_at
        return {k: round(v * 1000, 2) for k, v in parts.items()}


def held_over(metrics: TurnMetrics | None) -> TurnMetrics | None:
    """A turn held for the caller to go on is answered now: its endpointing runs
    to now (the hold is part of it), and its final came before that."""
    if metrics is not None:
        metrics.eos_decided = time.monotonic()
        metrics.stt_finalise_s = 0.0
    return metrics


@dataclass
class BargeIn:
    """One interruption of the agent (`decided`: when its audio stopped; the
    speech began at `onset_media`, or at `onset` when the fast onset test
    stopped the audio before silero's start)."""

    reply: int
    onset_media: float
    decided: float
    flushed_frames: int
    heard: str = ""
    generated: str = ""
    false: bool = False
    resumed: bool = False
    onset: float | None = None


@dataclass
class Turn:
    """The caller's current turn."""

    id: int
    started_media: float
    barge_in: bool = False
    words: int = 0
    partial: str = ""
    finalising: bool = False
    speech_s: float = 0.0
    metrics: TurnMetrics | None = None


@dataclass
class AgentReply:
    """One agent reply: LLM steps, tool calls, clauses, frames."""

    id: int
    voicing: Voicing
    kind: str  # "llm" or "fixed"
    text: str = ""
    #: Heard text of an interrupted reply this one resumes.
    prefix: str = ""
    step_start: int = 0
    clauses: ClauseAggregator = field(default_factory=ClauseAggregator)
    clause_start: int = 0
    llm_task: asyncio.Task[None] | None = None
    llm_done: bool = True
    tts_task: asyncio.Task[None] | None = None
    tts_queue: asyncio.Queue[tuple[int, str] | None] = field(default_factory=asyncio.Queue)
    tools_pending: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    tool_results: list[ev.ToolResult] = field(default_factory=list)
    tool_calls_made: int = 0
    #: Spans of `text` that were never voiced (clauses TTS skipped).
    unsaid: list[tuple[int, int]] = field(default_factory=list)
    #: The current LLM step asked for tools and its stream has not ended yet.
    step_has_tools: bool = False
    filler_said: bool = False
    finished_framing: bool = False
    then_hangup: bool = False
    #: Transfer the caller here once this reply has been said (and how, when warm).
    then_transfer: str | None = None
    warm_transfer: Transfer | None = None
    #: Put the caller on hold for this many seconds once this reply has been said.
    then_hold: float | None = None
    metrics: TurnMetrics | None = None
    first_frame_seen: bool = False
    #: Audio stopped by the fast onset test, waiting for silero to confirm;
    #: and when the onset that stopped it arrived (both `time.monotonic`).
    paused_at: float | None = None
    paused_onset: float | None = None
    #: A preemptive answer: the caller's words it answers, while their turn is
    #: not over (its audio waits; a model step that calls tools waits in `held`).
    draft: str | None = None
    draft_at: float = 0.0
    held: list[ev.LlmToolCalls | ev.LlmDone] = field(default_factory=list)
    paused_frames: int = 0

    def tasks(self) -> list[asyncio.Task[None]]:
        out = [t for t in (self.llm_task, self.tts_task) if t is not None]
        return out + list(self.tools_pending.values())


@dataclass(frozen=True)
class CallSummary:
    """How a call went, for the server's call record (`CallActor.summary`)."""

    end_reason: str
    state: str
    global_data: dict[str, Any]
    metadata: dict[str, Any]
    digits: str
    turns: int
