"""Tool schemas inferred from type hints and Google-style docstrings; argument checks."""

from __future__ import annotations

from typing import List, Literal, Optional  # noqa: UP035 - old spellings are cases under test

import pytest

from mediaserver.agent.schema import ToolArgumentError, infer_schema, parse_docstring, validate


def test_docstring_summary_and_args() -> None:
    summary, args = parse_docstring(
        """Check the status of a customer order.

        Looks it up in the order system.

        Args:
            order_id: The order ID to look up
            express (bool): Whether to use
                the express line
            **extra: ignored

        Returns:
            A result.
        """
    )
    assert summary == "Check the status of a customer order. Looks it up in the order system."
    assert args == {
        "order_id": "The order ID to look up",
        "express": "Whether to use the express line",
        "extra": "ignored",
    }


def test_every_supported_hint() -> None:
    def tool(
        self,
        name: str,
        count: int,
        price: float,
        urgent: bool,
        tags: list[str],
        scores: list[int],
        extra: dict,
        options: dict[str, int],
        size: Literal["small", "large"],
        note: Optional[str],  # noqa: UP045 - the old spelling is a case under test
        colour: str | None = None,
        raw_data: dict | None = None,
        **kwargs: object,
    ) -> str:
        """Do everything.

        Args:
            name: who
            size: how big
        """
        return ""

    description, schema = infer_schema(tool)
    props = schema["properties"]
    assert description == "Do everything."
    assert props["name"] == {"type": "string", "description": "who"}
    assert props["count"] == {"type": "integer"}
    assert props["price"] == {"type": "number"}
    assert props["urgent"] == {"type": "boolean"}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["scores"] == {"type": "array", "items": {"type": "integer"}}
    assert props["extra"] == {"type": "object"}
    assert props["options"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert props["size"] == {"type": "string", "enum": ["small", "large"], "description": "how big"}
    assert props["note"] == {"type": "string"}
    assert props["colour"] == {"type": "string"}
    assert "raw_data" not in props and "self" not in props and "kwargs" not in props
    # Optional[X], X | None and defaults are not required.
    assert schema["required"] == [
        "name",
        "count",
        "price",
        "urgent",
        "tags",
        "scores",
        "extra",
        "options",
        "size",
    ]


def test_typing_list_and_no_hints() -> None:
    def tool(ids: List[int], anything) -> None:  # type: ignore[no-untyped-def]  # noqa: UP006
        pass

    _, schema = infer_schema(tool)
    assert schema["properties"]["ids"] == {"type": "array", "items": {"type": "integer"}}
    assert schema["properties"]["anything"] == {"type": "string"}


SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "count": {"type": "integer"},
        "size": {"type": "string", "enum": ["small", "large"]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["order_id"],
}


def test_validate_accepts_and_coerces() -> None:
    assert validate(SCHEMA, {"order_id": 123, "count": "4"}) == {"order_id": "123", "count": 4}
    assert validate(SCHEMA, {"order_id": "a", "count": 2.0}) == {"order_id": "a", "count": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "order_id: required"),
        ({"order_id": "1", "count": "many"}, "count: expected a integer"),
        ({"order_id": "1", "count": True}, "count: expected a integer"),
        ({"order_id": "1", "size": "huge"}, "size: 'huge' is not one of"),
        ({"order_id": "1", "tags": ["a", ["x"]]}, "tags[1]"),
    ],
)
def test_validate_rejects_with_the_argument_named(args: dict, message: str) -> None:
    with pytest.raises(ToolArgumentError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(SCHEMA, args)
