"""Contexts and steps: the SDK's builder shape and its rules."""

from __future__ import annotations

import pytest

from mediaserver import AgentBase, ContextBuilder, SwaigFunctionResult


def desk() -> AgentBase:
    agent = AgentBase("Desk")
    contexts = agent.define_contexts()
    default = contexts.add_context("default")
    default.add_step("identify").set_text("Ask for the name.").set_gather_info(
        output_key="caller", completion_action="next_step"
    ).add_gather_question("name", "What is your name?")
    default.add_step(
        "orders", task="Help with orders.", bullets=["Look the order up"], criteria="Answered"
    ).set_functions(["check_order"]).set_valid_contexts(["billing"])
    contexts.add_context("billing").add_step("pay").set_text("Take a payment.").set_functions(
        "none"
    )
    return agent


def test_the_builder_makes_the_sdk_shape() -> None:
    agent = desk()
    assert agent.contexts is agent.define_contexts()
    shape = agent.contexts.to_dict()
    identify, orders = shape["default"]["steps"]
    assert identify == {
        "name": "identify",
        "text": "Ask for the name.",
        "gather_info": {
            "questions": [{"key": "name", "question": "What is your name?"}],
            "output_key": "caller",
            "completion_action": "next_step",
        },
    }
    assert orders == {
        "name": "orders",
        "text": "## Task\nHelp with orders.\n\n## Process\n- Look the order up",
        "step_criteria": "Answered",
        "functions": ["check_order"],
        "valid_contexts": ["billing"],
    }
    assert shape["billing"]["steps"][0]["functions"] == "none"
    spec = agent.to_spec()
    assert spec.contexts == shape
    # A flow that starts by gathering asks its first question in the greeting.
    assert spec.greeting is not None and spec.greeting.endswith("What is your name?")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda b: b.add_context("main").add_step("a"), "must be named 'default'"),
        (lambda b: b.add_context("default"), "must have at least one step"),
        (
            lambda b: b.add_context("default").add_step("a").set_valid_steps(["nowhere"]),
            "references unknown step 'nowhere'",
        ),
        (
            lambda b: b.add_context("default").add_step("a").set_valid_contexts(["x"]),
            "references unknown context 'x'",
        ),
        (
            lambda b: (
                b.add_context("default")
                .add_step("a")
                .set_gather_info(completion_action="next_step")
                .add_gather_question("k", "Q?")
            ),
            "leads nowhere",
        ),
    ],
)
def test_invalid_contexts_are_refused_naming_the_problem(build, message: str) -> None:  # type: ignore[no-untyped-def]
    builder = ContextBuilder()
    build(builder)
    with pytest.raises(ValueError, match=message):
        builder.to_dict()


def test_step_text_and_sections_do_not_mix() -> None:
    step = ContextBuilder().add_context("default").add_step("a").set_text("x")
    with pytest.raises(ValueError, match="cannot be mixed"):
        step.add_section("T", "b")


def test_change_step_and_context_actions() -> None:
    result = SwaigFunctionResult("ok").swml_change_step("orders").swml_change_context("billing")
    assert result.to_dict()["action"] == [{"change_step": "orders"}, {"change_context": "billing"}]


def test_the_sdk_dictionary_shape_round_trips() -> None:
    shape = desk().contexts.to_dict()
    again = AgentBase("B")
    again.define_contexts(shape)
    assert again.contexts.to_dict() == shape
    with pytest.raises(ValueError, match="references unknown step 'x'"):
        AgentBase("C").define_contexts(
            {"default": {"steps": [{"name": "a", "text": "t", "valid_steps": ["x"]}]}}
        ).validate()
