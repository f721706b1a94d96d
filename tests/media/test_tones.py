"""ToneDetector: beeps and fax tones found, speech and noise not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mediaserver.media.tones import ToneDetector
from tests.peers import read_wav_mono, speech_wav

RATE = 8000


def tone(freq: float, seconds: float, level: float = 6000.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def run(detector: ToneDetector, pcm: np.ndarray, chunk: int = 160) -> list:  # type: ignore[type-arg]
    found = []
    for i in range(0, len(pcm), chunk):
        found += detector.feed(pcm[i : i + chunk])
    return found


@pytest.mark.parametrize("freq", [440.0, 1000.0, 1100.0, 1400.0, 2100.0])
def test_a_beep_is_found_with_its_frequency_and_start(freq: float) -> None:
    pcm = np.concatenate([np.zeros(4000, np.int16), tone(freq, 0.6), np.zeros(4000, np.int16)])
    noise = np.random.default_rng(3).normal(0, 200, len(pcm))
    (found,) = run(ToneDetector(RATE), np.clip(pcm + noise, -32768, 32767).astype(np.int16))
    assert abs(found.frequency - freq) < freq * 0.02
    assert abs(found.start - 0.5) < 0.05 and found.duration >= 0.4


def test_short_blips_speech_and_noise_are_not_tones(tmp_path: Path) -> None:
    speech, _ = read_wav_mono(
        speech_wav("hello, you have reached the office of doctor Smith", tmp_path)
    )
    noise = np.random.default_rng(1).normal(0, 2000, RATE * 2).astype(np.int16)
    blip = np.concatenate([tone(1000, 0.08), np.zeros(RATE, np.int16)])
    for pcm in (speech, noise, blip, np.zeros(RATE, np.int16)):
        assert run(ToneDetector(RATE), pcm) == []


def test_a_long_tone_is_reported_while_it_lasts_and_chunking_does_not_matter() -> None:
    pcm = tone(1000, 3.0)
    detector = ToneDetector(RATE)
    first = run(detector, pcm[: RATE // 2])
    assert len(first) == 1 and detector.tonal  # reported after 0.4 s, still going
    assert run(detector, pcm[RATE // 2 :]) == []  # once per tone
    whole = run(ToneDetector(RATE), pcm, chunk=7)
    assert [t.frequency for t in whole] == [t.frequency for t in first]


def test_works_at_16_khz() -> None:
    t = np.arange(16000) / 16000
    pcm = (6000 * np.sin(2 * np.pi * 850 * t)).astype(np.int16)
    (found,) = run(ToneDetector(16000), pcm, chunk=320)
    assert abs(found.frequency - 850) < 10
