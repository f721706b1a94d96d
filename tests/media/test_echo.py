"""The echo canceller: the agent's voice coming back is removed, the caller's is not."""

from __future__ import annotations

import numpy as np
import pytest

from mediaserver.codecs.g711 import ulaw_decode, ulaw_encode
from mediaserver.media.echo import EchoCanceller

RATE = 8000
FRAME = 160


def talk(seconds: float, seed: int, syllables: float = 3.0) -> np.ndarray:
    """Speech-like audio: noise in syllable-rate bursts (int16)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = np.abs(np.sin(np.pi * syllables * t + seed))
    return (rng.standard_normal(len(t)) * envelope * 3000).astype(np.int16)


def g711(pcm: np.ndarray) -> np.ndarray:
    return ulaw_decode(ulaw_encode(np.clip(pcm, -32768, 32767).astype(np.int16)))


def echo_of(far: np.ndarray, delay: float, db: float) -> np.ndarray:
    """A phone's echo: delayed, attenuated, through a short room response."""
    lag = int(delay * RATE)
    delayed = np.concatenate([np.zeros(lag), far[: len(far) - lag].astype(np.float64)])
    return np.convolve(delayed * 10 ** (db / 20), [1.0, 0.35, -0.15, 0.05])[: len(far)]


def run(far: np.ndarray, near: np.ndarray) -> tuple[EchoCanceller, np.ndarray]:
    canceller, out = EchoCanceller(RATE), []
    for i in range(0, len(far), FRAME):
        out += canceller.near(near[i : i + FRAME])
        canceller.far(far[i : i + FRAME], FRAME)
    # Frames held at the start come out later, in order; none is lost.
    held = [f for f, _ in canceller.held_frames()]
    assert sum(len(f) for f in out + held) == len(near)
    out += held
    return canceller, np.concatenate(out).astype(np.float64)


def power_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-9))


@pytest.mark.parametrize(("delay", "db"), [(0.1, -10.0), (0.2, -18.0), (0.3, -25.0)])
def test_the_agents_echo_is_removed(delay: float, db: float) -> None:
    far = g711(talk(5.0, 1))
    near = g711(echo_of(far, delay, db))
    canceller, out = run(far, near)
    # The delay is known to a frame (the streams are counted, not timed).
    assert canceller.stats.delay == pytest.approx(delay, abs=0.021)
    # After the first second (finding the path), at least 20 dB of it is gone.
    assert power_db(near[RATE:]) - power_db(out[RATE:]) > 20


def test_the_callers_voice_passes_over_the_echo() -> None:
    far = g711(talk(5.0, 1))
    caller = talk(5.0, 7, syllables=2.0)
    caller[: 2 * RATE] = 0  # the caller speaks up after two seconds
    near = g711(echo_of(far, 0.2, -15) + caller)
    _, out = run(far, near)
    residual_caller = out[3 * RATE :] - caller[3 * RATE :]
    # What remains is the caller, within a few dB, and much louder than the echo left.
    assert abs(power_db(out[3 * RATE :]) - power_db(caller[3 * RATE :])) < 3
    assert power_db(caller[3 * RATE :]) - power_db(residual_caller) > 10


def test_without_our_audio_nothing_is_touched() -> None:
    canceller = EchoCanceller(RATE)
    caller = g711(talk(1.0, 3))
    for i in range(0, len(caller), FRAME):
        canceller.far(None, FRAME)
        frame = caller[i : i + FRAME]
        (out,) = canceller.near(frame)
        assert out is frame
    assert canceller.stats.cancelled == 0


def test_unrelated_audio_while_we_talk_passes_unchanged() -> None:
    far = g711(talk(3.0, 1))
    noise = g711(talk(3.0, 9))
    canceller, out = run(far, noise)
    assert canceller.stats.delay is None
    assert np.array_equal(out, noise.astype(np.float64))
