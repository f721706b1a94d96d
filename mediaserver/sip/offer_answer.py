"""The SDP offer/answer model (RFC 3264): what to answer, what to offer, what an
answer means.

`SdpSession` keeps our side of one call's media across offers and answers
(session id and version, codecs, direction, DTMF); `sip/sdp.py` parses and
serialises the descriptions it works on. Sans-IO: no sockets, no clock.
"""

from __future__ import annotations

import dataclasses
import secrets

from mediaserver.codecs.params import CodecSpec, MediaOffer, NegotiatedMedia, RtpMap, SrtpKeys
from mediaserver.sip.sdes import SUITES, Crypto, CryptoError, new_key, parse_crypto
from mediaserver.sip.sdp import (
    ACCEPTED_PROTOS,
    DIRECTIONS,
    SECURE_PROTOS,
    Connection,
    MediaDescription,
    NegotiationError,
    Origin,
    SdpError,
    SessionDescription,
    Timing,
    address_type,
    is_dtmf,
)

__all__ = ["SRTP_MODES", "SdpSession"]

#: `media.srtp`: plain RTP only; SRTP when the peer offers or accepts it; SRTP only.
SRTP_MODES = ("off", "optional", "required")


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"invalid direction {direction!r}; expected one of {DIRECTIONS}")


def _combine_directions(remote: str, local: str) -> str:
    """Our direction given the remote's declared one and what we want (RFC 3264 6.1)."""
    we_send = local in ("sendrecv", "sendonly") and remote in ("sendrecv", "recvonly")
    we_receive = local in ("sendrecv", "recvonly") and remote in ("sendrecv", "sendonly")
    if we_send and we_receive:
        return "sendrecv"
    if we_send:
        return "sendonly"
    if we_receive:
        return "recvonly"
    return "inactive"


def _is_on_hold(remote_direction: str, remote_address: str) -> bool:
    # RFC 2543 hold: c=0.0.0.0 instead of a direction attribute.
    return remote_direction in ("sendonly", "inactive") or remote_address == "0.0.0.0"


def _pick_formats(
    formats: dict[int, RtpMap], supported: list[CodecSpec], want_dtmf: bool
) -> tuple[RtpMap, RtpMap | None] | None:
    """Pick the first format in `formats` order that we support, plus DTMF."""
    chosen = next(
        (
            rtpmap
            for rtpmap in formats.values()
            if not is_dtmf(rtpmap.encoding) and any(rtpmap.matches(s) for s in supported)
        ),
        None,
    )
    if chosen is None:
        return None
    dtmf: RtpMap | None = None
    if want_dtmf:
        # RFC 4733: telephone-event must run at the clock rate of the codec.
        dtmf = next(
            (
                rtpmap
                for rtpmap in formats.values()
                if is_dtmf(rtpmap.encoding) and rtpmap.clock_rate == chosen.clock_rate
            ),
            None,
        )
    return chosen, dtmf


class SdpSession:
    """Our side of one call's SDP state.

    Keeps the o= session id and bumps the version only when our SDP changes
    (RFC 3264 section 8), so a session-refresh re-INVITE gets an identical
    body with the same version.

    SRTP (SDES, `sip/sdes.py`) by `srtp`: "off" answers only RTP/AVP(F) and
    ignores a=crypto; "optional" answers an offer's first usable a=crypto
    (RTP/SAVP, or best-effort SRTP on RTP/AVP) and offers RTP/AVP with
    a=crypto lines a peer may take up or ignore; "required" answers only
    offers with a usable a=crypto and offers RTP/SAVP. Our key stays the same
    for the whole call (a re-INVITE does not re-key).

    Attributes:
        local: what we offer; mutable so the media layer can change the port.
        username: the o= username.
        session_id: the o= session id, fixed for the session.
        srtp: "off", "optional" or "required".
    """

    def __init__(
        self,
        local: MediaOffer,
        username: str = "mediaserver",
        session_id: int | None = None,
        *,
        srtp: str = "off",
    ) -> None:
        """Create the SDP state for one call.

        Args:
            local: our address, port and codecs.
            username: the o= username.
            session_id: the o= session id; random when None.
            srtp: the SRTP mode (see the class docstring).
        """
        if srtp not in SRTP_MODES:
            raise ValueError(f"srtp must be one of {SRTP_MODES}, not {srtp!r}")
        self.local = local
        self.srtp = srtp
        #: Our master key + salt by suite, made once per call.
        self._keys: dict[str, bytes] = {}
        self.username = username
        # Below 2**31 so that peers storing it in a signed 32-bit int cope.
        self.session_id = secrets.randbelow(2**31) if session_id is None else session_id
        self._version: int | None = None
        self._last_body: bytes | None = None
        # (offered payload formats, offered direction) of our pending offer.
        self._pending_offer: tuple[list[RtpMap], str] | None = None

    @property
    def version(self) -> int | None:
        """The o= session version of the last SDP we produced (None before any)."""
        return self._version

    def answer(
        self, offer: SessionDescription, *, local_direction: str = "sendrecv"
    ) -> tuple[SessionDescription, NegotiatedMedia]:
        """Answer a remote offer.

        The first audio stream over RTP/AVP(F) with a codec we support is
        accepted; every other m= line is rejected with port 0.

        Args:
            offer: the remote's offer.
            local_direction: the direction we want (e.g. "sendonly" to put
                the remote on hold).

        Returns:
            Our answer and the negotiated media parameters.

        Raises:
            NegotiationError: no acceptable audio stream (answer 488).
            SdpError: the accepted stream has no connection address.
            ValueError: `local_direction` is not a direction.
        """
        _check_direction(local_direction)
        supported = [c for c in self.local.codecs if not is_dtmf(c.name)]
        want_dtmf = any(is_dtmf(c.name) for c in self.local.codecs)
        accepted: tuple[int, RtpMap, RtpMap | None, Crypto | None] | None = None
        why = "no supported audio codec in the offer"
        for index, media in enumerate(offer.media):
            proto = media.proto.upper()
            if (
                media.media.lower() != "audio"
                or media.port == 0
                or proto not in ACCEPTED_PROTOS | SECURE_PROTOS
            ):
                continue
            crypto, refusal = self._offered_crypto(media, proto in SECURE_PROTOS)
            if refusal is not None:
                why = refusal
                continue
            picked = _pick_formats(media.rtpmaps(), supported, want_dtmf)
            if picked is not None:
                accepted = (index, *picked, crypto)
                break
        if accepted is None:
            raise NegotiationError(why)
        index, chosen, dtmf, crypto = accepted
        offered = offer.media[index]
        remote_address = offer.media_address(offered)
        if remote_address is None:
            raise SdpError("offered audio stream has no connection address (c=)")

        remote_direction = offered.direction(offer)
        direction = _combine_directions(remote_direction, local_direction)
        ptime = offered.ptime() or self.local.ptime
        rtcp_mux = offered.rtcp_mux()

        formats = [str(chosen.payload_type)]
        attributes: list[tuple[str, str | None]] = [("rtpmap", chosen.rtpmap_value())]
        spec = next(s for s in supported if chosen.matches(s))
        if spec.fmtp:
            attributes.append(("fmtp", f"{chosen.payload_type} {spec.fmtp}"))
        if dtmf is not None:
            formats.append(str(dtmf.payload_type))
            attributes.append(("rtpmap", dtmf.rtpmap_value()))
            attributes.append(("fmtp", f"{dtmf.payload_type} {dtmf.fmtp or self._dtmf_fmtp()}"))
        attributes.append(("ptime", str(ptime)))
        if rtcp_mux:
            attributes.append(("rtcp-mux", None))
        srtp = None
        if crypto is not None:
            ours = Crypto(crypto.tag, crypto.suite, self._key(crypto.suite))
            attributes.append(("crypto", ours.value()))
            srtp = ours.keys(crypto)
        attributes.append((direction, None))

        media_lines: list[MediaDescription] = []
        for i, media in enumerate(offer.media):
            if i == index:
                media_lines.append(
                    MediaDescription(
                        media=media.media,
                        port=self.local.port,
                        proto=media.proto,
                        formats=formats,
                        attributes=attributes,
                    )
                )
            else:
                # RFC 3264 6: rejected streams keep their place with port 0
                # and at least one format.
                media_lines.append(
                    MediaDescription(
                        media=media.media,
                        port=0,
                        proto=media.proto,
                        formats=list(media.formats) or ["0"],
                    )
                )
        desc = self._stamp(self._description(media_lines))
        self._pending_offer = None
        negotiated = NegotiatedMedia(
            codec=chosen,
            dtmf=dtmf,
            remote_address=remote_address,
            remote_port=offered.port,
            direction=direction,
            remote_direction=remote_direction,
            on_hold=_is_on_hold(remote_direction, remote_address),
            ptime=ptime,
            rtcp_mux=rtcp_mux,
            srtp=srtp,
        )
        return desc, negotiated

    def offer(self, *, local_direction: str = "sendrecv") -> SessionDescription:
        """Make an offer with all our codecs (re-INVITE/UPDATE, or a 200 to an empty INVITE).

        Args:
            local_direction: the direction we want.

        Returns:
            Our offer; `accept_answer` takes the answer to it.

        Raises:
            ValueError: `local_direction` is not a direction, or we have more
                codecs than dynamic payload types.
        """
        _check_direction(local_direction)
        formats = self._local_formats()
        attributes: list[tuple[str, str | None]] = []
        for rtpmap in formats:
            attributes.append(("rtpmap", rtpmap.rtpmap_value()))
            if rtpmap.fmtp:
                attributes.append(("fmtp", f"{rtpmap.payload_type} {rtpmap.fmtp}"))
        attributes.append(("ptime", str(self.local.ptime)))
        if self.srtp != "off":
            for crypto in self._our_cryptos():
                attributes.append(("crypto", crypto.value()))
        attributes.append((local_direction, None))
        media = MediaDescription(
            media="audio",
            port=self.local.port,
            proto="RTP/SAVP" if self.srtp == "required" else "RTP/AVP",
            formats=[str(rtpmap.payload_type) for rtpmap in formats],
            attributes=attributes,
        )
        desc = self._stamp(self._description([media]))
        self._pending_offer = (formats, local_direction)
        return desc

    def accept_answer(self, answer: SessionDescription) -> NegotiatedMedia:
        """Process the answer to our last offer.

        Args:
            answer: the remote's answer.

        Returns:
            The negotiated media; `codec` and `dtmf` carry the payload types
            the answer uses (normally the ones we offered).

        Raises:
            NegotiationError: the answer rejects our stream, has the wrong
                number of m= lines, or picks a codec we did not offer.
            SdpError: the accepted stream has no connection address.
        """
        if self._pending_offer is not None:
            offered_formats, offered_direction = self._pending_offer
        else:
            offered_formats, offered_direction = self._local_formats(), "sendrecv"
        if len(answer.media) != 1:
            raise NegotiationError(f"answer has {len(answer.media)} m= lines, our offer had 1")
        media = answer.media[0]
        if media.port == 0:
            raise NegotiationError("answer rejected our audio stream")
        proto = "RTP/SAVP" if self.srtp == "required" else "RTP/AVP"
        if media.media.lower() != "audio" or media.proto.upper() != proto:
            raise NegotiationError(f"answer changed the stream to {media.media} {media.proto}")
        srtp = self._answered_crypto(media)
        offered_specs = [
            CodecSpec(f.encoding, f.clock_rate, f.channels)
            for f in offered_formats
            if not is_dtmf(f.encoding)
        ]
        want_dtmf = any(is_dtmf(f.encoding) for f in offered_formats)
        picked = _pick_formats(media.rtpmaps(), offered_specs, want_dtmf)
        if picked is None:
            raise NegotiationError("answer contains no codec we offered")
        chosen, dtmf = picked
        remote_address = answer.media_address(media)
        if remote_address is None:
            raise SdpError("answered audio stream has no connection address (c=)")
        remote_direction = media.direction(answer)
        return NegotiatedMedia(
            codec=chosen,
            dtmf=dtmf,
            remote_address=remote_address,
            remote_port=media.port,
            direction=_combine_directions(remote_direction, offered_direction),
            remote_direction=remote_direction,
            on_hold=_is_on_hold(remote_direction, remote_address),
            ptime=media.ptime() or self.local.ptime,
            # We never offer rtcp-mux, so an answer must not turn it on.
            rtcp_mux=False,
            srtp=srtp,
        )

    # -- SRTP (SDES) ---------------------------------------------------------

    def _key(self, suite: str) -> bytes:
        key = self._keys.get(suite)
        if key is None:
            key = self._keys[suite] = new_key(suite)
        return key

    def _our_cryptos(self) -> list[Crypto]:
        """What we offer: one a=crypto per suite, tags from 1, our preference first."""
        return [Crypto(tag, suite, self._key(suite)) for tag, suite in enumerate(SUITES, 1)]

    def _offered_crypto(
        self, media: MediaDescription, secure: bool
    ) -> tuple[Crypto | None, str | None]:
        """The offer's a=crypto we take for `media` (None: plain RTP), or why
        the stream cannot be answered."""
        if self.srtp == "off":
            return None, ("RTP/SAVP offered but SRTP is off here" if secure else None)
        usable: list[Crypto] = []
        problems: list[str] = []
        for value in media.attributes_named("crypto"):
            try:
                usable.append(parse_crypto(value))
            except CryptoError as exc:
                problems.append(str(exc))
        if usable:
            return usable[0], None  # the offerer's preference comes first
        if secure or self.srtp == "required":
            return None, (problems[0] if problems else "SRTP required: no a=crypto offered")
        return None, None

    def _answered_crypto(self, media: MediaDescription) -> SrtpKeys | None:
        """The SRTP keys of an answer to our offer (None: plain RTP)."""
        values = media.attributes_named("crypto") if self.srtp != "off" else []
        if not values:
            if self.srtp == "required":
                raise NegotiationError("answer has no a=crypto for our RTP/SAVP offer")
            return None
        try:
            theirs = parse_crypto(values[0])
        except CryptoError as exc:
            raise NegotiationError(f"answer's a=crypto: {exc}") from None
        ours = next((c for c in self._our_cryptos() if c.tag == theirs.tag), None)
        if ours is None or ours.suite != theirs.suite:
            raise NegotiationError("answer's a=crypto matches none we offered")
        return ours.keys(theirs)

    # -- internals ---------------------------------------------------------

    def _dtmf_fmtp(self) -> str:
        for spec in self.local.codecs:
            if is_dtmf(spec.name) and spec.fmtp:
                return spec.fmtp
        return "0-16"

    def _local_formats(self) -> list[RtpMap]:
        """Our codecs with payload types: static ones, 101 for DTMF, else 96 upward."""
        used = {c.static_pt for c in self.local.codecs if c.static_pt is not None}
        assigned: list[int | None] = []
        for spec in self.local.codecs:
            if spec.static_pt is not None:
                assigned.append(spec.static_pt)
            elif is_dtmf(spec.name) and 101 not in used:
                # 101 is the de-facto telephone-event PT; many peers assume it.
                used.add(101)
                assigned.append(101)
            else:
                assigned.append(None)
        next_pt = 96
        formats: list[RtpMap] = []
        for spec, pt in zip(self.local.codecs, assigned, strict=True):
            if pt is None:
                while next_pt in used:
                    next_pt += 1
                if next_pt > 127:
                    raise ValueError("too many codecs for the dynamic payload type range")
                pt = next_pt
                used.add(pt)
            formats.append(RtpMap(pt, spec.name, spec.clock_rate, spec.channels, spec.fmtp))
        return formats

    def _description(self, media: list[MediaDescription]) -> SessionDescription:
        addrtype = address_type(self.local.address)
        return SessionDescription(
            origin=Origin(self.username, self.session_id, 0, "IN", addrtype, self.local.address),
            session_name="-",
            connection=Connection(self.local.address, addrtype),
            timing=[Timing(0, 0)],
            media=media,
        )

    def _stamp(self, desc: SessionDescription) -> SessionDescription:
        """Set the o= version: +1 when the body differs from the last one we sent."""
        # Compare serialised bodies: cheap, and immune to the caller mutating
        # the description it gets back.
        body = dataclasses.replace(desc, origin=Origin()).serialise()
        if self._version is None:
            # Start at the session id, as RFC 4566 suggests both be NTP-like.
            self._version = self.session_id
        elif body != self._last_body:
            self._version += 1
        self._last_body = body
        desc.origin.session_version = self._version
        return desc
