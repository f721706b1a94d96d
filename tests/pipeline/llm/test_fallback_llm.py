"""`FallbackLlm`: retries, fallback models, stickiness, timeouts and faults, with the
real OpenAI client against local servers speaking the streaming wire format."""

from __future__ import annotations

import json

import pytest

from mediaserver.faults import FaultRule, Faults
from mediaserver.pipeline.llm import LlmError, LlmTimeout, Message, Token, load_llm
from mediaserver.pipeline.llm.base import LlmBackend
from mediaserver.pipeline.llm.fallback import FallbackLlm, LlmRetry
from mediaserver.pipeline.settings import LlmSettings
from tests.pipeline.llm.test_openai_client import (
    Cut,
    FakeOpenAi,
    Reply,
    Sleep,
    chunk,
    run,
    text_stream,
)

ASK = [Message("user", "hi")]


def settings(server: FakeOpenAi, model: str, **kwargs: object) -> LlmSettings:
    return LlmSettings.model_validate(
        {
            "backend": "openai",
            "base_url": server.url,
            "api_key": "sk-test",
            "model": model,
            "retry_backoff": 0,
            **kwargs,
        }
    )


def chain(primary: LlmSettings, faults: Faults | None = None) -> tuple[FallbackLlm, list[LlmRetry]]:
    retries: list[LlmRetry] = []
    built: dict[str, LlmBackend] = {}

    def build(cfg: LlmSettings) -> LlmBackend:
        return built.setdefault(cfg.model, load_llm(cfg))

    return FallbackLlm(
        build(primary), primary, build, faults=faults, report=retries.append
    ), retries


async def text(llm: FallbackLlm) -> str:
    return "".join([e.text async for e in llm.stream(ASK, []) if isinstance(e, Token)])


def error(status: int, **headers: str) -> Reply:
    body = json.dumps({"error": {"message": "boom", "type": "server_error"}}).encode()
    return Reply(status, headers, body)


def test_a_failed_request_is_retried_then_falls_back_and_stays_there() -> None:
    async def body() -> None:
        async with (
            FakeOpenAi(error(500), error(503)) as main,
            FakeOpenAi(Reply(body=text_stream("Hello")), Reply(body=text_stream("Again"))) as spare,
        ):
            primary = settings(main, "big", retries=1)
            primary.fallbacks.append(settings(spare, "small", retries=0))
            llm, retries = chain(primary)
            assert await text(llm) == "Hello"
            assert [r.step for r in retries] == ["retry 1 of 1 in 0 s", "fallback to small"]
            assert all(r.error.status in (500, 503) for r in retries)
            assert str(retries[0].error).startswith("big: ")
            # Sticky: the next turn goes straight to the fallback.
            assert await text(llm) == "Again"
            assert len(main.requests) == 2 and len(spare.requests) == 2

    run(body)


def test_retry_after_is_honoured() -> None:
    async def body() -> None:
        async with FakeOpenAi(
            error(429, **{"Retry-After": "0.2"}), Reply(body=text_stream("ok"))
        ) as s:
            llm, retries = chain(settings(s, "m", retries=2))
            assert await text(llm) == "ok"
            assert [r.step for r in retries] == ["retry 1 of 2 in 0.2 s"]

    run(body)


def test_a_failure_after_the_model_spoke_is_final() -> None:
    async def body() -> None:
        cut = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), Cut()]
        async with FakeOpenAi(Reply(body=cut), Reply(body=text_stream("unused"))) as s:
            llm, retries = chain(settings(s, "m", retries=3))
            seen: list[str] = []
            with pytest.raises(LlmError, match=r"^m: "):
                async for event in llm.stream(ASK, []):
                    if isinstance(event, Token):
                        seen.append(event.text)
            # Said once, never repeated by a retry.
            assert seen == ["Hel"] and retries == [] and len(s.requests) == 1

    run(body)


def test_refused_credentials_are_not_retried() -> None:
    async def body() -> None:
        async with FakeOpenAi(error(401)) as s, FakeOpenAi() as spare:
            primary = settings(s, "m", retries=3)
            primary.fallbacks.append(settings(spare, "other"))
            llm, retries = chain(primary)
            with pytest.raises(LlmError) as info:
                await text(llm)
            assert info.value.status == 401 and retries == [] and spare.requests == []

    run(body)


def test_no_first_token_in_time_is_a_timeout_and_every_model_failing_raises() -> None:
    async def body() -> None:
        slow = [chunk({"role": "assistant", "content": ""}), Sleep(2.0), *text_stream("late")]
        async with FakeOpenAi(Reply(body=slow)) as s:
            llm, retries = chain(settings(s, "m", retries=0, first_token_timeout=0.3))
            with pytest.raises(LlmTimeout, match=r"m: no data from the model within 0\.3 s"):
                await text(llm)
            assert retries == []

    run(body)


def test_injected_faults_fail_or_delay_the_named_model() -> None:
    async def body() -> None:
        faults = Faults()
        faults.add(FaultRule(stage="llm", match="m", mode="fail", status=502, times=1))
        async with FakeOpenAi(Reply(body=text_stream("ok"))) as s:
            llm, retries = chain(settings(s, "m", retries=1), faults)
            assert await text(llm) == "ok"
            assert [(r.error.status, r.step) for r in retries] == [(502, "retry 1 of 1 in 0 s")]
            assert len(s.requests) == 1  # the injected failure never reached the server
        faults.add(FaultRule(stage="llm", mode="hang", delay=5, times=1))
        async with FakeOpenAi(Reply(body=text_stream("ok"))) as s:
            llm, _ = chain(settings(s, "m", retries=0, first_token_timeout=0.2), faults)
            with pytest.raises(LlmTimeout):
                await text(llm)

    run(body)
