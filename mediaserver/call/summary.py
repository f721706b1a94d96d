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

__all__ = ["post_call_summary"]

log = structlog.get_logger("mediaserver.call.summary")


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
