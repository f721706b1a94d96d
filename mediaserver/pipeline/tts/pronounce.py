"""Pronunciations: words the voice says differently from how they are written
(the SDK's `add_pronunciation("SQL", "sequel")`).

`Pronouncer.apply(text)` gives the text to synthesise and a map from its
character offsets back to the original text's, so the TTS chunks' word spans
(and with them the heard-text record and the barge-in cut) stay in the
original text's terms: a caller who interrupts "sequel" cut the word "SQL".
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Pronouncer", "Pronunciation"]


@dataclass(frozen=True)
class Pronunciation:
    """Say `with_text` where the text has `replace` (a whole word or phrase)."""

    replace: str
    with_text: str
    ignore_case: bool = False


class Pronouncer:
    """Applies pronunciations to a clause, keeping a map back to its offsets."""

    def __init__(self, rules: Sequence[Pronunciation]) -> None:
        self.rules = [r for r in rules if r.replace]
        self._patterns = [
            (
                re.compile(
                    # Whole words: "SQL" is not replaced inside "MySQLite".
                    (r"\b" if r.replace[0].isalnum() else "")
                    + re.escape(r.replace)
                    + (r"\b" if r.replace[-1].isalnum() else ""),
                    re.IGNORECASE if r.ignore_case else 0,
                ),
                r.with_text,
            )
            for r in self.rules
        ]

    def apply(self, text: str) -> tuple[str, Callable[[int], int]]:
        """(the text to say, spoken offset -> original offset)."""
        if not self._patterns:
            return text, lambda at: at
        spans: list[tuple[int, int, str]] = []  # original (start, end, said instead)
        for pattern, said in self._patterns:
            for match in pattern.finditer(text):
                a, b = match.span()
                if all(b <= s or a >= e for s, e, _ in spans):
                    spans.append((a, b, said))
        if not spans:
            return text, lambda at: at
        spans.sort()
        out: list[str] = []
        # (spoken start, spoken end, original start, original end) of each replacement.
        marks: list[tuple[int, int, int, int]] = []
        last = spoken = 0
        for a, b, said in spans:
            out.append(text[last:a])
            spoken += a - last
            out.append(said)
            marks.append((spoken, spoken + len(said), a, b))
            spoken += len(said)
            last = b
        out.append(text[last:])
        starts = [m[0] for m in marks]

        def back(at: int) -> int:
            i = bisect.bisect_right(starts, at) - 1
            if i < 0:
                return at
            s_start, s_end, o_start, o_end = marks[i]
            if at <= s_start:
                return o_start
            if at < s_end:
                return o_end  # inside a replacement: the whole original word
            return o_end + (at - s_end)

        return "".join(out), back
