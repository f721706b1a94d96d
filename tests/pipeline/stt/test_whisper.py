"""Tests for the faster-whisper backend with the real default model (Whisper base).

The model is installed by setup (`mediaserver.pipeline.stt.models`); speech is
espeak-ng, resampled to 16 kHz, some of it through the telephone path (8 kHz,
G.711 u-law and back).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from mediaserver.pipeline.settings import SttSettings
from mediaserver.pipeline.stt import STT_RATE, ModelLoadError, SttHints, load_stt
from mediaserver.pipeline.stt import models as stt_models
from mediaserver.pipeline.stt.sphinx import PocketSphinxBackend
from mediaserver.pipeline.stt.whisper import FasterWhisperBackend

Pcm = npt.NDArray[np.int16]
MODEL = stt_models.default_model_dir()

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")


@pytest.fixture(scope="module")
def whisper() -> Iterator[FasterWhisperBackend]:
    problems = stt_models.verify(MODEL)
    assert not problems, f"setup installs the default model: {problems}"
    backend = FasterWhisperBackend(MODEL, beam_size=1, threads=2)
    yield backend
    backend.close()


def words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c == " " else " " for c in text.lower()).split()


def test_transcribes_open_speech(whisper: FasterWhisperBackend, speak: Callable[..., Pcm]) -> None:
    stream = whisper.open(SttHints())
    stream.feed(speak("could you tell me where my order is, the number is five eight three"))
    text = stream.finalise().text
    assert {"where", "my", "order", "number"} <= set(words(text)), text
    assert "583" in text.replace(" ", "") or "five eight three" in text.lower(), text


def test_hints_bias_the_telephone_path(
    whisper: FasterWhisperBackend, speak: Callable[..., Pcm]
) -> None:
    stream = whisper.open(SttHints(phrases=("get weather", "check order")))
    stream.feed(speak("what's the weather like in Berlin today", True))
    assert {"weather", "berlin"} <= set(words(stream.finalise().text))


def test_pause_decodes_speculatively_and_finalise_reuses_it(
    whisper: FasterWhisperBackend, speak: Callable[..., Pcm]
) -> None:
    stream = whisper.open(SttHints())
    stream.feed(speak("is it going to rain in Madrid"))
    before = whisper.transcriptions
    guess = stream.pause()
    assert whisper.transcriptions == before + 1
    assert guess is not None and not guess.final and "madrid" in guess.text.lower()
    stream.feed(np.zeros(STT_RATE // 2, dtype=np.int16))  # the end-of-speech silence
    final = stream.finalise()
    assert final.final and final.text == guess.text
    assert whisper.transcriptions == before + 1  # nothing decoded at the turn's end


def test_resume_discards_the_guess(
    whisper: FasterWhisperBackend, speak: Callable[..., Pcm]
) -> None:
    stream = whisper.open(SttHints())
    stream.feed(speak("is it going to rain"))
    stream.pause()
    stream.resume()
    stream.feed(speak("in Madrid tomorrow"))
    before = whisper.transcriptions
    text = stream.finalise().text
    assert whisper.transcriptions > before
    assert {"rain", "madrid"} <= set(words(text)), text


def test_silence_and_noise_give_no_words(whisper: FasterWhisperBackend) -> None:
    rng = np.random.default_rng(7)
    for audio in (
        np.zeros(STT_RATE * 2, dtype=np.int16),
        (rng.normal(0, 300, STT_RATE * 2)).astype(np.int16),
    ):
        stream = whisper.open(SttHints(phrases=("check order",)))
        stream.feed(audio)
        assert stream.finalise().text == ""


def test_empty_turn(whisper: FasterWhisperBackend) -> None:
    stream = whisper.open(SttHints())
    assert stream.pause() is None
    assert stream.finalise().text == ""


def test_long_turn_is_decoded_in_pieces(
    whisper: FasterWhisperBackend, speak: Callable[..., Pcm]
) -> None:
    sentence = speak("paris is the capital of france")
    silence = lambda seconds: np.zeros(STT_RATE * seconds, dtype=np.int16)  # noqa: E731
    # The second sentence starts past 30 s: one Whisper window could not hear it.
    audio = np.concatenate([silence(24), sentence, silence(6), sentence])
    assert len(audio) - len(sentence) > 30 * STT_RATE
    text = whisper.transcribe(audio.astype(np.float32) / 32768.0)
    # Both pieces are heard (Whisper may repeat a sentence into a piece's silence).
    assert words(text).count("france") >= 2, text


def test_missing_and_corrupt_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"faster-whisper: no model in .*missing"):
        FasterWhisperBackend(tmp_path / "missing")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        shutil.copy(MODEL / name, corrupt / name)
    (corrupt / "model.bin").write_bytes(b"\0not a model" * 100)
    with pytest.raises(ModelLoadError, match=r"faster-whisper: cannot load model .*corrupt"):
        FasterWhisperBackend(corrupt)
    assert stt_models.verify(corrupt) == [f"{corrupt / 'model.bin'} has the wrong sha256 "
                                          "(corrupt or a changed upload)"]  # fmt: skip
    # A configured model that does not load is a start-up error, not a fallback.
    with pytest.raises(ModelLoadError, match="faster-whisper"):
        load_stt(SttSettings(backend="faster-whisper", model=corrupt))


def test_default_model_missing_falls_back_to_pocketsphinx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIASERVER_MODELS", str(tmp_path))
    stt = load_stt(SttSettings(pool_size=0))
    assert isinstance(stt, PocketSphinxBackend)
    stt.close()


def test_default_is_whisper_with_the_installed_model() -> None:
    stt = load_stt(SttSettings(pool_size=1))
    assert isinstance(stt, FasterWhisperBackend) and stt.model == MODEL
    stt.close()
