"""The shared media clock: one ticker paces every call's outbound RTP.

Each call belongs to one of `SLOTS` slots, 1 ms apart; every millisecond the
clock serves one slot, so each call is served every 20 ms and the work (and the
packets on the wire) is spread over the period instead of leaving in one burst.
This layout measured best on this machine (PEERS.md: p99 1.3 ms late for 1,000
calls at half the CPU of per-call tasks).

Deadlines are absolute (start + n * 1 ms) so the clock does not drift the way
`asyncio.sleep(0.02)` in a loop does; when the loop is late it serves the
missed slots at once rather than skipping them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

log = structlog.get_logger("mediaserver.media.clock")

FRAME = 0.020
SLOTS = 20
TICK = FRAME / SLOTS
#: A tick is served up to this early (see `MediaClock._run`).
_EARLY_TOLERANCE = TICK / 2

#: Keep this many recent lateness samples for the pacing figures.
_LATENESS_SAMPLES = 4096


class Paced(Protocol):
    """What the clock drives: anything with `on_tick(now, late)`."""

    def on_tick(self, now: float, late: float) -> None:
        """Called once per 20 ms in the object's slot; `late` is seconds behind schedule."""


@dataclass
class PacingStats:
    """How late ticks ran, in seconds (ring buffer of recent samples, one per served tick)."""

    samples: list[float] = field(default_factory=list)
    ticks: int = 0
    _pos: int = 0

    def add(self, late: float) -> None:
        self.ticks += 1
        if len(self.samples) < _LATENESS_SAMPLES:
            self.samples.append(late)
        else:
            self.samples[self._pos] = late
            self._pos = (self._pos + 1) % _LATENESS_SAMPLES

    def percentile(self, q: float) -> float:
        """The `q` (0-100) percentile of recent lateness, seconds."""
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


class MediaClock:
    """One 1 ms ticker serving `SLOTS` slots of paced objects in turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._slots: list[list[Paced]] = [[] for _ in range(SLOTS)]
        self._where: dict[int, int] = {}
        self._start = 0.0
        self._tick = 0
        self._handle: asyncio.TimerHandle | None = None
        self.stats = PacingStats()
        self._running = False
        #: Called after each served slot (e.g. to code that slot's frames in one batch).
        self.after_slot: list[Callable[[], None]] = []

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the clock runs on."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def add(self, obj: Paced) -> None:
        """Put `obj` in the least loaded slot; start ticking if idle."""
        slot = min(range(SLOTS), key=lambda i: len(self._slots[i]))
        self._slots[slot].append(obj)
        self._where[id(obj)] = slot
        if self._handle is None and not self._running:
            self._begin()

    def remove(self, obj: Paced) -> None:
        """Stop serving `obj` (no-op if unknown); stop ticking when nobody is left."""
        slot = self._where.pop(id(obj), None)
        if slot is None:
            return
        self._slots[slot] = [o for o in self._slots[slot] if o is not obj]
        if not self._where and self._handle is not None and not self._running:
            self._handle.cancel()
            self._handle = None

    def advance(self, obj: Paced) -> None:
        """Move `obj` to the slot served next (at most one tick away).

        For a session that starts a talk spurt after silence: its first frame
        leaves within a millisecond instead of waiting up to 20 ms for its old
        slot. Pacing from then on is the usual 20 ms.
        """
        slot = self._where.get(id(obj))
        target = self._tick % SLOTS
        if slot is None or slot == target:
            return
        self._slots[slot] = [o for o in self._slots[slot] if o is not obj]
        self._slots[target].append(obj)
        self._where[id(obj)] = target

    def __len__(self) -> int:
        return len(self._where)

    def _begin(self) -> None:
        loop = self.loop
        self._start = loop.time()
        self._tick = 0
        self._handle = loop.call_at(self._start, self._run)

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        self._running = True
        try:
            # Serve every tick that is due (more than one only if the loop was late).
            # uvloop's clock has 1 ms resolution, so a timer can wake a hair before
            # its float deadline; without the tolerance the loop would re-arm the
            # same deadline and spin until the millisecond turns over.
            while self._start + self._tick * TICK <= now + _EARLY_TOLERANCE:
                late = max(0.0, now - (self._start + self._tick * TICK))
                slot = self._slots[self._tick % SLOTS]
                if slot:
                    self.stats.add(late)
                for obj in list(slot):
                    try:
                        obj.on_tick(now, late)
                    except Exception:
                        # One broken call must not stop the clock for everyone.
                        log.exception("paced_object_failed")
                        self.remove(obj)
                if slot:
                    for hook in self.after_slot:
                        try:
                            hook()
                        except Exception:
                            log.exception("after_slot_failed")
                self._tick += 1
        finally:
            self._running = False
        if self._where:
            self._handle = loop.call_at(self._start + self._tick * TICK, self._run)
        else:
            self._handle = None
