"""Smart Turn v3 on onnxruntime: is the caller's turn complete? Batched across calls.

`SmartTurnModel` is the ONNX model alone (BSD-2, from the ``pipecat-ai`` wheel,
installed without its dependencies only for this file): Whisper-style log-mel
features of the last 8 s of a turn in, the probability that the speaker has
finished out. It hears intonation and cut-off syntax ("I want to change my
order to..."), which silence alone cannot.

`TurnBatcher` is what calls use: `check(audio)` returns a future of the
probability. Checks from every call that arrive within ``batch_period`` share
one model call in the executor (one thread of its own: a check is on the
critical path of the end of a turn and must not queue behind STT or TTS), and
the event loop never computes features or runs the model.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog

from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.pipeline.onnx import cpu_session
from mediaserver.pipeline.turn.features import FRAMES, MELS, SAMPLE_RATE, fit_window, log_mel

__all__ = ["SmartTurnModel", "TurnBatcher", "TurnStats", "default_model_path"]

log = structlog.get_logger("mediaserver.pipeline.turn")

_MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
_INT16_SCALE = np.float32(1.0 / 32768.0)


def default_model_path() -> Path:
    """The Smart Turn v3 ONNX file shipped in the ``pipecat-ai`` wheel.

    The package is located without importing it (its dependencies are not
    installed: the wheel is only here for the model file).

    Raises:
        ModelLoadError: the pipecat-ai package is not installed.
    """
    spec = importlib.util.find_spec("pipecat")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelLoadError(
            "smart_turn: the pipecat-ai package is not installed, so there is no default "
            "model (set turn.smart_turn.model to a smart-turn-v3 .onnx file, or "
            "turn.detector: silence)"
        )
    return Path(locations[0]) / "audio" / "turn" / "smart_turn" / "data" / _MODEL_FILE


class SmartTurnModel:
    """The Smart Turn v3 ONNX model on the CPU.

    Args:
        path: the ONNX file; None for `default_model_path`.
        threads: onnxruntime intra-op threads (one: ~50 ms a check on an idle
            core; two halve that only when both cores are free, which they are
            not while calls run).

    Raises:
        ModelLoadError: the file is missing, corrupt or not a Smart Turn v3
            model; the message names the backend ("smart_turn") and the path.
    """

    def __init__(self, path: Path | str | None = None, threads: int = 1) -> None:
        self.path = Path(path) if path is not None else default_model_path()
        self._session = cpu_session(self.path, "smart_turn: turn model", threads)
        inputs = self._session.get_inputs()
        if [i.name for i in inputs] != ["input_features"] or list(inputs[0].shape[1:]) != [
            MELS,
            FRAMES,
        ]:
            raise ModelLoadError(
                f"smart_turn: {self.path} is not a Smart Turn v3 model "
                f"(inputs {[(i.name, i.shape) for i in inputs]})"
            )

    def probabilities(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """P(turn complete) for a batch of features, shape (B, MELS, FRAMES) -> (B,)."""
        (out,) = self._session.run(None, {"input_features": features})
        # The exported graph ends in a sigmoid: these are probabilities already.
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def predict(self, audio: npt.ArrayLike) -> float:
        """P(turn complete) for one turn's 16 kHz audio (int16 or float in [-1, 1])."""
        return float(self.probabilities(_features([_as_float(audio)]))[0])


def _as_float(audio: npt.ArrayLike) -> npt.NDArray[np.float32]:
    array = np.asarray(audio)
    if array.dtype == np.int16:
        return array.astype(np.float32) * _INT16_SCALE
    return array.astype(np.float32)


def _features(audios: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    return np.stack([log_mel(fit_window(a)) for a in audios])


@dataclass
class TurnStats:
    """Counters of the batcher (for the benchmarks and tests)."""

    checks: int = 0
    batches: int = 0
    errors: int = 0
    #: Executor seconds spent on features and inference.
    busy_s: float = 0.0
    #: Seconds of turn audio checked (the model's cost per second of audio).
    audio_s: float = 0.0


@dataclass
class _Check:
    audio: npt.NDArray[np.float32]
    future: asyncio.Future[float]


class TurnBatcher:
    """Runs `SmartTurnModel` for the turn checks of every call, batched.

    Args:
        model: the loaded model.
        executor: where features and inference run (never the loop).
        batch_period: seconds a check may wait so one inference serves many calls.
    """

    def __init__(self, model: SmartTurnModel, executor: Executor, batch_period: float = 0.004):
        self.model = model
        self._executor = executor
        self._period = batch_period
        self._waiting: list[_Check] = []
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight = False
        self.stats = TurnStats()

    def check(self, audio: npt.ArrayLike) -> asyncio.Future[float]:
        """P(turn complete) of one turn's 16 kHz audio (its last 8 s count).

        The future fails with the model's exception when inference fails.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        self._waiting.append(_Check(_as_float(audio), future))
        if self._timer is None and not self._in_flight:
            self._timer = loop.call_later(self._period, self._start)
        return future

    def _start(self) -> None:
        self._timer = None
        checks = [c for c in self._waiting if not c.future.done()]
        self._waiting = []
        if not checks:
            return
        self._in_flight = True
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._executor, self._run, [c.audio for c in checks])
        job.add_done_callback(lambda done: self._finish(done, checks))

    def _run(self, audios: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
        started = time.perf_counter()
        try:
            return self.model.probabilities(_features(audios))
        finally:
            self.stats.busy_s += time.perf_counter() - started
            self.stats.audio_s += sum(min(len(a), 8 * SAMPLE_RATE) for a in audios) / SAMPLE_RATE

    def _finish(self, done: asyncio.Future[npt.NDArray[np.float32]], checks: list[_Check]) -> None:
        self._in_flight = False
        self.stats.batches += 1
        self.stats.checks += len(checks)
        error = None if done.cancelled() else done.exception()
        for i, check in enumerate(checks):
            if check.future.done():
                continue
            if done.cancelled():
                check.future.cancel()
            elif error is not None:
                check.future.set_exception(error)
            else:
                check.future.set_result(float(done.result()[i]))
        if error is not None or done.cancelled():
            self.stats.errors += 1
            log.warning("turn_model_failed", checks=len(checks), error=repr(error))
        if self._waiting:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._period, self._start)
