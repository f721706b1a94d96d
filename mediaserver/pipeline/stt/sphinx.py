"""PocketSphinx speech-to-text: the embedded, offline default backend.

Biasing (measured on espeak-ng speech, 5 phrases x {16 kHz, 8 kHz u-law round
trip}, 46 words; hints = 4 phrases + digits + yes/no/please):

* the full en-us n-gram LM (no bias): 9-11/46 words right, 1/10 exact, ~8x
  real time on one core;
* an n-gram LM built on the fly from the hints (``pocketsphinx.lm.ArpaBoLM``):
  20/46, and adding an LM search to a decoder costs ~1.1 s (it rebuilds the
  lexicon tree), too slow to do per caller;
* keyword spotting (``add_kws``) over the same list: useless here, it fires
  "oh"/"two"/"eight" everywhere;
* a JSGF grammar looping over the hinted phrases and words: 37/46 words, 4-6/10
  exact (varies with the noise-floor draw), ~21x real time, and adding the
  grammar to a decoder takes ~0.5 ms and switching searches ~5 us.

So hints become a JSGF loop ``<item>+`` over the phrases and the words, and no
hints means the full LM. A grammar is closed: pocketsphinx cannot combine an
FSG with the n-gram LM in one search. `SttHints.open_vocabulary` is therefore
not honoured: loosening the grammar by also admitting each word of each phrase
on its own was tried and lost words (16 kHz "what is the weather in paris" came
out "what is the weather eight order is"); an agent that needs free speech
gives no hints. Words missing from the dictionary are dropped (logged once).

Digital silence (exact zeros, which G.711 carries unchanged) wrecks the live
cepstral mean normalisation and made grammar decodes return nothing (10/46
words); adding a -64 dBFS noise floor (sigma 20 LSB, seeded, so runs are
reproducible) lifted that to 37/46. Real lines have a louder noise floor, so
the added floor does not change them.

Decoders take ~0.2-0.3 s and ~40 MB to create, so the backend keeps a pool.
Because switching a decoder to another (already added) grammar is microseconds,
the pool is one list of interchangeable decoders, each caching the grammars it
has seen (up to `_MAX_SEARCHES`), rather than one pool per hint set: idle
decoders of one agent then serve another's callers.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

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

__all__ = ["PocketSphinxBackend"]

log = structlog.get_logger("mediaserver.pipeline.stt")

#: Grammars a decoder keeps added before the least recently used is removed.
_MAX_SEARCHES = 16
#: Standard deviation (LSB) of the noise floor added to the audio; see module doc.
_NOISE_SIGMA = 20.0
_WORD = re.compile(r"[a-z0-9']+(?:[-.][a-z0-9']+)*")


def _model_files(model: Path) -> tuple[Path, Path, Path]:
    """The acoustic model dir, dictionary and LM inside an en-us model folder."""
    return model / "en-us", model / "cmudict-en-us.dict", model / "en-us.lm.bin"


class _Decoder:
    """One pocketsphinx decoder and the grammar searches added to it."""

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder
        self.searches: OrderedDict[str, None] = OrderedDict()

    def activate(self, name: str | None, grammar: str | None) -> None:
        if name is None or grammar is None:
            self.decoder.activate_search(None)  # the default: the full LM
            return
        if name not in self.searches:
            if len(self.searches) >= _MAX_SEARCHES:
                old, _ = self.searches.popitem(last=False)
                self.decoder.remove_search(old)
            self.decoder.add_jsgf_string(name, grammar)
        self.searches[name] = None
        self.searches.move_to_end(name)
        self.decoder.activate_search(name)


class PocketSphinxBackend(SttBackend):
    """PocketSphinx with a decoder pool and grammar-based vocabulary bias.

    Args:
        model: folder holding the acoustic model directory ``en-us/``,
            ``cmudict-en-us.dict`` and ``en-us.lm.bin``; default: the one in
            the pocketsphinx wheel.
        pool_size: decoders created up front (more are created on demand and
            kept for reuse).

    Raises:
        ModelLoadError: the pocketsphinx package or the model files are
            missing or unloadable (the message names "pocketsphinx" and the path).
    """

    name = "pocketsphinx"

    def __init__(self, model: Path | None = None, pool_size: int = 2) -> None:
        try:
            import pocketsphinx  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ModelLoadError(f"pocketsphinx: package not installed ({exc})") from exc
        self._ps = pocketsphinx
        if model is None:
            model = Path(pocketsphinx.get_model_path("en-us"))
        self.model = Path(model)
        hmm, dictionary, lm = _model_files(self.model)
        missing = [str(p) for p in (hmm, dictionary, lm) if not p.exists()]
        if missing:
            raise ModelLoadError(
                f"pocketsphinx: model folder {self.model} lacks {', '.join(missing)}"
            )
        self._kwargs: dict[str, Any] = {
            "hmm": str(hmm),
            "dict": str(dictionary),
            "lm": str(lm),
            "samprate": STT_RATE,
            # Keep its C logging off stderr: it prints pages per decoder.
            "loglevel": "FATAL",
            "logfn": "/dev/null",
        }
        self._lock = threading.Lock()
        self._free: list[_Decoder] = []
        self._oov_logged: set[str] = set()
        # Keyed by what shapes the grammar (SttHints itself is unhashable: `extra`).
        self._grammars: dict[tuple[object, ...], tuple[str, str] | None] = {}
        #: Decoders created so far (for tests and metrics).
        self.decoders_created = 0
        # One decoder is needed anyway to look words up in the dictionary, and
        # creating it here turns a corrupt model into a start-up error.
        for _ in range(max(pool_size, 1)):
            self._free.append(self._create())

    def _create(self) -> _Decoder:
        try:
            decoder = self._ps.Decoder(**self._kwargs)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelLoadError(f"pocketsphinx: cannot load model {self.model}: {exc}") from exc
        with self._lock:
            self.decoders_created += 1
        return _Decoder(decoder)

    def prepare(self, hints: SttHints) -> None:
        """Build the grammar for `hints` now, so the first call does not pay for it."""
        if hints.phrases or hints.words:
            self.grammar(hints)

    def acquire(self) -> _Decoder:
        """Take a free decoder from the pool, creating one when none is free."""
        with self._lock:
            if self._free:
                return self._free.pop()
        try:
            return self._create()
        except ModelLoadError as exc:
            raise SttError(str(exc)) from exc

    def release(self, decoder: _Decoder) -> None:
        """Give a decoder back to the pool."""
        with self._lock:
            self._free.append(decoder)

    @property
    def idle_decoders(self) -> int:
        """Decoders in the pool right now."""
        with self._lock:
            return len(self._free)

    def _known(self, word: str, decoder: Any) -> bool:
        if decoder.lookup_word(word) is not None:
            return True
        with self._lock:
            first = word not in self._oov_logged
            self._oov_logged.add(word)
        if first:
            log.warning("stt_hint_oov", backend=self.name, word=word)
        return False

    def grammar(self, hints: SttHints) -> tuple[str, str] | None:
        """The (search name, JSGF text) for `hints`, or None for the full LM.

        Args:
            hints: the agent's vocabulary bias.

        Returns:
            None when the hints hold no word the dictionary knows.
        """
        key = (hints.phrases, hints.words)
        with self._lock:
            if key in self._grammars:
                return self._grammars[key]
        holder = self.acquire()
        try:
            items = self._grammar_items(hints, holder.decoder)
        finally:
            self.release(holder)
        result: tuple[str, str] | None = None
        if items:
            body = " | ".join(items)
            text = f"#JSGF V1.0;\ngrammar hints;\npublic <utt> = <item>+;\n<item> = {body};\n"
            name = "hints-" + hashlib.sha1(text.encode()).hexdigest()[:16]
            result = (name, text)
        with self._lock:
            self._grammars[key] = result
        return result

    def _grammar_items(self, hints: SttHints, decoder: Any) -> list[str]:
        items: dict[str, None] = {}
        for phrase in hints.phrases:
            tokens = _WORD.findall(phrase.lower())
            known = [t for t in tokens if self._known(t, decoder)]
            if known:
                items[" ".join(known)] = None
        for word in hints.words:
            for token in _WORD.findall(word.lower()):
                if self._known(token, decoder):
                    items[token] = None
        return list(items)

    def open(self, hints: SttHints) -> SttStream:
        """A stream biased by `hints` (no decoder is taken until audio arrives).

        Args:
            hints: phrases and words to recognise; empty for free speech.

        Returns:
            A `PocketSphinxStream`.
        """
        search = self.grammar(hints) if (hints.phrases or hints.words) else None
        return PocketSphinxStream(self, search)

    def close(self) -> None:
        """Drop the idle decoders (streams still open keep theirs until closed)."""
        with self._lock:
            self._free.clear()


class PocketSphinxStream(SttStream):
    """One caller's pocketsphinx recogniser; holds a pooled decoder only mid-turn."""

    def __init__(self, backend: PocketSphinxBackend, search: tuple[str, str] | None) -> None:
        self._backend = backend
        self._search = search
        self._decoder: _Decoder | None = None
        self._text = ""
        self._last_partial = ""
        # Seeded: the same audio gives the same transcript run after run.
        self._rng = np.random.default_rng(0)

    @property
    def holds_decoder(self) -> bool:
        """Whether this stream currently holds a pooled decoder."""
        return self._decoder is not None

    def _start(self) -> _Decoder:
        holder = self._backend.acquire()
        try:
            holder.activate(*(self._search or (None, None)))
            holder.decoder.start_utt()
        except (RuntimeError, ValueError, KeyError) as exc:
            # A decoder in an unknown state is not returned to the pool.
            raise SttError(f"pocketsphinx: cannot start utterance: {exc}") from exc
        self._decoder = holder
        self._text = ""
        self._last_partial = ""
        return holder

    def _with_floor(self, pcm: npt.NDArray[np.int16]) -> bytes:
        noise = self._rng.normal(0.0, _NOISE_SIGMA, pcm.shape[0])
        floored = np.clip(pcm.astype(np.float64) + noise, -32768, 32767)
        return np.rint(floored).astype("<i2").tobytes()

    def feed(self, pcm: np.ndarray) -> Transcript | None:
        """Decode more audio.

        Args:
            pcm: 1-D int16 samples at 16 kHz (any length, e.g. a 20 ms frame).

        Returns:
            A partial transcript when the hypothesis text changed, else None.

        Raises:
            SttError: decoding failed (the decoder is dropped, not pooled).
            TypeError: `pcm` is not int16.
        """
        samples = as_mono_int16(pcm)
        if samples.size == 0:
            return None
        holder = self._decoder or self._start()
        try:
            holder.decoder.process_raw(self._with_floor(samples), False, False)
            hyp = holder.decoder.hyp()
        except (RuntimeError, ValueError) as exc:
            self._decoder = None
            raise SttError(f"pocketsphinx: decoding failed: {exc}") from exc
        text = hyp.hypstr.strip() if hyp is not None else ""
        if text == self._text:
            return None
        self._text = text
        if text:
            self._last_partial = text
        return Transcript(text, final=False)

    def finalise(self) -> Transcript:
        """End the turn, return its transcript and give the decoder back.

        A grammar search that never reached its final state has no final
        hypothesis; the last non-empty partial is returned then, since the
        words heard so far are more use to the agent than nothing.

        Returns:
            The final transcript (empty text when nothing was recognised).

        Raises:
            SttError: decoding failed.
        """
        holder = self._decoder
        if holder is None:
            return Transcript("", final=True)
        self._decoder = None
        try:
            holder.decoder.end_utt()
            hyp = holder.decoder.hyp()
        except (RuntimeError, ValueError) as exc:
            raise SttError(f"pocketsphinx: decoding failed: {exc}") from exc
        self._backend.release(holder)
        text = hyp.hypstr.strip() if hyp is not None else ""
        return Transcript(text or self._last_partial, final=True)

    def close(self) -> None:
        """Abandon the turn (if any) and give the decoder back to the pool."""
        holder, self._decoder = self._decoder, None
        if holder is None:
            return
        try:
            holder.decoder.end_utt()
        except (RuntimeError, ValueError):
            return  # a decoder that cannot end its utterance is not reused
        self._backend.release(holder)
