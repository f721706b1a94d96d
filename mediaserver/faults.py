"""Fault injection: make a stage fail, hang or slow down on demand (off by default).

For tests and demos of the recovery paths. Rules come from the `faults` config
section, or are added at run time through `Faults.add` (the test API). Each
stage asks `Faults.check(stage, name)` at its boundary and, when a rule fires,
misbehaves the way the rule says:

| stage    | name matched          | fail                              | hang / slow            |
|----------|-----------------------|-----------------------------------|------------------------|
| stt      | -                     | the decoder raises                | finalise blocks        |
| llm      | model name            | HTTP `status` (default 500)       | no tokens / late ones  |
| tts      | voice                 | synthesis raises                  | synthesis blocks       |
| tool     | tool name             | the handler raises                | the handler blocks     |
| transfer | target URI            | the transfer fails (`status`)     | -                      |
| media    | -                     | `count` packets fail to decode    | -                      |
| rtp      | -                     | inbound RTP is dropped from now   | -                      |
| sip      | method (BYE, INVITE)  | our request is never sent         | -                      |

"hang" blocks for `delay` seconds (long by default), so the stage's own timeout
is what ends it; "slow" adds `delay` seconds and then goes on normally.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import structlog
from pydantic import Field

from mediaserver.strict import Strict

log = structlog.get_logger("mediaserver.faults")

Stage = Literal["stt", "llm", "tts", "tool", "transfer", "media", "rtp", "sip"]


class FaultRule(Strict):
    """One injected fault."""

    stage: Stage
    mode: Literal["fail", "hang", "slow"] = "fail"
    #: Only where the stage's name (see the table) equals this; None: everywhere.
    match: str | None = None
    #: "hang": how long it blocks; "slow": the added latency (seconds).
    delay: float = Field(3600.0, ge=0)
    #: The status of an injected LLM or transfer failure (401/403: an auth failure).
    status: int | None = Field(None, ge=100, le=699)
    #: media: how many packets fail to decode.
    count: int = Field(25, ge=1)
    #: Let this many occurrences through before the rule fires.
    after: int = Field(0, ge=0)
    #: Fire this many times, then stop (0: every time).
    times: int = Field(0, ge=0)


class FaultSettings(Strict):
    """The `faults` config section: rules, all off unless `enabled`."""

    enabled: bool = False
    rules: list[FaultRule] = Field(default_factory=list)


class InjectedFault(Exception):
    """What an injected "fail" raises where the stage has no error type of its own."""


class Faults:
    """The live rules and how often each has been seen and fired."""

    def __init__(self, settings: FaultSettings | None = None) -> None:
        settings = settings or FaultSettings()
        self._rules: list[FaultRule] = list(settings.rules) if settings.enabled else []
        self._seen: dict[int, int] = {}
        self._fired: dict[int, int] = {}
        if self._rules:
            log.warning(
                "faults_enabled", rules=[r.model_dump(exclude_defaults=True) for r in self._rules]
            )

    def add(self, rule: FaultRule) -> None:
        """Start injecting `rule` (the test API)."""
        self._rules.append(rule)

    def clear(self) -> None:
        """Stop injecting anything (and forget the counts)."""
        self._rules.clear()
        self._seen.clear()
        self._fired.clear()

    def check(self, stage: Stage, name: str | None = None) -> FaultRule | None:
        """The rule that fires for this occurrence of `stage` (on `name`), if any."""
        for rule in self._rules:
            if rule.stage != stage or (rule.match is not None and rule.match != name):
                continue
            key = id(rule)
            seen = self._seen[key] = self._seen.get(key, 0) + 1
            if seen <= rule.after:
                continue
            fired = self._fired.get(key, 0)
            if rule.times and fired >= rule.times:
                continue
            self._fired[key] = fired + 1
            log.warning("fault_injected", stage=stage, name=name, mode=rule.mode)
            return rule
        return None

    async def delay(self, rule: FaultRule | None) -> None:
        """Block for a "hang" or "slow" rule (no-op for None or "fail")."""
        if rule is not None and rule.mode in ("hang", "slow"):
            await asyncio.sleep(rule.delay)

    async def inject(self, rule: FaultRule | None, error: Exception) -> None:
        """Carry out `rule` at a stage boundary: block for "hang"/"slow", raise
        `error` for "fail" (no-op for None)."""
        await self.delay(rule)
        if rule is not None and rule.mode == "fail":
            raise error
