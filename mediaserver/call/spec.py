"""What a call actor needs to know about its agent: prompt, greeting, tools, hints.

This is the neutral form both agent front-ends produce (the Python `AgentBase`
and YAML agents); the actor never sees those front-ends.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from mediaserver.call.commands import Command
from mediaserver.pipeline.llm.base import ToolSpec
from mediaserver.pipeline.settings import PipelineSettings

#: A tool handler: called with the decoded arguments and the call's context
#: (SignalWire's raw_data: function, argument, call_id, global_data); may be
#: sync or async. Returns text for the model, a dict (sent as JSON), None, or
#: an object with `to_tool_output() -> tuple[str, tuple[Command, ...]]`
#: (response and commands; front-ends translate their action names).
ToolHandler = Callable[[dict[str, Any], dict[str, Any]], Any | Awaitable[Any]]


@dataclass
class Tool:
    """A function the model may call."""

    spec: ToolSpec
    handler: ToolHandler
    #: Phrases said when the tool runs past the filler threshold.
    fillers: list[str] = field(default_factory=list)
    #: Seconds before the call is abandoned (None: the pipeline's tool_timeout).
    timeout: float | None = None
    #: After a timeout: "retry" once more or "skip" (None: `recovery.tool_timeout_action`).
    on_timeout: Literal["retry", "skip"] | None = None

    @property
    def is_async(self) -> bool:
        """Whether the handler is a coroutine function (awaited, not threaded)."""
        return inspect.iscoroutinefunction(self.handler)


@dataclass(frozen=True)
class Reply:
    """A canned reply of the scripted engine: said when any `match` phrase is heard."""

    match: tuple[str, ...]
    reply: str


@dataclass
class AgentSpec:
    """The agent answering a call."""

    name: str
    system_prompt: str = "You are a helpful voice assistant on a phone call."
    #: Said when the call is answered (agent speaks first); None: the model greets.
    greeting: str | None = "Hello! How can I help you?"
    tools: list[Tool] = field(default_factory=list)
    #: Words and phrases the caller is likely to say (STT bias).
    hints: list[str] = field(default_factory=list)
    #: Canned replies for the scripted engine.
    replies: list[Reply] = field(default_factory=list)
    #: Said by the scripted engine when nothing matches.
    fallback: str = "I'm sorry, I can't help with that."
    settings: PipelineSettings = field(default_factory=PipelineSettings)
    #: Data every call of this agent starts with (tools may change their copy).
    global_data: dict[str, Any] = field(default_factory=dict)
    #: After hangup the model is asked this about the call...
    post_prompt: str | None = None
    #: ...and its answer goes here, as on_summary(summary, raw_data) (sync or async;
    #: summary is the parsed JSON when the answer is JSON, else the text).
    on_summary: Callable[[Any, dict[str, Any]], Any] | None = None
    #: Contexts and steps (`ContextBuilder.to_dict()`): None, a free conversation.
    contexts: dict[str, Any] | None = None
    #: Per-call configuration (the SDK's dynamic config callback): given the
    #: call's SIP data (`global_data["call"]`), the agent this call gets.
    configure: Callable[[dict[str, Any]], AgentSpec] | None = None

    def tool(self, name: str) -> Tool | None:
        """The tool called `name`, if any."""
        return next((t for t in self.tools if t.spec.name == name), None)


def tool_output(value: Any) -> tuple[str, tuple[Command, ...]]:
    """A handler's return value as (text for the model, commands for the call)."""
    if hasattr(value, "to_tool_output"):
        text, actions = value.to_tool_output()
        return str(text), tuple(actions)
    if value is None:
        return "", ()
    if isinstance(value, str):
        return value, ()
    return json.dumps(value, default=str), ()
