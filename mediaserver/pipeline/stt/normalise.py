"""Spoken numbers and spellings in a transcript, rewritten the way people write them.

Recognisers disagree on how to write what a caller said: pocketsphinx writes
lowercase words ("where is my order five eight three"), Whisper writes cased,
punctuated text with digits, but spells codes out as the caller did
("Could you check order number 5, 8, 3 for me?", "B as in boy, 7"). A language
model reads "583" and "B7" best, so `normalise_transcript` rewrites every
final transcript before the model sees it.

It is deliberately conservative: it only rewrites a span when it clearly is a
number or a spelling, and leaves everything else byte for byte as it was.

* Digit runs become digits: "five eight three", "5 8 3", "5, 8, 3", "5-8-3"
  -> "583"; "oh" between digits is 0 ("four oh five" -> "405"), "double five"
  -> "55", "triple seven" -> "777". Commas and hyphens only join three or
  more single digits, so a list ("ages 5, 8") or a range ("2-3 days") stays.
* Cardinals become digits: "forty two" -> "42", "one hundred and five" ->
  "105", "twenty" -> "20". A lone digit word stays a word ("no one", "I want
  one", "two of us"), except as the whole utterance ("Five.") or after a word
  that announces a number ("room four", "option two"); "a hundred", "a
  million" stay too ("one in a million"). "for", "to", "won" are never numbers.
* Spellings become codes: "b as in boy" / "b for bravo" -> "B", letters with
  digits ("a b one two three", "A-B-1-2-3") -> "AB123", the NATO alphabet
  ("bravo seven x-ray") -> "B7X". A lone letter ("plan B", "vitamin C") or a
  lone NATO word ("hotel", "golf 2") is prose, not spelling, and stays.

The parsing itself is `mediaserver.pipeline.llm.spoken`'s; this module only
decides which spans of real text are safe to rewrite.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mediaserver.pipeline.llm.spoken import (
    NUMBER_WORDS,
    TEENS,
    TENS,
    UNITS,
    find_numbers,
    find_spelled,
    letter_kind,
    number_text,
)

__all__ = ["normalise_transcript"]

# Decimals and thousands ("3.5", "1,000", "3:30") stay one token; letters and
# digits written together ("AB123", "5th", "3pm") are one token too.
_TOKEN_RE = re.compile(r"\d+(?:[.,:]\d+)+|[^\W_]+(?:['\u2019][^\W_]+)*")
_SPACE_RE = re.compile(r"\s+")
_COMMA_RE = re.compile(r"\s*,\s*")
_HYPHEN_RE = re.compile(r"\s*[-\u2010\u2011\u2013]\s*")
# "AB-123" and "123-AB": Whisper writes a spelled code's letters together.
_CODE_HYPHEN_RE = re.compile(
    r"(?<![\w-])([A-Z]{1,3})-(\d+)(?![\w-])|(?<![\w-])(\d+)-([A-Z]{1,3})(?![\w-])"
)


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Everything that may sit inside a spoken number, besides the number words.
_NUMBER_JOINERS = frozenset({"oh", "double", "triple", "and", "point", "a"})
# After these a lone digit word is a number: "room four", "option two".
_NUMBER_CUES = _set(
    "number extension ext room option ticket flight gate platform seat floor apartment apt "
    "suite channel page chapter step level terminal"
)
# "the nineteen nineties", "forty thousands": a plural after the number.
_PLURAL_NUMBERS = _set(
    "tens teens twenties thirties forties fifties sixties seventies eighties nineties "
    "hundreds thousands millions billions"
)
# "b as in boy", "b for bravo", "b like bravo"
_AS_IN = ("as", "in")
_FOR = frozenset({"for", "like"})


@dataclass
class _Tok:
    start: int
    end: int
    lower: str
    #: How this token is joined to the one before: " ", ",", "-", or "" (not joined).
    sep: str
    #: A letter this token stands for, decided before the runs ("b as in boy").
    letter: str = ""
    taken: bool = False


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    for m in _TOKEN_RE.finditer(text):
        sep = ""
        if out:
            between = text[out[-1].end : m.start()]
            if _SPACE_RE.fullmatch(between):
                sep = " "
            elif _COMMA_RE.fullmatch(between):
                sep = ","
            elif _HYPHEN_RE.fullmatch(between):
                sep = "-"
        lower = m.group().lower().replace("\u2019", "'")
        out.append(_Tok(m.start(), m.end(), lower, sep))
    # "x-ray" / "x ray" is one NATO word.
    merged: list[_Tok] = []
    for tok in out:
        if tok.lower == "ray" and tok.sep in (" ", "-") and merged and merged[-1].lower == "x":
            merged[-1] = _Tok(merged[-1].start, tok.end, "xray", merged[-1].sep)
        else:
            merged.append(tok)
    return merged


def _is_digits(word: str) -> bool:
    return word.isascii() and word.isdigit()


def _single_digit(word: str) -> bool:
    return word in UNITS or word == "oh" or (_is_digits(word) and len(word) == 1)


def normalise_transcript(text: str) -> str:
    """Rewrite spoken numbers and spellings in a transcript as digits and codes.

    Pure and fast (tens of microseconds for a sentence); text without numbers
    or spellings comes back unchanged, and normalising twice changes nothing
    more.

    Args:
        text: A final transcript, from any recogniser.

    Returns:
        The transcript with number and spelling spans rewritten.
    """
    text = _CODE_HYPHEN_RE.sub(lambda m: "".join(g for g in m.groups() if g), text)
    toks = _tokens(text)
    if not toks:
        return text
    toks = _spell_alphabet(toks)
    edits: list[tuple[int, int, str]] = []  # (first token, last token + 1, replacement)
    _spelled_codes(toks, edits)
    for i, tok in enumerate(toks):
        if tok.letter and not tok.taken:  # "b as in boy" on its own
            tok.taken = True
            edits.append((i, i + 1, tok.letter))
    _numbers(toks, edits)
    if edits:
        out: list[str] = []
        at = 0
        for first, stop, new in sorted(edits):
            out += [text[at : toks[first].start], new]
            at = toks[stop - 1].end
        out.append(text[at:])
        text = "".join(out)
    # Whisper writes "three hundred and twelve" as "300 and 12" (and "two
    # thousand and nineteen" as "2000 and 19"): one number, said in parts.
    return _HUNDREDS_AND_RE.sub(_join_hundreds, text)


_HUNDREDS_AND_RE = re.compile(r"\b(\d*[1-9]0{2,}) and (\d{1,2})\b(?![.,:]\d)")


def _join_hundreds(match: re.Match[str]) -> str:
    return str(int(match.group(1)) + int(match.group(2)))


def _letter_of(word: str) -> str:
    found = letter_kind(word)
    return found[0] if found is not None else ""


def _spell_alphabet(toks: list[_Tok]) -> list[_Tok]:
    """ "b as in boy", "b for bravo": each becomes one token standing for its letter."""
    out: list[_Tok] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        found = letter_kind(tok.lower)
        stop = 0
        if found is not None and found[1] != "nato":
            letter, kind = found
            words = [t.lower for t in toks[i + 1 : i + 4]]
            if words[:2] == list(_AS_IN) and len(words) == 3:
                example = words[2]
                # "as in" is explicit; any letter may be spelled this way.
                if example[:1] == letter.lower() and len(example) > 1:
                    stop = i + 4
            elif words[:1] and words[0] in _FOR and len(words) >= 2:
                example = words[1]
                nato = letter_kind(example)
                # "for" is everyday English ("I for instance"): only a NATO
                # word, or an example word after an unambiguous letter.
                spelled = example[:1] == letter.lower() and len(example) > 1
                if spelled and (
                    (nato is not None and nato[1] == "nato") or kind in ("char", "name")
                ):
                    stop = i + 3
        if stop and all(t.sep for t in toks[i + 1 : stop]):
            out.append(_Tok(tok.start, toks[stop - 1].end, letter.lower(), tok.sep, letter))
            i = stop
        else:
            out.append(tok)
            i += 1
    return out


def _spelled_codes(toks: list[_Tok], edits: list[tuple[int, int, str]]) -> None:
    """Runs of letters and digits that are clearly a spelling: "a b one two three"."""
    n = len(toks)
    usable = [True] * n
    for i in range(n - 1):
        # "5 p m", "ten a m": a time, not the letters P and M.
        if toks[i].lower in ("a", "p") and toks[i + 1].lower == "m":
            usable[i] = usable[i + 1] = False
    for i, tok in enumerate(toks):
        if not tok.letter and not _spellish(tok.lower):
            usable[i] = False

    i = 0
    while i < n:
        if not usable[i]:
            i += 1
            continue
        j = i + 1
        while j < n and usable[j] and toks[j].sep:
            j += 1
        run = list(range(i, j))
        _spelled_run(toks, run, edits)
        i = j


def _spellish(word: str) -> bool:
    return (
        letter_kind(word) is not None
        or word in NUMBER_WORDS
        or word in _NUMBER_JOINERS
        or _is_digits(word)
    )


def _spelled_run(toks: list[_Tok], run: list[int], edits: list[tuple[int, int, str]]) -> None:
    words = [toks[k].lower for k in run]
    for a, b, code in find_spelled(words):
        if not any(c.isalpha() for c in code):
            continue  # digits only: the number pass reads them
        span = [toks[k] for k in run[a:b]]
        kinds = [_kind(t) for t in span]
        seps = [t.sep for t in span[1:]]
        if "," in seps and not any(c.isdigit() for c in code):
            continue  # "options A, B or C" is a list
        hard = kinds.count("hard")
        chars = kinds.count("char")
        nato = kinds.count("nato")
        size = len(span)
        clear = (hard and size >= 2) or (chars and size >= 2) or nato >= 2 or (nato and size >= 3)
        # "is it a b or a c": an article before a letter is not spelling "AB".
        if "weak" in kinds and size < 3 and not any(c.isdigit() for c in code):
            clear = False
        if not clear:
            continue
        first, stop = run[a], run[b - 1] + 1
        for t in span:
            t.taken = True
        edits.append((first, stop, code))


def _kind(tok: _Tok) -> str:
    if tok.letter:
        return "hard"
    found = letter_kind(tok.lower)
    if found is None:
        return "digit"
    return found[1]


def _numbers(toks: list[_Tok], edits: list[tuple[int, int, str]]) -> None:
    """Spoken numbers not inside a code: digit runs and cardinals."""
    n = len(toks)
    i = 0
    while i < n:
        if toks[i].taken or not _numberish(toks[i].lower):
            i += 1
            continue
        j = i + 1
        while j < n and not toks[j].taken and toks[j].sep and _numberish(toks[j].lower):
            j += 1
        _number_run(toks, list(range(i, j)), edits)
        i = j


def _numberish(word: str) -> bool:
    return word in NUMBER_WORDS or word in _NUMBER_JOINERS or _is_digits(word)


def _number_run(toks: list[_Tok], run: list[int], edits: list[tuple[int, int, str]]) -> None:
    words = [toks[k].lower for k in run]
    for a, b, _value in find_numbers(words):
        # "oh seven seven": a leading "oh" is a zero before a digit sequence.
        if (
            a > 0
            and words[a - 1] == "oh"
            and toks[run[a]].sep == " "
            and b - a >= 2
            and all(_single_digit(w) for w in words[a:b])
        ):
            a -= 1
        span = words[a:b]
        seps = [toks[k].sep for k in run[a + 1 : b]]
        if span[0] in ("minus", "negative", "point"):
            continue  # find_numbers reads these; prose uses them too
        if not _clear_number(toks, run[a], run[b - 1] + 1, span, seps):
            continue
        written = number_text(span)
        if written is None or written == " ".join(span):
            continue
        edits.append((run[a], run[b - 1] + 1, written))


def _clear_number(
    toks: list[_Tok], first: int, stop: int, span: Sequence[str], seps: list[str]
) -> bool:
    """Whether the span is clearly a number, not a word that happens to be one."""
    if span[0] == "a" and len(span) < 3:
        return False  # "a hundred", "one in a million"
    if all(_is_digits(w) for w in span):
        # Already digits: only single digits read one by one are joined.
        return (
            len(span) >= 2
            and all(len(w) == 1 for w in span)
            and (not ({",", "-"} & set(seps)) or len(span) >= 3)
        )
    if "," in seps or "-" in seps:
        if len(span) >= 3 and all(_single_digit(w) for w in span):
            return True
        # "forty-two" is a cardinal; other hyphens and commas separate numbers.
        return len(span) == 2 and span[0] in TENS and span[1] in UNITS and seps == ["-"]
    if len(span) == 1:
        word = span[0]
        after = toks[stop].lower if stop < len(toks) else ""
        if word in TEENS or word in TENS:
            return after not in _PLURAL_NUMBERS
        if word in UNITS:
            before = toks[first - 1].lower if first > 0 and toks[first].sep == " " else ""
            return len(toks) == 1 or before in _NUMBER_CUES
        return False  # "hundred", "thousand" alone
    return True
