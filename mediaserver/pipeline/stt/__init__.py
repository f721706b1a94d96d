"""Speech-to-text backends and `load_stt`, which picks one by configured name.

Backends import their engines lazily, so an optional backend that is not
installed only fails (with `ModelLoadError`) when it is configured.
"""

from __future__ import annotations

from collections.abc import Callable

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
    from mediaserver.pipeline.stt.whisper import FasterWhisperBackend

    if settings.model is None:
        raise ModelLoadError("faster-whisper: stt.model (a local model folder) is required")
    return FasterWhisperBackend(settings.model, language=settings.language)


#: Backend name (`SttSettings.backend`) -> factory.
BACKENDS: dict[str, Callable[[SttSettings], SttBackend]] = {
    "pocketsphinx": _pocketsphinx,
    "faster-whisper": _faster_whisper,
}


def load_stt(settings: SttSettings) -> SttBackend:
    """Load the STT backend `settings` names (blocking: models load here).

    Args:
        settings: the pipeline's `stt` settings.

    Returns:
        The loaded backend.

    Raises:
        ModelLoadError: unknown backend name, package missing or model unloadable.
    """
    factory = BACKENDS.get(settings.backend)
    if factory is None:
        raise ModelLoadError(
            f"stt: unknown backend {settings.backend!r} (known: {', '.join(sorted(BACKENDS))})"
        )
    try:
        return factory(settings)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"{settings.backend}: cannot load model {settings.model}: {exc}"
        ) from exc
