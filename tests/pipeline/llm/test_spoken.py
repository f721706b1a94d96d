"""Tests for mediaserver.pipeline.llm.spoken: numbers and codes from spoken words."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediaserver.pipeline.llm.spoken import (
    find_numbers,
    find_spelled,
    parse_number,
    parse_spelled,
    split_identifier,
    words_of,
)

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TEENS = [
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def to_words(n: int, *, and_: bool = False) -> str:
    """English cardinal words for 0 <= n < 10**9 (the test's reference speaker)."""
    if n == 0:
        return "zero"
    parts: list[str] = []
    for scale, name in ((10**6, "million"), (1000, "thousand"), (1, "")):
        group, n = divmod(n, scale)
        if not group:
            continue
        hundreds, rest = divmod(group, 100)
        if hundreds:
            parts += [_UNITS[hundreds], "hundred"]
            if rest and and_:
                parts.append("and")
        if rest >= 20:
            parts.append(_TENS[rest // 10])
            if rest % 10:
                parts.append(_UNITS[rest % 10])
        elif rest >= 10:
            parts.append(_TEENS[rest - 10])
        elif rest:
            parts.append(_UNITS[rest])
        if name:
            parts.append(name)
    return " ".join(parts)


# ---------------------------------------------------------------- words_of


def test_words_of() -> None:
    assert words_of("Check order #A-12, please!") == ["check", "order", "a", "12", "please"]
    assert words_of("I'm forty-two") == ["i'm", "forty", "two"]
    assert words_of("costs 3.50 now") == ["costs", "3.50", "now"]
    assert words_of("") == []


def test_split_identifier() -> None:
    assert split_identifier("check_order_status") == ["check", "order", "status"]
    assert split_identifier("getWeatherNow") == ["get", "weather", "now"]
    assert split_identifier("lookup-order") == ["lookup", "order"]
    assert split_identifier("parseHTTPResponse") == ["parse", "http", "response"]


# ---------------------------------------------------------------- parse_number


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42),
        ("forty two", 42),
        ("one two three", 123),
        ("seven", 7),
        ("zero", 0),
        ("ten", 10),
        ("one hundred", 100),
        ("a hundred", 100),
        ("hundred", 100),
        ("one hundred and five", 105),
        ("one hundred five", 105),
        ("twelve hundred", 1200),
        ("two thousand twenty four", 2024),
        ("two thousand and nineteen", 2019),
        ("a thousand", 1000),
        ("one million two hundred thousand", 1_200_000),
        ("3 million", 3_000_000),
        ("four oh five", 405),
        ("one oh oh one", 1001),
        ("nineteen eighty four", 1984),
        ("twenty one twenty two", 2122),
        ("double seven", 77),
        ("five double five triple two", 555222),
        ("zero one two", 12),
        ("1 2 3", 123),
        ("minus seven", -7),
        ("negative forty", -40),
        ("three point one four", 3.14),
        ("point five", 0.5),
        ("3.5", 3.5),
        ("Forty-Two", 42),
    ],
)
def test_parse_number(text: str, value: float) -> None:
    got = parse_number(text)
    assert got == value
    assert isinstance(got, type(value))
    assert parse_number(words_of(text)) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "oh",
        "oh oh",
        "forty two please",
        "and",
        "one and",
        "thousand thousand",
        "one million thousand",
        "point",
        "three point",
        "three point twenty",
        "minus",
        "a",
        "a five",
    ],
)
def test_parse_number_rejects(text: str) -> None:
    assert parse_number(text) is None


@given(st.integers(0, 999_999))
def test_cardinal_round_trip(n: int) -> None:
    assert parse_number(to_words(n)) == n
    assert parse_number(to_words(n, and_=True)) == n


@given(st.integers(0, 10**8))
def test_digit_sequence_round_trip(n: int) -> None:
    spoken = " ".join(_UNITS[int(d)] for d in str(n))
    assert parse_number(spoken) == n
    # "oh" for zero inside a run of digits
    if "0" in str(n)[1:]:
        assert parse_number(spoken.replace("zero", "oh")) == n


@given(st.integers(-999_999, 999_999), st.integers(0, 99))
def test_decimal_round_trip(whole: int, frac: int) -> None:
    digits = f"{frac:02d}"
    spoken = ("minus " if whole < 0 else "") + to_words(abs(whole))
    spoken += " point " + " ".join(_UNITS[int(d)] for d in digits)
    expected = float(f"{abs(whole)}.{digits}") * (-1 if whole < 0 else 1)
    assert parse_number(spoken) == expected


# ---------------------------------------------------------------- find_numbers


def test_find_numbers() -> None:
    words = words_of("I want forty two apples and one oh five pears, minus three, a hundred")
    assert find_numbers(words) == [(2, 4, 42), (6, 9, 105), (10, 12, -3), (12, 14, 100)]
    # "and" joins only when it makes a number: "two and three" is two numbers
    assert find_numbers(words_of("two kids and three dogs")) == [(0, 1, 2), (3, 4, 3)]
    assert find_numbers(words_of("two hundred and five people")) == [(0, 4, 205)]
    assert find_numbers(words_of("oh well")) == []
    assert find_numbers(words_of("call me at five five five oh one two three")) == [
        (3, 10, 5550123)
    ]


@given(st.integers(0, 999_999), st.sampled_from(["i want", "give me", "order"]))
def test_find_numbers_in_sentence(n: int, prefix: str) -> None:
    words = words_of(f"{prefix} {to_words(n)} please")
    ((start, end, value),) = find_numbers(words)
    assert value == n
    assert words[:start] == words_of(prefix)
    assert words[end:] == ["please"]


# ---------------------------------------------------------------- parse_spelled


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("order a b one two three", "AB123"),
        ("check order one two three", "123"),
        ("a b oh seven", "AB07"),
        ("b oh b", "BOB"),
        ("x y z", "XYZ"),
        ("bravo seven kilo", "B7K"),
        ("double you one", "W1"),
        ("double five", "55"),
        ("twenty three b", "23B"),
        ("order one hundred twenty three", "123"),
        ("my code is ab123", "AB123"),
        ("zero zero seven", "007"),
        ("should be one two", "12"),
        ("i want a refund for order b one two", "B12"),
        ("bee dee one", "BD1"),
        ("how are you", ""),
        ("", ""),
        ("hello there", ""),
    ],
)
def test_parse_spelled(text: str, code: str) -> None:
    assert parse_spelled(text) == code
    assert parse_spelled(words_of(text)) == code


def test_find_spelled_spans() -> None:
    words = words_of("room four b and then code x y one")
    assert find_spelled(words) == [(1, 3, "4B"), (6, 9, "XY1")]
    assert parse_spelled(words) == "XY1"


# A, I, O and U are left out: "a", "i", "o", "u" are also words, so on their
# own (or next to digits only) they do not count as letters; see the next test.
@given(st.text(alphabet="BCDEFGHJKLMNPQRSTVWXYZ0123456789", min_size=1, max_size=8))
def test_spelled_round_trip(code: str) -> None:
    # Spoken the way a recogniser writes it: single letters and digit words.
    spoken = " ".join(_UNITS[int(c)] if c.isdigit() else c.lower() for c in code)
    assert parse_spelled(f"my reference is {spoken}") == code


def test_ambiguous_letters_need_a_clear_letter_next_to_them() -> None:
    assert parse_spelled("a") == ""
    assert parse_spelled("i one two") == "12"  # "i" next to digits only: a pronoun
    assert parse_spelled("a b") == "AB"
    assert parse_spelled("k a one") == "KA1"
    assert parse_spelled("o k") == "OK"
