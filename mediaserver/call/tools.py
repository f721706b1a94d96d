"""Running the model's tool calls: arguments, timeouts, retry or skip, error phrases.

`ToolRunner` runs one call's tools as child tasks of the actor and reports
only through events (`ToolResult`, and `StageError` for what went wrong), so
the actor stays the one owner of the conversation (DESIGN: tool_timeout /
tool_error):

- arguments are checked against the tool's JSON schema first (required ones
  present, enum values known); a call that fails the check does not run, and
  the model is told what is missing so it can ask the caller;
- a handler that runs past its timeout is retried once or skipped (per tool,
  else `recovery.tool_timeout_action`); the caller is told why it is quiet;
- a handler that raises gets the most specific configured error phrase;
- async handlers are awaited, sync ones run in a thread;
- injected faults for the "tool" stage (matched on the tool name) are checked
  once per attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from mediaserver.call import events as ev
from mediaserver.call.errors import ErrorKind
from mediaserver.call.spec import AgentSpec, Tool, tool_output
from mediaserver.faults import Faults, InjectedFault
from mediaserver.pipeline.llm.base import ToolCall
from mediaserver.pipeline.settings import PipelineSettings

__all__ = ["ToolRunner", "argument_problems"]


def argument_problems(tool: Tool, arguments: dict[str, Any]) -> list[str]:
    """What is wrong with `arguments` for `tool`'s schema (empty: nothing).

    Deliberately lenient about types (models send "42" for integers and the
    handlers cope); strict about what the handler cannot do without.
    """
    schema = tool.spec.parameters or {}
    problems = [
        f"missing {name}"
        for name in schema.get("required", [])
        if arguments.get(name) in (None, "")
    ]
    for name, prop in (schema.get("properties") or {}).items():
        allowed = prop.get("enum") if isinstance(prop, dict) else None
        if allowed and name in arguments and arguments[name] not in allowed:
            problems.append(f"{name} must be one of {', '.join(map(str, allowed))}")
    return problems


class ToolRunner:
    """Runs tool calls for one call (see the module docstring).

    Args:
        agent: whose tools run.
        settings: the call's settings (timeouts and recovery, read live).
        faults: the fault injection rules.
        post: the actor's inbox.
        call_id: the SIP Call-ID (handlers see it in their raw data).
    """

    def __init__(
        self,
        agent: AgentSpec,
        settings: PipelineSettings,
        faults: Faults,
        post: Callable[[ev.Event], None],
        call_id: str,
    ) -> None:
        self.agent = agent
        self.settings = settings
        self.faults = faults
        self.post = post
        self.call_id = call_id

    def error_phrase(self, exc: BaseException) -> str:
        """The recovery phrase for a tool's exception: the most specific configured one."""
        recovery = self.settings.recovery
        for cls in type(exc).__mro__:
            if cls.__name__ in recovery.tool_error_phrases:
                return recovery.tool_error_phrases[cls.__name__]
        return recovery.tool_error_phrase

    def fillers(self, names: list[str]) -> list[str]:
        """What to say while the tools `names` run: the first tool's own, else the default."""
        for name in names:
            tool = self.agent.tool(name)
            if tool is not None and tool.fillers:
                return tool.fillers
        return self.settings.fillers.phrases

    async def run(self, reply: int, call: ToolCall, data: dict[str, Any]) -> None:
        """Run `call` for reply `reply`; the outcome arrives as a `ToolResult`.

        Args:
            reply: the reply the call belongs to.
            call: the model's call.
            data: the call's global data and metadata now ("global_data",
                "meta_data"), copied into the handler's raw data.
        """
        started = time.monotonic()
        tool = self.agent.tool(call.name)
        if tool is None:
            self.post(
                ev.ToolResult(reply, call, f"unknown tool {call.name}", 0.0, error="unknown tool")
            )
            return
        problems = argument_problems(tool, call.arguments)
        if problems:
            error = f"{call.name}: invalid arguments: {'; '.join(problems)}"
            self.post(
                ev.StageError(
                    ErrorKind.TOOL_ERROR, "tool", error, reply, recovery="model told", final=False
                )
            )
            content = f"Not run: {'; '.join(problems)}. Ask the caller for it."
            self.post(ev.ToolResult(reply, call, content, 0.0, error="invalid_arguments"))
            return
        timeout = tool.timeout or self.settings.tool_timeout
        on_timeout = tool.on_timeout or self.settings.recovery.tool_timeout_action
        attempts = 2 if on_timeout == "retry" else 1
        raw = {
            "function": call.name,
            "argument": {"parsed": [call.arguments]},
            "call_id": self.call_id,
            **data,
        }
        for attempt in range(attempts):
            rule = self.faults.check("tool", call.name)
            try:
                async with asyncio.timeout(timeout):
                    await self.faults.inject(rule, InjectedFault(f"injected fault in {call.name}"))
                    if tool.is_async:
                        value = await tool.handler(call.arguments, raw)
                    else:
                        value = await asyncio.to_thread(tool.handler, call.arguments, raw)
            except TimeoutError:
                again = attempt + 1 < attempts
                error = f"{call.name} ran past {timeout:g} s"
                step = "caller told, retrying" if again else "caller told, skipped"
                self.post(
                    ev.StageError(
                        ErrorKind.TOOL_TIMEOUT, "tool", error, reply, recovery=step, final=False
                    )
                )
                if again:
                    continue
                content = "The tool timed out."
                self.post(ev.ToolResult(reply, call, content, timeout, error="tool_timeout"))
                return
            except Exception as exc:
                phrase = self.error_phrase(exc)
                self.post(
                    ev.StageError(
                        ErrorKind.TOOL_ERROR,
                        "tool",
                        f"{call.name}: {exc!r}",
                        reply,
                        recovery=f"said: {phrase}",
                        final=False,
                    )
                )
                duration = time.monotonic() - started
                self.post(
                    ev.ToolResult(reply, call, phrase, duration, error=f"tool_error: {exc!r}")
                )
                return
            content, commands = tool_output(value)
            duration = time.monotonic() - started
            self.post(ev.ToolResult(reply, call, content, duration, commands=commands))
            return
