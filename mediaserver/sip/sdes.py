"""SDES: SRTP keys in SDP `a=crypto` attributes (RFC 4568). Sans-IO.

    a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<base64 of 16-byte key + 14-byte salt>[|lifetime]

We take the two suites every SDES phone and carrier speaks,
AES_CM_128_HMAC_SHA1_80 and AES_CM_128_HMAC_SHA1_32 (RFC 4568 section 6.2),
one inline key each without MKI, and no session parameters (a line with one
is skipped: RFC 4568 section 6.3 lets the answerer refuse what it does not
know, and UNENCRYPTED_SRTP and friends would weaken the stream). The offerer
and the answerer each send with their own key; `SrtpKeys` holds both.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass

from mediaserver.codecs.params import SrtpKeys

__all__ = ["SUITES", "Crypto", "CryptoError", "new_key", "parse_crypto"]

#: Suites we speak, in our order of preference, and their master key + salt length.
SUITES = {"AES_CM_128_HMAC_SHA1_80": 30, "AES_CM_128_HMAC_SHA1_32": 30}
_LIFETIME = re.compile(r"^(?:2\^)?\d+$")


class CryptoError(ValueError):
    """An `a=crypto` line we cannot use (malformed, or a suite or option we lack)."""


@dataclass(frozen=True)
class Crypto:
    """One `a=crypto` attribute: tag, suite and master key + salt."""

    tag: int
    suite: str
    key: bytes

    def value(self) -> str:
        """The attribute value (after ``crypto:``)."""
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.key).decode()}"

    def keys(self, remote: Crypto) -> SrtpKeys:
        """Our key (`self`) and the peer's, for the media layer."""
        return SrtpKeys(self.suite, self.key, remote.key)


def parse_crypto(value: str) -> Crypto:
    """Parse an `a=crypto` value.

    Raises:
        CryptoError: malformed, an unknown suite, an MKI, more than one key,
            a key of the wrong length, or session parameters.
    """
    parts = value.split()
    if len(parts) < 3:
        raise CryptoError(f"a=crypto needs a tag, a suite and key parameters: {value[:60]!r}")
    if len(parts) > 3:
        raise CryptoError(f"a=crypto session parameters are not supported: {parts[3][:30]!r}")
    tag, suite, params = parts
    if not tag.isdigit() or len(tag) > 9:
        raise CryptoError(f"a=crypto tag is not a number: {tag[:12]!r}")
    if suite not in SUITES:
        raise CryptoError(f"unsupported SRTP suite {suite[:40]!r}")
    if ";" in params:
        raise CryptoError("a=crypto with more than one key is not supported")
    method, _, info = params.partition(":")
    if method != "inline":
        raise CryptoError(f"a=crypto key method {method[:12]!r} is not inline")
    encoded, *extras = info.split("|")
    if any(":" in extra for extra in extras):
        raise CryptoError("a=crypto with an MKI is not supported")
    if len(extras) > 1 or not all(_LIFETIME.match(extra) for extra in extras):
        raise CryptoError("malformed a=crypto key lifetime")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("a=crypto key is not base64") from None
    if len(key) != SUITES[suite]:
        raise CryptoError(f"a=crypto key is {len(key)} bytes, {suite} needs {SUITES[suite]}")
    return Crypto(int(tag), suite, key)


def new_key(suite: str) -> bytes:
    """A fresh random master key + salt for `suite`."""
    return secrets.token_bytes(SUITES[suite])
