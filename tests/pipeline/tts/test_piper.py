"""Tests for mediaserver.pipeline.tts.piper (the optional piper-tts extra).

piper-tts is optional and not installed in the default environment: the real
voice test is skipped then, with the reason. The loading and streaming code
is exercised against a stand-in `piper` module with both package APIs (1.2:
`synthesize_stream_raw`, 1.3+: `synthesize` yielding AudioChunk objects).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediaserver.pipeline.settings import TtsSettings
from mediaserver.pipeline.stt.base import ModelLoadError
from mediaserver.pipeline.tts import TtsError, load_tts
from mediaserver.pipeline.tts.piper import PiperBackend

HAVE_PIPER = importlib.util.find_spec("piper") is not None
NO_PIPER = "piper-tts is not installed (optional extra: pip install 'mediaserver[piper]')"


def voice_files(tmp_path: Path) -> Path:
    model = tmp_path / "en_US-test-low.onnx"
    model.write_bytes(b"onnx")
    (tmp_path / "en_US-test-low.onnx.json").write_text("{}")
    return model


@pytest.mark.skipif(HAVE_PIPER, reason="piper-tts is installed")
def test_missing_package_is_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"piper: .*piper-tts.*en_US-test-low\.onnx"):
        PiperBackend(voice_files(tmp_path))
    with pytest.raises(ModelLoadError, match=r"piper: .*/nowhere/voice\.onnx"):
        load_tts(TtsSettings(backend="piper", voice="/nowhere/voice.onnx"))


@pytest.mark.skipif(not HAVE_PIPER, reason=NO_PIPER)
def test_missing_voice_is_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"piper: voice model .*nowhere\.onnx does not exist"):
        PiperBackend(tmp_path / "nowhere.onnx")


@pytest.mark.skipif(not HAVE_PIPER, reason=NO_PIPER)
def test_real_voice() -> None:
    voice = os.environ.get("MEDIASERVER_PIPER_VOICE")
    if not voice:
        pytest.skip("set MEDIASERVER_PIPER_VOICE to a piper voice (.onnx) to test it")
    tts = PiperBackend(Path(voice))
    text = "Hello there, how are you today?"
    chunks = list(tts.synthesize(text))
    pcm = np.concatenate([c.pcm for c in chunks])
    assert pcm.dtype == np.int16
    assert 0.8 < len(pcm) / tts.sample_rate < 4
    assert all((c.start, c.end) == (0, len(text)) for c in chunks)


# ---------------------------------------------------------------- stand-in module


@dataclass
class FakeConfig:
    sample_rate: int = 16000
    speaker_id_map: dict[str, int] = field(default_factory=dict)


@dataclass
class FakeAudioChunk:
    audio_int16_array: np.ndarray


class FakeVoice12:
    """piper-tts 1.2: raw int16 bytes per sentence."""

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.calls: list[tuple[str, int | None]] = []

    def synthesize_stream_raw(self, text: str, speaker_id: int | None = None) -> Iterator[bytes]:
        self.calls.append((text, speaker_id))
        for n, _sentence in enumerate(s for s in text.split(".") if s.strip()):
            if "boom" in text:
                raise RuntimeError("onnx exploded")
            yield np.full(160 * (n + 1), n + 1, dtype=np.int16).tobytes()


class FakeVoice13:
    """piper-tts 1.3+: AudioChunk objects from synthesize()."""

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.calls: list[tuple[str, Any]] = []

    def synthesize(self, text: str, syn_config: Any = None) -> Iterator[FakeAudioChunk]:
        self.calls.append((text, syn_config.speaker_id))
        for n, _sentence in enumerate(s for s in text.split(".") if s.strip()):
            yield FakeAudioChunk(np.full(80, n + 1, dtype=np.int16))


@dataclass
class FakeSynthesisConfig:
    speaker_id: int | None = None


def install_fake(monkeypatch: pytest.MonkeyPatch, voice_class: type) -> list[str]:
    loaded: list[str] = []
    module = types.ModuleType("piper")

    class PiperVoice:
        @staticmethod
        def load(path: str) -> Any:
            loaded.append(path)
            if "broken" in path:
                raise ValueError("not an onnx model")
            return voice_class(FakeConfig(22050, {"alice": 0, "bob": 1}))

    module.PiperVoice = PiperVoice  # type: ignore[attr-defined]
    module.SynthesisConfig = FakeSynthesisConfig  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "piper", module)
    return loaded


@pytest.mark.parametrize("voice_class", [FakeVoice12, FakeVoice13])
def test_one_chunk_per_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, voice_class: type
) -> None:
    loaded = install_fake(monkeypatch, voice_class)
    model = voice_files(tmp_path)
    tts = load_tts(TtsSettings(backend="piper", voice=str(model)))
    assert isinstance(tts, PiperBackend)
    assert loaded == [str(model)]
    assert (tts.name, tts.sample_rate) == ("piper", 22050)
    assert tts.voices() == ["alice", "bob"]
    text = "First one. Second one."
    chunks = list(tts.synthesize(text))
    assert len(chunks) == 2
    assert [c.pcm.dtype for c in chunks] == [np.int16, np.int16]
    assert [int(c.pcm[0]) for c in chunks] == [1, 2]
    assert all((c.start, c.end) == (0, len(text)) for c in chunks)
    assert list(tts.synthesize("   ")) == []
    # A speaker of a multi-speaker voice per call; unknown ones are refused.
    list(tts.synthesize("Hi.", voice="bob"))
    assert tts._voice.calls[-1] == ("Hi.", 1)
    with pytest.raises(TtsError, match="no speaker 'carol'"):
        list(tts.synthesize("Hi.", voice="carol"))


def test_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake(monkeypatch, FakeVoice12)
    model = voice_files(tmp_path)
    with pytest.raises(TtsError, match="piper: synthesis failed: onnx exploded"):
        list(PiperBackend(model).synthesize("boom."))
    with pytest.raises(ModelLoadError, match=r"piper: voice model .*nowhere\.onnx does not exist"):
        PiperBackend(tmp_path / "nowhere.onnx")
    (tmp_path / "en_US-test-low.onnx.json").unlink()
    with pytest.raises(ModelLoadError, match=r"piper: voice config .*\.onnx\.json"):
        PiperBackend(model)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"")
    (tmp_path / "broken.onnx.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"piper: cannot load voice .*broken\.onnx"):
        PiperBackend(broken)
