"""Shared helpers for the observability tests: a fake AdminSource and a served admin server."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mediaserver.observability.admin import AdminServer


class FakeSource:
    """An AdminSource over plain dicts; records what the server asked for.

    ``fail`` names methods that raise (RuntimeError) until removed from it.
    """

    def __init__(
        self,
        *,
        live: list[dict[str, Any]] | None = None,
        recent: list[dict[str, Any]] | None = None,
        details: dict[str, dict[str, Any]] | None = None,
        metrics: bytes = b"# no metrics\n",
    ) -> None:
        self.is_ready = True
        self.live = live or []
        self.recent = recent or []
        self.details = details or {}
        self.metrics = metrics
        self.fail: set[str] = set()
        self.limits: list[int] = []
        self.asked: list[str] = []
        self.dialed: list[tuple[Any, str | None]] = []
        self.dial_answer: tuple[int, dict[str, Any]] = (201, {"id": "out-1", "state": "dialing"})
        self.ended: list[str] = []
        self.campaigns: list[dict[str, Any]] = []

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail:
            raise RuntimeError(f"{name} failed on purpose")

    def ready(self) -> bool:
        self._maybe_fail("ready")
        return self.is_ready

    def live_calls(self) -> list[dict[str, Any]]:
        self._maybe_fail("live_calls")
        return copy.deepcopy(self.live)

    def recent_calls(self, limit: int) -> list[dict[str, Any]]:
        self._maybe_fail("recent_calls")
        self.limits.append(limit)
        return copy.deepcopy(self.recent[:limit])

    def call_detail(self, call_id: str) -> dict[str, Any] | None:
        self._maybe_fail("call_detail")
        self.asked.append(call_id)
        detail = self.details.get(call_id)
        return copy.deepcopy(detail) if detail is not None else None

    def metrics_text(self) -> bytes:
        self._maybe_fail("metrics_text")
        return self.metrics

    def registrations(self) -> dict[str, list[dict[str, Any]]]:
        self._maybe_fail("registrations")
        return {"alice": [{"contact": "sip:alice@127.0.0.1:5070", "expires_in": 60}]}

    def trunks(self) -> dict[str, dict[str, Any]]:
        self._maybe_fail("trunks")
        return {"carrier": {"allow": ["198.51.100.0/28"], "calls": 0}}

    def dial(self, body: Any, idempotency_key: str | None) -> tuple[int, dict[str, Any]]:
        self._maybe_fail("dial")
        self.dialed.append((body, idempotency_key))
        return self.dial_answer

    def end_call(self, call_id: str) -> bool:
        self.ended.append(call_id)
        return call_id == "out-1"

    def campaigns_api(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        self.asked.append(f"{method} {'/'.join(parts)}")
        if method == "GET" and parts == ["campaigns"]:
            return 200, {"campaigns": copy.deepcopy(self.campaigns)}
        return 200, {"parts": parts, "body": body}


def summary(call: str, **fields: Any) -> dict[str, Any]:
    """A call summary with every required field (ended unless ``ended_at=None``)."""
    base: dict[str, Any] = {
        "id": call,
        "call_id": f"{call}@127.0.0.1",
        "route": "support",
        "agent": "Support Agent",
        "caller": "sip:alice@127.0.0.1",
        "started_at": 1_714_564_800.0,
        "ended_at": 1_714_564_860.0,
        "end_reason": "bye",
        "ended_by": "caller",
        "turns": 0,
        "barge_ins": 0,
        "errors": 0,
    }
    base.update(fields)
    return base


@asynccontextmanager
async def serving(source: FakeSource, **kwargs: Any) -> AsyncIterator[tuple[AdminServer, str]]:
    """An AdminServer on 127.0.0.1, any free port; yields it and its base URL."""
    server = AdminServer(source, host="127.0.0.1", port=0, **kwargs)
    host, port = await server.start()
    try:
        yield server, f"http://{host}:{port}"
    finally:
        await server.close()
