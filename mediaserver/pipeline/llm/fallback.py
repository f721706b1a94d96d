"""One model in front of a chain: retries, fallback models, timeouts, faults.

`FallbackLlm` is an `LlmBackend` over the configured model and its
`fallbacks` (as LiveKit's `FallbackAdapter`), so the call actor streams from one
backend and knows nothing of chains (DESIGN: llm_timeout / llm_error):

- a request that fails before the model said anything is retried with backoff
  (or the provider's Retry-After), then the next model in the chain is tried;
- once the model has said something a failure is final: a retry would say it
  twice;
- a call that had to fall back stays on the fallback (sticky), so later turns
  do not wait for the same failure again;
- no first item within `first_token_timeout`, or no next one within
  `idle_timeout`, is an `LlmTimeout`;
- injected faults for the "llm" stage (matched on the model name) are checked
  here, once per request.

Each failure that is followed by another attempt is reported to `report` (the
actor records it with the step taken); the failure that ends the chain is
raised, its message naming the model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from mediaserver.faults import Faults
from mediaserver.pipeline.llm.base import (
    Done,
    LlmBackend,
    LlmError,
    LlmEvent,
    LlmOptions,
    LlmTimeout,
    Message,
    ToolSpec,
)
from mediaserver.pipeline.settings import LlmSettings

__all__ = ["FallbackLlm", "LlmRetry"]


@dataclass(frozen=True)
class LlmRetry:
    """A failed attempt and what comes next ("retry 1 of 2 in 0.25 s", "fallback to X")."""

    error: LlmError
    step: str


class FallbackLlm(LlmBackend):
    """The chain `settings`, `*settings.fallbacks` as one backend (one per call).

    Args:
        primary: the backend for `settings` (already built).
        settings: the primary model's settings; its `fallbacks` are the chain.
        build: makes (or looks up) the backend for a fallback's settings.
        faults: the fault injection rules (none: no faults).
        report: told about every failure that is retried or falls back.
    """

    name = "fallback"

    def __init__(
        self,
        primary: LlmBackend,
        settings: LlmSettings,
        build: Callable[[LlmSettings], LlmBackend],
        *,
        faults: Faults | None = None,
        report: Callable[[LlmRetry], None] | None = None,
    ) -> None:
        self.primary = primary
        self.chain = [settings, *settings.fallbacks]
        self._build = build
        self._faults = faults or Faults()
        self._report = report or (lambda _: None)
        #: The chain index that answered last (sticky after a fall-back).
        self.current = 0

    def _backend(self, index: int) -> LlmBackend:
        return self.primary if index == 0 else self._build(self.chain[index])

    async def stream(
        self,
        messages: list[Message],
        tools: list[ToolSpec],
        options: LlmOptions | None = None,
    ) -> AsyncIterator[LlmEvent]:
        """The first model that answers, streamed (each model's own options).

        Raises:
            LlmError: the model failed after it started, or every model failed
                (`LlmTimeout` for timeouts; the message names the model).
        """
        chain = self.chain
        for index in range(self.current, len(chain)):
            cfg = chain[index]
            for attempt in range(cfg.retries + 1):
                started = False
                try:
                    async for item in self._attempt(index, messages, tools):
                        started = True
                        yield item
                    self.current = index
                    return
                except LlmError as exc:
                    error = _named(exc, cfg.model)
                    if started or (exc.status in (401, 403)):
                        raise error from exc
                    if attempt < cfg.retries:
                        wait = exc.retry_after or cfg.retry_backoff * 2**attempt
                        step = f"retry {attempt + 1} of {cfg.retries} in {wait:g} s"
                    elif index + 1 < len(chain):
                        wait, step = 0.0, f"fallback to {chain[index + 1].model}"
                    else:
                        raise error from exc
                    self._report(LlmRetry(error, step))
                    await asyncio.sleep(wait)

    async def _attempt(
        self, index: int, messages: list[Message], tools: list[ToolSpec]
    ) -> AsyncIterator[LlmEvent]:
        """One request to chain[index], with its timeouts and any injected fault."""
        cfg = self.chain[index]
        rule = self._faults.check("llm", cfg.model)
        if rule is not None and rule.mode == "fail":
            raise LlmError("injected fault", status=rule.status or 500)
        options = LlmOptions(temperature=cfg.temperature, max_tokens=cfg.max_tokens)
        iterator = aiter(self._backend(index).stream(messages, tools, options))
        timeout = cfg.first_token_timeout
        while True:
            try:
                async with asyncio.timeout(timeout):
                    if rule is not None:
                        await self._faults.delay(rule)
                        rule = None
                    item = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise LlmTimeout(f"no data from the model within {timeout:g} s") from None
            timeout = cfg.idle_timeout
            if isinstance(item, Done):
                return
            yield item

    async def aclose(self) -> None:
        """Nothing of its own: the backends belong to the runtime."""


def _named(exc: LlmError, model: str) -> LlmError:
    """`exc` with the model's name in front of its message (same type and fields)."""
    return type(exc)(f"{model}: {exc}", status=exc.status, retry_after=exc.retry_after)
