"""Cut a streaming LLM reply into clauses, so speech starts after the first one.

TTS voices a clause with the right intonation only when it sees the whole
clause, and waiting for the whole reply costs seconds. `ClauseAggregator`
sits between the two: tokens in, clauses out as soon as they are complete.

The clauses are exact slices of the input (whitespace included):
concatenating everything `push` returned plus `flush()` gives the text back,
so character offsets stay exact. A clause ends right after its punctuation
and the one whitespace character that confirms it; further whitespace starts
the next clause. Where a clause ends depends only on the text, never on how it
was split into tokens.
"""

from __future__ import annotations

__all__ = ["ClauseAggregator"]

#: Always end a clause (when followed by whitespace).
_ENDERS = frozenset(".!?;:\u2026")
#: Ends a clause only when the clause is long enough (short ones sound choppy).
_COMMA = ","
#: May follow the punctuation before the whitespace: `"Stop!" he said`, `(see above.) Then`.
_CLOSERS = frozenset("\"')]}\u201d\u2019\u00bb")
#: Words a full stop follows without ending the sentence (lower case, no final dot).
ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "st", "prof", "jr", "sr", "vs", "e.g", "i.e", "etc", "cf"}
)
_OPENERS = "\"'([{\u201c\u2018\u00ab"


class ClauseAggregator:
    """Collect streamed tokens and return complete clauses.

    A clause ends at ``. ! ? ; :`` or ``…``, or at a comma once the clause has
    `min_chars` characters, when followed by whitespace (closing quotes and
    brackets may come in between), so "3.5" and "1,000" never end one. A full
    stop after an abbreviation (Mr. Dr. Mrs. St. e.g. i.e. etc. ...) or a
    single-letter initial ("J. Smith") does not end one either. A newline ends
    a clause that has text. A clause without any of these ends at the first
    whitespace after `max_chars` characters, and text without whitespace is
    cut hard at twice `max_chars`.

    Args:
        min_chars: Characters (ignoring surrounding whitespace) a clause needs
            before a comma may end it.
        max_chars: Length after which a clause ends at the next word boundary.

    Example:
        >>> agg = ClauseAggregator()
        >>> agg.push("Sure. Let me")
        ['Sure. ']
        >>> agg.push(" check.")
        []
        >>> agg.flush()
        'Let me check.'
    """

    def __init__(self, min_chars: int = 20, max_chars: int = 200) -> None:
        if min_chars < 0 or max_chars < 1:
            raise ValueError("min_chars must be >= 0 and max_chars >= 1")
        self.min_chars = min_chars
        self.max_chars = max_chars
        self._pending = ""

    def push(self, token: str) -> list[str]:
        """Add a token; return the clauses it completed (often none)."""
        self._pending += token
        clauses: list[str] = []
        while True:
            end = self._clause_end(self._pending)
            if end is None:
                return clauses
            clauses.append(self._pending[:end])
            self._pending = self._pending[end:]

    def flush(self) -> str | None:
        """End of the reply: the text not yet returned, or None when there is none.

        The remainder may be whitespace only (it is returned anyway, so the
        clauses add up to the input); callers skip it for synthesis.
        """
        rest, self._pending = self._pending, ""
        return rest or None

    @property
    def pending(self) -> str:
        """Text pushed but not yet returned as a clause."""
        return self._pending

    def _clause_end(self, text: str) -> int | None:
        """Index just after the first clause in `text`; None until that is decided.

        Decisions need only the characters up to the confirming whitespace, so
        scanning stops (None) at punctuation whose follower has not arrived yet.
        """
        hard_cap = 2 * self.max_chars
        has_text = False
        n = len(text)
        for i in range(min(n, hard_cap)):
            ch = text[i]
            if ch == "\n":
                if has_text:
                    return i + 1
                continue
            if ch.isspace():
                if has_text and i >= self.max_chars:
                    return i + 1  # a word boundary in an over-long clause
                continue
            has_text = True
            if ch not in _ENDERS and ch != _COMMA:
                continue
            j = i + 1
            while j < n and (text[j] in _CLOSERS or text[j] in _ENDERS):
                j += 1
            if j == n:
                return None  # is it "3.5" or "3. Next"? wait for more text
            if text[j].isspace() and self._ends_here(text, i):
                # The confirming whitespace goes with the clause; a newline too.
                return j + 1
        return hard_cap if n > hard_cap else None

    def _ends_here(self, text: str, i: int) -> bool:
        """Whether the punctuation at text[i] (followed by whitespace) ends the clause."""
        ch = text[i]
        if ch == _COMMA:
            return len(text[: i + 1].strip()) >= self.min_chars
        if ch == ".":
            start = i
            while start > 0 and not text[start - 1].isspace():
                start -= 1
            word = text[start:i].lstrip(_OPENERS).lower()
            if word in ABBREVIATIONS:
                return False
            if len(word) == 1 and word.isalpha():
                return False  # an initial: "J. R. R. Tolkien"
        return True
