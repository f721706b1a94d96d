"""SRTP and SRTCP for one call (RFC 3711), on libsrtp through pylibsrtp.

The keys come from SDP (`sip/sdes.py`): we protect what we send with ours and
unprotect what we receive with the peer's. libsrtp checks each packet's
authentication tag and its replay window (128 packets), so a tampered or
replayed packet fails `unprotect` and is dropped before any parsing or
decoding; the session counts it.
"""

from __future__ import annotations

from collections.abc import Callable

from pylibsrtp import Error, Policy, Session

from mediaserver.codecs.params import SrtpKeys

__all__ = ["SrtpContext"]

_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}


class SrtpContext:
    """Both directions of one call's SRTP."""

    def __init__(self, keys: SrtpKeys) -> None:
        self.keys = keys
        profile = _PROFILES[keys.suite]
        self._out = Session(Policy(keys.local, Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
        self._in = Session(Policy(keys.remote, Policy.SSRC_ANY_INBOUND, srtp_profile=profile))

    def protect(self, rtp: bytes) -> bytes | None:
        """The SRTP packet, or None: libsrtp refused (e.g. an index sent twice,
        which would reuse keystream)."""
        return _or_none(self._out.protect, rtp)

    def protect_rtcp(self, rtcp: bytes) -> bytes | None:
        return _or_none(self._out.protect_rtcp, rtcp)

    def unprotect(self, srtp: bytes) -> bytes | None:
        """The RTP packet, or None: it failed authentication or was replayed."""
        return _or_none(self._in.unprotect, srtp)

    def unprotect_rtcp(self, srtcp: bytes) -> bytes | None:
        """The RTCP compound, or None: it failed authentication or was replayed."""
        return _or_none(self._in.unprotect_rtcp, srtcp)

    def rekeyed(self, keys: SrtpKeys | None) -> SrtpContext | None:
        """The context for a renegotiation: this one while the keys stay (a
        fresh one would restart the rollover counter and the replay window)."""
        if keys is None:
            return None
        return self if keys == self.keys else SrtpContext(keys)


def _or_none(operation: Callable[[bytes], bytes], data: bytes) -> bytes | None:
    """What libsrtp made of `data`, or None when it refused it."""
    try:
        return operation(data)
    except Error:
        return None
