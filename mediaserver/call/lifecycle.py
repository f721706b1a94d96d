"""The call's lifecycle as a state machine that refuses illegal transitions.

    answered -> greeting -> listening <-> thinking <-> speaking -> ending -> ended

`listening -> speaking` covers prompts that need no model (the attention
prompt, a recovery phrase); `speaking -> listening` is a reply finished or cut
by barge-in. Any live state may go to `ending` (hangup decided, goodbye being
said) and `ended` (the call is gone). A refused transition is logged and kept
in `refused`, so a bug shows up in the call record instead of corrupting state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class CallState(enum.Enum):
    """Where the conversation is."""

    ANSWERED = "answered"
    GREETING = "greeting"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    ENDING = "ending"
    ENDED = "ended"


_LIVE = {
    CallState.ANSWERED,
    CallState.GREETING,
    CallState.LISTENING,
    CallState.THINKING,
    CallState.SPEAKING,
}

#: state -> the states it may move to.
TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.ANSWERED: frozenset({CallState.GREETING, CallState.LISTENING}),
    CallState.GREETING: frozenset({CallState.LISTENING}),
    CallState.LISTENING: frozenset({CallState.THINKING, CallState.SPEAKING}),
    CallState.THINKING: frozenset({CallState.SPEAKING, CallState.LISTENING}),
    CallState.SPEAKING: frozenset({CallState.LISTENING, CallState.THINKING}),
    CallState.ENDING: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}
for _state in _LIVE:
    TRANSITIONS[_state] = TRANSITIONS[_state] | {CallState.ENDING, CallState.ENDED}


@dataclass(frozen=True)
class Refused:
    """An illegal transition that was asked for (and not made)."""

    source: CallState
    target: CallState
    reason: str


@dataclass
class Lifecycle:
    """The current state plus the record of refused transitions."""

    state: CallState = CallState.ANSWERED
    refused: list[Refused] = field(default_factory=list)

    def can(self, target: CallState) -> bool:
        """Whether `target` is reachable from the current state."""
        return target in TRANSITIONS[self.state]

    def go(self, target: CallState, reason: str = "") -> bool:
        """Move to `target`; False (and recorded) when the table forbids it."""
        if target == self.state:
            return True
        if target not in TRANSITIONS[self.state]:
            self.refused.append(Refused(self.state, target, reason))
            return False
        self.state = target
        return True

    @property
    def live(self) -> bool:
        """Not ending or ended."""
        return self.state in _LIVE
