"""Turn an agent's hint phrases and its tools' JSON schemas into `SttHints`.

The recogniser can only be biased towards words it is told about, so the
argument types of the agent's tools are translated into the words a caller
says for them: numbers are spoken as number words, identifiers are spelled as
digits and letters, enums are said as their values and booleans as yes/no.

Letters are the single-letter entries of CMUdict ("a", "b", ... "z", spoken
"ay", "bee", ...), so a spelled code comes back as "b seven x", which an LLM
reads more easily than "bee seven ex".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from mediaserver.pipeline.stt.base import SttHints

__all__ = ["DIGIT_WORDS", "LETTER_WORDS", "NUMBER_WORDS", "hints_for", "phrase_for_name"]

#: Digits as said in phone numbers and codes ("oh" for zero is common).
DIGIT_WORDS: tuple[str, ...] = (
    "zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)  # fmt: skip

#: Every word needed to say an integer up to the thousands.
NUMBER_WORDS: tuple[str, ...] = (
    *DIGIT_WORDS,
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
    "seventeen", "eighteen", "nineteen", "twenty", "thirty", "forty", "fifty",
    "sixty", "seventy", "eighty", "ninety", "hundred", "thousand", "point",
)  # fmt: skip

#: Spelled letters, as CMUdict's single-letter entries (pronounced ay, bee, see...).
LETTER_WORDS: tuple[str, ...] = tuple("abcdefghijklmnopqrstuvwxyz")

_BOOLEAN_WORDS = ("yes", "no")

# A string parameter whose name or description says it holds an identifier is
# spelled out by callers ("my code is b seven x"); match whole-ish words so that
# "video" or "width" do not count as "id".
_SPELLED = re.compile(
    r"(?:^|[^a-z])(id|ids|code|number|numbers|letters?|reference|ref)(?:$|[^a-z])"
)
# Only these add the spoken letters too: with all 26 letters in the grammar,
# pocketsphinx hears letters everywhere ("check order five" came out as
# "q k r u i u"), so a plain "ID" or "number" gets digits alone.
_LETTERED = re.compile(
    r"(?:^|[^a-z])(code|letters?|reference|ref|alphanumeric|spell\w*)(?:$|[^a-z])"
)
_SPLIT_NAME = re.compile(r"[_\-\s.]+|(?<=[a-z0-9])(?=[A-Z])")


def phrase_for_name(name: str) -> str:
    """Say an identifier as words: "check_order" and "checkOrder" -> "check order".

    Args:
        name: a tool or enum identifier.

    Returns:
        The lower-case words, space-separated (empty for an empty name).
    """
    return " ".join(part.lower() for part in _SPLIT_NAME.split(name) if part)


def _is_spelled(name: str, schema: Mapping[str, Any]) -> bool:
    text = f"{phrase_for_name(name)} {schema.get('description', '')}".lower()
    return _SPELLED.search(text) is not None


def _schema_types(schema: Mapping[str, Any]) -> set[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return set()


def _vocabulary(
    name: str,
    schema: Mapping[str, Any],
    phrases: list[str],
    words: list[str],
    terms: list[str] | None = None,
) -> None:
    """Add the words one parameter's schema implies (recursing into objects and arrays)."""
    enum = schema.get("enum")
    if isinstance(enum, list):
        for value in enum:
            if isinstance(value, str):
                phrases.append(phrase_for_name(value))
            elif isinstance(value, bool):
                words.extend(_BOOLEAN_WORDS)
            elif isinstance(value, int | float):
                words.extend(NUMBER_WORDS)
    kinds = _schema_types(schema)
    if kinds & {"integer", "number"}:
        words.extend(NUMBER_WORDS)
    if "boolean" in kinds:
        words.extend(_BOOLEAN_WORDS)
    if "string" in kinds and _is_spelled(name, schema):
        words.extend(DIGIT_WORDS)
        text = f"{phrase_for_name(name)} {schema.get('description', '')}".lower()
        if _LETTERED.search(text):
            words.extend(LETTER_WORDS)
    items = schema.get("items")
    if isinstance(items, Mapping):
        _vocabulary(name, items, phrases, words, terms)
    for key in ("anyOf", "oneOf", "allOf"):
        alternatives = schema.get(key)
        if isinstance(alternatives, list):
            for alternative in alternatives:
                if isinstance(alternative, Mapping):
                    _vocabulary(name, alternative, phrases, words, terms)
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for child_name, child in properties.items():
            if isinstance(child, Mapping):
                if terms is not None:
                    terms.append(phrase_for_name(str(child_name)))
                _vocabulary(str(child_name), child, phrases, words, terms)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    # Keep first-seen order: it makes grammars (and so pool keys) deterministic.
    return tuple(dict.fromkeys(item for item in items if item))


def hints_for(phrases: list[str], tool_parameter_schemas: list[dict[str, Any]]) -> SttHints:
    """Build recogniser hints from the agent's phrases and its tools' schemas.

    Each schema is either a tool definition (``{"name": "check_order",
    "parameters": {...}}``, OpenAI's ``{"type": "function", "function": {...}}``
    too) or a bare JSON-schema parameters object. Tool names become phrases
    ("check_order" -> "check order"), argument names become terms ("order id");
    integer and number parameters add the
    number words; string parameters whose name or description mention an id,
    code, number or letters add digits and spelled letters; enums add their
    values as phrases; booleans add "yes" and "no".

    Args:
        phrases: phrases the agent expects callers to say.
        tool_parameter_schemas: tool definitions or their parameter schemas.

    Returns:
        `SttHints` with de-duplicated, lower-case phrases and words, open
        vocabulary kept on (the caller may say anything else too).
    """
    out_phrases = [" ".join(phrase.lower().split()) for phrase in phrases]
    out_words: list[str] = []
    out_terms: list[str] = []
    for schema in tool_parameter_schemas:
        tool: Mapping[str, Any] = schema
        function = schema.get("function")
        if isinstance(function, Mapping):
            tool = function
        tool_name = tool.get("name")
        if isinstance(tool_name, str):
            out_phrases.append(phrase_for_name(tool_name))
        parameters = tool.get("parameters", tool if "properties" in tool else None)
        if isinstance(parameters, Mapping):
            _vocabulary("", parameters, out_phrases, out_words, out_terms)
    return SttHints(
        phrases=_unique(out_phrases), words=_unique(out_words), terms=_unique(out_terms)
    )
