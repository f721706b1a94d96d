"""Opus (RFC 6716, RTP payload format RFC 7587) via FFmpeg's libopus wrapper.

Opus always runs at 48 kHz on the RTP clock, and FFmpeg's libopus decoder
always outputs 48 kHz, so the PCM side here is 48 kHz too (960 samples per
20 ms); the resampler takes it to the pipeline's rate. SDP always writes
``opus/48000/2`` (RFC 7587 section 7), but the stream itself may be mono: we
send mono and decode whatever arrives down to mono.

Each packet depends on the state left by the previous one (prediction, the
encoder's look-ahead), so encoder and decoder must see every packet of their
stream in order. The encoder's look-ahead delays the decoded signal by 6.5 ms
(312 samples at 48 kHz), plus whatever the far end's jitter buffer adds.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mediaserver.codecs._pyav import AvDecoder, AvEncoder, codec_available
from mediaserver.codecs.base import Codec, CodecError, PcmArray, as_mono_int16

__all__ = [
    "OPUS_DEFAULT_BITRATE",
    "OPUS_FRAME_MS",
    "OPUS_SAMPLE_RATE",
    "OpusCodec",
    "OpusDecoder",
    "OpusEncoder",
    "opus_available",
    "parse_opus_fmtp",
]

OPUS_SAMPLE_RATE = 48000
"""PCM sample rate of the Opus encoder and decoder here, and the RTP clock rate."""

OPUS_DEFAULT_BITRATE = 32000
"""Default target bit rate: transparent wideband speech for one mono voice."""

OPUS_FRAME_MS = (10, 20, 40, 60)
"""Packet durations the encoder accepts (Opus also has 2.5 and 5 ms, useless over RTP)."""

_APPLICATIONS = ("voip", "audio", "lowdelay")


def opus_available() -> bool:
    """Tell whether the FFmpeg build behind PyAV has the libopus encoder and an Opus decoder."""
    return codec_available("libopus", "w") and (
        codec_available("libopus", "r") or codec_available("opus", "r")
    )


def parse_opus_fmtp(fmtp: str | None) -> dict[str, str]:
    """Split an Opus a=fmtp value into parameters (RFC 7587 section 6.1).

    Args:
        fmtp: e.g. "minptime=10;useinbandfec=1", or None.

    Returns:
        Lower-cased parameter names mapped to their values; malformed parts are skipped.
    """
    params: dict[str, str] = {}
    for part in (fmtp or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name.strip():
            params[name.strip().lower()] = value.strip()
    return params


class OpusEncoder:
    """Streaming mono Opus encoder: one packet per frame of 48 kHz int16 PCM.

    Args:
        bitrate: target bit rate in bit/s (6000-510000).
        frame_ms: packet duration, one of `OPUS_FRAME_MS`.
        application: libopus application, "voip" (speech-tuned), "audio" or "lowdelay".
        complexity: libopus complexity 0-10 (None: libopus default, 10);
            lower costs less CPU per call for slightly worse quality.
        fec: add in-band forward error correction (useinbandfec=1 at the far end).
        packet_loss_percent: expected loss, which sizes the FEC redundancy.
    """

    def __init__(
        self,
        *,
        bitrate: int = OPUS_DEFAULT_BITRATE,
        frame_ms: int = 20,
        application: str = "voip",
        complexity: int | None = None,
        fec: bool = False,
        packet_loss_percent: int = 0,
    ) -> None:
        if frame_ms not in OPUS_FRAME_MS:
            raise ValueError(f"Opus frame duration must be one of {OPUS_FRAME_MS}, not {frame_ms}")
        if not 6000 <= bitrate <= 510000:
            raise ValueError(f"Opus bit rate must be 6000-510000, not {bitrate}")
        if application not in _APPLICATIONS:
            raise ValueError(f"Opus application must be one of {_APPLICATIONS}")
        if complexity is not None and not 0 <= complexity <= 10:
            raise ValueError(f"Opus complexity must be 0-10, not {complexity}")
        options = {
            "application": application,
            "frame_duration": str(frame_ms),
            "fec": "1" if fec else "0",
            "packet_loss": str(packet_loss_percent),
        }
        if complexity is not None:
            # libopus takes its complexity from FFmpeg's generic compression_level.
            options["compression_level"] = str(complexity)
        self.frame_samples = OPUS_SAMPLE_RATE * frame_ms // 1000
        self.bitrate = bitrate
        self._encoder = AvEncoder(
            "libopus",
            sample_rate=OPUS_SAMPLE_RATE,
            frame_samples=self.frame_samples,
            options=options,
            bit_rate=bitrate,
        )

    def encode(self, pcm: npt.ArrayLike) -> bytes:
        """Encode exactly one frame, continuing the stream's state.

        Args:
            pcm: 1-D int16 samples at 48 kHz, exactly `frame_samples` long.

        Returns:
            One Opus packet (one RTP payload).

        Raises:
            TypeError: `pcm` is not int16.
            CodecError: `pcm` is not exactly one frame long.
        """
        samples = as_mono_int16(pcm)
        if len(samples) != self.frame_samples:
            # Opus packets cannot be concatenated into one RTP payload.
            raise CodecError(
                f"Opus encodes one {self.frame_samples}-sample frame per packet,"
                f" not {len(samples)} samples"
            )
        (packet,) = self._encoder.encode(samples)
        return packet


class OpusDecoder:
    """Streaming Opus decoder to mono 48 kHz int16 PCM (stereo streams are downmixed)."""

    def __init__(self) -> None:
        # Prefer libopus (reference decoder, s16 output); FFmpeg's native one also works.
        name = "libopus" if codec_available("libopus", "r") else "opus"
        self._decoder = AvDecoder(name, sample_rate=OPUS_SAMPLE_RATE)

    def decode(self, payload: bytes | bytearray | memoryview) -> PcmArray:
        """Decode one packet, continuing the stream's state.

        Args:
            payload: one Opus packet (any duration the sender chose).

        Returns:
            int16 samples at 48 kHz (960 for a 20 ms packet).

        Raises:
            CodecError: the payload is empty or not a valid Opus packet.
        """
        if not payload:
            raise CodecError("empty Opus payload")
        return self._decoder.decode(payload)


class OpusCodec(Codec):
    """Opus as a registry codec: 48 kHz PCM and RTP clock, dynamic payload type.

    Args:
        ptime_ms: packet duration, one of `OPUS_FRAME_MS`.
        channels: the SDP channel count (always 2 per RFC 7587; the audio is mono).
        fmtp: the remote's a=fmtp parameters; ``maxaveragebitrate`` caps our bit
            rate and ``useinbandfec=1`` turns on FEC in what we send.
        bitrate: our target bit rate before the remote's cap.
    """

    name = "opus"

    def __init__(
        self,
        *,
        ptime_ms: int = 20,
        channels: int = 2,
        fmtp: str | None = None,
        bitrate: int = OPUS_DEFAULT_BITRATE,
    ) -> None:
        if ptime_ms not in OPUS_FRAME_MS:
            raise ValueError(f"Opus ptime must be one of {OPUS_FRAME_MS}, not {ptime_ms}")
        super().__init__(
            clock_rate=OPUS_SAMPLE_RATE,
            sample_rate=OPUS_SAMPLE_RATE,
            channels=channels,
            payload_type=None,
            ptime_ms=ptime_ms,
        )
        params = parse_opus_fmtp(fmtp)
        cap = params.get("maxaveragebitrate", "")
        if cap.isdigit():
            bitrate = min(bitrate, max(6000, int(cap)))
        self.bitrate = bitrate
        self.fec = params.get("useinbandfec") == "1"
        self._encoder: OpusEncoder | None = None
        self._decoder: OpusDecoder | None = None

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        """Encode exactly one `frame_samples` frame into one Opus packet."""
        if self._encoder is None:
            self._encoder = OpusEncoder(
                bitrate=self.bitrate,
                frame_ms=self.ptime_ms,
                fec=self.fec,
                packet_loss_percent=10 if self.fec else 0,
            )
        return self._encoder.encode(pcm)

    def decode(self, payload: bytes) -> npt.NDArray[np.int16]:
        """Decode one Opus packet (its duration is whatever the sender chose)."""
        if self._decoder is None:
            self._decoder = OpusDecoder()
        return self._decoder.decode(payload)
