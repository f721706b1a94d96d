"""What SIP negotiates and media runs: codec specs, payload formats, the media
offer and the negotiated outcome.

A neutral home: `sip/sdp.py` builds and reads these from SDP, and `media/`
opens RTP sessions from them; neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CODECS",
    "DTMF_NAME",
    "CodecSpec",
    "MediaOffer",
    "NegotiatedMedia",
    "RtpMap",
    "SrtpKeys",
    "codec",
]

#: The RFC 4733 DTMF payload format's encoding name.
DTMF_NAME = "telephone-event"


@dataclass(frozen=True)
class CodecSpec:
    """A codec this server can handle.

    Attributes:
        name: encoding name as used in a=rtpmap (matched case-insensitively).
        clock_rate: RTP clock rate in Hz.
        channels: number of audio channels.
        static_pt: RFC 3551 static payload type, or None for dynamic codecs.
        fmtp: format parameters we announce for this codec, if any.
    """

    name: str
    clock_rate: int
    channels: int = 1
    static_pt: int | None = None
    fmtp: str | None = None


CODECS: dict[str, CodecSpec] = {
    "PCMU": CodecSpec("PCMU", 8000, static_pt=0),
    "PCMA": CodecSpec("PCMA", 8000, static_pt=8),
    # RFC 3551 section 4.5.2: G.722 samples at 16 kHz but is signalled as
    # 8000 for historical reasons.
    "G722": CodecSpec("G722", 8000, static_pt=9),
    # Wideband linear PCM; the static PTs 10/11 are 44.1 kHz so use a dynamic PT.
    "L16": CodecSpec("L16", 16000),
    "OPUS": CodecSpec("opus", 48000, channels=2),
    "TELEPHONE-EVENT": CodecSpec(DTMF_NAME, 8000, fmtp="0-16"),
}
"""Codecs the media layer may enable, keyed by upper-cased encoding name."""


def codec(name: str) -> CodecSpec:
    """Look up a codec in `CODECS` by name, case-insensitively.

    Args:
        name: the encoding name, e.g. "pcmu" or "telephone-event".

    Returns:
        The registered `CodecSpec`.

    Raises:
        KeyError: the codec is not known to this server.
    """
    try:
        return CODECS[name.upper()]
    except KeyError:
        known = ", ".join(sorted(CODECS))
        raise KeyError(f"unknown codec {name!r} (known: {known})") from None


@dataclass
class RtpMap:
    """One RTP payload format: an a=rtpmap line plus its a=fmtp parameters.

    Attributes:
        payload_type: RTP payload type number (0-127).
        encoding: encoding name as written in the SDP.
        clock_rate: RTP clock rate in Hz.
        channels: number of audio channels (1 when not given).
        fmtp: the a=fmtp parameters for this payload type, if any.
    """

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    def matches(self, spec: CodecSpec) -> bool:
        """Tell whether this payload format is the codec `spec`.

        Args:
            spec: a codec we support.

        Returns:
            True when encoding name (case-insensitive), clock rate and
            channel count all agree.
        """
        return (
            self.encoding.lower() == spec.name.lower()
            and self.clock_rate == spec.clock_rate
            and self.channels == spec.channels
        )

    def rtpmap_value(self) -> str:
        """Render the value of the a=rtpmap attribute, e.g. "96 opus/48000/2"."""
        value = f"{self.payload_type} {self.encoding}/{self.clock_rate}"
        if self.channels != 1:
            value += f"/{self.channels}"
        return value


@dataclass
class MediaOffer:
    """What the media layer offers for our side of a call.

    Attributes:
        address: our RTP address, used in c= and o=.
        port: our RTP port (even; RTCP on port + 1 unless rtcp-mux).
        codecs: codecs we accept, in preference order; include
            telephone-event to negotiate RFC 4733 DTMF.
        ptime: our packetisation time in milliseconds.
    """

    address: str
    port: int
    codecs: list[CodecSpec]
    ptime: int = 20


@dataclass(frozen=True)
class SrtpKeys:
    """The SRTP of a call (SDES, RFC 4568): the suite, the master key + salt
    we send with, and the one the peer sends with."""

    suite: str
    local: bytes
    remote: bytes

    def __repr__(self) -> str:
        return f"SrtpKeys({self.suite!r}, <keys hidden>)"  # keys never reach a log


@dataclass
class NegotiatedMedia:
    """The outcome of one offer/answer exchange, as the media layer needs it.

    Attributes:
        codec: chosen audio codec, with the payload type the remote side
            announced (the offerer's PT when we answer) and its fmtp.
        dtmf: the remote's telephone-event format at the codec's clock rate,
            or None when DTMF was not negotiated.
        remote_address: where to send RTP (media-level c=, else session c=).
        remote_port: the remote RTP port.
        direction: our direction ("sendrecv", "sendonly", "recvonly",
            "inactive"): what we put in the answer, or the effective
            direction after the remote's answer to our offer.
        remote_direction: the direction the remote declared.
        on_hold: the remote put us on hold (sendonly/inactive, or the RFC 2543
            c=0.0.0.0 form).
        ptime: packetisation time in milliseconds.
        rtcp_mux: RTP and RTCP share one port (RFC 5761).
        srtp: the SRTP suite and keys when the stream is encrypted.
    """

    codec: RtpMap
    dtmf: RtpMap | None
    remote_address: str
    remote_port: int
    direction: str
    remote_direction: str
    on_hold: bool
    ptime: int
    rtcp_mux: bool
    #: SRTP keys (None: plain RTP).
    srtp: SrtpKeys | None = None
