"""SDES (RFC 4568): a=crypto parsing and SRTP in offer/answer, sans-IO."""

from __future__ import annotations

import base64

import pytest

from mediaserver.codecs.params import MediaOffer
from mediaserver.sip.calls import CallIncoming
from mediaserver.sip.offer_answer import SdpSession
from mediaserver.sip.sdes import Crypto, CryptoError, parse_crypto
from mediaserver.sip.sdp import NegotiationError, SessionDescription
from tests.sip.test_sdp import DTMF, PCMA, PCMU, audio_offer, body_lines
from tests.sip.test_ua import PEER, SDP, make_ua, request, statuses

# RFC 4568 section 4's example key (without its MKI, which we do not take).
RFC_KEY = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
LINE_80 = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20"
LINE_32 = f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY}"


def session(srtp: str) -> SdpSession:
    return SdpSession(MediaOffer("192.0.2.1", 40000, [PCMU, PCMA, DTMF]), session_id=1, srtp=srtp)


def crypto_lines(desc: SessionDescription) -> list[Crypto]:
    return [parse_crypto(line[len("a=crypto:") :]) for line in body_lines(desc) if "crypto" in line]


def test_the_rfc_example_parses_and_round_trips() -> None:
    crypto = parse_crypto(LINE_80[len("a=crypto:") :])
    assert crypto.tag == 1 and crypto.suite == "AES_CM_128_HMAC_SHA1_80"
    assert crypto.key == base64.b64decode(RFC_KEY) and len(crypto.key) == 30
    assert parse_crypto(crypto.value()) == crypto


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("1 AES_CM_128_HMAC_SHA1_80", "needs a tag"),
        (f"x AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "tag is not a number"),
        (f"1 F8_128_HMAC_SHA1_80 inline:{RFC_KEY}", "unsupported SRTP suite"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:32", "MKI"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|soon", "lifetime"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!", "not base64"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", "3 bytes"),
        (f"1 AES_CM_128_HMAC_SHA1_80 uri:{RFC_KEY}", "not inline"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} UNENCRYPTED_SRTP", "session parameters"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY};inline:{RFC_KEY}", "more than one key"),
    ],
)
def test_a_crypto_line_we_cannot_use_says_why(value: str, why: str) -> None:
    with pytest.raises(CryptoError, match=why):
        parse_crypto(value)


def test_an_srtp_offer_gets_our_own_key_under_the_offered_tag() -> None:
    sdp = session("optional")
    answer, media = sdp.answer(audio_offer(proto="RTP/SAVP", extra=(LINE_32, LINE_80)))
    assert "m=audio 40000 RTP/SAVP 0 101" in body_lines(answer)
    (ours,) = crypto_lines(answer)
    # The offerer's first choice, its tag, and a key of our own.
    assert (ours.tag, ours.suite) == (2, "AES_CM_128_HMAC_SHA1_32")
    assert ours.key != base64.b64decode(RFC_KEY)
    assert media.srtp is not None and media.srtp.local == ours.key
    assert media.srtp.remote == base64.b64decode(RFC_KEY)
    assert "keys hidden" in repr(media.srtp) and RFC_KEY not in repr(media)
    # A re-INVITE is answered with the same key: no re-keying mid-call.
    again, media2 = sdp.answer(audio_offer(proto="RTP/SAVP", extra=(LINE_32,)))
    assert crypto_lines(again) == [ours] and media2.srtp == media.srtp


def test_best_effort_srtp_on_rtp_avp_and_plain_calls_stay_plain() -> None:
    answer, media = session("optional").answer(audio_offer(extra=(LINE_80,)))
    assert "m=audio 40000 RTP/AVP 0 101" in body_lines(answer) and media.srtp is not None
    answer, media = session("optional").answer(audio_offer())
    assert crypto_lines(answer) == [] and media.srtp is None
    # Off: a=crypto on RTP/AVP is ignored, the call is plain.
    answer, media = session("off").answer(audio_offer(extra=(LINE_80,)))
    assert crypto_lines(answer) == [] and media.srtp is None


@pytest.mark.parametrize(
    ("mode", "proto", "extra", "why"),
    [
        ("off", "RTP/SAVP", (LINE_80,), "SRTP is off"),
        ("required", "RTP/AVP", (), "SRTP required"),
        ("optional", "RTP/SAVP", (), "SRTP required: no a=crypto"),
        ("required", "RTP/SAVP", ("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA",), "3 bytes"),
        ("optional", "RTP/SAVP", (f"a=crypto:1 NULL_CIPHER inline:{RFC_KEY}",), "suite"),
    ],
)
def test_an_offer_we_cannot_encrypt_as_asked_is_refused_with_a_reason(
    mode: str, proto: str, extra: tuple[str, ...], why: str
) -> None:
    with pytest.raises(NegotiationError, match=why):
        session(mode).answer(audio_offer(proto=proto, extra=extra))


def test_our_offer_when_srtp_is_required_and_its_answer() -> None:
    sdp = session("required")
    offer = sdp.offer()
    assert "m=audio 40000 RTP/SAVP 0 8 101" in body_lines(offer)
    offered = crypto_lines(offer)
    assert [c.suite for c in offered] == ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]
    theirs = Crypto(2, "AES_CM_128_HMAC_SHA1_32", b"k" * 30)
    answer = audio_offer(proto="RTP/SAVP", extra=(f"a=crypto:{theirs.value()}",))
    media = sdp.accept_answer(answer)
    assert media.srtp is not None
    assert media.srtp.local == offered[1].key and media.srtp.remote == b"k" * 30
    # An answer that drops the crypto, or picks a tag we never offered, is refused.
    with pytest.raises(NegotiationError, match="no a=crypto"):
        sdp.accept_answer(audio_offer(proto="RTP/SAVP"))
    other = Crypto(7, "AES_CM_128_HMAC_SHA1_80", b"k" * 30)
    with pytest.raises(NegotiationError, match="none we offered"):
        sdp.accept_answer(audio_offer(proto="RTP/SAVP", extra=(f"a=crypto:{other.value()}",)))
    # Optional: RTP/AVP with our a=crypto lines; a plain answer is a plain call.
    optional = session("optional")
    assert "m=audio 40000 RTP/AVP 0 8 101" in body_lines(optional.offer())
    assert optional.accept_answer(audio_offer()).srtp is None


def test_the_user_agent_answers_488_to_a_malformed_crypto_and_srtp_per_route() -> None:
    savp = SDP.format(direction="sendrecv").replace("RTP/AVP", "RTP/SAVP")
    bad = savp + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA\r\n"
    ua, media = make_ua(srtp="required")
    events = ua.receive(request(body=bad), PEER, 0.0)
    assert statuses(events) == [488] and media.released == [40000]
    good = savp + LINE_80 + "\r\n"
    events = ua.receive(request(body=good, call_id="c2", branch="z9hG4bK-2"), PEER, 0.1)
    (incoming,) = [e for e in events if isinstance(e, CallIncoming)]
    assert incoming.call.media is not None and incoming.call.media.srtp is not None
    # A route that says off refuses RTP/SAVP even when the server would take it.
    ua, _ = make_ua(srtp="optional", route_srtp={"hold": "off"})
    assert statuses(ua.receive(request(body=good), PEER, 0.0)) == [488]
