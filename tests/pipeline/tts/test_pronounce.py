"""Pronunciations: the voice says the replacement, the word spans stay the written text's."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mediaserver.pipeline.settings import TtsSettings
from mediaserver.pipeline.tts.espeak import EspeakBackend
from mediaserver.pipeline.tts.fallback import FallbackTts
from mediaserver.pipeline.tts.pronounce import Pronouncer, Pronunciation


def test_offsets_map_back_to_the_written_text() -> None:
    text = "Ask SQL or sql, not MySQL."
    said, back = Pronouncer([Pronunciation("SQL", "sequel", ignore_case=True)]).apply(text)
    assert said == "Ask sequel or sequel, not MySQL."
    # Before, inside and after a replacement.
    assert back(said.index("Ask")) == 0
    assert back(said.index("sequel")) == text.index("SQL")
    assert back(said.index("sequel") + 3) == text.index("SQL") + 3  # the word's end
    assert back(said.index("or")) == text.index("or")
    assert back(len(said)) == len(text)


@pytest.mark.parametrize(
    ("rule", "text", "said"),
    [
        (Pronunciation("SQL", "sequel"), "sql", "sql"),  # case matters unless told
        (Pronunciation("Dr.", "Doctor"), "Dr. Who", "Doctor Who"),
        (Pronunciation("AI", "A I"), "AIs and AI", "AIs and A I"),
    ],
)
def test_whole_words_and_case(rule: Pronunciation, text: str, said: str) -> None:
    assert Pronouncer([rule]).apply(text)[0] == said


def test_the_voice_says_the_replacement_with_the_written_spans() -> None:
    text = "We use SQL daily."
    settings = TtsSettings(
        pronunciations=[{"replace": "SQL", "with_text": "structured query language"}]
    )
    backend = EspeakBackend()

    async def chunks(s: TtsSettings) -> list:
        with ThreadPoolExecutor(1) as pool:
            tts = FallbackTts(backend, s, pool)
            return [c async for c in tts.clause(text, lambda failure: None)]

    plain = asyncio.run(chunks(TtsSettings()))
    spoken = asyncio.run(chunks(settings))
    # Longer audio (three words for one), spans within the written text.
    length = lambda cs: sum(len(c.pcm) for c in cs)  # noqa: E731
    assert length(spoken) > length(plain) * 1.3
    assert all(0 <= c.start <= c.end <= len(text) for c in spoken)
    words = {text[c.start : c.end] for c in spoken if c.end > c.start}
    assert "SQL" in words and "daily" in words
    assert max(c.end for c in spoken) >= text.index("daily") + len("daily")
    assert np.concatenate([c.pcm for c in spoken]).any()
