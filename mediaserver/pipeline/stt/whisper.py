"""faster-whisper (CTranslate2 Whisper) speech-to-text: the embedded default.

Whisper is not a streaming model: it transcribes windows of audio. What makes
it fit a phone call (measured on this 2-core machine, Whisper base int8,
espeak-ng speech through G.711; docs/benchmarks.md has the runs):

* **One model for every call.** The backend loads the weights once; CTranslate2
  runs `decoders` transcriptions at a time over those shared weights
  (``inter_threads``) and queues the rest, so memory does not grow per call.
* **Trimmed windows.** Whisper pads every input to 30 s; the encoder's cost is
  the window, not the speech. Encoding the turn plus a little padding (at least
  `window` seconds) instead of 30 s cut the encoder from ~0.6 s to ~0.1 s for a
  4 s request with the same text. Below ~5 s of window the decoder starts to
  loop on short inputs ("three three three ..."), hence the floor; the token
  budget is bounded by the audio's length too, and a loop is cut.
* **Speculative decoding.** The actor calls `SttStream.pause` when VAD hears the
  caller stop. The stream transcribes what it has right away, while the turn's
  end-of-speech timeout runs; if the caller does not speak again before the
  turn ends, `finalise` returns that transcript at once instead of decoding
  then. Speech after the pause (`resume`) throws the guess away.
* **Hints as a prompt.** The agent's phrases (its hints, its tools' names) and
  its tools' argument names go in as Whisper's "previous text", which biases
  spelling and vocabulary. A prompt can also make the base model stop early or
  repeat the prompt, so a prompted transcript that is cut short (far fewer
  words than the speech holds) is redone without the prompt, and an echoed
  prompt is removed.
* **No text from noise.** A window Whisper itself thinks holds no speech
  (no-speech probability above 0.6 with a low average log-probability, the
  thresholds faster-whisper uses) gives an empty transcript, so line noise
  gets the "did not catch that" recovery instead of a hallucinated "Thank you."

Interim partials cost a full transcription each, so they are off by default
(`partials` = 0); turn-taking does not need them unless barge-in asks for
words (`barge_in.min_words`).

Models load from a local folder only: a phone server must not download
gigabytes on its first call (`mediaserver.pipeline.stt.models` installs the
default one at setup).
"""

from __future__ import annotations

import os
import re
import threading
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

__all__ = ["FasterWhisperBackend", "FasterWhisperStream"]

#: Samples per Whisper feature frame (10 ms at 16 kHz).
_HOP = 160
#: Whisper's encoder sees at most 30 s (3000 frames).
_MAX_FRAMES = 3000
#: Speech longer than this is transcribed in pieces of this many samples.
_PIECE = 28 * STT_RATE
#: Frames of padding after the speech, so the last word is not at the edge.
_TAIL_FRAMES = 50
#: faster-whisper's defaults for "this window holds no speech".
_NO_SPEECH_PROB = 0.6
_LOW_LOGPROB = -1.0
#: A prompted transcript with fewer words per second of audio than this was cut short.
_MIN_WORDS_PER_S = 0.6
#: Prompt tokens kept (Whisper allows 223; a short prompt biases without taking over).
_PROMPT_TOKENS = 64
_REPEAT = re.compile(r"\b(\w+)(?:[\s,.]+\1\b){3,}", re.IGNORECASE)


class FasterWhisperBackend(SttBackend):
    """Whisper through faster-whisper/CTranslate2, loaded once from a local folder.

    Args:
        model: folder of a CTranslate2 Whisper model (``model.bin``, ``config.json``,
            ``tokenizer.json``, ``vocabulary.json``).
        device: "cpu", "cuda" or "auto".
        compute_type: CTranslate2 quantisation ("int8" on CPU).
        language: language code ("en"; "en-us" is cut to "en").
        decoders: transcriptions run at once over the shared weights; more queue.
        threads: CPU threads per transcription (0: the cores divided by `decoders`).
        beam_size: beam search width (1 is greedy: faster, a little less accurate).
        window: the shortest encoder window in seconds (see the module docstring).
        partials: seconds of new audio between interim transcripts (0: none).

    Raises:
        ModelLoadError: faster-whisper is not installed, or the model folder is
            missing or unloadable (the message names "faster-whisper" and it).
    """

    name = "faster-whisper"
    punctuates = True

    def __init__(
        self,
        model: Path,
        device: str = "cpu",
        compute_type: str = "int8",
        language: str = "en",
        *,
        decoders: int = 1,
        threads: int = 0,
        beam_size: int = 4,
        window: float = 10.0,
        partials: float = 0.0,
    ) -> None:
        try:
            import faster_whisper  # type: ignore[import-untyped]
            from faster_whisper.tokenizer import Tokenizer  # type: ignore[import-untyped]
        except ImportError as exc:
            raise ModelLoadError(
                f"faster-whisper: package not installed (model {model}): {exc}"
            ) from exc
        self.model = Path(model)
        if not (self.model / "model.bin").is_file():
            raise ModelLoadError(
                f"faster-whisper: no model in {self.model} (model.bin missing; "
                "`python -m mediaserver.pipeline.stt.models` installs the default)"
            )
        self.language = language.split("-")[0].lower() or "en"
        self.decoders = max(1, decoders)
        if threads <= 0:
            threads = max(1, (os.cpu_count() or 1) // self.decoders)
        self.beam_size = max(1, beam_size)
        self.window_frames = min(_MAX_FRAMES, max(100, round(window * 100)))
        self.partial_samples = round(partials * STT_RATE)
        try:
            whisper: Any = faster_whisper.WhisperModel(
                str(self.model),
                device=device,
                compute_type=compute_type,
                cpu_threads=threads,
                num_workers=self.decoders,
                local_files_only=True,
            )
            self._tokenizer: Any = Tokenizer(
                whisper.hf_tokenizer,
                whisper.model.is_multilingual,
                task="transcribe",
                language=self.language if whisper.model.is_multilingual else None,
            )
        except Exception as exc:  # CTranslate2 raises RuntimeError, ValueError, OSError...
            raise ModelLoadError(f"faster-whisper: cannot load model {self.model}: {exc}") from exc
        self._ct2: Any = whisper.model
        self._features: Any = whisper.feature_extractor
        self._ctranslate2: Any = __import__("ctranslate2")
        self._lock = threading.Lock()
        #: Transcriptions run so far (for tests and metrics).
        self.transcriptions = 0

    def prompt_for(self, hints: SttHints) -> list[int]:
        """Whisper "previous text" tokens for `hints` (its phrases and terms; none: empty)."""
        phrases = list(dict.fromkeys(p for p in (*hints.phrases, *hints.terms) if p))
        if not phrases:
            return []
        text = " " + ", ".join(phrases) + "."
        tokens: list[int] = self._tokenizer.encode(text)
        return tokens[-_PROMPT_TOKENS:]

    def open(self, hints: SttHints) -> FasterWhisperStream:
        """A buffering stream biased by `hints` (see `prompt_for`)."""
        return FasterWhisperStream(self, self.prompt_for(hints))

    def transcribe(self, audio: npt.NDArray[np.float32], prompt: list[int] | None = None) -> str:
        """Transcribe 16 kHz float audio in [-1, 1] (blocking; several threads may call).

        Args:
            audio: the samples.
            prompt: previous-text tokens that bias the decoder, or None.

        Returns:
            The text, stripped ("" when Whisper hears no speech).

        Raises:
            SttError: transcription failed.
        """
        texts = []
        for at in range(0, max(len(audio), 1), _PIECE):
            piece = audio[at : at + _PIECE]
            if piece.size == 0:
                continue
            text = self._piece(piece, prompt)
            if prompt and self._prompt_took_over(text, prompt, piece.size):
                bare = self._piece(piece, None)
                if len(bare.split()) >= len(text.split()) or _words(text) <= _words(
                    self._tokenizer.decode(prompt)
                ):
                    text = bare
            texts.append(text)
        return " ".join(t for t in texts if t).strip()

    def _prompt_took_over(self, text: str, prompt: list[int], samples: int) -> bool:
        """The prompted reading stopped early, or is only the prompt said back."""
        if len(text.split()) < _MIN_WORDS_PER_S * samples / STT_RATE:
            return True
        return bool(_words(text)) and _words(text) <= _words(self._tokenizer.decode(prompt))

    def _piece(self, audio: npt.NDArray[np.float32], prompt: list[int] | None) -> str:
        frames = min(_MAX_FRAMES, max(self.window_frames, audio.size // _HOP + _TAIL_FRAMES))
        padded = np.zeros(frames * _HOP, dtype=np.float32)
        padded[: min(audio.size, padded.size)] = audio[: padded.size]
        tokenizer = self._tokenizer
        sot = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        ids = [tokenizer.sot_prev, *prompt, *sot] if prompt else sot
        # Whisper speaks ~3 tokens a second; 8 per second plus a margin never cuts speech.
        budget = min(448, len(ids) + 16 + int(8 * audio.size / STT_RATE))
        try:
            features = self._features(padded, padding=0)[:, :frames]
            view = self._ctranslate2.StorageView.from_array(
                np.ascontiguousarray(features[None], dtype=np.float32)
            )
            encoded = self._ct2.encode(view, to_cpu=False)
            (result,) = self._ct2.generate(
                encoded,
                [ids],
                beam_size=self.beam_size,
                max_length=budget,
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=True,
            )
        except Exception as exc:
            raise SttError(f"faster-whisper: transcription failed: {exc}") from exc
        with self._lock:
            self.transcriptions += 1
        if result.no_speech_prob > _NO_SPEECH_PROB and result.scores[0] < _LOW_LOGPROB:
            return ""
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        if prompt and tokens[: len(prompt)] == prompt:
            tokens = tokens[len(prompt) :]  # the prompt echoed back
        text: str = tokenizer.decode(tokens).strip()
        # A decoder loop ("three three three three ...") keeps one of the repeats.
        return _REPEAT.sub(r"\1", text)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


class FasterWhisperStream(SttStream):
    """Buffers a turn; transcribes it on `pause` (speculatively) or at `finalise`."""

    def __init__(self, backend: FasterWhisperBackend, prompt: list[int]) -> None:
        self._backend = backend
        self._prompt = prompt
        self._chunks: list[npt.NDArray[np.int16]] = []
        self._samples = 0
        self._since_partial = 0
        self._text = ""
        #: (samples transcribed, text) from the last pause, while still valid.
        self._guess: tuple[int, str] | None = None

    def _audio(self) -> npt.NDArray[np.float32]:
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return (pcm.astype(np.float32) / 32768.0).astype(np.float32)

    def feed(self, pcm: np.ndarray) -> Transcript | None:
        """Buffer audio; with `partials` on, transcribe the turn so far every so often.

        Raises:
            SttError: an interim transcription failed.
        """
        samples = as_mono_int16(pcm)
        if samples.size == 0:
            return None
        self._chunks.append(samples.copy())
        self._samples += samples.size
        self._since_partial += samples.size
        every = self._backend.partial_samples
        if not every or self._since_partial < every:
            return None
        self._since_partial = 0
        text = self._backend.transcribe(self._audio(), self._prompt)
        if text == self._text:
            return None
        self._text = text
        return Transcript(text, final=False)

    def pause(self) -> Transcript | None:
        """The caller stopped: transcribe what we have now, for `finalise` to return.

        Returns:
            The guess as a partial transcript when it changed the text.

        Raises:
            SttError: the transcription failed.
        """
        if not self._samples or (self._guess is not None and self._guess[0] == self._samples):
            return None
        text = self._backend.transcribe(self._audio(), self._prompt)
        self._guess = (self._samples, text)
        if not text or text == self._text:
            return None
        self._text = text
        return Transcript(text, final=False)

    def resume(self) -> None:
        """The caller speaks again: the guess no longer covers the turn."""
        self._guess = None

    def finalise(self) -> Transcript:
        """The turn's transcript: the pause's guess when still valid, else decoded now.

        Raises:
            SttError: the transcription failed.
        """
        guess, audio = self._guess, self._audio()
        self.close()
        if guess is not None:
            return Transcript(guess[1], final=True)
        if audio.size == 0:
            return Transcript("", final=True)
        return Transcript(self._backend.transcribe(audio, self._prompt), final=True)

    def close(self) -> None:
        """Drop the buffered audio and the guess."""
        self._chunks, self._samples, self._since_partial, self._text = [], 0, 0, ""
        self._guess = None
