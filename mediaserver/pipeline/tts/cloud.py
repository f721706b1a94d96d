"""What the network TTS backends (openai, elevenlabs, cartesia) share.

* `resolve_key`: the `tts.api_key` setting, which may be `env:NAME` (the same
  rule as `llm.api_key`); a missing key fails at load with `ModelLoadError`.
* `ws_settings`, `check_rate`: the settings every WebSocket backend checks
  at load (key, voice id, ws(s) URL, an output rate the provider offers).
* `WordCutter`: turns a clause's streamed audio plus word start times into
  one `TtsChunk` per word, as the audio arrives.
* `Pcm16Decoder`: base64 pieces of 16-bit PCM to samples (a sample may be
  split across two messages).
* `open_clause` / `recv_json` / `finish`: one clause over a WebSocket with the
  `websockets` sync client, every wait bounded and every failure turned into
  a `TtsError` that says what happened (auth refused, server error,
  connection refused, timeout, closed mid-clause, no audio at all).

How spans are chosen (see `mediaserver/call/voicing.py`): the call actor tags
every outbound frame with the text its chunk voices, and once a chunk's last
frame went out its whole span counts as heard. So a chunk must never claim
text that is not fully voiced by the time its own audio ends. Word chunks
honour that by cutting the audio at word *starts*: chunk k runs from word k's
start to word k+1's start and claims words k..k+1-1 (whitespace-delimited
tokens of the clause, punctuation attached). A chunk is only given out once
the audio beyond its end has arrived, so the last chunk always has audio and
can claim the rest of the clause (words the provider gave no timing for, and
the trailing punctuation). Audio before the first timed word is a pause
chunk spanning (0, 0): it claims nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from mediaserver.pipeline.cloud import WsConnectError, env_key, open_ws
from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.pipeline.settings import TtsSettings
from mediaserver.pipeline.tts.base import TtsChunk, TtsError

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

__all__ = [
    "Deadline",
    "Pcm16Decoder",
    "WordCutter",
    "check_rate",
    "connect_ws",
    "finish",
    "open_clause",
    "provider_error",
    "recv_json",
    "require_websockets",
    "resolve_key",
    "tokens",
    "ws_settings",
]

_TOKEN = re.compile(r"\S+")
# Words in a provider's error or close reason that mean the credentials were refused.
_AUTH_WORDS = ("auth", "api key", "api_key", "apikey", "unauthor", "forbidden", "credential")


def resolve_key(
    backend: str, value: str | None, *, default_env: str | None, required: bool
) -> str | None:
    """The API key itself: "env:NAME" reads the environment variable NAME.

    Args:
        backend: Backend name, for the message.
        value: The `tts.api_key` setting.
        default_env: Variable read when `value` is None (the provider's usual one).
        required: The provider needs a key (a missing one fails the load).

    Raises:
        ModelLoadError: A named variable is unset, or a required key is
            missing (the message names the backend and `tts.api_key`).
    """
    if value is None and default_env is not None:
        key = os.environ.get(default_env)
        if not key and required:
            raise ModelLoadError(
                f"{backend}: tts.api_key is not set and neither is {default_env}"
                " (set the key, or env:NAME to read it from the environment)"
            )
        return key or None
    key = None if value is None else env_key(value, f"{backend}: tts.api_key")
    if required and not key:
        raise ModelLoadError(
            f"{backend}: tts.api_key is not set (the API key, or env:NAME to read it"
            " from the environment)"
        )
    return key or None


def require_websockets(backend: str) -> None:
    """Fail the load clearly when the optional `websockets` package is missing.

    Raises:
        ModelLoadError: It is not installed (the message names the extra).
    """
    try:
        import websockets.sync.client  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(
            f"{backend}: the websockets package is not installed"
            f" (pip install 'mediaserver[cloud]'): {exc}"
        ) from exc


def ws_settings(
    settings: TtsSettings, backend: str, *, default_env: str, default_url: str, voice: str
) -> tuple[str, str]:
    """The key and WebSocket URL of a backend that needs both and a voice id.

    Args:
        settings: The `tts` settings.
        backend: Backend name, for messages.
        default_env: Variable read when `tts.api_key` is unset.
        default_url: The provider's URL, used when `tts.base_url` is unset.
        voice: What `tts.voice` should be, for the message ("a Cartesia voice id").

    Raises:
        ModelLoadError: `tts.api_key` or `tts.voice` missing, an unset
            `env:` variable, or a `tts.base_url` that is not ws(s).
    """
    key = resolve_key(backend, settings.api_key, default_env=default_env, required=True)
    assert key is not None
    if "voice" not in settings.model_fields_set:
        raise ModelLoadError(f"{backend}: tts.voice is not set ({voice})")
    base_url = settings.base_url or default_url
    if not base_url.startswith(("ws://", "wss://")):
        raise ModelLoadError(f"{backend}: tts.base_url must be a ws(s) URL, not {base_url!r}")
    return key, base_url


def check_rate(backend: str, rate: int, rates: tuple[int, ...]) -> None:
    """Fail the load when the provider offers no output at `rate`.

    Raises:
        ModelLoadError: `rate` is not one of `rates` (the message lists them).
    """
    if rate not in rates:
        offered = ", ".join(map(str, rates))
        raise ModelLoadError(f"{backend}: tts.sample_rate {rate} is not one of {offered}")


def tokens(text: str) -> list[tuple[int, int]]:
    """Whitespace-delimited tokens of `text` as (start, end) character spans."""
    return [(m.start(), m.end()) for m in _TOKEN.finditer(text)]


class Deadline:
    """A monotonic deadline for one clause: every wait gets what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left (0 when passed)."""
        return max(0.0, self._at - time.monotonic())

    @property
    def passed(self) -> bool:
        """True once the deadline is reached."""
        return time.monotonic() >= self._at


class WordCutter:
    """Cut one clause's streamed audio into per-word chunks (see the module docstring).

    Audio and word starts come in any interleaving (a provider may time a
    word before or after sending its audio); both `add_*` methods return the
    chunks that became complete. Word starts must come in text order: a
    token not after the last one is ignored, and a start earlier than the
    previous one is moved up to it (a word with no audio of its own is
    merged into the chunk after it).

    Args:
        text: The clause.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokens(text)
        #: Samples received so far.
        self.received = 0
        self._buf = np.zeros(0, dtype=np.int16)  # audio from sample _pos on
        self._pos = 0
        self._start: int | None = None  # token opening the span of the audio at _pos
        self._cuts: deque[tuple[int, int]] = deque()  # (sample, token) not yet cut
        self._last_token = -1
        self._last_sample = 0

    def add_audio(self, pcm: np.ndarray) -> list[TtsChunk]:
        """Append int16 samples; return the chunks now complete."""
        if len(pcm):
            self._buf = np.concatenate([self._buf, pcm.astype(np.int16, copy=False)])
            self.received += len(pcm)
        return self._cut()

    def add_word(self, token: int, sample: int) -> list[TtsChunk]:
        """Token `token` starts at sample `sample` of the clause's audio."""
        if token <= self._last_token or token >= len(self.tokens):
            return []
        sample = max(sample, self._last_sample, 0)
        self._last_token, self._last_sample = token, sample
        self._cuts.append((sample, token))
        return self._cut()

    def finish(self) -> list[TtsChunk]:
        """The audio is complete: the rest of it is the last chunk, up to the clause's end."""
        out = self._cut()
        # Words starting at or past the end of the audio have none of their
        # own: the last chunk voices them.
        self._cuts.clear()
        if len(self._buf):
            start = 0 if self._start is None else self.tokens[self._start][0]
            out.append(TtsChunk(self._buf, start, len(self.text)))
            self._buf = np.zeros(0, dtype=np.int16)
        return out

    def _cut(self) -> list[TtsChunk]:
        out: list[TtsChunk] = []
        # Strictly less: audio past the cut must exist, so the chunk left for
        # `finish` is never empty and can claim the rest of the clause.
        while self._cuts and self._cuts[0][0] < self.received:
            sample, token = self._cuts.popleft()
            n = sample - self._pos
            if n > 0:
                if self._start is None:
                    start = end = 0  # before the first timed word: a pause
                else:
                    start, end = self.tokens[self._start][0], self.tokens[token - 1][1]
                out.append(TtsChunk(self._buf[:n].copy(), start, end))
                self._buf = self._buf[n:]
                self._pos = sample
                self._start = token
            elif self._start is None:
                self._start = token
            # else: the chunk so far has no audio; its words join the next one.
        return out


class Pcm16Decoder:
    """Base64 pieces of 16-bit little-endian PCM to int16 samples.

    A piece may end inside a sample: its odd byte waits for the next piece.

    Args:
        backend: Backend name, for messages.
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._rest = b""

    def feed(self, data: str) -> np.ndarray:
        """The whole samples decoded so far but not yet returned.

        Raises:
            TtsError: `data` is not base64.
        """
        try:
            raw = self._rest + base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TtsError(f"{self.backend}: bad base64 audio") from exc
        usable = len(raw) - len(raw) % 2
        self._rest = raw[usable:]
        return np.frombuffer(raw[:usable], dtype="<i2").astype(np.int16)


def _is_auth(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in _AUTH_WORDS)


def connect_ws(
    backend: str, url: str, headers: dict[str, str], deadline: Deadline
) -> ClientConnection:
    """Open a WebSocket with the sync client, within `deadline`.

    Raises:
        TtsError: The handshake was refused (401/403 say auth), timed out, or
            the connection failed; or the `websockets` package is missing.
    """
    try:
        return open_ws(
            url,
            headers,
            max(deadline.left(), 0.001),
            # Audio arrives base64-encoded in JSON: allow a few seconds per message.
            max_size=16 * 1024 * 1024,
            compression=None,
        )
    except ImportError as exc:  # checked at load; keep the error clear anyway
        raise TtsError(f"{backend}: the websockets package is not installed: {exc}") from exc
    except WsConnectError as exc:
        if exc.status is not None:
            body = exc.body[:300]
            if exc.auth:
                raise TtsError(
                    f"{backend}: authentication failed (HTTP {exc.status}): {body or 'refused'}"
                ) from exc.cause
            kind = "server error" if exc.status >= 500 else "request refused"
            raise TtsError(
                f"{backend}: {kind} (HTTP {exc.status}): {body or 'no message'}"
            ) from exc.cause
        if exc.timed_out:
            raise TtsError(f"{backend}: no connection within {deadline.seconds:g} s") from exc.cause
        raise TtsError(f"{backend}: cannot connect: {exc.cause!r}") from exc.cause


def open_clause(
    backend: str,
    url: str,
    headers: dict[str, str],
    messages: Iterable[dict[str, Any]],
    deadline: Deadline,
) -> ClientConnection:
    """`connect_ws`, then send `messages` (JSON) that ask for one clause.

    Returns:
        The connection (a context manager that closes it), for `recv_json`.

    Raises:
        TtsError: As `connect_ws`, or the server closed before all was sent.
    """
    ws = connect_ws(backend, url, headers, deadline)
    try:
        for message in messages:
            ws.send(json.dumps(message))
    except Exception as exc:  # the server closed on us before we were done
        ws.close()
        raise TtsError(f"{backend}: connection closed while sending: {exc!r}") from exc
    return ws


def finish(backend: str, cutter: WordCutter) -> list[TtsChunk]:
    """The clause's last chunks once the server said it is done.

    Raises:
        TtsError: The server sent no audio at all.
    """
    chunks = cutter.finish()
    if not chunks and cutter.received == 0:
        raise TtsError(f"{backend}: the server sent no audio")
    return chunks


def recv_json(backend: str, ws: ClientConnection, deadline: Deadline) -> dict[str, Any]:
    """The next JSON object from the server, within `deadline`.

    Raises:
        TtsError: Timeout, the socket closed (a policy close naming the key
            says auth), or a message that is not a JSON object.
    """
    from websockets.exceptions import ConnectionClosed

    try:
        raw = ws.recv(timeout=deadline.left())
    except TimeoutError as exc:
        raise TtsError(f"{backend}: no audio within {deadline.seconds:g} s") from exc
    except ConnectionClosed as exc:
        rcvd = exc.rcvd
        code = rcvd.code if rcvd is not None else None
        reason = rcvd.reason if rcvd is not None else ""
        if code == 1008 and _is_auth(reason):
            raise TtsError(f"{backend}: authentication failed: {reason}") from exc
        what = f"code {code}" if code is not None else "no close frame"
        raise TtsError(
            f"{backend}: connection closed mid-clause ({what}{': ' + reason if reason else ''})"
        ) from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise TtsError(f"{backend}: bad message from the server: {str(raw)[:200]!r}") from exc
    if not isinstance(data, dict):
        raise TtsError(f"{backend}: bad message from the server: {str(raw)[:200]!r}")
    return data


def provider_error(backend: str, data: dict[str, Any]) -> TtsError:
    """A TtsError from a provider's error message (auth-looking ones say so)."""
    parts = [
        str(data[key])
        for key in ("title", "message", "error", "error_code", "detail")
        if data.get(key) and not isinstance(data[key], bool)
    ]
    text = "; ".join(dict.fromkeys(parts)) or json.dumps(data)[:300]
    status = data.get("status_code") or data.get("code")
    if status in (401, 403) or _is_auth(text):
        return TtsError(f"{backend}: authentication failed: {text}")
    return TtsError(f"{backend}: server error{f' ({status})' if status else ''}: {text}")
