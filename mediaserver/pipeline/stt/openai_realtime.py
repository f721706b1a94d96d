"""OpenAI Realtime transcription sessions over a WebSocket (``mediaserver[cloud]``).

How the `SttStream` interface maps onto a Realtime transcription session:

* **Connection.** One WebSocket per call to
  ``{base_url}`` (``wss://api.openai.com/v1/realtime?intent=transcription``)
  with ``Authorization: Bearer <key>``. The server greets with
  ``session.created``; the client configures the session and waits for
  ``session.updated``, so a bad model or option fails at connect time:

  - current protocol: ``session.update`` with ``session.type =
    "transcription"`` and ``session.audio.input = {format: {type: "audio/pcm",
    rate: 24000}, transcription: {model, prompt, language}, turn_detection:
    null}``;
  - older beta protocol (``openai_beta``; header ``OpenAI-Beta: realtime=v1``):
    ``transcription_session.update`` with ``input_audio_format: "pcm16"``,
    ``input_audio_transcription`` and ``turn_detection: null``, answered by
    ``transcription_session.updated``.

  ``turn_detection`` is null because our own VAD decides when the turn ends.
  The connection is opened by the first `feed` of a call (`open` runs on the
  event loop), kept across turns and reopened at the next turn if it dropped.
* **Audio.** The service takes 24 kHz PCM16 only, so `feed` resamples our
  16 kHz audio (one streaming resampler per turn) and sends
  ``input_audio_buffer.append`` with the samples in base64.
* **Partials.** ``conversation.item.input_audio_transcription.delta`` events
  add text to an item; `feed` returns the text gathered so far. Most models
  only transcribe once the buffer is committed, so partials may never come
  before `finalise` (streaming models such as gpt-live-transcribe send them
  while audio arrives).
* **End of turn.** `finalise` flushes the resampler, sends
  ``input_audio_buffer.commit``, learns the new item's id from
  ``input_audio_buffer.committed`` and waits (bounded) for
  ``conversation.item.input_audio_transcription.completed`` of that item; its
  ``transcript`` is the final text. A turn under 100 ms (which the service
  refuses to commit) is cleared with ``input_audio_buffer.clear`` instead.
* **Errors.** An ``error`` event, a ``...transcription.failed`` event for the
  turn's item, a refused handshake (HTTP 401: authentication), the socket
  closing mid-utterance or no final in time raise `SttError`, which the call
  actor turns into the ``stt_failure`` recovery; the socket is dropped and the
  next turn reconnects.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from typing import Any

import numpy as np
import structlog
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from mediaserver.codecs.base import as_mono_int16
from mediaserver.codecs.resample import Resampler
from mediaserver.pipeline.cloud import hang_up_later
from mediaserver.pipeline.settings import SttSettings
from mediaserver.pipeline.stt.base import (
    STT_RATE,
    ModelLoadError,
    SttBackend,
    SttError,
    SttHints,
    SttStream,
    Transcript,
)
from mediaserver.pipeline.stt.cloud import (
    check_url,
    drain,
    open_socket,
    parse_message,
    resolve_key,
    still_open,
    turn_failures,
)

__all__ = ["DEFAULT_MODEL", "DEFAULT_URL", "OpenAiRealtimeBackend", "OpenAiRealtimeStream"]

log = structlog.get_logger("mediaserver.pipeline.stt")

DEFAULT_URL = "wss://api.openai.com/v1/realtime?intent=transcription"
DEFAULT_MODEL = "gpt-4o-mini-transcribe"
#: The only PCM rate the Realtime API accepts.
REALTIME_RATE = 24000
#: The service refuses to commit less than 100 ms of audio.
_MIN_COMMIT = REALTIME_RATE // 10
#: Longest prompt built from hints (characters); the rest of the hints are dropped.
_MAX_PROMPT = 1000
_DELTA = "conversation.item.input_audio_transcription.delta"
_COMPLETED = "conversation.item.input_audio_transcription.completed"
_FAILED = "conversation.item.input_audio_transcription.failed"
_AUTH_CODES = ("invalid_api_key", "invalid_authentication", "unauthorized")


def prompt_for(hints: SttHints) -> str | None:
    """The transcription prompt for `hints`: its phrases, terms and words, comma separated."""
    terms: list[str] = []
    size = 0
    vocabulary = (*hints.phrases, *hints.terms, *hints.words)
    for term in dict.fromkeys(" ".join(t.split()) for t in vocabulary):
        if not term:
            continue
        size += len(term) + 2
        if size > _MAX_PROMPT:
            break
        terms.append(term)
    return ", ".join(terms) + "." if terms else None


def _error_text(error: Any) -> tuple[str, str]:
    """(code, message) of an ``error`` object, whatever shape it came in."""
    if isinstance(error, dict):
        code = str(error.get("code") or error.get("type") or "")
        return code, str(error.get("message") or error)
    return "", str(error)


class OpenAiRealtimeBackend(SttBackend):
    """OpenAI's Realtime API in transcription mode (registry name "openai-realtime").

    Args:
        api_key: the OpenAI API key itself (see `resolve_key` for ``env:NAME``).
        base_url: the Realtime WebSocket URL (with ``?intent=transcription``).
        model: transcription model, e.g. "gpt-4o-mini-transcribe",
            "gpt-4o-transcribe", "whisper-1".
        language: our language code ("en-us" is sent as "en").
        timeout: seconds to connect and configure the session; the final
            transcript may take 80 % of it (the call actor gives up at the
            whole of it, so the stream fails first and is free for the next turn).
        beta: speak the older beta protocol (see the module docstring).
        verify: connect and configure one session now, so a bad key, URL or
            model fails at load.

    Raises:
        ModelLoadError: the URL is not ws:// or wss://, or (with `verify`) the
            service cannot be reached, refuses the key or the session.
    """

    name = "openai-realtime"
    punctuates = True

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_URL,
        model: str = DEFAULT_MODEL,
        *,
        language: str = "en-us",
        timeout: float = 5.0,
        beta: bool = False,
        verify: bool = True,
    ) -> None:
        self.url = check_url(base_url, self.name)
        self.model = model
        self.language = language.split("-")[0].lower()
        self.timeout = timeout
        self.final_timeout = 0.8 * timeout
        self.beta = beta
        self._headers = {"Authorization": f"Bearer {api_key}"}
        if beta:
            self._headers["OpenAI-Beta"] = "realtime=v1"
        if verify:
            self.verify()

    def verify(self) -> None:
        """Open one session, configure it and close it (blocking).

        Raises:
            ModelLoadError: the service is unreachable or refuses the key or session.
        """
        try:
            conn = self.connect(None)
        except SttError as exc:
            raise ModelLoadError(str(exc)) from exc
        conn.close()

    def session_update(self, prompt: str | None) -> dict[str, Any]:
        """The client event that configures a transcription session."""
        transcription: dict[str, Any] = {"model": self.model}
        if self.language:
            transcription["language"] = self.language
        if prompt:
            transcription["prompt"] = prompt
        if self.beta:
            return {
                "type": "transcription_session.update",
                "session": {
                    "input_audio_format": "pcm16",
                    "input_audio_transcription": transcription,
                    "turn_detection": None,
                },
            }
        return {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": REALTIME_RATE},
                        "transcription": transcription,
                        "turn_detection": None,
                    }
                },
            },
        }

    def connect(self, prompt: str | None) -> ClientConnection:
        """A configured session (blocking): connect, update, wait for "updated".

        Raises:
            SttError: refused, unreachable, authentication failed, or the
                session update rejected or unanswered within `timeout`.
        """
        conn = open_socket(self.url, self._headers, self.timeout, self.name)
        try:
            conn.send(json.dumps(self.session_update(prompt)))
            deadline = time.monotonic() + self.timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SttError(f"{self.name}: session not configured within {self.timeout:g} s")
                try:
                    event = json.loads(conn.recv(timeout=left))
                except TimeoutError:
                    continue
                kind = event.get("type") if isinstance(event, dict) else None
                if kind in ("session.updated", "transcription_session.updated"):
                    return conn
                if kind == "error":
                    raise _error_event(event, "session update")
        except SttError:
            conn.close()
            raise
        except ConnectionClosed as exc:
            conn.close()
            raise SttError(f"{self.name}: connection closed while configuring: {exc}") from exc
        except (ValueError, OSError) as exc:  # ValueError: an event that is not JSON
            conn.close()
            raise SttError(f"{self.name}: session setup failed: {exc!r}") from exc

    def open(self, hints: SttHints) -> OpenAiRealtimeStream:
        """A stream for one call; it connects on its first audio.

        Args:
            hints: phrases and words, sent as the transcription prompt.

        Returns:
            An `OpenAiRealtimeStream`.
        """
        return OpenAiRealtimeStream(self, prompt_for(hints))


def _error_event(event: dict[str, Any], during: str) -> SttError:
    code, message = _error_text(event.get("error"))
    if code in _AUTH_CODES:
        return SttError(f"openai-realtime: authentication failed ({code}): {message}")
    return SttError(f"openai-realtime: error during {during} ({code or 'no code'}): {message}")


class OpenAiRealtimeStream(SttStream):
    """One call's Realtime transcription session, reused turn after turn.

    `feed` and `finalise` come from the actor's executor, one at a time;
    `close` (which may come from the event loop) never blocks.
    """

    def __init__(self, backend: OpenAiRealtimeBackend, prompt: str | None) -> None:
        self._backend = backend
        self._prompt = prompt
        self._conn: ClientConnection | None = None
        self._closed = False
        self._resampler = Resampler(STT_RATE, REALTIME_RATE)
        #: 24 kHz samples appended in this turn.
        self._samples = 0
        #: Delta text by item id, and completed transcripts by item id.
        self._deltas: dict[str, str] = {}
        self._completed: dict[str, str] = {}
        self._failed: dict[str, str] = {}
        #: Items of earlier turns: their late events are ignored.
        self._done: set[str] = set()
        self._item: str | None = None
        self._reported = ""
        self._event_ids = itertools.count(1)

    # ------------------------------------------------------------ the interface

    def feed(self, pcm: np.ndarray) -> Transcript | None:
        """Resample to 24 kHz and append to the input buffer; return new delta text.

        Args:
            pcm: 1-D int16 samples at 16 kHz (empty: only read what arrived).

        Returns:
            A partial transcript when transcription deltas of this turn changed
            the text (streaming models only), else None.

        Raises:
            SttError: connecting failed, the connection broke, or the service
                reported an error (the turn is lost; the next one reconnects).
        """
        samples = as_mono_int16(pcm)
        if self._closed:
            raise SttError("openai-realtime: stream is closed")
        if samples.size == 0 and self._conn is None:
            return None
        with turn_failures(self._fail, "openai-realtime", "mid-utterance"):
            conn = self._connection()
            if samples.size:
                self._append(conn, self._resampler.process(samples))
            self._drain(conn, 0.0)
        text = " ".join(t for t in self._deltas.values() if t).strip()
        if text == self._reported:
            return None
        self._reported = text
        return Transcript(text, final=False)

    def finalise(self) -> Transcript:
        """Commit the turn's audio and wait for its transcript.

        Returns:
            The final transcript; empty without a commit when the turn had
            under 100 ms of audio.

        Raises:
            SttError: the connection broke, the service reported an error or a
                failed transcription, or no transcript came within the
                backend's final timeout.
        """
        if self._closed:
            raise SttError("openai-realtime: stream is closed")
        conn = self._conn
        if conn is None:
            self._new_turn()
            return Transcript("", final=True)
        with turn_failures(self._fail, "openai-realtime", "before the transcript"):
            self._append(conn, self._resampler.flush())
            if self._samples < _MIN_COMMIT:
                self._send(conn, {"type": "input_audio_buffer.clear"})
                self._new_turn()
                return Transcript("", final=True)
            self._send(conn, {"type": "input_audio_buffer.commit"})
            text = self._await_final(conn)
        self._new_turn()
        return Transcript(text, final=True)

    def close(self) -> None:
        """Hang up in the background (never blocks)."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            hang_up_later(conn, "openai-stt-close")

    # ------------------------------------------------------------ internals

    def _connection(self) -> ClientConnection:
        """The open session; a dropped one is replaced between turns only."""
        conn = self._conn
        if (
            conn is not None
            and self._samples == 0
            and not still_open(conn, self._drain, "openai-realtime")
        ):
            conn = None
        if conn is None:
            conn = self._backend.connect(self._prompt)
            self._conn = conn
        return conn

    def _send(self, conn: ClientConnection, event: dict[str, Any]) -> None:
        event["event_id"] = f"event_ms{next(self._event_ids)}"
        conn.send(json.dumps(event))

    def _append(self, conn: ClientConnection, pcm24: np.ndarray) -> None:
        if pcm24.size == 0:
            return
        audio = base64.b64encode(pcm24.astype("<i2", copy=False).tobytes()).decode("ascii")
        self._send(conn, {"type": "input_audio_buffer.append", "audio": audio})
        self._samples += pcm24.size

    def _drain(self, conn: ClientConnection, timeout: float) -> None:
        """Read events until none arrives within `timeout`."""
        drain(conn, timeout, self._handle)

    def _handle(self, raw: str | bytes) -> None:
        event = parse_message(raw, "openai-realtime", "event")
        if event is None:
            return
        kind = event.get("type")
        item = str(event.get("item_id") or "")
        if kind == "error":
            raise _error_event(event, "the turn")
        if item in self._done:
            return  # a late event of an earlier turn
        if kind == "input_audio_buffer.committed":
            self._item = item
        elif kind == _DELTA:
            self._deltas[item] = self._deltas.get(item, "") + str(event.get("delta") or "")
        elif kind == _COMPLETED:
            self._completed[item] = str(event.get("transcript") or "").strip()
        elif kind == _FAILED:
            self._failed[item] = _error_text(event.get("error"))[1]

    def _await_final(self, conn: ClientConnection) -> str:
        deadline = time.monotonic() + self._backend.final_timeout
        while True:
            item = self._item
            if item is not None:
                if item in self._failed:
                    raise SttError(f"openai-realtime: transcription failed: {self._failed[item]}")
                if item in self._completed:
                    return self._completed[item]
            left = deadline - time.monotonic()
            if left <= 0:
                raise SttError(
                    f"openai-realtime: no transcript within {self._backend.final_timeout:g} s"
                )
            self._drain(conn, left)

    def _new_turn(self) -> None:
        self._done.update(self._deltas, self._completed, self._failed)
        if self._item is not None:
            self._done.add(self._item)
        self._deltas, self._completed, self._failed = {}, {}, {}
        self._item = None
        self._samples = 0
        self._reported = ""
        self._resampler.reset()

    def _fail(self, message: str) -> SttError:
        """Drop the session (its state is unknown) and the turn; the error to raise."""
        log.warning("stt_failed", backend="openai-realtime", error=message)
        conn, self._conn = self._conn, None
        if conn is not None:
            hang_up_later(conn, "openai-stt-close")
        self._new_turn()
        self._done.clear()  # item ids belong to the dropped session
        return SttError(message)


def from_settings(settings: SttSettings) -> OpenAiRealtimeBackend:
    """Build the backend from the `stt` settings.

    Raises:
        ModelLoadError: no API key, a bad URL, or (with `verify_at_start`) the
            service unreachable or refusing the key or the session.
    """
    return OpenAiRealtimeBackend(
        resolve_key(settings.api_key, "OPENAI_API_KEY", OpenAiRealtimeBackend.name),
        settings.base_url or DEFAULT_URL,
        settings.provider_model or DEFAULT_MODEL,
        language=settings.language,
        timeout=settings.timeout,
        beta=settings.openai_beta,
        verify=settings.verify_at_start,
    )
