"""Named one-shot timers of a call, delivered through the actor's inbox.

Each timer posts a `Timer(name, generation)` event when it expires. Re-arming
or disarming bumps the generation, so an expiry already in the inbox when its
timer changed is recognised as stale and dropped (`due`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mediaserver.call import events as ev

__all__ = ["Timers"]


class Timers:
    """The call's timers (see the module docstring).

    Args:
        loop: the call's event loop.
        post: the actor's inbox.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, post: Callable[[ev.Event], None]) -> None:
        self._loop = loop
        self._post = post
        self._generations: dict[str, int] = {}
        self._handles: dict[str, asyncio.TimerHandle] = {}

    def arm(self, name: str, delay: float) -> None:
        """(Re)arm `name` to fire in `delay` seconds."""
        generation = self._bump(name)
        timer = ev.Timer(name, generation)
        self._handles[name] = self._loop.call_later(delay, self._post, timer)

    def disarm(self, name: str) -> None:
        """Cancel `name` (an expiry already queued becomes stale)."""
        self._bump(name)

    def due(self, event: ev.Timer) -> bool:
        """Whether `event` is the live expiry of its timer (else it is stale)."""
        if self._generations.get(event.name) != event.generation:
            return False
        self._handles.pop(event.name, None)
        return True

    def cancel_all(self) -> None:
        """Cancel every timer (the call ended)."""
        for name in list(self._handles):
            self.disarm(name)

    def _bump(self, name: str) -> int:
        generation = self._generations[name] = self._generations.get(name, 0) + 1
        old = self._handles.pop(name, None)
        if old is not None:
            old.cancel()
        return generation
