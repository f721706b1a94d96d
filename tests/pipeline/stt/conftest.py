"""Fixtures shared by the STT tests: espeak-ng speech at 16 kHz, optionally
through the telephone path (8 kHz, G.711 u-law round trip, back to 16 kHz)."""

from __future__ import annotations

import subprocess
import wave
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from mediaserver.codecs.g711 import ulaw_decode, ulaw_encode
from mediaserver.codecs.resample import resample
from mediaserver.pipeline.stt import STT_RATE

Pcm = npt.NDArray[np.int16]


@pytest.fixture(scope="module")
def speak(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, bool], Pcm]:
    folder = tmp_path_factory.mktemp("speech")

    def synth(text: str, phone: bool = False) -> Pcm:
        path = folder / (text.replace(" ", "_") + ".wav")
        if not path.exists():
            subprocess.run(["espeak-ng", "-w", str(path), text], check=True, timeout=20)
        with wave.open(str(path)) as wav:
            rate = wav.getframerate()
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        if not phone:
            return resample(pcm, rate, STT_RATE)
        narrow = ulaw_decode(ulaw_encode(resample(pcm, rate, 8000)))
        return resample(narrow, 8000, STT_RATE)

    return synth
