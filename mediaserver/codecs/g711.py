"""G.711 u-law (PCMU) and A-law (PCMA) as numpy table lookups.

The tables are built once at import from the classic Sun Microsystems ``g711.c``
algorithms (``linear2ulaw``/``ulaw2linear``, ``linear2alaw``/``alaw2linear``),
which are bit exact with ITU-T G.711. Encoding is one lookup in a 65536-entry
table indexed by the bit pattern of the int16 sample (its uint16 view), decoding
one lookup in a 256-entry table, so every function works on arrays of any shape:
the media clock can stack N calls' 20 ms frames into an (N, 160) array and code
them all in one call.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mediaserver.codecs.base import Codec, as_mono_int16

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "AlawCodec",
    "CodeArray",
    "UlawCodec",
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

CodeArray = npt.NDArray[np.uint8]
"""G.711 code words, one byte per sample."""

ULAW_SILENCE = 0xFF
"""The u-law code of a zero sample."""

ALAW_SILENCE = 0xD5
"""The A-law code of a zero sample."""

# Segment end points of the reference code (upper bound of each chord).
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_QUANT_MASK = 0x0F
_SEG_MASK = 0x70
_SEG_SHIFT = 4
_SIGN_BIT = 0x80
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159


def _all_samples() -> npt.NDArray[np.int32]:
    # Entry i of an encode table is for the int16 whose bit pattern is i, which
    # is what indexing with `pcm.view(np.uint16)` looks up.
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _segment(
    magnitude: npt.NDArray[np.int32], ends: npt.NDArray[np.int32]
) -> npt.NDArray[np.int32]:
    # The reference `search()` returns the first i with magnitude <= ends[i] (8 if none).
    return np.searchsorted(ends, magnitude, side="left").astype(np.int32)


def _build_ulaw_encode() -> CodeArray:
    pcm = _all_samples() >> 2  # 14-bit input, arithmetic shift as in the reference
    negative = pcm < 0
    mask = np.where(negative, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = _segment(magnitude, _SEG_UEND)
    code = (np.minimum(seg, 7) << 4) | ((magnitude >> (seg + 1)) & _QUANT_MASK)
    code = np.where(seg >= 8, 0x7F ^ mask, code ^ mask)
    return code.astype(np.uint8)


def _build_alaw_encode() -> CodeArray:
    pcm = _all_samples() >> 3  # 13-bit input
    negative = pcm < 0
    mask = np.where(negative, 0x55, 0xD5)
    magnitude = np.where(negative, -pcm - 1, pcm)
    seg = _segment(magnitude, _SEG_AEND)
    quant = np.where(seg < 2, magnitude >> 1, magnitude >> seg) & _QUANT_MASK
    code = (np.minimum(seg, 7) << _SEG_SHIFT) | quant
    code = np.where(seg >= 8, 0x7F ^ mask, code ^ mask)
    return code.astype(np.uint8)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & _QUANT_MASK) << 3) + _ULAW_BIAS
    t <<= (u & _SEG_MASK) >> _SEG_SHIFT
    return np.where(u & _SIGN_BIT, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & _QUANT_MASK) << 4
    seg = (a & _SEG_MASK) >> _SEG_SHIFT
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & _SIGN_BIT, t, -t).astype(np.int16)


def _frozen(table: npt.NDArray[np.generic]) -> None:
    table.flags.writeable = False


_ULAW_ENCODE = _build_ulaw_encode()
_ALAW_ENCODE = _build_alaw_encode()
_ULAW_DECODE = _build_ulaw_decode()
_ALAW_DECODE = _build_alaw_decode()
for _table in (_ULAW_ENCODE, _ALAW_ENCODE, _ULAW_DECODE, _ALAW_DECODE):
    _frozen(_table)
del _table


def _bit_patterns(pcm: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    array = np.asarray(pcm)
    if array.dtype != np.int16:
        # Refuse rather than cast: int32 or float input would wrap silently.
        raise TypeError(f"PCM must be int16, not {array.dtype}")
    return array.view(np.uint16)


def _codes(codes: npt.ArrayLike | bytes | bytearray | memoryview) -> CodeArray:
    if isinstance(codes, bytes | bytearray | memoryview):
        return np.frombuffer(codes, dtype=np.uint8)
    array = np.asarray(codes)
    if array.dtype != np.uint8:
        raise TypeError(f"G.711 codes must be uint8, not {array.dtype}")
    return array


def ulaw_encode(pcm: npt.ArrayLike, out: CodeArray | None = None) -> CodeArray:
    """Encode int16 PCM to u-law, element-wise, for any array shape.

    Args:
        pcm: int16 samples, any shape (e.g. (N, 160) for N calls' frames).
        out: optional preallocated uint8 array of the same shape to write into.

    Returns:
        uint8 code words with the shape of `pcm` (`out` when given).

    Raises:
        TypeError: `pcm` is not int16.
    """
    return np.take(_ULAW_ENCODE, _bit_patterns(pcm), out=out)


def ulaw_decode(
    codes: npt.ArrayLike | bytes | bytearray | memoryview,
    out: npt.NDArray[np.int16] | None = None,
) -> npt.NDArray[np.int16]:
    """Decode u-law code words to int16 PCM, element-wise, for any array shape.

    Args:
        codes: uint8 array of any shape, or a bytes-like payload (1-D result).
        out: optional preallocated int16 array of the same shape to write into.

    Returns:
        int16 samples with the shape of `codes`.

    Raises:
        TypeError: `codes` is an array but not uint8.
    """
    # ndarray.take, not np.take: the wrapper costs as much as a 160-sample lookup.
    return _ULAW_DECODE.take(_codes(codes), out=out)


def alaw_encode(pcm: npt.ArrayLike, out: CodeArray | None = None) -> CodeArray:
    """Encode int16 PCM to A-law, element-wise, for any array shape.

    Args:
        pcm: int16 samples, any shape (e.g. (N, 160) for N calls' frames).
        out: optional preallocated uint8 array of the same shape to write into.

    Returns:
        uint8 code words with the shape of `pcm` (`out` when given).

    Raises:
        TypeError: `pcm` is not int16.
    """
    return np.take(_ALAW_ENCODE, _bit_patterns(pcm), out=out)


def alaw_decode(
    codes: npt.ArrayLike | bytes | bytearray | memoryview,
    out: npt.NDArray[np.int16] | None = None,
) -> npt.NDArray[np.int16]:
    """Decode A-law code words to int16 PCM, element-wise, for any array shape.

    Args:
        codes: uint8 array of any shape, or a bytes-like payload (1-D result).
        out: optional preallocated int16 array of the same shape to write into.

    Returns:
        int16 samples with the shape of `codes`.

    Raises:
        TypeError: `codes` is an array but not uint8.
    """
    return _ALAW_DECODE.take(_codes(codes), out=out)


class UlawCodec(Codec):
    """PCMU (RFC 3551 payload type 0): 8 kHz, one byte per sample, no state."""

    name = "PCMU"
    stateless = True

    def __init__(self, *, ptime_ms: int = 20) -> None:
        super().__init__(clock_rate=8000, sample_rate=8000, payload_type=0, ptime_ms=ptime_ms)

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        """Encode PCM of any length (one code byte per sample)."""
        return ulaw_encode(as_mono_int16(pcm)).tobytes()

    def decode(self, payload: bytes) -> npt.NDArray[np.int16]:
        """Decode a payload of any length (one sample per byte)."""
        # The table lookup directly: this runs for every received packet.
        return _ULAW_DECODE.take(np.frombuffer(payload, dtype=np.uint8))


class AlawCodec(Codec):
    """PCMA (RFC 3551 payload type 8): 8 kHz, one byte per sample, no state."""

    name = "PCMA"
    stateless = True

    def __init__(self, *, ptime_ms: int = 20) -> None:
        super().__init__(clock_rate=8000, sample_rate=8000, payload_type=8, ptime_ms=ptime_ms)

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        """Encode PCM of any length (one code byte per sample)."""
        return alaw_encode(as_mono_int16(pcm)).tobytes()

    def decode(self, payload: bytes) -> npt.NDArray[np.int16]:
        """Decode a payload of any length (one sample per byte)."""
        return _ALAW_DECODE.take(np.frombuffer(payload, dtype=np.uint8))
