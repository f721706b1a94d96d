"""The plumbing of the fake cloud services the STT and TTS tests run against.

Every fake is the `websockets` sync server on 127.0.0.1 (port 0) in a
daemon thread, so the backends connect over a real socket in the provider's
wire format; what each fake says is up to its test module.

* `FakeService`: a scripted STT service with a context-manager life, an
  auth check at the handshake and a turn counter (subclasses speak the wire
  format in `_handle`).
* `FakeServer`: a TTS server running a test's `script` on each connection.
* Audio and stream helpers: `frames`, `speak`, `tone`, `spans`, `backend_maker`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
import numpy.typing as npt
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from mediaserver.pipeline.stt import STT_RATE, SttStream
from mediaserver.pipeline.tts import TtsChunk

FRAME = STT_RATE // 50  # 20 ms
EMPTY = np.zeros(0, np.int16)

B = TypeVar("B")

# ---------------------------------------------------------------- STT services


class FakeService:
    """A scripted streaming STT service: turn N is heard as ``transcripts[N]``.

    Subclasses set `path` and `authorization` (the header value a good key
    sends), `auth_error` (the provider's JSON body of a 401), and speak the
    wire format in `_handle`, appending what they saw to `connections`.

    Args:
        transcripts: what each successive turn "says" (across connections).
    """

    path = "/"
    authorization = ""
    auth_error: ClassVar[dict[str, Any]] = {}

    def __init__(self, *transcripts: str) -> None:
        self.transcripts = list(transcripts)
        self.connections: list[Any] = []
        self.rejected = 0
        self.turn = 0
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.socket.getsockname()[1]
        return f"ws://127.0.0.1:{port}{self.path}"

    def __enter__(self) -> Self:
        self._server = serve(self._handle, "127.0.0.1", 0, process_request=self._check_auth)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._thread.join(timeout=5)
        assert not self._thread.is_alive()

    def _check_auth(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Authorization") == self.authorization:
            return None
        self.rejected += 1
        response = connection.respond(HTTPStatus.UNAUTHORIZED, json.dumps(self.auth_error))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    def _handle(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    def _words(self) -> list[str]:
        with self._lock:
            turn = self.turn
        return self.transcripts[turn].split() if turn < len(self.transcripts) else []


def frames(seconds: float) -> list[npt.NDArray[np.int16]]:
    """20 ms frames of a quiet tone (the fakes do not listen to the content)."""
    t = np.arange(FRAME) / STT_RATE
    tone = (3000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    return [tone.copy() for _ in range(round(seconds * 50))]


def speak(stream: SttStream, seconds: float) -> list[str]:
    """Feed `seconds` of audio in 20 ms frames (paced a little); the partials seen."""
    partials: list[str] = []
    for frame in frames(seconds):
        partial = stream.feed(frame)
        if partial is not None:
            assert not partial.final
            partials.append(partial.text)
        time.sleep(0.002)
    return partials


@contextlib.contextmanager
def backend_maker(backend: Callable[..., B], key: str) -> Iterator[Callable[..., B]]:
    """A factory of `backend(key, url, ...)` that does not verify; all closed at the end.

    The factory takes the URL and keyword arguments (``key`` replaces the
    good key; ``verify`` defaults to False and ``timeout`` to 2 s).
    """
    made: list[Any] = []

    def make(url: str, **kwargs: Any) -> B:
        kwargs.setdefault("verify", False)
        kwargs.setdefault("timeout", 2.0)
        made.append(backend(kwargs.pop("key", key), url, **kwargs))
        return made[-1]  # type: ignore[no-any-return]

    try:
        yield make
    finally:
        for each in made:
            each.close()


# ---------------------------------------------------------------- TTS servers


@dataclass
class FakeServer:
    """A WebSocket server on 127.0.0.1 running `script` for each connection.

    Args:
        script: what the server does on a connection (a closed connection ends it).
        reject: (status, body) to refuse every handshake with.
    """

    script: Callable[[ServerConnection, FakeServer], None]
    reject: tuple[int, str] | None = None
    handshakes: list[Request] = field(default_factory=list)
    #: Every JSON message `recv_json` read, in order.
    received: list[Any] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    last_sent_at: float = 0.0

    def __post_init__(self) -> None:
        self.server: Server = serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            compression=None,
            max_size=None,
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}"

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        self.handshakes.append(request)
        if self.reject is not None:
            return conn.respond(*self.reject)
        return None

    def _handle(self, conn: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            self.script(conn, self)

    def recv_json(self, conn: ServerConnection) -> Any:
        data = json.loads(conn.recv(timeout=5))
        self.received.append(data)
        return data

    def send(self, conn: ServerConnection, data: dict[str, Any]) -> None:
        conn.send(json.dumps(data))
        self.last_sent_at = time.monotonic()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.thread.join(5)


@contextlib.contextmanager
def server_pool() -> Iterator[list[FakeServer]]:
    """A list to `start` servers into; all are closed at the end."""
    made: list[FakeServer] = []
    try:
        yield made
    finally:
        for server in made:
            server.close()


def start(
    servers: list[FakeServer], script: Callable[[ServerConnection, FakeServer], None], **kw: Any
) -> FakeServer:
    """A `FakeServer` running `script`, added to `servers` (closed with them)."""
    server = FakeServer(script, **kw)
    servers.append(server)
    return server


def tone(n: int, start: int = 0) -> np.ndarray:
    """`n` samples of a sawtooth from sample `start` on (continuous across calls)."""
    return ((np.arange(start, start + n) * 37) % 20000 - 10000).astype(np.int16)


def spans(chunks: list[TtsChunk]) -> list[tuple[int, int]]:
    """The (start, end) text span of each chunk."""
    return [(c.start, c.end) for c in chunks]
