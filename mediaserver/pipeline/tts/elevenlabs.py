"""ElevenLabs text-to-speech over its WebSocket stream-input API.

One connection per clause (the "stream-input" protocol ends a connection
with its end-of-stream message):

1. Connect to `{base_url}/v1/text-to-speech/{voice_id}/stream-input` with
   `model_id`, `output_format=pcm_<rate>` (16-bit little-endian mono PCM),
   `sync_alignment=true` (timing with every audio message) and
   `auto_mode=true` (no chunk schedule: we send whole clauses), and the key
   in the `xi-api-key` header.
2. Send {"text": " "} (with `voice_settings` when a speed is set), then
   {"text": "<clause> ", "flush": true} and {"text": ""} (end of stream).
3. The server answers with {"audio": base64, "alignment": {"chars",
   "charStartTimesMs", "charsDurationsMs"}, "normalizedAlignment": ...}
   messages and finally {"isFinal": true}, then closes.

Alignment: `alignment` lists the characters of the text we sent with their
start times in ms *relative to the audio of the same message* (the API
reference says so; each message's audio is then placed after the previous
ones). Its characters are walked along the clause: every character that
begins a whitespace-delimited word gives that word's start sample, and
`WordCutter` cuts the audio there (one chunk per word, exact character
spans). `normalizedAlignment` (numbers and abbreviations expanded) is used
only when `alignment` is missing, and only where its characters match the
clause. Characters that do not match (a normaliser's rewrite, a restarted
alignment) are skipped: their audio stays with the word before, and the
clause's last chunk claims what was never matched, so nothing is counted as
heard before its audio was sent. The documented duration key is
`charsDurationsMs` while servers have sent `charDurationsMs`; durations are
not needed (cuts are at word starts) so neither is read.

Errors: a refused handshake (401/403: auth), an error message ({"message",
"error", "code"}), a close before `isFinal` (policy close 1008 naming the key:
auth), or no message within what is left of `timeout` all raise `TtsError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

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

__all__ = ["ELEVENLABS_URL", "RATES", "CharAligner", "ElevenLabsBackend", "from_settings"]

#: The default `base_url`.
ELEVENLABS_URL = "wss://api.elevenlabs.io"
#: Sample rates of the `pcm_<rate>` output formats.
RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)


class CharAligner:
    """Walk a provider's character alignment along the clause: word starts out.

    Characters are matched in order against the clause, skipping whitespace.
    A character that does not match where the walk stands is looked for
    further on in the same word (a character the provider left out), or,
    when it starts a word, at the start of one of the next `LOOKAHEAD` words
    (a word the provider rewrote); otherwise it is skipped.

    Args:
        text: The clause as sent.
        tokens: Its whitespace-delimited words (`cloud.tokens`).
    """

    #: Words a rewritten word may make the walk skip.
    LOOKAHEAD = 2

    def __init__(self, text: str, tokens: list[tuple[int, int]]) -> None:
        self.text = text
        self.tokens = tokens
        self._token_at = {start: i for i, (start, _) in enumerate(tokens)}
        # Index of the word each character is in (-1 for whitespace).
        self._word_of = [-1] * len(text)
        for i, (start, end) in enumerate(tokens):
            self._word_of[start:end] = [i] * (end - start)
        self._pos = 0  # next clause position to match
        self._word_start = True  # the previous character was whitespace (or none)

    def feed(self, chars: list[Any], starts_ms: list[Any]) -> list[tuple[int, float]]:
        """(token index, start ms) for each word that starts in these characters."""
        out: list[tuple[int, float]] = []
        text = self.text
        for char, ms in zip(chars, starts_ms):
            if not isinstance(char, str) or not char:
                continue
            if char.isspace():
                self._word_start = True
                continue
            starts_word, self._word_start = self._word_start, False
            if isinstance(ms, bool) or not isinstance(ms, (int, float)):
                continue
            p = self._pos
            while p < len(text) and text[p].isspace():
                p += 1
            if p >= len(text):
                continue
            word = self._word_of[p]
            if text.startswith(char, p):
                at = p
            else:
                at = text.find(char, p, self.tokens[word][1])
                if at < 0 and starts_word:
                    ahead = self.tokens[word + 1 : word + 1 + self.LOOKAHEAD]
                    at = next((s for s, _ in ahead if text.startswith(char, s)), -1)
                if at < 0:
                    continue
            token = self._token_at.get(at)
            if token is not None:
                out.append((token, float(ms)))
            self._pos = at + len(char)
        return out


class ElevenLabsBackend(TtsBackend):
    """ElevenLabs voices over the stream-input WebSocket (registry name "elevenlabs").

    Args:
        api_key: ElevenLabs API key (sent as the `xi-api-key` header).
        voice: Default voice id.
        model: `model_id` ("eleven_flash_v2_5", "eleven_turbo_v2_5", ...).
        base_url: WebSocket root ("wss://api.elevenlabs.io").
        sample_rate: Rate of the `pcm_<rate>` output (one of `RATES`).
        speed: `voice_settings.speed` (ElevenLabs accepts 0.7-1.2); 1.0 sends
            no voice settings (the voice's own apply).
        timeout: Seconds one clause may take, from connecting to `isFinal`.

    Raises:
        ModelLoadError: The `websockets` package is missing, or the rate is
            not one ElevenLabs offers.
    """

    name = "elevenlabs"

    def __init__(
        self,
        api_key: str,
        voice: str,
        model: str = "eleven_flash_v2_5",
        *,
        base_url: str = ELEVENLABS_URL,
        sample_rate: int = 16000,
        speed: float = 1.0,
        timeout: float = 5.0,
    ) -> None:
        require_websockets(self.name)
        check_rate(self.name, sample_rate, RATES)
        self.base_url = base_url.rstrip("/")
        self.voice = voice
        self.model = model
        self.sample_rate = sample_rate
        self.speed = speed
        self.timeout = timeout
        self._api_key = api_key

    def url(self, voice: str | None = None) -> str:
        """The stream-input URL for `voice` (default: the configured one)."""
        query = urlencode(
            {
                "model_id": self.model,
                "output_format": f"pcm_{self.sample_rate}",
                "sync_alignment": "true",
                "auto_mode": "true",
            }
        )
        voice_id = quote(voice or self.voice, safe="")
        return f"{self.base_url}/v1/text-to-speech/{voice_id}/stream-input?{query}"

    def messages(self, text: str) -> list[dict[str, Any]]:
        """What the client sends for one clause, in order."""
        first: dict[str, Any] = {"text": " "}
        if self.speed != 1.0:
            first["voice_settings"] = {"speed": self.speed}
        # The API wants sent text to end with a single space.
        return [first, {"text": text.rstrip() + " ", "flush": True}, {"text": ""}]

    def synthesize(self, text: str, voice: str | None = None) -> Iterator[TtsChunk]:
        """Yield the audio of `text`, one chunk per word, as it streams in.

        Args:
            text: The text (normally one clause).
            voice: A voice id for this call instead of the default.

        Raises:
            TtsError: Auth refused, a server error, connection refused or
                closed before `isFinal`, no message within `timeout`, or no
                audio at all.
        """
        if not text.strip():
            return
        deadline = Deadline(self.timeout)
        cutter = WordCutter(text)
        aligner = CharAligner(text, cutter.tokens)
        decoder = Pcm16Decoder(self.name)
        headers = {"xi-api-key": self._api_key}
        with open_clause(self.name, self.url(voice), headers, self.messages(text), deadline) as ws:
            while True:
                data = recv_json(self.name, ws, deadline)
                if data.get("error") or (data.get("message") and "audio" not in data):
                    raise provider_error(self.name, data)
                audio = data.get("audio")
                if isinstance(audio, str) and audio:
                    offset = cutter.received
                    pcm = decoder.feed(audio)
                    yield from cutter.add_audio(pcm)
                    yield from self._words(data, aligner, cutter, offset, len(pcm))
                if data.get("isFinal") is True:
                    break
        yield from finish(self.name, cutter)

    def _words(
        self,
        data: dict[str, Any],
        aligner: CharAligner,
        cutter: WordCutter,
        offset: int,
        length: int,
    ) -> list[TtsChunk]:
        """Word starts from this message's alignment, placed in its audio."""
        alignment = data.get("alignment") or data.get("normalizedAlignment")
        if not isinstance(alignment, dict):
            return []
        chars = alignment.get("chars")
        starts = alignment.get("charStartTimesMs") or alignment.get("charsStartTimesMs")
        if not isinstance(chars, list) or not isinstance(starts, list):
            return []
        out: list[TtsChunk] = []
        for token, ms in aligner.feed(chars, starts):
            # Times are relative to this message's audio; keep them inside it.
            sample = offset + min(max(round(ms * self.sample_rate / 1000), 0), length)
            out += cutter.add_word(token, sample)
        return out

    def voices(self) -> list[str]:
        """The configured voice id."""
        return [self.voice]


def from_settings(settings: TtsSettings) -> ElevenLabsBackend:
    """Build the backend from the `tts` settings (`voice` is the voice id).

    Raises:
        ModelLoadError: `tts.api_key` or `tts.voice` missing, an unset
            `env:` variable, a bad `base_url` or rate, or no websockets package.
    """
    key, base_url = ws_settings(
        settings,
        "elevenlabs",
        default_env="ELEVENLABS_API_KEY",
        default_url=ELEVENLABS_URL,
        voice="an ElevenLabs voice id",
    )
    return ElevenLabsBackend(
        key,
        settings.voice,
        settings.provider_model or "eleven_flash_v2_5",
        base_url=base_url,
        sample_rate=settings.sample_rate or 16000,
        speed=settings.speed,
        timeout=settings.timeout,
    )
