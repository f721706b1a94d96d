"""JSON schemas for tools, inferred from a function's type hints and docstring.

`infer_schema(func)` turns

    def check_order(self, order_id: str, express: bool = False):
        \"\"\"Check the status of a customer order.

        Args:
            order_id: The order ID to look up
            express: Whether to use the express line
        \"\"\"

into the description "Check the status of a customer order." and the object
schema {order_id: string (required), express: boolean}. Supported hints: str,
int, float, bool, list, dict, list[X] / List[X], dict[str, X], Optional[X] and
X | None (not required), Literal[...] (an enum), and anything else as a
string. `self`, `raw_data` and `**kwargs` are not arguments of the tool.

`validate(schema, args)` checks a model's arguments against such a schema
before the handler runs, so a bad call becomes a tool error, not a crash.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

#: Parameters that are never tool arguments.
_SKIP = {"self", "cls", "raw_data"}
_SECTION = re.compile(
    r"^\s*(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?|Notes?):\s*$"
)
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


class ToolArgumentError(ValueError):
    """The model's arguments do not fit the tool's schema."""


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The summary (text before the first section) and the Args descriptions."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    indent: int | None = None
    for line in lines:
        header = _SECTION.match(line)
        if header:
            section, current, indent = header.group(1), None, None
            continue
        if section is None:
            summary.append(line)
            continue
        if section not in ("Args", "Arguments", "Parameters") or not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        match = _ARG_LINE.match(line)
        if match and (indent is None or width <= indent):
            indent = width
            current = match.group(1).lstrip("*")
            args[current] = match.group(2).strip()
        elif current is not None:
            args[current] = (args[current] + " " + line.strip()).strip()
    text = " ".join(" ".join(summary).split())
    return text, args


def _type_schema(hint: Any) -> tuple[dict[str, Any], bool]:
    """(schema, optional) for one annotation."""
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        members = [a for a in get_args(hint) if a is not type(None)]
        optional = len(members) < len(get_args(hint))
        if len(members) == 1:
            schema, _ = _type_schema(members[0])
            return schema, optional
        return {"anyOf": [_type_schema(m)[0] for m in members]}, optional
    if origin is Literal:
        values = list(get_args(hint))
        kinds = {type(v) for v in values}
        enum: dict[str, Any] = {"enum": values}
        if kinds == {str}:
            enum["type"] = "string"
        elif kinds <= {int}:
            enum["type"] = "integer"
        return enum, False
    if origin in (list, typing.List, tuple, set):  # noqa: UP006 - typing.List seen at run time
        args = get_args(hint)
        items = _type_schema(args[0])[0] if args else {}
        return ({"type": "array", "items": items} if items else {"type": "array"}), False
    if origin in (dict, typing.Dict):  # noqa: UP006
        args = get_args(hint)
        mapping: dict[str, Any] = {"type": "object"}
        if len(args) == 2:
            mapping["additionalProperties"] = _type_schema(args[1])[0]
        return mapping, False
    simple = {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        list: "array",
        dict: "object",
    }
    if hint in simple:
        return {"type": simple[hint]}, False
    return {"type": "string"}, False


def infer_schema(func: Callable[..., Any]) -> tuple[str, dict[str, Any]]:
    """(description, parameters schema) of `func` from its hints and docstring."""
    description, arg_docs = parse_docstring(func.__doc__)
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = dict(getattr(func, "__annotations__", {}))
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in inspect.signature(func).parameters.items():
        if name in _SKIP or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        schema, optional = _type_schema(hints.get(name, str))
        schema = dict(schema)
        if arg_docs.get(name):
            schema["description"] = arg_docs[name]
        properties[name] = schema
        if param.default is inspect.Parameter.empty and not optional:
            required.append(name)
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    return description, parameters


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def validate(schema: dict[str, Any], args: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Check `args` against an object schema; returns them with numbers coerced.

    Strings the model sent for numbers ("42") are converted, since models do
    that; anything else that does not fit raises.

    Raises:
        ToolArgumentError: a required argument is missing, or a value has the
            wrong type or is not in its enum (the message names the argument).
    """
    if not isinstance(args, dict):
        raise ToolArgumentError(f"{path or 'arguments'}: expected an object")
    properties: dict[str, Any] = schema.get("properties", {})
    out = dict(args)
    for name in schema.get("required", []):
        if name not in args or args[name] is None:
            raise ToolArgumentError(f"{path}{name}: required")
    for name, value in args.items():
        prop = properties.get(name)
        if prop is None or value is None:
            continue
        out[name] = _check(prop, value, f"{path}{name}")
    return out


def _check(prop: dict[str, Any], value: Any, where: str) -> Any:
    kind = prop.get("type")
    if kind in ("integer", "number") and isinstance(value, str):
        try:
            value = int(value) if kind == "integer" else float(value)
        except ValueError:
            raise ToolArgumentError(f"{where}: expected a {kind}, got {value!r}") from None
    if kind == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # e.g. an order number the model sent as a number
    if kind in _JSON_TYPES:
        ok = isinstance(value, _JSON_TYPES[kind])
        if kind in ("integer", "number") and isinstance(value, bool):
            ok = False
        if kind == "integer" and isinstance(value, float) and value.is_integer():
            value, ok = int(value), True
        if not ok:
            raise ToolArgumentError(f"{where}: expected a {kind}, got {type(value).__name__}")
    if "enum" in prop and value not in prop["enum"]:
        raise ToolArgumentError(f"{where}: {value!r} is not one of {prop['enum']}")
    if kind == "array" and "items" in prop:
        value = [_check(prop["items"], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if kind == "object" and "properties" in prop:
        value = validate(prop, value, f"{where}.")
    return value
