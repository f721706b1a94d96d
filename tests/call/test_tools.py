"""Tool arguments checked against the tool's schema before the handler runs."""

from __future__ import annotations

from typing import Any

from mediaserver.call.spec import Tool
from mediaserver.call.tools import argument_problems
from mediaserver.pipeline.llm.base import ToolSpec


def tool(parameters: dict[str, Any]) -> Tool:
    return Tool(ToolSpec("check_order", "Look up an order", parameters), lambda a, r: "ok")


SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "speed": {"type": "string", "enum": ["standard", "express"]},
    },
    "required": ["order_id"],
}


def test_complete_arguments_pass_leniently_typed() -> None:
    assert argument_problems(tool(SCHEMA), {"order_id": "583"}) == []
    # Models send numbers for strings and the reverse; the handler copes.
    assert argument_problems(tool(SCHEMA), {"order_id": 583, "speed": "express"}) == []
    assert argument_problems(tool({}), {"anything": 1}) == []


def test_missing_required_and_unknown_enum_values_are_named() -> None:
    assert argument_problems(tool(SCHEMA), {}) == ["missing order_id"]
    assert argument_problems(tool(SCHEMA), {"order_id": ""}) == ["missing order_id"]
    assert argument_problems(tool(SCHEMA), {"order_id": "1", "speed": "warp"}) == [
        "speed must be one of standard, express"
    ]
