"""espeak-ng text-to-speech, driven in-process through ctypes.

libespeak-ng comes from the `espeakng-loader` wheel (library and its matching
data folder), else from the system (Debian's libespeak-ng1, with the data path
compiled into it). The library is a process singleton with global state and
no locking of its own, so every call into it goes through `_LOCK`, and it is
initialised once per process (`espeak_Terminate` is never called: another
backend object may still use it).

Synthesis runs with AUDIO_OUTPUT_SYNCHRONOUS: `espeak_Synth` calls our synth
callback with the audio (in ~60 ms buffers) and the events inside it, and
returns when the text is done. espeak's word events say where each word starts
in the text (characters, counted on the decoded UTF-8 text, so they match
Python `str` offsets) and in the audio (ms); `word_chunks` cuts the audio at
the word starts into one `TtsChunk` per word.

Streaming: a Python generator cannot yield from inside a C callback, so true
streaming would need a second thread handing buffers over through a queue.
espeak-ng synthesises a clause several hundred times faster than real time
(a 10-word clause in about 1-3 ms), which is less than that hand-over would
save, so `synthesize` synthesises the whole text (the caller passes one clause)
under the lock, releases it, and then yields the word chunks.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.pipeline.tts.base import TtsBackend, TtsChunk, TtsError

__all__ = ["EspeakBackend", "word_chunks"]

# ---------------------------------------------------------------- speak_lib.h

AUDIO_OUTPUT_SYNCHRONOUS = 2
espeakINITIALIZE_DONT_EXIT = 0x8000  # without it espeak calls exit() on a bad data path
POS_CHARACTER = 1
espeakCHARS_UTF8 = 1
# Keep the pause after the clause's final punctuation: the caller synthesises a
# reply clause by clause, and the pauses make the clauses sound like one text
# (espeak leaves the last pause out otherwise). Costs ~0.3 s after a full stop.
espeakENDPAUSE = 0x1000
espeakRATE = 1
EE_OK = 0
espeakEVENT_LIST_TERMINATED = 0
espeakEVENT_WORD = 1

#: Milliseconds of audio per synth callback (0 would be espeak's default, 60 ms).
BUFLENGTH_MS = 200


class _EventId(ctypes.Union):
    _fields_ = (
        ("number", ctypes.c_int),  # WORD and SENTENCE events
        ("name", ctypes.c_char_p),  # MARK and PLAY events
        ("string", ctypes.c_char * 8),  # PHONEME events
    )


class _Event(ctypes.Structure):
    """espeak_EVENT (API revision 12, espeak-ng 1.49-1.52): 40 bytes on 64-bit."""

    _fields_ = (
        ("type", ctypes.c_int),  # espeak_EVENT_TYPE (an enum: int-sized)
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character position
        ("length", ctypes.c_int),  # word length in characters
        ("audio_position", ctypes.c_int),  # ms from the start of this espeak_Synth
        ("sample", ctypes.c_int),  # internal use
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    )


class _Voice(ctypes.Structure):
    """espeak_VOICE, as returned by espeak_ListVoices."""

    _fields_ = (
        ("name", ctypes.c_char_p),
        # (priority byte, language string, NUL) pairs, ended by a 0 priority byte.
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)

# ---------------------------------------------------------------- engine

#: Guards every call into libespeak-ng (not thread-safe, one instance per process).
_LOCK = threading.Lock()
_ENGINE: _Engine | None = None


@dataclass(frozen=True)
class _Word:
    """One espeak word event: 1-based character position, length, ms into the audio."""

    text_position: int
    length: int
    audio_position: int


class _Engine:
    """The initialised library; every method must be called with `_LOCK` held."""

    def __init__(self, lib: ctypes.CDLL, library: str, data: str | None) -> None:
        _declare(lib)
        rate = int(
            lib.espeak_Initialize(
                AUDIO_OUTPUT_SYNCHRONOUS,
                BUFLENGTH_MS,
                None if data is None else data.encode(),
                espeakINITIALIZE_DONT_EXIT,
            )
        )
        if rate <= 0:
            where = data or "the library's built-in data path"
            raise ModelLoadError(f"espeak-ng: {library} failed to initialise with data {where}")
        self.lib = lib
        self.library = library
        self.data = data
        self.sample_rate = rate
        # The ctypes thunk must outlive every synthesis: keep a reference.
        self._callback = _SYNTH_CALLBACK(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)
        self._pcm: list[np.ndarray] = []
        self._words: list[_Word] = []
        self._error: BaseException | None = None
        self._voice: str | None = None
        self._rate: int | None = None
        self._catalogue: dict[str, str] | None = None
        self._listed: list[str] = []

    # -- callback (runs inside espeak_Synth, on the synthesising thread)

    def _on_synth(
        self, wav: ctypes._Pointer[ctypes.c_short], numsamples: int, events: ctypes._Pointer[_Event]
    ) -> int:
        try:
            if numsamples > 0 and wav:
                raw = ctypes.string_at(wav, numsamples * 2)
                self._pcm.append(np.frombuffer(raw, dtype=np.int16))
            if events:
                i = 0
                while events[i].type != espeakEVENT_LIST_TERMINATED:
                    event = events[i]
                    if event.type == espeakEVENT_WORD:
                        self._words.append(
                            _Word(event.text_position, event.length, event.audio_position)
                        )
                    i += 1
        except BaseException as exc:  # an exception must not unwind through C
            self._error = exc
            return 1  # abort the synthesis
        return 0

    # -- voices

    def catalogue(self) -> dict[str, str]:
        """Lower-case voice name, file name and language -> voice identifier."""
        if self._catalogue is None:
            by_language: dict[str, tuple[int, str]] = {}
            names: dict[str, str] = {}
            listed: list[str] = []
            voices = self.lib.espeak_ListVoices(None)
            i = 0
            while voices and voices[i]:
                voice = voices[i].contents
                i += 1
                if not voice.identifier:
                    continue
                identifier = voice.identifier.decode("utf-8", "replace")
                names[identifier.lower()] = identifier
                names[identifier.rsplit("/", 1)[-1].lower()] = identifier
                if voice.name:
                    names[voice.name.decode("utf-8", "replace").lower()] = identifier
                listed.append(identifier.rsplit("/", 1)[-1].lower())
                for priority, language in _languages(voice.languages):
                    listed.append(language)
                    best = by_language.get(language)
                    if best is None or priority < best[0]:
                        by_language[language] = (priority, identifier)
            # Language codes ("en-gb") are what people configure; file names
            # ("en") and display names win when they collide with one.
            self._catalogue = {lang: ident for lang, (_, ident) in by_language.items()}
            self._catalogue.update(names)
            self._listed = sorted(set(listed))
        return self._catalogue

    def languages(self) -> list[str]:
        self.catalogue()
        return list(self._listed)

    def select(self, voice: str, rate: int) -> None:
        """Make `voice` and `rate` current (cheap when they already are)."""
        if voice != self._voice:
            self._voice = None  # a failed switch leaves espeak's voice unknown
            if self.lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
                # Not a voice file name: try language codes and display names.
                base, plus, variant = voice.partition("+")
                identifier = self.catalogue().get(base.strip().lower())
                if (
                    identifier is None
                    or self.lib.espeak_SetVoiceByName((identifier + plus + variant).encode())
                    != EE_OK
                ):
                    raise TtsError(f"espeak-ng: unknown voice {voice!r}")
            self._voice = voice
            self._rate = None  # re-apply: a voice file may set its own speed
        if rate != self._rate:
            if self.lib.espeak_SetParameter(espeakRATE, rate, 0) != EE_OK:
                raise TtsError(f"espeak-ng: cannot set rate {rate}")
            self._rate = rate

    # -- synthesis

    def synthesize(self, text: str, voice: str, rate: int) -> tuple[np.ndarray, list[_Word]]:
        """All audio of `text` and its word events."""
        self.select(voice, rate)
        # A NUL would end the C string early; surrogates cannot be encoded.
        # Both replacements keep one character per character, so positions hold.
        data = text.replace("\0", " ").encode("utf-8", "replace")
        self._pcm, self._words, self._error = [], [], None
        try:
            err = int(
                self.lib.espeak_Synth(
                    data,
                    len(data) + 1,
                    0,
                    POS_CHARACTER,
                    0,
                    espeakCHARS_UTF8 | espeakENDPAUSE,
                    None,
                    None,
                )
            )
            error = self._error
            pcm = np.concatenate(self._pcm) if self._pcm else np.zeros(0, np.int16)
            words = self._words
        finally:
            self._pcm, self._words, self._error = [], [], None
        if error is not None:
            raise TtsError(f"espeak-ng: synthesis callback failed: {error!r}") from error
        if err != EE_OK:
            raise TtsError(f"espeak-ng: espeak_Synth failed (error {err})")
        return pcm, words


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and result types, so ctypes converts (and 64-bit pointers survive)."""
    lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = (_SYNTH_CALLBACK,)
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_ListVoices.argtypes = (ctypes.c_void_p,)
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    lib.espeak_Synth.argtypes = (
        ctypes.c_char_p,  # text
        ctypes.c_size_t,  # size (unused in synchronous mode)
        ctypes.c_uint,  # position
        ctypes.c_int,  # position_type (enum)
        ctypes.c_uint,  # end_position
        ctypes.c_uint,  # flags
        ctypes.c_void_p,  # unique_identifier
        ctypes.c_void_p,  # user_data
    )
    lib.espeak_Synth.restype = ctypes.c_int


def _languages(address: int | None) -> list[tuple[int, str]]:
    """Decode espeak_VOICE.languages: (priority, language) pairs."""
    out: list[tuple[int, str]] = []
    if not address:
        return out
    pos = address
    while True:
        priority = ctypes.string_at(pos, 1)[0]
        if priority == 0:
            return out
        language = ctypes.string_at(pos + 1)  # up to the NUL
        out.append((priority, language.decode("utf-8", "replace").lower()))
        pos += len(language) + 2


def _candidates(
    library: Path | None, data: Path | None
) -> tuple[list[tuple[str, str | None]], list[str]]:
    """(library, data) pairs to try in order, and notes on sources that gave none."""
    data_str = None if data is None else str(data)
    if library is not None:
        return [(str(library), data_str)], []
    found: list[tuple[str, str | None]] = []
    notes: list[str] = []
    try:
        import espeakng_loader  # type: ignore[import-untyped]

        wheel_library = str(espeakng_loader.get_library_path())
        found.append((wheel_library, data_str or str(espeakng_loader.get_data_path())))
    except (ImportError, RuntimeError) as exc:
        notes.append(f"espeakng_loader ({exc})")
    system = ctypes.util.find_library("espeak-ng")
    if system:
        found.append((system, data_str))  # None: the data path compiled into it
    else:
        notes.append('ctypes.util.find_library("espeak-ng") (not found)')
    return found, notes


def _load_engine(library: Path | None, data: Path | None) -> _Engine:
    """The process's engine, initialised on first use. Call with `_LOCK` held."""
    global _ENGINE
    if _ENGINE is not None:
        wanted_library = None if library is None else str(library)
        wanted_data = None if data is None else str(data)
        if (wanted_library not in (None, _ENGINE.library)) or (
            wanted_data not in (None, _ENGINE.data)
        ):
            raise ModelLoadError(
                f"espeak-ng: already initialised from {_ENGINE.library} (data {_ENGINE.data}); "
                f"libespeak-ng is one per process, cannot also load {library} (data {data})"
            )
        return _ENGINE
    candidates, tried = _candidates(library, data)
    for lib_path, data_path in candidates:
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError as exc:
            tried.append(f"{lib_path} ({exc})")
            continue
        try:
            _ENGINE = _Engine(lib, lib_path, data_path)
        except ModelLoadError as exc:
            tried.append(f"{lib_path} with data {data_path} ({exc})")
            continue
        except AttributeError as exc:  # a library without the espeak API
            tried.append(f"{lib_path} ({exc})")
            continue
        return _ENGINE
    raise ModelLoadError(
        "espeak-ng: cannot load libespeak-ng; tried: "
        + ("; ".join(tried) or "nothing")
        + " (install the espeakng-loader wheel or the libespeak-ng1 package)"
    )


# ---------------------------------------------------------------- word chunks

_TOKEN = re.compile(r"\S+")
# Punctuation at the edges of a token that espeak does not voice: a word's span
# leaves it out ("today?" voices "today"). Symbols that are read out ($ % & #)
# stay in.
_SILENT = ".,;:!?\u2026\"'\u201c\u201d\u2018\u2019\u00ab\u00bb()[]{}\u00bf\u00a1-\u2013\u2014*_"


def _word_spans(text: str) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Words of `text` and a lookup from whitespace-separated tokens to them.

    Returns (word spans, token starts, word index of each token). A token of
    punctuation only is no word and belongs to the word after it (before it
    when it comes last).
    """
    words: list[tuple[int, int]] = []
    starts: list[int] = []
    owner: list[int] = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        lead = len(token) - len(token.lstrip(_SILENT))
        core = token.strip(_SILENT)
        starts.append(match.start())
        if core:
            start = match.start() + lead
            words.append((start, start + len(core)))
            owner.append(len(words) - 1)
        else:
            # espeak reports the word after a lone dash at the dash.
            owner.append(len(words))  # past the last word when none follows: fixed below
    owner = [min(w, len(words) - 1) for w in owner]
    return words, starts, owner


def word_chunks(text: str, pcm: np.ndarray, sample_rate: int, words: list[_Word]) -> list[TtsChunk]:
    """Cut the audio of `text` at espeak's word starts: one chunk per word.

    A chunk's span is its word (edge punctuation excluded). espeak's positions
    are snapped to the whitespace-separated token they fall in, because they
    are approximate for text it expands ("$1,000" gives several word events,
    an emoji's second word points at the space after it); several events in
    one token make one chunk. A chunk runs from its word's start in the audio
    to the next word's start, so the chunks' audio concatenates to `pcm`; a word
    espeak gave no event is voiced by the chunk before it (its span covers it;
    this happens after French elisions, where espeak's positions lag: "n'est-ce
    pas" is one chunk).
    Audio before the first word is a chunk with start == end == 0.
    """
    total = len(pcm)
    if total == 0:
        return []
    spans, starts, owner = _word_spans(text)
    if not spans:
        return [TtsChunk(pcm, 0, 0)]  # a pause, or text without words
    # (first sample, word index) for each word that starts a chunk.
    cuts: list[tuple[int, int]] = []
    for word in words:
        char = min(max(word.text_position - 1, 0), len(text))
        token = max(bisect.bisect_right(starts, char) - 1, 0)
        index = owner[token]
        sample = min(max(round(word.audio_position * sample_rate / 1000), 0), total)
        if cuts:
            if index <= cuts[-1][1]:
                continue  # the same word again (or espeak went backwards)
            sample = max(sample, cuts[-1][0])
        cuts.append((sample, index))
    if not cuts:
        return [TtsChunk(pcm, spans[0][0], spans[-1][1])]
    # Words before espeak's first word event belong to the first chunk.
    cuts[0] = (cuts[0][0], 0)
    chunks: list[TtsChunk] = []
    if cuts[0][0] > 0:
        chunks.append(TtsChunk(pcm[: cuts[0][0]], 0, 0))
    pending_start: int | None = None  # span start carried over from an empty chunk
    for k, (sample, index) in enumerate(cuts):
        last = k + 1 == len(cuts)
        end_sample = total if last else cuts[k + 1][0]
        end_word = len(spans) - 1 if last else cuts[k + 1][1] - 1
        start_char = spans[index][0] if pending_start is None else pending_start
        if end_sample == sample:
            if last:
                # No audio left for the last word(s): the chunk before voices
                # them (there is one: total > 0 and this chunk is empty).
                prev = chunks[-1]
                first = prev.start if prev.end > prev.start else start_char
                chunks[-1] = TtsChunk(prev.pcm, first, spans[end_word][1])
            else:
                # No audio of its own: the next chunk voices this word too.
                pending_start = start_char
            continue
        pending_start = None
        chunks.append(TtsChunk(pcm[sample:end_sample], start_char, spans[end_word][1]))
    return chunks


# ---------------------------------------------------------------- backend


class EspeakBackend(TtsBackend):
    """espeak-ng voices (formant synthesis, 22050 Hz, one chunk per word).

    Args:
        voice: Default voice: an espeak voice file name ("en-us", "en",
            "en-gb-x-rp", with an optional "+variant" such as "en-us+f3"), a
            language code ("en-gb", "fr") or a display name ("English (America)").
        rate: Speaking rate in words per minute (espeak clamps it to 80-450).
        library: libespeak-ng to load; default: the espeakng-loader wheel's,
            else the system's.
        data: espeak-ng-data folder; default: the wheel's with the wheel's
            library, else the library's built-in path.

    Raises:
        ModelLoadError: No usable libespeak-ng (the message lists the paths
            tried), the process already initialised another one, or `voice`
            is unknown.
    """

    name = "espeak-ng"
    takes_voice = True

    def __init__(
        self,
        voice: str = "en-us",
        rate: int = 175,
        library: Path | None = None,
        data: Path | None = None,
    ) -> None:
        with _LOCK:
            self._engine = _load_engine(library, data)
            try:
                self._engine.select(voice, rate)
            except TtsError as exc:
                raise ModelLoadError(str(exc)) from exc
        self.sample_rate = self._engine.sample_rate
        self.voice = voice
        self.rate = rate

    def synthesize(self, text: str, voice: str | None = None) -> Iterator[TtsChunk]:
        """Yield the audio of `text`, one chunk per word, in text order.

        The whole text is synthesised at the first `next()` (a clause takes
        a few ms), with the library lock held only meanwhile. espeak-ng keeps
        wave-generator state from one synthesis to the next, so the same text
        can come out a few samples longer or shorter (well under 1 %)
        depending on what was synthesised before.

        Args:
            text: The text (normally one clause); plain text, not SSML.
            voice: A voice for this call instead of the default.

        Raises:
            TtsError: Unknown voice, or espeak-ng failed.
        """
        if not text:
            return
        with _LOCK:
            pcm, words = self._engine.synthesize(text, voice or self.voice, self.rate)
        yield from word_chunks(text, pcm, self.sample_rate, words)

    def voices(self) -> list[str]:
        """Voice file names and language codes of the installed voices ("en-us", "en-gb", "fr")."""
        with _LOCK:
            return self._engine.languages()
