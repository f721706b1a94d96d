"""The post-call summary: after hangup, ask the model the agent's post-prompt."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from typing import Any

import structlog

from mediaserver.call.conversation import Conversation
from mediaserver.call.spec import AgentSpec
from mediaserver.pipeline.llm.base import LlmBackend, LlmError, Message, Token

__all__ = ["handoff_summary", "post_call_summary"]

#: What the model is asked for the person a warm transfer hands the call to.
HANDOFF_PROMPT = (
    "You are handing this call to a colleague who will take it over now. In one or two"
    " short spoken sentences, tell them who is calling and what they need. No greeting."
)

log = structlog.get_logger("mediaserver.call.summary")


async def handoff_summary(
    llm: LlmBackend, convo: Conversation, timeout: float, *, ask_model: bool = True
) -> str:
    """A short summary of the call so far for the person who takes it over: the
    model's, or (a model that fails, or `ask_model` False: the scripted engine
    does not summarise) the caller's own last words."""
    text = ""
    if ask_model:
        try:
            async with asyncio.timeout(timeout):
                ask = [*convo.messages, Message("user", HANDOFF_PROMPT)]
                async for item in llm.stream(ask, []):
                    if isinstance(item, Token):
                        text += item.text
        except (LlmError, TimeoutError) as exc:
            log.warning("handoff_summary_failed", error=str(exc))
            text = ""
    if text.strip():
        return text.strip()
    said = [m.content for m in convo.messages if m.role == "user" and m.content]
    if not said:
        return "A caller is on the line for you."
    return "A caller is on the line for you. They said: " + " ".join(said[-2:])


async def post_call_summary(
    agent: AgentSpec,
    llm: LlmBackend,
    convo: Conversation,
    *,
    call_id: str,
    end_reason: str,
    timeline: list[dict[str, Any]],
    timeout: float,
) -> Any:
    """Ask `llm` the agent's post-prompt about the call; hand the answer to
    `agent.on_summary(summary, raw_data)` (sync or async) with SignalWire's
    raw data (the conversation, timeline, global data, metadata, digits).

    Returns:
        The summary: parsed JSON when the answer is JSON, else its text ("" when
        the model failed; `raw_data["summary_error"]` then says why).
    """
    messages = convo.messages
    raw_data: dict[str, Any] = {
        "call_id": call_id,
        "agent": agent.name,
        "end_reason": end_reason,
        "messages": [m.to_openai() for m in messages],
        "timeline": list(timeline),
        "global_data": dict(convo.global_data),
        "metadata": dict(convo.metadata),
        "digits": "".join(convo.digits),
    }
    text = ""
    try:
        async with asyncio.timeout(timeout):
            ask = [*messages, Message("user", agent.post_prompt or "")]
            async for item in llm.stream(ask, []):
                if isinstance(item, Token):
                    text += item.text
    except (LlmError, TimeoutError) as exc:
        log.warning("summary_failed", call_id=raw_data.get("call_id"), error=str(exc))
        raw_data["summary_error"] = str(exc)
    summary: Any = text.strip()
    with contextlib.suppress(ValueError):
        summary = json.loads(summary)
    if agent.on_summary is not None:
        try:
            result = agent.on_summary(summary, raw_data)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("on_summary_failed", call_id=raw_data.get("call_id"))
    return summary
