"""Digest authentication: the RFC test vectors, nonces, replays, failures, lock-out."""

from __future__ import annotations

import hashlib

import pytest

from mediaserver.sip.auth import (
    Account,
    AuthFailed,
    Authorized,
    Challenge,
    Credentials,
    DigestAuth,
    answer_challenge,
    digest_response,
    parse_credentials,
)
from mediaserver.sip.errors import SipParseError
from mediaserver.sip.grammar import parse_params

URI = "sip:hold@127.0.0.1:5060"


def client_header(
    challenge: str,
    *,
    user: str = "alice",
    password: str = "secret",
    method: str = "INVITE",
    uri: str = URI,
    nc: int = 1,
    cnonce: str = "0a4f113b",
    qop: bool = True,
    realm: str | None = None,
) -> str:
    """What a phone sends back for `challenge` (an independent RFC 2617 client)."""
    params = parse_params(challenge.removeprefix("Digest ").replace(", ", ";"))
    value = {k: (v or "").strip('"') for k, v in params.items()}
    realm = realm or value["realm"]
    alg = value.get("algorithm", "MD5")
    h = hashlib.sha256 if alg == "SHA-256" else hashlib.md5

    def hx(text: str) -> str:
        return h(text.encode()).hexdigest()

    ha1, ha2 = hx(f"{user}:{realm}:{password}"), hx(f"{method}:{uri}")
    nonce = value["nonce"]
    if qop:
        response = hx(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
        extra = f', qop=auth, nc={nc:08x}, cnonce="{cnonce}"'
    else:
        response, extra = hx(f"{ha1}:{nonce}:{ha2}"), ""
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm={alg}, opaque="{value["opaque"]}"{extra}'
    )


def make_auth(**kw: object) -> DigestAuth:
    accounts = {
        "alice": Account("alice", password="secret"),
        "bob": Account("bob", ha1=hashlib.md5(b"bob:mediaserver:hunter2").hexdigest()),
    }
    return DigestAuth("mediaserver", accounts, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("alg", "realm", "password", "nonce", "cnonce", "expected"),
    [
        # RFC 2617 section 3.5
        (
            "MD5",
            "testrealm@host.com",
            "Circle Of Life",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "0a4f113b",
            "6629fae49393a05397450978507c4ef1",
        ),
        # RFC 7616 section 3.9.1, both algorithms
        (
            "MD5",
            "http-auth@example.org",
            "Circle of Life",
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            "8ca523f5e9506fed4657c9700eebdbec",
        ),
        (
            "SHA-256",
            "http-auth@example.org",
            "Circle of Life",
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
    ],
)
def test_rfc_vectors(
    alg: str, realm: str, password: str, nonce: str, cnonce: str, expected: str
) -> None:
    creds = Credentials(
        "Mufasa", realm, nonce, "/dir/index.html", "", alg, "auth", "00000001", cnonce
    )
    ha1 = Account("Mufasa", password=password).ha1_for(alg, realm)
    assert ha1 is not None
    assert digest_response(creds, "GET", ha1) == expected


def test_parse_credentials_quoted_commas_and_errors() -> None:
    creds = parse_credentials(
        'Digest username="a,b", realm="r", nonce="n", uri="sip:x@y", response="ABC",'
        ' qop=auth, nc=00000001, cnonce="c", algorithm=md5'
    )
    assert (creds.username, creds.response, creds.algorithm, creds.qop) == (
        "a,b",
        "abc",
        "MD5",
        "auth",
    )
    for bad in (
        "Basic dXNlcjpwYXNz",
        'Digest username="a", realm="r"',  # no nonce, uri, response
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth',
        'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="x"',
        'Digest username="a" junk, realm="r", nonce="n", uri="u", response="x"',
        'Digest username="a, realm="r"',
    ):
        with pytest.raises(SipParseError):
            parse_credentials(bad)


def test_challenge_then_right_password_authorizes() -> None:
    auth = make_auth()
    assert auth.check([], "INVITE", URI, "10.0.0.1", 0.0) == Challenge()
    (challenge,) = auth.challenges(0.0)
    assert 'realm="mediaserver"' in challenge and 'qop="auth"' in challenge
    header = client_header(challenge)
    assert auth.check([header], "INVITE", URI, "10.0.0.1", 1.0) == Authorized("alice")
    # The same nonce with a higher nonce-count is the phone's next request.
    nxt = client_header(challenge, nc=2, method="BYE")
    assert auth.check([nxt], "BYE", URI, "10.0.0.1", 2.0) == Authorized("alice")


def test_ha1_account_and_sha256() -> None:
    auth = make_auth(algorithms=("SHA-256", "MD5"))
    sha, md5 = auth.challenges(0.0)
    assert "algorithm=SHA-256" in sha and "algorithm=MD5" in md5 and sha != md5
    alice = client_header(sha)
    assert auth.check([alice], "INVITE", URI, "h", 0.5) == Authorized("alice")
    # bob's config holds only an MD5 HA1: he is asked again for SHA-256, and MD5 works.
    bob_sha = client_header(sha, user="bob", password="hunter2")
    assert auth.check([bob_sha], "INVITE", URI, "h", 0.5) == Challenge()
    # (A new challenge: alice's request used the first nonce.)
    bob_md5 = client_header(auth.challenges(0.6)[1], user="bob", password="hunter2")
    assert auth.check([bob_md5], "INVITE", URI, "h", 0.7) == Authorized("bob")


def test_wrong_password_unknown_user_and_other_realm() -> None:
    auth = make_auth()
    (challenge,) = auth.challenges(0.0)
    wrong = auth.check([client_header(challenge, password="nope")], "INVITE", URI, "h", 1.0)
    assert wrong == AuthFailed("alice", "wrong digest response", True)
    unknown = auth.check([client_header(challenge, user="mallory")], "INVITE", URI, "h", 1.0)
    assert isinstance(unknown, AuthFailed) and not unknown.known_user
    # Credentials for someone else's realm are not ours to judge: challenge.
    other = client_header(challenge, realm="elsewhere")
    assert auth.check([other], "INVITE", URI, "h", 1.0) == Challenge()
    # The right answer for another method or URI does not verify.
    moved = client_header(challenge, method="REGISTER")
    assert isinstance(auth.check([moved], "INVITE", URI, "h", 1.0), AuthFailed)
    # A right answer for another Request-URI is not this request's.
    elsewhere = client_header(challenge, uri="sip:other@127.0.0.1")
    assert auth.check([elsewhere], "INVITE", URI, "h", 1.0) == AuthFailed(
        "alice", "digest uri is not the request's", True
    )
    # The same URI written differently (RFC 3261 19.1.4 comparison) is fine.
    same = client_header(challenge, uri="sip:hold@127.0.0.1:5060;TRANSPORT=udp", nc=2)
    upper = URI + ";transport=UDP"
    assert auth.check([same], "INVITE", upper, "h", 1.0) == Authorized("alice")


def test_stale_forged_and_replayed_nonces() -> None:
    auth = make_auth(nonce_ttl=30.0)
    (challenge,) = auth.challenges(0.0)
    header = client_header(challenge)
    assert auth.check([header], "INVITE", URI, "h", 31.0) == Challenge(stale=True)
    assert "stale=true" in auth.challenges(31.0, stale=True)[0]
    # A nonce we did not sign is not a failure of the user: a fresh challenge.
    forged = header.replace('nonce="', 'nonce="1', 1)
    assert auth.check([forged], "INVITE", URI, "h", 1.0) == Challenge()
    # Another server's nonces (another secret) are not ours either.
    assert make_auth().check([header], "INVITE", URI, "h", 1.0) == Challenge()
    assert auth.check([header], "INVITE", URI, "h", 1.0) == Authorized("alice")
    replay = auth.check([header], "INVITE", URI, "h", 2.0)
    assert replay == AuthFailed("alice", "replayed nonce", True)
    # Without qop (RFC 2069 clients) a nonce is good once.
    (fresh,) = auth.challenges(3.0)
    once = client_header(fresh, qop=False)
    assert auth.check([once], "INVITE", URI, "h", 3.5) == Authorized("alice")
    assert isinstance(auth.check([once], "INVITE", URI, "h", 4.0), AuthFailed)


def test_non_ascii_nonces_and_responses_are_refused_not_raised() -> None:
    # Found by bench/fuzz.py: hmac.compare_digest raises on non-ASCII str.
    auth = make_auth()
    (challenge,) = auth.challenges(0.0)
    header = client_header(challenge)
    foreign = header.replace('nonce="', 'nonce="\u00b0.', 1)
    assert auth.check([foreign], "INVITE", URI, "h", 1.0) == Challenge()
    response = header.split('response="', 1)[1].split('"', 1)[0]
    garbled = header.replace(response, "\u00b0" + response[1:])
    assert auth.check([garbled], "INVITE", URI, "h", 1.0) == AuthFailed(
        "alice", "wrong digest response", True
    )


def test_lockout_after_repeated_failures_per_address() -> None:
    auth = make_auth(max_failures=3, failure_window=60.0)
    (challenge,) = auth.challenges(0.0)
    wrong = client_header(challenge, password="guess")
    for i in range(3):
        assert auth.check([wrong], "INVITE", URI, "10.0.0.9", float(i)).reason == (  # type: ignore[union-attr]
            "wrong digest response"
        )
    right = client_header(challenge, nc=5)
    locked = auth.check([right], "INVITE", URI, "10.0.0.9", 10.0)
    assert locked == AuthFailed("alice", "too many failed attempts", False)
    # Other users at that address (a proxy, a NAT) and other addresses are not
    # affected, and the lock-out ends with the window.
    auth.accounts["carol"] = Account("carol", password="pw")
    carol = client_header(challenge, user="carol", password="pw", nc=1)
    assert auth.check([carol], "INVITE", URI, "10.0.0.9", 10.0) == Authorized("carol")
    assert auth.check([client_header(challenge, nc=6)], "INVITE", URI, "10.0.0.1", 10.0) == (
        Authorized("alice")
    )
    (later,) = auth.challenges(70.0)
    assert auth.check([client_header(later)], "INVITE", URI, "10.0.0.9", 70.0) == Authorized(
        "alice"
    )


def test_bad_algorithm_config() -> None:
    with pytest.raises(ValueError, match="algorithms"):
        make_auth(algorithms=("SHA-1",))


# -- the client side: answering a provider's challenge ------------------------------


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_our_answer_to_a_challenge_verifies_at_a_registrar(algorithm: str) -> None:
    """What we send a provider is checked by an independent verifier (our own
    registrar's, which also holds the RFC vectors above)."""
    auth = DigestAuth("provider.test", {"acct": Account("acct", "s3cret")}, algorithms=(algorithm,))
    (challenge,) = auth.challenges(0.0)
    header = answer_challenge(challenge, "INVITE", URI, "acct", "s3cret", nc=1)
    assert auth.check([header], "INVITE", URI, "10.0.0.1", 0.5) == Authorized("acct")
    assert f"algorithm={algorithm}" in header and 'opaque="' in header
    wrong = answer_challenge(challenge, "INVITE", URI, "acct", "guess")
    assert isinstance(auth.check([wrong], "INVITE", URI, "10.0.0.2", 0.5), AuthFailed)


def test_a_challenge_without_qop_and_a_sess_algorithm_are_answered_per_rfc() -> None:
    plain = answer_challenge('Digest realm="r", nonce="n1"', "REGISTER", "sip:r", "u", "p")
    creds = parse_credentials(plain)
    ha1 = hashlib.md5(b"u:r:p").hexdigest()
    assert creds.qop is None and creds.cnonce is None
    assert creds.response == digest_response(creds, "REGISTER", ha1)
    sess = answer_challenge(
        'Digest realm="r", nonce="n2", algorithm=MD5-sess, qop="auth,auth-int"',
        "INVITE", "sip:x@r", "u", "p", cnonce="c0ffee",
    )  # fmt: skip
    creds = parse_credentials(sess)
    assert creds.algorithm == "MD5-SESS" and creds.qop == "auth" and creds.cnonce == "c0ffee"
    assert creds.response == digest_response(creds, "INVITE", ha1)


@pytest.mark.parametrize(
    "challenge",
    ['Basic realm="r"', 'Digest realm="r"', 'Digest nonce="n"', 'Digest realm="r", nonce="n", '
     "algorithm=SHA-512-256", 'Digest realm="r", nonce="n", qop="auth-conf"'],
)  # fmt: skip
def test_a_challenge_we_cannot_answer_raises(challenge: str) -> None:
    with pytest.raises(SipParseError):
        answer_challenge(challenge, "REGISTER", "sip:r", "u", "p")
