"""G.711: the vectorised tables against a per-sample transcription of the reference."""

from __future__ import annotations

import numpy as np
import pytest

from mediaserver.codecs.g711 import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    AlawCodec,
    UlawCodec,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)
from tests.codecs.audio import snr_db, tone

# ---------------------------------------------------------------------------
# The Sun Microsystems g711.c algorithms, one sample at a time, as written in C
# (including its linear segment search), to check the numpy tables against.
# ---------------------------------------------------------------------------

SEG_AEND = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]
SEG_UEND = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]
BIAS = 0x84
CLIP = 8159


def search(value: int, table: list[int]) -> int:
    for i, end in enumerate(table):
        if value <= end:
            return i
    return len(table)


def linear2alaw(pcm_val: int) -> int:
    pcm_val = pcm_val >> 3
    if pcm_val >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm_val = -pcm_val - 1
    seg = search(pcm_val, SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    if seg < 2:
        aval |= (pcm_val >> 1) & 0x0F
    else:
        aval |= (pcm_val >> seg) & 0x0F
    return aval ^ mask


def alaw2linear(a_val: int) -> int:
    a_val ^= 0x55
    t = (a_val & 0x0F) << 4
    seg = (a_val & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t += 0x108
        t <<= seg - 1
    return t if a_val & 0x80 else -t


def linear2ulaw(pcm_val: int) -> int:
    pcm_val = pcm_val >> 2
    if pcm_val < 0:
        pcm_val = -pcm_val
        mask = 0x7F
    else:
        mask = 0xFF
    if pcm_val > CLIP:
        pcm_val = CLIP
    pcm_val += BIAS >> 2
    seg = search(pcm_val, SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    uval = (seg << 4) | ((pcm_val >> (seg + 1)) & 0x0F)
    return uval ^ mask


def ulaw2linear(u_val: int) -> int:
    u_val = ~u_val & 0xFF
    t = ((u_val & 0x0F) << 3) + BIAS
    t <<= (u_val & 0x70) >> 4
    return BIAS - t if u_val & 0x80 else t - BIAS


ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


# ---------------------------------------------------------------------------
# Bit exactness
# ---------------------------------------------------------------------------


def test_ulaw_encode_matches_reference_for_every_sample() -> None:
    expected = np.array([linear2ulaw(int(x)) for x in ALL_SAMPLES], dtype=np.uint8)
    np.testing.assert_array_equal(ulaw_encode(ALL_SAMPLES), expected)


def test_alaw_encode_matches_reference_for_every_sample() -> None:
    expected = np.array([linear2alaw(int(x)) for x in ALL_SAMPLES], dtype=np.uint8)
    np.testing.assert_array_equal(alaw_encode(ALL_SAMPLES), expected)


def test_ulaw_decode_matches_reference_for_every_code() -> None:
    expected = np.array([ulaw2linear(int(c)) for c in ALL_CODES], dtype=np.int16)
    np.testing.assert_array_equal(ulaw_decode(ALL_CODES), expected)


def test_alaw_decode_matches_reference_for_every_code() -> None:
    expected = np.array([alaw2linear(int(c)) for c in ALL_CODES], dtype=np.int16)
    np.testing.assert_array_equal(alaw_decode(ALL_CODES), expected)


@pytest.mark.parametrize(
    ("sample", "ulaw", "alaw"),
    [
        (0, 0xFF, 0xD5),  # silence: the idle codes on a G.711 line
        (-1, 0x7E, 0x55),
        (8, 0xFE, 0xD5),  # A-law's first step is 16 wide
        (32767, 0x80, 0xAA),  # positive full scale
        (-32768, 0x00, 0x2A),  # negative full scale
        (1000, 0xCE, 0xFA),
        (-1000, 0x4E, 0x7A),
    ],
)
def test_known_encodings(sample: int, ulaw: int, alaw: int) -> None:
    assert ulaw_encode(np.int16(sample)) == ulaw
    assert alaw_encode(np.int16(sample)) == alaw
    assert linear2ulaw(sample) == ulaw and linear2alaw(sample) == alaw


@pytest.mark.parametrize(
    ("code", "ulaw", "alaw"),
    [
        (0x00, -32124, -5504),
        (0x80, 32124, 5504),
        (0xFF, 0, 848),
        (0x7F, 0, -848),  # u-law has a negative zero
        (0x55, -716, -8),  # A-law has none: its smallest levels are +-8
        (0xD5, 716, 8),
        (0x2A, -5372, -32256),
        (0xAA, 5372, 32256),
    ],
)
def test_known_decodings(code: int, ulaw: int, alaw: int) -> None:
    assert ulaw_decode(np.uint8(code)) == ulaw
    assert alaw_decode(np.uint8(code)) == alaw
    assert ulaw2linear(code) == ulaw and alaw2linear(code) == alaw


def test_silence_constants() -> None:
    assert ulaw_encode(np.zeros(1, np.int16))[0] == ULAW_SILENCE
    assert alaw_encode(np.zeros(1, np.int16))[0] == ALAW_SILENCE


# ---------------------------------------------------------------------------
# Properties of the companding laws
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)]
)
def test_decode_encode_decode_is_stable(encode, decode) -> None:  # type: ignore[no-untyped-def]
    levels = decode(ALL_CODES)
    np.testing.assert_array_equal(decode(encode(levels)), levels)


def test_every_code_survives_a_round_trip_except_ulaw_negative_zero() -> None:
    np.testing.assert_array_equal(alaw_encode(alaw_decode(ALL_CODES)), ALL_CODES)
    back = ulaw_encode(ulaw_decode(ALL_CODES))
    mismatched = ALL_CODES[back != ALL_CODES]
    # 0x7F decodes to 0, which encodes as the positive zero 0xFF.
    assert mismatched.tolist() == [0x7F]


@pytest.mark.parametrize(
    ("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)]
)
def test_quantisation_is_monotonic(encode, decode) -> None:  # type: ignore[no-untyped-def]
    steps = np.diff(decode(encode(ALL_SAMPLES)).astype(np.int32))
    assert (steps >= 0).all()


@pytest.mark.parametrize(
    ("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)]
)
def test_speech_level_tone_has_the_expected_snr(encode, decode) -> None:  # type: ignore[no-untyped-def]
    # G.711's companding keeps SNR around 35-38 dB over a wide range of levels.
    for amplitude in (1000.0, 8000.0, 30000.0):
        pcm = tone(1004, 8000, 0.5, amplitude)
        assert snr_db(pcm, decode(encode(pcm))) > 30


# ---------------------------------------------------------------------------
# Shapes, batching, input types
# ---------------------------------------------------------------------------


def test_batch_of_frames_codes_like_each_frame() -> None:
    rng = np.random.default_rng(7)
    frames = rng.integers(-32768, 32768, size=(64, 160), dtype=np.int16)
    for encode, decode in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        codes = encode(frames)
        assert codes.shape == (64, 160) and codes.dtype == np.uint8
        for row in range(64):
            np.testing.assert_array_equal(codes[row], encode(frames[row]))
        pcm = decode(codes)
        assert pcm.shape == (64, 160) and pcm.dtype == np.int16
        np.testing.assert_array_equal(pcm[5], decode(codes[5].tobytes()))


def test_any_shape_and_non_contiguous_views() -> None:
    rng = np.random.default_rng(8)
    cube = rng.integers(-32768, 32768, size=(3, 4, 160), dtype=np.int16)
    assert ulaw_encode(cube).shape == (3, 4, 160)
    strided = cube[:, ::2, ::3]
    np.testing.assert_array_equal(alaw_encode(strided), alaw_encode(strided.copy()))
    assert ulaw_decode(np.zeros((2, 0), np.uint8)).shape == (2, 0)


def test_out_parameter_writes_in_place() -> None:
    frames = np.full((4, 160), 1000, dtype=np.int16)
    codes = np.empty((4, 160), dtype=np.uint8)
    assert ulaw_encode(frames, out=codes) is codes
    assert (codes == 0xCE).all()
    pcm = np.empty((4, 160), dtype=np.int16)
    assert ulaw_decode(codes, out=pcm) is pcm


def test_decode_accepts_bytes_like() -> None:
    payload = bytes([0xFF, 0x7F, 0x00, 0x80])
    for data in (payload, bytearray(payload), memoryview(payload)):
        assert ulaw_decode(data).tolist() == [0, 0, -32124, 32124]


def test_wrong_dtypes_are_refused_not_wrapped() -> None:
    with pytest.raises(TypeError, match="int16"):
        ulaw_encode(np.array([40000], dtype=np.int32))
    with pytest.raises(TypeError, match="int16"):
        alaw_encode(np.array([0.5], dtype=np.float32))
    with pytest.raises(TypeError, match="uint8"):
        ulaw_decode(np.array([1, 2], dtype=np.int16))


# ---------------------------------------------------------------------------
# The registry codecs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "pt"), [(UlawCodec, 0), (AlawCodec, 8)])
def test_codec_objects(cls: type[UlawCodec] | type[AlawCodec], pt: int) -> None:
    codec = cls()
    assert (codec.clock_rate, codec.sample_rate, codec.payload_type) == (8000, 8000, pt)
    assert codec.frame_samples == 160 and codec.timestamp_step == 160 and codec.stateless
    pcm = tone(440, 8000, 0.02)
    payload = codec.encode(pcm)
    assert isinstance(payload, bytes) and len(payload) == 160
    assert snr_db(pcm, codec.decode(payload)) > 30
    # Any payload length decodes, one sample per byte.
    for size in (0, 1, 161, 1500):
        assert codec.decode(bytes(size)).shape == (size,)


def test_codec_encode_wants_mono_int16() -> None:
    with pytest.raises(ValueError, match="1-D"):
        UlawCodec().encode(np.zeros((2, 160), np.int16))
    with pytest.raises(TypeError):
        AlawCodec().encode(np.zeros(160, np.float32))
