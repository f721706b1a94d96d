"""Tool profiles: what the engine reads out of each tool's definition.

A profile holds the stems and concepts that name the tool (weighted by where
they appear), its parameters with their kinds and the questions that ask for
them, and a verb phrase for what the tool does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mediaserver.pipeline.llm.base import ToolSpec
from mediaserver.pipeline.llm.scripted.lexicon import (
    ARTICLES,
    CODE_WORDS,
    CONCEPT_OF,
    DATE_NAMES,
    FREE_NAMES,
    MATH_NAMES,
    MILD,
    PERSON_NAMES,
    PLACE_NAMES,
    STOP_STEMS,
    TIME_NAMES,
    VERBS,
    concepts_of,
    scores,
    stem_of,
)
from mediaserver.pipeline.llm.spoken import split_identifier, words_of


@dataclass(frozen=True)
class Param:
    """One parameter of a tool, as the engine reads and asks for it."""

    name: str
    schema: dict[str, Any]
    kind: str  # enum math code integer number boolean date time datetime text free skip
    role: str  # for text: place, person or other
    required: bool
    words: frozenset[str]  # stems of the name (and for codes, the description's nouns)
    question: str


@dataclass(frozen=True)
class Tool:
    """A tool's profile: what names it, its parameters, and what it does."""

    spec: ToolSpec
    stems: dict[str, float]
    concepts: dict[str, float]
    params: tuple[Param, ...]
    phrase: str  # "check the status of a customer order"
    vocabulary: frozenset[str]  # stems that only name the tool, never an argument value


def profile(spec: ToolSpec) -> Tool:
    """The profile of a tool, built once per distinct definition."""
    return _profile_cached(spec.name, spec.description, json.dumps(spec.parameters))


@lru_cache(maxsize=256)
def _profile_cached(name: str, description: str, parameters_json: str) -> Tool:
    parameters: dict[str, Any] = json.loads(parameters_json)
    spec = ToolSpec(name, description, parameters)
    stems: dict[str, float] = {}

    def add(words: Iterable[str], weight: float) -> None:
        for word in words:
            stem = stem_of(word)
            if not scores(word, stem):
                continue
            w = min(weight, 1.0) if MILD in concepts_of(stem) else weight
            stems[stem] = max(stems.get(stem, 0.0), w)

    props: dict[str, Any] = parameters.get("properties") or {}
    required = {str(r) for r in parameters.get("required") or []}
    add(split_identifier(name), 2.0)
    described = words_of(description)
    if described[:1] in (["returns"], ["return"]):
        described = described[1:]  # docstring style: "Returns the weather for a city."
    add(described, 1.0)
    # Words that name the tool, never an argument's value.
    own = frozenset(stems)
    params: list[Param] = []
    for pname, pschema in props.items():
        pschema = pschema if isinstance(pschema, dict) else {}
        pdesc = str(pschema.get("description", ""))
        add(split_identifier(pname), 0.5)
        add(words_of(pdesc), 0.5)
        for option in pschema.get("enum") or []:
            add(words_of(str(option)), 1.0)
        kind, role = _kind(pname, pschema)
        pwords = frozenset(stem_of(w) for w in split_identifier(pname)) - STOP_STEMS
        params.append(
            Param(
                pname,
                pschema,
                kind,
                role,
                pname in required,
                pwords,
                _question(pname, pschema, kind),
            )
        )
    concepts: dict[str, float] = {}
    for stem, weight in stems.items():
        for concept in concepts_of(stem):
            concepts[concept] = max(concepts.get(concept, 0.0), weight)
    own_concepts = {c for stem in own for c in concepts_of(stem)}
    vocabulary = own | frozenset(s for s, cs in CONCEPT_OF.items() if cs & own_concepts)
    return Tool(spec, stems, concepts, tuple(params), _phrase(spec), vocabulary)


def _kind(name: str, schema: dict[str, Any]) -> tuple[str, str]:
    """The parameter's kind (how to read its value) and, for text, its role."""
    if "enum" in schema:
        return "enum", ""
    kind = schema.get("type", "string")
    if isinstance(kind, list):  # ["string", "null"]
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("integer", "number", "boolean"):
        return str(kind), ""
    if kind != "string":
        return "skip", ""  # arrays and objects are beyond a scripted engine
    name_words = set(split_identifier(name))
    desc_words = set(words_of(str(schema.get("description", ""))))
    fmt = str(schema.get("format", ""))
    if fmt in ("date-time",) or (name_words & DATE_NAMES and name_words & TIME_NAMES):
        return "datetime", ""
    if fmt == "date" or name_words & DATE_NAMES:
        return "date", ""
    if fmt == "time" or name_words & TIME_NAMES:
        return "time", ""
    if (name_words | desc_words) & MATH_NAMES:
        return "math", ""
    if name_words & CODE_WORDS:
        return "code", ""
    if name_words & FREE_NAMES:
        return "free", ""
    if name_words & PLACE_NAMES:
        return "text", "place"
    if name_words & PERSON_NAMES:
        return "text", "person"
    if desc_words & CODE_WORDS:
        return "code", ""
    if desc_words & {"date", "day"}:
        return "date", ""
    if desc_words & PLACE_NAMES:
        return "text", "place"
    if desc_words & PERSON_NAMES:
        return "text", "person"
    return "text", ""


def _spaced(name: str) -> str:
    return " ".join(split_identifier(name))


def _question(name: str, schema: dict[str, Any], kind: str) -> str:
    """A short, natural question for a parameter, from its description when it has one."""
    phrase = _noun_phrase(str(schema.get("description", ""))) or _spaced(name)
    if phrase.lower().startswith(("how many", "how much", "which", "what", "when", "where", "who")):
        return phrase[0].upper() + phrase[1:] + "?"
    if kind == "enum":
        options = [str(o) for o in schema["enum"]]
        listed = ", ".join(options[:-1]) + " or " + options[-1] if len(options) > 1 else options[0]
        return f"Which {phrase}: {listed}?"
    if kind == "boolean":
        return f"Do you want {phrase}?"
    return f"What is the {phrase}?"


def _noun_phrase(description: str) -> str:
    """ "The order ID to look up" -> "order ID"; "" when the description is not a short phrase."""
    text = re.split(r"[,;.(\n]| e\.g| such as| for example| like ", description.strip())[0]
    text = re.split(r" (?:to|that|which|we|you|the caller) ", f"{text} ")[0].strip()
    words = text.split()
    while words and words[0].lower() in ARTICLES:
        words.pop(0)
    if not words or len(words) > 6:
        return ""
    first = words[0]
    if not (first.isupper() and len(first) > 1):  # keep acronyms: "ID", "ZIP"
        words[0] = first[0].lower() + first[1:]
    return " ".join(words)


def _phrase(spec: ToolSpec) -> str:
    """What the tool does, as a verb phrase: "check the status of a customer order"."""
    text = spec.description.strip().split("\n")[0]
    text = re.split(r"(?<=[a-z0-9])\. ", text)[0].rstrip(". ")
    words = text.split()
    if len(words) > 14:
        words = re.split(r"[,;:]", text)[0].split()[:14]
    name_words = split_identifier(spec.name)
    if not words:
        return _spaced(spec.name)
    first = words[0].lower()
    base = first[:-1] if first.endswith("s") and not first.endswith("ss") else first
    if first in VERBS or first == (name_words[:1] or [""])[0]:
        words[0] = first
    elif base in VERBS or base == (name_words[:1] or [""])[0]:
        words[0] = base
    else:
        if first not in ("the", "a", "an"):
            words.insert(0, "the")
        words[1] = words[1][0].lower() + words[1][1:] if words[1] else words[1]
        return "give you " + " ".join(words)
    return " ".join(words)
