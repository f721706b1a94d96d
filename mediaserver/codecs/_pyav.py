"""Thin stateful wrappers over PyAV (FFmpeg) audio codec contexts.

G.722 and Opus are sequential: every frame depends on the codec state left by
the previous one, so each wrapper owns one FFmpeg context for its lifetime and
must be fed one direction of one call, in order. FFmpeg errors become
`CodecError` so the media layer counts them instead of crashing the call.
"""

from __future__ import annotations

from typing import Literal

import av
import av.error
import numpy as np
import numpy.typing as npt
from av.audio.codeccontext import AudioCodecContext

from mediaserver.codecs.base import CodecError, PcmArray

__all__ = ["AvDecoder", "AvEncoder", "codec_available"]


def codec_available(name: str, mode: Literal["r", "w"]) -> bool:
    """Tell whether this FFmpeg build has the codec `name` for `mode` ("r" or "w")."""
    try:
        av.Codec(name, mode)
    except (av.error.FFmpegError, ValueError):
        return False
    return True


def _open_context(codec: str, mode: Literal["r", "w"]) -> AudioCodecContext:
    context = av.CodecContext.create(codec, mode)
    if not isinstance(context, AudioCodecContext):  # pragma: no cover - FFmpeg contract
        raise CodecError(f"FFmpeg codec {codec!r} is not an audio codec")
    return context


class AvEncoder:
    """An FFmpeg encoder fed int16 mono PCM, one packet per `frame_samples`.

    Args:
        codec: FFmpeg encoder name ("g722", "libopus").
        sample_rate: PCM sample rate in Hz.
        frame_samples: samples per packet; `encode` takes whole multiples.
        options: FFmpeg private/generic options, e.g. {"application": "voip"}.
        bit_rate: target bit rate, for codecs that have one.
    """

    def __init__(
        self,
        codec: str,
        *,
        sample_rate: int,
        frame_samples: int,
        options: dict[str, str] | None = None,
        bit_rate: int | None = None,
    ) -> None:
        context = _open_context(codec, "w")
        context.sample_rate = sample_rate
        context.layout = "mono"
        context.format = "s16"
        if bit_rate is not None:
            context.bit_rate = bit_rate
        if options:
            context.options = dict(options)
        try:
            context.open()
        except av.error.FFmpegError as exc:
            raise CodecError(f"cannot open {codec} encoder: {exc}") from exc
        if context.frame_size and context.frame_size != frame_samples:
            # PyAV would silently buffer partial frames and hand back fewer
            # packets than frames put in; refuse instead of drifting.
            raise CodecError(
                f"{codec} encoder uses {context.frame_size}-sample frames, not {frame_samples}"
            )
        self._context = context
        self._sample_rate = sample_rate
        self.frame_samples = frame_samples
        self._pts = 0

    def encode(self, pcm: PcmArray) -> list[bytes]:
        """Encode a whole number of frames.

        Args:
            pcm: 1-D int16 samples, a multiple of `frame_samples` long.

        Returns:
            One packet per frame, in order.

        Raises:
            CodecError: the length is not a whole number of frames, or FFmpeg failed.
        """
        count, remainder = divmod(len(pcm), self.frame_samples)
        if remainder or not count:
            raise CodecError(
                f"cannot encode {len(pcm)} samples: need a multiple of {self.frame_samples}"
            )
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self._sample_rate
        frame.pts = self._pts
        self._pts += len(pcm)
        try:
            packets = [bytes(packet) for packet in self._context.encode(frame)]
        except av.error.FFmpegError as exc:
            raise CodecError(f"encoder failed: {exc}") from exc
        if len(packets) != count:
            raise CodecError(f"encoder returned {len(packets)} packets for {count} frames")
        return packets


class AvDecoder:
    """An FFmpeg decoder producing int16 mono PCM.

    Args:
        codec: FFmpeg decoder name ("g722", "libopus", "opus").
        sample_rate: PCM sample rate in Hz the caller expects.
    """

    def __init__(self, codec: str, *, sample_rate: int) -> None:
        context = _open_context(codec, "r")
        context.sample_rate = sample_rate
        # Ask for mono: libopus then downmixes stereo streams itself.
        context.layout = "mono"
        # A request only: FFmpeg's native Opus decoder ignores it and gives float.
        context.format = "s16"
        try:
            context.open()
        except av.error.FFmpegError as exc:
            raise CodecError(f"cannot open {codec} decoder: {exc}") from exc
        self._context = context
        self._sample_rate = sample_rate

    def decode(self, payload: bytes | bytearray | memoryview) -> PcmArray:
        """Decode one packet.

        Args:
            payload: the coded packet.

        Returns:
            1-D int16 mono samples (empty for an empty payload).

        Raises:
            CodecError: FFmpeg rejected the packet.
        """
        if not payload:
            # An empty packet means "drain" to FFmpeg and would end the stream.
            return np.zeros(0, dtype=np.int16)
        try:
            frames = self._context.decode(av.Packet(bytes(payload)))
        except av.error.FFmpegError as exc:
            raise CodecError(f"corrupt payload ({len(payload)} bytes): {exc}") from exc
        if not frames:
            return np.zeros(0, dtype=np.int16)
        for frame in frames:
            if frame.sample_rate != self._sample_rate or frame.layout.nb_channels != 1:
                raise CodecError(
                    f"decoder produced {frame.sample_rate} Hz {frame.layout.name},"
                    f" expected {self._sample_rate} Hz mono"
                )
        chunks = [_to_int16(frame.to_ndarray()) for frame in frames]
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def _to_int16(samples: npt.NDArray[np.generic]) -> PcmArray:
    # Mono frames arrive as shape (1, n): s16 from most decoders, float from
    # FFmpeg's native Opus decoder, which cannot be asked for s16.
    flat = samples.reshape(-1)
    if flat.dtype == np.int16:
        return flat.astype(np.int16, copy=False)
    scaled = np.rint(flat.astype(np.float64) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)
