"""Config-declared agents: one schema and one builder for a route's inline agent
and a YAML agent file, so the same keys mean the same thing in both."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mediaserver.agent.from_config import route_agent
from mediaserver.agent.yaml_agent import load_agent
from mediaserver.config import AgentConfig, ConfigError
from mediaserver.pipeline.settings import PipelineSettings

TOOL: dict[str, Any] = {
    "name": "check_order",
    "description": "Check the status of a customer order.",
    "parameters": {"order_id": {"type": "string"}},
    "required": ["order_id"],
    "response": "Order {order_id}: shipped",
}


def test_a_route_agent_takes_the_sdk_keys() -> None:
    cfg = AgentConfig.model_validate(
        {
            "prompt": [{"title": "Role", "body": "You help with orders."}],
            "params": {"static_greeting": "Orders desk.", "end_of_speech_timeout": 900},
            "post_prompt": "Summarise the call.",
            "global_data": {"tier": "gold"},
            "tools": [TOOL],
        }
    )
    spec = route_agent("desk", cfg, PipelineSettings())
    assert spec.name == "desk"
    assert "You help with orders." in spec.system_prompt
    # No greeting given: the SDK's static_greeting, not the inline default.
    assert spec.greeting == "Orders desk."
    assert spec.settings.turn.end_of_speech_timeout == 0.9
    assert spec.post_prompt == "Summarise the call."
    assert spec.global_data == {"tier": "gold"}
    (tool,) = spec.tools
    assert tool.spec.parameters == {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    }
    assert tool.handler({"order_id": 7}, {}).response == "Order 7: shipped"


def test_a_yaml_agent_takes_the_servers_keys(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "name: Desk\n"
        "greeting: Hello desk.\n"
        "replies: [{match: [hours], reply: We open at nine.}]\n"
        "fallback: Ask me about hours.\n"
        "pipeline: {turn: {end_of_speech_timeout: 1.2}}\n"
    )
    spec = load_agent(path).to_spec(PipelineSettings())
    assert spec.greeting == "Hello desk."
    assert [(r.match, r.reply) for r in spec.replies] == [(("hours",), "We open at nine.")]
    assert spec.fallback == "Ask me about hours."
    assert spec.settings.turn.end_of_speech_timeout == 1.2


def test_the_same_agent_either_way_is_the_same_spec(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "name: desk\nprompt: You help with orders.\ngreeting: Hi.\nhints: [order]\n"
        "tools:\n  - name: check_order\n    description: Check the status of a customer order.\n"
        "    parameters: {order_id: {type: string}}\n    required: [order_id]\n"
        "    response: 'Order {order_id}: shipped'\n"
    )
    from_file = load_agent(path).to_spec(PipelineSettings())
    cfg = AgentConfig(prompt="You help with orders.", greeting="Hi.", hints=["order"], tools=[TOOL])
    inline = route_agent("desk", cfg, PipelineSettings())
    fields = ("name", "system_prompt", "greeting", "hints", "fallback", "settings")
    assert [getattr(from_file, f) for f in fields] == [getattr(inline, f) for f in fields]
    assert [t.spec for t in from_file.tools] == [t.spec for t in inline.tools]


def test_an_inline_async_tool_is_awaited_and_arguments_are_checked() -> None:
    cfg = AgentConfig.model_validate(
        {
            "tools": [
                {
                    "name": "status",
                    "parameters": {"order_id": {"type": "string"}},
                    "required": ["order_id"],
                    "function": "tests.agent.yaml_tools:order_status_async",
                }
            ]
        }
    )
    (tool,) = route_agent("a", cfg, PipelineSettings()).tools
    assert tool.is_async
    assert asyncio.run(tool.handler({"order_id": "9"}, {})).response == "Order 9 is on its way."


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        ({"name": "t"}, "a tool needs exactly one of `function`, `response`"),
        (
            {"name": "t", "response": "x", "function": "a:b"},
            "a tool needs exactly one of `function`, `response`",
        ),
        ({"name": "t", "response": "x", "required": ["x"]}, "required names unknown parameters: x"),
        ({"name": "t", "response": "x", "parameters": {"a": 1}}, "each argument is a mapping"),
    ],
)
def test_tool_mistakes_are_refused(tool: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AgentConfig.model_validate({"tools": [tool]})


def test_a_bad_pipeline_override_names_its_key() -> None:
    cfg = AgentConfig.model_validate({"pipeline": {"turn": {"end_of_speech_timeout": 99}}})
    with pytest.raises(
        ConfigError, match=r"routes\.a\.agent\.pipeline\.turn\.end_of_speech_timeout"
    ):
        route_agent("a", cfg, PipelineSettings())
