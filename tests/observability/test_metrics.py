"""Tests for mediaserver.observability.metrics: feed Metrics, parse its exposition back."""

from __future__ import annotations

import math

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from mediaserver.observability.metrics import LATENCY_BUCKETS, TURN_COMPONENTS, Metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: Metrics) -> Samples:
    """Every sample of the exposition: (name, sorted labels) -> value."""
    out: Samples = {}
    for family in text_string_to_metric_families(metrics.render().decode("utf-8")):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(s: Samples, name: str, **labels: str) -> float:
    return s[(name, tuple(sorted(labels.items())))]


def test_content_type_is_prometheus_text() -> None:
    assert Metrics.CONTENT_TYPE.startswith("text/plain")
    assert "version=" in Metrics.CONTENT_TYPE


def test_fresh_metrics_render_zeroes() -> None:
    s = samples(Metrics())
    assert value(s, "mediaserver_calls_total") == 0
    assert value(s, "mediaserver_active_calls") == 0
    assert value(s, "mediaserver_rtp_packets_received_total") == 0
    assert value(s, "mediaserver_rtp_packets_lost_total") == 0
    for name in TURN_COMPONENTS.values():
        assert value(s, f"mediaserver_turn_{name}_seconds_count") == 0


def test_calls_active_and_ended() -> None:
    m = Metrics()
    for _ in range(3):
        m.call_started()
    m.set_active_calls(3)
    m.set_active_calls(1)
    m.call_ended("caller", 61.5, {"rtp_in": 3000, "lost": 4, "late": 1, "jitter_ms": 12.5})
    m.call_ended("agent", 3.0, {"rtp_in": 150, "lost": 0, "jitter_ms": 2.0})
    # Missing keys count as zero.
    m.call_ended("caller", 0.5, {})
    s = samples(m)
    assert value(s, "mediaserver_calls_total") == 3
    assert value(s, "mediaserver_active_calls") == 1
    assert value(s, "mediaserver_calls_ended_total", by="caller") == 2
    assert value(s, "mediaserver_calls_ended_total", by="agent") == 1
    assert value(s, "mediaserver_call_duration_seconds_count") == 3
    assert value(s, "mediaserver_call_duration_seconds_sum") == pytest.approx(65.0)
    assert value(s, "mediaserver_call_duration_seconds_bucket", le="1.0") == 1
    assert value(s, "mediaserver_call_duration_seconds_bucket", le="5.0") == 2
    assert value(s, "mediaserver_call_duration_seconds_bucket", le="+Inf") == 3
    assert value(s, "mediaserver_rtp_packets_received_total") == 3150
    assert value(s, "mediaserver_rtp_packets_lost_total") == 4
    assert value(s, "mediaserver_rtp_jitter_seconds_count") == 3
    assert value(s, "mediaserver_rtp_jitter_seconds_sum") == pytest.approx(0.0145)
    assert value(s, "mediaserver_rtp_jitter_seconds_bucket", le="0.002") == 2  # 0 and 2 ms
    assert value(s, "mediaserver_rtp_jitter_seconds_bucket", le="0.01") == 2
    assert value(s, "mediaserver_rtp_jitter_seconds_bucket", le="0.02") == 3


def test_turn_latencies_in_seconds_per_component() -> None:
    m = Metrics()
    m.turn(
        {
            "voice_to_voice_ms": 912.0,
            "endpointing_ms": 400.0,
            "stt_finalise_ms": 38.0,
            "llm_first_token_ms": 302.0,
            "llm_first_sentence_ms": 455.0,
            "tts_first_audio_ms": 120.0,
            "first_frame_ms": 12.0,
            "overhead_ms": 52.0,
        }
    )
    m.turn(
        {
            "voice_to_voice_ms": 2450.0,
            "endpointing_ms": 410.0,
            "bogus_ms": 5.0,  # unknown: ignored
            "overhead_ms": -3.0,  # negative: ignored
            "stt_finalise_ms": math.nan,  # not a number: ignored
        }
    )
    s = samples(m)
    v2v = "mediaserver_turn_voice_to_voice_seconds"
    assert value(s, f"{v2v}_count") == 2
    assert value(s, f"{v2v}_sum") == pytest.approx(3.362)
    assert value(s, f"{v2v}_bucket", le="1.0") == 1
    assert value(s, f"{v2v}_bucket", le="2.5") == 2
    assert value(s, "mediaserver_turn_endpointing_seconds_count") == 2
    assert value(s, "mediaserver_turn_endpointing_seconds_sum") == pytest.approx(0.81)
    assert value(s, "mediaserver_turn_overhead_seconds_count") == 1
    assert value(s, "mediaserver_turn_overhead_seconds_sum") == pytest.approx(0.052)
    assert value(s, "mediaserver_turn_stt_finalise_seconds_count") == 1
    for name, seconds in [
        ("llm_first_token", 0.302),
        ("llm_first_sentence", 0.455),
        ("tts_first_audio", 0.120),
        ("first_frame", 0.012),
    ]:
        assert value(s, f"mediaserver_turn_{name}_seconds_count") == 1
        assert value(s, f"mediaserver_turn_{name}_seconds_sum") == pytest.approx(seconds)
    assert not any("bogus" in name for name, _ in s)


def test_latency_buckets_cover_5ms_to_10s() -> None:
    assert LATENCY_BUCKETS[0] == 0.005
    assert LATENCY_BUCKETS[-1] == 10.0
    assert list(LATENCY_BUCKETS) == sorted(set(LATENCY_BUCKETS))
    s = samples(Metrics())
    les = {
        dict(labels)["le"]
        for name, labels in s
        if name == "mediaserver_turn_first_frame_seconds_bucket"
    }
    assert {"0.005", "10.0", "+Inf"} <= les


def test_barge_ins_real_and_false() -> None:
    m = Metrics()
    m.barge_in(182.0, False)
    m.barge_in(240.0, False)
    m.barge_in(95.0, True)
    s = samples(m)
    assert value(s, "mediaserver_barge_ins_total", false="false") == 2
    assert value(s, "mediaserver_barge_ins_total", false="true") == 1
    # Only real barge-ins time the stop.
    assert value(s, "mediaserver_barge_in_stop_seconds_count") == 2
    assert value(s, "mediaserver_barge_in_stop_seconds_sum") == pytest.approx(0.422)
    assert value(s, "mediaserver_barge_in_stop_seconds_bucket", le="0.2") == 1
    assert value(s, "mediaserver_barge_in_stop_seconds_bucket", le="0.25") == 2


def test_errors_by_kind_and_stage() -> None:
    m = Metrics()
    m.error("llm_timeout", "llm")
    m.error("llm_timeout", "llm")
    m.error("tts_failed", "tts")
    s = samples(m)
    assert value(s, "mediaserver_errors_total", kind="llm_timeout", stage="llm") == 2
    assert value(s, "mediaserver_errors_total", kind="tts_failed", stage="tts") == 1


def test_turn_model_checks_and_turn_events() -> None:
    m = Metrics()
    m.turn_check(True, 31.0)
    m.turn_check(False, 29.0)
    m.turn_check(None, 5.0)
    m.turn_event("held")
    m.turn_event("preempt_used")
    s = samples(m)
    for verdict in ("complete", "incomplete", "failed"):
        assert value(s, "mediaserver_turn_model_checks_total", verdict=verdict) == 1
    assert value(s, "mediaserver_turn_model_seconds_sum") == pytest.approx(0.065)
    assert value(s, "mediaserver_turn_events_total", event="held") == 1
    assert value(s, "mediaserver_turn_events_total", event="preempt_used") == 1


def test_instances_have_their_own_registry() -> None:
    a, b = Metrics(), Metrics()  # a second instance must not collide on names
    a.call_started()
    assert value(samples(a), "mediaserver_calls_total") == 1
    assert value(samples(b), "mediaserver_calls_total") == 0
    assert REGISTRY.get_sample_value("mediaserver_calls_total") is None
