"""Backends by name: one way for every stage to find, load and fail.

Each stage (STT, TTS, LLM) keeps a `Backends` table from the names its
settings accept to the factories that build them. Loading fails one way,
`ModelLoadError` with one line naming what could not be loaded: an unknown
name (listing the known ones), a missing package or model, or a setting the
backend refused (an `env:` key whose variable is unset names the key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from mediaserver.pipeline.errors import ModelLoadError

__all__ = ["Backends"]


class _Named(Protocol):
    @property
    def backend(self) -> str: ...


S = TypeVar("S", bound=_Named)
B = TypeVar("B")


class Backends(Generic[S, B]):
    """The backends of one stage.

    Args:
        stage: the settings section ("stt", "tts", "llm"), for messages.
        factories: backend name -> a factory taking the stage's settings (and
            whatever else `load` is given for the stage).
        what: what a factory loads, for the failure message ("model X").
    """

    def __init__(
        self,
        stage: str,
        factories: Mapping[str, Callable[..., B]],
        what: Callable[[S], str],
    ) -> None:
        self.stage = stage
        self._factories = dict(factories)
        self._what = what

    def names(self) -> list[str]:
        """The backend names, sorted."""
        return sorted(self._factories)

    def load(self, settings: S, *args: Any) -> B:
        """The backend `settings.backend` names, built from `settings` (and `args`).

        Raises:
            ModelLoadError: unknown name, or the backend could not be built
                (the message names the backend and what it was loading).
        """
        name = settings.backend
        factory = self._factories.get(name)
        if factory is None:
            known = ", ".join(self.names())
            raise ModelLoadError(f"{self.stage}.backend: unknown backend {name!r} (known: {known})")
        try:
            return factory(settings, *args)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"{name}: cannot load {self._what(settings)}: {exc}") from exc
