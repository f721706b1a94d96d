"""The LLM interface: a chat conversation in, a cancellable stream of events out.

Messages follow the OpenAI Chat Completions shape (role, content, tool_calls,
tool_call_id), which every backend we target speaks. `stream` is an async
iterator; cancelling the task that iterates it (barge-in) must stop the
generation in-process: an HTTP backend closes its response, the scripted
engine simply stops.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


class LlmError(Exception):
    """The model failed: HTTP error, bad output, stream cut (kind `llm_error`)."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        #: HTTP status when the provider answered with one (401/403 -> auth_failure).
        self.status = status
        self.retry_after = retry_after


class LlmTimeout(LlmError):
    """No first token (or no next token) within the configured time (kind `llm_timeout`)."""


@dataclass(frozen=True)
class ToolCall:
    """A call the model asks for; `arguments` is the decoded JSON object."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class Message:
    """One chat message."""

    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    def to_openai(self) -> dict[str, Any]:
        """The Chat Completions wire form."""
        import json

        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None and self.role == "tool":
            out["name"] = self.name
        return out


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: JSON-schema `parameters` as in OpenAI's API."""

    name: str
    description: str
    parameters: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        """The Chat Completions `tools` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True)
class Token:
    """A piece of assistant text."""

    text: str


@dataclass(frozen=True)
class ToolCalls:
    """The model finished its turn asking for these tool calls (complete arguments)."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class Done:
    """The stream ended normally."""

    finish_reason: str = "stop"


LlmEvent = Token | ToolCalls | Done


@dataclass(frozen=True)
class LlmOptions:
    """Per-request settings."""

    temperature: float | None = None
    max_tokens: int | None = None


class LlmBackend(ABC):
    """A chat model that streams."""

    #: Registry name, e.g. "openai".
    name: str = ""

    @abstractmethod
    def stream(
        self,
        messages: list[Message],
        tools: list[ToolSpec],
        options: LlmOptions | None = None,
    ) -> AsyncIterator[LlmEvent]:
        """Stream the reply: Token events, then ToolCalls or nothing, then Done.

        Raises:
            LlmError: the request failed or the stream broke (LlmTimeout for timeouts).
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Close connections."""
