"""Tests for mediaserver.pipeline.tts.clauses: streamed LLM tokens -> clauses."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver.pipeline.tts.clauses import ClauseAggregator


def clauses(text: str, min_chars: int = 20, max_chars: int = 200) -> list[str]:
    """All clauses of `text` pushed at once, then the flushed remainder."""
    agg = ClauseAggregator(min_chars, max_chars)
    out = agg.push(text)
    rest = agg.flush()
    return [*out, rest] if rest is not None else out


def streamed(tokens: list[str], min_chars: int = 20, max_chars: int = 200) -> list[str]:
    agg = ClauseAggregator(min_chars, max_chars)
    out = [c for token in tokens for c in agg.push(token)]
    rest = agg.flush()
    return [*out, rest] if rest is not None else out


def test_sentences() -> None:
    assert clauses("Sure. Let me check that for you! Is it urgent? Okay") == [
        "Sure. ",
        "Let me check that for you! ",
        "Is it urgent? ",
        "Okay",
    ]
    assert clauses("One; two: three. ") == ["One; ", "two: ", "three. "]


def test_clause_needs_whitespace_after_punctuation() -> None:
    agg = ClauseAggregator()
    assert agg.push("Done.") == []  # "Done.5"? not decided yet
    assert agg.pending == "Done."
    assert agg.push(" Next") == ["Done. "]
    assert agg.flush() == "Next"
    assert agg.flush() is None


def test_comma_needs_min_chars() -> None:
    assert clauses("Yes, of course, I can do that.") == ["Yes, of course, I can do that."]
    assert clauses("Well, if you really want to know, I will tell you.") == [
        "Well, if you really want to know, ",
        "I will tell you.",
    ]
    assert clauses("Yes, sure, fine.", min_chars=0) == ["Yes, ", "sure, ", "fine."]


def test_numbers_do_not_end_clauses() -> None:
    text = "It costs 3.5 dollars, or 1,000 cents at 10:30 today. Then 2,5 and .5 more."
    assert clauses(text) == [
        "It costs 3.5 dollars, ",
        "or 1,000 cents at 10:30 today. ",
        "Then 2,5 and .5 more.",
    ]
    # A number at the end of a sentence still ends it.
    assert clauses("That was in 2023. Really") == ["That was in 2023. ", "Really"]


def test_abbreviations_and_initials() -> None:
    text = (
        "Mr. Smith and Dr. Jones met Mrs. Brown at St. Mary's, e.g. on Monday, "
        "i.e. today, with apples etc. and J. R. R. Tolkien. Bye."
    )
    assert clauses(text) == [
        "Mr. Smith and Dr. Jones met Mrs. Brown at St. Mary's, ",
        "e.g. on Monday, i.e. today, ",
        "with apples etc. and J. R. R. Tolkien. ",
        "Bye.",
    ]
    assert clauses("(e.g. this) and MR. X. Done") == ["(e.g. this) and MR. X. Done"]


def test_newlines() -> None:
    assert clauses("First line\nSecond line\n\n\nThird") == [
        "First line\n",
        "Second line\n",
        "\n\nThird",
    ]
    assert clauses("End.\nNext") == ["End.\n", "Next"]
    assert clauses("\n\n  \n") == ["\n\n  \n"]  # whitespace only: all in the remainder


def test_closing_quotes_and_repeated_punctuation() -> None:
    assert clauses('He said "stop." Then (he left!) Really?! Wait... ok') == [
        'He said "stop." ',
        "Then (he left!) ",
        "Really?! ",
        "Wait... ",
        "ok",
    ]
    assert clauses("Pause\u2026 then") == ["Pause\u2026 ", "then"]


def test_long_clause_is_cut_at_a_word_boundary() -> None:
    words = " ".join(f"word{i}" for i in range(100))  # 589 chars, no punctuation
    out = clauses(words, max_chars=50)
    assert "".join(out) == words
    for clause in out[:-1]:
        assert len(clause) > 50
        assert clause.endswith(" ")
        assert " " not in clause[50:-1]  # the first boundary after max_chars
    # No whitespace at all: a hard cut at twice max_chars.
    assert clauses("x" * 250, max_chars=50) == ["x" * 100, "x" * 100, "x" * 50]


def test_streaming_returns_clause_on_its_confirming_token() -> None:
    agg = ClauseAggregator()
    got = [agg.push(t) for t in ["Hel", "lo", ".", " How", " are", " you", "?", "\n", "Fine"]]
    assert got == [[], [], [], ["Hello. "], [], [], [], ["How are you?\n"], []]
    assert agg.flush() == "Fine"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ClauseAggregator(min_chars=-1)
    with pytest.raises(ValueError):
        ClauseAggregator(max_chars=0)


# ---------------------------------------------------------------- properties

# Text rich in the characters the rules look at.
PIECES = st.sampled_from(
    [
        "Hello", "world", "3.5", "1,000", "Mr.", "e.g.", "etc.", "J.", " ", "  ", "\n",
        ".", ",", "!", "?", ";", ":", '"', ")", "\u2026", "caf\u00e9", "\U0001f600", "a",
        "long-ish clause text here", "\t",
    ]
)  # fmt: skip
TEXT = st.lists(PIECES, max_size=60).map("".join) | st.text(max_size=300)


@st.composite
def split(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(TEXT)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=30)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(split(), st.integers(0, 30), st.integers(1, 60))
def test_round_trip_independent_of_token_split(
    case: tuple[str, list[str]], min_chars: int, max_chars: int
) -> None:
    text, tokens = case
    out = streamed(tokens, min_chars, max_chars)
    assert "".join(out) == text
    assert all(out)  # no empty clauses
    # Where clauses end depends on the text only, not on the token split.
    assert out == clauses(text, min_chars, max_chars)
    for clause in out[:-1]:
        assert clause[-1].isspace() or len(clause) == 2 * max_chars
