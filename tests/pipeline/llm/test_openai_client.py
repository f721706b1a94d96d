"""Tests for mediaserver.pipeline.llm.openai_client against a local SSE server.

The fake server is raw HTTP/1.1 on asyncio streams, answering with chunked
transfer encoding and the exact wire format of OpenAI's streaming Chat
Completions (`chat.completion.chunk` objects, blank-line separated `data:`
events, `data: [DONE]`). Each test scripts what it sends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import pytest

from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.pipeline.llm import (
    Done,
    LlmError,
    LlmEvent,
    LlmTimeout,
    Message,
    OpenAiBackend,
    Token,
    ToolCall,
    ToolCalls,
    ToolSpec,
    load_llm,
)
from mediaserver.pipeline.llm.openai_client import SseDecoder, from_settings
from mediaserver.pipeline.settings import LlmSettings

# ---------------------------------------------------------------- the fake server


@dataclass
class Sleep:
    seconds: float


@dataclass
class Cut:
    """Close the connection without the terminating chunk."""


@dataclass
class Stall:
    """Send nothing more; wait for the client to hang up."""


@dataclass
class Reply:
    """One scripted HTTP response."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    #: Body for errors; for 200: a list of bytes (one HTTP chunk each), Sleep, Cut, Stall.
    body: bytes | list[bytes | Sleep | Cut | Stall] = b""


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeOpenAi:
    """A Chat Completions endpoint on 127.0.0.1 that plays scripted replies in order."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[Seen] = []
        self.closed_by_client = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aenter__(self) -> FakeOpenAi:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            # CancelledError: our own teardown; ending quietly keeps asyncio's
            # stream callback from logging the cancelled handler as an error.
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Seen(method, path, headers, json.loads(raw) if raw else None))
        reply = self.replies.pop(0)
        if reply.status != 200 or isinstance(reply.body, bytes):
            assert isinstance(reply.body, bytes)
            extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
            writer.write(
                f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(reply.body)}\r\n{extra}\r\n".encode()
                + reply.body
            )
            await writer.drain()
            return True
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        await writer.drain()
        assert isinstance(reply.body, list)
        for item in reply.body:
            if isinstance(item, Sleep):
                await asyncio.sleep(item.seconds)
            elif isinstance(item, Cut):
                writer.transport.abort()
                return False
            elif isinstance(item, Stall):
                # The client hanging up shows as EOF (or a reset) on our side.
                try:
                    while await reader.read(1024):
                        pass
                except ConnectionError:
                    pass
                self.closed_by_client.set()
                return False
            else:
                writer.write(b"%x\r\n%s\r\n" % (len(item), item))
                await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


# ---------------------------------------------------------------- the wire format

CREATED = 1_717_000_000


def chunk(delta: dict[str, Any], finish: str | None = None, *, cid: str = "chatcmpl-1") -> bytes:
    """One SSE event carrying a chat.completion.chunk, exactly as OpenAI frames it."""
    obj = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def text_stream(*pieces: str) -> list[bytes | Sleep | Cut | Stall]:
    out: list[bytes | Sleep | Cut | Stall] = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": p}) for p in pieces]
    out += [chunk({}, "stop"), DONE]
    return out


def tool_delta(
    index: int, *, id: str | None = None, name: str | None = None, args: str = ""
) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if id is not None:
        call["id"] = id
        call["type"] = "function"
        call["function"]["name"] = name
    return {"tool_calls": [call]}


def run(body: Callable[[], Awaitable[None]], timeout: float = 5.0) -> None:
    async def main() -> None:
        async with asyncio.timeout(timeout):
            await body()

    asyncio.run(main())


async def collect(
    backend: OpenAiBackend,
    messages: list[Message] | None = None,
    tools: list[ToolSpec] | None = None,
) -> list[LlmEvent]:
    out: list[LlmEvent] = []
    async for event in backend.stream(messages or [Message("user", "hi")], tools or []):
        out.append(event)
    return out


def backend_for(server: FakeOpenAi, **kwargs: Any) -> OpenAiBackend:
    kwargs.setdefault("first_token_timeout", 2.0)
    kwargs.setdefault("idle_timeout", 2.0)
    return OpenAiBackend(server.url, kwargs.pop("api_key", "sk-test"), "gpt-4o-mini", **kwargs)


WEATHER = ToolSpec(
    "get_weather",
    "Current weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


# ---------------------------------------------------------------- tests


def test_text_streaming() -> None:
    async def body() -> None:
        async with FakeOpenAi(
            Reply(body=text_stream("Hello", " there", ",", " caller."))
        ) as server:
            backend = backend_for(server)
            try:
                events = await collect(backend)
            finally:
                await backend.aclose()
        assert events == [
            Token("Hello"),
            Token(" there"),
            Token(","),
            Token(" caller."),
            Done("stop"),
        ]

    run(body)


def test_request_body_and_headers() -> None:
    async def body() -> None:
        async with FakeOpenAi(Reply(body=text_stream("ok"))) as server:
            backend = OpenAiBackend(
                server.url + "/", "sk-secret", "my-model", temperature=0.3, max_tokens=50
            )
            messages = [
                Message("system", "Be brief."),
                Message("user", "Weather in Paris?"),
                Message(
                    "assistant",
                    None,
                    tool_calls=[ToolCall("call_9", "get_weather", {"city": "Paris"})],
                ),
                Message("tool", '{"temp": 20}', tool_call_id="call_9", name="get_weather"),
            ]
            try:
                await collect(backend, messages, [WEATHER])
            finally:
                await backend.aclose()
        (seen,) = server.requests
        assert seen.method == "POST"
        assert seen.path == "/v1/chat/completions"
        assert seen.headers["authorization"] == "Bearer sk-secret"
        assert seen.headers["content-type"] == "application/json"
        assert seen.body == {
            "model": "my-model",
            "messages": [m.to_openai() for m in messages],
            "stream": True,
            "tools": [WEATHER.to_openai()],
            "temperature": 0.3,
            "max_tokens": 50,
        }
        assert (
            seen.body["messages"][2]["tool_calls"][0]["function"]["arguments"]
            == '{"city": "Paris"}'
        )

    run(body)


def test_no_tools_no_auth_fields_omitted() -> None:
    async def body() -> None:
        async with FakeOpenAi(Reply(body=text_stream("ok"))) as server:
            backend = backend_for(server, api_key=None)
            try:
                await collect(backend)
            finally:
                await backend.aclose()
        (seen,) = server.requests
        assert "authorization" not in seen.headers
        assert set(seen.body) == {"model", "messages", "stream"}

    run(body)


def test_tool_calls_split_and_interleaved() -> None:
    stream: list[bytes | Sleep | Cut | Stall] = [
        chunk({"role": "assistant", "content": None}),
        chunk(tool_delta(0, id="call_A", name="get_weather")),
        chunk(tool_delta(1, id="call_B", name="lookup_order")),
        chunk(tool_delta(0, args='{"ci')),
        chunk(tool_delta(1, args='{"order_id": "A')),
        chunk(tool_delta(0, args='ty": "Par')),
        chunk(tool_delta(1, args='B1\\u00e923", "n": 4')),
        chunk(tool_delta(0, args='is"}')),
        chunk(tool_delta(1, args="2}")),
        chunk({}, "tool_calls"),
        DONE,
    ]

    async def body() -> None:
        async with FakeOpenAi(Reply(body=stream)) as server:
            backend = backend_for(server)
            try:
                events = await collect(backend, tools=[WEATHER])
            finally:
                await backend.aclose()
        assert events == [
            ToolCalls(
                (
                    ToolCall("call_A", "get_weather", {"city": "Paris"}),
                    ToolCall("call_B", "lookup_order", {"order_id": "AB1\u00e923", "n": 42}),
                )
            ),
            Done("tool_calls"),
        ]

    run(body)


def test_text_then_tool_call_and_sse_variants() -> None:
    """CRLF line ends, comments, an `event:` field, multi-line data, bytes split anywhere."""
    event = json.dumps(
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "Sure"}, "finish_reason": None}],
        }
    )
    # the same JSON object spread over two data lines (joined with "\n", still valid JSON)
    cut = event.index(' "choices"')
    head, tail = event[:cut], event[cut:]
    multiline = f": keep-alive\r\nevent: message\r\ndata: {head}\r\ndata: {tail}\r\n\r\n".encode()
    calls = chunk(tool_delta(0, id="call_1", name="get_weather", args='{"city": "Oslo"}')).replace(
        b"\n", b"\r\n"
    )
    finish = chunk({}, "tool_calls")
    raw = multiline + calls + finish + b"data: [DONE]\r\n\r\n"
    # split at every few bytes, including between \r and \n
    pieces: list[bytes | Sleep | Cut | Stall] = [raw[i : i + 7] for i in range(0, len(raw), 7)]

    async def body() -> None:
        async with FakeOpenAi(Reply(body=pieces)) as server:
            backend = backend_for(server)
            try:
                events = await collect(backend, tools=[WEATHER])
            finally:
                await backend.aclose()
        assert events == [
            Token("Sure"),
            ToolCalls((ToolCall("call_1", "get_weather", {"city": "Oslo"}),)),
            Done("tool_calls"),
        ]

    run(body)


def test_bad_tool_arguments() -> None:
    stream: list[bytes | Sleep | Cut | Stall] = [
        chunk(tool_delta(0, id="call_1", name="get_weather", args='{"city": ')),
        chunk({}, "tool_calls"),
        DONE,
    ]

    async def body() -> None:
        async with FakeOpenAi(Reply(body=stream)) as server:
            backend = backend_for(server)
            try:
                with pytest.raises(LlmError, match="bad tool arguments"):
                    await collect(backend, tools=[WEATHER])
            finally:
                await backend.aclose()

    run(body)


def test_stream_cut_midway() -> None:
    stream = [*text_stream("Hello", " there")[:2], Cut()]

    async def body() -> None:
        async with FakeOpenAi(Reply(body=stream)) as server:
            backend = backend_for(server)
            got: list[LlmEvent] = []
            try:
                with pytest.raises(LlmError, match="stream ended early") as info:
                    async for event in backend.stream([Message("user", "hi")], []):
                        got.append(event)
            finally:
                await backend.aclose()
        assert got == [Token("Hello")]
        assert not isinstance(info.value, LlmTimeout)

    run(body)


def test_stream_ends_cleanly_without_done_or_finish() -> None:
    """A well-formed chunked body that simply stops before [DONE]/finish_reason."""

    async def body() -> None:
        async with FakeOpenAi(Reply(body=text_stream("Hello")[:2])) as server:
            backend = backend_for(server)
            try:
                with pytest.raises(LlmError, match="stream ended early"):
                    await collect(backend)
            finally:
                await backend.aclose()

    run(body)


def test_finish_without_done_is_complete() -> None:
    async def body() -> None:
        async with FakeOpenAi(Reply(body=text_stream("Hi")[:-1])) as server:
            backend = backend_for(server)
            try:
                assert await collect(backend) == [Token("Hi"), Done("stop")]
            finally:
                await backend.aclose()

    run(body)


def error_body(message: str, type_: str, code: str | None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": code}}
    ).encode()


def test_http_401() -> None:
    reply = Reply(
        401,
        body=error_body(
            "Incorrect API key provided: sk-test.", "invalid_request_error", "invalid_api_key"
        ),
    )

    async def body() -> None:
        async with FakeOpenAi(reply) as server:
            backend = backend_for(server)
            try:
                with pytest.raises(LlmError) as info:
                    await collect(backend)
            finally:
                await backend.aclose()
        assert info.value.status == 401
        assert info.value.retry_after is None
        assert "Incorrect API key provided" in str(info.value)

    run(body)


@pytest.mark.parametrize("status", [429, 503])
def test_http_retry_after(status: int) -> None:
    reply = Reply(
        status,
        {"Retry-After": "2"},
        error_body("Rate limit reached", "requests", "rate_limit_exceeded"),
    )

    async def body() -> None:
        async with FakeOpenAi(reply) as server:
            backend = backend_for(server)
            try:
                with pytest.raises(LlmError) as info:
                    await collect(backend)
            finally:
                await backend.aclose()
        assert info.value.status == status
        assert info.value.retry_after == 2.0
        assert "Rate limit reached" in str(info.value)

    run(body)


def test_http_500_plain_text() -> None:
    async def body() -> None:
        async with FakeOpenAi(Reply(500, body=b"upstream exploded")) as server:
            backend = backend_for(server)
            try:
                with pytest.raises(LlmError, match="upstream exploded") as info:
                    await collect(backend)
            finally:
                await backend.aclose()
        assert info.value.status == 500

    run(body)


def test_first_token_timeout() -> None:
    # Role chunk and keep-alive comments arrive, but no token: still a first-token timeout.
    stream: list[bytes | Sleep | Cut | Stall] = [
        chunk({"role": "assistant", "content": ""}),
        b": ping\n\n",
        Sleep(0.1),
        b": ping\n\n",
        Stall(),
    ]

    async def body() -> None:
        async with FakeOpenAi(Reply(body=stream)) as server:
            backend = backend_for(server, first_token_timeout=0.2)
            t0 = time.monotonic()
            try:
                with pytest.raises(LlmTimeout, match="first token"):
                    await collect(backend)
            finally:
                await backend.aclose()
            assert time.monotonic() - t0 < 1.0
            # the timed-out response was closed, not left hanging
            await asyncio.wait_for(server.closed_by_client.wait(), 1.0)

    run(body)


def test_idle_timeout() -> None:
    stream = [*text_stream("Hello")[:2], Stall()]

    async def body() -> None:
        async with FakeOpenAi(Reply(body=stream)) as server:
            backend = backend_for(server, idle_timeout=0.2)
            got: list[LlmEvent] = []
            try:
                with pytest.raises(LlmTimeout, match="while streaming"):
                    async for event in backend.stream([Message("user", "hi")], []):
                        got.append(event)
            finally:
                await backend.aclose()
        assert got == [Token("Hello")]

    run(body)


def test_cancel_closes_connection() -> None:
    stream = [*text_stream("Hello")[:2], Stall()]

    async def body() -> None:
        async with FakeOpenAi(Reply(body=stream)) as server:
            backend = backend_for(server, first_token_timeout=30, idle_timeout=30)
            first = asyncio.Event()

            async def consume() -> None:
                async for _ in backend.stream([Message("user", "hi")], []):
                    first.set()

            task = asyncio.create_task(consume())
            try:
                await asyncio.wait_for(first.wait(), 2)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await asyncio.wait_for(server.closed_by_client.wait(), 1.0)
            finally:
                await backend.aclose()

    run(body)


def test_connection_refused() -> None:
    async def body() -> None:
        async with FakeOpenAi() as server:
            url = server.url
        backend = OpenAiBackend(url, None, "m", first_token_timeout=2)
        try:
            with pytest.raises(LlmError, match="connection failed"):
                await collect(backend)
        finally:
            await backend.aclose()

    run(body)


def test_shared_client_reused_across_requests() -> None:
    import httpx

    async def body() -> None:
        async with (
            FakeOpenAi(Reply(body=text_stream("one")), Reply(body=text_stream("two"))) as server,
            httpx.AsyncClient() as client,
        ):
            backend = OpenAiBackend(server.url, None, "m", client=client)
            assert await collect(backend) == [Token("one"), Done("stop")]
            assert await collect(backend) == [Token("two"), Done("stop")]
            await backend.aclose()  # not ours: must leave the client open
            assert not client.is_closed

    run(body)


def test_server_ignoring_stream_flag() -> None:
    completion = {
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "created": CREATED,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_7",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }

    async def body() -> None:
        async with FakeOpenAi(Reply(200, body=json.dumps(completion).encode())) as server:
            backend = backend_for(server)
            try:
                events = await collect(backend, tools=[WEATHER])
            finally:
                await backend.aclose()
        assert events == [
            Token("Checking."),
            ToolCalls((ToolCall("call_7", "get_weather", {"city": "Rome"}),)),
            Done("tool_calls"),
        ]

    run(body)


# ---------------------------------------------------------------- SSE decoder


def test_sse_decoder_byte_by_byte() -> None:
    raw = b": hello\r\nevent: update\r\ndata: a\r\ndata:b\r\rdata: c\n\ndata: tail"
    decoder = SseDecoder()
    events = [e for i in range(len(raw)) for e in decoder.feed(raw[i : i + 1])]
    events += list(decoder.close())
    assert [(e.event, e.data) for e in events] == [
        ("update", "a\nb"),
        ("message", "c"),
        ("message", "tail"),
    ]


# ---------------------------------------------------------------- settings


def test_from_settings_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_LLM_KEY", "sk-from-env")
    settings = LlmSettings(
        backend="openai",
        base_url="http://127.0.0.1:9/v1",
        api_key="env:TEST_LLM_KEY",
        model="m",
        temperature=0.5,
        first_token_timeout=3,
    )
    backend = from_settings(settings)
    assert backend._headers()["Authorization"] == "Bearer sk-from-env"
    assert backend.url == "http://127.0.0.1:9/v1/chat/completions"
    assert backend.first_token_timeout == 3
    assert backend.request_body([], [])["temperature"] == 0.5
    asyncio.run(backend.aclose())

    monkeypatch.delenv("TEST_LLM_KEY")
    with pytest.raises(ValueError, match=r"llm\.api_key.*TEST_LLM_KEY"):
        from_settings(settings)
    # Loading through the registry fails the one way every backend does.
    with pytest.raises(ModelLoadError, match=r"openai: cannot load model m: llm\.api_key"):
        load_llm(settings)


def test_load_llm_registry() -> None:
    from mediaserver.pipeline.llm import ScriptedBackend, ScriptedConfig

    backend = load_llm(LlmSettings(backend="openai", api_key="sk-literal"))
    assert isinstance(backend, OpenAiBackend) and backend.name == "openai"
    asyncio.run(backend.aclose())
    config = ScriptedConfig(fallback="nope")
    scripted = load_llm(LlmSettings(), config)
    assert isinstance(scripted, ScriptedBackend) and scripted.name == "scripted"
    assert scripted.config is config
