"""Voice activity detection: silero probabilities batched across calls, and
the hysteresis detector that turns them into speech start/stop events."""

from mediaserver.pipeline.vad.detector import (
    CHUNK_SECONDS,
    SpeechDetector,
    SpeechEvent,
    SpeechStarted,
    SpeechStopped,
)
from mediaserver.pipeline.vad.silero import (
    CHUNK_SAMPLES,
    CONTEXT_SAMPLES,
    SAMPLE_RATE,
    SileroModel,
    VadBatcher,
    VadStats,
    VadStream,
    default_model_path,
)

__all__ = [
    "CHUNK_SAMPLES",
    "CHUNK_SECONDS",
    "CONTEXT_SAMPLES",
    "SAMPLE_RATE",
    "SileroModel",
    "SpeechDetector",
    "SpeechEvent",
    "SpeechStarted",
    "SpeechStopped",
    "VadBatcher",
    "VadStats",
    "VadStream",
    "default_model_path",
]
