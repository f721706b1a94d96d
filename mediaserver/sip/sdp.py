"""Sans-IO SDP (RFC 4566) and the offer/answer model (RFC 3264).

This module only turns bytes into dataclasses and back, and decides what to
answer; it never touches sockets. The media layer hands us a `MediaOffer`
(our address, port and codecs) and gets back a `NegotiatedMedia` describing
where to send RTP, with which payload types, and in which direction.

Parsing is tolerant where real-world user agents are sloppy (LF-only line
ends, trailing whitespace, lines out of the RFC order, lone CR) and strict
where a mistake would make the description ambiguous (missing v=/o=/s=,
unparsable m=/c=/o=/t= lines). Anything we do not model explicitly (i=, u=,
e=, p=, b=, z=, k=, extra c= lines, unknown letters) is kept verbatim so that
`serialise(parse(x))` is stable.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from mediaserver.codecs.params import (
    CODECS,
    DTMF_NAME,
    CodecSpec,
    MediaOffer,
    NegotiatedMedia,
    RtpMap,
    codec,
)

__all__ = [
    "ACCEPTED_PROTOS",
    "CODECS",
    "DIRECTIONS",
    "MAX_MEDIA_LINES",
    "MAX_SDP_SIZE",
    "SECURE_PROTOS",
    "CodecSpec",
    "Connection",
    "MediaDescription",
    "MediaOffer",
    "NegotiatedMedia",
    "NegotiationError",
    "Origin",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "Timing",
    "address_type",
    "codec",
    "is_dtmf",
]

MAX_SDP_SIZE = 64 * 1024
"""Largest SDP body (in bytes) we are willing to parse."""

MAX_MEDIA_LINES = 64
"""Largest number of m= lines we are willing to parse."""

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
"""The RFC 3264 direction attributes."""

# Protocols we can answer: plain RTP, and SRTP keyed by SDES (`sip/sdes.py`).
ACCEPTED_PROTOS = frozenset({"RTP/AVP", "RTP/AVPF"})
SECURE_PROTOS = frozenset({"RTP/SAVP", "RTP/SAVPF"})

# RFC 3551 static payload types, used when an m= line lists a static PT
# without an a=rtpmap line (which RFC 4566 allows).
_STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, 1),
    26: ("JPEG", 90000, 1),
    28: ("nv", 90000, 1),
    31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}

# Canonical position of the lines we keep verbatim (RFC 4566 section 5 order);
# letters not listed here go after the a= lines of their section.
_SESSION_EXTRA_ORDER = "iuepcbzk"
_MEDIA_EXTRA_ORDER = "icbk"
# Letters that have a dedicated field and therefore cannot be "extra" lines.
_STRUCTURAL_LETTERS = frozenset("vostrma")

_UINT_RE = re.compile(r"[0-9]+")
_FORBIDDEN_CHARS = ("\r", "\n", "\x00")


class SdpError(ValueError):
    """Malformed SDP (caller answers 400)."""


class NegotiationError(Exception):
    """No acceptable media in the offer (caller answers 488)."""


# --------------------------------------------------------------------------
# Codecs (their specs live in mediaserver.codecs.params)
# --------------------------------------------------------------------------


def is_dtmf(name: str) -> bool:
    return name.lower() == DTMF_NAME


# --------------------------------------------------------------------------
# SDP data model
# --------------------------------------------------------------------------


@dataclass
class Origin:
    """The o= line.

    Attributes:
        username: user name of the originator ("-" when none).
        session_id: numeric session id, fixed for the lifetime of a session.
        session_version: bumped each time the description changes.
        nettype: network type, "IN".
        addrtype: "IP4" or "IP6".
        address: address of the originating host.
    """

    username: str = "-"
    session_id: int = 0
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"


@dataclass
class Connection:
    """A session-level c= line (network type is always "IN").

    Attributes:
        address: connection address (may carry "/ttl" for multicast).
        addrtype: "IP4" or "IP6".
    """

    address: str
    addrtype: str = "IP4"


@dataclass
class Timing:
    """A t= line and the r= lines that follow it.

    Attributes:
        start: start time (NTP seconds, 0 for unbounded).
        stop: stop time (NTP seconds, 0 for unbounded).
        repeats: raw values of the r= lines belonging to this t= line.
    """

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)


@dataclass
class MediaDescription:
    """One m= section.

    Attributes:
        media: media type, e.g. "audio" or "video".
        port: transport port (0 marks a rejected/disabled stream).
        proto: transport protocol, e.g. "RTP/AVP".
        formats: the format list of the m= line, as strings.
        connection: address from a media-level c= line, if any.
        attributes: a= lines in order, as (name, value) with value None for
            property attributes such as "sendrecv".
        port_count: the "/<number of ports>" suffix of the port, if given.
        connection_addrtype: address type of the media-level c= line; None
            means "derive from the address" (IP6 when it contains ':').
        extra_lines: other lines (i=, b=, k=, additional c=, unknown letters)
            as (letter, value), kept so that serialisation round-trips.
    """

    media: str
    port: int
    proto: str
    formats: list[str] = field(default_factory=list)
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    port_count: int | None = None
    connection_addrtype: str | None = None
    extra_lines: list[tuple[str, str]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        """Return the value of the first attribute called `name`.

        Args:
            name: attribute name, matched case-insensitively.

        Returns:
            The value, "" for a property attribute, or None when absent.
        """
        for attr_name, value in self.attributes:
            if attr_name.lower() == name.lower():
                return "" if value is None else value
        return None

    def attributes_named(self, name: str) -> list[str]:
        """The values of every attribute called `name` (case-insensitive), in order."""
        return [v or "" for n, v in self.attributes if n.lower() == name.lower()]

    def has_attribute(self, name: str) -> bool:
        """Tell whether an attribute called `name` is present (case-insensitive)."""
        return any(attr_name.lower() == name.lower() for attr_name, _ in self.attributes)

    def is_rtp(self) -> bool:
        """Tell whether the formats are RTP payload types (proto mentions RTP)."""
        return "RTP/" in self.proto.upper()

    def rtpmaps(self) -> dict[int, RtpMap]:
        """Resolve the payload types of the m= line.

        Static payload types without an a=rtpmap line are resolved from the
        RFC 3551 table; unknown dynamic types and non-numeric formats are
        skipped. The a=fmtp parameters of each type are attached.

        Returns:
            Payload type -> `RtpMap`, in the order of the m= line.
        """
        if not self.is_rtp():
            return {}
        declared: dict[int, RtpMap] = {}
        fmtps: dict[int, str] = {}
        for name, value in self.attributes:
            if value is None:
                continue
            lname = name.lower()
            if lname == "rtpmap":
                rtpmap = _parse_rtpmap(value)
                if rtpmap is not None:
                    declared.setdefault(rtpmap.payload_type, rtpmap)
            elif lname == "fmtp":
                pt_text, _, params = value.strip().partition(" ")
                if _UINT_RE.fullmatch(pt_text) and len(pt_text) <= 3:
                    fmtps.setdefault(int(pt_text), params.strip())
        result: dict[int, RtpMap] = {}
        for fmt in self.formats:
            if not _UINT_RE.fullmatch(fmt) or len(fmt) > 3 or int(fmt) > 127:
                continue
            pt = int(fmt)
            if pt in result:
                continue
            rtpmap = declared.get(pt)
            if rtpmap is None:
                static = _STATIC_PAYLOAD_TYPES.get(pt)
                if static is None:
                    continue
                rtpmap = RtpMap(pt, static[0], static[1], static[2])
            result[pt] = dataclasses.replace(rtpmap, fmtp=fmtps.get(pt))
        return result

    def direction(self, session: SessionDescription | None = None) -> str:
        """Return the stream direction.

        Args:
            session: the enclosing description, consulted when the m= section
                carries no direction attribute.

        Returns:
            "sendrecv", "sendonly", "recvonly" or "inactive" (RFC 3264 says
            sendrecv when nothing is given).
        """
        found = _direction_of(self.attributes)
        if found is None and session is not None:
            found = session.direction()
        return found or "sendrecv"

    def ptime(self) -> int | None:
        """Return the a=ptime value in milliseconds, or None if absent/invalid."""
        value = self.attribute("ptime")
        if not value:
            return None
        try:
            # Some user agents write "20.0"; RFC 4566 allows a decimal here.
            ptime = round(float(value.strip()))
        except (ValueError, OverflowError):
            return None
        return ptime if 0 < ptime <= 10_000 else None

    def rtcp_mux(self) -> bool:
        """Tell whether a=rtcp-mux (RFC 5761) is present."""
        return self.has_attribute("rtcp-mux")


@dataclass
class SessionDescription:
    """A whole SDP body.

    Attributes:
        version: protocol version (v=), always 0.
        origin: the o= line.
        session_name: the s= value ("-" when there is nothing better).
        connection: the session-level c= line, if any.
        timing: the t= lines (with their r= lines).
        attributes: session-level a= lines in order.
        media: the m= sections in order.
        extra_lines: other session-level lines (i=, u=, e=, p=, b=, z=, k=,
            additional c=, unknown letters) as (letter, value); serialised at
            their RFC 4566 position, preserving their relative order.
    """

    version: int = 0
    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    connection: Connection | None = None
    timing: list[Timing] = field(default_factory=lambda: [Timing()])
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    extra_lines: list[tuple[str, str]] = field(default_factory=list)

    def direction(self) -> str | None:
        """Return the session-level direction attribute, or None if absent."""
        return _direction_of(self.attributes)

    def media_address(self, media: MediaDescription) -> str | None:
        """Return where RTP for `media` goes: its own c= address, else the session's."""
        if media.connection is not None:
            return media.connection
        return self.connection.address if self.connection is not None else None

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Parse an SDP body.

        Args:
            data: the body, as received (bytes) or already decoded.

        Returns:
            The parsed description. A body without m= lines is valid.

        Raises:
            SdpError: the body is malformed or exceeds `MAX_SDP_SIZE` /
                `MAX_MEDIA_LINES`.
        """
        lines = _split_lines(_decode(data))
        if not lines:
            raise SdpError("empty SDP body")
        lineno, letter, value = lines[0]
        if letter != "v":
            raise SdpError("SDP must start with a v= line")
        if value.strip() != "0":
            raise SdpError(f"unsupported SDP version {value.strip()[:20]!r}")
        if sum(1 for _, letter, _ in lines if letter == "m") > MAX_MEDIA_LINES:
            raise SdpError(f"more than {MAX_MEDIA_LINES} m= lines")

        desc = cls(timing=[])
        origin: Origin | None = None
        session_name: str | None = None
        current: MediaDescription | None = None
        for lineno, letter, value in lines[1:]:
            where = f"line {lineno}"
            if letter == "m":
                current = _parse_media_line(value, where)
                desc.media.append(current)
            elif letter == "a":
                attrs = desc.attributes if current is None else current.attributes
                attrs.append(_parse_attribute(value, where))
            elif letter in "vostr" and current is not None:
                raise SdpError(f"{where}: {letter}= line not allowed inside a media section")
            elif letter == "v":
                raise SdpError(f"{where}: duplicate v= line")
            elif letter == "o":
                if origin is not None:
                    raise SdpError(f"{where}: duplicate o= line")
                origin = _parse_origin(value, where)
            elif letter == "s":
                if session_name is not None:
                    raise SdpError(f"{where}: duplicate s= line")
                session_name = value
            elif letter == "t":
                desc.timing.append(_parse_timing(value, where))
            elif letter == "r":
                if not desc.timing:
                    raise SdpError(f"{where}: r= line without a preceding t= line")
                desc.timing[-1].repeats.append(value)
            elif letter == "c" and current is None and desc.connection is None:
                address, addrtype = _parse_connection(value, where)
                desc.connection = Connection(address, addrtype)
            elif letter == "c" and current is not None and current.connection is None:
                address, addrtype = _parse_connection(value, where)
                current.connection = address
                current.connection_addrtype = addrtype
            elif current is None:
                desc.extra_lines.append((letter, value))
            else:
                current.extra_lines.append((letter, value))

        if origin is None:
            raise SdpError("missing o= line")
        if session_name is None:
            raise SdpError("missing s= line")
        desc.origin = origin
        desc.session_name = session_name
        if not desc.timing:
            # t= is mandatory but often forgotten; "0 0" is what everybody means.
            desc.timing.append(Timing())
        # Store extra lines in the order serialise() emits them, so that
        # parse(serialise(parse(x))) == parse(x) even for oddly ordered input.
        desc.extra_lines = _canonical_extras(desc.extra_lines, _SESSION_EXTRA_ORDER)
        for media in desc.media:
            media.extra_lines = _canonical_extras(media.extra_lines, _MEDIA_EXTRA_ORDER)
        return desc

    def serialise(self) -> bytes:
        """Render the description with CRLF line ends.

        Returns:
            The SDP body as UTF-8 bytes.

        Raises:
            SdpError: a field would not survive serialisation (line breaks,
                NUL, empty or whitespace-containing tokens, bad extra letters).
        """
        out: list[str] = [f"v={self.version}"]
        o = self.origin
        _check_text(o.username, "o= username")
        if not o.username:
            raise SdpError("o= username must not be empty")
        for token, what in ((o.nettype, "o= nettype"), (o.addrtype, "o= addrtype")):
            _check_token(token, what)
        _check_token(o.address, "o= address")
        out.append(
            f"o={o.username} {o.session_id} {o.session_version} "
            f"{o.nettype} {o.addrtype} {o.address}"
        )
        _check_text(self.session_name, "s= value")
        out.append(f"s={self.session_name}")
        extras = _canonical_extras(self.extra_lines, _SESSION_EXTRA_ORDER)
        _emit_extras(out, extras, "iuep")
        if self.connection is not None:
            _check_token(self.connection.addrtype, "c= addrtype")
            _check_token(self.connection.address, "c= address")
            out.append(f"c=IN {self.connection.addrtype} {self.connection.address}")
        _emit_extras(out, extras, "cb")
        for timing in self.timing or [Timing()]:
            out.append(f"t={timing.start} {timing.stop}")
            for repeat in timing.repeats:
                _check_text(repeat, "r= value")
                out.append(f"r={repeat}")
        _emit_extras(out, extras, "zk")
        _emit_attributes(out, self.attributes)
        _emit_extras(out, extras, None, _SESSION_EXTRA_ORDER)
        for media in self.media:
            _emit_media(out, media)
        try:
            return ("\r\n".join(out) + "\r\n").encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise SdpError(f"cannot encode SDP: {exc}") from None


# --------------------------------------------------------------------------
# Parsing helpers
# --------------------------------------------------------------------------


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        # Cheap upper-bound check first; UTF-8 never has fewer bytes than chars.
        if len(data) > MAX_SDP_SIZE or len(data.encode("utf-8", "surrogatepass")) > MAX_SDP_SIZE:
            raise SdpError(f"SDP body larger than {MAX_SDP_SIZE} bytes")
        return data
    if len(data) > MAX_SDP_SIZE:
        raise SdpError(f"SDP body larger than {MAX_SDP_SIZE} bytes")
    # surrogateescape keeps stray non-UTF-8 bytes (e.g. Latin-1 in s=) intact
    # through a parse/serialise round trip instead of rejecting the call.
    return bytes(data).decode("utf-8", "surrogateescape")


def _split_lines(text: str) -> list[tuple[int, str, str]]:
    # Accept CRLF, LF and lone CR; blank lines and trailing blanks are noise.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    result: list[tuple[int, str, str]] = []
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip(" \t")
        if not line:
            continue
        if "\x00" in line:
            raise SdpError(f"line {lineno}: NUL character")
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpError(f"line {lineno}: not a <type>=<value> line: {line[:40]!r}")
        result.append((lineno, line[0], line[2:]))
    return result


def _parse_uint(text: str, what: str) -> int:
    if not _UINT_RE.fullmatch(text):
        raise SdpError(f"{what}: expected a non-negative integer, got {text[:40]!r}")
    try:
        return int(text)
    except ValueError:  # more digits than int() accepts
        raise SdpError(f"{what}: number too long") from None


def _parse_origin(value: str, where: str) -> Origin:
    tokens = value.split()
    if len(tokens) < 6:
        raise SdpError(f"{where}: o= line needs 6 fields, got {len(tokens)}")
    # Some user agents put spaces in the username; everything before the last
    # five fields belongs to it.
    return Origin(
        username=" ".join(tokens[:-5]),
        session_id=_parse_uint(tokens[-5], f"{where}: o= session id"),
        session_version=_parse_uint(tokens[-4], f"{where}: o= session version"),
        nettype=tokens[-3],
        addrtype=tokens[-2],
        address=tokens[-1],
    )


def _parse_connection(value: str, where: str) -> tuple[str, str]:
    tokens = value.split()
    if len(tokens) != 3:
        raise SdpError(f"{where}: c= line needs 3 fields, got {len(tokens)}")
    if tokens[0].upper() != "IN":
        raise SdpError(f"{where}: unsupported network type {tokens[0][:20]!r}")
    return tokens[2], tokens[1]


def _parse_timing(value: str, where: str) -> Timing:
    tokens = value.split()
    if len(tokens) != 2:
        raise SdpError(f"{where}: t= line needs 2 fields, got {len(tokens)}")
    return Timing(
        _parse_uint(tokens[0], f"{where}: t= start"), _parse_uint(tokens[1], f"{where}: t= stop")
    )


def _parse_media_line(value: str, where: str) -> MediaDescription:
    tokens = value.split()
    if len(tokens) < 3:
        raise SdpError(f"{where}: m= line needs <media> <port> <proto> <fmt>...")
    port_text, slash, count_text = tokens[1].partition("/")
    port = _parse_uint(port_text, f"{where}: m= port")
    if port > 65535:
        raise SdpError(f"{where}: m= port {port} out of range")
    port_count: int | None = None
    if slash:
        port_count = _parse_uint(count_text, f"{where}: m= port count")
        if port_count < 1:
            raise SdpError(f"{where}: m= port count must be positive")
    # RFC 4566 requires at least one format, but "m=video 0 RTP/AVP" (a
    # rejected stream without formats) is common enough to tolerate.
    return MediaDescription(
        media=tokens[0], port=port, proto=tokens[2], formats=tokens[3:], port_count=port_count
    )


def _parse_attribute(value: str, where: str) -> tuple[str, str | None]:
    name, colon, attr_value = value.partition(":")
    if not name:
        raise SdpError(f"{where}: a= line without an attribute name")
    return name, (attr_value if colon else None)


def _parse_rtpmap(value: str) -> RtpMap | None:
    # "<pt> <encoding>/<clock>[/<channels>]"; malformed lines are ignored
    # rather than failing the whole call.
    parts = value.split(None, 1)
    if len(parts) != 2 or not _UINT_RE.fullmatch(parts[0]) or len(parts[0]) > 3:
        return None
    pieces = parts[1].strip().split("/")
    if len(pieces) not in (2, 3) or not pieces[0]:
        return None
    if not all(_UINT_RE.fullmatch(p) and len(p) <= 9 for p in pieces[1:]):
        return None
    pt = int(parts[0])
    channels = int(pieces[2]) if len(pieces) == 3 else 1
    if pt > 127 or channels < 1:
        return None
    return RtpMap(pt, pieces[0], int(pieces[1]), channels)


def _direction_of(attributes: list[tuple[str, str | None]]) -> str | None:
    for name, _ in attributes:
        lname = name.lower()
        if lname in DIRECTIONS:
            return lname
    return None


# --------------------------------------------------------------------------
# Serialisation helpers
# --------------------------------------------------------------------------


def _extra_rank(letter: str, order: str) -> int:
    index = order.find(letter)
    return index if index >= 0 else len(order)


def _canonical_extras(extras: list[tuple[str, str]], order: str) -> list[tuple[str, str]]:
    # sorted() is stable, so lines of the same letter keep their order.
    return sorted(extras, key=lambda item: _extra_rank(item[0], order))


def _check_text(value: str, what: str) -> None:
    if any(ch in value for ch in _FORBIDDEN_CHARS):
        raise SdpError(f"{what} contains a line break or NUL")


def _check_token(value: str, what: str) -> None:
    _check_text(value, what)
    if not value or any(ch.isspace() for ch in value):
        raise SdpError(f"{what} must be a non-empty token without whitespace: {value!r}")


def _emit_extras(
    out: list[str], extras: list[tuple[str, str]], letters: str | None, known: str = ""
) -> None:
    """Append the extra lines whose letter is in `letters` (None: not in `known`)."""
    for letter, value in extras:
        selected = letter not in known if letters is None else letter in letters
        if not selected:
            continue
        if len(letter) != 1 or not ("a" <= letter <= "z") or letter in _STRUCTURAL_LETTERS:
            raise SdpError(f"invalid extra line type {letter!r}")
        _check_text(value, f"{letter}= value")
        out.append(f"{letter}={value}")


def _emit_attributes(out: list[str], attributes: list[tuple[str, str | None]]) -> None:
    for name, value in attributes:
        _check_text(name, "attribute name")
        if not name or ":" in name:
            raise SdpError(f"invalid attribute name {name!r}")
        if value is None:
            out.append(f"a={name}")
        else:
            _check_text(value, f"a={name} value")
            out.append(f"a={name}:{value}")


def _emit_media(out: list[str], media: MediaDescription) -> None:
    _check_token(media.media, "m= media")
    _check_token(media.proto, "m= proto")
    for fmt in media.formats:
        _check_token(fmt, "m= format")
    if not 0 <= media.port <= 65535:
        raise SdpError(f"m= port {media.port} out of range")
    port = str(media.port)
    if media.port_count is not None:
        port += f"/{media.port_count}"
    out.append(" ".join([f"m={media.media}", port, media.proto, *media.formats]))
    extras = _canonical_extras(media.extra_lines, _MEDIA_EXTRA_ORDER)
    _emit_extras(out, extras, "i")
    if media.connection is not None:
        _check_token(media.connection, "c= address")
        addrtype = media.connection_addrtype or address_type(media.connection)
        _check_token(addrtype, "c= addrtype")
        out.append(f"c=IN {addrtype} {media.connection}")
    _emit_extras(out, extras, "cbk")
    _emit_attributes(out, media.attributes)
    _emit_extras(out, extras, None, _MEDIA_EXTRA_ORDER)


def address_type(address: str) -> str:
    return "IP6" if ":" in address else "IP4"
