"""Fixtures for the codec tests: a speech signal at the codecs' rates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mediaserver.codecs.resample import resample
from tests.codecs.audio import Pcm, espeak_speech, speech_like


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Pcm]:
    """``speech(rate)``: a few seconds of speech as int16 at `rate`.

    Real synthesised speech from espeak-ng when it is installed, otherwise a
    synthetic speech-like signal (the tests' thresholds hold for both).
    """
    workdir: Path = tmp_path_factory.mktemp("speech")
    spoken = espeak_speech(workdir)
    cache: dict[int, Pcm] = {}

    def at(rate: int) -> Pcm:
        if rate not in cache:
            if spoken is None:
                cache[rate] = speech_like(rate, 3.0)
            else:
                pcm, native = spoken
                cache[rate] = resample(pcm, native, rate)
        return cache[rate]

    return at
