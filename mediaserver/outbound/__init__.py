"""Calls we place: the dial request, the server's outbound calls, their status webhooks."""

from mediaserver.outbound.calls import Dialout, Dialouts, outcome_of
from mediaserver.outbound.request import AMD_MODES, DialError, DialRequest
from mediaserver.outbound.webhook import StatusWebhook

__all__ = [
    "AMD_MODES",
    "DialError",
    "DialRequest",
    "Dialout",
    "Dialouts",
    "StatusWebhook",
    "outcome_of",
]
