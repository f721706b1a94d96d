"""Speech-to-text backends and `load_stt`, which picks one by configured name.

Backends import their engines lazily, so an optional backend that is not
installed only fails (with `ModelLoadError`) when it is configured.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from mediaserver.pipeline.registry import Backends
from mediaserver.pipeline.settings import SttSettings
from mediaserver.pipeline.stt.base import (
    STT_RATE,
    ModelLoadError,
    SttBackend,
    SttError,
    SttHints,
    SttStream,
    Transcript,
)
from mediaserver.pipeline.stt.hints import hints_for

log = structlog.get_logger("mediaserver.pipeline.stt")

__all__ = [
    "BACKENDS",
    "STT_RATE",
    "ModelLoadError",
    "SttBackend",
    "SttError",
    "SttHints",
    "SttStream",
    "Transcript",
    "hints_for",
    "load_stt",
]


def _pocketsphinx(settings: SttSettings) -> SttBackend:
    from mediaserver.pipeline.stt.sphinx import PocketSphinxBackend

    return PocketSphinxBackend(settings.model, pool_size=settings.pool_size)


def _faster_whisper(settings: SttSettings) -> SttBackend:
    from mediaserver.pipeline.stt.models import default_model_dir
    from mediaserver.pipeline.stt.whisper import FasterWhisperBackend

    def load(model: Path) -> SttBackend:
        return FasterWhisperBackend(
            model,
            compute_type=settings.compute_type,
            language=settings.language,
            decoders=max(1, settings.pool_size),
            threads=settings.threads,
            beam_size=settings.beam_size,
            window=settings.window,
            partials=settings.partials,
        )

    if settings.model is not None:
        return load(settings.model)
    # The default model: a machine set up without it (or without the package)
    # still answers calls, with the low-cost recogniser and one warning.
    try:
        return load(default_model_dir())
    except ModelLoadError as exc:
        log.warning("stt_fallback", backend="pocketsphinx", reason=str(exc))
        return _pocketsphinx(settings.model_copy(update={"backend": "pocketsphinx"}))


def _deepgram(settings: SttSettings) -> SttBackend:
    try:
        from mediaserver.pipeline.stt import deepgram
    except ImportError as exc:
        raise ModelLoadError(
            f"deepgram: package not installed (pip install 'mediaserver[cloud]'): {exc}"
        ) from exc
    return deepgram.from_settings(settings)


def _openai_realtime(settings: SttSettings) -> SttBackend:
    try:
        from mediaserver.pipeline.stt import openai_realtime
    except ImportError as exc:
        raise ModelLoadError(
            f"openai-realtime: package not installed (pip install 'mediaserver[cloud]'): {exc}"
        ) from exc
    return openai_realtime.from_settings(settings)


#: Backend name (`SttSettings.backend`) -> factory.
BACKENDS: Backends[SttSettings, SttBackend] = Backends(
    "stt",
    {
        "pocketsphinx": _pocketsphinx,
        "faster-whisper": _faster_whisper,
        "deepgram": _deepgram,
        "openai-realtime": _openai_realtime,
    },
    lambda settings: f"model {settings.model}",
)


def load_stt(settings: SttSettings) -> SttBackend:
    """Load the STT backend `settings` names (blocking: models load here), wrapped
    with its `fallback` backend when one is configured (`FallbackSttBackend`).

    Args:
        settings: the pipeline's `stt` settings.

    Returns:
        The loaded backend.

    Raises:
        ModelLoadError: unknown backend name, package missing or model unloadable.
    """
    backend = BACKENDS.load(settings)
    if settings.fallback is not None:
        from mediaserver.pipeline.stt.fallback import FallbackSttBackend

        return FallbackSttBackend(backend, load_stt(settings.fallback))
    return backend
