"""The actor's per-turn latency split (call/records.py)."""

from __future__ import annotations

import pytest

from mediaserver.call.records import TurnMetrics


def test_latency_split_with_first_frame_on_the_wire() -> None:
    m = TurnMetrics(
        turn=1,
        speech_end=10.0,
        eos_decided=10.5,
        stt_finalise_s=0.03,
        llm_start=10.53,
        llm_first_token=10.531,
        llm_first_sentence=10.54,
        tts_first_audio_s=0.02,
        tts_first_audio_at=10.56,
        first_frame_sent=10.575,
    )
    split = m.summary()
    assert split["voice_to_voice_ms"] == pytest.approx(575.0)
    assert split["endpointing_ms"] == pytest.approx(500.0)
    assert split["first_frame_ms"] == pytest.approx(15.0)
    # Overhead is what the sequential stages leave; the first-frame wait is part of it.
    assert split["overhead_ms"] == pytest.approx(575 - 500 - 30 - 1 - 20)
    assert split["first_frame_ms"] <= split["overhead_ms"]
    # No first audio known: no first-frame figure.
    assert "first_frame_ms" not in TurnMetrics(turn=2, first_frame_sent=1.0).summary()
