"""Smart Turn v3: the features, the model from the pipecat-ai wheel, the batcher."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soxr

from mediaserver.call.runtime import PipelineRuntime
from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.pipeline.settings import PipelineSettings
from mediaserver.pipeline.turn import SmartTurnModel, TurnBatcher
from mediaserver.pipeline.turn.features import FRAMES, MELS, WINDOW_SAMPLES, fit_window, log_mel
from mediaserver.pipeline.vad.silero import default_model_path as silero_path
from tests.peers import read_wav_mono, speech_wav


@pytest.fixture(scope="module")
def model() -> SmartTurnModel:
    return SmartTurnModel()


def spoken(text: str, folder: Path, silence: float = 0.2) -> np.ndarray:
    """`text` from espeak-ng over 8 kHz, at 16 kHz, then `silence` seconds."""
    pcm, rate = read_wav_mono(speech_wav(text, folder))
    audio = soxr.resample(pcm.astype(np.float32) / 32768, rate, 16000)
    return np.concatenate([audio, np.zeros(int(silence * 16000), np.float32)])


def test_the_window_is_the_last_eight_seconds_zero_padded_in_front() -> None:
    short = np.ones(16000, np.float32)
    window = fit_window(short)
    assert window.shape == (WINDOW_SAMPLES,)
    assert not window[:-16000].any() and window[-16000:].all()
    long = np.arange(WINDOW_SAMPLES + 5, dtype=np.float32)
    assert fit_window(long)[0] == 5


def test_a_tone_lights_the_mel_band_of_its_pitch() -> None:
    t = np.arange(WINDOW_SAMPLES) / 16000
    low = log_mel((0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32))
    high = log_mel((0.3 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32))
    assert low.shape == (MELS, FRAMES) and low.dtype == np.float32
    # Slaney mels (linear to 1 kHz, then log; 8 kHz is 45.2 mels over 81 steps):
    # 300 Hz is 4.5 mels, band 7; 3 kHz is 30.9 mels, band 54.
    assert abs(int(np.argmax(low[:, 400])) - 7) <= 1
    assert abs(int(np.argmax(high[:, 400])) - 54) <= 1
    # Clamped to 8 decades below the peak, scaled to about [-1, 1].
    assert low.max() - low.min() <= 2.0 + 1e-6
    with pytest.raises(ValueError, match="128000"):
        log_mel(np.zeros(100, np.float32))


def test_the_model_hears_a_finished_question(model: SmartTurnModel, tmp_path: Path) -> None:
    assert model.predict(spoken("Where is my order?", tmp_path)) > 0.9
    # int16 and float audio are the same to it.
    audio = spoken("Where is my order?", tmp_path)
    as_int16 = (audio * 32767).astype(np.int16)
    assert model.predict(as_int16) == pytest.approx(model.predict(audio), abs=0.01)


def test_checks_of_many_calls_share_one_inference(model: SmartTurnModel, tmp_path: Path) -> None:
    audio = spoken("Where is my order?", tmp_path)

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = TurnBatcher(model, pool)
            probs = await asyncio.gather(*(batcher.check(audio) for _ in range(3)))
            assert batcher.stats.batches == 1 and batcher.stats.checks == 3
            assert all(p == pytest.approx(probs[0], abs=1e-4) for p in probs)
            assert batcher.stats.audio_s == pytest.approx(3 * len(audio) / 16000)

    asyncio.run(main())


def test_a_failing_inference_fails_the_checks_and_the_next_one_runs(
    model: SmartTurnModel, tmp_path: Path
) -> None:
    class Broken(SmartTurnModel):
        fail = True

        def probabilities(self, features: np.ndarray) -> np.ndarray:
            if Broken.fail:
                Broken.fail = False
                raise RuntimeError("onnxruntime exploded")
            return super().probabilities(features)

    audio = spoken("Where is my order?", tmp_path)

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = TurnBatcher(Broken(model.path), pool)
            with pytest.raises(RuntimeError, match="exploded"):
                await batcher.check(audio)
            assert batcher.stats.errors == 1
            assert await batcher.check(audio) > 0.9

    asyncio.run(main())


def test_a_missing_corrupt_or_foreign_model_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelLoadError, match=r"^smart_turn: turn model file not found: .*nope"):
        SmartTurnModel(missing)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(ModelLoadError, match=r"^smart_turn: cannot load turn model .*corrupt"):
        SmartTurnModel(corrupt)
    with pytest.raises(ModelLoadError, match="is not a Smart Turn v3 model"):
        SmartTurnModel(silero_path())


def test_the_runtime_fails_or_falls_back_to_silence_as_configured(tmp_path: Path) -> None:
    def settings(on_error: str) -> PipelineSettings:
        return PipelineSettings.model_validate(
            {
                "stt": {"backend": "pocketsphinx", "pool_size": 0},
                "turn": {"smart_turn": {"model": str(tmp_path / "x.onnx"), "on_error": on_error}},
            }
        )

    with pytest.raises(ModelLoadError, match=r"smart_turn: .*x\.onnx"):
        PipelineRuntime(settings("fail"))

    async def main() -> None:
        runtime = PipelineRuntime(settings("silence"))
        try:
            assert runtime.turns is None
            assert runtime.turns_for(runtime.settings.turn) is None
        finally:
            await runtime.aclose()

    asyncio.run(main())
