"""The cluster's one admin endpoint (`mediaserver.cluster_admin`) over two real
admin servers on loopback (the workers' side, with fixed data), one of them
later stopped: merged calls, records, metrics with a worker label, bindings and
trunks, the token passed on, and a worker that does not answer left out."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mediaserver.cluster_admin import ClusterAdmin, merge_metrics
from mediaserver.observability.admin import AdminServer

TOKEN = "s3cret"


class Worker:
    """What one worker's admin shows."""

    def __init__(self, name: str, calls: int, started: float) -> None:
        self.name = name
        self.calls = calls
        self.live = [{"id": f"{name}-live", "started_at": started + 5, "worker": name}]
        self.recent = [
            {"id": f"{name}-old", "started_at": started, "worker": name},
            {"id": "shared", "started_at": 1.0, "worker": "w0"},  # one PostgreSQL
        ]

    def ready(self) -> bool:
        return True

    def live_calls(self) -> list[dict[str, Any]]:
        return self.live

    def recent_calls(self, limit: int) -> list[dict[str, Any]]:
        return self.recent[:limit]

    def call_detail(self, call_id: str) -> dict[str, Any] | None:
        known = {c["id"]: c for c in self.live + self.recent}
        return {**known[call_id], "events": []} if call_id in known else None

    def metrics_text(self) -> bytes:
        return (
            "# HELP mediaserver_calls_total Calls accepted\n"
            "# TYPE mediaserver_calls_total counter\n"
            f"mediaserver_calls_total {self.calls}.0\n"
            "# HELP mediaserver_calls_ended_total Calls ended\n"
            "# TYPE mediaserver_calls_ended_total counter\n"
            'mediaserver_calls_ended_total{by="remote \\"peer\\""} 1.0\n'
        ).encode()

    def registrations(self) -> dict[str, list[dict[str, Any]]]:
        return {"alice": [{"contact": "sip:alice@192.0.2.1", "expires_in": 60}]}

    def trunks(self) -> dict[str, dict[str, Any]]:
        return {"carrier": {"calls": self.calls, "registered": True}}


def test_the_cluster_view_merges_the_workers() -> None:
    asyncio.run(asyncio.wait_for(_merges_the_workers(), 30))


async def _merges_the_workers() -> None:
    workers = [Worker("w0", 3, 100.0), Worker("w1", 4, 200.0)]
    servers = [AdminServer(w, "127.0.0.1", 0, TOKEN) for w in workers]
    ports = {i: (await s.start())[1] for i, s in enumerate(servers)}
    restarts = {1: 2}
    cluster = ClusterAdmin(ports, TOKEN, restarts=lambda: restarts, stopping=lambda: False)
    front = AdminServer(cluster, "127.0.0.1", 0, TOKEN)
    port = (await front.start())[1]
    client = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        listing = (await client.get("/calls")).json()
        assert [c["id"] for c in listing["live"]] == ["w1-live", "w0-live"]  # newest first
        assert [c["id"] for c in listing["recent"]] == ["w1-old", "w0-old", "shared"]
        assert [c["id"] for c in (await client.get("/calls?limit=1")).json()["recent"]] == [
            "w1-old"
        ]
        detail = (await client.get("/calls/w1-old")).json()
        assert detail["worker"] == "w1" and detail["events"] == []
        assert (await client.get("/calls/none")).status_code == 404

        metrics = (await client.get("/metrics")).text
        families = {f.name: f for f in text_string_to_metric_families(metrics)}
        calls = {s.labels["worker"]: s.value for s in families["mediaserver_calls"].samples}
        assert calls == {"w0": 3.0, "w1": 4.0}
        ended = families["mediaserver_calls_ended"].samples
        assert {s.labels["by"] for s in ended} == {'remote "peer"'}  # escaping kept
        up = {
            s.labels["worker"]: s.value for s in families["mediaserver_cluster_worker_up"].samples
        }
        assert up == {"w0": 1.0, "w1": 1.0}
        restarted = families["mediaserver_cluster_worker_restarts"].samples
        assert {s.labels["worker"]: s.value for s in restarted} == {"w0": 0.0, "w1": 2.0}

        assert (await client.get("/registrations")).json() == {
            "alice": [{"contact": "sip:alice@192.0.2.1", "expires_in": 60}]
        }
        trunk = (await client.get("/trunks")).json()["carrier"]
        assert trunk["calls"] == 7 and set(trunk["workers"]) == {"w0", "w1"}
        assert (await client.get("/ready")).status_code == 200
        assert (
            await client.get("/calls", headers={"Authorization": "Bearer no"})
        ).status_code == 401

        # Worker 1 goes away: the cluster answers with what worker 0 has, at once.
        await servers[1].close()
        listing = (await client.get("/calls")).json()
        assert [c["id"] for c in listing["live"]] == ["w0-live"]
        metrics = (await client.get("/metrics")).text
        assert 'mediaserver_cluster_worker_up{worker="w1"} 0' in metrics
        workers_series = metrics.split("# HELP mediaserver_calls_total")[1]
        assert 'worker="w0"' in workers_series and 'worker="w1"' not in workers_series
    finally:
        await client.aclose()
        await front.close()
        await cluster.close()
        for server in servers:
            await server.close()


def test_not_ready_while_stopping_or_with_no_worker() -> None:
    asyncio.run(asyncio.wait_for(_not_ready(), 30))


async def _not_ready() -> None:
    cluster = ClusterAdmin({0: 9}, None, restarts=dict, stopping=lambda: True)
    try:
        assert not await cluster.ready()
        cluster._stopping = lambda: False
        assert not await cluster.ready()  # port 9: nothing answers
        assert await cluster.live_calls() == []
    finally:
        await cluster.close()


def test_merge_metrics_keeps_one_header_per_family() -> None:
    text = "# TYPE odd untyped\nodd 1\n"
    merged = merge_metrics({"w0": text, "w1": text})
    assert merged.count("# TYPE odd untyped") == 1
    assert 'odd{worker="w0"} 1.0' in merged and 'odd{worker="w1"} 1.0' in merged
    assert merge_metrics({}) == ""
