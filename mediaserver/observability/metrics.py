"""Prometheus metrics of one server process.

Every metric lives on the instance's own :class:`prometheus_client.CollectorRegistry`
(never the global one), so two servers in one process (tests, benchmarks) do
not share or collide on counters. :meth:`Metrics.render` is the body of
``GET /metrics``.

Latencies arrive in milliseconds (the unit of the call records) and are
exported in seconds, the Prometheus base unit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_TURN_HELP: Final[dict[str, str]] = {
    "voice_to_voice": "End of caller speech to first reply audio on the wire",
    "endpointing": "End of caller speech to the end-of-turn decision",
    "stt_finalise": "End-of-turn decision to the final transcript",
    "llm_first_token": "Final transcript to the LLM's first token",
    "llm_first_sentence": "Final transcript to the LLM's first complete sentence",
    "tts_first_audio": "First sentence to the TTS's first audio",
    "first_frame": "First TTS audio to the first RTP frame sent",
    "overhead": "Voice-to-voice time not covered by the other components",
}

#: Per-turn latency components: input key (ms) -> histogram name suffix.
TURN_COMPONENTS: Final[dict[str, str]] = {f"{name}_ms": name for name in _TURN_HELP}

#: 5 ms .. 10 s, roughly logarithmic, denser where conversational latency lives.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
    0.6, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0,
)  # fmt: skip

#: Interarrival jitter (RFC 3550), 0.5 ms .. 0.5 s.
JITTER_BUCKETS: Final[tuple[float, ...]] = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5,
)  # fmt: skip

#: Call durations, 1 s .. 2 h.
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
)  # fmt: skip


def _number(value: object) -> float | None:
    """A finite float from a summary value, or None (missing, bool, NaN, junk)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class Metrics:
    """Prometheus metrics of one server process, on its own CollectorRegistry."""

    CONTENT_TYPE: str = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._calls = Counter(
            "mediaserver_calls", "Calls accepted since the process started", registry=reg
        )
        self._active = Gauge("mediaserver_active_calls", "Calls in progress", registry=reg)
        self._ended = Counter(
            "mediaserver_calls_ended",
            "Calls ended, by the side that ended them",
            ["by"],
            registry=reg,
        )
        self._duration = Histogram(
            "mediaserver_call_duration_seconds",
            "Call duration from answer to hangup",
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self._rtp_in = Counter(
            "mediaserver_rtp_packets_received",
            "RTP packets received from callers (ended calls)",
            registry=reg,
        )
        self._rtp_lost = Counter(
            "mediaserver_rtp_packets_lost",
            "RTP packets lost in the network or dropped late by the jitter buffer (ended calls)",
            registry=reg,
        )
        self._jitter = Histogram(
            "mediaserver_rtp_jitter_seconds",
            "RTP interarrival jitter at the end of each call",
            buckets=JITTER_BUCKETS,
            registry=reg,
        )
        self._turn: dict[str, Histogram] = {
            key: Histogram(
                f"mediaserver_turn_{name}_seconds",
                _TURN_HELP[name],
                buckets=LATENCY_BUCKETS,
                registry=reg,
            )
            for key, name in TURN_COMPONENTS.items()
        }
        self._barge_ins = Counter(
            "mediaserver_barge_ins",
            "Caller barge-ins; false=true when the agent resumed (noise, backchannel)",
            ["false"],
            registry=reg,
        )
        self._barge_in_stop = Histogram(
            "mediaserver_barge_in_stop_seconds",
            "Caller speech onset to agent audio stopped, for real barge-ins",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._turn_checks = Counter(
            "mediaserver_turn_model_checks",
            "End-of-turn model checks by verdict (complete, incomplete, failed)",
            ["verdict"],
            registry=reg,
        )
        self._turn_check_time = Histogram(
            "mediaserver_turn_model_seconds",
            "Turn model check, asked to answered (features, batch wait, inference)",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._turn_events = Counter(
            "mediaserver_turn_events",
            "Turn-taking outcomes: held (unfinished transcript), preempt_used, "
            "preempt_dropped, backchannel, noise_interruption, go_ahead",
            ["event"],
            registry=reg,
        )
        self._outbound = Counter(
            "mediaserver_outbound_calls",
            "Calls we placed, by outcome (completed, busy, no-answer, declined, cancelled, failed)",
            ["outcome"],
            registry=reg,
        )
        self._amd = Counter(
            "mediaserver_amd_results",
            "Answering-machine detection verdicts (human, machine, fax, silence)",
            ["verdict"],
            registry=reg,
        )
        self._amd_time = Histogram(
            "mediaserver_amd_decision_seconds",
            "Answer to the answering-machine detection's verdict",
            buckets=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0),
            registry=reg,
        )
        self._campaign = Counter(
            "mediaserver_campaign_calls",
            "Campaign contacts by outcome (call outcomes, dnc, rejected)",
            ["outcome"],
            registry=reg,
        )
        self._campaign_up = Gauge(
            "mediaserver_campaign_calls_in_progress", "Campaign calls up now", registry=reg
        )
        self._errors = Counter(
            "mediaserver_errors",
            "Pipeline and call errors by kind and stage",
            ["kind", "stage"],
            registry=reg,
        )

    # -- calls --------------------------------------------------------------------

    def call_started(self) -> None:
        """One more call accepted."""
        self._calls.inc()

    def amd(self, verdict: str, seconds: float) -> None:
        """An answering-machine detection verdict and how long it took."""
        self._amd.labels(verdict=verdict).inc()
        value = _number(seconds)
        if value is not None and value >= 0:
            self._amd_time.observe(value)

    def campaign_outcome(self, outcome: str) -> None:
        """A campaign contact's call (or skip) ended with `outcome`."""
        self._campaign.labels(outcome=outcome).inc()

    def set_campaign_calls(self, n: int) -> None:
        """Campaign calls up right now."""
        self._campaign_up.set(max(0, n))

    def outbound(self, outcome: str) -> None:
        """A call we placed ended with `outcome`."""
        self._outbound.labels(outcome=outcome).inc()

    def set_active_calls(self, n: int) -> None:
        """The number of calls in progress right now."""
        self._active.set(max(0, n))

    def call_ended(self, by: str, duration_s: float, rtp: dict[str, float]) -> None:
        """A call ended.

        The free-form end reason (it may carry a SIP reason phrase) is not a
        label: unbounded label values would grow the exposition forever; the
        call records keep it. ``rtp`` is the media summary; missing keys count 0.
        """
        self._ended.labels(by=by or "unknown").inc()
        duration = _number(duration_s)
        if duration is not None and duration >= 0:
            self._duration.observe(duration)
        received = _number(rtp.get("rtp_in"))
        if received is not None and received > 0:
            self._rtp_in.inc(received)
        lost = _number(rtp.get("lost"))
        if lost is not None and lost > 0:
            self._rtp_lost.inc(lost)
        jitter_ms = _number(rtp.get("jitter_ms"))
        self._jitter.observe(max(0.0, jitter_ms or 0.0) / 1000.0)

    # -- pipeline -----------------------------------------------------------------

    def turn(self, latency_ms: Mapping[str, float]) -> None:
        """One agent turn's latency breakdown (``<component>_ms`` keys, milliseconds)."""
        for key, value in latency_ms.items():
            histogram = self._turn.get(key)
            ms = _number(value)
            if histogram is None or ms is None or ms < 0:
                continue
            histogram.observe(ms / 1000.0)

    def barge_in(self, stop_ms: float, false: bool) -> None:
        """A barge-in; only real ones (``false=False``) time the stop."""
        self._barge_ins.labels(false="true" if false else "false").inc()
        ms = _number(stop_ms)
        if not false and ms is not None and ms >= 0:
            self._barge_in_stop.observe(ms / 1000.0)

    def turn_check(self, complete: bool | None, ms: float) -> None:
        """One turn model check (`complete` None: it failed)."""
        verdict = "failed" if complete is None else "complete" if complete else "incomplete"
        self._turn_checks.labels(verdict=verdict).inc()
        seconds = _number(ms)
        if seconds is not None and seconds >= 0:
            self._turn_check_time.observe(seconds / 1000.0)

    def turn_event(self, event: str) -> None:
        """A turn-taking outcome worth counting (see `mediaserver_turn_events`)."""
        self._turn_events.labels(event=event).inc()

    def error(self, kind: str, stage: str) -> None:
        """An error the call survived or ended on."""
        self._errors.labels(kind=kind or "unknown", stage=stage or "unknown").inc()

    # -- the SIP edge ---------------------------------------------------------------

    def watch_edge(self, read: Callable[[], EdgeState]) -> None:
        """Export the edge defences' state, read at each scrape: refusals by
        reason, banned addresses, calls in progress per trunk."""
        self.registry.register(_EdgeCollector(read))

    def watch_trunks(self, read: Callable[[], Mapping[str, tuple[bool, int]]]) -> None:
        """Export each outbound trunk's state, read at each scrape: up (calls
        can go through it: registered, when it registers, and not full) and
        its failed registrations."""
        self.registry.register(_TrunkCollector(read))

    # -- export -------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition format of every metric on this registry."""
        return generate_latest(self.registry)


#: (refusals by reason, banned addresses now, calls in progress per trunk).
EdgeState = tuple[Mapping[str, int], int, Mapping[str, int]]


class _EdgeCollector(Collector):
    """Reads the SIP core's edge counters when Prometheus scrapes."""

    def __init__(self, read: Callable[[], EdgeState]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        blocked, banned, trunks = self._read()
        refused = CounterMetricFamily(
            "mediaserver_sip_blocked",
            "SIP messages refused at the edge, by reason: banned, rate, invite_rate, "
            "scanner, unknown_user, not_allowed, source_calls, user_calls, trunk_calls, "
            "and bans (addresses banned)",
            labels=["reason"],
        )
        for reason, count in sorted(blocked.items()):
            refused.add_metric([reason], count)
        yield refused
        yield GaugeMetricFamily(
            "mediaserver_sip_banned_sources", "Addresses banned right now", value=banned
        )
        calls = GaugeMetricFamily(
            "mediaserver_trunk_calls", "Calls in progress per trunk", labels=["trunk"]
        )
        for trunk, count in sorted(trunks.items()):
            calls.add_metric([trunk], count)
        yield calls


class _TrunkCollector(Collector):
    """Reads the outbound trunks' state when Prometheus scrapes."""

    def __init__(self, read: Callable[[], Mapping[str, tuple[bool, int]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "mediaserver_trunk_up",
            "1 when calls can go out through the trunk (registered if it registers, not full)",
            labels=["trunk"],
        )
        failed = CounterMetricFamily(
            "mediaserver_trunk_registration_failures",
            "Registrations with the provider that failed (refused, challenged again, no answer)",
            labels=["trunk"],
        )
        for trunk, (is_up, failures) in sorted(self._read().items()):
            up.add_metric([trunk], 1 if is_up else 0)
            failed.add_metric([trunk], failures)
        yield up
        yield failed
