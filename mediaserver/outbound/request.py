"""What an outbound call asks for (`POST /calls`, `mediaserver dial`, `AgentBase.dial`),
checked before anything is dialed: a bad request is an error naming the field."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

from mediaserver.sip.errors import SipParseError
from mediaserver.sip.trunks import normalise_number
from mediaserver.sip.uri import parse_uri

__all__ = ["AMD_MODES", "DialError", "DialRequest"]

AmdMode = Literal["off", "detect", "detect_and_leave_message"]
AMD_MODES: Final = ("off", "detect", "detect_and_leave_message")

#: Ring timeout bounds and default, in seconds.
RING_TIMEOUT_DEFAULT: Final = 30.0
RING_TIMEOUT_MAX: Final = 300.0
#: The per-call variables, as JSON, at most this many bytes.
MAX_VARIABLES_BYTES: Final = 16 * 1024

_CALLER_ID = re.compile(r"\+?[0-9A-Za-z._-]{1,32}")
_USER = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=-]{1,64}")
_KEY = re.compile(r"[\x21-\x7e]{1,200}")
_FIELDS: Final = frozenset(
    {
        "to",
        "route",
        "caller_id",
        "caller_name",
        "ring_timeout",
        "variables",
        "idempotency_key",
        "webhook",
        "amd",
        "message",
    }
)


class DialError(Exception):
    """An outbound call that cannot be placed: `status` (4xx/5xx) and why."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class DialRequest:
    """One outbound call: whom to call (`to`), which route's app talks to them,
    and how.

    `to` is a SIP URI (``sip:bob@pbx.example.com``), a telephone number
    (``+15551230000`` or ``tel:+1...``, dialed through the outbound trunks),
    or the name of a user registered here (``alice``).
    """

    to: str
    route: str
    caller_id: str | None = None
    caller_name: str | None = None
    ring_timeout: float = RING_TIMEOUT_DEFAULT
    #: Into the agent's global data for this call (top level, beside "call").
    variables: dict[str, Any] = field(default_factory=dict)
    #: A retried request with the same key answers the first call, never a second.
    idempotency_key: str | None = None
    #: Status reports (ringing, answered, ended) are POSTed here.
    webhook: str | None = None
    amd: AmdMode = "off"
    #: What `detect_and_leave_message` says after the beep (default: the greeting).
    message: str | None = None

    @property
    def kind(self) -> Literal["uri", "number", "user"]:
        """What `to` names."""
        if self.to.lower().startswith(("sip:", "sips:")):
            return "uri"
        if self.to.lower().startswith("tel:") or normalise_number(self.to):
            return "number"
        return "user"

    def fingerprint(self) -> str:
        """The request without its key: a retry must ask for the same call."""
        data = {k: v for k, v in self.as_dict().items() if k != "idempotency_key"}
        return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)

    def as_dict(self) -> dict[str, Any]:
        """The request as JSON-able fields."""
        return {
            "to": self.to,
            "route": self.route,
            "caller_id": self.caller_id,
            "caller_name": self.caller_name,
            "ring_timeout": self.ring_timeout,
            "variables": self.variables,
            "idempotency_key": self.idempotency_key,
            "webhook": self.webhook,
            "amd": self.amd,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, body: Any, idempotency_key: str | None = None) -> DialRequest:
        """Check and build a request from a decoded JSON body (`idempotency_key`:
        the ``Idempotency-Key`` header, used when the body has none).

        Raises:
            DialError: 422 naming the first bad field.
        """
        if not isinstance(body, dict):
            raise DialError(422, "the body must be a JSON object")
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise DialError(422, f"unknown field: {unknown[0]}")
        key = body.get("idempotency_key", idempotency_key)
        return cls(
            to=_to(body.get("to")),
            route=_text(body, "route", required=True) or "",
            caller_id=_caller_id(body.get("caller_id")),
            caller_name=_text(body, "caller_name", limit=64),
            ring_timeout=_ring_timeout(body.get("ring_timeout", RING_TIMEOUT_DEFAULT)),
            variables=_variables(body.get("variables", {})),
            idempotency_key=_key(key),
            webhook=_webhook(body.get("webhook")),
            amd=_amd(body.get("amd", "off")),
            message=_text(body, "message", limit=1000),
        )


def _text(
    body: dict[str, Any], name: str, *, required: bool = False, limit: int = 200
) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise DialError(422, f"{name}: required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise DialError(422, f"{name}: must be a non-empty string")
    if len(value) > limit or not value.isprintable():
        raise DialError(422, f"{name}: at most {limit} printable characters")
    return value.strip()


def _to(value: Any) -> str:
    if value is None:
        raise DialError(422, "to: required")
    if not isinstance(value, str) or not value.strip() or len(value) > 512:
        raise DialError(422, "to: must be a SIP URI, a number or a registered user")
    to = value.strip()
    lower = to.lower()
    if lower.startswith(("sip:", "sips:")):
        try:
            uri = parse_uri(to)
        except SipParseError as exc:
            raise DialError(422, f"to: malformed SIP URI: {exc.reason}") from None
        if not uri.host:
            raise DialError(422, "to: a SIP URI needs a host")
        return to
    if lower.startswith("tel:"):
        if not normalise_number(to[4:].split(";", 1)[0]):
            raise DialError(422, "to: malformed tel: URI")
        return to
    if normalise_number(to) or _USER.fullmatch(to):
        return to
    raise DialError(422, "to: must be a SIP URI, a number or a registered user")


def _caller_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _CALLER_ID.fullmatch(value):
        raise DialError(422, "caller_id: a number or SIP user (letters, digits, + . _ -)")
    return value


def _ring_timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DialError(422, "ring_timeout: must be a number of seconds")
    seconds = float(value)
    if not math.isfinite(seconds) or not 1.0 <= seconds <= RING_TIMEOUT_MAX:
        raise DialError(422, f"ring_timeout: 1..{RING_TIMEOUT_MAX:g} seconds")
    return seconds


def _variables(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DialError(422, "variables: must be a JSON object")
    if "call" in value:
        raise DialError(422, "variables: 'call' is the server's (who called whom)")
    try:
        size = len(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        raise DialError(422, "variables: must be plain JSON") from None
    if size > MAX_VARIABLES_BYTES:
        raise DialError(422, f"variables: at most {MAX_VARIABLES_BYTES} bytes as JSON")
    return dict(value)


def _key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _KEY.fullmatch(value):
        raise DialError(422, "idempotency_key: 1..200 visible ASCII characters")
    return value


def _webhook(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 2048:
        raise DialError(422, "webhook: must be an http(s) URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DialError(422, "webhook: must be an http(s) URL")
    return value


def _amd(value: Any) -> AmdMode:
    if value not in AMD_MODES:
        raise DialError(422, f"amd: one of {', '.join(AMD_MODES)}")
    return cast(AmdMode, value)
