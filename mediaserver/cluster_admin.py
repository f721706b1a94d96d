"""One admin endpoint for a `mediaserver cluster`: the workers' admin HTTP, merged.

The supervisor serves the configured admin address with the same routes and
token rules as a single server (`mediaserver.observability.admin`); each
answer is put together from the workers' own admin ports (127.0.0.1, the
worker's port from `plan_workers`), asked at once with a short timeout:

- `/calls`: every worker's live calls, and the recent ones (the same call from
  a shared PostgreSQL is listed once), each with its `worker`;
- `/calls/{id}`: the first worker that knows the call;
- `/metrics`: federation in one exposition: every worker's series with a
  `worker` label added, plus `mediaserver_cluster_worker_up` and
  `mediaserver_cluster_worker_restarts_total` per worker;
- `/registrations`, `/trunks`: merged (bindings by contact; trunk calls summed);
- `/ready`: ready while not stopping and at least one worker is ready;
- `POST /calls`: placed by one worker: the one its idempotency key hashes to
  (so a retry reaches the worker that remembers the key), else the one with
  the fewest calls up; `DELETE /calls/{id}`: asked of every worker;
- `/campaigns`, `/dnc`: the first worker's (it runs every campaign, so each
  campaign's caps hold whole; its calls go out from that worker).

A worker that does not answer is left out (and shows as `worker_up 0`); the
cluster's answer never waits longer than `TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import structlog
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["ClusterAdmin", "merge_metrics"]

log = structlog.get_logger("mediaserver.cluster")

#: Seconds the cluster's answer waits for a worker.
TIMEOUT = 2.0


class ClusterAdmin:
    """An `AdminSource` over the workers' admin ports.

    Args:
        ports: worker index -> its admin port on 127.0.0.1.
        token: the admin token the workers want (the config's), if any.
        restarts: worker index -> how often the supervisor restarted it.
        stopping: whether the cluster is shutting down.
    """

    def __init__(
        self,
        ports: dict[int, int],
        token: str | None,
        restarts: Callable[[], dict[int, int]],
        stopping: Callable[[], bool],
    ) -> None:
        self.ports = ports
        self._restarts = restarts
        self._stopping = stopping
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=TIMEOUT, trust_env=False)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def _get(self, index: int, path: str) -> httpx.Response | None:
        try:
            return await self._client.get(f"http://127.0.0.1:{self.ports[index]}{path}")
        except httpx.HTTPError as exc:
            log.debug("cluster_worker_unreachable", worker=index, path=path, error=str(exc))
            return None

    async def _ask(self, path: str) -> dict[int, httpx.Response | None]:
        """`path` from every worker at once: index -> its response, or None."""
        indexes = sorted(self.ports)
        answers = await asyncio.gather(*(self._get(i, path) for i in indexes))
        return dict(zip(indexes, answers, strict=True))

    async def _json(self, path: str) -> dict[int, Any]:
        """The JSON bodies of the workers that answered `path` with 200."""
        out: dict[int, Any] = {}
        for index, response in (await self._ask(path)).items():
            if response is not None and response.status_code == 200:
                out[index] = response.json()
        return out

    # -- AdminSource ---------------------------------------------------------------------

    async def ready(self) -> bool:
        if self._stopping():
            return False
        answers = await self._ask("/ready")
        return any(r is not None and r.status_code == 200 for r in answers.values())

    async def live_calls(self) -> list[dict[str, Any]]:
        return (await self._calls(0))[0]

    async def recent_calls(self, limit: int) -> list[dict[str, Any]]:
        return (await self._calls(limit))[1][:limit]

    async def _calls(self, limit: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        live: list[dict[str, Any]] = []
        recent: dict[str, dict[str, Any]] = {}
        for index, body in (await self._json(f"/calls?limit={limit}")).items():
            for call in body.get("live", []):
                live.append({**call, "worker": call.get("worker") or f"w{index}"})
            for call in body.get("recent", []):
                recent.setdefault(call["id"], call)
        newest = sorted(recent.values(), key=lambda c: c.get("started_at") or 0.0, reverse=True)
        live.sort(key=lambda c: c.get("started_at") or 0.0, reverse=True)
        return live, newest

    async def call_detail(self, call_id: str) -> dict[str, Any] | None:
        path = f"/calls/{quote(call_id, safe='')}"
        for index, body in sorted((await self._json(path)).items()):
            return {**body, "worker": body.get("worker") or f"w{index}"}
        return None

    async def metrics_text(self) -> bytes:
        answers = await self._ask("/metrics")
        texts = {i: r.text for i, r in answers.items() if r is not None and r.status_code == 200}
        restarts = self._restarts()
        own = (
            "# HELP mediaserver_cluster_worker_up Whether the worker answered this scrape.\n"
            "# TYPE mediaserver_cluster_worker_up gauge\n"
            + "".join(
                f'mediaserver_cluster_worker_up{{worker="w{i}"}} {int(i in texts)}\n'
                for i in sorted(self.ports)
            )
            + "# HELP mediaserver_cluster_worker_restarts_total Restarts of the worker.\n"
            "# TYPE mediaserver_cluster_worker_restarts_total counter\n"
            + "".join(
                f'mediaserver_cluster_worker_restarts_total{{worker="w{i}"}} {restarts.get(i, 0)}\n'
                for i in sorted(self.ports)
            )
        )
        return (own + merge_metrics({f"w{i}": text for i, text in texts.items()})).encode()

    async def registrations(self) -> dict[str, list[dict[str, Any]]]:
        merged: dict[str, dict[str, dict[str, Any]]] = {}
        for body in (await self._json("/registrations")).values():
            for user, bindings in body.items():
                for binding in bindings:
                    merged.setdefault(user, {}).setdefault(binding["contact"], binding)
        return {user: list(found.values()) for user, found in merged.items()}

    async def trunks(self) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for index, body in sorted((await self._json("/trunks")).items()):
            for name, state in body.items():
                into = merged.setdefault(name, {**state, "calls": 0, "workers": {}})
                into["calls"] += state.get("calls", 0)
                into["workers"][f"w{index}"] = state
        return merged

    async def dial(self, body: Any, idempotency_key: str | None) -> tuple[int, dict[str, Any]]:
        key = idempotency_key
        if isinstance(body, dict) and isinstance(body.get("idempotency_key"), str):
            key = body["idempotency_key"]
        indexes = sorted(self.ports)
        if key is not None:
            first = zlib.crc32(key.encode()) % len(indexes)
            order = indexes[first:] + indexes[:first]
        else:
            bodies = await self._json("/calls?limit=0")
            order = sorted(bodies, key=lambda i: len(bodies[i].get("live", [])))
        headers = {"Idempotency-Key": key} if key is not None else {}
        for index in order:
            url = f"http://127.0.0.1:{self.ports[index]}/calls"
            try:
                response = await self._client.post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                log.warning("cluster_dial_unreachable", worker=index, error=str(exc))
                continue
            answer = response.json()
            return response.status_code, {**answer, "worker": f"w{index}"}
        return 503, {"error": "no worker answered", "retry_after": 5}

    async def campaigns_api(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        # Campaigns run on the first worker (one dialer per campaign, its caps whole).
        first = min(self.ports)
        path = "/" + "/".join(quote(p, safe="") for p in parts)
        url = f"http://127.0.0.1:{self.ports[first]}{path}"
        try:
            response = await self._client.request(
                method, url, json=body if method == "POST" else None
            )
        except httpx.HTTPError as exc:
            return 503, {"error": f"worker w{first} did not answer: {exc}"}
        return response.status_code, response.json()

    async def end_call(self, call_id: str) -> bool:
        path = f"/calls/{quote(call_id, safe='')}"

        async def ask(index: int) -> bool:
            try:
                url = f"http://127.0.0.1:{self.ports[index]}{path}"
                return (await self._client.delete(url)).status_code == 202
            except httpx.HTTPError:
                return False

        return any(await asyncio.gather(*(ask(i) for i in sorted(self.ports))))


def merge_metrics(texts: dict[str, str]) -> str:
    """Prometheus expositions of several workers as one, each series labelled
    `worker`: one HELP and TYPE per metric family, the workers' samples under it."""
    families: dict[str, tuple[str, str, list[str]]] = {}
    for worker, text in texts.items():
        for family in text_string_to_metric_families(text):
            # The parser names a counter without `_total`; the exposition's HELP
            # and TYPE lines use the sample name, as prometheus_client writes them.
            name = family.name + ("_total" if family.type == "counter" else "")
            _, _, samples = families.setdefault(name, (family.documentation, family.type, []))
            for sample in family.samples:
                labels = {**sample.labels, "worker": worker}
                pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                samples.append(f"{sample.name}{{{pairs}}} {_number(sample.value)}")
    lines: list[str] = []
    for name, (doc, kind, samples) in families.items():
        if doc:
            lines.append(f"# HELP {name} {_escape_help(doc)}")
        # The parser calls an untyped family "unknown"; the text format says untyped.
        lines += [f"# TYPE {name} {'untyped' if kind == 'unknown' else kind}", *samples]
    return "\n".join(lines) + "\n" if lines else ""


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")
