"""The codec registry: names and rates agree with the SDP module, creation, bad payloads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver.codecs import Codec, CodecError, available, create, names
from mediaserver.sip.sdp import CODECS

MEDIA_CODECS = ["PCMU", "PCMA", "G722", "opus", "L16"]


def test_everything_is_available_here() -> None:
    assert names() == MEDIA_CODECS
    assert available() == MEDIA_CODECS


@pytest.mark.parametrize("name", MEDIA_CODECS)
def test_defaults_match_the_sdp_registry(name: str) -> None:
    spec = CODECS[name.upper()]
    codec = create(name)
    assert codec.name == spec.name
    assert codec.clock_rate == spec.clock_rate
    assert codec.channels == spec.channels
    assert codec.payload_type == spec.static_pt


def test_every_sdp_audio_codec_can_be_created_from_its_rtpmap() -> None:
    for key, spec in CODECS.items():
        if key == "TELEPHONE-EVENT":
            continue  # DTMF events are handled by the media layer, not a codec
        codec = create(
            spec.name, clock_rate=spec.clock_rate, channels=spec.channels, fmtp=spec.fmtp
        )
        assert isinstance(codec, Codec) and codec.name == spec.name


@pytest.mark.parametrize(
    ("name", "sample_rate", "frame", "payload_bytes"),
    [
        ("PCMU", 8000, 160, 160),
        ("PCMA", 8000, 160, 160),
        ("G722", 16000, 320, 160),
        ("L16", 16000, 320, 640),
        ("opus", 48000, 960, None),
    ],
)
def test_one_frame_round_trip(
    name: str, sample_rate: int, frame: int, payload_bytes: int | None
) -> None:
    encoder, decoder = create(name), create(name)
    assert encoder.sample_rate == sample_rate and encoder.frame_samples == frame
    pcm = np.round(3000 * np.sin(np.arange(frame) * 2 * np.pi * 440 / sample_rate)).astype(np.int16)
    payload = encoder.encode(pcm)
    if payload_bytes is not None:
        assert len(payload) == payload_bytes
    decoded = decoder.decode(payload)
    assert decoded.dtype == np.int16 and decoded.shape == (frame,)


def test_names_are_case_insensitive() -> None:
    assert create("pcmu").name == "PCMU"
    assert create("OPUS").name == "opus"
    assert create("g722").payload_type == 9


def test_parameters_from_sdp() -> None:
    assert create("L16", clock_rate=8000).sample_rate == 8000
    assert create("L16", clock_rate=44100, channels=2).payload_type == 10
    assert create("opus", channels=1).channels == 1
    assert create("PCMA", ptime_ms=30).frame_samples == 240
    opus = create("opus", fmtp="maxaveragebitrate=12000")
    assert getattr(opus, "bitrate", None) == 12000


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("GSM", {}, "unknown codec"),
        ("telephone-event", {}, "unknown codec"),
        ("PCMU", {"clock_rate": 16000}, "8000"),
        ("G722", {"clock_rate": 16000}, "8000"),  # RFC 3551: G.722 is signalled at 8000
        ("opus", {"clock_rate": 16000}, "48000"),
        ("PCMU", {"channels": 2}, "channels"),
        ("L16", {"clock_rate": 0}, "clock rate"),
        ("opus", {"ptime_ms": 30}, "ptime"),
        ("PCMU", {"ptime_ms": 0}, "whole number"),
    ],
)
def test_unsupported_requests_raise_codec_error(
    name: str, kwargs: dict[str, int], message: str
) -> None:
    with pytest.raises(CodecError, match=message):
        create(name, **kwargs)  # type: ignore[arg-type]


def test_instances_keep_separate_state() -> None:
    # Two calls through two G.722 instances, interleaved frame by frame, must
    # code exactly as if each ran alone.
    rng = np.random.default_rng(5)
    call_a = rng.integers(-8000, 8000, size=(10, 320), dtype=np.int16)
    call_b = rng.integers(-8000, 8000, size=(10, 320), dtype=np.int16)
    enc_a, enc_b = create("G722"), create("G722")
    interleaved_a, interleaved_b = [], []
    for frame_a, frame_b in zip(call_a, call_b):
        interleaved_a.append(enc_a.encode(frame_a))
        interleaved_b.append(enc_b.encode(frame_b))
    alone = create("G722")
    assert [alone.encode(frame) for frame in call_a] == interleaved_a


def test_codec_repr_names_the_format() -> None:
    assert "G722/8000" in repr(create("G722"))


@pytest.mark.parametrize("name", MEDIA_CODECS)
@settings(max_examples=60, deadline=None)
@given(payload=st.binary(max_size=1500))
def test_decoding_garbage_never_crashes(name: str, payload: bytes) -> None:
    codec = create(name)
    try:
        pcm = codec.decode(payload)
    except CodecError:
        return
    assert pcm.dtype == np.int16 and pcm.ndim == 1
