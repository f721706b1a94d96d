"""Conversation: what a transfer's outcome adds to the history the model sees."""

from __future__ import annotations

from mediaserver.call.conversation import Conversation
from mediaserver.call.spec import AgentSpec
from mediaserver.pipeline.llm.base import ToolCall


def test_a_transfer_outcome_goes_back_to_the_tool_that_asked() -> None:
    convo = Conversation.start(AgentSpec(name="a"))
    convo.caller("put me through to sales")
    call = ToolCall("t1", "to_sales", {})
    convo.tool_calls(None, [call])
    convo.tool_result(call, "Connecting you.")
    convo.agent_said("Connecting you.")
    convo.tool_outcome("transfer to sip:sales@pbx failed: 486 Busy Here")
    tool = next(m for m in convo.messages if m.role == "tool")
    assert tool.content == "Connecting you. (transfer to sip:sales@pbx failed: 486 Busy Here)"


def test_without_a_tool_the_outcome_is_a_note() -> None:
    convo = Conversation.start(AgentSpec(name="a"))
    convo.tool_outcome("transfer to x succeeded")
    assert convo.messages[-1].role == "system" and "succeeded" in (convo.messages[-1].content or "")
