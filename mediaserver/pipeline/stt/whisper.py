"""faster-whisper speech-to-text (optional extra ``mediaserver[whisper]``).

Whisper is not a streaming model: it transcribes whole windows of audio. The
stream therefore buffers the turn, re-transcribes what it has every second of
new audio for an interim partial (greedy, so it stays cheap), and transcribes
the whole turn once more at `finalise`. Hints become the ``initial_prompt``,
which biases Whisper's decoder towards their spelling.

Models load from a local folder only (a CTranslate2 conversion such as
``Systran/faster-whisper-small.en``): a phone server must not download
gigabytes on its first call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mediaserver.codecs.base import as_mono_int16
from mediaserver.pipeline.stt.base import (
    STT_RATE,
    ModelLoadError,
    SttBackend,
    SttError,
    SttHints,
    SttStream,
    Transcript,
)

__all__ = ["FasterWhisperBackend"]

#: New audio (samples) needed before another interim transcription.
_PARTIAL_EVERY = STT_RATE


class FasterWhisperBackend(SttBackend):
    """faster-whisper (CTranslate2 Whisper) loaded from a local model folder.

    Args:
        model: folder of a CTranslate2 Whisper model (``model.bin`` etc.).
        device: "cpu", "cuda" or "auto".
        compute_type: CTranslate2 quantisation, e.g. "int8", "float16".
        language: language code for transcription ("en"; "en-us" is cut to "en").

    Raises:
        ModelLoadError: faster-whisper is not installed, or the model folder is
            missing or unloadable (the message names "faster-whisper" and it).
    """

    name = "faster-whisper"

    def __init__(
        self,
        model: Path,
        device: str = "cpu",
        compute_type: str = "int8",
        language: str = "en",
    ) -> None:
        try:
            import faster_whisper  # type: ignore[import-not-found, unused-ignore]
        except ImportError as exc:
            raise ModelLoadError(
                "faster-whisper: package not installed "
                f"(pip install 'mediaserver[whisper]'; model {model}): {exc}"
            ) from exc
        self.model = Path(model)
        if not self.model.is_dir():
            raise ModelLoadError(f"faster-whisper: model folder {self.model} does not exist")
        self.language = language.split("-")[0].lower() or "en"
        try:
            self._whisper: Any = faster_whisper.WhisperModel(
                str(self.model), device=device, compute_type=compute_type, local_files_only=True
            )
        except Exception as exc:  # CTranslate2 raises RuntimeError, ValueError, OSError...
            raise ModelLoadError(f"faster-whisper: cannot load model {self.model}: {exc}") from exc

    def transcribe(self, audio: npt.NDArray[np.float32], prompt: str | None) -> str:
        """Transcribe 16 kHz float audio in [-1, 1] greedily (blocking).

        Args:
            audio: the samples.
            prompt: text that biases the decoder (the hints), or None.

        Returns:
            The text, stripped.

        Raises:
            SttError: transcription failed.
        """
        try:
            segments, _info = self._whisper.transcribe(
                audio,
                language=self.language,
                beam_size=1,
                vad_filter=False,
                condition_on_previous_text=False,
                initial_prompt=prompt,
            )
            # `segments` is lazy: decoding happens while it is consumed.
            return " ".join(segment.text.strip() for segment in segments).strip()
        except Exception as exc:
            raise SttError(f"faster-whisper: transcription failed: {exc}") from exc

    def open(self, hints: SttHints) -> SttStream:
        """A buffering stream; its hints become Whisper's initial prompt.

        Args:
            hints: phrases and words to bias towards.

        Returns:
            A `FasterWhisperStream`.
        """
        vocabulary = [*hints.phrases, *hints.words]
        prompt = ", ".join(vocabulary) + "." if vocabulary else None
        return FasterWhisperStream(self, prompt)


class FasterWhisperStream(SttStream):
    """Buffers a turn and transcribes it with the backend's Whisper model."""

    def __init__(self, backend: FasterWhisperBackend, prompt: str | None) -> None:
        self._backend = backend
        self._prompt = prompt
        self._chunks: list[npt.NDArray[np.int16]] = []
        self._samples = 0
        self._since_partial = 0
        self._text = ""

    def _audio(self) -> npt.NDArray[np.float32]:
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return (pcm.astype(np.float32) / 32768.0).astype(np.float32)

    def feed(self, pcm: np.ndarray) -> Transcript | None:
        """Buffer audio; every second of new audio, transcribe the turn so far.

        Args:
            pcm: 1-D int16 samples at 16 kHz.

        Returns:
            A partial transcript when an interim transcription changed the text.

        Raises:
            SttError: transcription failed.
        """
        samples = as_mono_int16(pcm)
        if samples.size == 0:
            return None
        self._chunks.append(samples.copy())
        self._samples += samples.size
        self._since_partial += samples.size
        if self._since_partial < _PARTIAL_EVERY:
            return None
        self._since_partial = 0
        text = self._backend.transcribe(self._audio(), self._prompt)
        if text == self._text:
            return None
        self._text = text
        return Transcript(text, final=False)

    def finalise(self) -> Transcript:
        """Transcribe the whole turn and start a new one.

        Returns:
            The final transcript (empty when there was no audio).

        Raises:
            SttError: transcription failed.
        """
        audio = self._audio()
        self._chunks, self._samples, self._since_partial, self._text = [], 0, 0, ""
        if audio.size == 0:
            return Transcript("", final=True)
        return Transcript(self._backend.transcribe(audio, self._prompt), final=True)

    def close(self) -> None:
        """Drop the buffered audio."""
        self._chunks, self._samples, self._since_partial, self._text = [], 0, 0, ""
