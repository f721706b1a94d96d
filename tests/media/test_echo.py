"""The echo canceller: the agent's voice coming back is removed, the caller's is not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mediaserver.codecs.g711 import ulaw_decode, ulaw_encode
from mediaserver.media.echo import EchoCanceller
from tests.peers import read_wav_mono, speech_wav

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


def moving_echo(far: np.ndarray, delays: list[float], at: int, db: float) -> np.ndarray:
    """An echo whose path moves at sample `at` from delays[0] to delays[1]
    (a phone's adaptive playout growing or shrinking its buffer)."""
    before, after = (echo_of(far, d, db) for d in delays)
    return np.concatenate([before[:at], after[at:]])


@pytest.mark.parametrize("moves", [0.02, -0.04, 0.06])
def test_an_echo_path_that_moves_is_followed_within_a_few_frames(moves: float) -> None:
    far = g711(talk(6.0, 1))
    at = 3 * RATE
    near = g711(moving_echo(far, [0.15, 0.15 + moves], at, -12))
    _, out = run(far, near)
    # Frame by frame after the move: the frame that shows the path moved is
    # where it is found again, so at most one frame passes.
    loud = [
        power_db(near[i : i + FRAME]) - power_db(out[i : i + FRAME])
        for i in range(at, at + RATE, FRAME)
        if power_db(near[i : i + FRAME]) > 50
    ]
    assert sum(1 for gain in loud if gain < 10) <= 1, [round(g) for g in loud]


def voice(tmp_path: Path) -> np.ndarray:
    """Six seconds of espeak-ng speech: voiced sounds correlate with themselves
    a pitch period away, the trap for a search over a few frames."""
    text = "Once upon a time there was a small robot who lived in a lighthouse by the sea."
    pcm, rate = read_wav_mono(speech_wav(text, tmp_path))
    assert rate == RATE
    return np.resize(pcm, 6 * RATE)


@pytest.mark.parametrize("source", ["noise", "voice"])
def test_an_echo_that_starts_mid_call_is_cancelled_from_its_first_frames(
    source: str, tmp_path: Path
) -> None:
    # Three seconds without echo, then a speakerphone is switched on.
    far = g711(talk(6.0, 1) if source == "noise" else voice(tmp_path))
    at = 3 * RATE
    echo = echo_of(far, 0.18, -12)
    echo[:at] = 0
    near = g711(echo)
    _, out = run(far, near)
    leaked = [
        i
        for i in range(at, at + RATE, FRAME)
        if power_db(near[i : i + FRAME]) > 50
        and power_db(near[i : i + FRAME]) - power_db(out[i : i + FRAME]) < 10
    ]
    assert len(leaked) <= 1, leaked


def test_a_caller_louder_than_any_echo_is_not_held() -> None:
    far = g711(talk(3.0, 1))
    # Louder than anything we send (at most ~3000 RMS): it cannot be our echo.
    caller = g711(np.random.default_rng(9).standard_normal(len(far)) * 8000)
    canceller = EchoCanceller(RATE)
    for i in range(0, len(far), FRAME):
        canceller.far(far[i : i + FRAME], FRAME)
        frame = caller[i : i + FRAME]
        (out,) = canceller.near(frame)  # at once, untouched
        assert out is frame
