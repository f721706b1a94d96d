"""The UAS core with digest auth and a registrar: REGISTER, challenged INVITEs,
a registered user's failed digest, refusals."""

from __future__ import annotations

from mediaserver.sip.auth import Account, DigestAuth
from mediaserver.sip.calls import AuthRejected, CallIncoming, Event, Registered
from mediaserver.sip.message import Request, Response
from mediaserver.sip.registrar import Registrar
from mediaserver.sip.transaction import Send, Target
from mediaserver.sip.ua import UserAgent
from tests.sip.test_auth import client_header
from tests.sip.test_ua import PEER, SDP, make_ua, request, sent, statuses

OFFER = SDP.format(direction="sendrecv")


def auth_ua(**kw: object) -> UserAgent:
    auth = DigestAuth("mediaserver", {"alice": Account("alice", password="secret")})
    ua, _ = make_ua(auth=auth, registrar=Registrar(), **kw)
    return ua


def challenge_of(events: list[Event]) -> str:
    (resp,) = [m for m in sent(events) if isinstance(m, Response)]
    assert resp.status == 401
    value = resp.headers.get("WWW-Authenticate")
    assert value is not None
    return value


def register_req(cseq: int, extra: str = "", branch: str = "z9hG4bK-reg") -> bytes:
    data = request("REGISTER", user="alice", call_id="reg", cseq=cseq, branch=branch, extra=extra)
    return data.replace(b"REGISTER sip:alice@127.0.0.1:5060", b"REGISTER sip:127.0.0.1:5060")


def test_register_challenge_then_bind() -> None:
    ua = auth_ua()
    challenge = challenge_of(ua.receive(register_req(1), PEER, 0.0))
    creds = client_header(challenge, method="REGISTER", uri="sip:127.0.0.1:5060")
    events = ua.receive(
        register_req(2, f"Authorization: {creds}\nExpires: 600", "z9hG4bK-r2"), PEER, 1.0
    )
    (ok,) = sent(events)
    assert isinstance(ok, Response) and ok.status == 200
    assert ok.headers.get("Contact") == "<sip:alice@127.0.0.1:5061>;expires=600"
    assert Registered("alice", PEER, 1) in events
    assert ua.config.registrar is not None
    assert ua.config.registrar.lookup("alice", 2.0)[0].source == PEER
    # OPTIONS now advertises REGISTER.
    options = sent(ua.receive(request("OPTIONS", branch="z9hG4bK-o"), PEER, 2.0))[0]
    assert "REGISTER" in (options.headers.get("Allow") or "")


def test_register_wrong_password_is_refused_and_reported() -> None:
    ua = auth_ua()
    challenge = challenge_of(ua.receive(register_req(1), PEER, 0.0))
    creds = client_header(challenge, method="REGISTER", uri="sip:127.0.0.1:5060", password="wrong")
    events = ua.receive(register_req(2, f"Authorization: {creds}", "z9hG4bK-r2"), PEER, 1.0)
    assert statuses(events) == [403]
    assert AuthRejected("REGISTER", "alice", "wrong digest response", PEER) in events
    assert ua.config.registrar is not None and ua.config.registrar.lookup("alice", 1.0) == []
    # A malformed Authorization is a 400, not a failed login.
    bad = ua.receive(
        register_req(3, 'Authorization: Digest username="alice"', "z9hG4bK-r3"), PEER, 2.0
    )
    assert statuses(bad) == [400]


def test_dial_a_registered_user_goes_to_the_binding() -> None:
    ua = auth_ua()
    phone = Target("udp", "127.0.0.1", 40123)  # where the REGISTER came from (NAT)
    challenge = challenge_of(ua.receive(register_req(1), phone, 0.0))
    creds = client_header(challenge, method="REGISTER", uri="sip:127.0.0.1:5060")
    ua.receive(register_req(2, f"Authorization: {creds}", "z9hG4bK-r2"), phone, 1.0)
    for target in ("sip:alice@127.0.0.1", "sip:alice@127.0.0.1:5060"):
        assert ua.registered_contact(target, 2.0) is not None
    # Not ours, or nobody registered: dialed as written.
    assert ua.registered_contact("sip:alice@192.0.2.1", 2.0) is None
    assert ua.registered_contact("sip:bob@127.0.0.1", 2.0) is None
    assert ua.registered_contact("sip:alice@127.0.0.1:5099", 2.0) is None
    leg, events = ua.dial("sip:alice@127.0.0.1", "desk", 2.0)
    assert leg is not None
    (send,) = [e for e in events if isinstance(e, Send)]
    assert send.target == phone
    invite = send.message
    assert isinstance(invite, Request)
    assert invite.uri == "sip:alice@127.0.0.1:5061" and invite.to.uri.user == "alice"


def test_register_for_someone_elses_address_is_refused() -> None:
    ua = auth_ua()
    auth = ua.config.auth
    assert auth is not None
    auth.accounts["bob"] = Account("bob", password="pw")
    challenge = challenge_of(ua.receive(register_req(1), PEER, 0.0))
    creds = client_header(
        challenge, user="bob", password="pw", method="REGISTER", uri="sip:127.0.0.1:5060"
    )
    events = ua.receive(register_req(2, f"Authorization: {creds}", "z9hG4bK-r2"), PEER, 1.0)
    assert statuses(events) == [403]
    assert [e.reason for e in events if isinstance(e, AuthRejected)] == ["not the owner of 'alice'"]


def test_invite_from_registered_user_is_challenged_then_accepted() -> None:
    ua = auth_ua()
    challenge = challenge_of(ua.receive(request(body=OFFER), PEER, 0.0))
    creds = client_header(challenge)
    events = ua.receive(
        request(body=OFFER, cseq=2, branch="z9hG4bK-2", extra=f"Authorization: {creds}"),
        PEER,
        1.0,
    )
    (incoming,) = [e for e in events if isinstance(e, CallIncoming)]
    assert incoming.call.auth_user == "alice" and incoming.call.auth_error is None


def test_registered_users_failed_digest_becomes_a_call_with_the_error() -> None:
    """The app, not the SIP core, decides what a failed login hears (the auth-failure flow)."""
    ua = auth_ua()
    challenge = challenge_of(ua.receive(request(body=OFFER), PEER, 0.0))
    creds = client_header(challenge, password="wrong")
    events = ua.receive(
        request(body=OFFER, cseq=2, branch="z9hG4bK-2", extra=f"Authorization: {creds}"),
        PEER,
        1.0,
    )
    (incoming,) = [e for e in events if isinstance(e, CallIncoming)]
    assert incoming.call.auth_user is None
    assert incoming.call.auth_error == "SIP digest failed for alice: wrong digest response"


def test_invite_with_other_users_credentials_or_locked_out_is_refused() -> None:
    ua = auth_ua()
    auth = ua.config.auth
    assert auth is not None
    auth.accounts["bob"] = Account("bob", password="pw")
    challenge = challenge_of(ua.receive(request(body=OFFER), PEER, 0.0))
    creds = client_header(challenge, user="bob", password="pw")
    events = ua.receive(
        request(body=OFFER, cseq=2, branch="z9hG4bK-2", extra=f"Authorization: {creds}"),
        PEER,
        1.0,
    )
    assert statuses(events) == [403] and not any(isinstance(e, CallIncoming) for e in events)
    # Ten wrong guesses from one address lock it out: no more calls, only 403s.
    other = Target("udp", "127.0.0.9", 5061)
    for i in range(11):
        creds = client_header(challenge, password=f"guess{i}", nc=i + 1)
        events = ua.receive(
            request(
                body=OFFER, call_id=f"g{i}", branch=f"z9hG4bK-g{i}", extra=f"Authorization: {creds}"
            ),
            other,
            2.0 + i * 0.01,
        )
    assert statuses(events) == [403]
    assert [e.reason for e in events if isinstance(e, AuthRejected)] == ["too many failed attempts"]


def test_invite_auth_modes() -> None:
    # "users": a caller that is not a provisioned user (a trunk) is not challenged.
    ua = auth_ua()
    trunk = request(body=OFFER).replace(b"From: <sip:alice@", b"From: <sip:+15551234@")
    assert any(isinstance(e, CallIncoming) for e in ua.receive(trunk, PEER, 0.0))
    # "all": everyone is, and only provisioned users get in.
    ua = auth_ua(invite_auth="all")
    challenge = challenge_of(ua.receive(trunk, PEER, 0.0))
    creds = client_header(challenge, user="mallory", password="x")
    events = ua.receive(
        trunk.replace(b"CSeq: 1", b"CSeq: 2")
        .replace(b"z9hG4bK-1", b"z9hG4bK-2")
        .replace(b"Max-Forwards", f"Authorization: {creds}\r\nMax-Forwards".encode()),
        PEER,
        1.0,
    )
    assert statuses(events) == [403]
    # "off": nobody is challenged.
    ua = auth_ua(invite_auth="off")
    assert any(isinstance(e, CallIncoming) for e in ua.receive(request(body=OFFER), PEER, 0.0))


def test_register_without_registrar_is_405() -> None:
    ua, _ = make_ua()
    resp = sent(ua.receive(register_req(1), PEER, 0.0))[0]
    assert isinstance(resp, Response) and resp.status == 405
    assert "REGISTER" not in (resp.headers.get("Allow") or "")
