"""Delivering the post-call summary to a URL (the SDK's `set_post_prompt_url`).

The body is SignalWire's post-prompt webhook shape: ``post_prompt_data``
(``raw``, ``substituted``, ``parsed``), ``call_id``, ``global_data``,
``call_log`` (the conversation), ``end_reason``. A network error, a 408, 429
or 5xx is retried after 0.5, 1, 2 and 4 s; any other answer is final. It runs
after the call has ended, so nothing waits on it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import structlog

__all__ = ["post_summary"]

log = structlog.get_logger("mediaserver.agent.post_prompt")

#: Seconds before each retry.
RETRIES = (0.5, 1.0, 2.0, 4.0)
TIMEOUT = 10.0


def summary_body(summary: Any, raw_data: dict[str, Any]) -> dict[str, Any]:
    """The webhook's JSON body for `summary` (the parsed answer or its text)."""
    raw = summary if isinstance(summary, str) else json.dumps(summary)
    return {
        "call_id": raw_data.get("call_id"),
        "end_reason": raw_data.get("end_reason"),
        "post_prompt_data": {
            "raw": raw,
            "substituted": raw,
            "parsed": [summary] if isinstance(summary, (dict, list)) else [],
        },
        "global_data": raw_data.get("global_data", {}),
        "call_log": raw_data.get("messages", []),
    }


async def post_summary(url: str, summary: Any, raw_data: dict[str, Any]) -> bool:
    """POST the summary to `url`, retrying as the module docstring says; True
    when it was accepted (2xx)."""
    body = summary_body(summary, raw_data)
    call_id = raw_data.get("call_id")
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        for attempt, wait in enumerate((*RETRIES, None)):
            try:
                response = await client.post(url, json=body)
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return True
                why = f"HTTP {response.status_code}"
                if response.status_code not in (408, 429) and response.status_code < 500:
                    log.warning("post_prompt_url_refused", call_id=call_id, why=why)
                    return False
            if wait is None:
                break
            log.info("post_prompt_url_retry", call_id=call_id, why=why, attempt=attempt + 1)
            await asyncio.sleep(wait)
    log.warning("post_prompt_url_failed", call_id=call_id, why=why)
    return False
