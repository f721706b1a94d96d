"""Tests for mediaserver.sip.sdp: SDP parsing/serialising and offer/answer."""

from __future__ import annotations

import contextlib
import string
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver.sip.offer_answer import SdpSession
from mediaserver.sip.sdp import (
    CODECS,
    MAX_MEDIA_LINES,
    MAX_SDP_SIZE,
    CodecSpec,
    Connection,
    MediaDescription,
    MediaOffer,
    NegotiationError,
    Origin,
    RtpMap,
    SdpError,
    SessionDescription,
    Timing,
    codec,
)

SIPP_OFFER = (
    "v=0\r\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 6000 RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
)

BARESIP_OFFER = (
    "v=0\r\n"
    "o=- 1497361935 1803297463 IN IP4 192.168.1.10\r\n"
    "s=-\r\n"
    "c=IN IP4 192.168.1.10\r\n"
    "t=0 0\r\n"
    "m=audio 10226 RTP/AVP 96 9 0 8 101\r\n"
    "b=AS:128\r\n"
    "a=rtpmap:96 opus/48000/2\r\n"
    "a=fmtp:96 stereo=1;sprop-stereo=1\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=rtcp-mux\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
    "a=label:1\r\n"
    "a=ssrc:1820386468 cname:b2e2aa4b-a4a7-4f3b-8d1c-0a4c5f3e55a1\r\n"
    "m=video 10228 RTP/AVP 100\r\n"
    "b=AS:2048\r\n"
    "a=rtpmap:100 VP8/90000\r\n"
    "a=rtcp-fb:100 nack pli\r\n"
    "a=rtcp-mux\r\n"
    "a=sendrecv\r\n"
)

# Linphone style: LF-only line ends, session-level attributes, several
# telephone-event clock rates, a static PT (18) only described by a=fmtp.
LINPHONE_OFFER = (
    "v=0\n"
    "o=alice 3296 1720 IN IP4 10.0.0.5\n"
    "s=Talk\n"
    "c=IN IP4 10.0.0.5\n"
    "t=0 0\n"
    "a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\n"
    "a=record:off\n"
    "m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100\n"
    "a=rtpmap:96 opus/48000/2\n"
    "a=fmtp:96 useinbandfec=1\n"
    "a=rtpmap:97 speex/16000\n"
    "a=fmtp:97 vbr=on\n"
    "a=rtpmap:98 speex/8000\n"
    "a=fmtp:98 vbr=on\n"
    "a=fmtp:18 annexb=yes\n"
    "a=rtpmap:101 telephone-event/48000\n"
    "a=rtpmap:99 telephone-event/16000\n"
    "a=rtpmap:100 telephone-event/8000\n"
    "a=rtcp-fb:* trr-int 1000\n"
    "a=rtcp-fb:* ccm tmmbr\n"
    "m=video 9078 RTP/AVP 96 97\n"
    "a=rtpmap:96 VP8/90000\n"
    "a=rtpmap:97 H264/90000\n"
    "a=fmtp:97 profile-level-id=42801F\n"
    "a=rtcp-fb:* trr-int 1000\n"
)

PCMU, PCMA, G722, OPUS, DTMF = (
    CODECS["PCMU"],
    CODECS["PCMA"],
    CODECS["G722"],
    CODECS["OPUS"],
    CODECS["TELEPHONE-EVENT"],
)


def make_session(
    codecs: list[CodecSpec] | None = None, *, address: str = "192.0.2.1", port: int = 40000
) -> SdpSession:
    local = MediaOffer(address=address, port=port, codecs=codecs or [PCMU, PCMA, DTMF])
    return SdpSession(local, session_id=1000)


def audio_offer(
    formats: str = "0 8 101",
    *,
    rtpmaps: tuple[str, ...] = ("101 telephone-event/8000",),
    extra: tuple[str, ...] = (),
    connection: str = "198.51.100.7",
    proto: str = "RTP/AVP",
    port: int = 5004,
) -> SessionDescription:
    lines = [
        "v=0",
        "o=peer 1 1 IN IP4 198.51.100.7",
        "s=-",
        f"c=IN IP4 {connection}",
        "t=0 0",
        f"m=audio {port} {proto} {formats}",
        *(f"a=rtpmap:{r}" for r in rtpmaps),
        *extra,
    ]
    return SessionDescription.parse("\r\n".join(lines) + "\r\n")


def body_lines(desc: SessionDescription) -> list[str]:
    return desc.serialise().decode().split("\r\n")


# --------------------------------------------------------------------------
# Codec registry
# --------------------------------------------------------------------------


def test_codec_registry() -> None:
    assert codec("pcmu") == CodecSpec("PCMU", 8000, static_pt=0)
    assert codec("PCMA").static_pt == 8
    assert codec("g722") == CodecSpec("G722", 8000, static_pt=9)
    assert codec("Opus").clock_rate == 48000
    assert codec("opus").channels == 2
    assert codec("telephone-event").fmtp == "0-16"
    assert codec("L16").static_pt is None
    for key, spec in CODECS.items():
        assert key == spec.name.upper()


def test_unknown_codec_raises_key_error_with_message() -> None:
    with pytest.raises(KeyError, match="unknown codec 'AMR'"):
        codec("AMR")


# --------------------------------------------------------------------------
# Parsing and serialising
# --------------------------------------------------------------------------


def test_parse_sipp_offer() -> None:
    desc = SessionDescription.parse(SIPP_OFFER.encode())
    assert desc.version == 0
    assert desc.origin == Origin("user1", 53655765, 2353687637, "IN", "IP4", "127.0.0.1")
    assert desc.session_name == "-"
    assert desc.connection == Connection("127.0.0.1", "IP4")
    assert desc.timing == [Timing(0, 0)]
    [audio] = desc.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio",
        6000,
        "RTP/AVP",
        ["0"],
    )
    assert audio.attributes == [("rtpmap", "0 PCMU/8000")]
    assert audio.rtpmaps() == {0: RtpMap(0, "PCMU", 8000)}
    assert audio.direction(desc) == "sendrecv"
    assert audio.ptime() is None
    assert not audio.rtcp_mux()
    assert desc.serialise() == SIPP_OFFER.encode()


def test_parse_baresip_offer_round_trips_byte_for_byte() -> None:
    desc = SessionDescription.parse(BARESIP_OFFER)
    audio, video = desc.media
    assert list(audio.rtpmaps()) == [96, 9, 0, 8, 101]
    assert audio.rtpmaps()[96] == RtpMap(96, "opus", 48000, 2, "stereo=1;sprop-stereo=1")
    assert audio.rtpmaps()[101].fmtp == "0-15"
    assert audio.extra_lines == [("b", "AS:128")]
    assert audio.rtcp_mux()
    assert audio.ptime() == 20
    assert audio.attribute("ssrc") == "1820386468 cname:b2e2aa4b-a4a7-4f3b-8d1c-0a4c5f3e55a1"
    assert video.media == "video"
    assert video.rtpmaps() == {100: RtpMap(100, "VP8", 90000)}
    assert desc.serialise() == BARESIP_OFFER.encode()


def test_parse_linphone_offer_lf_only() -> None:
    desc = SessionDescription.parse(LINPHONE_OFFER.encode())
    assert desc.session_name == "Talk"
    assert desc.attributes[1] == ("record", "off")
    assert desc.attributes[0][1] is not None
    assert desc.attributes[0][1].startswith("rcvr-rtt")
    audio = desc.media[0]
    maps = audio.rtpmaps()
    assert maps[18] == RtpMap(18, "G729", 8000, 1, "annexb=yes")
    assert maps[0] == RtpMap(0, "PCMU", 8000)
    assert [m.clock_rate for m in maps.values() if m.encoding == "telephone-event"] == [
        48000,
        16000,
        8000,
    ]
    assert desc.serialise() == LINPHONE_OFFER.replace("\n", "\r\n").encode()


def test_static_payload_types_without_rtpmap() -> None:
    desc = audio_offer("0 8 9 3 18 13", rtpmaps=())
    maps = desc.media[0].rtpmaps()
    assert [(m.payload_type, m.encoding, m.clock_rate) for m in maps.values()] == [
        (0, "PCMU", 8000),
        (8, "PCMA", 8000),
        (9, "G722", 8000),
        (3, "GSM", 8000),
        (18, "G729", 8000),
        (13, "CN", 8000),
    ]


def test_rtpmaps_skips_unknown_dynamic_and_non_rtp_formats() -> None:
    desc = audio_offer("96 0 abc", rtpmaps=())
    assert list(desc.media[0].rtpmaps()) == [0]
    bfcp = MediaDescription("application", 5070, "UDP/BFCP", ["*"])
    assert bfcp.rtpmaps() == {}


def test_rtpmap_overrides_static_table() -> None:
    desc = audio_offer("0", rtpmaps=("0 pcmu/8000",))
    assert desc.media[0].rtpmaps()[0].encoding == "pcmu"


def test_malformed_rtpmap_is_ignored() -> None:
    desc = audio_offer("96 0", rtpmaps=("96 opus", "0 PCMU/8000"))
    assert list(desc.media[0].rtpmaps()) == [0]


def test_tolerates_trailing_whitespace_blank_lines_and_lone_cr() -> None:
    text = SIPP_OFFER.replace("\r\n", "  \r\n") + "\r\n\r\n"
    assert SessionDescription.parse(text) == SessionDescription.parse(SIPP_OFFER)
    assert SessionDescription.parse(SIPP_OFFER.replace("\r\n", "\r")) == (
        SessionDescription.parse(SIPP_OFFER)
    )


def test_missing_t_line_defaults_to_unbounded() -> None:
    desc = SessionDescription.parse(SIPP_OFFER.replace("t=0 0\r\n", ""))
    assert desc.timing == [Timing(0, 0)]


def test_other_lines_kept_in_rfc_order() -> None:
    text = (
        "v=0\r\n"
        "o=- 1 2 IN IP6 2001:db8::1\r\n"
        "s=Session\r\n"
        "i=info\r\n"
        "u=http://example.com/sdp\r\n"
        "e=alice@example.com\r\n"
        "p=+1 555 0100\r\n"
        "c=IN IP6 2001:db8::1\r\n"
        "b=CT:256\r\n"
        "t=3034423619 3042462419\r\n"
        "r=604800 3600 0 90000\r\n"
        "z=2882844526 -1h 2898848070 0\r\n"
        "k=prompt\r\n"
        "a=recvonly\r\n"
        "m=audio 49170/2 RTP/AVP 0\r\n"
        "i=audio stream\r\n"
        "c=IN IP6 2001:db8::2\r\n"
        "b=AS:64\r\n"
        "k=prompt\r\n"
        "a=sendonly\r\n"
    )
    desc = SessionDescription.parse(text)
    assert desc.connection == Connection("2001:db8::1", "IP6")
    assert desc.timing == [Timing(3034423619, 3042462419, ["604800 3600 0 90000"])]
    assert [letter for letter, _ in desc.extra_lines] == list("iuepbzk")
    media = desc.media[0]
    assert media.port == 49170
    assert media.port_count == 2
    assert media.connection == "2001:db8::2"
    assert media.connection_addrtype == "IP6"
    assert media.extra_lines == [("i", "audio stream"), ("b", "AS:64"), ("k", "prompt")]
    assert desc.direction() == "recvonly"
    assert media.direction(desc) == "sendonly"
    assert desc.serialise() == text.encode()


def test_out_of_order_lines_are_normalised_stably() -> None:
    text = (
        "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nb=AS:1\r\ni=late info\r\n"
        "c=IN IP4 192.0.2.1\r\nx=unknown\r\nm=audio 1 RTP/AVP 0\r\nb=AS:2\r\ni=m info\r\n"
    )
    first = SessionDescription.parse(text)
    again = SessionDescription.parse(first.serialise())
    assert again == first
    assert again.serialise() == first.serialise()
    lines = body_lines(first)
    assert lines.index("i=late info") < lines.index("c=IN IP4 192.0.2.1") < lines.index("b=AS:1")
    assert lines.index("x=unknown") < lines.index("m=audio 1 RTP/AVP 0")


def test_duplicate_connection_lines_are_kept() -> None:
    text = SIPP_OFFER + "c=IN IP4 233.252.0.1/127\r\nc=IN IP4 233.252.0.2/127\r\n"
    desc = SessionDescription.parse(text)
    assert desc.media[0].connection == "233.252.0.1/127"
    assert desc.media[0].extra_lines == [("c", "IN IP4 233.252.0.2/127")]
    assert SessionDescription.parse(desc.serialise()) == desc


def test_non_utf8_bytes_survive_round_trip() -> None:
    raw = SIPP_OFFER.encode().replace(b"s=-", b"s=caf\xe9")
    assert SessionDescription.parse(raw).serialise() == raw


def test_media_address_falls_back_to_session_connection() -> None:
    desc = SessionDescription.parse(SIPP_OFFER + "m=video 0 RTP/AVP 31\r\nc=IN IP4 10.1.1.1\r\n")
    audio, video = desc.media
    assert desc.media_address(audio) == "127.0.0.1"
    assert desc.media_address(video) == "10.1.1.1"


def test_sdp_without_media_is_valid() -> None:
    text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n"
    desc = SessionDescription.parse(text)
    assert desc.media == []
    assert desc.serialise() == text.encode()


def test_ptime_parsing() -> None:
    assert audio_offer(extra=("a=ptime:30",)).media[0].ptime() == 30
    assert audio_offer(extra=("a=ptime:20.0",)).media[0].ptime() == 20
    assert audio_offer(extra=("a=ptime:abc",)).media[0].ptime() is None
    assert audio_offer(extra=("a=ptime:0",)).media[0].ptime() is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("\r\n\r\n", "empty"),
        ("garbage", "not a <type>=<value>"),
        ("o=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n", "start with a v="),
        ("v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n", "version"),
        ("v=0\r\ns=-\r\nt=0 0\r\n", "missing o="),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nt=0 0\r\n", "missing s="),
        ("v=0\r\no=- 1 1 IN IP4\r\ns=-\r\n", "6 fields"),
        ("v=0\r\no=- x 1 IN IP4 1.2.3.4\r\ns=-\r\n", "session id"),
        ("v=0\r\no=- 1 -1 IN IP4 1.2.3.4\r\ns=-\r\n", "session version"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n", "duplicate o="),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\ns=x\r\n", "duplicate s="),
        ("v=0\r\nv=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n", "duplicate v="),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4\r\n", "c= line needs 3"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=XX IP4 1.2.3.4\r\n", "network type"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0\r\n", "t= line needs 2"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=now 0\r\n", "t= start"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nr=1 2 3\r\n", "r= line without"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio\r\n", "m= line needs"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 6000\r\n", "m= line needs"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio abc RTP/AVP 0\r\n", "m= port"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio -5 RTP/AVP 0\r\n", "m= port"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 70000 RTP/AVP 0\r\n", "out of range"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 5/0 RTP/AVP 0\r\n", "port count"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 5/x RTP/AVP 0\r\n", "port count"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nm=audio 5 RTP/AVP 0\r\nt=0 0\r\n", "media"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\na=\r\n", "attribute name"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nA=x\r\n", "not a <type>=<value>"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nab=x\r\n", "not a <type>=<value>"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\x00\r\n", "NUL"),
        ("v=0\r\no=- " + "9" * 5000 + " 1 IN IP4 1.2.3.4\r\ns=-\r\n", "too long"),
    ],
)
def test_malformed_sdp_raises(text: str, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        SessionDescription.parse(text)
    with pytest.raises(SdpError):
        SessionDescription.parse(text.encode())


def test_sdp_error_is_value_error() -> None:
    assert issubclass(SdpError, ValueError)
    assert not issubclass(NegotiationError, ValueError)


def test_size_limit() -> None:
    padding = "a=x-pad:" + "p" * 1000 + "\r\n"
    big = SIPP_OFFER + padding * (MAX_SDP_SIZE // len(padding) + 1)
    with pytest.raises(SdpError, match="larger than"):
        SessionDescription.parse(big.encode())
    with pytest.raises(SdpError, match="larger than"):
        SessionDescription.parse(big)
    # Multi-byte characters count in bytes, not characters.
    wide = SIPP_OFFER + "i=" + "\u00e9" * (MAX_SDP_SIZE // 2) + "\r\n"
    assert len(wide) < MAX_SDP_SIZE
    with pytest.raises(SdpError, match="larger than"):
        SessionDescription.parse(wide)
    # Just below the limit is fine.
    fill = MAX_SDP_SIZE - len(SIPP_OFFER) - len("a=x:\r\n")
    SessionDescription.parse(SIPP_OFFER + "a=x:" + "y" * fill + "\r\n")


def test_media_line_limit() -> None:
    ok = SIPP_OFFER + "m=audio 0 RTP/AVP 0\r\n" * (MAX_MEDIA_LINES - 1)
    assert len(SessionDescription.parse(ok).media) == MAX_MEDIA_LINES
    with pytest.raises(SdpError, match="m= lines"):
        SessionDescription.parse(ok + "m=audio 0 RTP/AVP 0\r\n")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: setattr(d, "session_name", "bad\r\nm=audio 1 RTP/AVP 0"),
        lambda d: d.attributes.append(("x\n", None)),
        lambda d: d.attributes.append(("a:b", None)),
        lambda d: d.attributes.append(("", "v")),
        lambda d: d.media[0].formats.append("0 8"),
        lambda d: d.media[0].formats.append(""),
        lambda d: setattr(d.media[0], "port", 70000),
        lambda d: setattr(d.media[0], "connection", "1.2.3.4\r\n"),
        lambda d: setattr(d.origin, "address", ""),
        lambda d: setattr(d.origin, "username", ""),
        lambda d: d.extra_lines.append(("m", "audio 1 RTP/AVP 0")),
        lambda d: d.extra_lines.append(("bb", "x")),
        lambda d: d.media[0].extra_lines.append(("a", "x")),
        lambda d: setattr(d, "session_name", "\udc80\ud800"),
    ],
)
def test_serialise_refuses_fields_that_would_not_round_trip(
    mutate: Callable[[SessionDescription], object],
) -> None:
    desc = SessionDescription.parse(SIPP_OFFER)
    mutate(desc)
    with pytest.raises(SdpError):
        desc.serialise()


# --------------------------------------------------------------------------
# Answering offers
# --------------------------------------------------------------------------


def test_answer_sipp_offer() -> None:
    session = make_session()
    answer, media = session.answer(SessionDescription.parse(SIPP_OFFER))
    assert media.codec == RtpMap(0, "PCMU", 8000)
    assert media.dtmf is None
    assert (media.remote_address, media.remote_port) == ("127.0.0.1", 6000)
    assert media.direction == media.remote_direction == "sendrecv"
    assert not media.on_hold
    assert media.ptime == 20
    assert not media.rtcp_mux
    assert body_lines(answer) == [
        "v=0",
        "o=mediaserver 1000 1000 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 40000 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=ptime:20",
        "a=sendrecv",
        "",
    ]


def test_answer_picks_offerers_order_not_ours() -> None:
    session = make_session([PCMU, PCMA, DTMF])
    _, media = session.answer(audio_offer("8 0 101"))
    assert media.codec.payload_type == 8
    _, media = session.answer(audio_offer("0 8 101"))
    assert media.codec.payload_type == 0


def test_answer_baresip_offer() -> None:
    session = make_session([OPUS, G722, PCMU, PCMA, DTMF])
    answer, media = session.answer(SessionDescription.parse(BARESIP_OFFER))
    assert media.codec == RtpMap(96, "opus", 48000, 2, "stereo=1;sprop-stereo=1")
    # telephone-event is only offered at 8000, opus runs at 48000.
    assert media.dtmf is None
    assert media.rtcp_mux
    audio, video = answer.media
    assert audio.formats == ["96"]
    assert audio.attributes == [
        ("rtpmap", "96 opus/48000/2"),
        ("ptime", "20"),
        ("rtcp-mux", None),
        ("sendrecv", None),
    ]
    assert (video.port, video.proto, video.formats, video.attributes) == (
        0,
        "RTP/AVP",
        ["100"],
        [],
    )


def test_answer_baresip_offer_with_narrowband_codecs_gets_dtmf() -> None:
    session = make_session([PCMA, PCMU, DTMF])
    answer, media = session.answer(SessionDescription.parse(BARESIP_OFFER))
    # Offerer's order is 96 9 0 8: PCMU (0) comes before PCMA (8).
    assert media.codec == RtpMap(0, "PCMU", 8000)
    assert media.dtmf == RtpMap(101, "telephone-event", 8000, 1, "0-15")
    audio = answer.media[0]
    assert audio.formats == ["0", "101"]
    assert ("fmtp", "101 0-15") in audio.attributes
    assert audio.rtcp_mux()


def test_answer_linphone_offer_matches_dtmf_clock_rate() -> None:
    narrow = make_session([PCMU, PCMA, DTMF])
    answer, media = narrow.answer(SessionDescription.parse(LINPHONE_OFFER))
    assert media.codec.payload_type == 0
    assert media.dtmf == RtpMap(100, "telephone-event", 8000)
    assert answer.media[0].formats == ["0", "100"]
    assert answer.media[0].attributes[:4] == [
        ("rtpmap", "0 PCMU/8000"),
        ("rtpmap", "100 telephone-event/8000"),
        ("fmtp", "100 0-16"),
        ("ptime", "20"),
    ]
    assert answer.media[1].port == 0
    assert answer.media[1].media == "video"

    wide = make_session([OPUS, PCMU, DTMF])
    answer, media = wide.answer(SessionDescription.parse(LINPHONE_OFFER))
    assert media.codec == RtpMap(96, "opus", 48000, 2, "useinbandfec=1")
    assert media.dtmf is not None
    assert media.dtmf.payload_type == 101
    assert media.dtmf.clock_rate == 48000
    assert answer.media[0].formats == ["96", "101"]


def test_dynamic_payload_type_is_echoed() -> None:
    session = make_session([OPUS, DTMF])
    answer, media = session.answer(
        audio_offer("111 126", rtpmaps=("111 OPUS/48000/2", "126 telephone-event/48000"))
    )
    assert media.codec.payload_type == 111
    assert media.dtmf is not None
    assert answer.media[0].formats == ["111", "126"]
    assert answer.media[0].attribute("rtpmap") == "111 OPUS/48000/2"


def test_codec_matching_checks_clock_rate_and_channels() -> None:
    session = make_session([OPUS, PCMU])
    _, media = session.answer(audio_offer("96 97 0", rtpmaps=("96 opus/48000", "97 PCMU/16000")))
    assert media.codec.payload_type == 0


def test_dtmf_not_negotiated_when_we_do_not_support_it() -> None:
    session = make_session([PCMU])
    answer, media = session.answer(audio_offer("0 101"))
    assert media.dtmf is None
    assert answer.media[0].formats == ["0"]


def test_only_unsupported_codec_raises_negotiation_error() -> None:
    session = make_session()
    with pytest.raises(NegotiationError):
        session.answer(audio_offer("18", rtpmaps=()))
    with pytest.raises(NegotiationError):
        # telephone-event alone is not an audio codec.
        session.answer(audio_offer("101"))


def test_no_media_raises_negotiation_error() -> None:
    desc = SessionDescription.parse("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n")
    with pytest.raises(NegotiationError):
        make_session().answer(desc)


@pytest.mark.parametrize("proto", ["RTP/SAVP", "UDP/TLS/RTP/SAVPF", "udp"])
def test_unsupported_proto_rejected(proto: str) -> None:
    with pytest.raises(NegotiationError):
        make_session().answer(audio_offer(proto=proto))


def test_avpf_is_accepted_and_echoed() -> None:
    answer, _ = make_session().answer(audio_offer(proto="RTP/AVPF"))
    assert answer.media[0].proto == "RTP/AVPF"


def test_only_first_acceptable_audio_stream_is_accepted() -> None:
    text = (
        "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"
        "m=video 5000 RTP/AVP 31\r\n"
        "m=audio 0 RTP/AVP 0\r\n"
        "m=audio 5002 RTP/SAVP 0\r\n"
        "m=audio 5004 RTP/AVP 18\r\n"
        "m=audio 5006 RTP/AVP 8\r\n"
        "c=IN IP4 203.0.113.9\r\n"
        "m=audio 5008 RTP/AVP 0\r\n"
        "m=application 5010 UDP/BFCP *\r\n"
        "m=video 0 RTP/AVP\r\n"
    )
    answer, media = make_session().answer(SessionDescription.parse(text))
    assert (media.remote_address, media.remote_port) == ("203.0.113.9", 5006)
    assert media.codec.payload_type == 8
    assert [(m.media, m.port, m.proto, m.formats) for m in answer.media] == [
        ("video", 0, "RTP/AVP", ["31"]),
        ("audio", 0, "RTP/AVP", ["0"]),
        ("audio", 0, "RTP/SAVP", ["0"]),
        ("audio", 0, "RTP/AVP", ["18"]),
        ("audio", 40000, "RTP/AVP", ["8"]),
        ("audio", 0, "RTP/AVP", ["0"]),
        ("application", 0, "UDP/BFCP", ["*"]),
        ("video", 0, "RTP/AVP", ["0"]),
    ]
    assert SessionDescription.parse(answer.serialise()) == answer


def test_answer_without_connection_address_is_malformed() -> None:
    text = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0\r\n"
    with pytest.raises(SdpError, match="connection"):
        make_session().answer(SessionDescription.parse(text))


DIRECTION_CASES = [
    # (offer direction, our local direction, our answer direction)
    ("sendrecv", "sendrecv", "sendrecv"),
    ("sendrecv", "sendonly", "sendonly"),
    ("sendrecv", "recvonly", "recvonly"),
    ("sendrecv", "inactive", "inactive"),
    ("sendonly", "sendrecv", "recvonly"),
    ("sendonly", "recvonly", "recvonly"),
    ("sendonly", "sendonly", "inactive"),
    ("sendonly", "inactive", "inactive"),
    ("recvonly", "sendrecv", "sendonly"),
    ("recvonly", "sendonly", "sendonly"),
    ("recvonly", "recvonly", "inactive"),
    ("recvonly", "inactive", "inactive"),
    ("inactive", "sendrecv", "inactive"),
    ("inactive", "sendonly", "inactive"),
    ("inactive", "recvonly", "inactive"),
    ("inactive", "inactive", "inactive"),
]


@pytest.mark.parametrize(("offered", "local", "expected"), DIRECTION_CASES)
def test_direction_mapping(offered: str, local: str, expected: str) -> None:
    answer, media = make_session().answer(
        audio_offer(extra=(f"a={offered}",)), local_direction=local
    )
    assert media.direction == expected
    assert media.remote_direction == offered
    assert media.on_hold == (offered in ("sendonly", "inactive"))
    assert answer.media[0].direction() == expected
    assert answer.media[0].attributes[-1] == (expected, None)


def test_session_level_direction_applies_to_media() -> None:
    text = SIPP_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n")
    _, media = make_session().answer(SessionDescription.parse(text))
    assert media.remote_direction == "sendonly"
    assert media.direction == "recvonly"
    assert media.on_hold


def test_media_level_direction_overrides_session_level() -> None:
    text = SIPP_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n") + "a=sendrecv\r\n"
    _, media = make_session().answer(SessionDescription.parse(text))
    assert media.remote_direction == "sendrecv"
    assert not media.on_hold


def test_rfc2543_hold_with_zero_address() -> None:
    answer, media = make_session().answer(audio_offer(connection="0.0.0.0"))
    assert media.on_hold
    assert media.remote_address == "0.0.0.0"
    # The answer follows the direction attribute (none given: sendrecv).
    assert media.direction == "sendrecv"
    assert answer.media[0].direction() == "sendrecv"


def test_invalid_local_direction() -> None:
    with pytest.raises(ValueError, match="direction"):
        make_session().answer(audio_offer(), local_direction="both")
    with pytest.raises(ValueError, match="direction"):
        make_session().offer(local_direction="sideways")


def test_ptime_from_offer_or_default() -> None:
    answer, media = make_session().answer(audio_offer(extra=("a=ptime:30",)))
    assert media.ptime == 30
    assert answer.media[0].ptime() == 30
    answer, media = make_session().answer(audio_offer())
    assert media.ptime == 20
    assert answer.media[0].ptime() == 20


def test_ipv6_local_address() -> None:
    session = make_session(address="2001:db8::10")
    answer, _ = session.answer(audio_offer())
    lines = body_lines(answer)
    assert "c=IN IP6 2001:db8::10" in lines
    assert lines[1] == "o=mediaserver 1000 1000 IN IP6 2001:db8::10"


def test_random_session_id() -> None:
    local = MediaOffer("192.0.2.1", 40000, [PCMU])
    ids = {SdpSession(local).session_id for _ in range(20)}
    assert len(ids) > 1
    assert all(0 <= i < 2**31 for i in ids)


# --------------------------------------------------------------------------
# Session version handling
# --------------------------------------------------------------------------


def test_session_version_bumps_only_on_change() -> None:
    assert make_session().version is None
    session = make_session()
    offer = audio_offer()
    first, _ = session.answer(offer)
    assert first.origin.session_version == 1000 == session.version
    # Session refresh: same offer, identical answer, same version.
    second, _ = session.answer(offer)
    assert second.origin.session_version == 1000
    assert second.serialise() == first.serialise()
    # Hold: our direction changes, so the version goes up by exactly one.
    held, _ = session.answer(offer, local_direction="sendonly")
    assert held.origin.session_version == 1001
    # Media layer moves the port.
    session.local.port = 40002
    moved, _ = session.answer(offer, local_direction="sendonly")
    assert moved.origin.session_version == 1002
    assert moved.media[0].port == 40002
    again, _ = session.answer(offer, local_direction="sendonly")
    assert again.origin.session_version == 1002
    # All SDP we send shares one counter, offers included.
    ours = session.offer()
    assert ours.origin.session_version == 1003
    assert session.offer().origin.session_version == 1003
    assert {d.origin.session_id for d in (first, held, moved, ours)} == {1000}


def test_mutating_returned_description_does_not_confuse_versioning() -> None:
    session = make_session()
    offer = audio_offer()
    first, _ = session.answer(offer)
    first.media[0].attributes.clear()
    second, _ = session.answer(offer)
    assert second.origin.session_version == 1000


# --------------------------------------------------------------------------
# Our offers and their answers
# --------------------------------------------------------------------------


def test_offer_lists_all_codecs_with_our_payload_types() -> None:
    session = make_session([OPUS, G722, PCMU, PCMA, codec("L16"), DTMF])
    offer = session.offer()
    assert body_lines(offer) == [
        "v=0",
        "o=mediaserver 1000 1000 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 40000 RTP/AVP 96 9 0 8 97 101",
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:97 L16/16000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
        "",
    ]


def test_offer_dynamic_payload_types_skip_101() -> None:
    specs = [CodecSpec(f"X{i}", 8000) for i in range(6)] + [DTMF]
    offer = make_session(specs).offer(local_direction="sendonly")
    assert offer.media[0].formats == ["96", "97", "98", "99", "100", "102", "101"]
    assert offer.media[0].direction() == "sendonly"


def test_offer_runs_out_of_payload_types() -> None:
    specs = [CodecSpec(f"X{i}", 8000) for i in range(40)]
    with pytest.raises(ValueError, match="payload type"):
        make_session(specs).offer()


def test_offer_answer_round_trip_between_two_sessions() -> None:
    caller = make_session([PCMU, PCMA, DTMF], address="192.0.2.1", port=40000)
    callee = SdpSession(MediaOffer("192.0.2.2", 50000, [PCMA, DTMF]), username="callee")
    offer = SessionDescription.parse(caller.offer().serialise())
    answer_desc, callee_media = callee.answer(offer)
    assert callee_media.codec == RtpMap(8, "PCMA", 8000)
    assert callee_media.dtmf == RtpMap(101, "telephone-event", 8000, 1, "0-16")
    assert (callee_media.remote_address, callee_media.remote_port) == ("192.0.2.1", 40000)

    caller_media = caller.accept_answer(SessionDescription.parse(answer_desc.serialise()))
    assert caller_media.codec == RtpMap(8, "PCMA", 8000)
    assert caller_media.dtmf == RtpMap(101, "telephone-event", 8000, 1, "0-16")
    assert (caller_media.remote_address, caller_media.remote_port) == ("192.0.2.2", 50000)
    assert caller_media.direction == caller_media.remote_direction == "sendrecv"
    assert not caller_media.on_hold
    assert caller_media.ptime == 20
    assert not caller_media.rtcp_mux


def test_accept_answer_hold_directions() -> None:
    caller = make_session()
    caller.offer(local_direction="sendonly")
    answer = audio_offer("0", rtpmaps=(), extra=("a=recvonly",))
    media = caller.accept_answer(answer)
    assert media.direction == "sendonly"
    assert media.remote_direction == "recvonly"
    assert not media.on_hold

    caller.offer()
    media = caller.accept_answer(audio_offer("0", rtpmaps=(), extra=("a=inactive",)))
    assert media.direction == "inactive"
    assert media.on_hold


def test_accept_answer_uses_answer_ptime_and_address() -> None:
    caller = make_session()
    caller.offer()
    answer = audio_offer("0", rtpmaps=(), connection="0.0.0.0", extra=("a=ptime:40",))
    media = caller.accept_answer(answer)
    assert media.ptime == 40
    assert media.on_hold


def test_accept_answer_rejects_codec_we_did_not_offer() -> None:
    caller = make_session([PCMU, DTMF])
    caller.offer()
    with pytest.raises(NegotiationError, match="no codec we offered"):
        caller.accept_answer(audio_offer("8", rtpmaps=()))
    with pytest.raises(NegotiationError, match="no codec we offered"):
        caller.accept_answer(audio_offer("101"))


def test_accept_answer_rejects_bad_structure() -> None:
    caller = make_session()
    caller.offer()
    with pytest.raises(NegotiationError, match="rejected"):
        caller.accept_answer(audio_offer("0", port=0))
    with pytest.raises(NegotiationError, match="m= lines"):
        caller.accept_answer(SessionDescription.parse(BARESIP_OFFER))
    with pytest.raises(NegotiationError, match="changed"):
        caller.accept_answer(audio_offer("0", proto="RTP/SAVP"))
    no_c = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0\r\n"
    with pytest.raises(SdpError):
        caller.accept_answer(SessionDescription.parse(no_c))


def test_accept_answer_without_prior_offer_checks_local_codecs() -> None:
    session = make_session([PCMU])
    assert session.accept_answer(audio_offer("0", rtpmaps=())).codec.payload_type == 0
    with pytest.raises(NegotiationError):
        session.accept_answer(audio_offer("8", rtpmaps=()))


def test_answer_clears_pending_offer() -> None:
    session = make_session([PCMU, PCMA])
    session.offer(local_direction="sendonly")
    session.answer(audio_offer("0"))
    # With no pending offer, accept_answer falls back to sendrecv intent.
    media = session.accept_answer(audio_offer("0", rtpmaps=()))
    assert media.direction == "sendrecv"


# --------------------------------------------------------------------------
# Property-based tests
# --------------------------------------------------------------------------

# Mirrors the serialisation order documented in sdp.py (RFC 4566 section 5).
SESSION_EXTRA_ORDER = "iuepbzk"
MEDIA_EXTRA_ORDER = "ibk"

token = st.text(string.ascii_letters + string.digits + "-._/+*!#$%&'~^", min_size=1, max_size=12)
text_value = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00"), max_size=20
).filter(lambda s: s == s.rstrip(" \t"))
addrtype = st.sampled_from(["IP4", "IP6"])
attribute = st.tuples(token, st.none() | text_value)


def canonical(extras: list[tuple[str, str]], order: str) -> list[tuple[str, str]]:
    return sorted(extras, key=lambda e: order.find(e[0]) if e[0] in order else len(order))


@st.composite
def media_descriptions(draw: st.DrawFn) -> MediaDescription:
    connection = draw(st.none() | st.tuples(token, addrtype))
    extras = draw(st.lists(st.tuples(st.sampled_from("ibkxyfuz"), text_value), max_size=4))
    return MediaDescription(
        media=draw(token),
        port=draw(st.integers(0, 65535)),
        proto=draw(token),
        formats=draw(st.lists(token, max_size=5)),
        connection=None if connection is None else connection[0],
        connection_addrtype=None if connection is None else connection[1],
        attributes=draw(st.lists(attribute, max_size=5)),
        port_count=draw(st.none() | st.integers(1, 8)),
        extra_lines=canonical(extras, MEDIA_EXTRA_ORDER),
    )


@st.composite
def session_descriptions(draw: st.DrawFn) -> SessionDescription:
    extras = draw(st.lists(st.tuples(st.sampled_from("iuepbzkxy"), text_value), max_size=5))
    return SessionDescription(
        version=0,
        origin=Origin(
            username=draw(token),
            session_id=draw(st.integers(0, 2**64)),
            session_version=draw(st.integers(0, 2**64)),
            nettype="IN",
            addrtype=draw(addrtype),
            address=draw(token),
        ),
        session_name=draw(text_value),
        connection=draw(st.none() | st.builds(Connection, token, addrtype)),
        timing=draw(
            st.lists(
                st.builds(
                    Timing,
                    st.integers(0, 2**40),
                    st.integers(0, 2**40),
                    st.lists(text_value, max_size=2),
                ),
                min_size=1,
                max_size=3,
            )
        ),
        attributes=draw(st.lists(attribute, max_size=5)),
        media=draw(st.lists(media_descriptions(), max_size=4)),
        extra_lines=canonical(extras, SESSION_EXTRA_ORDER),
    )


@settings(max_examples=300)
@given(session_descriptions())
def test_round_trip_property(desc: SessionDescription) -> None:
    body = desc.serialise()
    assert body.endswith(b"\r\n")
    parsed = SessionDescription.parse(body)
    assert parsed == desc
    assert parsed.serialise() == body


@given(st.text(max_size=300))
def test_parse_arbitrary_text_only_raises_sdp_error(text: str) -> None:
    try:
        desc = SessionDescription.parse(text)
    except SdpError:
        return
    # Whatever parses must re-serialise and parse back to the same thing.
    try:
        body = desc.serialise()
    except SdpError:
        return  # e.g. lone surrogates in the input text
    assert SessionDescription.parse(body) == desc


@given(
    st.lists(
        st.sampled_from(
            [
                "v=0",
                "o=- 1 2 IN IP4 192.0.2.1",
                "s=-",
                "c=IN IP4 192.0.2.1",
                "t=0 0",
                "m=audio 5004 RTP/AVP 0 8 101",
                "m=video 0 RTP/AVP 31",
                "a=rtpmap:101 telephone-event/8000",
                "a=sendonly",
                "a=rtcp-mux",
                "b=AS:64",
                "i=info",
                "x=unknown",
                "r=1 2 3",
                "garbage",
            ]
        ),
        max_size=15,
    )
)
def test_parse_shuffled_lines_is_stable(lines: list[str]) -> None:
    try:
        desc = SessionDescription.parse("\n".join(["v=0", *lines]))
    except SdpError:
        return
    again = SessionDescription.parse(desc.serialise())
    assert again == desc
    assert again.serialise() == desc.serialise()


@given(st.binary(max_size=300))
def test_parse_arbitrary_bytes_only_raises_sdp_error(data: bytes) -> None:
    with contextlib.suppress(SdpError):
        SessionDescription.parse(data)


@settings(max_examples=50)
@given(
    st.lists(st.sampled_from(["0", "8", "9", "18", "96", "101", "13"]), min_size=1, max_size=6),
    st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"]),
)
def test_answer_is_well_formed(formats: list[str], direction: str) -> None:
    offer = audio_offer(
        " ".join(formats),
        rtpmaps=("96 opus/48000/2", "101 telephone-event/8000"),
        extra=(f"a={direction}",),
    )
    session = make_session([OPUS, PCMA, PCMU, DTMF])
    try:
        answer, media = session.answer(offer)
    except NegotiationError:
        assert not {"0", "8", "96"} & set(formats)
        return
    first_supported = next(f for f in formats if f in ("0", "8", "96"))
    assert media.codec.payload_type == int(first_supported)
    assert len(answer.media) == len(offer.media)
    assert answer.media[0].formats[0] == first_supported
    assert SessionDescription.parse(answer.serialise()) == answer
