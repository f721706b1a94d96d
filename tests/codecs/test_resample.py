"""Streaming resampler: continuity at frame edges, pass/stop band, no drift, identity."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest

from mediaserver.codecs.resample import COMMON_RATES, Resampler, resample
from tests.codecs.audio import Pcm, rms_db, tone

PAIRS = [pytest.param(a, b, id=f"{a}-{b}") for a, b in itertools.permutations(COMMON_RATES, 2)]
MODES = [pytest.param(True, id="low-latency"), pytest.param(False, id="block")]
AMPLITUDE = 10000.0


def chunked(resampler: Resampler, pcm: Pcm, chunk: int) -> tuple[list[Pcm], Pcm]:
    """Feed `pcm` in `chunk`-sample pieces; return the pieces out and the flushed tail."""
    outputs = [resampler.process(pcm[i : i + chunk]) for i in range(0, len(pcm), chunk)]
    return outputs, resampler.flush()


def fit_sine(
    pcm: npt.ArrayLike, freq: float, rate: int
) -> tuple[float, float, npt.NDArray[np.float64]]:
    """Least-squares fit of a `freq` sine: (amplitude, delay in seconds, residual)."""
    y = np.asarray(pcm, dtype=np.float64)
    t = np.arange(len(y)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    (s, c), *_ = np.linalg.lstsq(basis, y, rcond=None)
    return float(np.hypot(s, c)), float(-np.arctan2(c, s) / (2 * np.pi * freq)), y - basis @ (s, c)


# ---------------------------------------------------------------------------
# (a) No discontinuity at frame edges
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
@pytest.mark.parametrize("low_latency", MODES)
def test_chunked_equals_one_shot(in_rate: int, out_rate: int, low_latency: bool) -> None:
    pcm = tone(440, in_rate, 1.0, AMPLITUDE)
    pieces, tail = chunked(
        Resampler(in_rate, out_rate, low_latency=low_latency), pcm, in_rate // 50
    )
    streamed = np.concatenate([*pieces, tail])

    whole = Resampler(in_rate, out_rate, low_latency=low_latency)
    one_shot = np.concatenate([whole.process(pcm), whole.flush()])

    assert len(streamed) == len(one_shot)
    difference = np.abs(streamed.astype(np.int32) - one_shot)
    assert difference.max() <= 1  # rounding only


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
@pytest.mark.parametrize("low_latency", MODES)
def test_no_clicks_at_frame_edges(in_rate: int, out_rate: int, low_latency: bool) -> None:
    freq = 440.0
    pcm = tone(freq, in_rate, 1.0, AMPLITUDE)
    pieces, tail = chunked(
        Resampler(in_rate, out_rate, low_latency=low_latency), pcm, in_rate // 50
    )
    output = np.concatenate([*pieces, tail])
    edges = np.cumsum([len(p) for p in pieces])[:-1]

    # Away from the start and end transients the output is a pure sine: any
    # click at a frame edge would show in the residual. ~85 dB is int16's floor.
    steady = slice(out_rate // 5, -out_rate // 5)
    amplitude, delay, residual = fit_sine(output[steady], freq, out_rate)
    assert abs(20 * np.log10(amplitude / AMPLITUDE)) < 0.01
    assert 20 * np.log10(amplitude / np.sqrt(2) / residual.std()) > 70
    assert abs(delay) < 0.5e-3  # a constant sub-millisecond offset at most

    # And the sample-to-sample step at each frame edge is no larger than a
    # sine of this frequency can make (plus rounding).
    steps = np.abs(np.diff(output.astype(np.float64)))
    max_step = AMPLITUDE * 2 * np.pi * freq / out_rate + 2
    inner = edges[(edges > out_rate // 5) & (edges < len(output) - out_rate // 5)]
    assert len(inner) > 10
    assert steps[inner - 1].max() <= max_step
    assert steps[steady].max() <= max_step


def test_block_mode_matches_libsoxr_offline_resampling() -> None:
    import soxr  # type: ignore[import-untyped]

    pcm = tone(440, 8000, 1.0, AMPLITUDE)
    pieces, tail = chunked(Resampler(8000, 16000, low_latency=False), pcm, 160)
    offline = soxr.resample(pcm.astype(np.float32), 8000, 16000, quality="HQ")
    difference = np.abs(np.concatenate([*pieces, tail]) - np.rint(offline))
    assert difference.max() <= 1


# ---------------------------------------------------------------------------
# (b) Pass band and stop band
# ---------------------------------------------------------------------------


def through(pcm: Pcm, in_rate: int, out_rate: int, *, low_latency: bool = True) -> Pcm:
    pieces, tail = chunked(
        Resampler(in_rate, out_rate, low_latency=low_latency), pcm, in_rate // 50
    )
    return np.concatenate([*pieces, tail])


def steady_level_db(pcm: Pcm) -> float:
    return rms_db(pcm[len(pcm) // 4 : -len(pcm) // 4])


@pytest.mark.parametrize("low_latency", MODES)
def test_1khz_keeps_its_level_up_and_back_down(low_latency: bool) -> None:
    pcm = tone(1000, 8000, 1.0, AMPLITUDE)
    up = through(pcm, 8000, 16000, low_latency=low_latency)
    back = through(up, 16000, 8000, low_latency=low_latency)
    assert len(back) == len(pcm)
    assert abs(steady_level_db(up) - steady_level_db(pcm)) < 0.5
    assert abs(steady_level_db(back) - steady_level_db(pcm)) < 0.5


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_1khz_passes_every_pair(in_rate: int, out_rate: int) -> None:
    pcm = tone(1000, in_rate, 0.5, AMPLITUDE)
    assert abs(steady_level_db(through(pcm, in_rate, out_rate)) - steady_level_db(pcm)) < 0.5


@pytest.mark.parametrize("low_latency", MODES)
def test_tone_above_target_nyquist_is_removed(low_latency: bool) -> None:
    pcm = tone(6000, 16000, 1.0, AMPLITUDE)
    out = through(pcm, 16000, 8000, low_latency=low_latency)
    # Without filtering 6 kHz would alias to 2 kHz at full level.
    assert steady_level_db(out) - steady_level_db(pcm) < -40


def alias_probe(in_rate: int, out_rate: int) -> float | None:
    """A frequency the input can carry whose alias would land in the output's pass band."""
    low, high = 1.15 * out_rate / 2, 0.95 * in_rate / 2
    return (low + high) / 2 if low < high else None


@pytest.mark.parametrize(
    ("in_rate", "out_rate"),
    [(a, b) for a, b in itertools.permutations(COMMON_RATES, 2) if alias_probe(a, b)],
)
def test_downsampling_rejects_aliases(in_rate: int, out_rate: int) -> None:
    freq = alias_probe(in_rate, out_rate)
    assert freq is not None
    pcm = tone(freq, in_rate, 0.5, AMPLITUDE)
    assert steady_level_db(through(pcm, in_rate, out_rate)) - steady_level_db(pcm) < -40


# ---------------------------------------------------------------------------
# (c) Lengths follow the rate ratio: no drift
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_low_latency_gives_one_frame_per_frame_without_drift(in_rate: int, out_rate: int) -> None:
    resampler = Resampler(in_rate, out_rate)
    frame_in, frame_out = in_rate // 50, out_rate // 50
    silence = np.zeros(frame_in, np.int16)
    lengths = [len(resampler.process(silence)) for _ in range(500)]  # 10 s
    # The filter fills within the first three frames...
    assert sum(lengths[:3]) >= frame_out
    # ...and then every 20 ms in gives exactly 20 ms out, so the pending
    # latency is constant (no drift) and small.
    assert set(lengths[3:]) == {frame_out}
    assert 0 < resampler.pending <= 0.031 * out_rate
    total = sum(lengths) + len(resampler.flush())
    assert abs(total - 500 * frame_out) <= 1


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_block_mode_total_length_follows_the_ratio(in_rate: int, out_rate: int) -> None:
    resampler = Resampler(in_rate, out_rate, low_latency=False)
    frame_in, frame_out = in_rate // 50, out_rate // 50
    produced = 0
    for count in range(1, 501):
        produced += len(resampler.process(np.zeros(frame_in, np.int16)))
        # Bursty, but never ahead of the ideal and bounded behind it (up to
        # 175 ms for 8 <-> 48 kHz): the backlog does not grow.
        assert 0 <= count * frame_out - produced <= 0.2 * out_rate
    produced += len(resampler.flush())
    assert abs(produced - 500 * frame_out) <= 1


def test_odd_chunk_sizes_do_not_drift() -> None:
    resampler = Resampler(22050, 8000)
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 700, size=400)
    produced = sum(len(resampler.process(np.zeros(int(n), np.int16))) for n in sizes)
    produced += len(resampler.flush())
    assert abs(produced - int(sizes.sum()) * 8000 / 22050) <= 1


# ---------------------------------------------------------------------------
# Identity, reuse, input checks, one-shot helper
# ---------------------------------------------------------------------------


def test_identity_returns_the_same_array() -> None:
    resampler = Resampler(16000, 16000)
    frame = tone(440, 16000, 0.02)
    assert resampler.is_identity
    assert resampler.process(frame) is frame
    assert resampler.flush().shape == (0,)
    assert resample(frame, 16000, 16000) is frame


def test_flush_resets_for_the_next_stream() -> None:
    pcm = tone(440, 8000, 0.2, AMPLITUDE)
    resampler = Resampler(8000, 16000)
    first = np.concatenate([*chunked(resampler, pcm, 160)[0], resampler.flush()])
    pieces, tail = chunked(resampler, pcm, 160)
    fresh_pieces, fresh_tail = chunked(Resampler(8000, 16000), pcm, 160)
    np.testing.assert_array_equal(
        np.concatenate([*pieces, tail]), np.concatenate([*fresh_pieces, fresh_tail])
    )
    assert len(first) > 0


def test_reset_drops_history() -> None:
    resampler = Resampler(8000, 16000)
    resampler.process(tone(440, 8000, 0.1, AMPLITUDE))
    resampler.reset()
    assert resampler.pending == 0
    silence = np.zeros(1600, np.int16)
    assert not np.any(np.concatenate([resampler.process(silence), resampler.flush()]))


def test_silence_stays_digital_silence() -> None:
    # libsoxr's own int16 path dithers; ours must not turn silence into noise.
    out = through(np.zeros(8000, np.int16), 8000, 16000)
    assert not np.any(out)


def test_full_scale_input_clips_instead_of_wrapping() -> None:
    square = np.where(np.arange(16000) % 80 < 40, 32767, -32768).astype(np.int16)
    out = through(square, 16000, 8000)
    # Band-limiting a full-scale square wave overshoots (Gibbs): the peaks must
    # saturate, and a wrap-around would show as a jump of nearly 65536.
    steady = out[1000:-1000].astype(np.int32)
    assert steady.max() == 32767 and steady.min() == -32768
    assert np.abs(np.diff(steady)).max() < 32768


def test_input_checks() -> None:
    resampler = Resampler(8000, 16000)
    with pytest.raises(TypeError, match="int16"):
        resampler.process(np.zeros(160, np.float32))
    with pytest.raises(ValueError, match="1-D"):
        resampler.process(np.zeros((2, 160), np.int16))
    for bad in (0, -8000, 8000.5):
        with pytest.raises(ValueError):
            Resampler(bad, 16000)  # type: ignore[arg-type]


def test_one_shot_resample_is_aligned_and_sized() -> None:
    pcm = tone(440, 22050, 1.0, AMPLITUDE)
    out = resample(pcm, 22050, 16000)
    assert len(out) == 16000
    amplitude, delay, _ = fit_sine(out[2000:-2000], 440, 16000)
    assert abs(amplitude - AMPLITUDE) < 10
    # Time-aligned: the fit starts at output sample 2000, i.e. input time 0.125 s.
    expected = tone(440, 16000, 1.0, AMPLITUDE)[2000:-2000]
    assert np.abs(out[2000:-2000].astype(np.int32) - expected).max() <= 4
    assert abs(delay) < 1e-5
