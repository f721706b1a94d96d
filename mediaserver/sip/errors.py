"""Errors raised by the sans-IO SIP core."""

from __future__ import annotations


class SipParseError(ValueError):
    """A message (or one of its parts) does not follow the SIP grammar.

    Attributes:
        status: the response code a server should answer with (400 unless the
            problem has a more specific code, e.g. 505 for an unknown version,
            413/513 for oversized messages, 416 for an unsupported URI scheme).
        reason: a short human-readable reason, also used in the reason phrase.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
