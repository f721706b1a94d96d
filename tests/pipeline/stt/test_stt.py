"""Tests for mediaserver.pipeline.stt: pocketsphinx, load_stt, hints_for (whisper: test_whisper.py).

Speech comes from the espeak-ng CLI (22.05 kHz), resampled to 16 kHz, and also
sent through the telephone path (8 kHz, G.711 u-law round trip, back to 16 kHz).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from mediaserver.pipeline.settings import SttSettings
from mediaserver.pipeline.stt import (
    STT_RATE,
    ModelLoadError,
    SttHints,
    Transcript,
    hints_for,
    load_stt,
)
from mediaserver.pipeline.stt.sphinx import PocketSphinxBackend

Pcm = npt.NDArray[np.int16]
FRAME = STT_RATE // 50  # 20 ms

DIGITS = ("zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
HINTS = SttHints(
    phrases=("check order", "what is the weather in paris", "cancel my reservation"),
    words=(*DIGITS, "yes", "no"),
)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng CLI missing")


@pytest.fixture(scope="module")
def backend() -> Iterator[PocketSphinxBackend]:
    stt = PocketSphinxBackend(pool_size=2)
    yield stt
    stt.close()


def decode(
    backend: PocketSphinxBackend, hints: SttHints, pcm: Pcm
) -> tuple[list[Transcript], Transcript]:
    stream = backend.open(hints)
    # A quarter second of silence either side, as the VAD hands a turn over.
    silence = np.zeros(STT_RATE // 4, dtype=np.int16)
    audio = np.concatenate([silence, pcm, silence])
    partials = []
    for start in range(0, audio.size, FRAME):
        result = stream.feed(audio[start : start + FRAME])
        if result is not None:
            partials.append(result)
    final = stream.finalise()
    stream.close()
    return partials, final


# ---------------------------------------------------------------- pocketsphinx


@needs_espeak
@pytest.mark.parametrize("phone", [False, True], ids=["16k", "telephone"])
def test_hinted_command_with_digits(
    backend: PocketSphinxBackend, speak: Callable[[str, bool], Pcm], phone: bool
) -> None:
    partials, final = decode(backend, HINTS, speak("check order one two three", phone))
    assert final.final
    words = final.text.split()
    # All hinted words present, in order (an extra digit may slip in).
    assert words[:2] == ["check", "order"], final.text
    assert [w for w in words if w in ("one", "two", "three")] == ["one", "two", "three"], final.text
    assert partials and all(not p.final for p in partials)


@needs_espeak
@pytest.mark.parametrize("phone", [False, True], ids=["16k", "telephone"])
def test_hinted_phrase(
    backend: PocketSphinxBackend, speak: Callable[[str, bool], Pcm], phone: bool
) -> None:
    _, final = decode(backend, HINTS, speak("what is the weather in paris", phone))
    if phone:
        # Narrow-band audio on a wideband model: the phrase, or most of it.
        assert final.text.startswith("what is the weather in"), final.text
    else:
        assert final.text == "what is the weather in paris"


@needs_espeak
def test_no_hints_uses_full_lm(
    backend: PocketSphinxBackend, speak: Callable[[str, bool], Pcm]
) -> None:
    partials, final = decode(backend, SttHints(), speak("yes please", False))
    assert final.final and isinstance(final.text, str)
    assert final.text == "yes please"
    assert partials


@needs_espeak
def test_partials_arrive_while_feeding(
    backend: PocketSphinxBackend, speak: Callable[[str, bool], Pcm]
) -> None:
    partials, final = decode(backend, HINTS, speak("check order one two three", False))
    assert len(partials) >= 3
    # Partials grow towards the final text while the caller talks.
    assert any(p.text and final.text.startswith(p.text.split()[0]) for p in partials)


def test_pool_reuses_decoders() -> None:
    stt = PocketSphinxBackend(pool_size=1)
    assert stt.decoders_created == 1
    noise = np.random.default_rng(1).normal(0, 500, STT_RATE // 2).astype(np.int16)
    for hints in (SttHints(), HINTS, SttHints(), HINTS, SttHints(phrases=("check order",))):
        stream = stt.open(hints)
        for start in range(0, noise.size, FRAME):
            stream.feed(noise[start : start + FRAME])
        assert stream.holds_decoder  # type: ignore[attr-defined]
        assert stt.idle_decoders == 0
        assert stream.finalise().final
        assert not stream.holds_decoder  # type: ignore[attr-defined]
        assert stt.idle_decoders == 1
    assert stt.decoders_created == 1
    # Streams that never get audio hold nothing; a second concurrent stream makes a decoder.
    idle = [stt.open(HINTS) for _ in range(3)]
    assert all(not s.holds_decoder for s in idle)  # type: ignore[attr-defined]
    assert all(s.finalise() == Transcript("", final=True) for s in idle)
    busy = [stt.open(SttHints()) for _ in range(2)]
    for stream in busy:
        stream.feed(noise[:FRAME])
    assert stt.decoders_created == 2
    for stream in busy:
        stream.close()
    assert stt.idle_decoders == 2
    stt.close()


def test_oov_hints_do_not_crash(backend: PocketSphinxBackend) -> None:
    search = backend.grammar(
        SttHints(phrases=("check qzxvorder", "zzyzx"), words=("frobnicatorx", "yes"))
    )
    assert search is not None
    grammar = search[1]
    assert "qzxvorder" not in grammar and "zzyzx" not in grammar and "frobnicatorx" not in grammar
    assert "check" in grammar and "yes" in grammar
    assert backend.grammar(SttHints(words=("qqqqzzz",))) is None  # nothing known: full LM
    stream = backend.open(SttHints(words=("qqqqzzz",)))
    stream.feed(np.zeros(FRAME, np.int16))
    assert stream.finalise().final


def test_feed_rejects_non_int16(backend: PocketSphinxBackend) -> None:
    stream = backend.open(SttHints())
    with pytest.raises(TypeError):
        stream.feed(np.zeros(FRAME, np.float32))
    stream.close()


def test_bad_model_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="pocketsphinx") as info:
        PocketSphinxBackend(missing)
    assert str(missing) in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(ModelLoadError, match="no-such-model"):
        load_stt(SttSettings(backend="pocketsphinx", model=missing))


def test_load_stt_pocketsphinx() -> None:
    stt = load_stt(SttSettings(backend="pocketsphinx", pool_size=0))
    assert isinstance(stt, PocketSphinxBackend) and stt.name == "pocketsphinx"
    stt.close()


# ---------------------------------------------------------------- hints_for


def test_hints_for_tools() -> None:
    tools = [
        {
            "name": "check_order",
            "parameters": {
                "type": "object",
                "properties": {
                    "order_id": {"type": "string", "description": "The order reference"},
                    "quantity": {"type": "integer"},
                    "express": {"type": "boolean"},
                    "size": {"type": "string", "enum": ["small", "extra_large"]},
                    "note": {"type": "string"},
                },
            },
        },
        {
            "type": "function",
            "function": {"name": "getWeather", "parameters": {"type": "object", "properties": {}}},
        },
    ]
    hints = hints_for(["Cancel my  reservation"], tools)
    assert hints.phrases == (
        "cancel my reservation",
        "check order",
        "small",
        "extra large",
        "get weather",
    )
    # Argument names are vocabulary for prompts, not phrases for a grammar.
    assert hints.terms == ("order id", "quantity", "express", "size", "note")
    for word in (
        "zero",
        "oh",
        "nine",
        "twenty",
        "ninety",
        "hundred",
        "thousand",
        "a",
        "b",
        "z",
        "yes",
        "no",
    ):
        assert word in hints.words
    assert len(hints.words) == len(set(hints.words))
    assert hints.open_vocabulary


def test_hints_for_plain_string_adds_no_letters() -> None:
    hints = hints_for([], [{"type": "object", "properties": {"video_width": {"type": "string"}}}])
    assert hints.words == () and hints.phrases == ()
