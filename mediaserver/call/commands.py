"""What a tool's result may ask the call to do, as typed commands.

Agent front-ends translate their own vocabulary into these (the SignalWire
action names in `mediaserver.agent.actions`); the call actor executes them and
knows no front-end's names. `name` is what the call record shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "CollectDigits",
    "Command",
    "Hangup",
    "Hold",
    "PlayBackground",
    "Say",
    "SendDtmf",
    "SetEndOfSpeech",
    "SetGlobalData",
    "SetMetadata",
    "StopBackground",
    "StopListening",
    "ToggleTools",
    "Transfer",
    "UnsetGlobalData",
    "Unsupported",
    "UserInput",
    "WaitForUser",
]


@dataclass(frozen=True)
class Say:
    """Speak `text` now, inside the running reply."""

    name: ClassVar[str] = "say"
    text: str


@dataclass(frozen=True)
class Hangup:
    """Hang up once the reply has been said."""

    name: ClassVar[str] = "hangup"


@dataclass(frozen=True)
class StopListening:
    """Stop answering the caller (their words go unanswered)."""

    name: ClassVar[str] = "stop"


@dataclass(frozen=True)
class ToggleTools:
    """Enable (True) or disable (False) tools for the rest of the call, in order."""

    name: ClassVar[str] = "toggle_functions"
    toggles: tuple[tuple[str, bool], ...]


@dataclass(frozen=True)
class SetGlobalData:
    """Merge `data` into the call's global data."""

    name: ClassVar[str] = "set_global_data"
    data: dict[str, Any]


@dataclass(frozen=True)
class UnsetGlobalData:
    """Remove `keys` from the call's global data."""

    name: ClassVar[str] = "unset_global_data"
    keys: tuple[str, ...]


@dataclass(frozen=True)
class SetMetadata:
    """Merge `data` into the call's metadata."""

    name: ClassVar[str] = "set_meta_data"
    data: dict[str, Any]


@dataclass(frozen=True)
class SetEndOfSpeech:
    """Change the silence that ends the caller's turn (seconds) for this call."""

    name: ClassVar[str] = "end_of_speech_timeout"
    seconds: float


@dataclass(frozen=True)
class SendDtmf:
    """Send `digits` as RFC 4733 events."""

    name: ClassVar[str] = "send_dtmf"
    digits: str


@dataclass(frozen=True)
class CollectDigits:
    """Limits for the caller's next keypad input (0 digits: no limit)."""

    name: ClassVar[str] = "collect_digits"
    max_digits: int = 0
    terminators: str = "#"
    timeout: float = 3.0


@dataclass(frozen=True)
class UserInput:
    """Treat `text` as if the caller had said it (before their next words)."""

    name: ClassVar[str] = "user_input"
    text: str


@dataclass(frozen=True)
class Hold:
    """Put the caller on hold for `seconds` once the reply has been said."""

    name: ClassVar[str] = "hold"
    seconds: float


@dataclass(frozen=True)
class PlayBackground:
    """Mix the WAV at `file` under the conversation."""

    name: ClassVar[str] = "playback_bg"
    file: str


@dataclass(frozen=True)
class StopBackground:
    """Stop the background audio."""

    name: ClassVar[str] = "stop_playback_bg"


@dataclass(frozen=True)
class WaitForUser:
    """Wait for the caller (the agent always does after a reply)."""

    name: ClassVar[str] = "wait_for_user"


@dataclass(frozen=True)
class Transfer:
    """Transfer the caller to `dest` once the reply has been said.

    A warm transfer holds the caller (with `music`, a WAV, or silence), dials
    `dest`, tells whoever answers `summary` (default: the model's summary of
    the call) and only then joins the two; if nobody takes it, the agent is
    back with the caller.
    """

    name: ClassVar[str] = "transfer"
    dest: str
    warm: bool = False
    summary: str | None = None
    music: str | None = None


@dataclass(frozen=True)
class RecordCall:
    """Start recording the call (both directions, stereo WAV) under `control_id`."""

    name: ClassVar[str] = "record_call"
    control_id: str = "main"


@dataclass(frozen=True)
class StopRecordCall:
    """Stop the call's recording; its file gets its final name."""

    name: ClassVar[str] = "stop_record_call"
    control_id: str | None = None


@dataclass(frozen=True)
class PauseRecordCall:
    """Pause the recording (silence is kept: a card number being read), or resume it."""

    name: ClassVar[str] = "pause_record_call"
    paused: bool = True


@dataclass(frozen=True)
class ChangeStep:
    """Move the call to another step of its context (the step must allow it)."""

    name: ClassVar[str] = "change_step"
    step: str


@dataclass(frozen=True)
class ChangeContext:
    """Move the call to another context (its first step)."""

    name: ClassVar[str] = "change_context"
    context: str


@dataclass(frozen=True)
class Unsupported:
    """An action this server does not carry out (recorded and logged)."""

    name: ClassVar[str] = "unsupported"
    action: str
    data: Any = None


Command = (
    Say
    | ChangeStep
    | ChangeContext
    | Hangup
    | StopListening
    | ToggleTools
    | SetGlobalData
    | UnsetGlobalData
    | SetMetadata
    | SetEndOfSpeech
    | SendDtmf
    | CollectDigits
    | UserInput
    | Hold
    | PlayBackground
    | StopBackground
    | WaitForUser
    | Transfer
    | RecordCall
    | StopRecordCall
    | PauseRecordCall
    | Unsupported
)
