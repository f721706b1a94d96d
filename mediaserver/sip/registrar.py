"""The registrar and its location service (RFC 3261 section 10.3). Sans-IO.

`Registrar.register` applies one authenticated REGISTER to the bindings of its
address-of-record (the To URI's user) and says what to answer: 200 with every
current binding, 423 with Min-Expires for too short an interval, 400 for a
malformed request, 500 for one that arrives out of order, 403 past the
per-user limit. `lookup` gives a user's live contacts (newest first).

A REGISTER that came through a proxy carries that proxy's Path (RFC 3327): it
is kept with the binding, so requests to the phone go back through the proxy
(which knows the phone's real address), and echoed in the 200 when the phone
supports `path`. Bindings live in memory; `listener` hears every change made
here and `merge` takes changes made elsewhere (other workers of a cluster,
through a shared table: `mediaserver.call.bindings`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mediaserver.sip.errors import SipParseError
from mediaserver.sip.message import Request
from mediaserver.sip.transaction import Target


@dataclass
class Binding:
    """One contact of an address-of-record."""

    #: The contact's URI (without <>), the Request-URI to reach the phone.
    contact: str
    expires_at: float
    call_id: str
    cseq: int
    #: Where the REGISTER came from (to reach a phone behind NAT).
    source: Target
    q: float = 1.0
    #: The REGISTER's Path header values, in order: the route to the phone.
    path: tuple[str, ...] = ()
    #: When it was last registered (the registrar's clock): the newer wins a merge.
    updated: float = 0.0


@dataclass(frozen=True)
class RegisterResult:
    """What to answer a REGISTER: `status`, and headers for the response."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    reason: str | None = None


class Registrar:
    """Bindings of the provisioned users, by user name.

    Args:
        min_expires: shortest registration accepted (else 423).
        max_expires: longer requests are cut to this.
        default_expires: used when the REGISTER gives no interval.
        max_contacts: bindings one user may hold at once.
    """

    def __init__(
        self,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        max_contacts: int = 10,
    ) -> None:
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = min(max(default_expires, min_expires), max_expires)
        self.max_contacts = max_contacts
        self._bindings: dict[str, dict[str, Binding]] = {}
        #: Address a phone registered from -> when its newest binding expires.
        self._sources: dict[str, float] = {}
        #: Hears each change a REGISTER makes: (user, contact, binding or None
        #: for a removal, when); not the changes `merge` applies.
        self.listener: Callable[[str, str, Binding | None, float], None] | None = None
        #: Removals not yet merged away: (user, contact) -> when removed, so an
        #: older copy arriving from elsewhere does not bring the binding back.
        self._removed: dict[tuple[str, str], float] = {}

    def register(self, req: Request, user: str, source: Target, now: float) -> RegisterResult:
        """Apply REGISTER `req` for `user` (already authenticated as that user)."""
        try:
            return self._register(req, user, source, now)
        except (SipParseError, ValueError) as exc:
            return RegisterResult(400, reason=f"Bad Request ({exc})"[:120])

    def _register(self, req: Request, user: str, source: Target, now: float) -> RegisterResult:
        default = self.default_expires
        if "Expires" in req.headers:
            default = _seconds(req.headers.get("Expires") or "")
        call_id, cseq = req.call_id, req.cseq.seq
        current = self._live(user, now)
        # (The message parser already refused a `*` among other contacts.)
        if req.headers.get_list("Contact") == ["*"]:
            # Remove every binding (section 10.3 step 6), only with Expires: 0.
            if default != 0:
                return RegisterResult(400, reason="Wildcard Contact Needs Expires 0")
            for key, binding in list(current.items()):
                if binding.call_id == call_id and cseq <= binding.cseq:
                    return RegisterResult(500, reason="Out Of Order")
                del current[key]
                self._changed(user, key, None, now)
            return self._ok(user, now, req)
        changes: list[tuple[str, int, float]] = []
        for addr in req.contacts:
            expires = addr.params.get("expires")
            seconds = _seconds(expires) if expires is not None else default
            if 0 < seconds < self.min_expires:
                return RegisterResult(
                    423,
                    headers=(("Min-Expires", str(self.min_expires)),),
                    reason="Interval Too Brief",
                )
            key = str(addr.uri)
            old = current.get(key)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                return RegisterResult(500, reason="Out Of Order")
            q = _q(addr.params.get("q"))
            changes.append((key, min(seconds, self.max_expires), q))
        added = {key for key, seconds, _ in changes if seconds and key not in current}
        if len(current) + len(added) > self.max_contacts:
            return RegisterResult(403, reason="Too Many Contacts")
        path = tuple(req.headers.get_list("Path"))
        for key, seconds, q in changes:
            if seconds == 0:
                if current.pop(key, None) is not None:
                    self._changed(user, key, None, now)
            else:
                binding = Binding(key, now + seconds, call_id, cseq, source, q, path, now)
                current[key] = binding
                self._note_source(source.host, now + seconds)
                self._changed(user, key, binding, now)
        if len(self._sources) > 1024 and len(self._sources) > 4 * sum(
            map(len, self._bindings.values())
        ):
            self._sources = {h: t for h, t in self._sources.items() if t > now}
        return self._ok(user, now, req)

    def _changed(self, user: str, contact: str, binding: Binding | None, now: float) -> None:
        if binding is None:
            self._note_removed(user, contact, now)
        else:
            self._removed.pop((user, contact), None)
        if self.listener is not None:
            self.listener(user, contact, binding, now)

    def _note_source(self, host: str, until: float) -> None:
        self._sources[host] = max(self._sources.get(host, 0.0), until)

    def merge(self, user: str, contact: str, binding: Binding | None, updated: float) -> None:
        """Apply a change made elsewhere (another worker): `binding`, or its removal
        (None), as of `updated`; a change older than what is here is ignored."""
        bindings = self._bindings.setdefault(user, {})
        current = bindings.get(contact)
        # Not older than what is here: the same change (our own, read back) keeps
        # the binding as it is, with the connection it came in on.
        if current is not None and current.updated >= updated - 0.001:
            return
        if self._removed.get((user, contact), float("-inf")) > updated:
            return
        if binding is None:
            bindings.pop(contact, None)
            self._note_removed(user, contact, updated)
        else:
            bindings[contact] = binding
            self._removed.pop((user, contact), None)
            self._note_source(binding.source.host, binding.expires_at)
        if not bindings:
            del self._bindings[user]

    def _note_removed(self, user: str, contact: str, when: float) -> None:
        self._removed[(user, contact)] = when
        if len(self._removed) > 4096:
            # Old removals matter only against copies older still: keep the newest.
            newest = sorted(self._removed.items(), key=lambda kv: kv[1])[-2048:]
            self._removed = dict(newest)

    def known_source(self, host: str, now: float) -> bool:
        """Whether a phone registered from `host` and its binding is live (or
        was, until it expires: removing a binding does not forget its address)."""
        return self._sources.get(host, 0.0) > now

    def _ok(self, user: str, now: float, req: Request) -> RegisterResult:
        headers = tuple(
            ("Contact", f"<{b.contact}>;expires={max(0, round(b.expires_at - now))}")
            for b in self.lookup(user, now)
        )
        supported = {s.strip().lower() for s in req.headers.get_list("Supported")}
        if "path" in supported:
            # RFC 3327 section 5.3: the registrar echoes the Path it stored.
            headers += tuple(("Path", p) for p in req.headers.get_list("Path"))
        if not self._bindings.get(user):
            self._bindings.pop(user, None)
        return RegisterResult(200, headers=headers)

    def _live(self, user: str, now: float) -> dict[str, Binding]:
        """The user's bindings with the expired ones dropped."""
        bindings = self._bindings.setdefault(user, {})
        for key in [k for k, b in bindings.items() if b.expires_at <= now]:
            del bindings[key]
        return bindings

    def lookup(self, user: str, now: float) -> list[Binding]:
        """`user`'s live bindings, highest q first, then the most recently refreshed."""
        if user not in self._bindings:
            return []
        live = list(self._live(user, now).values())
        return sorted(live, key=lambda b: (-b.q, -b.expires_at))

    def registered(self, now: float) -> dict[str, list[Binding]]:
        """Every user with live bindings, and those bindings (as `lookup` orders them)."""
        return {u: found for u in list(self._bindings) if (found := self.lookup(u, now))}


def _seconds(text: str) -> int:
    value = text.strip()
    if not value.isdigit() or len(value) > 10:
        raise ValueError(f"bad expires {text[:20]!r}")
    return int(value)


def _q(text: str | None) -> float:
    if text is None:
        return 1.0
    try:
        q = float(text)
    except ValueError:
        raise ValueError(f"bad q {text[:20]!r}") from None
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"bad q {text[:20]!r}")
    return q
