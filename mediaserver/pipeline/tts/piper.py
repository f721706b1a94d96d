"""Piper neural voices (the optional `piper-tts` package, `pip install mediaserver[piper]`).

A piper voice is an ONNX model with its config next to it (`voice.onnx` and
`voice.onnx.json`). piper gives no word timing, so every chunk carries the
whole text's span; it synthesises sentence by sentence, so each sentence is
one chunk and the first comes out before the rest is synthesised.

Two generations of the package API are supported: piper-tts 1.2 streams raw
int16 bytes per sentence (`synthesize_stream_raw`), 1.3 and later yield
`AudioChunk` objects from `synthesize`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.pipeline.tts.base import TtsBackend, TtsChunk, TtsError

__all__ = ["PiperBackend"]


class PiperBackend(TtsBackend):
    """A piper voice, one chunk per sentence.

    Args:
        voice: The voice model (.onnx); its config must sit next to it as
            `<voice>.json` (for example `en_US-lessac-medium.onnx.json`).

    Raises:
        ModelLoadError: piper-tts is not installed, the model or its config
            is missing, or the model does not load (the message names both).
    """

    name = "piper"

    def __init__(self, voice: Path) -> None:
        self.path = Path(voice)
        try:
            from piper import PiperVoice  # type: ignore[import-not-found, unused-ignore]
        except ImportError as exc:
            raise ModelLoadError(
                f"piper: the piper-tts package is not installed (pip install 'mediaserver[piper]'),"
                f" needed for voice {self.path}: {exc}"
            ) from exc
        config = self.path.with_name(self.path.name + ".json")
        if not self.path.is_file():
            raise ModelLoadError(f"piper: voice model {self.path} does not exist")
        if not config.is_file():
            raise ModelLoadError(f"piper: voice config {config} (next to {self.path}) is missing")
        try:
            self._voice: Any = PiperVoice.load(str(self.path))
            self.sample_rate = int(self._voice.config.sample_rate)
        except Exception as exc:
            raise ModelLoadError(f"piper: cannot load voice {self.path}: {exc}") from exc
        speakers = getattr(self._voice.config, "speaker_id_map", None) or {}
        self._speakers: dict[str, int] = {str(k): int(v) for k, v in dict(speakers).items()}

    def synthesize(self, text: str, voice: str | None = None) -> Iterator[TtsChunk]:
        """Yield the audio of `text`, one chunk per sentence, each spanning all of `text`.

        Args:
            text: The text (normally one clause).
            voice: A speaker name of a multi-speaker voice; None for its default.

        Raises:
            TtsError: Unknown speaker, or piper failed.
        """
        if not text.strip():
            return
        speaker: int | None = None
        if voice is not None:
            if voice not in self._speakers:
                raise TtsError(f"piper: voice {self.path} has no speaker {voice!r}")
            speaker = self._speakers[voice]
        try:
            for pcm in self._stream(text, speaker):
                if len(pcm):
                    yield TtsChunk(pcm, 0, len(text))
        except TtsError:
            raise
        except Exception as exc:
            raise TtsError(f"piper: synthesis failed: {exc}") from exc

    def _stream(self, text: str, speaker: int | None) -> Iterable[np.ndarray]:
        """int16 audio per sentence from whichever API this piper-tts has."""
        if hasattr(self._voice, "synthesize_stream_raw"):  # piper-tts 1.2
            for raw in self._voice.synthesize_stream_raw(text, speaker_id=speaker):
                yield np.frombuffer(raw, dtype=np.int16)
            return
        # piper-tts >= 1.3
        from piper import SynthesisConfig  # type: ignore[import-not-found, unused-ignore]

        config = SynthesisConfig(speaker_id=speaker)
        for chunk in self._voice.synthesize(text, syn_config=config):
            yield np.asarray(chunk.audio_int16_array, dtype=np.int16).reshape(-1)

    def voices(self) -> list[str]:
        """Speaker names of a multi-speaker voice (empty for a single speaker)."""
        return sorted(self._speakers)
