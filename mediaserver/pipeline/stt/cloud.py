"""What the streaming cloud STT backends (deepgram, openai-realtime) share.

* `resolve_key`, `check_url`: the `stt.api_key` and `stt.base_url` settings,
  checked at load with a `ModelLoadError` naming backend and setting.
* `open_socket`: connect (see `mediaserver.pipeline.cloud.open_ws`) with
  every failure an `SttError` that says what failed.
* `turn_failures`: how a turn's network errors become the `SttError` the
  call actor recovers from, after the stream dropped its connection.
* `still_open`, `drain`, `parse_message`: reading what the service sent.

Both backends keep one connection per call across turns, and replace it
only between turns; a failure drops it, so the next turn starts afresh.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import structlog
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from mediaserver.pipeline.cloud import WsConnectError, env_key, open_ws
from mediaserver.pipeline.stt.base import ModelLoadError, SttError

__all__ = [
    "check_url",
    "drain",
    "open_socket",
    "parse_message",
    "resolve_key",
    "still_open",
    "turn_failures",
]

log = structlog.get_logger("mediaserver.pipeline.stt")


def resolve_key(value: str | None, env_default: str, backend: str) -> str:
    """The API key itself: `value`, or the environment variable `env:NAME` names.

    Args:
        value: the configured `stt.api_key`; None means ``env:{env_default}``.
        env_default: the provider's usual variable, e.g. "DEEPGRAM_API_KEY".
        backend: the backend name, for the error message.

    Returns:
        The key.

    Raises:
        ModelLoadError: no key, or the variable is unset (names backend and key).
    """
    if value is None:
        value = f"env:{env_default}"
    key = env_key(value, f"{backend}: stt.api_key")
    if not key:
        raise ModelLoadError(f"{backend}: stt.api_key is empty")
    return key


def check_url(url: str, backend: str) -> str:
    """`url` if it is a ws:// or wss:// URL, else ModelLoadError naming stt.base_url."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ModelLoadError(f"{backend}: stt.base_url must be a ws:// or wss:// URL, not {url!r}")
    return url


def open_socket(
    url: str, headers: dict[str, str], timeout: float, backend: str
) -> ClientConnection:
    """Connect a WebSocket, turning every failure into an `SttError` that says what failed.

    Args:
        url: the full URL (query included).
        headers: extra handshake headers (authorisation).
        timeout: seconds for TCP, TLS and the HTTP upgrade together.
        backend: the backend name, for messages.

    Returns:
        The open connection.

    Raises:
        SttError: connection refused or timed out, or the upgrade rejected; an
            HTTP 401 or 403 says "authentication failed".
    """
    where = url.split("?", 1)[0]  # the query may be long (keyterms); never holds secrets anyway
    try:
        # Results are small; a burst while a turn is finalised must not stall
        # the socket's reader (which also answers pings).
        return open_ws(url, headers, timeout, max_queue=256)
    except WsConnectError as exc:
        if exc.status is None:
            raise SttError(f"{backend}: cannot connect to {where}: {exc.cause!r}") from exc.cause
        detail = f": {exc.body[:200]}" if exc.body else ""
        if exc.auth:
            raise SttError(
                f"{backend}: authentication failed (HTTP {exc.status}) at {where}{detail}"
                "; check stt.api_key"
            ) from exc.cause
        raise SttError(
            f"{backend}: {where} refused the WebSocket (HTTP {exc.status}){detail}"
        ) from exc.cause


@contextmanager
def turn_failures(fail: Callable[[str], SttError], backend: str, closed: str) -> Iterator[None]:
    """Turn a broken connection or a service error into the `SttError` `fail` returns.

    Args:
        fail: the stream's: drops the connection and the turn, returns the error.
        backend: the backend name, for messages.
        closed: when the service closed, for the message ("mid-utterance", ...).

    Raises:
        SttError: from `fail`, for a closed or failed connection or an `SttError`.
    """
    try:
        yield
    except ConnectionClosed as exc:
        raise fail(f"{backend}: connection closed {closed}: {exc}") from exc
    except OSError as exc:
        raise fail(f"{backend}: connection failed: {exc!r}") from exc
    except SttError as exc:
        raise fail(str(exc)) from exc


def still_open(
    conn: ClientConnection, read: Callable[[ClientConnection, float], object], backend: str
) -> bool:
    """Whether `conn` survived the quiet between turns (`read` takes what it sent meanwhile).

    A connection the service closed while the caller was silent (its idle
    timeout, a deploy on their side, a session's maximum duration) lost no
    audio of the coming turn, so it is logged and the caller just reconnects.
    """
    try:
        read(conn, 0.0)
    except ConnectionClosed as exc:
        log.info("stt_reconnect", backend=backend, reason=str(exc))
        return False
    return True


def drain(
    conn: ClientConnection,
    timeout: float,
    handle: Callable[[str | bytes], None],
    until: Callable[[], bool] | None = None,
) -> bool:
    """Read messages into `handle` until none arrives within `timeout` or `until()` holds.

    Only the first read waits; the rest take what has already arrived.

    Returns:
        True if any message came.
    """
    got = False
    while True:
        try:
            raw = conn.recv(timeout=timeout)
        except TimeoutError:
            return got
        got = True
        handle(raw)
        if until is not None and until():
            # Stop here: the service may hang up right after the final, and
            # reading on would turn a complete turn into a failed one.
            return got
        timeout = 0.0


def parse_message(raw: str | bytes, backend: str, what: str) -> dict[str, Any] | None:
    """A JSON message as a dict; None for other JSON values (nothing to act on).

    Raises:
        SttError: `raw` is not JSON (the message calls it a malformed `what`).
    """
    try:
        message: Any = json.loads(raw)
    except ValueError as exc:
        raise SttError(f"{backend}: malformed {what} {raw[:200]!r}") from exc
    return message if isinstance(message, dict) else None
