"""Tests for mediaserver.pipeline.vad.silero: the real silero model from the wheel.

Speech is synthesised offline with the espeak-ng command line and resampled to
16 kHz. Every asyncio wait is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import wave
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import onnxruntime  # type: ignore[import-untyped]
import pytest

from mediaserver.codecs.resample import resample
from mediaserver.pipeline.settings import VadSettings
from mediaserver.pipeline.stt.base import ModelLoadError
from mediaserver.pipeline.vad import (
    CHUNK_SAMPLES,
    CHUNK_SECONDS,
    CONTEXT_SAMPLES,
    SAMPLE_RATE,
    SileroModel,
    SpeechDetector,
    SpeechStarted,
    VadBatcher,
    default_model_path,
)

Pcm = npt.NDArray[np.int16]
T = TypeVar("T")

PIECE = 320  # 20 ms at 16 kHz, as the RTP path delivers it
LEAD = 1.0  # seconds of silence before the speech
TAIL = 1.0  # and after it
WAIT = 10.0  # bound on every asyncio wait


@pytest.fixture(scope="module")
def model() -> SileroModel:
    return SileroModel()


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> Pcm:
    """'hello there how are you' at 16 kHz, trimmed to the speech."""
    binary = shutil.which("espeak-ng")
    assert binary is not None, "espeak-ng is required for the VAD tests"
    path = tmp_path_factory.mktemp("vad") / "speech.wav"
    subprocess.run([binary, "-w", str(path), "hello there how are you"], check=True, timeout=30)
    with wave.open(str(path)) as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
    pcm = resample(pcm, rate, SAMPLE_RATE)
    # espeak-ng pads its output with silence; keep the speech alone so the
    # tests know where it is.
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
    return pcm[loud[0] : loud[-1] + 1]


@pytest.fixture(scope="module")
def speech(spoken: Pcm) -> Pcm:
    """The speech with LEAD seconds of silence before and TAIL after."""
    return np.concatenate(
        [
            np.zeros(int(LEAD * SAMPLE_RATE), np.int16),
            spoken,
            np.zeros(int(TAIL * SAMPLE_RATE), np.int16),
        ]
    )


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(2)
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, WAIT)

    return asyncio.run(bounded())


def chunk_index(seconds: float) -> int:
    return int(seconds / CHUNK_SECONDS)


# ---------------------------------------------------------------- model


def test_default_model_path_without_importing_the_package() -> None:
    path = default_model_path()
    assert path.is_file()
    assert path.name == "silero_vad.onnx" and path.parent.name == "data"
    assert path.parent.parent.name == "silero_vad"
    # Importing silero_vad would import torch (not installed).
    assert "silero_vad" not in sys.modules


def test_missing_model_names_backend_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "silero_vad.onnx"
    with pytest.raises(ModelLoadError) as info:
        SileroModel(missing)
    message = str(info.value)
    assert "silero" in message and str(missing) in message
    assert "\n" not in message


def test_unloadable_model_names_backend_and_path(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not an onnx model" * 10)
    with pytest.raises(ModelLoadError) as info:
        SileroModel(garbage)
    message = str(info.value)
    assert message.startswith("silero:") and str(garbage) in message
    assert "\n" not in message


def test_speech_high_silence_low(model: SileroModel, spoken: Pcm, speech: Pcm) -> None:
    probs = model.probabilities(speech)
    assert len(probs) == len(speech) // CHUNK_SAMPLES
    speech_end = LEAD + len(spoken) / SAMPLE_RATE
    # Chunks well inside the leading and trailing silence.
    assert probs[: chunk_index(LEAD) - 2].max() < 0.1
    assert probs[chunk_index(speech_end + 0.3) :].max() < 0.1
    # Inside the speech.
    inside = probs[chunk_index(LEAD + 0.1) : chunk_index(speech_end - 0.1)]
    assert np.median(inside) > 0.9
    assert inside.min() > 0.5


def test_low_white_noise_is_not_speech(model: SileroModel) -> None:
    noise = np.random.default_rng(7).normal(0.0, 100.0, 2 * SAMPLE_RATE)  # about -50 dBFS
    probs = model.probabilities(noise.astype(np.int16))
    assert probs.max() < 0.35


def upstream_forward(path: Path, pcm: Pcm) -> npt.NDArray[np.float32]:
    """A transcription of silero_vad's OnnxWrapper.audio_forward (numpy instead of torch)."""
    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(path), providers=["CPUExecutionProvider"], sess_options=opts
    )
    x = (pcm.astype(np.float32) / 32768.0)[None, :]  # torchaudio's normalisation
    pad = -x.shape[1] % 512
    x = np.pad(x, ((0, 0), (0, pad)))
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, 64), np.float32)
    outs = []
    for i in range(0, x.shape[1], 512):
        chunk = np.concatenate([context, x[:, i : i + 512]], axis=1)
        out, state = session.run(
            None, {"input": chunk, "state": state, "sr": np.array(16000, dtype="int64")}
        )
        context = chunk[..., -64:]
        outs.append(out)
    probs: npt.NDArray[np.float32] = np.concatenate(outs, axis=1)[0]
    return probs


def test_matches_upstream_wrapper(model: SileroModel, speech: Pcm) -> None:
    pcm = speech[: len(speech) // CHUNK_SAMPLES * CHUNK_SAMPLES]
    expected = upstream_forward(model.path, pcm)
    np.testing.assert_allclose(model.probabilities(pcm), expected, atol=1e-6)
    # The context matters: without it (zeros each time) the probabilities differ.
    state = SileroModel.initial_state(1)
    zero_context = np.zeros((1, CONTEXT_SAMPLES), np.float32)
    without = []
    for i in range(0, len(pcm), CHUNK_SAMPLES):
        x = (pcm[i : i + CHUNK_SAMPLES].astype(np.float32) / 32768.0)[None, :]
        prob, state = model.infer(x, zero_context, state)
        without.append(float(prob[0]))
    assert np.abs(np.array(without) - expected).max() > 1e-3


def test_infer_rows_are_independent(model: SileroModel, speech: Pcm) -> None:
    rng = np.random.default_rng(1)
    start = int((LEAD + 0.3) * SAMPLE_RATE)
    chunks = np.stack(
        [
            speech[start : start + CHUNK_SAMPLES],
            rng.normal(0, 300, CHUNK_SAMPLES),
            speech[start + 4000 : start + 4000 + CHUNK_SAMPLES],
        ]
    ).astype(np.float32) / np.float32(32768.0)
    contexts = (rng.normal(0, 0.01, (3, CONTEXT_SAMPLES))).astype(np.float32)
    states = rng.normal(0, 0.1, (2, 3, 128)).astype(np.float32)
    probs, new_states = model.infer(chunks, contexts, states)
    assert probs.shape == (3,) and new_states.shape == (2, 3, 128)
    for i in range(3):
        alone, alone_state = model.infer(
            chunks[i : i + 1], contexts[i : i + 1], states[:, i : i + 1]
        )
        assert probs[i] == pytest.approx(float(alone[0]), abs=1e-5)
        np.testing.assert_allclose(new_states[:, i : i + 1], alone_state, atol=1e-5)
    with pytest.raises(ValueError):
        model.infer(chunks[:, :500], contexts, states)
    with pytest.raises(ValueError):
        model.infer(chunks, contexts[:2], states)


# ---------------------------------------------------------------- batcher


def stream_audio(speech: Pcm, k: int) -> Pcm:
    """A different signal per stream: shifted, scaled, with a little noise."""
    rng = np.random.default_rng(100 + k)
    shifted = np.concatenate([np.zeros(k * 211, np.int16), speech])
    gain = 0.3 + 0.035 * k
    noisy = shifted * gain + rng.normal(0.0, 20.0, len(shifted))
    return np.clip(np.rint(noisy), -32768, 32767).astype(np.int16)


Recorded = dict[int, list[tuple[float, float]]]


def recorder(records: Recorded, k: int, threads: set[int]) -> Callable[[float, float], None]:
    records[k] = []

    def on_prob(media_time: float, prob: float) -> None:
        threads.add(threading.get_ident())
        records[k].append((media_time, prob))

    return on_prob


def check_against_sequential(
    model: SileroModel, audios: list[Pcm], records: Recorded, t0: dict[int, float]
) -> int:
    total = 0
    for k, audio in enumerate(audios):
        expected = model.probabilities(audio)
        got = records[k]
        assert len(got) == len(expected)
        times = np.array([t for t, _ in got])
        probs = np.array([p for _, p in got])
        np.testing.assert_allclose(probs, expected, atol=1e-4)
        ends = t0[k] + CHUNK_SECONDS * np.arange(1, len(expected) + 1)
        np.testing.assert_allclose(times, ends, atol=1e-9)
        total += len(expected)
    return total


def test_batched_equals_sequential(
    model: SileroModel, speech: Pcm, executor: ThreadPoolExecutor
) -> None:
    streams = 20
    audios = [stream_audio(speech, k)[: 2 * SAMPLE_RATE] for k in range(streams)]
    records: Recorded = {}
    threads: set[int] = set()
    t0 = {k: 100.0 + k for k in range(streams)}

    async def main() -> VadBatcher:
        batcher = VadBatcher(model, executor, VadSettings(batch_period=0.008))
        vads = [batcher.open(recorder(records, k, threads)) for k in range(streams)]
        pieces = max(len(a) for a in audios) // PIECE
        for j in range(pieces):
            # One 20 ms packet per call per tick, ticks faster than real time.
            for k, vad in enumerate(vads):
                vad.push(audios[k][j * PIECE : (j + 1) * PIECE], t0[k] + j * PIECE / SAMPLE_RATE)
            await asyncio.sleep(0.001)
        await batcher.wait_idle()
        return batcher

    batcher = run(main())
    assert threads == {threading.get_ident()}  # callbacks on the loop thread
    total = check_against_sequential(model, audios, records, t0)
    stats = batcher.stats
    assert stats.chunks == total
    assert stats.errors == 0 and stats.gated == 0
    assert stats.max_batch == streams
    assert stats.inferences <= total / 10
    assert stats.batches < stats.inferences + 1


def test_several_chunks_per_stream_in_one_batch(
    model: SileroModel, speech: Pcm, executor: ThreadPoolExecutor
) -> None:
    streams = 5
    audios = [stream_audio(speech, k)[: SAMPLE_RATE + 1000] for k in range(streams)]
    records: Recorded = {}
    threads: set[int] = set()
    t0 = {k: 0.0 for k in range(streams)}

    async def main() -> VadBatcher:
        batcher = VadBatcher(model, executor, VadSettings())
        for k, audio in enumerate(audios):
            # Whole seconds at once (e.g. a burst after a jitter-buffer stall).
            batcher.open(recorder(records, k, threads)).push(audio, t0[k])
        await batcher.wait_idle()
        return batcher

    batcher = run(main())
    check_against_sequential(model, audios, records, t0)
    assert batcher.stats.batches == 1
    assert batcher.stats.inferences == len(audios[0]) // CHUNK_SAMPLES


def test_close_and_reset(model: SileroModel, speech: Pcm, executor: ThreadPoolExecutor) -> None:
    records: Recorded = {}
    threads: set[int] = set()
    audio = speech[: SAMPLE_RATE // 2]

    async def main() -> None:
        batcher = VadBatcher(model, executor, VadSettings())
        closed = batcher.open(recorder(records, 0, threads))
        reset = batcher.open(recorder(records, 1, threads))
        kept = batcher.open(recorder(records, 2, threads))
        for vad in (closed, reset, kept):
            vad.push(audio, 0.0)
        closed.close()
        reset.reset()
        closed.push(audio, 1.0)  # ignored after close
        await batcher.wait_idle()
        assert records[0] == [] and records[1] == []
        assert len(records[2]) == len(audio) // CHUNK_SAMPLES
        # After a reset the stream starts afresh: same results as a new stream.
        reset.push(audio, 5.0)
        await batcher.wait_idle()
        np.testing.assert_allclose(
            [p for _, p in records[1]], [p for _, p in records[2]], atol=1e-4
        )
        assert records[1][0][0] == pytest.approx(5.0 + CHUNK_SECONDS)
        batcher.close()

    run(main())


def test_callback_errors_do_not_stop_other_streams(
    model: SileroModel, speech: Pcm, executor: ThreadPoolExecutor
) -> None:
    records: Recorded = {}
    threads: set[int] = set()

    def broken(media_time: float, prob: float) -> None:
        raise RuntimeError("bug in one call")

    async def main() -> None:
        batcher = VadBatcher(model, executor, VadSettings())
        batcher.open(broken).push(speech[:4096], 0.0)
        batcher.open(recorder(records, 0, threads)).push(speech[:4096], 0.0)
        await batcher.wait_idle()

    run(main())
    assert len(records[0]) == 8


# ---------------------------------------------------------------- webrtcvad pre-gate


def test_pregate_skips_silence_and_keeps_speech(
    model: SileroModel, spoken: Pcm, speech: Pcm, executor: ThreadPoolExecutor
) -> None:
    records: Recorded = {}
    threads: set[int] = set()
    settings = VadSettings(webrtc_pregate=True, webrtc_mode=2)

    async def main() -> VadBatcher:
        batcher = VadBatcher(model, executor, settings)
        vad = batcher.open(recorder(records, 0, threads))
        for j in range(len(speech) // PIECE):
            vad.push(speech[j * PIECE : (j + 1) * PIECE], j * PIECE / SAMPLE_RATE)
            if j % 10 == 0:
                await asyncio.sleep(0)
        await batcher.wait_idle()
        return batcher

    batcher = run(main())
    probs = np.array([p for _, p in records[0]])
    speech_end = LEAD + len(spoken) / SAMPLE_RATE
    # Digital silence never reaches silero.
    assert np.all(probs[: chunk_index(LEAD) - 1] == 0.0)
    assert np.all(probs[chunk_index(speech_end + 0.3) :] == 0.0)
    assert batcher.stats.gated >= chunk_index(LEAD + TAIL) - 15
    assert batcher.stats.chunks + batcher.stats.gated == len(probs)
    # Speech still is.
    inside = probs[chunk_index(LEAD + 0.1) : chunk_index(speech_end - 0.1)]
    assert np.median(inside) > 0.9
    detector = SpeechDetector(settings)
    events = [detector.update(t, p) for t, p in records[0]]
    started = [e for e in events if isinstance(e, SpeechStarted)]
    assert started and LEAD - 0.1 <= started[0].media_time <= LEAD + 0.3


def test_pregate_without_webrtcvad(
    model: SileroModel, executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "webrtcvad", None)  # makes `import webrtcvad` fail
    with pytest.raises(ModelLoadError, match="webrtcvad"):
        VadBatcher(model, executor, VadSettings(webrtc_pregate=True))
    # Without the pre-gate it is not needed.
    VadBatcher(model, executor, VadSettings())
