"""Text-to-speech backends, the clause aggregator, and `load_tts`.

Backends import their engines lazily, so an optional backend that is not
installed only fails (with `ModelLoadError`) when it is configured.
"""

from __future__ import annotations

from pathlib import Path

from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.pipeline.registry import Backends
from mediaserver.pipeline.settings import TtsSettings
from mediaserver.pipeline.tts.base import TtsBackend, TtsChunk, TtsError
from mediaserver.pipeline.tts.clauses import ClauseAggregator

__all__ = [
    "BACKENDS",
    "ClauseAggregator",
    "ModelLoadError",
    "TtsBackend",
    "TtsChunk",
    "TtsError",
    "load_tts",
]


def _espeak(settings: TtsSettings) -> TtsBackend:
    from mediaserver.pipeline.tts.espeak import EspeakBackend

    return EspeakBackend(voice=settings.voice, rate=settings.rate)


def _piper(settings: TtsSettings) -> TtsBackend:
    from mediaserver.pipeline.tts.piper import PiperBackend

    return PiperBackend(Path(settings.voice).expanduser())


def _openai(settings: TtsSettings) -> TtsBackend:
    from mediaserver.pipeline.tts.openai_speech import from_settings

    return from_settings(settings)


def _elevenlabs(settings: TtsSettings) -> TtsBackend:
    from mediaserver.pipeline.tts.elevenlabs import from_settings

    return from_settings(settings)


def _cartesia(settings: TtsSettings) -> TtsBackend:
    from mediaserver.pipeline.tts.cartesia import from_settings

    return from_settings(settings)


#: Backend name (`TtsSettings.backend`) -> factory.
BACKENDS: Backends[TtsSettings, TtsBackend] = Backends(
    "tts",
    {
        "espeak-ng": _espeak,
        "piper": _piper,
        "openai": _openai,
        "elevenlabs": _elevenlabs,
        "cartesia": _cartesia,
    },
    lambda settings: f"voice {settings.voice}",
)


def load_tts(settings: TtsSettings) -> TtsBackend:
    """Load the TTS backend `settings` names (blocking: libraries and models load here),
    wrapped with its `fallback` backend when one is configured (`FallbackTtsBackend`).

    `settings.fallback_voice` is not used here: it is the voice the caller
    passes to `synthesize` when synthesis with the default one fails.

    Args:
        settings: The pipeline's `tts` settings (espeak-ng: `voice` is a voice
            name and `rate` words per minute; piper: `voice` is the .onnx path;
            openai, elevenlabs, cartesia: `voice`, `api_key`, `base_url`,
            `provider_model`, `sample_rate`, `speed`, see their modules).

    Returns:
        The loaded backend.

    Raises:
        ModelLoadError: Unknown backend name, library or package missing, or
            voice unloadable (the message names the backend and the path).
    """
    backend = BACKENDS.load(settings)
    if settings.fallback is not None:
        from mediaserver.pipeline.tts.fallback import FallbackTtsBackend

        return FallbackTtsBackend(backend, load_tts(settings.fallback))
    return backend
