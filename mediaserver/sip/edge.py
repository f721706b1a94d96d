"""Defences of a SIP port on the open internet: rate limits, bans, scanners. Sans-IO.

Every public SIP port is found within minutes by scanners (sipvicious's
"friendly-scanner", sipcli, ...), INVITE floods and password guessing.
`EdgeGuard` decides, per source address and before any other work, whether a
message is worth handling:

- **rate limits**: a token bucket per source for all requests and a second,
  tighter one for new INVITEs (a burst, then a steady rate); a message over
  either is dropped unanswered, and each breach is a strike;
- **bans**: `ban_after` strikes (limit breaches, failed digests, scanner
  requests) within `ban_window` seconds ban the source for `ban_time`
  seconds: everything it sends is dropped unread;
- **scanners**: requests whose User-Agent holds one of `scanner_agents` are
  dropped (or answered 403) and strike;
- **concurrent calls** per source address and per caller user.

Sources are kept in LRU order up to `max_sources` (bans up to `max_bans`),
so a flood from many addresses costs bounded memory: the longest-quiet
source is forgotten first. Trunk addresses (see `sip/trunks.py`) bypass the
per-source limits: a carrier sends many calls from one address, and its
trunk's own `max_calls` bounds it; so do `trusted` networks (by default
loopback: this host's own processes, e.g. a Kamailio in front).
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["DEFAULT_SCANNERS", "EdgeGuard", "EdgePolicy", "TokenBucket", "destination_allowed"]

#: User-Agents of well-known SIP scanners and attack tools.
DEFAULT_SCANNERS = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "sundayddr",
    "sip-scan",
    "sipsak",
    "iwar",
    "sivus",
    "smap",
    "pplsip",
)

#: What happens to a request the policy refuses: no answer, or 403.
Refusal = Literal["drop", "reject"]


@dataclass(frozen=True)
class EdgePolicy:
    """The limits (see the module docstring); rates are per second."""

    request_rate: float = 50.0
    request_burst: float = 100.0
    invite_rate: float = 5.0
    invite_burst: float = 20.0
    ban_after: int = 10
    ban_window: float = 60.0
    ban_time: float = 600.0
    max_sources: int = 100_000
    max_bans: int = 100_000
    scanner_agents: tuple[str, ...] = DEFAULT_SCANNERS
    scanners: Refusal = "drop"
    #: Requests to users or numbers we do not have, from a source that is
    #: neither a trunk nor a registered phone.
    unknown: Refusal = "drop"
    #: Calls at once from one source address / by one caller user (0: no limit).
    max_calls_per_source: int = 0
    max_calls_per_user: int = 0
    #: Networks none of this applies to (this host's own processes, a proxy
    #: in front of us).
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


class TokenBucket:
    """`rate` tokens a second up to `burst`; `take` spends one if there is one."""

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate, self._burst = rate, burst
        self._tokens, self._at = burst, now

    def take(self, now: float) -> bool:
        """Spend a token (False: none left, the message is over the limit)."""
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


@dataclass
class _Source:
    requests: TokenBucket
    invites: TokenBucket
    strikes: deque[float] = field(default_factory=deque)


class EdgeGuard:
    """Per-source admission (see the module docstring).

    `blocked` counts what was refused, by reason, for /metrics.
    """

    def __init__(self, policy: EdgePolicy) -> None:
        self.policy = policy
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        #: Banned source -> when the ban ends.
        self._bans: OrderedDict[str, float] = OrderedDict()
        self.blocked: Counter[str] = Counter()
        self._scanners = tuple(a.lower() for a in policy.scanner_agents)

    def trusts(self, host: str) -> bool:
        """Whether `host` is in a `trusted` network."""
        if not self.policy.trusted:
            return False
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(address in net for net in self.policy.trusted if net.version == address.version)

    def admit(self, host: str, now: float) -> str | None:
        """A message from `host` arrived: None to handle it, else why it is dropped
        ("banned", "rate")."""
        until = self._bans.get(host)
        if until is not None:
            if now < until:
                return self._block("banned")
            del self._bans[host]
        if not self._source(host, now).requests.take(now):
            self.strike(host, now)
            return self._block("rate")
        return None

    def admit_invite(self, host: str, now: float) -> bool:
        """A new INVITE from `host` (already admitted as a message): within its
        INVITE rate?"""
        if self._source(host, now).invites.take(now):
            return True
        self.strike(host, now)
        self._block("invite_rate")
        return False

    def scanner(self, user_agent: str | None) -> bool:
        """Whether `user_agent` names a known scanner."""
        if not user_agent:
            return False
        agent = user_agent.lower()
        return any(s in agent for s in self._scanners)

    def strike(self, host: str, now: float) -> bool:
        """One offence by `host` (a limit breach, a failed digest, a scanner);
        True when it is now banned."""
        source = self._source(host, now)
        strikes = source.strikes
        strikes.append(now)
        while strikes and strikes[0] <= now - self.policy.ban_window:
            strikes.popleft()
        if len(strikes) < self.policy.ban_after:
            return False
        strikes.clear()
        self._bans[host] = now + self.policy.ban_time
        self._bans.move_to_end(host)
        while len(self._bans) > self.policy.max_bans:
            self._bans.popitem(last=False)
        self.blocked["bans"] += 1
        return True

    def banned(self, now: float) -> int:
        """Sources banned now (expired bans are forgotten on the way)."""
        for host in [h for h, until in self._bans.items() if until <= now]:
            del self._bans[host]
        return len(self._bans)

    def is_banned(self, host: str, now: float) -> bool:
        until = self._bans.get(host)
        return until is not None and now < until

    def count(self, reason: str) -> None:
        """A refusal decided elsewhere (scanner, unknown user, call limits)."""
        self._block(reason)

    def _block(self, reason: str) -> str:
        self.blocked[reason] += 1
        return reason

    def _source(self, host: str, now: float) -> _Source:
        source = self._sources.get(host)
        if source is None:
            p = self.policy
            source = _Source(
                TokenBucket(p.request_rate, p.request_burst, now),
                TokenBucket(p.invite_rate, p.invite_burst, now),
            )
            self._sources[host] = source
            if len(self._sources) > p.max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(host)
        return source


def destination_allowed(target: str, patterns: list[str] | None, registered: bool) -> bool:
    """Whether a transfer, bridge or outbound call may go to `target`.

    Args:
        target: a SIP/tel URI or a bare number or user.
        patterns: `sip.transfer_allow`: shell-style patterns matched (case
            insensitive) against the target as written, without its scheme,
            and its user part ("+1555*", "*@pbx.example.com", "1???"), and
            "registered" for a phone registered here; None: anywhere.
        registered: `target` is a user registered here.
    """
    if patterns is None:
        return True
    bare = (
        target.split(":", 1)[1] if target.lower().startswith(("sip:", "sips:", "tel:")) else target
    )
    bare = bare.split(";", 1)[0]
    forms = {target.lower(), bare.lower(), bare.split("@", 1)[0].lower()}
    for pattern in patterns:
        if pattern == "registered":
            if registered:
                return True
        elif any(fnmatch.fnmatchcase(form, pattern.lower()) for form in forms):
            return True
    return False
