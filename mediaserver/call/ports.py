"""What the call actor lends the parts that do its work (listener, speaker, control).

The parts run only inside the actor's task, called by the actor; they never
hold the call's state on their own behalf. What they need from the actor is
this narrow set: post to the inbox, note on the call record, start supervised
child work, and arm or disarm the call's named timers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from mediaserver.call import events as ev

__all__ = ["CallPorts"]


@dataclass(frozen=True)
class CallPorts:
    """The actor's plumbing, for its parts.

    Attributes:
        post: queue an event for the actor.
        note: add an entry to the call's timeline and record (`note(what, **fields)`).
        spawn: start a child task the actor supervises (cancelled with the call).
        arm: (re)arm the named timer to fire in `delay` seconds (a `Timer` event).
        disarm: cancel the named timer.
    """

    post: Callable[[ev.Event], None]
    note: Callable[..., None]
    spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]
    arm: Callable[[str, float], None]
    disarm: Callable[[str], None]
