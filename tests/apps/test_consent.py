"""Consent words: a spoken yes or no, and neither."""

from __future__ import annotations

import pytest

from mediaserver.apps.consent import consent_words


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("yes", True),
        ("Yeah, sure.", True),
        ("okay go ahead", True),
        ("I agree", True),
        ("no", False),
        ("No thanks.", False),
        ("I don't agree", False),
        ("please do not record this", False),
        ("what is this about", None),
        ("", None),
    ],
)
def test_consent_words(text: str, verdict: bool | None) -> None:
    assert consent_words(text) is verdict
