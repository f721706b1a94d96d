"""Reading numbers and spelled codes out of spoken words.

Speech-to-text (pocketsphinx) hands us lowercase words without punctuation or
digits: "check order one two three", "i need forty two", "a b oh seven". These
pure functions turn such word lists back into values, for the scripted engine
and for anything else that fills structured data from a transcript.

Conventions:

* `words_of` normalises any text (typed or transcribed) to lowercase words.
* A *number* is either a cardinal ("one hundred and five", "forty two",
  "two thousand twenty") or a run of digit groups read one after another
  ("one two three" -> 123, "four oh five" -> 405, "twenty one twenty two" ->
  2122), optionally signed ("minus") and with a fraction ("three point one
  four").
* A *spelled code* is a run of letter names and digits ("a b one two three"
  -> "AB123", "bravo seven" -> "B7").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "NUMBER_WORDS",
    "find_numbers",
    "find_spelled",
    "letter_kind",
    "number_text",
    "parse_number",
    "parse_spelled",
    "split_identifier",
    "words_of",
]

_WORD_RE = re.compile(r"\d+\.\d+|[a-z0-9]+(?:'[a-z]+)*")
_CAMEL_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")

UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4,
    "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
}  # fmt: skip
TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
SCALES = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_REPEAT = {"double": 2, "triple": 3}
_SIGN = {"minus", "negative"}

# Letter names as a recogniser writes them. "Weak" names are also everyday
# words ("are you", "why", "see"), so they only count as letters next to an
# unambiguous letter; otherwise "how are you one two" would read "RU12".
_LETTER_NAMES: dict[str, str] = {
    "bee": "B", "cee": "C", "dee": "D", "ee": "E", "ef": "F", "eff": "F", "gee": "G",
    "aitch": "H", "jay": "J", "kay": "K", "ell": "L", "pee": "P", "ar": "R", "ess": "S",
    "tee": "T", "vee": "V", "zed": "Z", "zee": "Z",
}  # fmt: skip
# NATO phonetic alphabet, which callers use for exactly this purpose.
_NATO: dict[str, str] = {
    "alpha": "A", "alfa": "A", "bravo": "B", "charlie": "C", "delta": "D", "echo": "E",
    "foxtrot": "F", "golf": "G", "hotel": "H", "india": "I", "juliet": "J",
    "juliett": "J", "kilo": "K", "lima": "L", "mike": "M", "november": "N",
    "oscar": "O", "papa": "P", "quebec": "Q", "romeo": "R", "sierra": "S",
    "tango": "T", "uniform": "U", "victor": "V", "whiskey": "W", "whisky": "W",
    "xray": "X", "yankee": "Y", "zulu": "Z",
}  # fmt: skip
_STRONG_LETTERS: dict[str, str] = {c: c.upper() for c in "bcdefghjklmnpqrstuvwxyz"}
_STRONG_LETTERS.update(_LETTER_NAMES)
_STRONG_LETTERS.update(_NATO)
_WEAK_LETTERS: dict[str, str] = {
    "a": "A", "i": "I", "be": "B", "see": "C", "sea": "C", "eye": "I", "el": "L", "em": "M",
    "en": "N", "o": "O", "pea": "P", "queue": "Q", "cue": "Q", "are": "R", "es": "S",
    "tea": "T", "you": "U", "u": "U", "ex": "X", "why": "Y",
}  # fmt: skip


def words_of(text: str) -> list[str]:
    """Split text into lowercase words, the way a recogniser would write them.

    Punctuation and hyphens separate words ("forty-two" -> ["forty", "two"]);
    apostrophes inside words stay ("i'm"); decimals stay whole ("3.5").

    Args:
        text: Any text.

    Returns:
        The words, lowercase.
    """
    return _WORD_RE.findall(text.lower())


def split_identifier(name: str) -> list[str]:
    """Split a snake_case, kebab-case or camelCase identifier into lowercase words.

    Args:
        name: e.g. "check_order_status" or "getWeatherNow".

    Returns:
        e.g. ["check", "order", "status"] or ["get", "weather", "now"].
    """
    out: list[str] = []
    for part in re.split(r"[^A-Za-z0-9]+", name):
        out.extend(p.lower() for p in _CAMEL_RE.findall(part))
    return out


def letter_kind(word: str) -> tuple[str, str] | None:
    """The letter a word names when spelling, and how sure that reading is.

    Args:
        word: One lowercase word.

    Returns:
        (letter, kind) or None. Kinds: "char" (a single letter written as
        such, "b"), "name" (a letter's name, "bee", "aitch"), "nato" (the
        phonetic alphabet, "bravo", "xray") and "weak" (everyday words that
        are also letter names: "a", "i", "you", "see", "why").
    """
    if word in _NATO:
        return _NATO[word], "nato"
    if word in _LETTER_NAMES:
        return _LETTER_NAMES[word], "name"
    if word in _STRONG_LETTERS:
        return _STRONG_LETTERS[word], "char"
    if word in _WEAK_LETTERS:
        return _WEAK_LETTERS[word], "weak"
    return None


def _is_digits(word: str) -> bool:
    return word.isascii() and word.isdigit()


def _cardinal(words: Sequence[str]) -> int | None:
    """A strict cardinal ("two thousand and five"), or None if the words are not one.

    Strictness is what tells "one two three" (a digit sequence, 123) from
    "one hundred twenty three": a unit may not follow a unit or a teen, etc.
    """
    if not words:
        return None
    if len(words) == 1 and words[0] == "zero":
        return 0
    total = 0
    hundreds: int | None = None
    rest = 0
    state = "start"  # what the last word in the current group was
    last_scale = 10**12
    seen = False
    for i, word in enumerate(words):
        if word == "and":
            # "one hundred and five", "two thousand and nineteen": only between
            # number words, never first or last.
            if (state == "start" and not total) or i == len(words) - 1:
                return None
            continue
        if word in UNITS and word != "zero":
            if state not in ("start", "tens", "hundred"):
                return None
            rest += UNITS[word]
            state = "unit"
        elif word in TEENS:
            if state not in ("start", "hundred"):
                return None
            rest += TEENS[word]
            state = "teen"
        elif word in TENS:
            if state not in ("start", "hundred"):
                return None
            rest += TENS[word]
            state = "tens"
        elif _is_digits(word) and len(word) <= 3:
            # "3 million", "42 thousand": digits standing for a whole group.
            if state != "start" or hundreds is not None:
                return None
            rest = int(word)
            state = "digits"
        elif word == "hundred":
            if hundreds is not None or (state == "digits" and rest >= 100):
                return None
            # "hundred" alone or "a hundred" is 100; "twelve hundred" is 1200.
            hundreds = rest if rest else 1
            rest = 0
            state = "hundred"
        elif word in SCALES:
            scale = SCALES[word]
            if scale >= last_scale:
                return None
            group = (hundreds or 0) * 100 + rest
            if group == 0:
                if total:
                    return None
                group = 1  # "thousand" alone, or "a thousand"
            total += group * scale
            hundreds, rest, state, last_scale = None, 0, "start", scale
        else:
            return None
        seen = True
    if not seen:
        return None
    return total + (hundreds or 0) * 100 + rest


def _digit_groups(words: Sequence[str]) -> str | None:
    """Digits read as groups one after another, as a digit string, or None.

    "one two three" -> "123"; "four oh five" -> "405"; "nineteen eighty four"
    -> "1984"; "double seven" -> "77". Leading zeros are kept.
    """
    out: list[str] = []
    real = False  # "oh" alone is an interjection, not a number
    i = 0
    while i < len(words):
        word = words[i]
        repeat = 1
        if word in _REPEAT and i + 1 < len(words):
            repeat = _REPEAT[word]
            i += 1
            word = words[i]
        if word in UNITS:
            piece = str(UNITS[word])
            real = True
        elif word == "oh":
            piece = "0"
        elif _is_digits(word):
            piece = word
            real = True
        elif word in TEENS and repeat == 1:
            piece = str(TEENS[word])
            real = True
        elif word in TENS and repeat == 1:
            value = TENS[word]
            if i + 1 < len(words) and words[i + 1] in UNITS and words[i + 1] != "zero":
                i += 1
                value += UNITS[words[i]]
            piece = str(value)
            real = True
        else:
            return None
        out.append(piece * repeat)
        i += 1
    return "".join(out) if real else None


def _integer_text(words: Sequence[str]) -> str | None:
    if a_hundred := (len(words) >= 2 and words[0] == "a" and words[1] in ("hundred", *SCALES)):
        words = words[1:]
    value = _cardinal(words)
    if value is not None:
        return str(value)
    if a_hundred:
        return None
    return _digit_groups(words)


def number_text(words: Sequence[str] | str) -> str | None:
    """The number that the words say, written in digits, or None.

    Like `parse_number`, but as text, so that what a value cannot hold
    survives: the leading zeros of a digit sequence ("oh seven" -> "07",
    "zero zero seven" -> "007") and the digits of a fraction ("one point
    five zero" -> "1.50").

    Args:
        words: Words as from `words_of`, or text (split with `words_of`).

    Returns:
        Digits with an optional "-" and ".", or None.
    """
    ws = words_of(words) if isinstance(words, str) else [w.lower() for w in words]
    if not ws:
        return None
    sign = ""
    if ws[0] in _SIGN:
        sign = "-"
        ws = ws[1:]
    if len(ws) == 1 and re.fullmatch(r"\d+\.\d+", ws[0]):
        return sign + ws[0]
    if "point" in ws:
        at = ws.index("point")
        whole_words, frac_words = ws[:at], ws[at + 1 :]
        whole = _integer_text(whole_words) if whole_words else "0"
        # The fraction is always read digit by digit: "point one four".
        frac = _digit_groups(frac_words) if frac_words else None
        if whole is None or frac is None or any(w in TEENS or w in TENS for w in frac_words):
            return None
        return f"{sign}{whole}.{frac}"
    value = _integer_text(ws)
    return None if value is None else sign + value


def parse_number(words: Sequence[str] | str) -> int | float | None:
    """The number that the words say, or None if they say something else.

    Accepts digits ("42", "3.5"), cardinals ("one hundred and five", "a
    thousand", "three million two hundred"), digit sequences ("one two three"
    -> 123, "oh" counts as 0 inside them: "four oh five" -> 405), grouped
    readings ("nineteen eighty four" -> 1984), "double"/"triple" repeats,
    a sign ("minus five") and a fraction ("three point one four" -> 3.14,
    "point five" -> 0.5). Every word must belong to the number.

    Args:
        words: Words as from `words_of`, or text (split with `words_of`).

    Returns:
        An int, a float when there is a fractional part, or None.
    """
    text = number_text(words)
    if text is None:
        return None
    return float(text) if "." in text else int(text)


#: Words that are numbers on their own: units, teens, tens, "hundred" and the scales.
NUMBER_WORDS = frozenset({*UNITS, *TEENS, *TENS, *SCALES, "hundred"})
_NUMBER_WORDS = NUMBER_WORDS
# Words that only belong to a number in the middle of one.
_JOINERS = {"and", "point", "oh"} | set(_REPEAT)


def _numberish(word: str) -> bool:
    return word in _NUMBER_WORDS or _is_digits(word) or bool(re.fullmatch(r"\d+\.\d+", word))


def _joined_to_number(ws: Sequence[str], at: int) -> int | None:
    """Index after the joiners starting at `at` if a number word follows them, else None."""
    k = at
    while k < len(ws) and ws[k] in _JOINERS:
        k += 1
    return k if k > at and k < len(ws) and _numberish(ws[k]) else None


def find_numbers(words: Sequence[str]) -> list[tuple[int, int, int | float]]:
    """Every number said inside a sentence, as (start, end, value) word spans.

    Runs of number words are found greedily ("i want forty two please" ->
    [(2, 4, 42)]); joiners such as "and", "point", "oh" and "double" only count
    before a number word, a sign only right before one, "a" only before
    "hundred"/"thousand"/... A run that does not parse as a whole is cut
    from the right until it does.

    Args:
        words: Words as from `words_of`.

    Returns:
        Spans in order; `words[start:end]` says `value`.
    """
    ws = [w.lower() for w in words]
    n = len(ws)
    out: list[tuple[int, int, int | float]] = []
    i = 0
    while i < n:
        start = j = i
        if j + 1 < n and (
            ws[j] in _SIGN
            or ws[j] in _REPEAT
            or ws[j] == "point"
            or (ws[j] == "a" and (ws[j + 1] == "hundred" or ws[j + 1] in SCALES))
        ):
            j += 1
        if not _numberish(ws[j]):
            i += 1
            continue
        end = j + 1
        while end < n:
            if _numberish(ws[end]):
                end += 1
            elif (k := _joined_to_number(ws, end)) is not None:
                end = k + 1
            else:
                break
        stop = end
        while stop > start:
            value = parse_number(ws[start:stop])
            if value is not None:
                out.append((start, stop, value))
                break
            stop -= 1
        i = max(stop, start + 1)
    return out


def _letter_items(ws: Sequence[str]) -> list[tuple[int, int, str, str]]:
    """Classify words as (start, end, kind, text); kind: digit, letter, weak, oh, none."""
    items: list[tuple[int, int, str, str]] = []
    i = 0
    while i < len(ws):
        word = ws[i]
        # "one hundred twenty" inside a code means 120: take the whole cardinal.
        if word in _NUMBER_WORDS:
            stop = i
            while stop < len(ws) and (ws[stop] in _NUMBER_WORDS or ws[stop] == "and"):
                stop += 1
            while stop > i + 1 and not (
                any(w == "hundred" or w in SCALES for w in ws[i:stop])
                and _cardinal(ws[i:stop]) is not None
            ):
                stop -= 1
            value = _cardinal(ws[i:stop]) if stop > i + 1 else None
            if value is not None:
                items.append((i, stop, "digit", str(value)))
                i = stop
                continue
        repeat = 1
        j = i
        if word in _REPEAT and i + 1 < len(ws):
            if ws[i + 1] in ("u", "you"):  # "double you" is W
                items.append((i, i + 2, "letter", "W"))
                i += 2
                continue
            repeat = _REPEAT[word]
            j = i + 1
            word = ws[j]
        if word in UNITS:
            items.append((i, j + 1, "digit", str(UNITS[word]) * repeat))
        elif _is_digits(word):
            items.append((i, j + 1, "digit", word * repeat))
        elif word in TEENS and repeat == 1:
            items.append((i, j + 1, "digit", str(TEENS[word])))
        elif word in TENS and repeat == 1:
            value = TENS[word]
            if j + 1 < len(ws) and ws[j + 1] in UNITS and ws[j + 1] != "zero":
                j += 1
                value += UNITS[ws[j]]
            items.append((i, j + 1, "digit", str(value)))
        elif word == "oh":
            items.append((i, j + 1, "oh", "O" * repeat))
        elif word in _STRONG_LETTERS:
            items.append((i, j + 1, "letter", _STRONG_LETTERS[word] * repeat))
        elif word in _WEAK_LETTERS:
            kind = "letter" if repeat > 1 else "weak"
            items.append((i, j + 1, kind, _WEAK_LETTERS[word] * repeat))
        elif word.isalnum() and word.isascii() and any(c.isdigit() for c in word):
            items.append((i, j + 1, "letter", word.upper()))  # typed "ab123"
        else:
            items.append((i, j + 1, "none", ""))
        i = j + 1
    return items


def find_spelled(words: Sequence[str]) -> list[tuple[int, int, str]]:
    """Every spelled code in a sentence, as (start, end, code) word spans.

    Letter names (single letters, "bee", "aitch", NATO "bravo"...) and digits
    (units, "twenty three", "double five", digit strings) make up codes.
    "oh" is a 0 next to a digit and the letter O otherwise. Everyday words
    that are also letter names ("a", "i", "are", "you", "see", "why"...) only
    count next to an unambiguous letter, so "order a b one" is "AB1" while
    "should be one two" is "12".

    Args:
        words: Words as from `words_of`.

    Returns:
        Spans in order; each code is uppercase letters and digits.
    """
    items = [list(t) for t in _letter_items([w.lower() for w in words])]
    kinds = [str(t[2]) for t in items]
    for n, kind in enumerate(kinds):
        if kind == "oh":
            near = kinds[n - 1 : n] + kinds[n + 1 : n + 2]
            if "digit" in near:
                items[n][3] = "0" * len(str(items[n][3]))
                items[n][2] = "digit"
            else:
                items[n][2] = "weak"
    kinds = [str(t[2]) for t in items]
    for n, kind in enumerate(kinds):
        if kind == "weak":
            near = kinds[n - 1 : n] + kinds[n + 1 : n + 2]
            items[n][2] = "letter" if "letter" in near else "none"
    out: list[tuple[int, int, str]] = []
    run: list[list[object]] = []
    for item in [*items, [len(words), len(words), "none", ""]]:
        if item[2] == "none":
            if run:
                start, end = run[0][0], run[-1][1]
                assert isinstance(start, int) and isinstance(end, int)
                out.append((start, end, "".join(str(t[3]) for t in run)))
            run = []
        else:
            run.append(item)
    return out


def parse_spelled(words: Sequence[str] | str) -> str:
    """The spelled code in the words: "order a b one two three" -> "AB123".

    Words that are not letters or digits are skipped; when the sentence holds
    several separate codes, the longest wins (the last one on a tie, since
    callers say the code after introducing it).

    Args:
        words: Words as from `words_of`, or text.

    Returns:
        Uppercase letters and digits, or "" when nothing was spelled.
    """
    ws = words_of(words) if isinstance(words, str) else list(words)
    spans = find_spelled(ws)
    if not spans:
        return ""
    best = max(reversed(spans), key=lambda s: len(s[2]))
    return best[2]
