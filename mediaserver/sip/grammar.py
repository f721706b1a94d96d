"""Small lexical helpers for the RFC 3261 grammar (section 25).

Header values reach these helpers already unfolded (line folding replaced by a
single space), so linear white space here is just spaces and tabs.
"""

from __future__ import annotations

import string

from mediaserver.sip.errors import SipParseError

#: RFC 3261 `token` characters.
TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-.!%*_+`'~")
WS = " \t"
_VALUE_CHARS = TOKEN_CHARS | frozenset("[]:")  # tokens, host names, IPv6


def is_token(text: str) -> bool:
    """Return True when `text` is a non-empty RFC 3261 token."""
    return bool(text) and TOKEN_CHARS.issuperset(text)


def read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted-string whose opening quote is at `text[start]`.

    Returns:
        The raw quoted string including its quotes, and the index after it.

    Raises:
        SipParseError: the closing quote is missing.
    """
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            # quoted-pair: any octet but CR/LF may follow the backslash
            i += 2
            continue
        if c == '"':
            return text[start : i + 1], i + 1
        i += 1
    raise SipParseError("unterminated quoted string")


def unquote(quoted: str) -> str:
    """Turn a quoted-string (with its quotes) into its plain text."""
    out = []
    i = 1
    end = len(quoted) - 1
    while i < end:
        c = quoted[i]
        if c == "\\" and i + 1 < end:
            out.append(quoted[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def quote(text: str) -> str:
    """Quote `text` as a quoted-string, escaping backslashes and quotes."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_outside(text: str, sep: str) -> list[str]:
    """Split on `sep` where it is outside quoted strings and <...> brackets."""
    parts: list[str] = []
    depth = 0
    cur_start = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            _, i = read_quoted(text, i)
            continue
        if c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == sep and depth == 0:
            parts.append(text[cur_start:i])
            cur_start = i + 1
        i += 1
    parts.append(text[cur_start:])
    return parts


def parse_params(text: str, *, allow_empty_value: bool = True) -> dict[str, str | None]:
    """Parse header parameters: the text after the first `;` of a header value.

    `text` holds `name[=value]` items separated by `;`, with optional white space
    around the separators. Names are tokens (kept as given; look-ups lower-case);
    values are tokens, host names or quoted strings (kept quoted).

    Raises:
        SipParseError: an empty parameter (`;;`), a non-token name, or a bad value.
    """
    params: dict[str, str | None] = {}
    for raw in split_outside(text, ";"):
        item = raw.strip(WS)
        if not item:
            raise SipParseError("empty header parameter")
        name, eq, value = item.partition("=")
        name = name.strip(WS)
        if not is_token(name):
            raise SipParseError(f"bad parameter name {name!r}")
        if not eq:
            params[name.lower()] = None
            continue
        value = value.strip(WS)
        if value.startswith('"'):
            quoted, end = read_quoted(value, 0)
            if end != len(value):
                raise SipParseError(f"junk after quoted parameter {name!r}")
            value = quoted
        elif not value and not allow_empty_value:
            raise SipParseError(f"empty value for parameter {name!r}")
        elif not _VALUE_CHARS.issuperset(value):
            raise SipParseError(f"bad value for parameter {name!r}")
        params[name.lower()] = value
    return params


def format_params(params: dict[str, str | None]) -> str:
    """Serialise parameters back to `;name=value` form."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
