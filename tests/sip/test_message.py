"""Parser and serialiser: every header form, limits, and round-trip properties."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver.sip.errors import SipParseError
from mediaserver.sip.headers import Address, Via, canonical_name, parse_address, parse_via
from mediaserver.sip.message import (
    Limits,
    MessageError,
    Request,
    Response,
    StreamFramer,
    parse_message,
)
from mediaserver.sip.uri import Uri, parse_uri

INVITE = (
    b"INVITE sip:hold@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice A" <sip:alice@127.0.0.1:5061>;tag=a1\r\n'
    b"To: <sip:hold@127.0.0.1>\r\n"
    b"Call-ID: c1@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:alice@127.0.0.1:5061>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def test_request_fields() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.ruri.user == "hold" and msg.ruri.port == 5060
    assert msg.from_.display_name == "Alice A" and msg.from_.tag == "a1"
    assert msg.to.tag is None
    assert msg.cseq.seq == 1 and msg.cseq.method == "INVITE"
    assert msg.top_via.branch == "z9hG4bK-1" and msg.top_via.params["rport"] is None
    assert msg.body == b"v=0\n"
    assert msg.content_type == "application/sdp"


def test_compact_names_and_case() -> None:
    data = INVITE.replace(b"Via:", b"v:").replace(b"From:", b"f:").replace(b"To:", b"t:")
    data = data.replace(b"Call-ID:", b"i:").replace(b"Content-Length:", b"l:")
    data = data.replace(b"Contact:", b"m:").replace(b"Content-Type:", b"c:")
    msg = parse_message(data)
    assert msg.call_id == "c1@127.0.0.1"
    assert msg.headers.get("content-length") == "4"
    assert canonical_name("CSEQ") == "CSeq"
    assert canonical_name("x") == "Session-Expires"


def test_multi_value_headers_are_joined() -> None:
    data = INVITE.replace(
        b"Max-Forwards: 70\r\n",
        b"Max-Forwards: 70\r\nVia: SIP/2.0/TCP a.example.com;branch=z9hG4bK2, "
        b"SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK3\r\n",
    )
    vias = parse_message(data).vias
    assert [v.transport for v in vias] == ["UDP", "TCP", "UDP"]
    assert vias[2].host == "[2001:db8::1]" and vias[2].port == 5070


def test_line_folding_and_whitespace() -> None:
    data = INVITE.replace(b"CSeq: 1 INVITE\r\n", b"CSeq: 1\r\n   INVITE\r\n").replace(
        b"Call-ID: c1@127.0.0.1\r\n", b"Call-ID  :   c1@127.0.0.1  \r\n"
    )
    msg = parse_message(data)
    assert msg.cseq.method == "INVITE"
    assert msg.call_id == "c1@127.0.0.1"


def test_quoted_display_name_with_escapes() -> None:
    addr = parse_address(r'"J Rosenberg \\\"" <sip:jdrosen@example.com> ; tag = 98asjd8')
    assert addr.display_name == 'J Rosenberg \\"'
    assert addr.tag == "98asjd8"


def test_addr_spec_params_belong_to_header() -> None:
    addr = parse_address("sip:user@example.com;tag=x1")
    assert addr.tag == "x1" and addr.uri.params == {}
    addr2 = parse_address("<sip:user@example.com;transport=tcp>;tag=x2")
    assert addr2.uri.params == {"transport": "tcp"} and addr2.tag == "x2"


@pytest.mark.parametrize(
    "value",
    [
        '"unterminated <sip:a@b>',
        "Bell, Alexander <sip:a@b>",
        "< sip:a@b >",
        "sip:a@b?Route=x",
        "<sip:a@b>;;tag=1",
        "<sip:a@b",
    ],
)
def test_bad_addresses(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_address(value)


def test_uris() -> None:
    u = parse_uri("sip:alice:secret@[2001:db8::1]:5070;transport=tcp;lr?Subject=hi")
    assert (u.user, u.password, u.host, u.port) == ("alice", "secret", "[2001:db8::1]", 5070)
    assert u.params == {"transport": "tcp", "lr": None} and u.headers == "Subject=hi"
    assert str(u) == "sip:alice:secret@[2001:db8::1]:5070;transport=tcp;lr?Subject=hi"
    assert u.host_port() == ("2001:db8::1", 5070)
    t = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert t.scheme == "tel" and t.user == "+1-201-555-0123"
    s = parse_uri("sips:bob@example.com")
    assert s.scheme == "sips" and s.host_port(5061) == ("example.com", 5061)
    o = parse_uri("mailto:x@example.com")
    assert o.opaque == "x@example.com"
    # semicolons in the user part (RFC 4475 3.1.1.9)
    semi = parse_uri("sip:user;par=u%40example.net@example.com")
    assert semi.user == "user;par=u%40example.net" and semi.host == "example.com"


def test_uri_comparison_decodes_escapes() -> None:
    a = parse_uri("sip:%61lice@atlanta.com;transport=TCP")
    b = parse_uri("sip:alice@AtLanTa.CoM;Transport=tcp")
    assert a.equivalent(b)
    assert not parse_uri("sip:alice@atlanta.com").equivalent(parse_uri("sip:ALICE@atlanta.com"))
    assert not parse_uri("sip:bob@biloxi.com").equivalent(parse_uri("sip:bob@biloxi.com:5060"))


@pytest.mark.parametrize("bad", ["sip:", "sip:a@", "sip:a@b:99999", "sip:a@[::1", "sip:a b@c"])
def test_bad_uris(bad: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(bad)


def test_response_parse_and_build() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    resp = req.response(180, to_tag="t9")
    assert resp.to.tag == "t9" and resp.from_.tag == "a1"
    again = parse_message(resp.encode())
    assert isinstance(again, Response)
    assert again.status == 180 and again.reason == "Ringing"
    assert again.headers.get_list("Via") == req.headers.get_list("Via")
    trying = req.response(100, to_tag="t9")
    assert trying.to.tag is None


def test_encode_sets_content_length() -> None:
    req = parse_message(INVITE)
    req.body = b"abc"
    assert b"Content-Length: 3\r\n" in req.encode()
    assert req.encode().count(b"Content-Length") == 1


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda d: d.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505),
        (lambda d: d.replace(b"Content-Length: 4", b"Content-Length: 40"), 400),
        (lambda d: d.replace(b"Content-Length: 4", b"Content-Length: -4"), 400),
        (lambda d: d.replace(b"Call-ID: c1@127.0.0.1\r\n", b""), 400),
        (lambda d: d.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), 400),
        (lambda d: d.replace(b"CSeq: 1 INVITE", b"CSeq: 99999999999 INVITE"), 400),
        (lambda d: d.replace(b"Max-Forwards: 70", b"Max-Forwards: 300"), 400),
        (lambda d: d.replace(b"sip:hold@", b"foo:hold@"), 416),
        (lambda d: d.replace(b"INVITE sip", b"INVITE  sip"), 400),
        (lambda d: d.replace(b"To: <", b"To: <sip:x@y>\r\nTo: <"), 400),
        (lambda d: d.replace(b"Max-Forwards: 70\r\n", b"Bad Header\r\n"), 400),
    ],
)
def test_malformed_requests(mutate: object, status: int) -> None:
    assert callable(mutate)
    with pytest.raises(MessageError) as info:
        parse_message(mutate(INVITE))
    assert info.value.status == status
    assert info.value.partial is not None


def test_limits() -> None:
    with pytest.raises(MessageError) as big:
        parse_message(INVITE + b"x" * 70000)
    assert big.value.status == 513
    many = INVITE.replace(b"Max-Forwards: 70\r\n", b"X-A: 1\r\n" * 300)
    with pytest.raises(MessageError, match="too many"):
        parse_message(many)
    with pytest.raises(MessageError, match="too long") as long_line:
        long_header = INVITE.replace(b"Max-Forwards: 70", b"X-Long: " + b"a" * 100)
        parse_message(long_header, limits=Limits(max_line_length=80))
    # the over-long line is left out, the rest still addresses a 400
    partial = long_line.value.partial
    assert partial is not None and "Via" in partial.headers and "Contact" in partial.headers
    body = INVITE.replace(b"Content-Length: 4", b"Content-Length: 4")
    with pytest.raises(MessageError) as body_err:
        parse_message(body, limits=Limits(max_body_size=2))
    assert body_err.value.status == 413


def test_garbage_is_not_answerable() -> None:
    for data in (b"", b"\x00\xff\r\n\r\n", b"hello", b"SIP/2.0 2000 OK\r\n\r\n"):
        with pytest.raises(MessageError) as info:
            parse_message(data)
        # nothing to address an answer to: no partial message, or one without Via
        partial = info.value.partial
        assert partial is None or "Via" not in partial.headers


def test_stream_requires_content_length() -> None:
    with pytest.raises(MessageError):
        parse_message(INVITE.replace(b"Content-Length: 4\r\n", b""), stream=True)


def test_datagram_trailing_octets_ignored() -> None:
    msg = parse_message(INVITE + b"garbage after the body")
    assert msg.body == b"v=0\n"


def test_stream_framer_splits_and_buffers() -> None:
    framer = StreamFramer()
    stream = b"\r\n\r\n" + INVITE + INVITE
    assert framer.feed(stream[:50]) == []
    out = framer.feed(stream[50:])
    assert out == [INVITE, INVITE]
    with pytest.raises(MessageError):
        StreamFramer().feed(INVITE.replace(b"Content-Length: 4", b"Content-Length: x"))


# -- property tests ---------------------------------------------------------------

token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-.!%*_+`'~", min_size=1, max_size=12
)
host = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9]{0,6}){0,2}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
port = st.one_of(st.none(), st.integers(1, 65535))
uri_params = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True),
    st.one_of(st.none(), st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)),
    max_size=3,
)
sip_uris = st.builds(
    Uri,
    scheme=st.sampled_from(["sip", "sips"]),
    user=st.one_of(st.none(), st.from_regex(r"[a-zA-Z0-9+_.!~*'()-]{1,12}", fullmatch=True)),
    host=host,
    port=port,
    params=uri_params,
)
addresses = st.builds(
    Address,
    uri=sip_uris,
    display_name=st.one_of(
        st.none(),
        st.text(
            st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"),
            max_size=12,
        ),
    ),
    params=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True),
        st.one_of(st.none(), token),
        max_size=3,
    ),
)


@given(sip_uris)
def test_uri_round_trip(uri: Uri) -> None:
    assert parse_uri(str(uri)) == uri


@given(addresses)
def test_address_round_trip(addr: Address) -> None:
    parsed = parse_address(str(addr))
    assert parsed.uri == addr.uri
    assert parsed.params == {k.lower(): v for k, v in addr.params.items()}
    assert (parsed.display_name or None) == (
        addr.display_name.strip() or None if addr.display_name else None
    ) or (parsed.display_name == addr.display_name)


@given(
    st.builds(
        Via,
        transport=st.sampled_from(["UDP", "TCP", "TLS", "SCTP"]),
        host=host,
        port=port,
        params=st.fixed_dictionaries({"branch": token.map(lambda t: "z9hG4bK" + t)}),
    )
)
def test_via_round_trip(via: Via) -> None:
    assert parse_via(str(via)) == via


@settings(max_examples=60)
@given(
    method=st.sampled_from(["INVITE", "OPTIONS", "BYE", "INFO", "UPDATE"]),
    from_=addresses,
    to=addresses,
    call_id=st.from_regex(r"[a-zA-Z0-9.@-]{1,30}", fullmatch=True),
    seq=st.integers(0, 2**31 - 1),
    body=st.binary(max_size=200),
    compact=st.booleans(),
)
def test_request_round_trip(
    method: str, from_: Address, to: Address, call_id: str, seq: int, body: bytes, compact: bool
) -> None:
    req = Request(method=method, uri="sip:svc@127.0.0.1:5060")
    req.headers.add("v" if compact else "Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx")
    req.headers.add("f" if compact else "From", str(from_))
    req.headers.add("t" if compact else "To", str(to))
    req.headers.add("i" if compact else "Call-ID", call_id)
    req.headers.add("CSeq", f"{seq} {method}")
    req.headers.add("Max-Forwards", "70")
    req.body = body
    parsed = parse_message(req.encode())
    assert isinstance(parsed, Request)
    assert parsed.method == method and parsed.body == body
    assert parsed.from_.uri == from_.uri and parsed.to.uri == to.uri
    assert parsed.call_id == call_id and parsed.cseq.seq == seq
    assert parsed.encode() == req.encode()


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_parser_never_raises_anything_but_message_error(data: bytes) -> None:
    with contextlib.suppress(MessageError):
        parse_message(INVITE[:120] + data)
