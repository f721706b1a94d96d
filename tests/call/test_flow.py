"""The call's flow through contexts and steps (sans-IO): prompt, tools, moves, gathering."""

from __future__ import annotations

from typing import Any

from mediaserver.agent.contexts import ContextBuilder
from mediaserver.call import commands as cmd
from mediaserver.call.conversation import Conversation
from mediaserver.call.flow import Flow
from mediaserver.call.spec import AgentSpec, Tool
from mediaserver.pipeline.llm.base import ToolSpec


def contexts() -> dict[str, Any]:
    b = ContextBuilder()
    default = b.add_context("default")
    default.add_step("ask").set_text("Ask what they need.").set_valid_steps(["orders", "survey"])
    default.add_step("orders").set_text("Orders.").set_functions(["check_order"])
    default.add_step("survey").set_text("Survey.").set_gather_info(
        output_key="survey", completion_action="done"
    ).add_gather_question("age", "How old are you?", type="integer").add_gather_question(
        "happy", "Are you happy with us?", type="boolean", confirm=True
    ).add_gather_question("name", "What is your name?")
    default.add_step("done").set_text("Thank them.").set_valid_steps([]).set_valid_contexts(
        ["billing"]
    )
    b.add_context("billing").add_step("pay").set_text("Payment.").set_functions("none")
    return b.to_dict()


def test_prompt_tools_and_moves() -> None:
    flow = Flow(contexts(), "You are Desk.")
    assert flow.step == "ask"
    prompt = flow.system_prompt()
    assert prompt.startswith("You are Desk.") and "## Current step: ask" in prompt
    assert "call next_step with one of: orders, survey" in prompt
    assert [s.name for s in flow.builtin_specs()] == ["next_step"]
    assert flow.builtin_specs()[0].parameters["properties"]["step"]["enum"] == ["orders", "survey"]
    assert flow.allows("check_order")  # no functions set: every tool
    assert "Cannot go to step 'done'" in flow.go_step("done")
    assert flow.go_step("orders") == "Now in step orders." and flow.step == "orders"
    assert flow.allows("check_order") and not flow.allows("transfer")
    # "orders" has no valid_steps: the next step in order ("survey") is implicit.
    assert flow.step_targets() == ["survey"]
    assert "Cannot change to context" in flow.go_context("billing")


def test_gather_asks_checks_confirms_and_stores() -> None:
    flow = Flow(contexts(), "P")
    flow.go_step("survey")
    assert flow.gathering
    assert flow.gather("hello").say == "How old are you?"
    assert flow.gather("blue").say == "Sorry, I did not get that. How old are you?"
    out = flow.gather("I am forty two")
    assert out.stored == ("age", 42) and out.into == "survey"
    assert out.say == "Are you happy with us?"
    assert flow.gather("yes").say == "I have yes. Is that right?"
    assert flow.gather("no").say == "Sorry. Are you happy with us?"
    assert flow.gather("yes I am").say == "I have yes. Is that right?"
    out = flow.gather("yes")
    assert out.stored == ("happy", True) and out.say == "What is your name?"
    out = flow.gather("my name is Ann Lee.")
    assert out.stored == ("name", "Ann Lee") and out.done and out.say == "Thank you."
    assert flow.step == "done" and not flow.gathering
    assert flow.go_context("billing") == "Now in context billing, step pay."
    assert not flow.allows("check_order") and flow.builtin_specs() == []


def test_a_conversation_offers_the_steps_tools_and_keeps_the_prompt_current() -> None:
    tools = [
        Tool(ToolSpec(n, n, {"type": "object", "properties": {}}), lambda a, r: "ok")
        for n in ("check_order", "transfer")
    ]
    convo = Conversation.start(AgentSpec("Desk", "You are Desk.", tools=tools, contexts=contexts()))
    assert [t.name for t in convo.tools()] == ["check_order", "transfer", "next_step"]
    assert convo.move(cmd.ChangeStep("orders")) == "Now in step orders."
    assert [t.name for t in convo.tools()] == ["check_order", "next_step"]
    assert "## Current step: orders" in (convo.messages[0].content or "")
    assert convo.apply(cmd.ChangeStep("survey"))
    convo.gathered("age", 42, "survey")
    assert convo.global_data["survey"] == {"age": 42}


def test_a_spoken_answer_loses_its_lead_in_only_where_it_is_one() -> None:
    b = ContextBuilder()
    b.add_context("default").add_step("s").set_gather_info().add_gather_question(
        "name", "What is your name?"
    ).add_gather_question("reason", "How can we help you today?").add_gather_question(
        "colour", "Which colour would you like?"
    )
    flow = Flow(b.to_dict(), "P", greeting="Hi. What is your name?")
    assert flow.gather("I'm Ann").stored == ("name", "Ann")
    # "my order is late" is the answer, not a lead-in: the question is not about orders.
    assert flow.gather("my order is late").stored == ("reason", "my order is late")
    assert flow.gather("well, it's blue.").stored == ("colour", "blue")
