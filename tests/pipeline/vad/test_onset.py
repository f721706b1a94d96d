"""The fast onset test used to pause the agent on barge-in (sans-IO, no peers)."""

from __future__ import annotations

import subprocess
import wave

import numpy as np
import pytest

from mediaserver.codecs.resample import resample
from mediaserver.pipeline.vad.onset import OnsetDetector


def feed(det: OnsetDetector, pcm: np.ndarray, armed: bool = True) -> list[int]:
    """Feed 20 ms packets; the indexes of packets where an onset completed."""
    hits = []
    for i, start in enumerate(range(0, len(pcm), 160)):
        if det.update(pcm[start : start + 160], armed=armed):
            hits.append(i)
    return hits


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    path = tmp_path_factory.mktemp("onset") / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "stop right there"], check=True, timeout=30)
    with wave.open(str(path)) as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        return resample(pcm, wav.getframerate(), 8000)


def test_speech_onset_fires_within_a_few_packets(hello: np.ndarray) -> None:
    det = OnsetDetector(8000)
    silence = np.zeros(8000, dtype=np.int16)
    assert feed(det, silence) == []
    hits = feed(det, hello)
    assert hits and hits[0] <= 3  # within 80 ms of the first packet with speech
    frames = hello[: len(hello) // 160 * 160].reshape(-1, 160).astype(float)
    first_loud = int(np.argmax(np.sqrt((frames**2).mean(1)) > 300))
    assert hits[0] - first_loud <= 3


def test_not_armed_never_fires(hello: np.ndarray) -> None:
    det = OnsetDetector(8000)
    assert feed(det, hello, armed=False) == []


def test_a_steady_noise_becomes_the_floor() -> None:
    noise = (np.random.default_rng(3).standard_normal(8000 * 4) * 600).astype(np.int16)
    det = OnsetDetector(8000)
    feed(det, noise[: 8000 * 3], armed=False)  # the line's noise while the caller listens
    assert feed(det, noise[8000 * 3 :]) == []
    assert det.floor_db > -40


def test_quiet_audio_is_not_speech() -> None:
    det = OnsetDetector(8000)
    hum = (np.sin(np.arange(8000) * 2 * np.pi * 200 / 8000) * 100).astype(np.int16)
    assert feed(det, hum) == []


def test_rates_without_webrtcvad_use_energy_alone() -> None:
    det = OnsetDetector(44100)  # not a webrtcvad rate
    loud = (np.random.default_rng(1).standard_normal(4410) * 8000).astype(np.int16)
    assert det.update(np.zeros(4410, dtype=np.int16)) is False
    assert det.update(loud) is True


def test_carry_between_packets_of_odd_sizes(hello: np.ndarray) -> None:
    a, b = OnsetDetector(8000), OnsetDetector(8000)
    whole = feed(a, hello)
    pieces = [hello[i : i + 123] for i in range(0, len(hello), 123)]
    got = [i for i, p in enumerate(pieces) if b.update(p)]
    assert bool(whole) == bool(got)
