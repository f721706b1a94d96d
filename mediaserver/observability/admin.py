"""The admin HTTP server: health, readiness, Prometheus metrics, call records, calls page.

A deliberately small HTTP/1.1 server on plain asyncio streams (no web
framework): GET and HEAD, and POST/DELETE on the calls, one request per
connection (``Connection: close``), the request head and body bounded in size
(:data:`MAX_HEAD_BYTES`, :data:`MAX_BODY_BYTES`) and in time
(``read_timeout``), so a slow or hostile client cannot hold a connection or
grow a buffer. Routes:

    GET /health          200 {"status": "ok"}               (never needs the token)
    GET /ready           200 {"status": "ready"} | 503 {"status": "draining"}
    GET /metrics         Prometheus text exposition
    GET /calls           {"live": [...], "recent": [...]}   (?limit=N, default 50, max 500)
    GET /calls/{id}      one call's record | 404 {"error": "no such call"}
    POST /calls          place a call: a JSON body {"to", "route", ...} -> 201 {"id", ...}
                         (200 for a retried Idempotency-Key; 4xx/503 {"error": why})
    DELETE /calls/{id}   hang up a call in progress -> 202 | 404
    GET|POST /campaigns  the campaigns | start one: {"route", "contacts" | "csv", caps...}
    GET|DELETE /campaigns/{id}, POST /campaigns/{id}/{pause|resume|cancel}
    GET|POST /dnc, DELETE /dnc/{number}   the do-not-call list
    GET /registrations   {"USER": [{"contact", "expires_in", "source"}, ...]}
    GET / , /calls.html  the calls page (static/calls.html)

With a ``token``, every route but ``/health`` needs ``Authorization: Bearer
<token>`` or ``?token=<token>``; the calls page passes its own ``?token=`` on
to its fetches. POST and DELETE place and end calls: from beyond loopback
they need a token even when the other routes are left open. The data comes
from an :class:`AdminSource` (the server); a
source method that raises answers 500 and is logged, and the server keeps
serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import ipaddress
import json
import math
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from importlib import resources
from typing import Any, Final, Protocol, TypeAlias, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

log = structlog.get_logger("mediaserver.admin")

#: Request line plus headers, CRLFs included; more answers 431.
MAX_HEAD_BYTES: Final = 16 * 1024
#: A request body (``POST /calls``) of more bytes answers 413; a campaign's
#: contact list may be bigger.
MAX_BODY_BYTES: Final = 64 * 1024
MAX_CAMPAIGN_BYTES: Final = 16 * 1024 * 1024
#: Default and largest ``?limit=`` of ``GET /calls``.
DEFAULT_RECENT_LIMIT: Final = 50
MAX_RECENT_LIMIT: Final = 500
#: Connections served at once; more get 503 straight away.
MAX_CONNECTIONS: Final = 64

JSON_TYPE: Final = "application/json"
HTML_TYPE: Final = "text/html; charset=utf-8"

# The page is self-contained: inline script and style, fetches to its own origin only.
PAGE_CSP: Final = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rf"({_TOKEN}) ([\x21-\x7e]+) HTTP/(\d)\.(\d)")
_HEADER_NAME = re.compile(_TOKEN)
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_BEARER = re.compile(r"bearer[ \t]+(.*?)[ \t]*", re.IGNORECASE)


T = TypeVar("T")
#: A source may answer at once or after awaiting (the cluster asks its workers).
Answer: TypeAlias = T | Awaitable[T]


class AdminSource(Protocol):
    """What the admin server shows; the media server and the cluster implement it."""

    def ready(self) -> Answer[bool]:
        """False while draining: ``/ready`` answers 503."""
        ...

    def live_calls(self) -> Answer[list[dict[str, Any]]]:
        """Summaries of the calls in progress."""
        ...

    def recent_calls(self, limit: int) -> Answer[list[dict[str, Any]]]:
        """Summaries of finished calls, newest first, at most ``limit``."""
        ...

    def call_detail(self, call_id: str) -> Answer[dict[str, Any] | None]:
        """One call's full record (summary, ``events``, ``final_state``), or None."""
        ...

    def metrics_text(self) -> Answer[bytes]:
        """The Prometheus text exposition."""
        ...

    def registrations(self) -> Answer[dict[str, list[dict[str, Any]]]]:
        """The registrar's live bindings by user (empty without a registrar)."""
        ...

    def trunks(self) -> Answer[dict[str, dict[str, Any]]]:
        """Each trunk's addresses, calls in progress and outbound state."""
        ...

    def dial(self, body: Any, idempotency_key: str | None) -> Answer[tuple[int, dict[str, Any]]]:
        """Place a call; (status, JSON answer). An error answer is ``{"error": why}``,
        with ``retry_after`` (seconds) when trying later may work."""
        ...

    def end_call(self, call_id: str) -> Answer[bool]:
        """Hang up a call in progress; False when there is none by that id."""
        ...

    def campaigns_api(self, method: str, parts: list[str], body: Any) -> Answer[tuple[int, Any]]:
        """``/campaigns...`` and ``/dnc...`` (`parts`: the path's segments)."""
        ...


async def _answer(value: Answer[T]) -> T:
    if inspect.isawaitable(value):
        return await value
    return value


@dataclass
class Request:
    """A parsed request head."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    version: tuple[int, int] = (1, 1)
    body: bytes = b""


@dataclass
class Response:
    """A complete response; ``body`` is left out on the wire for HEAD."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class HttpError(Exception):
    """Ends the request with an error response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class _ClientGone(Exception):
    """The client closed the connection before sending a whole request head."""


def _jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as null and unknown objects as strings.

    ``JSON.parse`` rejects NaN and Infinity, and one odd value in a record
    must not make the whole page unreadable.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON response (UTF-8, compact)."""
    body = json.dumps(_jsonable(payload), ensure_ascii=False, separators=(",", ":"))
    return Response(status, body.encode("utf-8"), JSON_TYPE, headers or {})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """``{"error": message}`` with ``status``."""
    return json_response(status, {"error": message}, headers)


def parse_head(head: bytes) -> Request:
    """Parse a request head (request line and header fields, no blank line).

    Raises:
        HttpError: 400 for anything malformed, 505 for a major version other than 1.
    """
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        # Field values may carry obs-text; the request line and names may not.
        text = head.decode("latin-1")
    lines = re.split(r"\r?\n", text)
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None or not lines[0].isascii():
        raise HttpError(error_response(400, "malformed request line"))
    method, target, major, minor = match.groups()
    if major != "1":
        raise HttpError(error_response(505, "HTTP version not supported"))
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or _HEADER_NAME.fullmatch(name) is None:
            # Also rejects obsolete line folding and whitespace before the colon.
            raise HttpError(error_response(400, "malformed header field"))
        key = name.lower()
        value = value.strip(" \t")
        if key == "host" and key in headers:
            raise HttpError(error_response(400, "more than one Host header"))
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if target.startswith("/"):
        parts = urlsplit(target)
    elif target.lower().startswith(("http://", "https://")):
        parts = urlsplit(target)  # absolute-form, as a proxy would send it
    else:
        raise HttpError(error_response(400, "malformed request target"))
    path = parts.path or "/"
    query = parse_qs(parts.query, keep_blank_values=True)
    return Request(method, path, query, headers, version=(1, int(minor)))


def _check_request_line(buffer: bytes) -> None:
    """Reject a malformed request line as soon as it is complete."""
    line, newline, _ = buffer.partition(b"\n")
    if newline and _REQUEST_LINE.fullmatch(line.rstrip(b"\r").decode("latin-1")) is None:
        raise HttpError(error_response(400, "malformed request line"))


class HeadReader:
    """Reads one request head, remembering whether any byte arrived."""

    def __init__(self, reader: asyncio.StreamReader, limit: int = MAX_HEAD_BYTES) -> None:
        self.reader = reader
        self.limit = limit
        self.received = 0
        #: What arrived after the head (the start of a body).
        self.rest = b""

    async def read(self) -> bytes:
        """Read up to the blank line that ends a request head; the head without it.

        Raises:
            HttpError: 431 when the head exceeds ``limit`` bytes, 400 for a bad
                request line (as soon as that line is complete).
            _ClientGone: EOF before the head was complete.
        """
        buffer = b""
        checked = False
        while True:
            # A client may send empty lines before the request line (RFC 9112 2.2).
            buffer = buffer.lstrip(b"\r\n")
            end = _HEAD_END.search(buffer)
            if end is not None:
                if end.start() > self.limit:
                    raise HttpError(error_response(431, "request header fields too large"))
                self.rest = buffer[end.end() :]
                return buffer[: end.start()]
            if not checked and b"\n" in buffer:
                _check_request_line(buffer)
                checked = True
            if len(buffer) > self.limit:
                raise HttpError(error_response(431, "request header fields too large"))
            chunk = await self.reader.read(4096)
            if not chunk:
                raise _ClientGone
            self.received += len(chunk)
            buffer += chunk


class AdminServer:
    """The admin HTTP server on one host and port."""

    def __init__(
        self,
        source: AdminSource,
        host: str = "127.0.0.1",
        port: int = 8080,
        token: str | None = None,
        *,
        read_timeout: float = 5.0,
        write_timeout: float = 10.0,
    ) -> None:
        self.source = source
        self.host = host
        self.port = port
        self.token = token or None
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._page: bytes | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound ``(host, port)`` while serving."""
        if self._server is None or not self._server.sockets:
            return None
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def start(self) -> tuple[str, int]:
        """Bind and serve; ``port=0`` picks a free port. Returns the bound ``(host, port)``."""
        if self._server is not None:
            raise RuntimeError("admin server already started")
        self._page = _load_page()
        self._server = await asyncio.start_server(self._on_connection, self.host, self.port)
        address = self.address
        assert address is not None
        log.info("admin_listening", host=address[0], port=address[1], auth=self.token is not None)
        return address

    async def close(self) -> None:
        """Stop listening and end the connections in progress."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), timeout=1.0)

    # -- connections --------------------------------------------------------------

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if len(self._connections) > MAX_CONNECTIONS:
                await self._send(writer, error_response(503, "too many connections"), "GET")
                return
            await self._serve(reader, writer)
        except (ConnectionError, _ClientGone, TimeoutError):
            pass
        except asyncio.CancelledError:
            # close() ends connections in progress. Do not end the task cancelled:
            # asyncio's stream callback (3.11) would log that as an unhandled error.
            pass
        except Exception:
            log.exception("admin_connection_failed")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = "GET"
        head_reader = HeadReader(reader)
        try:
            try:
                async with asyncio.timeout(self.read_timeout):
                    head = await head_reader.read()
            except TimeoutError:
                if not head_reader.received:
                    # An idle (e.g. preconnected) socket: nothing to answer, hang up.
                    raise _ClientGone from None
                raise HttpError(error_response(408, "request timeout")) from None
            request = parse_head(head)
            method = request.method
            if method == "POST" and method in _allowed(request.path):
                request.body = await self._read_body(reader, head_reader, request)
            response = await self._respond(request)
        except HttpError as exc:
            response = exc.response
        await self._send(writer, response, method)
        if writer.can_write_eof():
            # Half-close: a client reading to EOF is done now, not after the linger.
            writer.write_eof()
        await self._linger(reader)

    async def _read_body(
        self, reader: asyncio.StreamReader, head_reader: HeadReader, request: Request
    ) -> bytes:
        """The body of a POST: ``Content-Length`` bytes (no chunked encoding), bounded.

        Raises:
            HttpError: 411 without a length, 413 over :data:`MAX_BODY_BYTES`,
                400 for a bad length, 408 when it does not arrive in time.
        """
        if "transfer-encoding" in request.headers:
            raise HttpError(error_response(411, "send Content-Length, not chunked"))
        text = request.headers.get("content-length")
        if text is None:
            raise HttpError(error_response(411, "Content-Length required"))
        if not text.isdigit():
            raise HttpError(error_response(400, "malformed Content-Length"))
        length, limit = int(text), _body_limit(request.path)
        if length > limit:
            raise HttpError(error_response(413, f"body over {limit} bytes"))
        body = head_reader.rest
        try:
            async with asyncio.timeout(self.read_timeout):
                while len(body) < length:
                    chunk = await reader.read(length - len(body))
                    if not chunk:
                        raise _ClientGone
                    body += chunk
        except TimeoutError:
            raise HttpError(error_response(408, "request timeout")) from None
        return body[:length]

    async def _send(self, writer: asyncio.StreamWriter, response: Response, method: str) -> None:
        reason = HTTPStatus(response.status).phrase
        lines = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Date: {formatdate(usegmt=True)}",
            "Server: mediaserver-admin",
            "Connection: close",
            "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff",
            "Referrer-Policy: no-referrer",
        ]
        if response.content_type is not None:
            lines.append(f"Content-Type: {response.content_type}")
        lines.append(f"Content-Length: {len(response.body)}")
        lines.extend(f"{name}: {value}" for name, value in response.headers.items())
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if method != "HEAD":
            data += response.body
        writer.write(data)
        async with asyncio.timeout(self.write_timeout):
            await writer.drain()

    async def _linger(self, reader: asyncio.StreamReader) -> None:
        """Read what the client still sends (a body we ignored) before closing.

        Closing a socket with unread input makes the kernel send a reset,
        which can destroy the response before the client read it.
        """
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                for _ in range(16):  # at most 1 MiB
                    if not await reader.read(65536):
                        break

    # -- routing ------------------------------------------------------------------

    async def _respond(self, request: Request) -> Response:
        allowed = _allowed(request.path)
        if request.method not in allowed:
            return error_response(405, "method not allowed", {"Allow": ", ".join(allowed)})
        if request.version >= (1, 1) and "host" not in request.headers:
            # RFC 9112 3.2: a request without Host is answered 400.
            return error_response(400, "missing Host header")
        path = request.path
        if path == "/health":
            return json_response(200, {"status": "ok"})
        if not self._authorised(request):
            return error_response(
                401, "unauthorized", {"WWW-Authenticate": 'Bearer realm="mediaserver"'}
            )
        try:
            return await self._route(request)
        except HttpError:
            raise
        except Exception:
            log.exception("admin_source_failed", path=path)
            return error_response(500, "internal error")

    async def _route(self, request: Request) -> Response:
        path = request.path
        source = self.source
        mutating = request.method in ("POST", "DELETE")
        if mutating and self.token is None and not _loopback(self.host):
            # Placing calls costs money: never open to the network without a token.
            return error_response(403, "calls are placed from beyond loopback only with a token")
        if path.split("/")[1] in ("campaigns", "dnc"):
            return await self._campaigns(request)
        if mutating:
            return await self._call_control(request)
        if path == "/ready":
            if await _answer(source.ready()):
                return json_response(200, {"status": "ready"})
            return json_response(503, {"status": "draining"})
        if path == "/metrics":
            return Response(200, await _answer(source.metrics_text()), CONTENT_TYPE_LATEST)
        if path == "/calls":
            limit = _limit(request.query)
            live, recent = (
                await _answer(source.live_calls()),
                await _answer(source.recent_calls(limit)),
            )
            return json_response(200, {"live": live, "recent": recent})
        if path == "/registrations":
            return json_response(200, await _answer(source.registrations()))
        if path == "/trunks":
            return json_response(200, await _answer(source.trunks()))
        if path.startswith("/calls/") and len(path) > len("/calls/"):
            call_id = unquote(path[len("/calls/") :])
            detail = await _answer(source.call_detail(call_id))
            if detail is None:
                return error_response(404, "no such call")
            return json_response(200, detail)
        if path in ("/", "/calls.html"):
            if self._page is None:
                return error_response(500, "calls page is not installed")
            return Response(200, self._page, HTML_TYPE, {"Content-Security-Policy": PAGE_CSP})
        return error_response(404, "not found")

    async def _call_control(self, request: Request) -> Response:
        """POST /calls (place a call) and DELETE /calls/{id} (hang one up)."""
        path, source = request.path, self.source
        if request.method == "DELETE":
            found = await _answer(source.end_call(unquote(path[len("/calls/") :])))
            if not found:
                return error_response(404, "no such call in progress")
            return json_response(202, {"status": "ending"})
        body = _json_body(request)
        key = request.headers.get("idempotency-key")
        status, payload = await _answer(source.dial(body, key))
        headers = {}
        if status >= 400 and payload.get("retry_after") is not None:
            headers["Retry-After"] = str(payload["retry_after"])
        return json_response(status, payload, headers)

    async def _campaigns(self, request: Request) -> Response:
        """`/campaigns[/ID[/ACTION]]` and `/dnc[/NUMBER]`, any method they take."""
        parts = [unquote(p) for p in request.path.strip("/").split("/")]
        body = _json_body(request) if request.method == "POST" else None
        status, payload = await _answer(self.source.campaigns_api(request.method, parts, body))
        return json_response(status, payload)

    def _authorised(self, request: Request) -> bool:
        if self.token is None:
            return True
        expected = self.token.encode("utf-8")
        offered: list[str] = []
        match = _BEARER.fullmatch(request.headers.get("authorization", ""))
        if match is not None:
            offered.append(match.group(1))
        offered.extend(request.query.get("token", [])[:1])
        ok = False
        for candidate in offered:
            # No early exit: every offered credential is compared.
            ok |= hmac.compare_digest(candidate.encode("utf-8"), expected)
        return ok


def _allowed(path: str) -> tuple[str, ...]:
    """The methods `path` takes (calls and campaigns can be started and ended)."""
    parts = path.strip("/").split("/")
    if parts[0] in ("calls", "campaigns", "dnc") and len(parts) == 1:
        return ("GET", "HEAD", "POST")
    if parts[0] in ("calls", "campaigns") and len(parts) == 2 and parts[1]:
        return ("GET", "HEAD", "DELETE")
    if parts[0] == "campaigns" and len(parts) == 3 and parts[1] and parts[2]:
        return ("POST",)
    if parts[0] == "dnc" and len(parts) == 2 and parts[1]:
        return ("DELETE",)
    return ("GET", "HEAD")


def _body_limit(path: str) -> int:
    """The largest body `path` takes: a campaign's contact list is big."""
    return MAX_CAMPAIGN_BYTES if path == "/campaigns" else MAX_BODY_BYTES


def _json_body(request: Request) -> Any:
    """The request's JSON body.

    Raises:
        HttpError: 415 for another content type, 400 for a body that is not JSON.
    """
    if "json" not in request.headers.get("content-type", "application/json"):
        raise HttpError(error_response(415, "send application/json"))
    try:
        return json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HttpError(error_response(400, "the body is not JSON")) from None


def _loopback(host: str) -> bool:
    """`host` (the admin's listen address) is on this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _limit(query: dict[str, list[str]]) -> int:
    values = query.get("limit")
    if not values:
        return DEFAULT_RECENT_LIMIT
    try:
        limit = int(values[0])
    except ValueError:
        raise HttpError(error_response(400, "limit must be an integer")) from None
    if limit < 0:
        raise HttpError(error_response(400, "limit must not be negative"))
    return min(limit, MAX_RECENT_LIMIT)


def _load_page() -> bytes | None:
    """The calls page from the package's static folder, or None (logged) if missing."""
    try:
        return (
            resources.files("mediaserver.observability")
            .joinpath("static", "calls.html")
            .read_bytes()
        )
    except (OSError, ModuleNotFoundError) as exc:
        log.error("admin_page_missing", error=str(exc))
        return None
