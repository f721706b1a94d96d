"""Session timers (RFC 4028), UAS side: negotiation and the refresh schedule."""

from __future__ import annotations

from dataclasses import dataclass

from mediaserver.sip.errors import SipParseError
from mediaserver.sip.grammar import parse_params
from mediaserver.sip.message import Request

#: RFC 4028 section 4: no interval may be below 90 seconds.
ABSOLUTE_MIN_SE = 90


@dataclass(frozen=True)
class SessionTimerPolicy:
    """Our settings: the interval we want (0 disables) and the smallest we accept."""

    session_expires: int = 1800
    min_se: int = ABSOLUTE_MIN_SE


@dataclass(frozen=True)
class TooSmall:
    """The request's interval is below our Min-SE: answer 422 with this Min-SE."""

    min_se: int


@dataclass(frozen=True)
class Negotiated:
    """What goes into our 2xx and how the session is kept alive."""

    interval: int
    refresher: str  # "uac" or "uas"
    #: True when the UAC supports timers, so the 2xx carries Require: timer.
    require: bool

    def header(self) -> str:
        """The Session-Expires value for our response."""
        return f"{self.interval};refresher={self.refresher}"

    def refresh_after(self) -> float:
        """When we (as refresher) send the refresh: half the interval (section 10)."""
        return self.interval / 2

    def expire_after(self) -> float:
        """When we end the session if no refresh came (section 10: SE - min(32, SE/3))."""
        return self.interval - min(32, self.interval / 3)


def negotiate(request: Request, policy: SessionTimerPolicy) -> Negotiated | TooSmall | None:
    """Decide the session timer for an INVITE or UPDATE we are about to answer 2xx.

    Returns:
        None when neither side wants a timer, TooSmall for a 422, else Negotiated.

    Raises:
        SipParseError: a malformed Session-Expires or Min-SE.
    """
    supported = "timer" in request.tokens("Supported") or "timer" in request.tokens("Require")
    value = request.headers.get("Session-Expires")
    min_se = policy.min_se
    peer_min = request.headers.get("Min-SE")
    if peer_min is not None:
        min_se = max(min_se, _seconds(peer_min.split(";")[0]))
    if value is None:
        if policy.session_expires <= 0:
            return None
        # Section 9: we may add one; only a UAC that supports timers can refresh.
        interval = max(policy.session_expires, min_se)
        return Negotiated(interval, "uac" if supported else "uas", supported)
    interval_text, _, ptext = value.partition(";")
    interval = _seconds(interval_text)
    params = parse_params(ptext) if ptext.strip() else {}
    if interval < policy.min_se:
        return TooSmall(max(policy.min_se, ABSOLUTE_MIN_SE))
    if policy.session_expires > 0:
        interval = max(min(interval, policy.session_expires), min_se)
    refresher = (params.get("refresher") or "").lower()
    if refresher not in ("uac", "uas"):
        refresher = "uac" if supported else "uas"
    if refresher == "uac" and not supported:
        refresher = "uas"
    return Negotiated(interval, refresher, supported)


def _seconds(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or len(text) > 10:
        raise SipParseError("bad Session-Expires or Min-SE")
    return int(text)
