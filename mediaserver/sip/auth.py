"""SIP digest authentication (RFC 3261 section 22, RFC 2617, RFC 7616, RFC 8760). Sans-IO.

`DigestAuth` challenges requests and checks their credentials against the
configured users. It keeps no per-challenge state: a nonce carries its issue
time and an HMAC under a per-process secret, so any nonce we issued can be
checked until it ages out (then the client is re-challenged with
``stale=true`` and retries without asking its user). Replays are refused
by remembering, per nonce, the highest nonce-count seen (qop=auth), or that
the nonce was used at all (no qop, the RFC 2069 form, where it is single-use).

Outcomes, for the user agent to act on:

- `Authorized`: the credentials are right;
- `Challenge`: no usable credentials yet (none, another realm, a stale or
  unknown nonce): answer 401 with `challenges()`;
- `AuthFailed`: credentials that do not verify (wrong password, replayed
  nonce-count, a user name that is not provisioned, too many failures from
  one address). `known_user` tells a provisioned user's failed digest apart.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass

from mediaserver.sip.errors import SipParseError
from mediaserver.sip.grammar import WS, is_token, quote, read_quoted, split_outside, unquote
from mediaserver.sip.uri import parse_uri

#: Algorithms we verify, by their RFC 7616 names, with their hash functions.
HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
#: Seen-nonce entries kept for replay checks (the oldest are forgotten first;
#: a forgotten nonce is only ever answered with a fresh challenge).
MAX_TRACKED_NONCES = 20_000


@dataclass(frozen=True)
class Account:
    """One provisioned user: a password, or the precomputed MD5 HA1
    (``md5(user:realm:password)``) so the config need not hold the password."""

    user: str
    password: str | None = None
    ha1: str | None = None

    def ha1_for(self, algorithm: str, realm: str) -> str | None:
        """HA1 for `algorithm` (None when only an MD5 HA1 is known and SHA-256 is asked)."""
        if self.password is not None:
            return _h(algorithm, f"{self.user}:{realm}:{self.password}")
        return self.ha1.lower() if self.ha1 is not None and algorithm == "MD5" else None


@dataclass(frozen=True)
class Credentials:
    """A parsed ``Authorization: Digest ...`` (or Proxy-Authorization) header."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None


@dataclass(frozen=True)
class Authorized:
    """The request carries valid credentials of `user`."""

    user: str


@dataclass(frozen=True)
class Challenge:
    """No usable credentials yet: answer 401 with `DigestAuth.challenges(stale)`."""

    stale: bool = False


@dataclass(frozen=True)
class AuthFailed:
    """Credentials that do not verify. `known_user`: `user` is provisioned (so a
    registered user's digest failed, e.g. a wrong password)."""

    user: str
    reason: str
    known_user: bool


AuthResult = Authorized | Challenge | AuthFailed


def parse_credentials(value: str) -> Credentials:
    """Parse a Digest credentials header value.

    Raises:
        SipParseError: not Digest, malformed parameters, or a required one missing.
    """
    params = challenge_params(value)
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in params]
    if missing:
        raise SipParseError(f"digest credentials lack {', '.join(missing)}")
    qop = params.get("qop")
    if qop is not None and ("nc" not in params or "cnonce" not in params):
        raise SipParseError("digest qop without nc and cnonce")
    return Credentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"].lower(),
        algorithm=params.get("algorithm", "MD5").upper(),
        qop=qop.lower() if qop is not None else None,
        nc=params.get("nc"),
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
    )


def challenge_params(value: str) -> dict[str, str]:
    """The parameters (names lowercased) of a ``Digest`` challenge or
    credentials header value.

    Raises:
        SipParseError: another scheme, or malformed parameters.
    """
    scheme, _, rest = value.strip(WS).partition(" ")
    if scheme.lower() != "digest":
        raise SipParseError(f"unsupported auth scheme {scheme!r}")
    params: dict[str, str] = {}
    for item in split_outside(rest, ","):
        item = item.strip(WS)
        if not item:
            continue
        name, eq, raw = item.partition("=")
        name = name.strip(WS).lower()
        raw = raw.strip(WS)
        if not eq or not is_token(name) or not raw:
            raise SipParseError(f"bad digest parameter {item[:40]!r}")
        if raw.startswith('"'):
            quoted, end = read_quoted(raw, 0)
            if end != len(raw):
                raise SipParseError(f"junk after digest parameter {name!r}")
            raw = unquote(quoted)
        if name in params:
            raise SipParseError(f"digest parameter {name!r} given twice")
        params[name] = raw
    return params


def answer_challenge(
    challenge: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    *,
    body: bytes = b"",
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The Authorization (or Proxy-Authorization) value answering a server's
    WWW-Authenticate (or Proxy-Authenticate) `challenge`: what we send as a
    client when a provider challenges our REGISTER or INVITE (RFC 3261 22.2,
    RFC 7616 3.4). Prefers qop=auth when offered; MD5, SHA-256 and their
    -sess forms.

    Raises:
        SipParseError: not a Digest challenge, no realm or nonce, or an
            algorithm or qop we cannot answer.
    """
    params = challenge_params(challenge)
    if "realm" not in params or "nonce" not in params:
        raise SipParseError("digest challenge lacks realm or nonce")
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm.removesuffix("-SESS") not in HASHES:
        raise SipParseError(f"unsupported digest algorithm {algorithm!r}")
    offered = [q.strip(WS).lower() for q in params.get("qop", "").split(",") if q.strip(WS)]
    qop = "auth" if "auth" in offered else "auth-int" if "auth-int" in offered else None
    if offered and qop is None:
        raise SipParseError(f"unsupported qop {params['qop']!r}")
    creds = Credentials(
        username=username,
        realm=params["realm"],
        nonce=params["nonce"],
        uri=uri,
        response="",
        algorithm=algorithm,
        qop=qop,
        nc=f"{nc:08x}" if qop else None,
        cnonce=(cnonce or secrets.token_hex(8)) if qop or algorithm.endswith("-SESS") else None,
        opaque=params.get("opaque"),
    )
    ha1 = _h(algorithm.removesuffix("-SESS"), f"{username}:{creds.realm}:{password}")
    response = digest_response(creds, method, ha1, body=body)
    parts = [
        f"username={quote(username)}",
        f"realm={quote(creds.realm)}",
        f"nonce={quote(creds.nonce)}",
        f"uri={quote(uri)}",
        f"response={quote(response)}",
        f"algorithm={algorithm}",
    ]
    if creds.cnonce is not None:
        parts.append(f"cnonce={quote(creds.cnonce)}")
    if qop:
        parts += [f"qop={qop}", f"nc={creds.nc}"]
    if creds.opaque is not None:
        parts.append(f"opaque={quote(creds.opaque)}")
    return "Digest " + ", ".join(parts)


def digest_response(creds: Credentials, method: str, ha1: str, *, body: bytes = b"") -> str:
    """The response a client with HA1 `ha1` computes for `creds` (RFC 7616 3.4.1)."""
    algorithm = creds.algorithm
    base = algorithm.removesuffix("-SESS")
    if algorithm.endswith("-SESS"):
        ha1 = _h(base, f"{ha1}:{creds.nonce}:{creds.cnonce}")
    if creds.qop == "auth-int":
        ha2 = _h(base, f"{method}:{creds.uri}:" + HASHES[base](body).hexdigest())
    else:
        ha2 = _h(base, f"{method}:{creds.uri}")
    if creds.qop is None:
        return _h(base, f"{ha1}:{creds.nonce}:{ha2}")
    return _h(base, f"{ha1}:{creds.nonce}:{creds.nc}:{creds.cnonce}:{creds.qop}:{ha2}")


def _h(algorithm: str, text: str) -> str:
    return HASHES[algorithm](text.encode("utf-8")).hexdigest()


class DigestAuth:
    """Challenges and checks digest credentials for one realm.

    Args:
        realm: the protection realm put in challenges.
        accounts: the provisioned users by name.
        nonce_ttl: seconds a nonce stays valid (then the client is told it is stale).
        algorithms: offered in this order, one challenge each (RFC 8760 says
            SHA-256 first; some old phones only read the first one).
        max_failures: failed attempts one source address may make for one user
            name within `failure_window` seconds; after that every attempt of
            that pair fails without being checked, until the window has passed.
            (Per user as well as per address, so one phone with a stale password
            behind a proxy or NAT does not lock its neighbours out.)
        secret: the nonce HMAC key (random per process by default).
    """

    def __init__(
        self,
        realm: str,
        accounts: dict[str, Account],
        *,
        nonce_ttl: float = 300.0,
        algorithms: tuple[str, ...] = ("MD5",),
        max_failures: int = 10,
        failure_window: float = 60.0,
        secret: bytes | None = None,
    ) -> None:
        unknown = [a for a in algorithms if a not in HASHES]
        if unknown or not algorithms:
            raise ValueError(f"digest algorithms must be among {', '.join(HASHES)}")
        self.realm = realm
        self.accounts = accounts
        self.nonce_ttl = nonce_ttl
        self.algorithms = algorithms
        self.max_failures = max_failures
        self.failure_window = failure_window
        self._secret = secret or secrets.token_bytes(32)
        self._opaque = secrets.token_hex(8)
        #: nonce -> highest nonce-count used (0: used without qop).
        self._seen: OrderedDict[str, int] = OrderedDict()
        #: Times of recent failed attempts, by (source address, user name).
        self._failures: dict[tuple[str, str], deque[float]] = {}

    # -- challenges -------------------------------------------------------------

    def challenges(self, now: float, *, stale: bool = False) -> list[str]:
        """WWW-Authenticate values: one per offered algorithm, each with a fresh nonce."""
        extra = ", stale=true" if stale else ""
        return [
            f"Digest realm={quote(self.realm)}, nonce={quote(self._nonce(now))}, "
            f'opaque={quote(self._opaque)}, algorithm={alg}, qop="auth"{extra}'
            for alg in self.algorithms
        ]

    def _nonce(self, now: float) -> str:
        stamp = f"{int(now * 1000):x}.{secrets.token_hex(6)}"
        return f"{stamp}.{self._sign(stamp)}"

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:24]

    def _nonce_age(self, nonce: str, now: float) -> float | None:
        """Seconds since we issued `nonce`, or None when we did not issue it."""
        stamp, _, mac = nonce.rpartition(".")
        # Bytes: compare_digest refuses str with non-ASCII characters (found by fuzzing).
        if not stamp or not hmac.compare_digest(mac.encode(), self._sign(stamp).encode()):
            return None
        try:
            issued = int(stamp.partition(".")[0], 16) / 1000
        except ValueError:
            return None
        return now - issued

    # -- checks -------------------------------------------------------------------

    def check(
        self,
        headers: list[str],
        method: str,
        uri: str,
        source: str,
        now: float,
        *,
        body: bytes = b"",
    ) -> AuthResult:
        """Check a request's Authorization values (the one for our realm counts).

        `uri` is the Request-URI (the credentials must be for it); `source` is
        the sender's address (for the lock-out); `now` is the monotonic clock
        the nonces were issued with.

        Raises:
            SipParseError: a header is malformed (answer 400).
        """
        ours = [c for c in map(parse_credentials, headers) if c.realm == self.realm]
        if not ours:
            return Challenge()
        creds = ours[0]
        key = (source, creds.username)
        if self._locked_out(key, now):
            return AuthFailed(creds.username, "too many failed attempts", False)
        if creds.algorithm.removesuffix("-SESS") not in self.algorithms:
            return Challenge()
        if creds.qop not in (None, "auth", "auth-int"):
            raise SipParseError(f"unsupported qop {creds.qop!r}")
        age = self._nonce_age(creds.nonce, now)
        if age is None:
            return Challenge()
        if not 0 <= age <= self.nonce_ttl:
            return Challenge(stale=True)
        account = self.accounts.get(creds.username)
        if account is None:
            return self._fail(key, now, "no such user", known=False)
        ha1 = account.ha1_for(creds.algorithm.removesuffix("-SESS"), self.realm)
        if ha1 is None:
            return Challenge()
        expected = digest_response(creds, method, ha1, body=body)
        if not hmac.compare_digest(expected.encode(), creds.response.encode()):
            return self._fail(key, now, "wrong digest response", known=True)
        if not _same_uri(creds.uri, uri):
            # A right answer computed for another request (RFC 7616 section 3.4.6).
            return self._fail(key, now, "digest uri is not the request's", known=True)
        if not self._fresh(creds):
            # A right answer with an old nonce-count is a replay, not the user.
            return self._fail(key, now, "replayed nonce", known=True)
        return Authorized(creds.username)

    def _fresh(self, creds: Credentials) -> bool:
        """Remember the nonce-count; False when it is not above the last one."""
        if creds.qop is None:
            count = 0
        else:
            try:
                count = int(creds.nc or "", 16)
            except ValueError:
                return False
        last = self._seen.get(creds.nonce)
        if last is not None and (creds.qop is None or count <= last):
            return False
        self._seen[creds.nonce] = count
        self._seen.move_to_end(creds.nonce)
        while len(self._seen) > MAX_TRACKED_NONCES:
            self._seen.popitem(last=False)
        return True

    def _fail(self, key: tuple[str, str], now: float, reason: str, *, known: bool) -> AuthFailed:
        self._failures.setdefault(key, deque()).append(now)
        if len(self._failures) > MAX_TRACKED_NONCES:
            for old in list(self._failures):
                self._locked_out(old, now)  # drops the expired
            while len(self._failures) > MAX_TRACKED_NONCES:  # a flood: forget the oldest
                del self._failures[next(iter(self._failures))]
        return AuthFailed(key[1], reason, known)

    def _locked_out(self, key: tuple[str, str], now: float) -> bool:
        times = self._failures.get(key)
        if times is None:
            return False
        while times and times[0] <= now - self.failure_window:
            times.popleft()
        if not times:
            del self._failures[key]
            return False
        return len(times) >= self.max_failures


def _same_uri(digest_uri: str, request_uri: str) -> bool:
    if digest_uri == request_uri:
        return True
    try:
        return parse_uri(digest_uri).equivalent(parse_uri(request_uri))
    except SipParseError:
        return False
