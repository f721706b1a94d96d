"""OpenAI-compatible Chat Completions over httpx, streamed with server-sent events.

One client for OpenAI, vLLM, Ollama (/v1) and the llama.cpp server: they all
speak `POST {base_url}/chat/completions` with `"stream": true` and answer with
`chat.completion.chunk` objects as SSE `data:` lines, ending with
`data: [DONE]`. Tool calls arrive as deltas keyed by `index`, the arguments
JSON cut into arbitrary string pieces, so they are accumulated and decoded
only when the model finishes its turn.

Timeouts are enforced with asyncio deadlines around every read rather than
httpx's read timeout, because the first token (model thinking time) and the
gap between tokens need different budgets. The response is opened with
`async with client.stream(...)`, so cancelling the consuming task (barge-in)
closes the HTTP connection right away and the server stops generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from mediaserver.pipeline.cloud import env_key, http_error_text
from mediaserver.pipeline.llm.base import (
    Done,
    LlmBackend,
    LlmError,
    LlmEvent,
    LlmOptions,
    LlmTimeout,
    Message,
    Token,
    ToolCall,
    ToolCalls,
    ToolSpec,
)
from mediaserver.pipeline.settings import LlmSettings

__all__ = ["OpenAiBackend", "SseDecoder", "SseEvent", "from_settings", "resolve_api_key"]

# After finish_reason only [DONE] (and maybe a usage chunk) should follow; do
# not let a server that forgets [DONE] hold the turn for a whole idle_timeout.
_DRAIN_TIMEOUT = 1.0


@dataclass
class SseEvent:
    """One server-sent event."""

    data: str
    event: str = "message"


@dataclass
class SseDecoder:
    """Incremental server-sent-events parser (the WHATWG event-stream format).

    Bytes go in as they arrive, complete events come out. Lines end with LF,
    CRLF or CR (also when a CRLF is split across reads); `:` lines are
    comments (keep-alives); several `data:` lines join with newlines; a blank
    line dispatches the event.
    """

    _buffer: bytes = b""
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _skip_lf: bool = False

    def feed(self, chunk: bytes) -> Iterator[SseEvent]:
        """Add bytes; yield the events they complete."""
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = False
        self._buffer += chunk
        while True:
            cut = min(
                (i for i in (self._buffer.find(b"\r"), self._buffer.find(b"\n")) if i >= 0),
                default=-1,
            )
            if cut < 0:
                return
            line = self._buffer[:cut]
            rest = self._buffer[cut + 1 :]
            if self._buffer[cut : cut + 1] == b"\r":
                if rest.startswith(b"\n"):
                    rest = rest[1:]
                elif not rest:
                    self._skip_lf = True  # the LF of this CRLF may come in the next read
            self._buffer = rest
            event = self._line(line.decode("utf-8", errors="replace"))
            if event is not None:
                yield event

    def close(self) -> Iterator[SseEvent]:
        """End of stream: yield an event left without its closing blank line.

        The spec drops it; we keep it, because some servers end with a bare
        `data: [DONE]` line and losing that would look like a cut stream.
        """
        if self._buffer:
            event = self._line(self._buffer.decode("utf-8", errors="replace"))
            self._buffer = b""
            if event is not None:
                yield event
        event = self._line("")
        if event is not None:
            yield event

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SseEvent("\n".join(self._data), self._event or "message")
            self._data, self._event = [], ""
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None  # id and retry do not matter for a one-shot completion


@dataclass
class _PendingCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAiBackend(LlmBackend):
    """A streaming OpenAI-compatible chat model (registry name "openai").

    Args:
        base_url: API root, e.g. "https://api.openai.com/v1" or
            "http://localhost:11434/v1"; "/chat/completions" is appended.
        api_key: Sent as a Bearer token; None for local servers without auth.
        model: Model name sent in every request.
        first_token_timeout: Seconds from sending the request to the first
            token or tool-call delta.
        idle_timeout: Seconds allowed between two reads once streaming.
        temperature: Default sampling temperature (omitted when None).
        max_tokens: Default reply length cap (omitted when None).
        client: A shared httpx client; by default the backend makes its own
            and closes it in `aclose`.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        *,
        first_token_timeout: float = 10,
        idle_timeout: float = 10,
        temperature: float | None = None,
        max_tokens: int | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.first_token_timeout = first_token_timeout
        self.idle_timeout = idle_timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._api_key = api_key
        self._owns_client = client is None
        # No httpx read timeout: the asyncio deadlines in `stream` own that.
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=first_token_timeout)
        )

    def request_body(
        self, messages: list[Message], tools: list[ToolSpec], options: LlmOptions | None = None
    ) -> dict[str, Any]:
        """The JSON body of the Chat Completions request.

        `stream_options.include_usage` is left out on purpose: not every
        compatible server accepts it.
        """
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_openai() for m in messages],
            "stream": True,
        }
        if tools:
            body["tools"] = [t.to_openai() for t in tools]
        temperature = self.temperature
        max_tokens = self.max_tokens
        if options is not None:
            if options.temperature is not None:
                temperature = options.temperature
            if options.max_tokens is not None:
                max_tokens = options.max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return body

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    async def stream(
        self,
        messages: list[Message],
        tools: list[ToolSpec],
        options: LlmOptions | None = None,
    ) -> AsyncIterator[LlmEvent]:
        """Stream the model's reply.

        Args:
            messages: The conversation.
            tools: Tools the model may call (the `tools` field is omitted when empty).
            options: Per-request temperature / max_tokens overriding the defaults.

        Yields:
            Token for each non-empty content piece, then ToolCalls when the
            model asked for tools, then Done(finish_reason).

        Raises:
            LlmTimeout: No first token within `first_token_timeout`, or no data
                for `idle_timeout` while streaming.
            LlmError: HTTP status >= 400 (with `status` and `retry_after`), a
                connection failure, a malformed chunk or tool arguments, or a
                stream that ended before [DONE] / finish_reason.
        """
        body = self.request_body(messages, tools, options)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.first_token_timeout
        started = False  # a token or tool delta arrived: idle_timeout applies from now on
        finish: str | None = None
        done = False
        calls: dict[int, _PendingCall] = {}
        decoder = SseDecoder()
        responded = False  # headers arrived: a later httpx error means a cut stream
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    async with asyncio.timeout_at(deadline):
                        response = await stack.enter_async_context(
                            self._client.stream(
                                "POST", self.url, json=body, headers=self._headers()
                            )
                        )
                except TimeoutError:
                    raise LlmTimeout(f"no response within {self.first_token_timeout:g} s") from None
                responded = True
                if response.status_code >= 400:
                    await self._raise_for_status(response, loop.time() + self.idle_timeout)
                if response.headers.get("content-type", "").startswith("application/json"):
                    # A server that ignored "stream": true sent one whole completion.
                    try:
                        async with asyncio.timeout_at(deadline):
                            whole = await response.aread()
                    except TimeoutError:
                        raise LlmTimeout(
                            f"no reply within {self.first_token_timeout:g} s"
                        ) from None
                    for item in self._whole(whole, calls):
                        if isinstance(item, Token):
                            yield item
                        else:
                            finish = item
                    done = True
                chunks = response.aiter_bytes()
                while not done:
                    if finish is not None:
                        timeout_at = loop.time() + min(self.idle_timeout, _DRAIN_TIMEOUT)
                    elif started:
                        timeout_at = loop.time() + self.idle_timeout
                    else:
                        timeout_at = deadline
                    chunk: bytes | None = None
                    try:
                        async with asyncio.timeout_at(timeout_at):
                            chunk = await anext(chunks)
                    except StopAsyncIteration:
                        events = list(decoder.close())
                    except TimeoutError:
                        if finish is not None:
                            break  # the turn is complete; the server just never said [DONE]
                        if started:
                            raise LlmTimeout(
                                f"no data for {self.idle_timeout:g} s while streaming"
                            ) from None
                        raise LlmTimeout(
                            f"no first token within {self.first_token_timeout:g} s"
                        ) from None
                    else:
                        events = list(decoder.feed(chunk))
                    for event in events:
                        if event.data.strip() == "[DONE]":
                            done = True
                            break
                        for item in self._chunk(event, calls):
                            started = True
                            if isinstance(item, Token):
                                yield item
                            elif item != "delta":
                                finish = finish or item
                    if chunk is None:
                        break
        except httpx.TimeoutException as exc:
            raise LlmTimeout(f"LLM request timed out: {exc!r}") from exc
        except httpx.HTTPError as exc:
            what = "stream ended early" if responded else "LLM connection failed"
            raise LlmError(f"{what}: {exc!r}") from exc
        if not done and finish is None:
            raise LlmError("stream ended early: no [DONE] or finish_reason")
        if calls:
            yield ToolCalls(self._decode_calls(calls))
            yield Done(finish or "tool_calls")
        else:
            yield Done(finish or "stop")

    def _chunk(self, event: SseEvent, calls: dict[int, _PendingCall]) -> Iterator[Token | str]:
        """Tokens in one chunk, "delta" for tool-call pieces, and the finish_reason if any."""
        try:
            data = json.loads(event.data)
        except ValueError as exc:
            raise LlmError(f"bad chunk from the LLM: {event.data[:200]!r}") from exc
        if not isinstance(data, dict):
            raise LlmError(f"bad chunk from the LLM: {event.data[:200]!r}")
        if event.event == "error" or "error" in data:
            # Some servers report failures mid-stream as a data line.
            raise LlmError(http_error_text(event.data.encode()))
        for choice in data.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # n > 1 is never requested
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                yield Token(content)
            for position, piece in enumerate(delta.get("tool_calls") or []):
                index = piece.get("index", position)
                call = calls.setdefault(index, _PendingCall())
                if piece.get("id"):
                    call.id = piece["id"]
                function = piece.get("function") or {}
                name = function.get("name")
                # The name comes whole in the first delta; tolerate servers that
                # repeat it in every delta or stream it in pieces.
                if name and name != call.name:
                    call.name += name
                arguments = function.get("arguments")
                if isinstance(arguments, str):
                    call.arguments += arguments
                elif isinstance(arguments, dict):
                    call.arguments = json.dumps(arguments)  # a server sending objects
                yield "delta"
            reason = choice.get("finish_reason")
            if reason:
                yield str(reason)

    def _whole(self, body: bytes, calls: dict[int, _PendingCall]) -> Iterator[Token | str]:
        """A non-streamed chat.completion read as one big delta."""
        try:
            data = json.loads(body)
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LlmError(f"bad completion from the LLM: {body[:200]!r}") from exc
        delta = {
            "content": message.get("content"),
            "tool_calls": [
                {"index": n, **call} for n, call in enumerate(message.get("tool_calls") or [])
            ],
        }
        chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        for item in self._chunk(SseEvent(json.dumps(chunk)), calls):
            if item != "delta":
                yield item
        yield str(choice.get("finish_reason") or "stop")

    @staticmethod
    def _decode_calls(calls: dict[int, _PendingCall]) -> tuple[ToolCall, ...]:
        out: list[ToolCall] = []
        for index in sorted(calls):
            call = calls[index]
            if not call.name:
                raise LlmError(f"bad tool call {index}: no function name")
            try:
                arguments = json.loads(call.arguments) if call.arguments.strip() else {}
            except ValueError as exc:
                raise LlmError(
                    f"bad tool arguments for {call.name}: {call.arguments[:200]!r}"
                ) from exc
            if not isinstance(arguments, dict):
                raise LlmError(f"bad tool arguments for {call.name}: not a JSON object")
            out.append(ToolCall(call.id or f"call_{index}", call.name, arguments))
        return tuple(out)

    async def _raise_for_status(self, response: httpx.Response, deadline: float) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                body = await response.aread()
        except (TimeoutError, httpx.HTTPError):
            body = b""
        retry = None
        if response.status_code in (429, 503):
            retry = _retry_after(response.headers.get("retry-after"))
        raise LlmError(
            f"LLM HTTP {response.status_code}: {http_error_text(body)}",
            status=response.status_code,
            retry_after=retry,
        )

    async def aclose(self) -> None:
        """Close the HTTP client if the backend made it."""
        if self._owns_client:
            await self._client.aclose()


def resolve_api_key(value: str | None, key: str = "llm.api_key") -> str | None:
    """The API key itself: "env:NAME" reads the environment variable NAME.

    Raises:
        ValueError: The variable is not set (the message names `key`).
    """
    return None if value is None else env_key(value, key, ValueError)


def from_settings(settings: LlmSettings) -> OpenAiBackend:
    """Build the backend from the `llm` settings.

    Raises:
        ValueError: `llm.api_key` names an unset environment variable.
    """
    return OpenAiBackend(
        settings.base_url,
        resolve_api_key(settings.api_key),
        settings.model,
        first_token_timeout=settings.first_token_timeout,
        idle_timeout=settings.idle_timeout,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
    )
