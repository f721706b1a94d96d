"""Registering with a provider: the REGISTER client of one trunk. Sans-IO.

`Registration` keeps our contact bound at a provider's registrar (RFC 3261
section 10.2) and says when the trunk is up. It makes requests; the user-agent
core (`ua_trunks.py`) sends them in client transactions and hands back what
came of them. The states:

| state        | 2xx        | 401/407            | 423                 | other final, timeout |
|--------------|------------|--------------------|---------------------|----------------------|
| registering  | registered | again, with digest | again, Min-Expires  | failed               |
| registered   | (refresh)  | again, with digest | again, Min-Expires  | failed               |
| failed       | -          | -                  | -                   | - (retry on backoff) |

A challenge is answered once per nonce: a second 401/407 to our credentials
(not marked ``stale=true``) means they are wrong, and the trunk fails. A
registered trunk refreshes at 85% of the lifetime the registrar granted
(section 10.2.4 keeps the Call-ID and raises the CSeq); a failed one tries
again after a backoff that doubles from `RETRY_MIN` to `RETRY_MAX`, spread
by up to a fifth so trunks that failed together do not retry together.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mediaserver.sip.auth import answer_challenge, challenge_params
from mediaserver.sip.dialog import new_tag
from mediaserver.sip.errors import SipParseError
from mediaserver.sip.headers import parse_address, split_list
from mediaserver.sip.message import Request, Response
from mediaserver.sip.transaction import Target, new_branch
from mediaserver.sip.trunks import TrunkOutbound

__all__ = ["RETRY_MAX", "RETRY_MIN", "Registration", "RegistrationState", "TrunkRegistration"]

RegistrationState = Literal["registering", "registered", "failed", "unregistered"]

#: Backoff after a failure, first and longest (seconds).
RETRY_MIN = 2.0
RETRY_MAX = 300.0
#: Refresh at this share of the granted lifetime.
REFRESH_SHARE = 0.85


@dataclass(frozen=True)
class TrunkRegistration:
    """The registration went from one state to another; `status` is the final
    response that did it (408 for a timeout), `reason` its phrase or our words."""

    trunk: str
    state: RegistrationState
    status: int
    reason: str
    #: When the next attempt is due (failed) or the refresh (registered).
    retry_at: float | None = None


class Registration:
    """One trunk's registration with its provider (see the module docstring).

    Args:
        trunk: the trunk's name (for events and logs).
        out: the trunk's outbound settings (`register` set).
        local: our (host, port) on the trunk's transport, for Via and Contact.
        user_agent: our User-Agent header.
        jitter: a source of numbers in [0, 1) for the backoff spread.
    """

    def __init__(
        self,
        trunk: str,
        out: TrunkOutbound,
        local: tuple[str, int],
        user_agent: str = "mediaserver",
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.trunk = trunk
        self.out = out
        self.local = local
        self.user_agent = user_agent
        self._jitter = jitter
        self.state: RegistrationState = "unregistered"
        #: The final status of the last attempt (0: none yet).
        self.status = 0
        #: Failures in a row (the backoff), and in all.
        self.failures = 0
        self.failures_total = 0
        #: When the registrar's binding lapses (registered), else None.
        self.expires_at: float | None = None
        #: When `due` next says a REGISTER should go out.
        self.next_at: float | None = 0.0
        self._call_id = f"{secrets.token_hex(12)}@{local[0]}"
        self._tag = new_tag()
        self._cseq = 0
        self._expires = out.expires
        self._answered_nonce: str | None = None

    @property
    def up(self) -> bool:
        """Calls may go through this trunk."""
        return self.state == "registered"

    @property
    def target(self) -> Target:
        return Target(self.out.transport, self.out.host, self.out.port)

    def due(self, now: float) -> bool:
        """A REGISTER should be sent now (first, refresh or retry)."""
        return self.next_at is not None and now >= self.next_at

    def request(self) -> Request:
        """The next REGISTER (and no other until its outcome is known)."""
        self.next_at = None
        if self.state != "registered":
            self.state = "registering"
        return self._register(self._expires, [])

    def unregister(self) -> Request:
        """A REGISTER with Expires 0, to remove our binding on shutdown."""
        self.next_at = None
        self.state = "unregistered"
        return self._register(0, [])

    def on_response(
        self, resp: Response, now: float
    ) -> tuple[Request | None, TrunkRegistration | None]:
        """What a final response to our REGISTER leads to: a REGISTER to send
        at once (digest, Min-Expires) and/or a change of state."""
        if resp.status < 200:
            return None, None
        if self.state == "unregistered":
            return None, None  # the answer to our un-REGISTER
        status = resp.status
        if 200 <= status < 300:
            granted = self._granted(resp)
            self.status, self.failures, self._answered_nonce = status, 0, None
            self.expires_at = now + granted
            self.next_at = now + max(1.0, granted * REFRESH_SHARE)
            changed = self.state != "registered"
            self.state = "registered"
            if not changed:
                return None, None
            return None, TrunkRegistration(
                self.trunk, "registered", status, resp.reason, self.next_at
            )
        if status in (401, 407):
            retry = self._answer(resp)
            if retry is not None:
                return retry, None
            return None, self._fail(status, "credentials refused", now)
        if status == 423:
            minimum = resp.headers.get("Min-Expires") or ""
            if minimum.strip().isdigit() and int(minimum) > self._expires:
                self._expires = int(minimum)
                return self._register(self._expires, []), None
        return None, self._fail(status, resp.reason, now)

    def on_timeout(self, now: float) -> TrunkRegistration | None:
        """No final response came (timer F)."""
        if self.state == "unregistered":
            return None
        return self._fail(408, "no answer from the registrar", now)

    # -- inside ---------------------------------------------------------------------

    def _register(self, expires: int, auth: list[tuple[str, str]]) -> Request:
        out = self.out
        host, port = self.local
        hp = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        aor = f"sip:{out.username}@{out.sip_domain}"
        self._cseq += 1
        req = Request(method="REGISTER", uri=f"sip:{out.sip_domain}")
        req.headers.add("Via", f"SIP/2.0/{out.transport.upper()} {hp};branch={new_branch()};rport")
        req.headers.add("Max-Forwards", "70")
        req.headers.add("From", f"<{aor}>;tag={self._tag}")
        req.headers.add("To", f"<{aor}>")
        req.headers.add("Call-ID", self._call_id)
        req.headers.add("CSeq", f"{self._cseq} REGISTER")
        tparam = "" if out.transport == "udp" else f";transport={out.transport}"
        req.headers.add("Contact", f"<sip:{out.username}@{hp}{tparam}>")
        req.headers.add("Expires", str(expires))
        req.headers.add("User-Agent", self.user_agent)
        for name, value in auth:
            req.headers.add(name, value)
        return req

    def _answer(self, resp: Response) -> Request | None:
        """The REGISTER again with credentials, or None: we cannot or should not."""
        header = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
        for challenge in resp.headers.get_all(header):
            try:
                nonce_stale = _nonce_and_stale(challenge)
                if nonce_stale is None:
                    continue
                nonce, stale = nonce_stale
                if nonce == self._answered_nonce and not stale:
                    return None  # the same nonce again: our answer was wrong
                value = answer_challenge(
                    challenge,
                    "REGISTER",
                    f"sip:{self.out.sip_domain}",
                    self.out.username,
                    self.out.password,
                )
            except SipParseError:
                continue
            self._answered_nonce = nonce
            name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
            return self._register(self._expires, [(name, value)])
        return None

    def _granted(self, resp: Response) -> float:
        """The lifetime the registrar gave our contact (section 10.2.4)."""
        ours = f"@{self.local[0]}:{self.local[1]}"
        for value in resp.headers.get_all("Contact"):
            try:
                addresses = [parse_address(v) for v in split_list(value)]
            except SipParseError:
                continue
            for address in addresses:
                expires = address.params.get("expires") or ""
                if ours in str(address.uri) and expires.isdigit():
                    return float(expires)
        header = (resp.headers.get("Expires") or "").strip()
        return float(header) if header.isdigit() else float(self._expires)

    def _fail(self, status: int, reason: str, now: float) -> TrunkRegistration:
        self.status, self.state, self.expires_at = status, "failed", None
        self.failures += 1
        self.failures_total += 1
        self._answered_nonce = None
        backoff = min(RETRY_MAX, RETRY_MIN * 2 ** (self.failures - 1))
        self.next_at = now + backoff * (1 - 0.2 * self._jitter())
        return TrunkRegistration(self.trunk, "failed", status, reason, self.next_at)


def _nonce_and_stale(challenge: str) -> tuple[str, bool] | None:
    """The nonce of a Digest challenge and whether it says stale=true."""
    params = challenge_params(challenge)
    nonce = params.get("nonce")
    if nonce is None:
        return None
    return nonce, params.get("stale", "").lower() == "true"
