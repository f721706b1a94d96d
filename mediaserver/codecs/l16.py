"""L16: uncompressed 16-bit linear PCM in network byte order (RFC 3551 4.5.11).

Samples are big-endian signed 16-bit; with more than one channel they are
interleaved sample by sample. The project's PCM is mono, so multichannel
payloads are sent as the mono signal copied to every channel and received as
the mean of the channels.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mediaserver.codecs.base import Codec, CodecError, as_mono_int16

__all__ = ["L16Codec", "l16_decode", "l16_encode"]

_BIG_ENDIAN_INT16 = np.dtype(">i2")


def l16_encode(pcm: npt.ArrayLike, channels: int = 1) -> bytes:
    """Encode mono int16 PCM as an L16 payload.

    Args:
        pcm: 1-D int16 mono samples, at any rate.
        channels: channels in the payload; the mono signal goes to each one.

    Returns:
        Big-endian 16-bit samples, interleaved when `channels` > 1.

    Raises:
        TypeError: `pcm` is not int16.
        ValueError: `pcm` is not 1-D, or `channels` < 1.
    """
    samples = as_mono_int16(pcm)
    if channels < 1:
        raise ValueError(f"channels must be >= 1, not {channels}")
    if channels > 1:
        samples = np.repeat(samples, channels)
    return samples.astype(_BIG_ENDIAN_INT16).tobytes()


def l16_decode(payload: bytes | bytearray | memoryview, channels: int = 1) -> npt.NDArray[np.int16]:
    """Decode an L16 payload to mono int16 PCM.

    Args:
        payload: big-endian 16-bit samples, interleaved when `channels` > 1.
        channels: channels in the payload; they are averaged to mono.

    Returns:
        1-D native-endian int16 samples.

    Raises:
        CodecError: the payload does not hold a whole number of sample frames
            (a truncated or misaligned packet).
        ValueError: `channels` < 1.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, not {channels}")
    frame_bytes = 2 * channels
    if len(payload) % frame_bytes:
        raise CodecError(
            f"L16 payload of {len(payload)} bytes is not a whole number of"
            f" {channels}-channel samples"
        )
    samples = np.frombuffer(payload, dtype=_BIG_ENDIAN_INT16)
    if channels == 1:
        return samples.astype(np.int16)
    frames = samples.reshape(-1, channels).astype(np.int32)
    # Floor division keeps the mean inside int16 for any inputs.
    mean: npt.NDArray[np.int32] = frames.sum(axis=1) // channels
    return mean.astype(np.int16)


class L16Codec(Codec):
    """L16 at any rate and channel count (dynamic payload type unless RFC 3551 lists it)."""

    name = "L16"
    stateless = True

    def __init__(self, *, sample_rate: int = 16000, channels: int = 1, ptime_ms: int = 20) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, not {channels}")
        # RFC 3551 only assigns static types to 44.1 kHz L16 (10 stereo, 11 mono).
        static = {(44100, 2): 10, (44100, 1): 11}.get((sample_rate, channels))
        super().__init__(
            clock_rate=sample_rate,
            sample_rate=sample_rate,
            channels=channels,
            payload_type=static,
            ptime_ms=ptime_ms,
        )

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        """Encode PCM of any length."""
        return l16_encode(pcm, self.channels)

    def decode(self, payload: bytes) -> npt.NDArray[np.int16]:
        """Decode a payload; a partial trailing sample raises `CodecError`."""
        return l16_decode(payload, self.channels)
