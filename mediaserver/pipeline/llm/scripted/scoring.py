"""Scoring tools against an utterance, and choosing one with confidence."""

from __future__ import annotations

from collections.abc import Sequence

from mediaserver.pipeline.llm.scripted.filling import Filler, find_codes
from mediaserver.pipeline.llm.scripted.lexicon import PLACE_CUES, concepts_of, scores
from mediaserver.pipeline.llm.scripted.tools import Tool
from mediaserver.pipeline.llm.scripted.utterance import Utterance


def _score(tool: Tool, utt: Utterance) -> float:
    """How well the utterance asks for this tool (see the module docstring)."""
    groups: dict[str, list[float]] = {}
    seen: set[str] = set()
    for word in utt.words:
        stem = word.stem
        if stem in seen or not scores(word.lower, stem):
            continue
        seen.add(stem)
        exact = tool.stems.get(stem, 0.0)
        best_concept = ""
        via = 0.0
        for concept in concepts_of(stem):
            weight = tool.concepts.get(concept, 0.0) * 0.75
            if weight > via:
                via, best_concept = weight, concept
        if exact >= via and exact > 0:
            key = next(iter(sorted(concepts_of(stem) & set(tool.concepts))), stem)
            groups.setdefault(key, []).append(exact)
        elif via > 0:
            groups.setdefault(best_concept, []).append(via)
    total = 0.0
    for hits in groups.values():
        hits.sort(reverse=True)
        total += hits[0] + 0.5 * sum(hits[1:])
    return total + _value_bonus(tool, utt)


def _value_bonus(tool: Tool, utt: Utterance) -> float:
    """A value that fits the tool (an ID for its ID parameter, a place after "in"
    for its city) is evidence too."""
    bonus = 0.0
    for param in tool.params:
        if param.kind == "code":
            codes = find_codes(utt, [False] * len(utt.words))
            if codes:
                bonus = max(bonus, 1.0 if max(len(c[2]) for c in codes) >= 3 else 0.5)
        elif param.kind == "text" and param.role == "place":
            spans = Filler(tool, utt).text_spans(answer=False)
            if any(cue in PLACE_CUES for _, _, cue in spans):
                bonus = max(bonus, 0.5)
    return bonus


def rank(tools: Sequence[Tool], utt: Utterance) -> list[tuple[float, int, Tool]]:
    """(score, position, tool) for each tool, best first; ties keep the given order."""
    scored = [(_score(t, utt), n, t) for n, t in enumerate(tools)]
    return sorted(scored, key=lambda s: (-s[0], s[1]))


_CONFIDENT = 1.75
#: How far the best tool must lead the next to be called.
MARGIN = 1.0
#: A score that makes a tool worth naming in a clarifying question.
HINT = 0.75


def confident(ranked: list[tuple[float, int, Tool]], utt: Utterance) -> Tool | None:
    """The tool to call: the best one, when it scores enough and leads the next by enough."""
    # A request ("what's the forecast?") needs a little less than a bare word.
    needed = _CONFIDENT - 0.25 if utt.requestish() else _CONFIDENT
    if not ranked or ranked[0][0] < needed:
        return None
    second = ranked[1][0] if len(ranked) > 1 else 0.0
    return ranked[0][2] if ranked[0][0] - second >= MARGIN else None
