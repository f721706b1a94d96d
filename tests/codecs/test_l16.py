"""L16: network byte order, any rate, channel handling, bad sizes."""

from __future__ import annotations

import numpy as np
import pytest

from mediaserver.codecs.base import CodecError
from mediaserver.codecs.l16 import L16Codec, l16_decode, l16_encode


def test_samples_are_big_endian_signed() -> None:
    pcm = np.array([0, 1, -1, 258, -32768, 32767], dtype=np.int16)
    assert l16_encode(pcm) == bytes.fromhex("0000 0001 ffff 0102 8000 7fff")
    decoded = l16_decode(bytes.fromhex("0000 0001 ffff 0102 8000 7fff"))
    assert decoded.dtype == np.int16 and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, pcm)


def test_round_trip_is_lossless() -> None:
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    np.testing.assert_array_equal(l16_decode(l16_encode(pcm)), pcm)


def test_decoded_array_is_writable_and_independent() -> None:
    payload = bytes.fromhex("0001 0002")
    decoded = l16_decode(payload)
    decoded[0] = 7  # numpy views of bytes are read-only; we must hand out a copy
    assert l16_decode(payload)[0] == 1


def test_stereo_duplicates_and_downmixes() -> None:
    pcm = np.array([100, -200], dtype=np.int16)
    payload = l16_encode(pcm, channels=2)
    assert payload == bytes.fromhex("0064 0064 ff38 ff38")
    np.testing.assert_array_equal(l16_decode(payload, channels=2), pcm)
    mixed = l16_decode(bytes.fromhex("7fff 7fff 8000 8000 0001 0002"), channels=2)
    assert mixed.tolist() == [32767, -32768, 1]  # averaged, never wrapped


@pytest.mark.parametrize(("size", "channels"), [(1, 1), (3, 1), (2, 2), (6, 2)])
def test_partial_samples_raise_codec_error(size: int, channels: int) -> None:
    with pytest.raises(CodecError, match="whole number"):
        l16_decode(bytes(size), channels=channels)


def test_empty_payload_decodes_to_nothing() -> None:
    assert l16_decode(b"").shape == (0,)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        l16_encode(np.zeros(4, np.float32))
    with pytest.raises(ValueError):
        l16_encode(np.zeros(4, np.int16), channels=0)
    with pytest.raises(ValueError):
        l16_decode(b"", channels=0)


@pytest.mark.parametrize(
    ("rate", "channels", "pt", "frame"),
    [
        (8000, 1, None, 160),
        (16000, 1, None, 320),
        (48000, 1, None, 960),
        (44100, 1, 11, 882),
        (44100, 2, 10, 882),
    ],
)
def test_codec_object_at_any_rate(rate: int, channels: int, pt: int | None, frame: int) -> None:
    codec = L16Codec(sample_rate=rate, channels=channels)
    assert codec.clock_rate == codec.sample_rate == rate
    assert codec.payload_type == pt and codec.frame_samples == frame
    assert codec.timestamp_step == frame and codec.stateless
    pcm = np.arange(frame, dtype=np.int16)
    payload = codec.encode(pcm)
    assert len(payload) == 2 * channels * frame
    np.testing.assert_array_equal(codec.decode(payload), pcm)
