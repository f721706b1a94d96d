"""The REGISTER client of a trunk, sans-IO: digest on 401 and 407 (checked by
an independent registrar), refresh before expiry, backoff after failures."""

from __future__ import annotations

import pytest

from mediaserver.sip.auth import Account, Authorized, DigestAuth
from mediaserver.sip.message import Request, Response
from mediaserver.sip.registration import RETRY_MAX, RETRY_MIN, Registration
from mediaserver.sip.trunks import TrunkOutbound

OUT = TrunkOutbound("198.51.100.7", 5060, "udp", "provider.test", "acct", "s3cret", True, 600)
PROVIDER = DigestAuth("provider.test", {"acct": Account("acct", "s3cret")})


def make() -> Registration:
    return Registration("carrier", OUT, ("203.0.113.5", 5060), jitter=lambda: 0.0)


def challenge(req: Request, status: int = 401, now: float = 0.0) -> Response:
    resp = req.response(status, to_tag="p1")
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    for value in PROVIDER.challenges(now):
        resp.headers.add(name, value)
    return resp


def ok(req: Request, expires: int | None = 3600) -> Response:
    resp = req.response(200, to_tag="p1")
    contact = req.headers.get("Contact") or ""
    resp.headers.add("Contact", contact + (f";expires={expires}" if expires else ""))
    return resp


def verified(req: Request, header: str = "Authorization") -> bool:
    result = PROVIDER.check(req.headers.get_all(header), "REGISTER", req.uri, "h", 1.0)
    return result == Authorized("acct")


@pytest.mark.parametrize("status", [401, 407])
def test_registers_with_digest_and_refreshes_before_expiry(status: int) -> None:
    reg = make()
    assert reg.due(0.0)
    first = reg.request()
    assert first.uri == "sip:provider.test" and first.headers.get("Expires") == "600"
    assert first.to.uri.user == "acct" and "203.0.113.5:5060" in (
        first.headers.get("Contact") or ""
    )
    assert reg.state == "registering" and not reg.up and not reg.due(0.0)
    again, change = reg.on_response(challenge(first, status), 0.1)
    assert change is None and again is not None
    header = "Authorization" if status == 401 else "Proxy-Authorization"
    assert verified(again, header)
    # Section 10.2.4: same Call-ID and From tag, CSeq up by one.
    assert again.call_id == first.call_id and again.from_.tag == first.from_.tag
    assert again.cseq.seq == first.cseq.seq + 1
    again2, change = reg.on_response(ok(again), 0.2)
    assert again2 is None and change is not None and change.state == "registered"
    assert reg.up and reg.expires_at == pytest.approx(3600.2)
    # The refresh comes at 85% of the granted hour, with the same Call-ID.
    assert not reg.due(3000.0) and reg.due(3060.3)
    refresh = reg.request()
    assert refresh.call_id == first.call_id and refresh.cseq.seq == again.cseq.seq + 1
    assert reg.up  # still up while the refresh is under way
    _, change = reg.on_response(ok(refresh, expires=None), 3061.0)
    assert change is None and reg.expires_at == pytest.approx(3661.0)  # the Expires we asked


def test_wrong_credentials_fail_once_not_forever_and_back_off() -> None:
    reg = make()
    first = reg.request()
    again, _ = reg.on_response(challenge(first), 0.1)
    assert again is not None
    # The same nonce again: our answer was refused.
    resp = again.response(401, to_tag="p1")
    nonce_challenge = challenge(first).headers.get("WWW-Authenticate") or ""
    resp.headers.add("WWW-Authenticate", nonce_challenge)
    retry, change = reg.on_response(resp, 0.2)
    # A fresh nonce (the challenge above is new) is answered; the same one is not.
    assert retry is not None and change is None
    resp = retry.response(401, to_tag="p1")
    resp.headers.add("WWW-Authenticate", nonce_challenge)
    retry, change = reg.on_response(resp, 0.3)
    assert retry is None and change is not None
    assert change.state == "failed" and change.status == 401 and not reg.up
    assert change.retry_at == pytest.approx(0.3 + RETRY_MIN)


def test_refusals_and_silence_back_off_doubling_up_to_the_ceiling() -> None:
    reg = make()
    now, waits = 0.0, []
    for attempt in range(12):
        req = reg.request()
        if attempt % 2:
            change = reg.on_timeout(now)
        else:
            _, change = reg.on_response(req.response(403, to_tag="p"), now)
        assert change is not None and change.state == "failed"
        assert change.status == (408 if attempt % 2 else 403)
        assert change.retry_at is not None
        waits.append(change.retry_at - now)
        now = change.retry_at
        assert reg.due(now)
    assert waits[:4] == [RETRY_MIN, 2 * RETRY_MIN, 4 * RETRY_MIN, 8 * RETRY_MIN]
    assert waits[-1] == RETRY_MAX and reg.failures_total == 12
    # One success resets the backoff.
    _, change = reg.on_response(ok(reg.request()), now)
    assert change is not None and change.state == "registered" and reg.failures == 0


def test_interval_too_brief_is_retried_with_min_expires() -> None:
    reg = make()
    req = reg.request()
    resp = req.response(423, to_tag="p")
    resp.headers.add("Min-Expires", "1800")
    again, change = reg.on_response(resp, 0.1)
    assert change is None and again is not None and again.headers.get("Expires") == "1800"
    # A Min-Expires that does not help is a failure, not a loop.
    again2, change = reg.on_response(resp, 0.2)
    assert again2 is None and change is not None and change.status == 423


def test_unregister_asks_for_expires_zero_and_ignores_the_answer() -> None:
    reg = make()
    _, _ = reg.on_response(ok(reg.request()), 0.0)
    bye = reg.unregister()
    assert bye.headers.get("Expires") == "0" and reg.state == "unregistered"
    assert reg.on_response(ok(bye), 0.1) == (None, None) and not reg.due(10_000.0)
