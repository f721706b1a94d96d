"""SIP requests and responses: parsing, validation and serialisation.

`parse_message` turns one datagram (or one framed stream message) into a
`Request` or `Response`, or raises `SipParseError` carrying the status a server
should answer with and, when the start line and headers could be read, the
partly parsed message so the answer can copy Via/From/To/Call-ID/CSeq.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from mediaserver.sip.errors import SipParseError
from mediaserver.sip.grammar import WS, is_token
from mediaserver.sip.headers import (
    SINGLE_HEADERS,
    Address,
    CSeq,
    Via,
    canonical_name,
    parse_address,
    parse_cseq,
    parse_token_list,
    parse_via,
    split_list,
)
from mediaserver.sip.uri import SUPPORTED_SCHEMES, Uri, parse_uri

SIP_VERSION = "SIP/2.0"

_T = TypeVar("_T")

REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
}


@dataclass(frozen=True)
class Limits:
    """Bounds on what the parser accepts, so a hostile peer cannot exhaust us."""

    max_message_size: int = 65535
    max_headers: int = 256
    max_line_length: int = 8192
    max_body_size: int = 65535


DEFAULT_LIMITS = Limits()


class Headers:
    """Ordered header fields with canonical names.

    Repeated fields are kept as separate entries, in order; `get_list` joins the
    values of comma-list headers (so `Via: a, b` and two Via lines are the same).
    """

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = items or []

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        name = canonical_name(name)
        return any(n == name for n, _ in self._items)

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of `name`, or `default`."""
        name = canonical_name(name)
        for n, v in self._items:
            if n == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every field value of `name`, one entry per header line."""
        name = canonical_name(name)
        return [v for n, v in self._items if n == name]

    def get_list(self, name: str) -> list[str]:
        """Values of a comma-list header, split and joined across lines."""
        out: list[str] = []
        for value in self.get_all(name):
            out.extend(split_list(value))
        return out

    def add(self, name: str, value: str) -> None:
        """Append a field."""
        self._items.append((canonical_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        """Insert a field before every other (e.g. a new top Via)."""
        self._items.insert(0, (canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every field of `name` with one field (kept in place of the first)."""
        name = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == name:
                self._items[i] = (name, value)
                self._items[i + 1 :] = [it for it in self._items[i + 1 :] if it[0] != name]
                return
        self._items.append((name, value))

    def remove(self, name: str) -> None:
        """Remove every field of `name`."""
        name = canonical_name(name)
        self._items = [it for it in self._items if it[0] != name]

    def copy(self) -> Headers:
        """A shallow copy."""
        return Headers(list(self._items))


@dataclass
class Message:
    """Fields shared by requests and responses.

    The structured accessors parse the header text each time it changes; the
    result for a given text is cached on the message, so the objects they
    return are shared and must not be mutated.
    """

    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    _parsed: dict[tuple[str, str], object] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def _cached(self, name: str, parser: Callable[[str], _T]) -> _T:
        value = self.headers.get(name) or ""
        key = (name, value)
        hit = self._parsed.get(key)
        if hit is None:
            hit = self._parsed[key] = parser(value)
        return hit  # type: ignore[return-value]

    def compact(self) -> None:
        """Drop the parsed-header cache (for messages kept only to be re-sent)."""
        self._parsed.clear()

    @property
    def call_id(self) -> str:
        """Call-ID value."""
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        """Parsed CSeq."""
        return self._cached("CSeq", parse_cseq)

    @property
    def from_(self) -> Address:
        """Parsed From (shared: do not mutate)."""
        return self._cached("From", parse_address)

    @property
    def to(self) -> Address:
        """Parsed To (shared: do not mutate)."""
        return self._cached("To", parse_address)

    @property
    def vias(self) -> list[Via]:
        """Every Via, top first."""
        return [parse_via(v) for v in self.headers.get_list("Via")]

    @property
    def top_via(self) -> Via:
        """The first Via."""
        return parse_via(self.headers.get_list("Via")[0])

    @property
    def contacts(self) -> list[Address]:
        """Parsed Contact values (empty for `Contact: *`)."""
        values = self.headers.get_list("Contact")
        if values == ["*"]:
            return []
        return [parse_address(v) for v in values]

    def addresses(self, name: str) -> list[Address]:
        """Parse a list of name-addr headers (Route, Record-Route...)."""
        return [parse_address(v) for v in self.headers.get_list(name)]

    def tokens(self, name: str) -> list[str]:
        """Parse a list of tokens (Require, Supported, Allow...)."""
        out: list[str] = []
        for value in self.headers.get_all(name):
            out.extend(parse_token_list(value))
        return out

    @property
    def content_type(self) -> str | None:
        """Media type without parameters, lower case."""
        value = self.headers.get("Content-Type")
        return value.split(";", 1)[0].strip(WS).lower() if value else None

    def start_line(self) -> str:  # pragma: no cover - overridden
        """The first line of the message."""
        raise NotImplementedError

    def encode(self) -> bytes:
        """Serialise with CRLF line ends and a correct Content-Length."""
        lines = [self.start_line()]
        for name, value in self.headers:
            if name != "Content-Length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", errors="surrogateescape") + self.body


@dataclass
class Request(Message):
    """A SIP request."""

    method: str = ""
    uri: str = ""

    @property
    def ruri(self) -> Uri:
        """The parsed Request-URI."""
        return parse_uri(self.uri)

    def start_line(self) -> str:
        """Request-Line."""
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def response(
        self, status: int, reason: str | None = None, *, to_tag: str | None = None
    ) -> Response:
        """Build a response per RFC 3261 section 8.2.6.2.

        Via, From, Call-ID and CSeq are copied; To is copied and gets `to_tag`
        when it has no tag yet (not for 100 Trying). For dialog-creating answers
        the caller adds Contact and Record-Route.
        """
        resp = Response(status=status, reason=reason or REASONS.get(status, "Unknown"))
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            for value in self.headers.get_all(name):
                resp.headers.add(name, value)
        if to_tag and status != 100:
            to = self.headers.get("To") or ""
            if ";tag=" not in to.replace(" ", "").lower():
                try:
                    has_tag = parse_address(to).tag is not None
                except SipParseError:
                    has_tag = True  # do not touch a To we cannot parse
                if not has_tag:
                    resp.headers.set("To", f"{to};tag={to_tag}")
        if status == 100 and "Timestamp" in self.headers:
            resp.headers.add("Timestamp", self.headers.get("Timestamp") or "")
        return resp


@dataclass
class Response(Message):
    """A SIP response."""

    status: int = 200
    reason: str = "OK"

    def start_line(self) -> str:
        """Status-Line."""
        return f"{SIP_VERSION} {self.status} {self.reason}"


class MessageError(SipParseError):
    """A parse error with whatever of the message could be read.

    `partial` is set when the start line and header lines were readable, so the
    server can still build an error response by copying the raw headers.
    """

    def __init__(self, reason: str, status: int = 400, partial: Message | None = None) -> None:
        super().__init__(reason, status)
        self.partial = partial


def find_header_end(data: bytes) -> tuple[int, int] | None:
    """Locate the blank line ending the header block.

    Returns:
        (index where headers end, index where the body starts), or None.
    """
    idx = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if idx >= 0 and (lf < 0 or idx < lf):
        return idx, idx + 4
    if lf >= 0:
        return lf, lf + 2
    return None


def _split_lines(head: str, limits: Limits) -> tuple[list[str], bool]:
    """Unfold the header block into lines; over-long lines are left out and flagged."""
    raw = head.replace("\r\n", "\n").split("\n")
    lines: list[str] = []
    too_long = False
    for line in raw:
        if len(line) > limits.max_line_length:
            # Leave it out but keep going, so the 400 can still be addressed.
            too_long = True
            continue
        if line[:1] in (" ", "\t") and lines:
            # line folding: the continuation joins the previous line with one space
            lines[-1] = lines[-1].rstrip(WS) + " " + line.strip(WS)
        else:
            lines.append(line)
    return lines, too_long


def _parse_start(line: str) -> tuple[Message, bool]:
    """Parse the start line; the flag is True for a request of another SIP version."""
    if line.startswith("SIP/"):
        version, sp1, rest = line.partition(" ")
        code, _sp2, reason = rest.partition(" ")
        if version != SIP_VERSION:
            raise SipParseError("unsupported SIP version in response", 505)
        if not sp1 or len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
            raise SipParseError("bad status line")
        return Response(status=int(code), reason=reason), False
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError("bad request line")
    method, uri, version = parts
    if not is_token(method):
        raise SipParseError("bad method")
    if version.upper() != SIP_VERSION and not version.upper().startswith("SIP/"):
        raise SipParseError("bad request line")
    return Request(method=method, uri=uri), version.upper() != SIP_VERSION


def parse_message(data: bytes, *, limits: Limits = DEFAULT_LIMITS, stream: bool = False) -> Message:
    """Parse one SIP message from `data`.

    Over a datagram transport, octets after the Content-Length body are ignored
    (RFC 3261 section 18.3); a missing Content-Length means the body runs to the
    end of the datagram. With `stream=True` (TCP/TLS) Content-Length is required.

    Raises:
        MessageError: the message is malformed; `status` says how to answer.
    """
    if len(data) > limits.max_message_size:
        raise MessageError("message too large", 513)
    bounds = find_header_end(data)
    if bounds is None:
        raise MessageError("no blank line after headers")
    head_end, body_start = bounds
    try:
        head = data[:head_end].decode("utf-8")
    except UnicodeDecodeError:
        # Header octets must be UTF-8 (RFC 3261 section 7.3.1); keep going with
        # escapes so we can still answer 400.
        head = data[:head_end].decode("utf-8", errors="surrogateescape")
        bad_utf8 = True
    else:
        bad_utf8 = False
    lines, too_long = _split_lines(head.lstrip("\r\n"), limits)
    if not lines:
        raise MessageError("empty message")
    start_error: SipParseError | None = None
    try:
        msg, bad_version = _parse_start(lines[0])
    except SipParseError as exc:
        if lines[0].startswith("SIP/"):
            raise MessageError(exc.reason, exc.status) from None  # never answer a response
        # Keep reading the headers so the 400 can still be addressed.
        msg, bad_version, start_error = Request(), False, exc
    if len(lines) - 1 > limits.max_headers:
        raise MessageError(
            "too many header fields", 400, _partial(msg, lines[1 : limits.max_headers])
        )
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        name = name.rstrip(WS)
        if not colon or not is_token(name):
            raise MessageError(f"bad header line {line[:40]!r}", 400, msg)
        msg.headers.add(name, value.strip(WS))
    if start_error is not None:
        raise MessageError(start_error.reason, start_error.status, msg)
    if too_long:
        raise MessageError("header line too long", 400, msg)
    if bad_utf8:
        raise MessageError("header is not UTF-8", 400, msg)
    if bad_version:
        raise MessageError("SIP version not supported", 505, msg)
    try:
        _validate(msg, data, body_start, limits, stream)
    except SipParseError as exc:
        raise MessageError(exc.reason, exc.status, msg) from None
    return msg


def _partial(msg: Message, lines: list[str]) -> Message:
    for line in lines:
        name, colon, value = line.partition(":")
        if colon and is_token(name.rstrip(WS)):
            msg.headers.add(name.rstrip(WS), value.strip(WS))
    return msg


def _validate(msg: Message, data: bytes, body_start: int, limits: Limits, stream: bool) -> None:
    headers = msg.headers
    seen: set[str] = set()
    for name, _ in headers:
        if name in SINGLE_HEADERS:
            if name in seen:
                raise SipParseError(f"more than one {name}")
            seen.add(name)
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if name not in headers:
            raise SipParseError(f"missing {name}")
    # Body framing.
    cl_text = headers.get("Content-Length")
    available = len(data) - body_start
    if cl_text is None:
        if stream:
            raise SipParseError("missing Content-Length on a stream transport")
        length = available
    else:
        if not cl_text.isdigit() or len(cl_text) > 10:
            raise SipParseError("bad Content-Length")
        length = int(cl_text)
        if length > available:
            raise SipParseError("Content-Length larger than message")
    if length > limits.max_body_size:
        raise SipParseError("body too large", 413)
    msg.body = data[body_start : body_start + length]
    # Structured headers: parsing them here rejects bad syntax up front.
    cseq = msg.cseq
    vias = msg.vias
    if not vias:
        raise SipParseError("missing Via")
    from_, to = msg.from_, msg.to
    for addr in (from_, to):
        if addr.uri.scheme in ("sip", "sips") and not addr.uri.host:
            raise SipParseError("bad From/To URI")
    msg.contacts  # noqa: B018 - validates Contact syntax
    for name in ("Route", "Record-Route"):
        msg.addresses(name)
    for name in ("Require", "Proxy-Require", "Supported", "Allow", "Unsupported"):
        msg.tokens(name)
    for name in ("Expires", "Min-SE"):
        value = headers.get(name)
        if value is not None and (not value.isdigit() or len(value) > 10):
            raise SipParseError(f"bad {name}")
    if not msg.call_id or any(c in msg.call_id for c in WS):
        raise SipParseError("bad Call-ID")
    if isinstance(msg, Request):
        max_forwards = headers.get("Max-Forwards")
        if max_forwards is not None and (
            not max_forwards.isdigit() or len(max_forwards) > 10 or int(max_forwards) > 255
        ):
            raise SipParseError("bad Max-Forwards")
        if cseq.method != msg.method:
            raise SipParseError("CSeq method does not match the request method")
        try:
            ruri = parse_uri(msg.uri)
        except SipParseError as exc:
            raise SipParseError(f"bad Request-URI: {exc.reason}") from None
        if ruri.scheme not in SUPPORTED_SCHEMES:
            raise SipParseError("unsupported URI scheme", 416)
        if ruri.headers is not None:
            raise SipParseError("headers not allowed in Request-URI")
    else:
        assert isinstance(msg, Response)
        retry_after = headers.get("Retry-After")
        if retry_after is not None:
            digits = retry_after.split(";")[0].split("(")[0].strip(WS)
            if not digits.isdigit() or len(digits) > 10:
                raise SipParseError("bad Retry-After")


class StreamFramer:
    """Split a TCP/TLS byte stream into SIP messages by Content-Length.

    Keep-alive CRLFs between messages (RFC 5626 section 3.5.1) are skipped.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._buf = bytearray()
        self._limits = limits

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every complete message now available.

        Raises:
            MessageError: the stream cannot be framed (oversized headers or a bad
                Content-Length); the connection should be closed.
        """
        self._buf += data
        out: list[bytes] = []
        while True:
            while self._buf[:2] == b"\r\n":
                del self._buf[:2]
            bounds = find_header_end(bytes(self._buf[: self._limits.max_message_size + 4]))
            if bounds is None:
                if len(self._buf) > self._limits.max_message_size:
                    raise MessageError("headers too large", 513)
                return out
            head_end, body_start = bounds
            length = _content_length(bytes(self._buf[:head_end]))
            if length is None or length > self._limits.max_body_size:
                raise MessageError("missing or bad Content-Length on stream", 400)
            total = body_start + length
            if len(self._buf) < total:
                return out
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\n"):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            text = value.strip()
            return int(text) if text.isdigit() and len(text) <= 10 else None
    return None


def reason_phrase(status: int, detail: str) -> str:
    """A reason phrase that says what was wrong, without control characters."""
    base = REASONS.get(status, "Error")
    clean = "".join(c for c in detail if c.isprintable())[:80]
    return f"{base} ({clean})" if clean else base
