"""Tests for mediaserver.pipeline.stt.normalise: spoken numbers and spellings as written."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediaserver.pipeline.stt.normalise import normalise_transcript


@pytest.mark.parametrize(
    ("text", "written"),
    [
        # Whisper's "300 and 12" for "three hundred and twelve"
        ("Order 300 and 12 please.", "Order 312 please."),
        ("it was 2000 and 19", "it was 2019"),
        ("between 100 and 200", "between 100 and 200"),
        ("100 and 2.5 kg", "100 and 2.5 kg"),
        # digit runs, pocketsphinx style
        ("where is my order five eight three", "where is my order 583"),
        ("four oh five", "405"),
        ("oh seven seven one two", "07712"),
        ("zero zero seven", "007"),
        ("double five", "55"),
        ("triple seven", "777"),
        ("five double five three", "5553"),
        ("twenty one twenty two", "2122"),
        ("book table for one two", "book table for 12"),
        # cardinals
        ("forty two", "42"),
        ("I need forty-two", "I need 42"),
        ("one hundred and five", "105"),
        ("a hundred and five", "105"),
        ("two thousand twenty four", "2024"),
        ("three point one four", "3.14"),
        ("twenty", "20"),
        ("about fifteen minutes", "about 15 minutes"),
        ("ten a.m.", "10 a.m."),
        # a lone digit word only where it clearly is a number
        ("Five.", "5."),
        ("room four", "room 4"),
        ("option two please", "option 2 please"),
        # Whisper's digits
        (
            "Could you check order number 5, 8, 3 for me?",
            "Could you check order number 583 for me?",
        ),
        ("4 5 6", "456"),
        ("It's 5-8-3.", "It's 583."),
        ("Five, eight, three.", "583."),
        ("Where's my order? It's 583.", "Where's my order? It's 583."),
        # spelling
        ("b as in boy", "B"),
        ("It is b for bravo", "It is B"),
        ("bravo seven x-ray", "B7X"),
        ("bravo seven x ray please", "B7X please"),
        ("B as in boy, 7, X as in x-ray", "B7X"),
        ("m as in mary n as in nancy four", "MN4"),
        ("check order a b one two three", "check order AB123"),
        ("check orders bravo oh seven", "check orders B07"),
        ("A-B-1-2-3", "AB123"),
        ("Where is order AB-123?", "Where is order AB123?"),
        ("Vitamin B 12", "Vitamin B12"),
        ("twenty three b", "23B"),
        ("room four b", "room 4B"),
    ],
)
def test_normalises(text: str, written: str) -> None:
    assert normalise_transcript(text) == written
    assert normalise_transcript(written) == written  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "no one knows",
        "I want one",
        "one of them",
        "the two of us",
        "nine to five",
        "I want to go for a walk",
        "I won too",
        "it's a deal",
        "I for instance think so",
        "a for effort",
        "one in a million",
        "a hundred",
        "hundreds of people",
        "the nineteen nineties",
        "oh no",
        "Oh, five",
        "at this point two things",
        "minus five",
        "ages 5, 8 and 10",
        "2-3 days",
        "2 or 3",
        "between 5 and 10",
        "583 12",
        "call 555-123-4567",
        "plan B",
        "options A, B, or C",
        "Is it a B or a C?",
        "is it a b or a c",
        "I need an X-ray",
        "I played golf 2 times",
        "Romeo and Juliet",
        "I'm staying at the Hilton hotel in India",
        "Mike is here",
        "at five p m",
        "5 p.m.",
        "T-shirt",
        "double check it",
        "a double room",
        "COVID-19",
        "",
        "   ",
        "?!",
    ],
)
def test_leaves_prose_alone(text: str) -> None:
    assert normalise_transcript(text) == text


# Everyday words, none of them a number word, a single letter or a NATO word.
_WORDS = [
    "where", "is", "my", "order", "please", "thanks", "for", "to", "too", "won", "ate",
    "and", "the", "weather", "in", "Paris", "New", "York", "tomorrow", "I'm", "it's",
    "could", "you", "check", "that", "no", "yes", "hello", "oh", "point", "double",
    "minus", "as", "like", "someone", "alone", "often", "tennis", "Tennessee", "seventh",
    "ninth", "hundreds", "phone", "number", "room", "see", "are", "why", "be", "tea",
    "café", "Zürich", "naïve", "don't", "a", "I",
]  # fmt: skip
_PUNCT = ["", ",", ".", "?", "!", " -", ";", "'"]


@given(
    st.lists(
        st.tuples(st.sampled_from(_WORDS), st.sampled_from(_PUNCT), st.sampled_from([" ", "  "])),
        max_size=25,
    )
)
def test_text_without_numbers_or_spelling_is_unchanged(parts: list[tuple[str, str, str]]) -> None:
    text = "".join(word + punct + space for word, punct, space in parts).strip()
    assert normalise_transcript(text) == text


@given(st.text(alphabet=st.characters(blacklist_categories=("Nd", "Lu", "Ll", "Lt", "Lm", "Lo"))))
def test_text_without_letters_or_digits_is_unchanged(text: str) -> None:
    assert normalise_transcript(text) == text


_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@given(st.text(alphabet="0123456789", min_size=2, max_size=10))
def test_spoken_digit_runs_round_trip(digits: str) -> None:
    spoken = " ".join(_UNITS[int(d)] for d in digits)
    assert normalise_transcript(f"my number is {spoken} thanks") == f"my number is {digits} thanks"
    spaced = ", ".join(digits)
    if len(digits) >= 3:
        assert normalise_transcript(f"It's {spaced}.") == f"It's {digits}."


def test_is_fast() -> None:
    import time

    text = "Hi, could you check order number 5, 8, 3 for me? It's b as in boy, seven, x-ray."
    t0 = time.perf_counter()
    for _ in range(200):
        normalise_transcript(text)
    assert (time.perf_counter() - t0) / 200 < 0.002  # about 0.1 ms here
