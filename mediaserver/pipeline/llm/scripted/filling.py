"""Argument filling: reading a tool's arguments out of an utterance."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mediaserver.pipeline.llm.scripted.lexicon import (
    CLOCK_RE,
    COMMON,
    CUES,
    DATE_LEAD,
    DAY_WORDS,
    FILLERS,
    MATH_OPS,
    MONTHS,
    NAME_JOINERS,
    NO,
    ORDINAL_RE,
    ORDINALS,
    PART_OF_DAY,
    PERSON_CUES,
    PLACE_CUES,
    POLITE,
    STOPWORDS,
    UNITS_AFTER,
    YES,
    concepts_of,
    stem_of,
)
from mediaserver.pipeline.llm.scripted.tools import Param, Tool
from mediaserver.pipeline.llm.scripted.utterance import Utterance
from mediaserver.pipeline.llm.spoken import (
    NUMBER_WORDS,
    find_numbers,
    find_spelled,
    letter_kind,
    parse_number,
    split_identifier,
    words_of,
)


class Filler:
    """Reads one tool's arguments out of an utterance; each word fills one parameter."""

    def __init__(self, tool: Tool, utt: Utterance) -> None:
        self.tool = tool
        self.utt = utt
        self.used = [False] * len(utt.words)

    def free(self, a: int, b: int) -> bool:
        """Whether no parameter has claimed any of words `a` to `b` (exclusive)."""
        return not any(self.used[a:b])

    def claim(self, a: int, b: int) -> None:
        """Mark words `a` to `b` (exclusive) as one parameter's value."""
        self.used[a:b] = [True] * (b - a)

    def fill(self, params: Sequence[Param], *, answer: bool = False) -> dict[str, Any]:
        """The arguments heard for `params`; `answer` when the utterance answers our question."""
        # The most specific readers go first and claim their words, so that free
        # text and numbers do not swallow a date, a code or an enum value.
        order = ["enum", "math", "datetime", "date", "time", "code", "boolean", "integer"]
        order += ["number"]
        order += ["text", "free"]
        args: dict[str, Any] = {}
        for kind in order:
            group = [p for p in params if p.kind == kind]
            if kind == "text":
                args.update(self.texts(group, answer=answer))
                continue
            for param in group:
                value = self.read(param, answer=answer)
                if value is not None:
                    args[param.name] = value
        return args

    def read(self, param: Param, *, answer: bool) -> Any:
        """One parameter's value by its kind (text is read in `texts`), or None."""
        kind = param.kind
        if kind == "enum":
            return self.enum(param)
        if kind in ("date", "time", "datetime"):
            return self.when(kind)
        if kind == "code":
            return self.code(param, answer=answer)
        if kind in ("integer", "number"):
            return self.number(param, integer=kind == "integer")
        if kind == "boolean":
            return self.boolean(param, answer=answer)
        if kind == "free":
            return self.free_text(answer=answer)
        if kind == "math":
            return self.arithmetic()
        return None

    # -- arithmetic

    def arithmetic(self) -> str | None:
        """The longest stretch of numbers and operators ("12 times 7", "2 to the
        power of 10", "15 + 27"), numbers as digits; None without an operator."""
        words, lower = self.utt.words, self.utt.lower
        numbers = {start: (end, value) for start, end, value in find_numbers(lower)}
        best: tuple[int, int, str] | None = None
        a = 0
        while a < len(words):
            parts: list[str] = []
            b, operators = a, 0
            while b < len(words) and self.free(b, b + 1):
                if b in numbers:
                    end, value = numbers[b]
                    parts.append(str(value))
                    b = end
                elif lower[b] in MATH_OPS and parts:
                    parts.append(lower[b])
                    operators += 1
                    b += 1
                else:
                    break
                if b < len(words):
                    gap = self.utt.text[words[b - 1].end : words[b].start]
                    symbols = re.sub(r"[^-+*/^\u00d7\u00f7()]", "", gap)
                    if symbols:
                        parts.append(symbols)
                        operators += 1
            while parts and parts[-1] in MATH_OPS and parts[-1] not in ("squared", "cubed"):
                parts.pop()  # "12 times 7 by" -> "12 times 7"
            if operators and len(parts) >= 2 and (best is None or b - a > best[1] - best[0]):
                best = (a, b, " ".join(parts))
            a = max(b, a + 1)
        if best is None:
            return None
        self.claim(best[0], best[1])
        return best[2]

    # -- enums

    def enum(self, param: Param) -> Any:
        words = self.utt.words
        options = sorted(param.schema["enum"], key=lambda v: -len(words_of(str(v))))
        for option in options:
            target = [stem_of(w) for w in (words_of(str(option)) or split_identifier(str(option)))]
            n = len(target)
            for a in range(len(words) - n + 1):
                if n and [w.stem for w in words[a : a + n]] == target and self.free(a, a + n):
                    self.claim(a, a + n)
                    return option
        # A synonym of a one-word value: "big" for "large".
        for option in options:
            target = words_of(str(option))
            if len(target) != 1:
                continue
            concepts = concepts_of(stem_of(target[0]))
            for a, word in enumerate(words):
                if concepts & concepts_of(word.stem) and self.free(a, a + 1):
                    self.claim(a, a + 1)
                    return option
        return None

    # -- dates and times

    def when(self, kind: str) -> str | None:
        date = self.date_span() if kind in ("date", "datetime") else None
        if date is not None:
            self.claim(*date)
        time = self.time_span(include_parts=kind != "date") if kind != "date" else None
        if time is not None:
            self.claim(time[0], time[1])
        if kind == "date" and date is None:
            # A day given as a part of the day alone: "tonight", "this evening".
            return None
        parts = []
        if date is not None:
            parts.append(self.utt.span_text(*date))
        if time is not None:
            parts.append(time[2])
        return " at ".join(parts) if parts else None

    def date_span(self) -> tuple[int, int] | None:
        lw = self.utt.lower
        n = len(lw)
        for i, word in enumerate(lw):
            if not self.free(i, i + 1):
                continue
            anchor = word in DAY_WORDS or word in ("weekdays",)
            month = word in MONTHS and (
                word not in ("may", "march", "sep", "dec", "jan", "mar")
                or (i + 1 < n and _day_number(lw[i + 1]))
                or (i > 0 and _day_number(lw[i - 1]))
                or (i > 1 and lw[i - 1] == "of" and _day_number(lw[i - 2]))
            )
            ordinal = _day_number(word) and i > 0 and lw[i - 1] == "the" and (not word.isdigit())
            relative = word in ("week", "month", "weekend") and i > 0 and lw[i - 1] in DATE_LEAD
            in_days = (
                word in ("day", "days", "week", "weeks")
                and i > 1
                and lw[i - 2] == "in"
                and (lw[i - 1].isdigit() or lw[i - 1] in NUMBER_WORDS or lw[i - 1] == "a")
            )
            if not (anchor or month or ordinal or relative or in_days):
                continue
            a, b = i, i + 1
            if in_days:
                a = i - 2
            while (
                a > 0
                and self.free(a - 1, a)
                and (
                    lw[a - 1] in DATE_LEAD | {"the", "day", "after", "of"}
                    or (month and a == i and _day_number(lw[a - 1]))
                )
            ):
                a -= 1
            while (
                b < n
                and self.free(b, b + 1)
                and (lw[b] in MONTHS or lw[b] == "of" or _day_number(lw[b]))
            ):
                b += 1
            while b > a + 1 and lw[b - 1] == "of":
                b -= 1
            # "on Friday", "the 5th": the article is not part of the value,
            # but "the day after tomorrow" keeps its words.
            while a < i and lw[a] in ("the", "of") and lw[a + 1] != "day":
                a += 1
            return a, b
        return None

    def time_span(self, *, include_parts: bool) -> tuple[int, int, str] | None:
        lw = self.utt.lower
        n = len(lw)
        for i, word in enumerate(lw):
            if not self.free(i, i + 1):
                continue
            if word in ("noon", "midday", "midnight"):
                return i, i + 1, word
            if word in ("half", "quarter") and i + 2 < n and lw[i + 1] in ("past", "to"):
                hour = _hour(lw[i + 2])
                if hour is not None:
                    minutes = 30 if word == "half" else 15
                    if lw[i + 1] == "to":
                        hour, minutes = (hour - 1) % 12 or 12, 60 - minutes
                    return i, i + 3, f"{hour}:{minutes:02d}"
            clock = CLOCK_RE.match(word)
            hour = _hour(word) if clock is None else int(clock.group(1))
            if hour is None or hour > 24:
                continue
            minute = clock.group(2) if clock else None
            suffix = clock.group(3) if clock else None
            cued = i > 0 and lw[i - 1] in ("at", "around", "by", "from", "until")
            b = i + 1
            two_digits = b < n and re.fullmatch(r"\d{2}", lw[b]) is not None and int(lw[b]) < 60
            if (
                minute is None
                and two_digits
                and (cued or (b + 1 < n and lw[b + 1] in ("am", "pm", "a", "p")))
            ):
                minute, b = lw[b], b + 1  # "at 3 30", "3 30 pm"
            oclock = False
            if suffix is None and b < n and lw[b] in ("am", "pm"):
                suffix, b = lw[b], b + 1
            elif suffix is None and b + 1 < n and lw[b] in ("a", "p") and lw[b + 1] == "m":
                suffix, b = lw[b] + "m", b + 2
            elif b < n and lw[b] in ("o'clock", "oclock"):
                oclock, b = True, b + 1
            if not (suffix or oclock or minute or (cued and hour <= 12)):
                continue
            text = str(hour) + (f":{minute}" if minute else "")
            if suffix:
                text += " " + suffix.upper()
            return i, b, text
        if include_parts:
            for i, word in enumerate(lw):
                if word in PART_OF_DAY and self.free(i, i + 1):
                    return i, i + 1, word
        return None

    # -- codes and numbers

    def code(self, param: Param, *, answer: bool) -> str | None:
        found = find_codes(self.utt, self.used)
        if not found:
            return None
        # The code right after the parameter's own word ("order 583") comes first.
        mentions = self.mentions(param)
        near = [c for c in found if c[0] - 1 in mentions or c[0] - 2 in mentions]
        a, b, code = (near or [max(reversed(found), key=lambda c: len(c[2]))])[0]
        self.claim(a, b)
        return code

    def mentions(self, param: Param) -> set[int]:
        concepts: set[str] = set()
        for stem in param.words:
            concepts |= concepts_of(stem)
        words = set(param.words) | {"number", "id", "code", "reference", "ref"}
        return {
            n
            for n, w in enumerate(self.utt.words)
            if w.stem in words or (concepts_of(w.stem) & concepts)
        }

    def number(self, param: Param, *, integer: bool) -> int | float | None:
        lw = self.utt.lower
        spans = find_numbers(lw)
        mentions = self.mentions(param)
        spans.sort(key=lambda s: 0 if s[0] - 1 in mentions else 1)
        for a, b, value in spans:
            if not self.free(a, b):
                continue
            if integer and isinstance(value, float):
                if not value.is_integer():
                    continue
                value = int(value)
            self.claim(a, b)
            return value
        return None

    def boolean(self, param: Param, *, answer: bool) -> bool | None:
        lw = self.utt.lower
        if answer:
            for a, word in enumerate(lw):
                if word in NO and self.free(a, a + 1):
                    self.claim(a, a + 1)
                    return False
                if word in YES and self.free(a, a + 1):
                    self.claim(a, a + 1)
                    return True
        concepts: set[str] = set()
        for stem in param.words:
            concepts |= concepts_of(stem)
        for a, said in enumerate(self.utt.words):
            if not self.free(a, a + 1) or said.lower in STOPWORDS:
                continue
            if said.stem in param.words or (concepts_of(said.stem) & concepts):
                # "no outdoor", "not outside", "without cheese"
                negated = any(w in NO for w in lw[max(0, a - 3) : a])
                self.claim(a, a + 1)
                return not negated
        return None

    # -- free text: names and places

    def texts(self, params: Sequence[Param], *, answer: bool) -> dict[str, str]:
        if not params:
            return {}
        spans = self.text_spans(answer=answer)
        args: dict[str, str] = {}
        for param in params:
            cues = PLACE_CUES if param.role == "place" else PERSON_CUES if param.role else CUES
            pick = next((s for s in spans if s[2] in cues), spans[0] if spans else None)
            if pick is None:
                continue
            spans.remove(pick)
            self.claim(pick[0], pick[1])
            args[param.name] = self.utt.span_text(pick[0], pick[1])
        return args

    def name_word(self, n: int) -> bool:
        """Whether the word could be part of a name or place."""
        word = self.utt.words[n]
        return (
            self.free(n, n + 1)
            and word.lower not in COMMON
            and word.stem not in self.tool.vocabulary
            and not any(c.isdigit() for c in word.lower)
            and word.lower not in NUMBER_WORDS
            and len(word.lower) > 1
        )

    def text_spans(self, *, answer: bool) -> list[tuple[int, int, str]]:
        """Candidate (start, end, cue) spans, best first."""
        words = self.utt.words
        n = len(words)
        spans: list[tuple[int, int, str]] = []
        if self.utt.cased:
            i = 0
            while i < n:
                w = words[i]
                if not (w.surface[:1].isupper() and self.name_word(i)):
                    i += 1
                    continue
                j = i + 1
                while j < n and j - i < 4:
                    nxt = words[j]
                    if nxt.surface[:1].isupper() and self.name_word(j) and not nxt.initial:
                        j += 1
                    elif (
                        nxt.lower in NAME_JOINERS
                        and j + 1 < n
                        and words[j + 1].surface[:1].isupper()
                        and self.name_word(j + 1)
                    ):
                        j += 2
                    else:
                        break
                cue = words[i - 1].lower if i > 0 else ""
                spans.append((i, j, cue))
                i = j
            if spans:
                return spans
        # Lowercase text: the words after a cue ("in paris", "for john smith").
        for i in range(n):
            if words[i].lower not in CUES:
                continue
            j = i + 1
            while j < n and j - i <= 4 and self.name_word(j):
                j += 1
            if j > i + 1:
                spans.append((i + 1, j, words[i].lower))
        if spans or not (answer or not self.utt.cased):
            return spans
        # An answer, or a bare "weather paris": the meaningful words left.
        run: list[int] = [k for k in range(n) if self.name_word(k)]
        if run and run[-1] - run[0] == len(run) - 1 and len(run) <= 4:
            spans.append((run[0], run[-1] + 1, ""))
        return spans

    def free_text(self, *, answer: bool) -> str | None:
        words = self.utt.words
        keep = [
            n
            for n, w in enumerate(words)
            if self.free(n, n + 1)
            and w.lower not in FILLERS
            and w.lower not in POLITE
            and (answer or w.stem not in self.tool.vocabulary)
        ]
        while keep and words[keep[0]].lower in STOPWORDS:
            keep.pop(0)
        if not keep:
            return None
        self.claim(keep[0], keep[-1] + 1)
        return self.utt.span_text(keep[0], keep[-1] + 1)


def _day_number(word: str) -> bool:
    if ORDINAL_RE.match(word) or word in ORDINALS:
        return True
    return word.isdigit() and 1 <= int(word) <= 31


def _hour(word: str) -> int | None:
    value = parse_number([word])
    if isinstance(value, int) and 0 <= value <= 24:
        return value
    return None


def find_codes(utt: Utterance, used: list[bool]) -> list[tuple[int, int, str]]:
    """Codes and IDs said in the utterance, as (start, end, code) word spans."""
    lw = utt.lower
    out: list[tuple[int, int, str]] = []
    for a, b, code in find_spelled(lw):
        if any(used[a:b]):
            continue
        if not any(c.isdigit() for c in code):
            # Letters alone are an ID only when clearly spelled ("a b c") or typed.
            single = [letter_kind(w) for w in lw[a:b]]
            if b - a < 2 or any(k is None or k[1] in ("nato", "name") for k in single):
                continue
        if b < len(lw) and lw[b] in UNITS_AFTER:
            continue  # "3 days", "2 items"
        out.append((a, b, code))
    return out
