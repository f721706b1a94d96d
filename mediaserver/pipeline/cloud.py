"""What every network backend (cloud STT, TTS and the LLM client) shares.

* `env_key`: an API key setting that may say ``env:NAME`` (read the variable
  NAME); an unset variable is an error that names the setting.
* `open_ws`: the `websockets` sync client with the connect bounded by a
  timeout and every failure turned into one `WsConnectError` that says what
  the server answered (status and body of a refused upgrade) or why there
  was no answer. Each stage words the error its own way (`SttError`,
  `TtsError`); what counts as a connect failure is decided here once.
* `hang_up` / `hang_up_later`: close a connection, optionally saying a last
  message first, without letting a connection that is already gone raise.
* `http_error_text`: the error text of an OpenAI-shaped HTTP error body.

`websockets` is an optional extra (``mediaserver[cloud]``), so it is imported
where it is used: importing this module never needs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import TYPE_CHECKING, Any

from mediaserver.pipeline.errors import ModelLoadError

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

__all__ = [
    "WsConnectError",
    "env_key",
    "hang_up",
    "hang_up_later",
    "http_error_text",
    "open_ws",
]


def env_key(value: str, where: str, error: type[Exception] = ModelLoadError) -> str:
    """`value` itself, or for ``env:NAME`` the value of the environment variable NAME.

    Args:
        value: The configured key.
        where: What the error message starts with (the setting, and the
            backend if there is one), e.g. "deepgram: stt.api_key".
        error: The exception class to raise.

    Returns:
        The key (`value` unchanged when it does not start with ``env:``).

    Raises:
        error: ``env:NAME`` names a variable that is unset or empty.
    """
    if not value.startswith("env:"):
        return value
    var = value[4:]
    resolved = os.environ.get(var)
    if not resolved:
        raise error(f"{where}: environment variable {var} is not set")
    return resolved


class WsConnectError(Exception):
    """A WebSocket that did not open.

    Args:
        cause: The exception the client raised.
        status: The HTTP status of a refused upgrade (None: no HTTP answer).
        body: The refusal's body, decoded and stripped ("" when none).
    """

    def __init__(self, cause: BaseException, status: int | None = None, body: str = "") -> None:
        super().__init__(repr(cause))
        self.cause = cause
        self.status = status
        self.body = body

    @property
    def auth(self) -> bool:
        """The server refused the credentials (HTTP 401 or 403)."""
        return self.status in (401, 403)

    @property
    def timed_out(self) -> bool:
        """No connection within the timeout."""
        return isinstance(self.cause, TimeoutError)


def open_ws(url: str, headers: dict[str, str], timeout: float, **options: Any) -> ClientConnection:
    """Connect a WebSocket with the sync client (blocking, at most `timeout`).

    Args:
        url: The full URL.
        headers: Extra handshake headers (authorisation).
        timeout: Seconds for TCP, TLS and the HTTP upgrade together.
        **options: More keyword arguments of `websockets.sync.client.connect`
            (max_queue, max_size, compression...).

    Returns:
        The open connection (a context manager that closes it).

    Raises:
        WsConnectError: The upgrade was refused, timed out, or the connection failed.
        ImportError: The `websockets` package is not installed.
    """
    from websockets.exceptions import InvalidStatus, WebSocketException
    from websockets.sync.client import connect

    try:
        # Entered as a context manager although callers may keep it and close
        # it themselves: websockets >= 17.1 warns on a bare connect(), and the
        # context-manager form works on every version from 12 on.
        conn: ClientConnection = connect(
            url, additional_headers=headers, open_timeout=timeout, close_timeout=1.0, **options
        ).__enter__()
        return conn
    except InvalidStatus as exc:
        body = bytes(exc.response.body or b"").decode("utf-8", "replace").strip()
        raise WsConnectError(exc, exc.response.status_code, body) from exc
    except (OSError, WebSocketException) as exc:  # TimeoutError is an OSError
        raise WsConnectError(exc) from exc


def hang_up(conn: ClientConnection, farewell: str | None = None) -> None:
    """Send `farewell` (if any) and close `conn`; a connection already gone is fine."""
    from websockets.exceptions import ConnectionClosed

    if farewell is not None:
        with contextlib.suppress(ConnectionClosed, OSError):
            conn.send(farewell)
    conn.close()


def hang_up_later(conn: ClientConnection, name: str, farewell: str | None = None) -> None:
    """`hang_up` in a daemon thread named `name`: never blocks the caller."""
    threading.Thread(target=hang_up, args=(conn, farewell), name=name, daemon=True).start()


def http_error_text(body: bytes) -> str:
    """The message of an HTTP error body: OpenAI's {"error": {"message"}}, {"detail"}, or raw."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300] or "no error message"
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            for key in ("message", "detail", "msg"):
                if error.get(key):
                    return str(error[key])
        elif isinstance(error, str) and error:
            return error
        if data.get("detail"):
            return str(data["detail"])
    return text[:300]
