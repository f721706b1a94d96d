"""Everything that can reach a call actor's inbox, as typed events.

Producers (the media plane, the SIP layer, the VAD batcher and the child
tasks for STT, LLM, TTS and tools) only ever *post* these; the actor handles
them one at a time, in arrival order, and is the only code that changes the
call's state. Events from child work carry the id of the turn or reply they
belong to, so a late result from cancelled work is recognised and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mediaserver.call.commands import Command
from mediaserver.call.errors import ErrorKind
from mediaserver.pipeline.llm.base import ToolCall
from mediaserver.pipeline.tts.base import TtsChunk


@dataclass(frozen=True)
class AudioIn:
    """A decoded caller frame from the jitter buffer (gap: concealed loss)."""

    pcm: np.ndarray
    media_time: float
    gap: bool


@dataclass(frozen=True)
class DtmfIn:
    """A digit from RFC 4733 or SIP INFO."""

    digit: str
    duration_ms: int


@dataclass(frozen=True)
class CallHangup:
    """The call ended on the SIP side (BYE, CANCEL, timeout)."""

    reason: str


@dataclass(frozen=True)
class HoldChanged:
    """The caller put the call on hold or took it off."""

    on_hold: bool


@dataclass(frozen=True)
class SpeechOnset:
    """The fast onset test fired on arriving caller audio (at monotonic `at`)."""

    at: float


@dataclass(frozen=True)
class HandoffBriefed:
    """A warm transfer's summary for the person who takes the call is ready."""

    dest: str
    summary: str


@dataclass(frozen=True)
class TransferResult:
    """How the transfer we asked for ended: REFER, or a B2BUA bridge when the
    caller's side refused the REFER."""

    ok: bool
    status: int
    reason: str
    #: The caller now talks to the target through us (B2BUA): the agent is done,
    #: but the call goes on, so the actor must not hang up.
    bridged: bool = False


@dataclass(frozen=True)
class VadProb:
    """A speech probability for the 32 ms chunk ending at `media_time`."""

    media_time: float
    prob: float


@dataclass(frozen=True)
class TurnChecked:
    """The turn model's P(complete) for turn `turn` paused at `speech_end` (media
    time); None when the model failed (`error`)."""

    turn: int
    speech_end: float
    prob: float | None
    seconds: float
    error: str = ""


@dataclass(frozen=True)
class SttPartial:
    """An interim transcript of turn `turn`."""

    turn: int
    text: str


@dataclass(frozen=True)
class SttFinal:
    """The final transcript of turn `turn`."""

    turn: int
    text: str
    finalise_s: float


@dataclass(frozen=True)
class LlmToken:
    """Assistant text from the model for reply `reply`."""

    reply: int
    text: str


@dataclass(frozen=True)
class LlmToolCalls:
    """The model asks for tool calls in reply `reply`."""

    reply: int
    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class LlmDone:
    """The model's stream for reply `reply` ended."""

    reply: int


@dataclass(frozen=True)
class TtsAudio:
    """Synthesised audio of (a part of) one clause of reply `reply`; `offset` is the
    clause's offset in the reply, the chunks' spans are relative to it."""

    reply: int
    offset: int
    chunks: tuple[TtsChunk, ...]
    sample_rate: int
    synth_s: float


@dataclass(frozen=True)
class TtsDone:
    """Every clause queued for reply `reply` so far is synthesised."""

    reply: int


@dataclass(frozen=True)
class FrameSent:
    """A tagged outbound frame left on the wire."""

    tag: Any


@dataclass(frozen=True)
class ToolResult:
    """A tool finished (or failed: `error` set) for reply `reply`."""

    reply: int
    call: ToolCall
    content: str
    duration_s: float
    error: str | None = None
    commands: tuple[Command, ...] = ()


@dataclass(frozen=True)
class Timer:
    """A named timer of the actor fired; `generation` drops stale ones."""

    name: str
    generation: int


@dataclass(frozen=True)
class StageError:
    """A stage failed; `kind` is one of DESIGN.md's error kinds (`ErrorKind`)."""

    kind: ErrorKind
    stage: str
    error: str
    reply: int | None = None
    turn: int | None = None
    #: What the stage already did about it (a retry, a fallback), if anything.
    recovery: str = ""
    #: The stage gave up: the actor's recovery for the kind applies. False: the
    #: stage recovered by itself and the error is only recorded.
    final: bool = True
    #: Text offsets of the reply that the failure left unsaid (a skipped clause):
    #: the caller never heard them, so the conversation must not keep them.
    unsaid: tuple[int, int] | None = None


Event = (
    AudioIn
    | DtmfIn
    | CallHangup
    | HoldChanged
    | TransferResult
    | HandoffBriefed
    | SpeechOnset
    | VadProb
    | TurnChecked
    | SttPartial
    | SttFinal
    | LlmToken
    | LlmToolCalls
    | LlmDone
    | TtsAudio
    | TtsDone
    | FrameSent
    | ToolResult
    | Timer
    | StageError
)
