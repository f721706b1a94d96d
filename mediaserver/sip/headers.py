"""Structured SIP header values: addresses, Via, CSeq, and header-name rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from mediaserver.sip.errors import SipParseError
from mediaserver.sip.grammar import (
    WS,
    format_params,
    is_token,
    parse_params,
    read_quoted,
    split_outside,
    unquote,
)
from mediaserver.sip.uri import Uri, parse_uri, split_host_port

#: Compact forms (RFC 3261 section 7.3.3 and later RFCs) -> canonical names.
COMPACT_NAMES = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Event",
        "Expires",
        "From",
        "In-Reply-To",
        "Max-Forwards",
        "Min-Expires",
        "Min-SE",
        "MIME-Version",
        "Organization",
        "Priority",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "RAck",
        "Reason",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Reply-To",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "Server",
        "Session-Expires",
        "Subject",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
        *COMPACT_NAMES.values(),
    )
}

#: Headers whose value is a comma-separated list (RFC 3261 section 7.3.1); a
#: repeated header of this kind is the same as one with the values joined.
LIST_HEADERS = frozenset(
    {
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Allow",
        "Allow-Events",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Proxy-Require",
        "Record-Route",
        "Require",
        "Route",
        "Supported",
        "Unsupported",
        "Via",
    }
)

#: Headers that may appear at most once (a second one is a 400).
SINGLE_HEADERS = frozenset(
    {
        "Call-ID",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Expires",
        "From",
        "Max-Forwards",
        "Min-SE",
        "Session-Expires",
        "To",
    }
)


@lru_cache(maxsize=4096)
def canonical_name(name: str) -> str:
    """The canonical spelling of a header name (compact forms expanded)."""
    lower = name.lower()
    if lower in COMPACT_NAMES:
        return COMPACT_NAMES[lower]
    return _CANONICAL.get(lower, name)


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, honouring quotes and <...>.

    Raises:
        SipParseError: an empty element (e.g. `a,,b`).
    """
    items = [item.strip(WS) for item in split_outside(value, ",")]
    if any(not item for item in items):
        raise SipParseError("empty element in header list")
    return items


@dataclass
class Address:
    """A name-addr or addr-spec with header parameters (From, To, Contact, Route...)."""

    uri: Uri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    #: True when the URI was written inside <...> (always written so on output).
    bracketed: bool = True

    @property
    def tag(self) -> str | None:
        """The `tag` parameter (From/To)."""
        return self.params.get("tag")

    def __str__(self) -> str:
        out = ""
        if self.display_name is not None:
            name = self.display_name
            out = (name if is_token(name.replace(" ", "")) and name else quote_string(name)) + " "
        return f"{out}<{self.uri}>{format_params(self.params)}"


def quote_string(text: str) -> str:
    """`text` as a SIP quoted-string (RFC 3261 section 25.1)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_address(value: str) -> Address:
    """Parse `[display-name] <uri> *(;param)` or `addr-spec *(;param)`.

    In the addr-spec form, `;` after the URI starts header parameters and the URI
    may not carry `?headers` or `,` (RFC 3261 section 20.10).

    Raises:
        SipParseError: malformed address.
    """
    text = value.strip(WS)
    display: str | None = None
    i = 0
    n = len(text)
    # display-name: a quoted string or *(token LWS)
    if text.startswith('"'):
        quoted, i = read_quoted(text, 0)
        display = unquote(quoted)
        while i < n and text[i] in WS:
            i += 1
        if i >= n or text[i] != "<":
            raise SipParseError("display name without <uri>")
    else:
        lt = text.find("<")
        if lt >= 0:
            words = text[:lt].split()
            if not all(is_token(w) for w in words):
                raise SipParseError("display name is neither token nor quoted string")
            display = " ".join(words) if words else None
            i = lt
    if i < n and text[i] == "<":
        gt = text.find(">", i)
        if gt < 0:
            raise SipParseError("missing '>' in address")
        inner = text[i + 1 : gt]
        if inner != inner.strip(WS) or not inner:
            raise SipParseError("white space inside <...>")
        uri = parse_uri(inner)
        rest = text[gt + 1 :].strip(WS)
        bracketed = True
    else:
        if display is not None:
            raise SipParseError("display name without <uri>")
        uri_text, semi, ptext = text.partition(";")
        rest = semi + ptext
        uri_text = uri_text.strip(WS)
        if any(c in uri_text for c in "?, \t"):
            raise SipParseError("addr-spec with headers or spaces must be in <...>")
        uri = parse_uri(uri_text)
        bracketed = False
    params: dict[str, str | None] = {}
    if rest:
        if not rest.startswith(";"):
            raise SipParseError("junk after address")
        params = parse_params(rest[1:])
    return Address(uri=uri, display_name=display, params=params, bracketed=bracketed)


@dataclass
class Via:
    """One Via header value (RFC 3261 section 20.42)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        """The branch parameter, the transaction id for RFC 3261 peers."""
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        """`host[:port]` as written."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{format_params(self.params)}"


def parse_via(value: str) -> Via:
    """Parse one Via value (already split from a list).

    Raises:
        SipParseError: malformed Via.
    """
    proto, semi, ptext = value.partition(";")
    parts = [p.strip(WS) for p in proto.split("/")]
    if len(parts) != 3:
        raise SipParseError("bad Via protocol")
    name, version, rest = parts
    if name.upper() != "SIP" or version != "2.0":
        raise SipParseError("bad Via protocol")
    fields = rest.split()
    if len(fields) != 2 or not is_token(fields[0]):
        raise SipParseError("bad Via sent-by")
    host, port = split_host_port(fields[1])
    params = parse_params(ptext) if semi else {}
    for key in ("received", "maddr"):
        if params.get(key) == "":
            raise SipParseError(f"empty Via {key}")
    return Via(transport=fields[0].upper(), host=host, port=port, params=params)


@dataclass(frozen=True)
class CSeq:
    """CSeq: sequence number and method."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(value: str) -> CSeq:
    """Parse a CSeq value (the number must fit 32 bits, RFC 3261 section 8.1.1.5).

    Raises:
        SipParseError: malformed or overlarge CSeq.
    """
    fields = value.split()
    if len(fields) != 2 or not fields[0].isdigit() or not is_token(fields[1]):
        raise SipParseError("bad CSeq")
    if len(fields[0]) > 10 or int(fields[0]) > 2**31 - 1:
        raise SipParseError("CSeq number too large")
    return CSeq(int(fields[0]), fields[1])


def parse_token_list(value: str) -> list[str]:
    """Parse a list of option tags or methods (Require, Supported, Allow...)."""
    items = split_list(value) if value.strip(WS) else []
    for item in items:
        if not is_token(item):
            raise SipParseError(f"bad token {item!r}")
    return items
