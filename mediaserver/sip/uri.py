"""SIP, SIPS and tel URIs (RFC 3261 section 19.1, RFC 3966).

URIs keep their text as given (escapes included) so that serialising a parsed
URI gives back the same bytes; comparison follows RFC 3261 section 19.1.4, which
unescapes before comparing.
"""

from __future__ import annotations

import ipaddress
import string
from dataclasses import dataclass, field
from urllib.parse import unquote as pct_unquote

from mediaserver.sip.errors import SipParseError

_HOST_CHARS = frozenset(string.ascii_letters + string.digits + "-.")
# Characters allowed unescaped in the user and password parts (RFC 3261 section 25:
# unreserved, user-unreserved, password chars, and '%' for escapes).
_USER_CHARS = frozenset(string.ascii_letters + string.digits + "-_.!~*'()&=+$,;?/:%")
_PARAM_CHARS = frozenset(string.ascii_letters + string.digits + "-_.!~*'()[]/:&+$%=")
_HEADER_CHARS = frozenset(string.ascii_letters + string.digits + "-_.!~*'()[]/?:+$%=&")
_SCHEME_CHARS = frozenset(string.ascii_letters + string.digits + "+-.")
_URI_BAD_CHARS = frozenset(' \t\r\n<>"')

#: Schemes this server understands in a Request-URI.
SUPPORTED_SCHEMES = frozenset({"sip", "sips", "tel"})


@dataclass
class Uri:
    """A parsed URI.

    For `sip`/`sips`, `user`, `password`, `host`, `port`, `params` and `headers`
    are filled. For `tel`, `user` holds the number and `params` its parameters.
    Any other scheme keeps its text in `opaque`.
    """

    scheme: str
    host: str = ""
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None
    opaque: str | None = None

    @property
    def is_sip(self) -> bool:
        """True for sip: and sips: URIs."""
        return self.scheme in ("sip", "sips")

    def host_port(self, default_port: int = 5060) -> tuple[str, int]:
        """Host (IPv6 without brackets) and port, with the default filled in."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        return host, self.port if self.port is not None else default_port

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.scheme == "tel":
            return f"tel:{self.user}" + _fmt_params(self.params)
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(_fmt_params(self.params))
        if self.headers is not None:
            out.append("?" + self.headers)
        return "".join(out)

    def equivalent(self, other: Uri) -> bool:
        """Compare as RFC 3261 section 19.1.4 says (escapes decoded, case rules)."""
        if self.scheme != other.scheme:
            return False
        if self.opaque is not None or other.opaque is not None:
            return self.opaque == other.opaque
        if _unesc(self.user) != _unesc(other.user):
            return False
        if _unesc(self.password) != _unesc(other.password):
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        mine = {k: _unesc(v) for k, v in self.params.items()}
        theirs = {k: _unesc(v) for k, v in other.params.items()}
        # user, ttl, method and maddr must match if present in either URI
        for key in ("user", "ttl", "method", "maddr", "transport"):
            if key in mine or key in theirs:
                a, b = mine.get(key), theirs.get(key)
                if (a or "").lower() != (b or "").lower():
                    return False
        for key in mine.keys() & theirs.keys():
            if (mine[key] or "").lower() != (theirs[key] or "").lower():
                return False
        return _headers_set(self.headers) == _headers_set(other.headers)


def _unesc(value: str | None) -> str | None:
    return None if value is None else pct_unquote(value, errors="surrogateescape")


def _headers_set(headers: str | None) -> frozenset[str]:
    if not headers:
        return frozenset()
    return frozenset(pct_unquote(h) for h in headers.split("&"))


def _fmt_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def parse_host(text: str) -> str:
    """Check a host (name, IPv4 or bracketed IPv6) and return it as given.

    Raises:
        SipParseError: the host is empty or has characters a host cannot have.
    """
    if text.startswith("["):
        if not text.endswith("]"):
            raise SipParseError(f"bad IPv6 reference {text!r}")
        try:
            ipaddress.IPv6Address(text[1:-1])
        except ValueError as exc:
            raise SipParseError(f"bad IPv6 reference {text!r}") from exc
        return text
    if not text or not _HOST_CHARS.issuperset(text):
        raise SipParseError(f"bad host {text!r}")
    return text


def split_host_port(text: str) -> tuple[str, int | None]:
    """Split `host[:port]` (host may be a bracketed IPv6 reference)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"bad IPv6 reference {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"junk after host {text!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_ = text.partition(":")
        port_text = port_text_ if colon else None
    port = None
    if port_text is not None:
        if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
            raise SipParseError(f"bad port in {text!r}")
        port = int(port_text)
    return parse_host(host), port


def _parse_uri_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        if not item:
            raise SipParseError("empty URI parameter")
        name, eq, value = item.partition("=")
        if not name or not _PARAM_CHARS.issuperset(name + value):
            raise SipParseError(f"bad URI parameter {item!r}")
        params[name.lower()] = value if eq else None
    return params


def parse_uri(text: str) -> Uri:
    """Parse a URI as it appears in a Request-URI or inside <...>.

    Unknown schemes are kept opaque (the caller decides whether that is an error,
    e.g. 416 in a Request-URI).

    Raises:
        SipParseError: malformed URI.
    """
    scheme, colon, rest = text.partition(":")
    if not colon or not scheme or not _SCHEME_CHARS.issuperset(scheme):
        raise SipParseError(f"bad URI {text!r}")
    if not _URI_BAD_CHARS.isdisjoint(text):
        raise SipParseError(f"bad character in URI {text!r}")
    scheme = scheme.lower()
    if scheme == "tel":
        number, _, ptext = rest.partition(";")
        if not number:
            raise SipParseError(f"bad tel URI {text!r}")
        return Uri(scheme="tel", user=number, params=_parse_uri_params(ptext) if ptext else {})
    if scheme not in ("sip", "sips"):
        if not rest:
            raise SipParseError(f"bad URI {text!r}")
        return Uri(scheme=scheme, opaque=rest)

    user = password = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, pcolon, pw = userinfo.partition(":")
        if pcolon:
            password = pw
        if not user or not _USER_CHARS.issuperset(userinfo):
            raise SipParseError(f"bad user part in {text!r}")
    rest, qmark, headers = rest.partition("?")
    if qmark and (not headers or not _HEADER_CHARS.issuperset(headers)):
        raise SipParseError(f"bad URI headers in {text!r}")
    hostport, semi, ptext = rest.partition(";")
    host, port = split_host_port(hostport)
    params = _parse_uri_params(ptext) if semi else {}
    return Uri(
        scheme=scheme,
        user=user,
        password=password,
        host=host,
        port=port,
        params=params,
        headers=headers if qmark else None,
    )
