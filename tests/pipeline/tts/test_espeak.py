"""Tests for mediaserver.pipeline.tts.espeak (libespeak-ng in-process) and load_tts.

They use the real library from the espeakng-loader wheel; one engine serves
the whole process (libespeak-ng is a singleton), so tests share a backend.
"""

from __future__ import annotations

import ctypes.util
import itertools
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mediaserver.pipeline.settings import TtsSettings
from mediaserver.pipeline.stt.base import ModelLoadError
from mediaserver.pipeline.tts import TtsBackend, TtsChunk, TtsError, espeak, load_tts
from mediaserver.pipeline.tts.espeak import EspeakBackend, _Word, word_chunks

HELLO = "Hello there, how are you today?"
TEN_WORDS = "The quick brown fox jumps over the lazy sleeping dog."
SILENT = espeak._SILENT


@pytest.fixture(scope="module")
def tts() -> EspeakBackend:
    return EspeakBackend()


def words_of(text: str) -> list[str]:
    """Whitespace tokens without edge punctuation: what a chunk span should be."""
    return [w for w in (t.strip(SILENT) for t in text.split()) if w]


def synth(tts: TtsBackend, text: str, voice: str | None = None) -> list[TtsChunk]:
    return list(tts.synthesize(text, voice))


def audio(chunks: list[TtsChunk]) -> np.ndarray:
    return np.concatenate([c.pcm for c in chunks])


def similar(a: list[TtsChunk], b: list[TtsChunk], sample_rate: int = 22050) -> bool:
    """Same words, and each word's audio as long within 20 ms.

    espeak-ng keeps wave-generator state between syntheses, so the same text
    is not bit-identical twice (a few samples longer or shorter).
    """
    return [(c.start, c.end) for c in a] == [(c.start, c.end) for c in b] and all(
        abs(len(x.pcm) - len(y.pcm)) <= sample_rate // 50 for x, y in zip(a, b)
    )


def assert_chunks_cover(text: str, chunks: list[TtsChunk], exact: bool = True) -> None:
    """Text order, word spans (exact: one word each), every word voiced, leading pause at 0."""
    spans = [(c.start, c.end) for c in chunks]
    assert spans == sorted(spans)
    for a, b in itertools.pairwise(spans):
        assert a[1] <= b[0] or a == (0, 0)
    pauses = [c for c in chunks if c.start == c.end]
    assert all((c.start, c.end) == (0, 0) for c in pauses)
    assert pauses == chunks[: len(pauses)]  # only the leading audio is a pause
    voiced = [text[c.start : c.end] for c in chunks if c.end > c.start]
    if exact:
        assert voiced == words_of(text)
    else:
        assert [w for span in voiced for w in words_of(span)] == words_of(text)
        assert all(span == span.strip(SILENT) for span in voiced)
    assert all(len(c.pcm) > 0 and c.pcm.dtype == np.int16 and c.pcm.ndim == 1 for c in chunks)


# ---------------------------------------------------------------- synthesis


def test_hello_is_plausible_speech(tts: EspeakBackend) -> None:
    assert tts.name == "espeak-ng"
    assert tts.sample_rate == 22050
    chunks = synth(tts, HELLO)
    pcm = audio(chunks)
    assert pcm.dtype == np.int16
    assert 1.0 <= len(pcm) / tts.sample_rate <= 3.0
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    assert rms > 500
    assert int(np.abs(pcm).max()) > 5000


def test_one_chunk_per_word_with_exact_spans(tts: EspeakBackend) -> None:
    chunks = synth(tts, HELLO)
    assert_chunks_cover(HELLO, chunks)
    assert [HELLO[c.start : c.end] for c in chunks] == [
        "Hello",
        "there",
        "how",
        "are",
        "you",
        "today",
    ]
    # Every word gets a plausible share of the audio (not all in one chunk).
    assert all(len(c.pcm) > 0.05 * tts.sample_rate for c in chunks)


def test_chunks_concatenate_to_the_whole_audio(tts: EspeakBackend) -> None:
    for text in (HELLO, TEN_WORDS, '  "Quoted," she said -- ok...'):
        with espeak._LOCK:
            assert espeak._ENGINE is not None
            pcm, events = espeak._ENGINE.synthesize(text, "en-us", 175)
        assert len(events) >= len(words_of(text))
        chunks = word_chunks(text, pcm, tts.sample_rate, events)
        assert_chunks_cover(text, chunks)
        np.testing.assert_array_equal(audio(chunks), pcm)


def test_non_ascii_offsets(tts: EspeakBackend) -> None:
    # espeak counts characters of the decoded UTF-8, like Python str offsets:
    # accents (2 bytes) and an emoji (4 bytes, outside the BMP) shift nothing.
    for text, voice in (
        ("Le café était très bon, à bientôt.", "fr"),
        ("Ein Straßenbahn-Ticket für München, bitte.", "de"),
        ("I love café 😀 and naïve crème brûlée.", None),
    ):
        chunks = synth(tts, text, voice)
        assert_chunks_cover(text, chunks)
    chunks = synth(tts, "café au lait")
    assert [(c.start, c.end) for c in chunks if c.end > c.start] == [(0, 4), (5, 7), (8, 12)]
    # After a French elision espeak's positions lag behind the text: the
    # words it misplaces share a chunk with the word before, none is lost.
    text = "Le café était très bon, n'est-ce pas?"
    chunks = synth(tts, text, "fr")
    assert_chunks_cover(text, chunks, exact=False)
    assert [text[c.start : c.end] for c in chunks][:5] == ["Le", "café", "était", "très", "bon"]


def test_expanded_text_maps_to_whole_tokens(tts: EspeakBackend) -> None:
    # Numbers, abbreviations, dashes and symbols become several spoken words
    # (and espeak's positions for them are approximate): one chunk per token.
    text = "It costs $1,000 or 3.5 percent, e.g. Mr. Smith's well-known -- café\nsecond line"
    chunks = synth(tts, text)
    assert_chunks_cover(text, chunks)
    assert "$1,000" in [text[c.start : c.end] for c in chunks]


def test_voices_differ_and_switch_per_call(tts: EspeakBackend) -> None:
    us = synth(tts, HELLO)
    gb = synth(tts, HELLO, "en-gb")
    assert_chunks_cover(HELLO, gb)
    # Different voices: word durations differ beyond espeak's run-to-run jitter.
    assert not similar(us, gb)
    assert abs(len(audio(us)) - len(audio(gb))) > 0.02 * len(audio(us))
    # The per-call voice does not stick: the default comes back.
    assert similar(synth(tts, HELLO), us)
    # File names, language codes and variants are all accepted.
    for voice in ("en", "en-US", "en-gb-x-rp", "en-us+f3", "English (America)"):
        assert len(audio(synth(tts, "Yes.", voice))) > 0


def test_voices_lists_languages(tts: EspeakBackend) -> None:
    voices = tts.voices()
    assert {"en-us", "en-gb", "en", "fr", "fr-fr", "de"} <= set(voices)
    assert voices == sorted(voices)


def test_unknown_voice_is_tts_error(tts: EspeakBackend) -> None:
    with pytest.raises(TtsError, match="unknown voice 'xx-nowhere'"):
        synth(tts, HELLO, "xx-nowhere")
    # The failed switch leaves the backend usable with its default.
    assert_chunks_cover(HELLO, synth(tts, HELLO))
    with pytest.raises(ModelLoadError, match=r"espeak-ng.*xx-nowhere"):
        EspeakBackend(voice="xx-nowhere")


def test_rate_changes_duration() -> None:
    slow = EspeakBackend(rate=120)
    fast = EspeakBackend(rate=300)
    n_slow = len(audio(synth(slow, TEN_WORDS)))
    n_fast = len(audio(synth(fast, TEN_WORDS)))
    assert n_fast < 0.7 * n_slow


def test_empty_and_wordless_text(tts: EspeakBackend) -> None:
    assert synth(tts, "") == []
    for text in ("   ", "...", "-- !"):
        chunks = synth(tts, text)
        assert all((c.start, c.end) == (0, 0) for c in chunks)
    # A NUL would cut the C string short; it is read as a space.
    assert_chunks_cover("one\0two", synth(tts, "one\0two"))


def test_concurrent_synthesis_matches_sequential(tts: EspeakBackend) -> None:
    jobs = [
        (HELLO, None),
        (TEN_WORDS, "en-gb"),
        ("Le café était très bon.", "fr"),
        ("Four score and seven years ago.", None),
    ]
    expected = [synth(tts, text, voice) for text, voice in jobs]
    results: dict[tuple[int, int], list[TtsChunk]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def worker(k: int) -> None:
        try:
            start.wait()
            for rep in range(5):
                text, voice = jobs[(k + rep) % len(jobs)]
                results[(k, rep)] = synth(tts, text, voice)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(results) == 5 * len(jobs)
    for (k, rep), chunks in results.items():
        text, _ = jobs[(k + rep) % len(jobs)]
        assert_chunks_cover(text, chunks)
        assert similar(chunks, expected[(k + rep) % len(jobs)])


def test_first_chunk_latency_and_real_time_factor(tts: EspeakBackend) -> None:
    list(tts.synthesize(TEN_WORDS))  # warm the voice
    first: list[float] = []
    total: list[float] = []
    seconds = 0.0
    for _ in range(20):
        t0 = time.perf_counter()
        gen = tts.synthesize(TEN_WORDS)
        head = next(gen)
        first.append(time.perf_counter() - t0)
        rest = list(gen)
        total.append(time.perf_counter() - t0)
        seconds = (len(head.pcm) + sum(len(c.pcm) for c in rest)) / tts.sample_rate
    rtf = statistics.median(total) / seconds
    print(
        f"\nespeak-ng, {len(TEN_WORDS.split())} words ({seconds:.2f} s audio): "
        f"first chunk {statistics.median(first) * 1000:.2f} ms median "
        f"(max {max(first) * 1000:.2f} ms), whole clause {statistics.median(total) * 1000:.2f} ms, "
        f"real-time factor {rtf:.4f} ({1 / rtf:.0f}x real time)"
    )


# ---------------------------------------------------------------- loading


def test_missing_library_is_model_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = Path("/nonexistent/libespeak-ng.so")
    # Loading is once per process: pretend it has not happened yet.
    monkeypatch.setattr(espeak, "_ENGINE", None)
    with pytest.raises(ModelLoadError, match=r"espeak-ng.*tried: /nonexistent/libespeak-ng\.so"):
        EspeakBackend(library=missing)


def test_nothing_found_names_the_places_searched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(espeak, "_ENGINE", None)
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(ModelLoadError, match=r"espeak-ng.*espeakng_loader.*find_library"):
        EspeakBackend()


def test_second_library_is_refused(tts: EspeakBackend) -> None:
    with pytest.raises(ModelLoadError, match="espeak-ng: already initialised"):
        EspeakBackend(library=Path("/other/libespeak-ng.so"))


def test_load_tts_espeak() -> None:
    backend = load_tts(TtsSettings(voice="en-gb", rate=200))
    assert isinstance(backend, EspeakBackend)
    assert (backend.voice, backend.rate) == ("en-gb", 200)
    assert_chunks_cover(HELLO, list(backend.synthesize(HELLO)))
    with pytest.raises(ModelLoadError, match="espeak-ng"):
        load_tts(TtsSettings(voice="xx-nowhere"))


@pytest.mark.skipif(
    ctypes.util.find_library("espeak-ng") is None, reason="no system libespeak-ng installed"
)
def test_system_library_in_a_fresh_process() -> None:
    # The system's libespeak-ng (Debian: 1.51) must work with the same struct
    # layout; a fresh process because the library is a per-process singleton.
    script = (
        "import ctypes.util, pathlib\n"
        "from mediaserver.pipeline.tts.espeak import EspeakBackend\n"
        "lib = ctypes.util.find_library('espeak-ng')\n"
        "b = EspeakBackend(library=pathlib.Path(lib))\n"
        f"t = {HELLO!r} + ' café'\n"
        "print(b.sample_rate, [t[c.start:c.end] for c in b.synthesize(t) if c.end > c.start])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).parents[3],
        check=True,
    ).stdout
    assert out.strip() == "22050 ['Hello', 'there', 'how', 'are', 'you', 'today', 'café']"


# ---------------------------------------------------------------- word_chunks


def cut(text: str, total: int, events: list[tuple[int, int]]) -> list[tuple[int, int, str]]:
    """word_chunks on a ramp at 1000 Hz (1 sample per ms): (first sample, length, span text)."""
    pcm = np.arange(total, dtype=np.int16)
    words = [_Word(pos, 1, ms) for pos, ms in events]
    chunks = word_chunks(text, pcm, 1000, words)
    np.testing.assert_array_equal(np.concatenate([c.pcm for c in chunks]), pcm)
    return [(int(c.pcm[0]), len(c.pcm), text[c.start : c.end]) for c in chunks]


def test_word_chunks_cut_at_word_starts() -> None:
    assert cut("one two, three.", 100, [(1, 10), (5, 40), (10, 70)]) == [
        (0, 10, ""),
        (10, 30, "one"),
        (40, 30, "two"),
        (70, 30, "three"),
    ]


def test_word_chunks_snap_approximate_positions() -> None:
    text = "pay $1,000 -- now"
    # Several events inside "$1,000", one on the dash (espeak's position for
    # "now"), and one in the space after a token.
    assert cut(text, 100, [(1, 0), (5, 10), (6, 20), (8, 30), (12, 60)]) == [
        (0, 10, "pay"),
        (10, 50, "$1,000"),
        (60, 40, "now"),
    ]
    assert cut("a 😀 b", 90, [(1, 0), (3, 30), (4, 50), (5, 70)]) == [
        (0, 30, "a"),
        (30, 40, "😀"),
        (70, 20, "b"),
    ]


def test_word_chunks_never_drop_words() -> None:
    # No event for "two": the chunk of "one" voices it too.
    assert cut("one two three", 60, [(1, 0), (9, 30)]) == [(0, 30, "one two"), (30, 30, "three")]
    # Words before the first event belong to the first chunk.
    assert cut("one two three", 60, [(5, 0), (9, 30)]) == [(0, 30, "one two"), (30, 30, "three")]
    # A word without audio shares the next word's chunk; at the end, the last one's.
    assert cut("a b c", 30, [(1, 0), (3, 10), (5, 10)]) == [(0, 10, "a"), (10, 20, "b c")]
    assert cut("a b c", 30, [(1, 0), (3, 10), (5, 30)]) == [(0, 10, "a"), (10, 20, "b c")]
    # Positions out of range, going backwards, or beyond the audio are clamped.
    assert cut("a b", 30, [(0, -5), (99, 500)]) == [(0, 30, "a b")]
    # No events at all: one chunk for all words; no words: a pause.
    assert cut("a b", 30, []) == [(0, 30, "a b")]
    assert cut("...", 30, [(1, 0)]) == [(0, 30, "")]
    assert word_chunks("a", np.zeros(0, np.int16), 1000, [_Word(1, 1, 0)]) == []


def test_words_of_matches_the_span_rule() -> None:
    assert words_of('"Quoted," she said -- ok...') == ["Quoted", "she", "said", "ok"]
    assert not set("$%&#") & set(SILENT)  # symbols that are read out stay in spans
