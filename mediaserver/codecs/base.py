"""The codec interface shared by every payload format, and its error type.

A `Codec` instance turns 20 ms int16 mono PCM frames into RTP payloads or back.
Instances hold their own codec state (ADPCM predictors, Opus history), so a call
uses one instance per direction: one to encode what it sends, one to decode what
it receives. The registry in `mediaserver.codecs` builds them by SDP name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "FRAME_MS",
    "Codec",
    "CodecError",
    "PcmArray",
    "as_mono_int16",
    "frame_samples",
]

FRAME_MS = 20
"""Packetisation time the whole media plane runs on, in milliseconds."""

PcmArray = npt.NDArray[np.int16]
"""int16 PCM samples, the audio currency of the project."""


class CodecError(ValueError):
    """A payload could not be decoded (or PCM could not be encoded).

    The media layer counts these as ``media_failure`` and conceals the frame;
    they never indicate a bug in the caller's control flow.
    """


def frame_samples(sample_rate: int, ptime_ms: int = FRAME_MS) -> int:
    """Return the number of PCM samples in one packet of `ptime_ms`.

    Args:
        sample_rate: PCM sample rate in Hz.
        ptime_ms: packetisation time in milliseconds.

    Returns:
        ``sample_rate * ptime_ms / 1000``.

    Raises:
        ValueError: the packet would not hold a whole number of samples.
    """
    samples, remainder = divmod(sample_rate * ptime_ms, 1000)
    if remainder or samples <= 0:
        raise ValueError(f"{ptime_ms} ms at {sample_rate} Hz is not a whole number of samples")
    return samples


def as_mono_int16(pcm: npt.ArrayLike) -> PcmArray:
    """Check that `pcm` is a 1-D int16 array and return it without copying.

    Other dtypes are refused rather than cast: an int32 or float array cast to
    int16 would wrap around silently, and that bug is loud on a phone line.

    Args:
        pcm: the samples.

    Returns:
        The same data as a 1-D int16 ndarray.

    Raises:
        TypeError: `pcm` is not int16.
        ValueError: `pcm` is not one-dimensional.
    """
    array = np.asarray(pcm)
    if array.dtype != np.int16:
        raise TypeError(f"PCM must be int16, not {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"PCM must be a 1-D mono array, not shape {array.shape}")
    return array


class Codec(ABC):
    """One direction of one RTP audio payload format, with its state.

    Attributes:
        name: encoding name as written in SDP a=rtpmap ("PCMU", "opus", ...).
        clock_rate: RTP timestamp clock in Hz (8000 for G.722, RFC 3551 4.5.2).
        sample_rate: PCM sample rate that `encode` takes and `decode` returns.
        channels: channel count signalled in SDP (the PCM side is always mono).
        payload_type: RFC 3551 static payload type, or None for dynamic ones.
        ptime_ms: packetisation time the instance was built for.
        frame_samples: PCM samples per packet (per 20 ms unless ptime says otherwise).
        stateless: True when frames can be coded independently of each other,
            which lets the media clock batch many calls into one vectorised
            call of the underlying functions (G.711, L16).
    """

    name: ClassVar[str]
    stateless: ClassVar[bool] = False

    def __init__(
        self,
        *,
        clock_rate: int,
        sample_rate: int,
        channels: int = 1,
        payload_type: int | None = None,
        ptime_ms: int = FRAME_MS,
    ) -> None:
        self.clock_rate = clock_rate
        self.sample_rate = sample_rate
        self.channels = channels
        self.payload_type = payload_type
        self.ptime_ms = ptime_ms
        self.frame_samples = frame_samples(sample_rate, ptime_ms)

    @property
    def timestamp_step(self) -> int:
        """RTP timestamp increment per packet (160 for G.722 at 20 ms, 960 for Opus)."""
        return self.clock_rate * self.ptime_ms // 1000

    @abstractmethod
    def encode(self, pcm: PcmArray) -> bytes:
        """Encode one packet's worth of PCM into an RTP payload.

        Args:
            pcm: 1-D int16 mono samples at `sample_rate`, normally `frame_samples` long.

        Returns:
            The RTP payload.

        Raises:
            TypeError: `pcm` is not int16.
            CodecError: the codec cannot encode this many samples as one packet.
        """

    @abstractmethod
    def decode(self, payload: bytes) -> PcmArray:
        """Decode one RTP payload.

        A payload of an unexpected size decodes to as many samples as it
        holds; a payload the codec cannot make sense of raises `CodecError`.

        Args:
            payload: the RTP payload.

        Returns:
            1-D int16 mono samples at `sample_rate`.

        Raises:
            CodecError: the payload is corrupt.
        """

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name}/{self.clock_rate}"
            f" pcm={self.sample_rate}Hz pt={self.payload_type} ptime={self.ptime_ms}ms>"
        )
