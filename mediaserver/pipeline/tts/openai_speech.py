"""OpenAI-compatible speech (`POST {base_url}/audio/speech`), streamed with httpx.

The same endpoint is served by OpenAI and by self-hosted servers
(Kokoro-FastAPI, openedai-speech, Piper and others behind an OpenAI-shaped
API). The request is JSON {model, input, voice, response_format, speed}
with `Authorization: Bearer <key>`; the answer is the audio itself as the
response body, which arrives in pieces while the server synthesises.

Formats: "pcm" is headerless 16-bit signed little-endian mono (24 kHz at
OpenAI; other servers may use another rate, hence `sample_rate`). "wav" is
the same behind a RIFF header; a body that starts with "RIFF" is parsed as
WAV whatever was asked, so a server that ignores "pcm" still works. WAV
rates other than `sample_rate` are resampled, channels are averaged.

Spans: the provider gives no word timing, so which words a piece of audio
voices is unknown. Every piece of the body is yielded as it arrives with the
span (0, 0) (it claims no text), except the last piece (held back until the
body ends), which spans the whole clause. Barge-in during a clause therefore
records none of it as heard, or all of it marked as cut when the caller
heard into its last piece; once the clause's last frame is sent, all of it
counts. That is the honest reading when timing is unknown: guessing spans
from byte positions would mark unheard words as heard. (Spanning every
piece as the whole clause, as piper does for its sentences, would count the
clause as heard as soon as the first piece had played.)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import numpy as np

from mediaserver.codecs.resample import Resampler
from mediaserver.pipeline.cloud import http_error_text
from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.pipeline.settings import TtsSettings
from mediaserver.pipeline.tts.base import TtsBackend, TtsChunk, TtsError
from mediaserver.pipeline.tts.cloud import Deadline, resolve_key

__all__ = ["OPENAI_URL", "OpenAiSpeechBackend", "from_settings"]

#: The default `base_url` (OpenAI itself, where a key is required).
OPENAI_URL = "https://api.openai.com/v1"
#: Rate of OpenAI's "pcm" format.
OPENAI_PCM_RATE = 24000
# A WAV header longer than this is not one we can use.
_MAX_HEADER = 64 * 1024
# Data sizes streaming servers write when they do not know the length yet.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)


class _AudioDecoder:
    """Body bytes -> int16 mono at `out_rate`: raw PCM, or WAV when the body says RIFF."""

    def __init__(self, backend: str, pcm_rate: int, out_rate: int) -> None:
        self.backend = backend
        self.out_rate = out_rate
        self._pcm_rate = pcm_rate
        self._pending = b""  # bytes not yet decoded (header, or half a sample frame)
        self._mode: Literal["?", "pcm", "wav-header", "wav"] = "?"
        self._channels = 1
        self._left: int | None = None  # WAV data bytes still expected, when known
        self._resampler: Resampler | None = None

    def feed(self, data: bytes) -> np.ndarray:
        self._pending += data
        if self._mode == "?":
            if len(self._pending) < 4:
                return _EMPTY
            self._mode = "wav-header" if self._pending.startswith(b"RIFF") else "pcm"
            if self._mode == "pcm":
                self._start(self._pcm_rate, 1)
        if self._mode == "wav-header" and not self._header():
            return _EMPTY
        return self._samples()

    def flush(self) -> np.ndarray:
        if self._mode == "?":
            self._mode = "pcm"  # a body of under 4 bytes: raw PCM (or nothing)
            self._start(self._pcm_rate, 1)
        elif self._mode == "wav-header":
            raise TtsError(f"{self.backend}: the audio ended inside its WAV header")
        pcm = self._samples()
        if self._resampler is not None:
            tail = self._resampler.flush()
            if len(tail):
                pcm = np.concatenate([pcm, tail])
        return pcm

    def _start(self, rate: int, channels: int) -> None:
        self._channels = channels
        if rate != self.out_rate:
            self._resampler = Resampler(rate, self.out_rate, low_latency=False)

    def _header(self) -> bool:
        """Parse the RIFF header once it is all here; True when the data chunk begins."""
        buf = self._pending
        if len(buf) > _MAX_HEADER:
            raise TtsError(f"{self.backend}: no WAV data chunk in the first {_MAX_HEADER} bytes")
        if len(buf) < 12:
            return False
        if buf[8:12] != b"WAVE":
            raise TtsError(f"{self.backend}: RIFF body is not WAVE audio")
        pos = 12
        fmt: tuple[int, int, int, int] | None = None
        while len(buf) >= pos + 8:
            chunk, size = buf[pos : pos + 4], struct.unpack_from("<I", buf, pos + 4)[0]
            if chunk == b"data":
                if fmt is None:
                    raise TtsError(f"{self.backend}: WAV data chunk before its fmt chunk")
                tag, channels, rate, bits = fmt
                if tag not in (1, 0xFFFE) or bits != 16 or channels < 1:
                    raise TtsError(
                        f"{self.backend}: unsupported WAV audio (format {tag}, {bits} bits,"
                        f" {channels} channels); 16-bit PCM is needed"
                    )
                self._start(rate, channels)
                self._left = None if size in _UNKNOWN_SIZES else size
                self._pending = buf[pos + 8 :]
                self._mode = "wav"
                return True
            if len(buf) < pos + 8 + size:
                return False  # the rest of this chunk has not arrived yet
            if chunk == b"fmt ":
                if size < 16:
                    raise TtsError(f"{self.backend}: WAV fmt chunk too short")
                tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", buf, pos + 8)
                fmt = (tag, channels, rate, bits)
            pos += 8 + size + (size & 1)  # chunks are padded to an even size
        return False

    def _samples(self) -> np.ndarray:
        if self._mode not in ("pcm", "wav"):
            return _EMPTY
        data = self._pending
        if self._left is not None:
            data = data[: self._left]  # whatever follows the data chunk is not audio
        frame = 2 * self._channels
        usable = len(data) - len(data) % frame  # a split sample frame waits for the next read
        self._pending = self._pending[usable:]
        if self._left is not None:
            self._left -= usable
            if self._left < frame:
                self._pending = b""  # the data chunk is complete
        pcm = np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
        if self._channels > 1:
            pcm = pcm.reshape(-1, self._channels).mean(axis=1).round().astype(np.int16)
        if self._resampler is not None and len(pcm):
            pcm = self._resampler.process(pcm)
        return pcm


_EMPTY = np.zeros(0, dtype=np.int16)


def _error_text(body: bytes) -> str:
    """The server's error text (see `http_error_text`), at most 300 characters."""
    return http_error_text(body)[:300]


class OpenAiSpeechBackend(TtsBackend):
    """An OpenAI-compatible speech endpoint, streamed (registry name "openai").

    Args:
        base_url: API root; "/audio/speech" is appended.
        api_key: Bearer token; None for servers without auth.
        model: Model name ("tts-1", "gpt-4o-mini-tts", "kokoro", ...).
        voice: Default voice ("alloy", "af_bella", ...).
        sample_rate: Rate of the "pcm" the server sends, and the rate chunks
            come out at (WAV at another rate is resampled to it).
        speed: Speaking speed (OpenAI accepts 0.25-4.0).
        response_format: "pcm" or "wav".
        timeout: Seconds one clause may take, from the request to the end of
            its audio (connecting and every read are bounded by what is left).
        client: A shared httpx client; by default the backend makes its own
            (one connection pool for every call) and closes it in `close`.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str = OPENAI_URL,
        api_key: str | None = None,
        model: str = "tts-1",
        voice: str = "alloy",
        *,
        sample_rate: int = OPENAI_PCM_RATE,
        speed: float = 1.0,
        response_format: Literal["pcm", "wav"] = "pcm",
        timeout: float = 5.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/audio/speech"
        self.model = model
        self.voice = voice
        self.sample_rate = sample_rate
        self.speed = speed
        self.response_format = response_format
        self.timeout = timeout
        self._api_key = api_key
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=httpx.Timeout(timeout))

    def request_body(self, text: str, voice: str | None = None) -> dict[str, Any]:
        """The JSON body for one clause."""
        return {
            "model": self.model,
            "input": text,
            "voice": voice or self.voice,
            "response_format": self.response_format,
            "speed": self.speed,
        }

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def synthesize(self, text: str, voice: str | None = None) -> Iterator[TtsChunk]:
        """Yield the audio of `text` as the response body streams in.

        Every chunk but the last spans (0, 0), the last spans all of `text`
        (see the module docstring).

        Args:
            text: The text (normally one clause).
            voice: A voice for this call instead of the default.

        Raises:
            TtsError: HTTP 401/403 (auth), another HTTP error, connection
                refused, no audio within `timeout`, a body cut short, or a
                body with no audio.
        """
        if not text.strip():
            return
        deadline = Deadline(self.timeout)
        decoder = _AudioDecoder(self.name, self.sample_rate, self.sample_rate)
        held: np.ndarray | None = None  # the newest piece: it may be the last
        responded = False
        try:
            with self._client.stream(
                "POST",
                self.url,
                json=self.request_body(text, voice),
                headers=self._headers(),
                timeout=httpx.Timeout(deadline.left()),
            ) as response:
                responded = True
                if response.status_code >= 400:
                    self._raise_for_status(response)
                if response.headers.get("content-type", "").startswith("application/json"):
                    raise TtsError(
                        f"{self.name}: JSON instead of audio: {_error_text(response.read())}"
                    )
                for data in response.iter_bytes():
                    if deadline.passed:
                        raise TtsError(f"{self.name}: clause not done within {self.timeout:g} s")
                    pcm = decoder.feed(data)
                    if len(pcm):
                        if held is not None:
                            yield TtsChunk(held, 0, 0)
                        held = pcm
                tail = decoder.flush()
        except httpx.TimeoutException as exc:
            raise TtsError(f"{self.name}: no audio within {self.timeout:g} s ({exc!r})") from exc
        except httpx.HTTPError as exc:
            what = "stream ended early" if responded else f"cannot connect to {self.url}"
            raise TtsError(f"{self.name}: {what}: {exc!r}") from exc
        if held is not None and len(tail):
            last = np.concatenate([held, tail])
        else:
            last = held if held is not None else tail
        if not len(last):
            raise TtsError(f"{self.name}: the server sent no audio")
        yield TtsChunk(last, 0, len(text))

    def _raise_for_status(self, response: httpx.Response) -> None:
        try:
            body = response.read()
        except httpx.HTTPError:
            body = b""
        status = response.status_code
        message = _error_text(body)
        if status in (401, 403):
            raise TtsError(f"{self.name}: authentication failed (HTTP {status}): {message}")
        kind = "server error" if status >= 500 else "request refused"
        raise TtsError(f"{self.name}: {kind} (HTTP {status}): {message}")

    def voices(self) -> list[str]:
        """The configured voice (the API has no voice list)."""
        return [self.voice]

    def close(self) -> None:
        """Close the HTTP client if the backend made it."""
        if self._owns_client:
            self._client.close()


def from_settings(settings: TtsSettings) -> OpenAiSpeechBackend:
    """Build the backend from the `tts` settings.

    `voice` left at its default means "alloy". A key is required only for
    OpenAI itself (`base_url` unset or api.openai.com), where an unset
    `api_key` means env:OPENAI_API_KEY.

    Raises:
        ModelLoadError: `tts.api_key` missing for OpenAI, or naming an unset
            environment variable.
    """
    base_url = settings.base_url or OPENAI_URL
    official = "api.openai.com" in base_url
    key = resolve_key(
        "openai",
        settings.api_key,
        default_env="OPENAI_API_KEY" if official else None,
        required=official,
    )
    if not base_url.startswith(("http://", "https://")):
        raise ModelLoadError(f"openai: tts.base_url must be an http(s) URL, not {base_url!r}")
    return OpenAiSpeechBackend(
        base_url,
        key,
        settings.provider_model or "tts-1",
        settings.voice if "voice" in settings.model_fields_set else "alloy",
        sample_rate=settings.sample_rate or OPENAI_PCM_RATE,
        speed=settings.speed,
        timeout=settings.timeout,
    )
