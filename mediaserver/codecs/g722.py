"""G.722 wideband ADPCM at 64 kbit/s (RFC 3551 payload type 9), via FFmpeg.

G.722 codes 16 kHz audio into one byte per pair of samples, so a 20 ms frame is
320 samples in and 160 bytes out. RTP still counts it at 8000 Hz (RFC 3551
4.5.2, a historical mistake every implementation keeps), so the RTP timestamp
advances by 160 per 20 ms packet while the PCM side runs at 16 kHz.

The sub-band ADPCM predictors adapt sample by sample: an encoder or decoder
must see every frame of its stream, in order, or it drifts away from the far
end. The codec's delay (QMF analysis plus synthesis) is 22 samples at 16 kHz.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mediaserver.codecs._pyav import AvDecoder, AvEncoder, codec_available
from mediaserver.codecs.base import Codec, CodecError, PcmArray, as_mono_int16

__all__ = [
    "G722_CLOCK_RATE",
    "G722_SAMPLE_RATE",
    "G722Codec",
    "G722Decoder",
    "G722Encoder",
    "g722_available",
]

G722_SAMPLE_RATE = 16000
"""PCM sample rate of G.722."""

G722_CLOCK_RATE = 8000
"""RTP clock rate of G.722 (RFC 3551 4.5.2)."""

# FFmpeg's encoder caps its frame size; 32768 samples is ~2 s, far beyond any ptime.
_MAX_FRAME_SAMPLES = 32768


def g722_available() -> bool:
    """Tell whether the FFmpeg build behind PyAV has a G.722 encoder and decoder."""
    return codec_available("g722", "w") and codec_available("g722", "r")


class G722Encoder:
    """Streaming G.722 encoder: 16 kHz int16 PCM in, one byte per two samples out.

    Args:
        frame_samples: samples per packet (320 = 20 ms); must be even.
    """

    def __init__(self, frame_samples: int = 320) -> None:
        if frame_samples <= 0 or frame_samples % 2 or frame_samples > _MAX_FRAME_SAMPLES:
            raise ValueError(f"G.722 frame size must be even and positive, not {frame_samples}")
        self.frame_samples = frame_samples
        # frame_size is read-only on PyAV's context but settable as an FFmpeg option.
        self._encoder = AvEncoder(
            "g722",
            sample_rate=G722_SAMPLE_RATE,
            frame_samples=frame_samples,
            options={"frame_size": str(frame_samples)},
        )

    def encode(self, pcm: npt.ArrayLike) -> bytes:
        """Encode a whole number of frames, continuing the stream's state.

        Args:
            pcm: 1-D int16 samples at 16 kHz, a multiple of `frame_samples` long.

        Returns:
            ``len(pcm) // 2`` bytes of G.722.

        Raises:
            TypeError: `pcm` is not int16.
            CodecError: the length is not a whole number of frames.
        """
        samples = as_mono_int16(pcm)
        payload = b"".join(self._encoder.encode(samples))
        if len(payload) * 2 != len(samples):  # pragma: no cover - FFmpeg contract
            raise CodecError(f"G.722 encoder produced {len(payload)} bytes for {len(samples)}")
        return payload


class G722Decoder:
    """Streaming G.722 decoder: one byte in, two 16 kHz int16 samples out.

    Any payload length decodes (each byte is one sample pair); an empty
    payload decodes to no samples.
    """

    def __init__(self) -> None:
        self._decoder = AvDecoder("g722", sample_rate=G722_SAMPLE_RATE)

    def decode(self, payload: bytes | bytearray | memoryview) -> PcmArray:
        """Decode a payload, continuing the stream's state.

        Args:
            payload: G.722 bytes.

        Returns:
            ``2 * len(payload)`` int16 samples at 16 kHz.

        Raises:
            CodecError: FFmpeg rejected the payload.
        """
        return self._decoder.decode(payload)


class G722Codec(Codec):
    """G.722 as a registry codec: PCM at 16 kHz, RTP clock 8000, payload type 9.

    The encoder and decoder are created on first use, so an instance used for
    one direction only holds one FFmpeg context.
    """

    name = "G722"

    def __init__(self, *, ptime_ms: int = 20) -> None:
        super().__init__(
            clock_rate=G722_CLOCK_RATE,
            sample_rate=G722_SAMPLE_RATE,
            payload_type=9,
            ptime_ms=ptime_ms,
        )
        if self.frame_samples % 2:  # pragma: no cover - every integer ptime gives an even count
            raise ValueError(f"ptime {ptime_ms} ms gives an odd G.722 frame")
        self._encoder: G722Encoder | None = None
        self._decoder: G722Decoder | None = None

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        """Encode a whole number of `frame_samples` frames (normally exactly one)."""
        if self._encoder is None:
            self._encoder = G722Encoder(self.frame_samples)
        return self._encoder.encode(pcm)

    def decode(self, payload: bytes) -> npt.NDArray[np.int16]:
        """Decode a payload of any length (two samples per byte)."""
        if self._decoder is None:
            self._decoder = G722Decoder()
        return self._decoder.decode(payload)
