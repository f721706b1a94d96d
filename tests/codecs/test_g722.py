"""G.722 through PyAV: bit exact with a reference, round trip quality, state across frames."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from mediaserver.codecs.base import CodecError
from mediaserver.codecs.g722 import (
    G722_CLOCK_RATE,
    G722_SAMPLE_RATE,
    G722Codec,
    G722Decoder,
    G722Encoder,
    g722_available,
)
from tests.codecs import g722_reference
from tests.codecs.audio import Pcm, aligned, find_delay, frames_of, snr_db, whole_frames

pytestmark = pytest.mark.skipif(not g722_available(), reason="PyAV/FFmpeg built without g722")

FRAME = 320  # 20 ms at 16 kHz
CODEC_DELAY = 22  # samples at 16 kHz: the transmit plus receive QMF


def one_second(speech: Callable[[int], Pcm]) -> Pcm:
    pcm = whole_frames(speech(G722_SAMPLE_RATE), FRAME)
    assert len(pcm) >= 16000
    return pcm[:16000]


def test_encoder_is_bit_exact_with_the_reference(speech: Callable[[int], Pcm]) -> None:
    # A quarter second keeps the pure-Python reference fast; it crosses many
    # frames and exercises both bands' adaptation.
    pcm = one_second(speech)[16 * FRAME : 29 * FRAME]
    assert G722Encoder().encode(pcm) == g722_reference.Encoder().encode(pcm.tolist())


def test_encoder_is_bit_exact_at_full_scale() -> None:
    # Saturation paths in the predictor only show up with loud, harsh input.
    rng = np.random.default_rng(11)
    pcm = np.clip(rng.normal(0, 20000, 10 * FRAME), -32768, 32767).astype(np.int16)
    assert G722Encoder().encode(pcm) == g722_reference.Encoder().encode(pcm.tolist())


def test_decoder_is_bit_exact_with_the_reference() -> None:
    # Arbitrary bytes are all valid G.722 and drive the decoder everywhere.
    payload = np.random.default_rng(12).integers(0, 256, 1601, dtype=np.uint8).tobytes()
    expected = np.array(g722_reference.Decoder().decode(payload), dtype=np.int16)
    np.testing.assert_array_equal(G722Decoder().decode(payload), expected)


def test_round_trip_snr_on_speech(speech: Callable[[int], Pcm]) -> None:
    pcm = whole_frames(speech(G722_SAMPLE_RATE), FRAME)
    encoder, decoder = G722Encoder(), G722Decoder()
    payloads = [encoder.encode(frame) for frame in frames_of(pcm, FRAME)]
    assert {len(p) for p in payloads} == {160}
    decoded = np.concatenate([decoder.decode(p) for p in payloads])
    assert len(decoded) == len(pcm)

    delay = find_delay(pcm, decoded, max_lag=200)
    assert delay == CODEC_DELAY
    reference, output = aligned(pcm, decoded, delay)
    # 64 kbit/s G.722 gives ~25 dB on espeak-ng speech, ~33 dB on the synthetic voice.
    assert snr_db(reference, output) > 20
    assert np.corrcoef(reference, output)[0, 1] > 0.99


def test_encoding_frame_by_frame_equals_encoding_at_once(speech: Callable[[int], Pcm]) -> None:
    pcm = one_second(speech)
    encoder = G722Encoder()
    streamed = b"".join(encoder.encode(frame) for frame in frames_of(pcm, FRAME))
    at_once = G722Encoder().encode(pcm)
    assert len(streamed) == 8000
    assert streamed == at_once


def test_state_carries_across_frames(speech: Callable[[int], Pcm]) -> None:
    # Restarting the codec every frame gives different bytes: the state matters,
    # so the equality above is not trivially true.
    pcm = one_second(speech)
    restarted = b"".join(G722Encoder().encode(frame) for frame in frames_of(pcm, FRAME))
    assert restarted != G722Encoder().encode(pcm)


def test_decoding_frame_by_frame_equals_decoding_at_once(speech: Callable[[int], Pcm]) -> None:
    payload = G722Encoder().encode(one_second(speech))
    decoder = G722Decoder()
    streamed = np.concatenate([decoder.decode(payload[i : i + 160]) for i in range(0, 8000, 160)])
    np.testing.assert_array_equal(streamed, G722Decoder().decode(payload))


def test_other_frame_sizes() -> None:
    encoder = G722Encoder(frame_samples=160)  # 10 ms packets
    assert len(encoder.encode(np.zeros(160, np.int16))) == 80
    assert len(encoder.encode(np.zeros(480, np.int16))) == 240  # three frames at once
    with pytest.raises(ValueError, match="even"):
        G722Encoder(frame_samples=161)


def test_partial_frames_are_refused_rather_than_buffered() -> None:
    encoder = G722Encoder()
    with pytest.raises(CodecError, match="multiple of 320"):
        encoder.encode(np.zeros(100, np.int16))
    with pytest.raises(CodecError):
        encoder.encode(np.zeros(0, np.int16))
    # The refused call left no samples behind: the next frame is still one packet.
    assert len(encoder.encode(np.zeros(FRAME, np.int16))) == 160


@pytest.mark.parametrize("size", [0, 1, 7, 159, 161, 1000])
def test_decoder_takes_any_payload_size(size: int) -> None:
    decoder = G722Decoder()
    payload = (bytes(range(256)) * 4)[:size]
    assert decoder.decode(payload).shape == (2 * size,)
    # An empty payload must not drain FFmpeg's decoder: it keeps working after.
    assert decoder.decode(b"\x55" * 160).shape == (320,)


def test_codec_object() -> None:
    codec = G722Codec()
    assert codec.name == "G722" and codec.payload_type == 9
    assert codec.clock_rate == G722_CLOCK_RATE == 8000
    assert codec.sample_rate == 16000 and codec.frame_samples == 320
    assert codec.timestamp_step == 160  # the RTP clock runs at half the sample rate
    assert not codec.stateless
    payload = codec.encode(np.zeros(FRAME, np.int16))
    assert len(payload) == 160
    assert codec.decode(payload).shape == (320,)
    assert G722Codec(ptime_ms=30).frame_samples == 480
