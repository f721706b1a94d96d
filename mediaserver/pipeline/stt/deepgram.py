"""Deepgram live streaming speech-to-text over a WebSocket (``mediaserver[cloud]``).

How the `SttStream` interface maps onto Deepgram's ``/v1/listen`` protocol:

* **Connection.** One WebSocket per call, ``GET {base_url}?model=nova-3&
  encoding=linear16&sample_rate=16000&channels=1&interim_results=true&
  endpointing=300&smart_format=true&punctuate=true&language=en-US&keyterm=...``
  with the header ``Authorization: Token <key>``. It is opened by the first
  `feed` of a call (`open` runs on the event loop and must not block), kept
  open across the call's turns, and opened again at the next turn if it
  dropped in between.
* **Audio.** `feed` sends the samples as one binary frame of little-endian
  int16 and then reads, without waiting, whatever the service has sent.
* **Results.** ``{"type": "Results", "is_final": false, ...}`` is an interim
  hypothesis of the audio not yet final; ``is_final: true`` is a segment
  Deepgram will not revise (it cuts one at each pause of `endpointing` ms).
  The partial `feed` returns is the turn's final segments plus the newest
  interim; the final transcript is the turn's final segments joined.
  ``speech_final``, ``SpeechStarted``, ``UtteranceEnd`` and ``Metadata`` are
  ignored: our own VAD decides when the turn ends.
* **End of turn.** `finalise` sends ``{"type": "Finalize"}``; Deepgram
  flushes what it holds and flags that result ``from_finalize: true``. Its
  documentation says it sends that flag "typically" only when audio was
  buffered, so the wait also ends once the final segments cover all the
  audio sent, or after a short quiet period with no interim left unfinalised.
  Otherwise the wait is bounded, and a timeout is an `SttError`.
* **Between turns** no audio flows, and Deepgram closes a stream that gets
  no audio for 10 s; a housekeeping thread sends ``{"type": "KeepAlive"}``
  on idle streams. `close` sends ``{"type": "CloseStream"}``.
* **Late results.** Timestamps are seconds of audio sent on the connection,
  so a result of an earlier turn that arrives late (it ends at or before the
  turn's first sample) is recognised and dropped.

Failures (refused connection, HTTP 401 at the handshake, the service closing
the socket mid-utterance, an ``Error`` message, no final in time) raise
`SttError`, which the call actor turns into the ``stt_failure`` recovery. The
socket is then dropped, so the next turn starts on a fresh connection.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import numpy as np
import structlog
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from mediaserver.codecs.base import as_mono_int16
from mediaserver.pipeline.cloud import hang_up, hang_up_later
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

__all__ = ["DEFAULT_URL", "DeepgramBackend", "DeepgramStream", "from_settings"]

log = structlog.get_logger("mediaserver.pipeline.stt")

DEFAULT_URL = "wss://api.deepgram.com/v1/listen"
DEFAULT_MODEL = "nova-3"

#: Seconds between KeepAlive messages on an idle stream (Deepgram: every 3-5 s).
KEEPALIVE_INTERVAL = 4.0
#: Quiet seconds after Finalize that end the wait when nothing is left unfinalised.
SETTLE = 0.3
#: Keyterm prompting accepts about 500 tokens in all; count words, with margin.
_KEYTERM_WORDS = 300
#: The `keywords` parameter of older models takes up to 100 entries.
_MAX_KEYWORDS = 100
_KEEPALIVE = json.dumps({"type": "KeepAlive"})
_FINALIZE = json.dumps({"type": "Finalize"})
_CLOSE_STREAM = json.dumps({"type": "CloseStream"})


def _language(code: str) -> str:
    """Our "en-us" as Deepgram's BCP-47 "en-US"; "multi" and bare "en" pass through."""
    lang, _, region = code.partition("-")
    return f"{lang.lower()}-{region.upper()}" if region else lang.lower()


def _vocabulary(hints: SttHints) -> list[str]:
    """Phrases, then terms, then words, each once, in the agent's order."""
    seen: dict[str, None] = {}
    for term in (*hints.phrases, *hints.terms, *hints.words):
        term = " ".join(term.split())
        if term and term.lower() not in {s.lower() for s in seen}:
            seen[term] = None
    return list(seen)


def query_params(
    model: str, language: str, endpointing_ms: int, hints: SttHints
) -> list[tuple[str, str]]:
    """The ``/v1/listen`` query for a stream biased by `hints`.

    Nova-3 takes hints as repeated ``keyterm`` parameters (whole phrases, about
    500 tokens in all); older models take single ``keywords`` (up to 100).
    """
    params = [
        ("model", model),
        ("encoding", "linear16"),
        ("sample_rate", str(STT_RATE)),
        ("channels", "1"),
        ("interim_results", "true"),
        ("endpointing", str(endpointing_ms) if endpointing_ms else "false"),
        ("smart_format", "true"),
        ("punctuate", "true"),
        ("language", _language(language)),
    ]
    terms = _vocabulary(hints)
    if model.startswith("nova-3"):
        budget = _KEYTERM_WORDS
        for term in terms:
            budget -= len(term.split())
            if budget < 0:
                break  # Deepgram stops transcribing when the list is over its limit
            params.append(("keyterm", term))
    else:
        words = [t for t in terms if " " not in t][:_MAX_KEYWORDS]
        params += [("keywords", w) for w in words]
    return params


class _Housekeeper:
    """One thread per backend that sends KeepAlive on idle streams."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._streams: weakref.WeakSet[DeepgramStream] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, stream: DeepgramStream) -> None:
        with self._lock:
            self._streams.add(stream)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="deepgram-keepalive", daemon=True
                )
                self._thread.start()

    def discard(self, stream: DeepgramStream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def _run(self) -> None:
        # Wake often enough that no stream waits much past its interval.
        while not self._stop.wait(min(1.0, self.interval / 4)):
            with self._lock:
                streams = list(self._streams)
            now = time.monotonic()
            for stream in streams:
                stream.keepalive(now)

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)


class DeepgramBackend(SttBackend):
    """Deepgram's live streaming API (registry name "deepgram").

    Args:
        api_key: the Deepgram API key itself (see `resolve_key` for ``env:NAME``).
        base_url: the ``/v1/listen`` WebSocket URL.
        model: Deepgram model, e.g. "nova-3" or "nova-2-phonecall".
        language: our language code ("en-us" is sent as "en-US").
        endpointing_ms: silence that makes Deepgram close a segment (0: off).
        timeout: seconds to connect; the final transcript may take 80 % of it
            (the call actor gives up at the whole of it, so the stream fails
            first, cleanly, and is free for the next turn).
        verify: connect once now, so a bad key or URL fails at load.
        keepalive: seconds of idleness before a KeepAlive is sent.

    Raises:
        ModelLoadError: the URL is not ws:// or wss://, or (with `verify`) the
            service cannot be reached or refuses the key.
    """

    name = "deepgram"
    punctuates = True  # punctuate=true, smart_format=true

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_URL,
        model: str = DEFAULT_MODEL,
        *,
        language: str = "en-us",
        endpointing_ms: int = 300,
        timeout: float = 5.0,
        verify: bool = True,
        keepalive: float = KEEPALIVE_INTERVAL,
    ) -> None:
        self.url = check_url(base_url, self.name)
        self.model = model
        self.language = language
        self.endpointing_ms = endpointing_ms
        self.timeout = timeout
        self.final_timeout = 0.8 * timeout
        self._headers = {"Authorization": f"Token {api_key}"}
        self._housekeeper = _Housekeeper(keepalive)
        if verify:
            self.verify()

    def verify(self) -> None:
        """Open and close one connection (blocking).

        Raises:
            ModelLoadError: the service is unreachable or refuses the key.
        """
        try:
            conn = self.connect(SttHints())
        except SttError as exc:
            raise ModelLoadError(str(exc)) from exc
        hang_up(conn, _CLOSE_STREAM)

    def stream_url(self, hints: SttHints) -> str:
        """The full URL of a stream biased by `hints`."""
        params = query_params(self.model, self.language, self.endpointing_ms, hints)
        joiner = "&" if urlsplit(self.url).query else "?"
        return self.url + joiner + urlencode(params)

    def connect(self, hints: SttHints) -> ClientConnection:
        """A new connection for a stream biased by `hints` (blocking).

        Raises:
            SttError: refused, unreachable, or authentication failed.
        """
        return open_socket(self.stream_url(hints), self._headers, self.timeout, self.name)

    def open(self, hints: SttHints) -> DeepgramStream:
        """A stream for one call; it connects on its first audio.

        Args:
            hints: phrases and words, sent as keyterms (or keywords).

        Returns:
            A `DeepgramStream`.
        """
        return DeepgramStream(self, hints)

    def close(self) -> None:
        """Stop the keep-alive thread (streams close themselves)."""
        self._housekeeper.stop()


@dataclass
class _Turn:
    """What the service has said about the current turn."""

    #: Seconds of audio on the connection when the turn began.
    offset: float = 0.0
    #: Samples sent in this turn.
    samples: int = 0
    finals: list[str] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    interim: str = ""
    #: Results messages received in this turn.
    results: int = 0
    #: Where the last final segment ends, in connection seconds.
    final_end: float = 0.0
    from_finalize: bool = False
    #: The partial last returned by `feed`.
    reported: str = ""

    def text(self) -> str:
        parts = [*self.finals, self.interim]
        return " ".join(p for p in parts if p)


class DeepgramStream(SttStream):
    """One call's Deepgram connection, reused turn after turn.

    `feed` and `finalise` come from the actor's executor, one at a time; the
    keep-alive thread only sends when it can take the lock at once, and
    `close` (which may come from the event loop) never blocks.
    """

    def __init__(self, backend: DeepgramBackend, hints: SttHints) -> None:
        self._backend = backend
        self._hints = hints
        self._lock = threading.Lock()
        self._conn: ClientConnection | None = None
        self._closed = False
        #: Seconds of audio sent on the current connection (Deepgram's clock).
        self._sent = 0.0
        self._last_send = 0.0
        self._turn = _Turn()

    # ------------------------------------------------------------ the interface

    def feed(self, pcm: np.ndarray) -> Transcript | None:
        """Send audio; return the turn's newest hypothesis if it changed.

        Args:
            pcm: 1-D int16 samples at 16 kHz (empty: only read what arrived).

        Returns:
            A partial transcript (final segments plus the newest interim) when
            it differs from the last one returned, else None.

        Raises:
            SttError: connecting failed, or the connection broke, or Deepgram
                reported an error (the turn is lost; the next one reconnects).
        """
        samples = as_mono_int16(pcm)
        with self._lock:
            if self._closed:
                raise SttError("deepgram: stream is closed")
            if samples.size == 0 and self._conn is None:
                return None
            with turn_failures(self._fail, "deepgram", "mid-utterance"):
                conn = self._connection()
                if samples.size:
                    conn.send(samples.astype("<i2", copy=False).tobytes())
                    self._last_send = time.monotonic()
                    self._sent += samples.size / STT_RATE
                    self._turn.samples += samples.size
                self._drain(conn, 0.0)
            text = self._turn.text()
            if text == self._turn.reported:
                return None
            self._turn.reported = text
            return Transcript(text, final=False)

    def finalise(self) -> Transcript:
        """Flush Deepgram (Finalize) and return the turn's final segments joined.

        Returns:
            The final transcript, with the mean confidence of its segments;
            empty without a network round trip when the turn had no audio.

        Raises:
            SttError: the connection broke, Deepgram reported an error, or no
                final arrived within the backend's final timeout.
        """
        with self._lock:
            if self._closed:
                raise SttError("deepgram: stream is closed")
            turn = self._turn
            conn = self._conn
            if turn.samples == 0 or conn is None:
                self._new_turn()
                return Transcript("", final=True)
            with turn_failures(self._fail, "deepgram", "before the final"):
                conn.send(_FINALIZE)
                self._last_send = time.monotonic()
                self._await_final(conn)
            text = " ".join(turn.finals)
            scores = turn.confidences
            confidence = sum(scores) / len(scores) if scores else None
            self._new_turn()
            return Transcript(text, final=True, confidence=confidence)

    def close(self) -> None:
        """Say CloseStream and hang up, in the background (never blocks)."""
        self._closed = True
        self._backend._housekeeper.discard(self)
        conn, self._conn = self._conn, None
        if conn is not None:
            hang_up_later(conn, "deepgram-close", _CLOSE_STREAM)

    def keepalive(self, now: float) -> None:
        """Send KeepAlive if the connection has been idle (housekeeping thread)."""
        if not self._lock.acquire(blocking=False):
            return  # feed or finalise is sending: the stream is not idle
        try:
            conn = self._conn
            if conn is None or now - self._last_send < self._backend._housekeeper.interval:
                return
            conn.send(_KEEPALIVE)
            self._last_send = now
        except (ConnectionClosed, OSError):
            pass  # the next turn notices and reconnects
        finally:
            self._lock.release()

    # ------------------------------------------------------------ internals

    def _connection(self) -> ClientConnection:
        """The open connection; a dropped one is replaced between turns only."""
        conn = self._conn
        if (
            conn is not None
            and self._turn.samples == 0
            and not still_open(conn, self._drain, "deepgram")
        ):
            conn = None
        if conn is None:
            conn = self._backend.connect(self._hints)
            self._conn = conn
            self._sent = 0.0
            self._last_send = time.monotonic()
            self._turn = _Turn()
            self._backend._housekeeper.add(self)
        return conn

    def _drain(self, conn: ClientConnection, timeout: float) -> bool:
        """Read what the service sent (see `drain`); True if any message came."""
        return drain(conn, timeout, self._handle)

    def _handle(self, raw: str | bytes) -> None:
        message = parse_message(raw, "deepgram", "message")
        if message is None:
            return
        kind = message.get("type")
        if kind == "Error":
            what = message.get("description") or message.get("message") or message
            raise SttError(f"deepgram: service error: {what}")
        if kind != "Results":
            return  # Metadata, SpeechStarted, UtteranceEnd: our VAD owns turn-taking
        turn = self._turn
        start = float(message.get("start") or 0.0)
        end = start + float(message.get("duration") or 0.0)
        if end <= turn.offset + 1e-3 and end > 0:
            return  # a late result of an earlier turn
        alternatives = (message.get("channel") or {}).get("alternatives") or [{}]
        best = alternatives[0] if isinstance(alternatives[0], dict) else {}
        text = str(best.get("transcript") or "").strip()
        turn.results += 1
        if message.get("is_final"):
            if text:
                turn.finals.append(text)
                confidence = best.get("confidence")
                if isinstance(confidence, int | float):
                    turn.confidences.append(float(confidence))
            turn.interim = ""
            turn.final_end = max(turn.final_end, end)
        else:
            turn.interim = text
        if message.get("from_finalize"):
            turn.from_finalize = True

    def _await_final(self, conn: ClientConnection) -> None:
        turn = self._turn
        deadline = time.monotonic() + self._backend.final_timeout
        while not self._final_complete():
            left = deadline - time.monotonic()
            if left <= 0:
                raise SttError(
                    f"deepgram: no final transcript within {self._backend.final_timeout:g} s"
                )
            came = drain(conn, min(left, SETTLE), self._handle, self._final_complete)
            if not came and turn.results and not turn.interim:
                return  # quiet, and nothing is left unfinalised: nothing more will come

    def _final_complete(self) -> bool:
        turn = self._turn
        if turn.from_finalize:
            return True
        # Every sample sent is inside a final segment: Deepgram holds nothing.
        return not turn.interim and turn.results > 0 and turn.final_end >= self._sent - 0.02

    def _new_turn(self) -> None:
        self._turn = _Turn(offset=self._sent)

    def _fail(self, message: str) -> SttError:
        """Drop the connection (its state is unknown) and the turn; the error to raise."""
        log.warning("stt_failed", backend="deepgram", error=message)
        conn, self._conn = self._conn, None
        self._backend._housekeeper.discard(self)
        if conn is not None:
            hang_up_later(conn, "deepgram-close")
        self._sent = 0.0
        self._turn = _Turn()
        return SttError(message)


def from_settings(settings: SttSettings) -> DeepgramBackend:
    """Build the backend from the `stt` settings.

    Raises:
        ModelLoadError: no API key, a bad URL, or (with `verify_at_start`) the
            service unreachable or refusing the key.
    """
    return DeepgramBackend(
        resolve_key(settings.api_key, "DEEPGRAM_API_KEY", DeepgramBackend.name),
        settings.base_url or DEFAULT_URL,
        settings.provider_model or DEFAULT_MODEL,
        language=settings.language,
        endpointing_ms=settings.endpointing_ms,
        timeout=settings.timeout,
        verify=settings.verify_at_start,
    )
