"""Audio codecs for RTP and the resampler between their rates.

The registry builds a `Codec` by its SDP encoding name (the names of
`mediaserver.codecs.params.CODECS`)::

    codec = create("G722")                  # one instance per call direction
    payload = codec.encode(pcm_16k_frame)   # 320 int16 samples -> 160 bytes
    pcm = codec.decode(payload)

After an offer/answer exchange, pass what was negotiated::

    rtpmap = negotiated.codec
    rx = create(rtpmap.encoding, clock_rate=rtpmap.clock_rate,
                channels=rtpmap.channels, fmtp=rtpmap.fmtp, ptime_ms=negotiated.ptime)

Modules: `g711` (vectorised u-law/A-law functions for batching many calls),
`g722`, `opus`, `l16`, `resample`. PyAV (FFmpeg) is imported only when a G.722
or Opus codec is first built, so G.711-only users never pay for it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from mediaserver.codecs.base import FRAME_MS, Codec, CodecError, PcmArray, frame_samples

__all__ = [
    "FRAME_MS",
    "Codec",
    "CodecError",
    "PcmArray",
    "available",
    "create",
    "frame_samples",
    "names",
]


@dataclass(frozen=True)
class _Entry:
    name: str
    clock_rates: tuple[int, ...]
    channels: tuple[int, ...]
    build: Callable[[int, int, str | None, int], Codec]
    present: Callable[[], bool]


def _always() -> bool:
    return True


def _build_pcmu(clock_rate: int, channels: int, fmtp: str | None, ptime_ms: int) -> Codec:
    from mediaserver.codecs.g711 import UlawCodec

    return UlawCodec(ptime_ms=ptime_ms)


def _build_pcma(clock_rate: int, channels: int, fmtp: str | None, ptime_ms: int) -> Codec:
    from mediaserver.codecs.g711 import AlawCodec

    return AlawCodec(ptime_ms=ptime_ms)


def _build_g722(clock_rate: int, channels: int, fmtp: str | None, ptime_ms: int) -> Codec:
    from mediaserver.codecs.g722 import G722Codec

    return G722Codec(ptime_ms=ptime_ms)


def _build_opus(clock_rate: int, channels: int, fmtp: str | None, ptime_ms: int) -> Codec:
    from mediaserver.codecs.opus import OpusCodec

    return OpusCodec(ptime_ms=ptime_ms, channels=channels, fmtp=fmtp)


def _build_l16(clock_rate: int, channels: int, fmtp: str | None, ptime_ms: int) -> Codec:
    from mediaserver.codecs.l16 import L16Codec

    return L16Codec(sample_rate=clock_rate, channels=channels, ptime_ms=ptime_ms)


def _g722_present() -> bool:
    try:
        from mediaserver.codecs.g722 import g722_available
    except ImportError:  # pragma: no cover - PyAV is a core dependency
        return False
    return g722_available()


def _opus_present() -> bool:
    try:
        from mediaserver.codecs.opus import opus_available
    except ImportError:  # pragma: no cover - PyAV is a core dependency
        return False
    return opus_available()


# Keyed by upper-cased name, like mediaserver.codecs.params.CODECS. The first clock
# rate and channel count are the defaults and match what that registry announces.
_REGISTRY: dict[str, _Entry] = {
    entry.name.upper(): entry
    for entry in (
        _Entry("PCMU", (8000,), (1,), _build_pcmu, _always),
        _Entry("PCMA", (8000,), (1,), _build_pcma, _always),
        # RTP clock 8000 although the audio is 16 kHz (RFC 3551 4.5.2).
        _Entry("G722", (8000,), (1,), _build_g722, _g722_present),
        # RFC 7587: always written opus/48000/2, whatever the stream carries.
        _Entry("opus", (48000,), (2, 1), _build_opus, _opus_present),
        # L16 takes any rate; 16000 is the default because sdp.CODECS announces L16/16000.
        _Entry("L16", (16000,), (1, 2), _build_l16, _always),
    )
}


def names() -> list[str]:
    """Return every codec name the registry knows, available here or not."""
    return [entry.name for entry in _REGISTRY.values()]


@functools.cache
def available() -> list[str]:
    """Return the codec names that `create` can build in this environment.

    G.711 and L16 are pure numpy; G.722 and Opus need PyAV with FFmpeg's g722
    and libopus codecs.

    Returns:
        Canonical SDP encoding names, e.g. ["PCMU", "PCMA", "G722", "opus", "L16"].
    """
    return [entry.name for entry in _REGISTRY.values() if entry.present()]


def create(
    name: str,
    *,
    clock_rate: int | None = None,
    channels: int | None = None,
    fmtp: str | None = None,
    ptime_ms: int = FRAME_MS,
) -> Codec:
    """Build a codec instance (with fresh state) by SDP encoding name.

    Build one per call direction: the instance keeps that direction's state.

    Args:
        name: encoding name from a=rtpmap, case-insensitive ("pcmu", "OPUS").
        clock_rate: RTP clock rate from a=rtpmap; None for the codec's default.
            L16 takes any rate (it is also the PCM rate); the others have one.
        channels: channel count from a=rtpmap; None for the default (2 for
            Opus per RFC 7587, 1 otherwise). The PCM side is always mono.
        fmtp: the a=fmtp parameters, used by Opus (maxaveragebitrate, useinbandfec).
        ptime_ms: packetisation time; sets `Codec.frame_samples`.

    Returns:
        A new `Codec`.

    Raises:
        CodecError: unknown name, a clock rate or channel count the codec does
            not support, or a backend missing from this PyAV build.
    """
    entry = _REGISTRY.get(name.upper())
    if entry is None:
        raise CodecError(f"unknown codec {name!r} (known: {', '.join(names())})")
    if clock_rate is None:
        clock_rate = entry.clock_rates[0]
    elif entry.name != "L16" and clock_rate not in entry.clock_rates:
        raise CodecError(f"{entry.name} runs at {entry.clock_rates[0]} Hz, not {clock_rate} Hz")
    elif clock_rate <= 0:
        raise CodecError(f"invalid clock rate {clock_rate}")
    if channels is None:
        channels = entry.channels[0]
    elif channels not in entry.channels:
        raise CodecError(f"{entry.name} does not support {channels} channels")
    if entry.name not in available():
        raise CodecError(f"{entry.name} is not available in this build of PyAV/FFmpeg")
    try:
        return entry.build(clock_rate, channels, fmtp, ptime_ms)
    except ValueError as exc:
        # Bad ptime and friends: report them the way the caller already handles.
        if isinstance(exc, CodecError):
            raise
        raise CodecError(f"cannot build {entry.name}: {exc}") from exc
