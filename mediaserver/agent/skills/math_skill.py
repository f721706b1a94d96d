"""The ``math`` skill: arithmetic the caller asks for, evaluated safely.

The expression is parsed with `ast` and only numbers, + - * / // % ** and
parentheses are evaluated (never `eval`); spoken operators ("twelve times
seven" after the recogniser's numbers, "plus", "divided by", "to the power
of", "squared") are read as symbols first. Exponents and results are bounded,
so "9 ** 9 ** 9" is refused instead of freezing the call.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Any

from mediaserver.agent.result import SwaigFunctionResult
from mediaserver.agent.skills import SkillBase

__all__ = ["MathSkill", "evaluate"]

#: Longest expression accepted (characters).
MAX_LENGTH = 200
#: Largest exponent and magnitude of any intermediate result.
MAX_EXPONENT = 100
MAX_MAGNITUDE = 1e100

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
#: Spoken operators, longest first.
_WORDS = [
    (r"to the power of|raised to(?: the power of)?", "**"),
    (r"multiplied by|times|x", "*"),
    (r"divided by|over", "/"),
    (r"plus|added to", "+"),
    (r"minus|less", "-"),
    (r"modulo|mod", "%"),
    (r"squared", "** 2"),
    (r"cubed", "** 3"),
]


def _spoken(text: str) -> str:
    text = text.lower().replace("\u00d7", "*").replace("\u00f7", "/").replace("^", "**")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    for words, symbol in _WORDS:
        text = re.sub(rf"\b(?:{words})\b", f" {symbol} ", text)
    text = re.sub(r"^\s*(?:what(?:'s| is)|calculate|compute|how much is)\s+", "", text)
    return " ".join(text.split()).rstrip("?.!= ")


def evaluate(expression: str) -> float | int:
    """The value of an arithmetic `expression` (symbols or spoken operators).

    Raises:
        ValueError: not arithmetic, too long or too large, or division by zero
            (the message says which).
    """
    text = _spoken(expression)
    if not text or len(text) > MAX_LENGTH:
        raise ValueError("the expression is empty or too long")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ValueError(f"{expression!r} is not an arithmetic expression") from None
    return _value(tree.body)


def _value(node: ast.AST) -> float | int:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _bounded(_UNARY[type(node.op)](_value(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError("the exponent is too large")
        try:
            return _bounded(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ValueError("division by zero") from None
        except OverflowError:
            raise ValueError("the result is too large") from None
    raise ValueError("only numbers, + - * / // % ** and parentheses are allowed")


def _bounded(value: Any) -> float | int:
    if isinstance(value, complex) or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError("the result is not a real number")
    if abs(value) > MAX_MAGNITUDE:
        raise ValueError("the result is too large")
    return value  # type: ignore[no-any-return]


#: Symbols as they are read out (the answer is spoken as it stands).
_SAID = [("**", "to the power of"), ("//", "divided, rounded down, by"), ("*", "times"),
         ("/", "divided by"), ("+", "plus"), ("%", "modulo")]  # fmt: skip


def _said(expression: str) -> str:
    for symbol, words in _SAID:
        expression = expression.replace(symbol, f" {words} ")
    expression = re.sub(r"(?<=[\d)])\s*-\s*(?=[\d(])", " minus ", expression)
    return " ".join(expression.split())


def _spoken_number(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class MathSkill(SkillBase):
    """`calculate(expression)`."""

    SKILL_NAME = "math"
    SKILL_DESCRIPTION = "Perform basic mathematical calculations"

    def setup(self) -> bool:
        return True

    def register_tools(self) -> None:
        self.define_tool(
            name="calculate",
            description=(
                "Perform a mathematical calculation with basic operations (+, -, *, /, %, **)"
            ),
            parameters={
                "expression": {
                    "type": "string",
                    "description": "Mathematical expression to evaluate (e.g. '2 + 3 * 4')",
                }
            },
            handler=self._calculate,
        )

    def _calculate(self, args: dict[str, Any], raw_data: dict[str, Any]) -> SwaigFunctionResult:
        expression = str(args.get("expression") or "")
        try:
            value = evaluate(expression)
        except ValueError as exc:
            return SwaigFunctionResult(f"Error: I could not calculate that: {exc}")
        return SwaigFunctionResult(f"{_said(_spoken(expression))} is {_spoken_number(value)}")

    def _get_prompt_sections(self) -> list[dict[str, Any]]:
        return [
            {
                "title": "Mathematical Calculations",
                "body": "You can do arithmetic for the caller with the calculate tool.",
                "bullets": [
                    "Use calculate for any arithmetic: +, -, *, /, % and powers",
                    "Read the result back in plain words",
                ],
            }
        ]
