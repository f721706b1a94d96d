"""Silero VAD on onnxruntime, batched across every call of the process.

`SileroModel` is the ONNX model alone (no torch): one `infer` call computes the
speech probability of one 32 ms chunk for each of B independent streams.
`VadBatcher` is what calls use: each call opens a `VadStream`, pushes its
16 kHz audio in 20 ms pieces, and gets ``on_prob(media_time, probability)``
callbacks on the event loop. Chunks from all streams that become ready within
``batch_period`` share one inference in the executor, because one call of the
model for 128 streams costs about a third per stream of 128 separate calls
(see DESIGN.md, "Batch across calls"), and the event loop never runs the model.

The model is recurrent: each stream carries its own LSTM ``state`` [2, 1, 128]
and a ``context`` of the last 64 samples of its previous chunk, which is
prefixed to the next chunk exactly as upstream's ``OnnxWrapper`` does
(silero_vad/utils_vad.py), so a stream's probabilities are the same batched or
alone.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from mediaserver.codecs.base import PcmArray, as_mono_int16
from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.pipeline.onnx import cpu_session
from mediaserver.pipeline.settings import VadSettings

__all__ = [
    "CHUNK_SAMPLES",
    "CONTEXT_SAMPLES",
    "SAMPLE_RATE",
    "SileroModel",
    "VadBatcher",
    "VadStats",
    "VadStream",
    "default_model_path",
]

log = structlog.get_logger("mediaserver.pipeline.vad")

#: The rate the model runs at (its 8 kHz mode is not used: calls are resampled).
SAMPLE_RATE = 16000
#: Samples per chunk at 16 kHz (32 ms); the model accepts only this size.
CHUNK_SAMPLES = 512
#: Samples of the previous chunk prefixed to each chunk (upstream's context).
CONTEXT_SAMPLES = 64
#: Width of the model's recurrent state.
STATE_SIZE = 128

FloatArray = npt.NDArray[np.float32]

_INT16_SCALE = np.float32(1.0 / 32768.0)


def default_model_path() -> Path:
    """The silero ONNX model shipped in the ``silero-vad`` wheel.

    The package is located without importing it: its ``__init__`` imports
    torch, which is not installed (the wheel is installed with --no-deps only
    for its model file).

    Returns:
        Path of ``silero_vad/data/silero_vad.onnx`` (it may not exist; loading
        it reports that).

    Raises:
        ModelLoadError: the silero-vad package is not installed.
    """
    spec = importlib.util.find_spec("silero_vad")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelLoadError(
            "silero: the silero-vad package is not installed, so there is no default "
            "model (set vad.model to a silero_vad.onnx file)"
        )
    candidates = [Path(location) / "data" / "silero_vad.onnx" for location in locations]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]


class SileroModel:
    """The silero VAD ONNX model, run with onnxruntime on the CPU.

    Args:
        path: the ONNX file; None for `default_model_path`.

    Raises:
        ModelLoadError: the file is missing or is not a silero VAD model; the
            message names the backend ("silero") and the path.

    Attributes:
        path: the loaded file.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_model_path()
        self._session = cpu_session(self.path, "silero: VAD model")
        inputs = {node.name for node in self._session.get_inputs()}
        outputs = {node.name for node in self._session.get_outputs()}
        if not ({"input", "state", "sr"} <= inputs and {"output", "stateN"} <= outputs):
            raise ModelLoadError(
                f"silero: {self.path} is not a silero VAD v5 model "
                f"(inputs {sorted(inputs)}, outputs {sorted(outputs)})"
            )
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    @staticmethod
    def initial_state(batch: int = 1) -> FloatArray:
        """A zero recurrent state for `batch` streams, shape [2, batch, 128]."""
        return np.zeros((2, batch, STATE_SIZE), dtype=np.float32)

    def infer(
        self, chunks: FloatArray, contexts: FloatArray, states: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Speech probabilities of one chunk per stream, for B streams at once.

        Blocking (CPU work): call it from an executor, never the event loop.

        Args:
            chunks: float32 [B, 512], 16 kHz samples scaled to [-1, 1].
            contexts: float32 [B, 64], the last 64 samples of each stream's
                previous chunk (zeros for a stream's first chunk).
            states: float32 [2, B, 128], each stream's recurrent state.

        Returns:
            ``(probs, new_states)``: float32 [B] probabilities and the
            float32 [2, B, 128] states to pass with each stream's next chunk.

        Raises:
            ValueError: the shapes do not match.
        """
        batch = chunks.shape[0] if chunks.ndim == 2 else -1
        if (
            chunks.shape != (batch, CHUNK_SAMPLES)
            or contexts.shape != (batch, CONTEXT_SAMPLES)
            or states.shape != (2, batch, STATE_SIZE)
        ):
            raise ValueError(
                f"silero: expected chunks [B, {CHUNK_SAMPLES}], contexts [B, {CONTEXT_SAMPLES}], "
                f"states [2, B, {STATE_SIZE}]; got {chunks.shape}, {contexts.shape}, "
                f"{states.shape}"
            )
        if batch == 0:
            return np.zeros(0, dtype=np.float32), self.initial_state(0)
        # As upstream OnnxWrapper.__call__: input = cat(context, chunk), N = 576.
        x = np.concatenate([contexts, chunks], axis=1).astype(np.float32, copy=False)
        out, new_states = self._session.run(
            ["output", "stateN"],
            {"input": x, "state": states.astype(np.float32, copy=False), "sr": self._sr},
        )
        probs = np.asarray(out, dtype=np.float32).reshape(batch)
        return probs, np.asarray(new_states, dtype=np.float32)

    def probabilities(self, pcm: npt.ArrayLike) -> FloatArray:
        """Probabilities of a whole 16 kHz int16 signal, chunk by chunk, alone.

        The offline counterpart of a `VadStream` (like upstream's
        ``audio_forward``, but a partial last chunk is dropped, as a stream
        keeps it buffered). Blocking.

        Args:
            pcm: 1-D int16 samples at 16 kHz.

        Returns:
            float32 probabilities, one per whole 512-sample chunk.
        """
        samples = as_mono_int16(pcm)
        count = len(samples) // CHUNK_SAMPLES
        probs = np.zeros(count, dtype=np.float32)
        state = self.initial_state(1)
        context = np.zeros((1, CONTEXT_SAMPLES), dtype=np.float32)
        for i in range(count):
            chunk = samples[i * CHUNK_SAMPLES : (i + 1) * CHUNK_SAMPLES]
            x = (chunk.astype(np.float32) * _INT16_SCALE).reshape(1, CHUNK_SAMPLES)
            prob, state = self.infer(x, context, state)
            probs[i] = prob[0]
            context = x[:, -CONTEXT_SAMPLES:]
        return probs


# webrtcvad accepts 10, 20 or 30 ms frames; 20 ms matches the RTP packets.
_GATE_FRAME = 320


class _WebrtcGate:
    """webrtcvad over one stream's audio in its native 20 ms frames.

    Every sample is seen once and in order (webrtcvad adapts its noise model
    and hangover frame by frame, so overlapping or skipped frames would skew
    it). A chunk is speech when any frame completed inside it is; the few ms
    of a chunk's tail that do not fill a frame are judged with the next chunk.
    """

    def __init__(self, module: ModuleType, mode: int) -> None:
        self._vad: Any = module.Vad(mode)
        self._leftover: PcmArray = np.zeros(0, dtype=np.int16)

    def speech(self, chunk: PcmArray) -> bool:
        samples = np.concatenate([self._leftover, chunk]) if len(self._leftover) else chunk
        whole = len(samples) // _GATE_FRAME * _GATE_FRAME
        self._leftover = samples[whole:].copy()
        # Run every frame (no short-circuit) so webrtcvad's state stays continuous.
        verdicts = [
            bool(self._vad.is_speech(samples[i : i + _GATE_FRAME].tobytes(), SAMPLE_RATE))
            for i in range(0, whole, _GATE_FRAME)
        ]
        return any(verdicts)


class VadStream:
    """One call's audio into the shared `VadBatcher` (use `VadBatcher.open`).

    All methods run on the event loop thread and never block.
    """

    def __init__(
        self, batcher: VadBatcher, on_prob: Callable[[float, float], None], gate: bool
    ) -> None:
        self._batcher = batcher
        self._on_prob = on_prob
        self._use_gate = gate
        self.closed = False
        # Bumped by reset(): results of chunks pushed before it are discarded.
        self._generation = 0
        self._partial: PcmArray = np.zeros(0, dtype=np.int16)
        #: Complete chunks not yet given to a batch: (media time of end, samples).
        self._pending: list[tuple[float, PcmArray]] = []
        self._clear_model_state()

    def _clear_model_state(self) -> None:
        self._state = SileroModel.initial_state(1)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        # A new object rather than a cleared one: a batch in flight may still
        # be using the old gate in the executor.
        self._gate = self._batcher._new_gate() if self._use_gate else None

    def push(self, pcm: npt.ArrayLike, media_time: float) -> None:
        """Add audio; a probability is reported for every 512 samples completed.

        Pushes are taken as contiguous: a gap in media time inserts nothing
        (call `reset` after a long gap). Each chunk's reported time is derived
        from the media time of the push that completed it.

        Args:
            pcm: 1-D int16 samples at 16 kHz, of any length (usually 320).
            media_time: media time (seconds) of the first sample of `pcm`.
        """
        if self.closed:
            return
        samples = as_mono_int16(pcm)
        if len(samples) == 0:
            return
        held = len(self._partial)
        buffer = np.concatenate([self._partial, samples]) if held else samples
        count = len(buffer) // CHUNK_SAMPLES
        for i in range(count):
            end = (i + 1) * CHUNK_SAMPLES
            # Copy: the chunk goes to another thread, and callers reuse buffers.
            chunk = buffer[end - CHUNK_SAMPLES : end].copy()
            self._pending.append((media_time + (end - held) / SAMPLE_RATE, chunk))
        self._partial = buffer[count * CHUNK_SAMPLES :].copy()
        if count:
            self._batcher._enqueue(self)

    def reset(self) -> None:
        """Forget all audio and model state, e.g. after a long gap.

        Nothing pushed before the reset is reported any more, including chunks
        already being inferred.
        """
        self._generation += 1
        self._partial = np.zeros(0, dtype=np.int16)
        self._pending.clear()
        self._clear_model_state()
        self._batcher._dequeue(self)

    def close(self) -> None:
        """Stop: no further callbacks; pushes are ignored from now on."""
        self.closed = True
        self._pending.clear()
        self._partial = np.zeros(0, dtype=np.int16)
        self._batcher._dequeue(self)


@dataclass
class VadStats:
    """Counters of a `VadBatcher` (for metrics and tests)."""

    #: Batches run (one executor job each).
    batches: int = 0
    #: Model calls (a batch makes more than one when a stream had several chunks).
    inferences: int = 0
    #: Chunks inferred by silero.
    chunks: int = 0
    #: Chunks the webrtcvad pre-gate called silence (reported as 0.0).
    gated: int = 0
    #: Most chunks in one model call.
    max_batch: int = 0
    #: Batches that failed (their chunks are dropped and logged).
    errors: int = 0


@dataclass
class _Work:
    """One stream's share of a batch; owned by the executor while in flight."""

    stream: VadStream
    generation: int
    chunks: list[tuple[float, PcmArray]]
    state: FloatArray
    context: FloatArray
    gate: _WebrtcGate | None
    probs: list[float] = field(default_factory=list)


@dataclass
class _JobCounts:
    inferences: int = 0
    chunks: int = 0
    gated: int = 0
    max_batch: int = 0


class VadBatcher:
    """Runs silero for every open `VadStream` of the process, batched.

    When a stream completes a chunk and no batch is pending, a batch is
    scheduled ``settings.batch_period`` seconds later; it takes every complete
    chunk of every stream, runs the model once (more if a stream has several
    chunks waiting: one call per chunk position, in order) in `executor`, and
    reports the probabilities through each stream's ``on_prob`` on the loop.
    Only one batch is in flight at a time; chunks completed meanwhile go in
    the next.

    Args:
        model: the loaded model.
        executor: where inference runs (shared, bounded; never the loop).
        settings: ``batch_period``, ``webrtc_pregate``, ``webrtc_mode``.
        loop: the event loop of the streams; default: the running loop when
            first needed.

    Raises:
        ModelLoadError: ``webrtc_pregate`` is on but webrtcvad is not installed.

    Attributes:
        stats: counters of batches, model calls and chunks.
    """

    def __init__(
        self,
        model: SileroModel,
        executor: Executor,
        settings: VadSettings,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._model = model
        self._executor = executor
        self._settings = settings
        self._loop = loop
        self.stats = VadStats()
        self._webrtcvad: ModuleType | None = None
        if settings.webrtc_pregate:
            try:
                import webrtcvad  # type: ignore[import-untyped]
            except ImportError as exc:
                raise ModelLoadError(
                    "webrtcvad: module not installed, but vad.webrtc_pregate is on "
                    "(pip install 'mediaserver[webrtcvad]')"
                ) from exc
            self._webrtcvad = webrtcvad
        # Streams with chunks waiting for a batch; a dict as an ordered set.
        self._waiting: dict[VadStream, None] = {}
        self._first_waiting_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight = False
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()

    def open(self, on_prob: Callable[[float, float], None]) -> VadStream:
        """A new stream for one call.

        Args:
            on_prob: called on the event loop as ``on_prob(media_time, prob)``
                for each chunk, in order; `media_time` is the end of the chunk.

        Returns:
            The stream to push the call's 16 kHz audio to.
        """
        if self._closed:
            raise RuntimeError("VadBatcher is closed")
        return VadStream(self, on_prob, gate=self._webrtcvad is not None)

    async def wait_idle(self) -> None:
        """Wait until no chunk is waiting or being inferred."""
        await self._idle.wait()

    def close(self) -> None:
        """Stop batching; a batch in flight finishes but reports nothing."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiting.clear()
        if not self._in_flight:
            self._idle.set()

    # ------------------------------------------------------------ internals

    def _new_gate(self) -> _WebrtcGate | None:
        if self._webrtcvad is None:
            return None
        return _WebrtcGate(self._webrtcvad, self._settings.webrtc_mode)

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _enqueue(self, stream: VadStream) -> None:
        if self._closed:
            stream._pending.clear()
            return
        loop = self._get_loop()
        if not self._waiting:
            self._first_waiting_at = loop.time()
        self._waiting[stream] = None
        self._idle.clear()
        self._schedule()

    def _dequeue(self, stream: VadStream) -> None:
        self._waiting.pop(stream, None)
        if not self._waiting and not self._in_flight:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._idle.set()

    def _schedule(self) -> None:
        if self._timer is not None or self._in_flight or not self._waiting:
            return
        loop = self._get_loop()
        # Measured from the first waiting chunk, so chunks that waited out a
        # previous batch in flight are not delayed by a whole period more.
        delay = max(0.0, self._first_waiting_at + self._settings.batch_period - loop.time())
        self._timer = loop.call_later(delay, self._start_batch)

    def _start_batch(self) -> None:
        self._timer = None
        if self._in_flight or self._closed:
            return
        works: list[_Work] = []
        for stream in self._waiting:
            if stream.closed or not stream._pending:
                continue
            works.append(
                _Work(
                    stream=stream,
                    generation=stream._generation,
                    chunks=stream._pending,
                    state=stream._state,
                    context=stream._context,
                    gate=stream._gate,
                )
            )
            stream._pending = []
        self._waiting.clear()
        if not works:
            self._idle.set()
            return
        self._in_flight = True
        try:
            future = self._get_loop().run_in_executor(self._executor, self._run, works)
        except Exception:  # e.g. the executor was shut down
            self._in_flight = False
            self.stats.errors += 1
            log.exception("vad_batch_failed", streams=len(works))
            self._after_batch()
            return
        future.add_done_callback(lambda done: self._finish(done, works))

    def _run(self, works: list[_Work]) -> _JobCounts:
        """Executor side: gate and infer every chunk, updating each _Work."""
        counts = _JobCounts()
        depth = max(len(work.chunks) for work in works)
        # Position k of every stream in one model call: a stream's chunks stay
        # in order, each with the state its previous chunk produced.
        for k in range(depth):
            rows: list[_Work] = []
            chunks: list[FloatArray] = []
            for work in works:
                if len(work.chunks) <= k:
                    continue
                samples = work.chunks[k][1]
                floats = samples.astype(np.float32) * _INT16_SCALE
                if work.gate is not None and not work.gate.speech(samples):
                    # Skipped, but the context must still follow the audio,
                    # so the next chunk sees what really preceded it.
                    work.probs.append(0.0)
                    work.context = floats[-CONTEXT_SAMPLES:]
                    counts.gated += 1
                    continue
                rows.append(work)
                chunks.append(floats)
            if not rows:
                continue
            probs, states = self._model.infer(
                np.stack(chunks),
                np.stack([work.context for work in rows]),
                np.concatenate([work.state for work in rows], axis=1),
            )
            for i, work in enumerate(rows):
                work.probs.append(float(probs[i]))
                work.state = states[:, i : i + 1, :].copy()
                work.context = chunks[i][-CONTEXT_SAMPLES:]
            counts.inferences += 1
            counts.chunks += len(rows)
            counts.max_batch = max(counts.max_batch, len(rows))
        return counts

    def _finish(self, future: asyncio.Future[_JobCounts], works: list[_Work]) -> None:
        """Loop side: scatter states and report probabilities."""
        self._in_flight = False
        self.stats.batches += 1
        if future.cancelled():  # the executor was shut down (the runtime closed)
            self._after_batch()
            return
        try:
            counts = future.result()
        except Exception:
            self.stats.errors += 1
            log.exception("vad_batch_failed", streams=len(works))
            self._after_batch()
            return
        self.stats.inferences += counts.inferences
        self.stats.chunks += counts.chunks
        self.stats.gated += counts.gated
        self.stats.max_batch = max(self.stats.max_batch, counts.max_batch)
        if not self._closed:
            for work in works:
                self._deliver(work)
        self._after_batch()

    def _deliver(self, work: _Work) -> None:
        stream = work.stream
        if stream.closed or stream._generation != work.generation:
            return
        stream._state = work.state
        stream._context = work.context
        for (end_time, _), prob in zip(work.chunks, work.probs):
            try:
                stream._on_prob(end_time, prob)
            except Exception:
                # One call's bug must not cost the other calls their results.
                log.exception("vad_callback_failed")
            # The callback may have closed or reset its stream.
            if stream.closed or stream._generation != work.generation:
                return

    def _after_batch(self) -> None:
        if self._waiting and not self._closed:
            self._schedule()
        elif self._timer is None:
            self._idle.set()
