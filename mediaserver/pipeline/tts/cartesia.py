"""Cartesia text-to-speech over its WebSocket API (`/tts/websocket`).

One connection per clause, one generation request on it:

* Connect to `{base_url}/tts/websocket?cartesia_version=<date>` with the key
  in the `X-API-Key` header and the same date in `Cartesia-Version`
  (Cartesia's API conventions: the query parameter takes precedence on
  WebSockets; the key travels as a header so it stays out of URLs and logs).
* Send {"model_id", "transcript", "voice": {"mode": "id", "id"},
  "output_format": {"container": "raw", "encoding": "pcm_s16le",
  "sample_rate"}, "context_id", "add_timestamps": true, "continue": false}.
* Receive, all tagged with our `context_id`: {"type": "chunk", "data":
  base64 PCM}, {"type": "timestamps", "word_timestamps": {"words", "start",
  "end"}} (seconds from the start of the generation's audio), possibly
  "flush_done" / "phoneme_timestamps" (ignored), and finally {"type": "done"}
  or {"type": "error", ...}.

Word timestamps: Cartesia's words are matched to the clause's whitespace-
delimited words in order (case and punctuation ignored, so "Hello" matches
"Hello,"); a provider word that continues a clause word ("well" + "known"
for "well-known") belongs to it, and one that matches nothing nearby is
skipped. Each matched word's start becomes a cut for `WordCutter`: one chunk
per word with exact character spans, given out as soon as the audio after
it has arrived. Words never matched are claimed by the chunk before them or
the clause's last chunk, so nothing counts as heard before its audio went out.

Errors: a refused handshake (401/403: auth), an error message (older API
versions send {"error": "..."}, newer {"title", "message", "error_code"},
both with "status_code"), a close before "done", or no message within what
is left of `timeout` all raise `TtsError`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from mediaserver.pipeline.settings import TtsSettings
from mediaserver.pipeline.tts.base import TtsBackend, TtsChunk
from mediaserver.pipeline.tts.cloud import (
    Deadline,
    Pcm16Decoder,
    WordCutter,
    check_rate,
    finish,
    open_clause,
    provider_error,
    recv_json,
    require_websockets,
    ws_settings,
)

__all__ = [
    "CARTESIA_URL",
    "CARTESIA_VERSION",
    "RATES",
    "CartesiaBackend",
    "WordMatcher",
    "from_settings",
]

#: The default `base_url`.
CARTESIA_URL = "wss://api.cartesia.ai"
#: The API version (a date) this client was written against.
CARTESIA_VERSION = "2025-04-16"
#: Sample rates Cartesia's raw PCM output offers.
RATES = (8000, 16000, 22050, 24000, 44100, 48000)


def _norm(word: str) -> str:
    """Letters and digits only, case-folded: what two spellings of a word share."""
    return "".join(c for c in word.casefold() if c.isalnum())


class WordMatcher:
    """Match a provider's word list, in order, to the clause's words.

    Args:
        text: The clause.
        tokens: Its whitespace-delimited words (`cloud.tokens`).
    """

    #: Clause words a provider word may skip over to find its match.
    LOOKAHEAD = 3

    def __init__(self, text: str, tokens: list[tuple[int, int]]) -> None:
        self._words = [_norm(text[s:e]) for s, e in tokens]
        self._next = 0  # first clause word not matched yet
        self._rest = ""  # what is left of the last matched word

    def match(self, word: str) -> int | None:
        """The clause word `word` starts, or None (it continues one, or matches none)."""
        w = _norm(word)
        if not w:
            return None  # punctuation only
        if self._rest.startswith(w):
            self._rest = self._rest[len(w) :]
            return None
        stop = min(self._next + self.LOOKAHEAD + 1, len(self._words))
        for k in range(self._next, stop):
            candidate = self._words[k]
            if candidate and candidate.startswith(w):
                self._next = k + 1
                self._rest = candidate[len(w) :]
                return k
        return None


class CartesiaBackend(TtsBackend):
    """Cartesia voices over the TTS WebSocket (registry name "cartesia").

    Args:
        api_key: Cartesia API key.
        voice: Default voice id.
        model: `model_id` ("sonic-2", "sonic-turbo", ...).
        base_url: WebSocket root ("wss://api.cartesia.ai").
        sample_rate: Rate of the raw pcm_s16le output (one of `RATES`).
        language: `language` of the request, or None for the model's default.
        version: `Cartesia-Version` date.
        timeout: Seconds one clause may take, from connecting to "done".

    Raises:
        ModelLoadError: The `websockets` package is missing, or the rate is
            not one Cartesia offers.
    """

    name = "cartesia"

    def __init__(
        self,
        api_key: str,
        voice: str,
        model: str = "sonic-2",
        *,
        base_url: str = CARTESIA_URL,
        sample_rate: int = 16000,
        language: str | None = None,
        version: str = CARTESIA_VERSION,
        timeout: float = 5.0,
    ) -> None:
        require_websockets(self.name)
        check_rate(self.name, sample_rate, RATES)
        self.base_url = base_url.rstrip("/")
        self.voice = voice
        self.model = model
        self.sample_rate = sample_rate
        self.language = language
        self.version = version
        self.timeout = timeout
        self._api_key = api_key

    @property
    def url(self) -> str:
        """The WebSocket URL (the version as a query parameter, no key)."""
        return f"{self.base_url}/tts/websocket?{urlencode({'cartesia_version': self.version})}"

    def request(self, text: str, context_id: str, voice: str | None = None) -> dict[str, Any]:
        """The generation request for one clause."""
        body: dict[str, Any] = {
            "model_id": self.model,
            "transcript": text,
            "voice": {"mode": "id", "id": voice or self.voice},
            "output_format": {
                "container": "raw",
                "encoding": "pcm_s16le",
                "sample_rate": self.sample_rate,
            },
            "context_id": context_id,
            "add_timestamps": True,
            "continue": False,
        }
        if self.language:
            body["language"] = self.language
        return body

    def synthesize(self, text: str, voice: str | None = None) -> Iterator[TtsChunk]:
        """Yield the audio of `text`, one chunk per word, as it streams in.

        Args:
            text: The text (normally one clause).
            voice: A voice id for this call instead of the default.

        Raises:
            TtsError: Auth refused, a server error, connection refused or
                closed before "done", no message within `timeout`, or no
                audio at all.
        """
        if not text.strip():
            return
        deadline = Deadline(self.timeout)
        cutter = WordCutter(text)
        matcher = WordMatcher(text, cutter.tokens)
        context_id = uuid.uuid4().hex
        headers = {"X-API-Key": self._api_key, "Cartesia-Version": self.version}
        decoder = Pcm16Decoder(self.name)
        request = [self.request(text, context_id, voice)]
        with open_clause(self.name, self.url, headers, request, deadline) as ws:
            while True:
                data = recv_json(self.name, ws, deadline)
                if data.get("context_id") not in (None, context_id):
                    continue  # not ours (one request per connection: should not happen)
                kind = data.get("type")
                if kind == "error" or (data.get("error") and kind != "chunk"):
                    raise provider_error(self.name, data)
                if kind == "chunk" and isinstance(data.get("data"), str):
                    yield from cutter.add_audio(decoder.feed(data["data"]))
                elif kind == "timestamps":
                    yield from self._words(data.get("word_timestamps"), matcher, cutter)
                if kind == "done" or (data.get("done") is True and kind != "chunk"):
                    break
        yield from finish(self.name, cutter)

    def _words(self, stamps: object, matcher: WordMatcher, cutter: WordCutter) -> list[TtsChunk]:
        if not isinstance(stamps, dict):
            return []
        words, starts = stamps.get("words"), stamps.get("start")
        if not isinstance(words, list) or not isinstance(starts, list):
            return []
        out: list[TtsChunk] = []
        for word, start in zip(words, starts):
            if not isinstance(word, str) or isinstance(start, bool):
                continue
            if not isinstance(start, (int, float)):
                continue
            token = matcher.match(word)
            if token is not None:
                out += cutter.add_word(token, round(start * self.sample_rate))
        return out

    def voices(self) -> list[str]:
        """The configured voice id."""
        return [self.voice]


def from_settings(settings: TtsSettings) -> CartesiaBackend:
    """Build the backend from the `tts` settings (`voice` is the voice id).

    Raises:
        ModelLoadError: `tts.api_key` or `tts.voice` missing, an unset
            `env:` variable, a bad `base_url` or rate, or no websockets package.
    """
    key, base_url = ws_settings(
        settings,
        "cartesia",
        default_env="CARTESIA_API_KEY",
        default_url=CARTESIA_URL,
        voice="a Cartesia voice id",
    )
    return CartesiaBackend(
        key,
        settings.voice,
        settings.provider_model or "sonic-2",
        base_url=base_url,
        sample_rate=settings.sample_rate or 16000,
        timeout=settings.timeout,
    )
