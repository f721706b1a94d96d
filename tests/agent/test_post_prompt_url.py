"""set_post_prompt_url: the summary is POSTed in SignalWire's webhook shape,
retried on 5xx, not on a refusal; on_summary still runs first."""

from __future__ import annotations

import asyncio
from typing import Any

from mediaserver import AgentBase
from mediaserver.agent import post_prompt
from tests.agent.fake_api import FakeApi, Request

RAW = {
    "call_id": "c1",
    "end_reason": "remote BYE",
    "global_data": {"tenant": "acme"},
    "messages": [{"role": "user", "content": "hi"}],
}


class Desk(AgentBase):
    def __init__(self, url: str) -> None:
        super().__init__("Desk")
        self.set_post_prompt("Summarise the call as JSON.").set_post_prompt_url(url)
        self.summaries: list[Any] = []

    def on_summary(self, summary: Any, raw_data: dict[str, Any] | None = None) -> None:
        self.summaries.append(summary)


def test_the_summary_is_posted_and_retried_after_a_server_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(post_prompt, "RETRIES", (0.05, 0.05, 0.05, 0.05))
    answers = iter([503, 200])
    server = FakeApi(lambda r: (next(answers), {}))
    try:
        agent = Desk(server.url + "/summary")
        spec = agent.to_spec()
        assert spec.on_summary is not None
        asyncio.run(spec.on_summary({"resolved": True}, RAW))
        assert agent.summaries == [{"resolved": True}]
        first, second = server.requests
        assert first.path == second.path == "/summary" and first.method == "POST"
        assert second.json() == {
            "call_id": "c1",
            "end_reason": "remote BYE",
            "post_prompt_data": {
                "raw": '{"resolved": true}',
                "substituted": '{"resolved": true}',
                "parsed": [{"resolved": True}],
            },
            "global_data": {"tenant": "acme"},
            "call_log": [{"role": "user", "content": "hi"}],
        }
    finally:
        server.close()


def test_a_refusal_is_final() -> None:
    def refuse(request: Request) -> tuple[int, Any]:
        return 403, {"error": "no"}

    server = FakeApi(refuse)
    try:
        assert not asyncio.run(post_prompt.post_summary(server.url, "text summary", RAW))
        assert len(server.requests) == 1
    finally:
        server.close()
