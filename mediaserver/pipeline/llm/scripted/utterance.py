"""Reading one utterance: normalised text split into words with their stems."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from mediaserver.pipeline.llm.scripted.lexicon import (
    FILLERS,
    POLITE,
    QUESTION_WORDS,
    REQUEST_WORDS,
    STOPWORDS,
    stem_of,
)
from mediaserver.pipeline.llm.spoken import find_numbers, words_of

# The module, not the function: normalise imports spoken from this package,
# so whichever of the two is imported first finds the other half-initialised.
from mediaserver.pipeline.stt import normalise

_OPERATORS = {
    "+": "plus",
    "*": "times",
    "\u00d7": "times",
    "/": "divided by",
    "\u00f7": "divided by",
}
_OPERATOR_RE = re.compile(r"(?<=\d)\s+([+*/\u00d7\u00f7])\s+(?=\d)")
_TOKEN_RE = re.compile(r"\d+(?:[.,:]\d+)+|[^\W_]+(?:['\u2019][^\W_]+)*")


@dataclass(frozen=True)
class _Word:
    """One word of an utterance, with where it stands in the normalised text."""

    surface: str
    lower: str
    stem: str
    start: int
    end: int
    #: First word of a sentence (its capital says nothing).
    initial: bool


class Utterance:
    """One utterance, normalised and split into words with their stems."""

    def __init__(self, raw: str) -> None:
        self.raw = raw
        # "15 + 27", "100 / 8" (spaced: "12/25" stays a date) are said as words.
        self.text = _OPERATOR_RE.sub(
            lambda m: f" {_OPERATORS[m.group(1)]} ", normalise.normalise_transcript(raw)
        )
        words: list[_Word] = []
        initial = True
        last = 0
        for m in _TOKEN_RE.finditer(self.text):
            if words and re.search(r"[.?!]", self.text[last : m.start()]):
                initial = True
            surface = m.group()
            lower = surface.lower().replace("\u2019", "'")
            if re.fullmatch(r"\d{1,3}(?:,\d{3})+", lower):
                lower = lower.replace(",", "")
            words.append(_Word(surface, lower, stem_of(lower), m.start(), m.end(), initial))
            initial = False
            last = m.end()
        for n in range(1, len(words) - 1):
            # "12 times 7" is arithmetic, not a time of day.
            if words[n].lower in ("times", "x") and all(
                find_numbers([w.lower]) for w in (words[n - 1], words[n + 1])
            ):
                words[n] = replace(words[n], stem="multiply")
        self.words = words
        self.lower = [w.lower for w in words]
        #: Whisper-style text: capitals carry meaning (names, places).
        self.cased = any(c.isupper() for c in self.text) and self.text != self.text.upper()
        self.question = "?" in raw

    def span_text(self, a: int, b: int) -> str:
        """The text of words `a` to `b` (exclusive), as said (case and inner punctuation)."""
        return self.text[self.words[a].start : self.words[b - 1].end]

    def content(self) -> list[int]:
        """Indexes of words that carry meaning (not fillers, politeness, stopwords)."""
        return [
            n
            for n, w in enumerate(self.words)
            if w.lower not in STOPWORDS and w.lower not in FILLERS and w.lower not in POLITE
        ]

    def empty(self) -> bool:
        """Whether nothing was said but fillers ("um", "uh") or nothing at all."""
        return all(w in FILLERS for w in self.lower)

    def requestish(self) -> bool:
        """Whether this reads as a question or a request, not a bare statement."""
        if self.question or not self.lower:
            return self.question
        return self.lower[0] in QUESTION_WORDS or bool(set(self.lower) & REQUEST_WORDS)

    def matches(self, phrase: str) -> bool:
        """Whether the phrase appears as whole words (case-insensitive)."""
        target = words_of(phrase)
        n = len(target)
        return bool(n) and any(self.lower[a : a + n] == target for a in range(len(self.lower)))
