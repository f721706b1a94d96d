"""The `agent` app: answer, then hand the call to a `CallActor` running its agent.

(A route's inline `agent:` becomes its `AgentSpec` in `mediaserver.agent.from_config`.)
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import structlog

from mediaserver.apps.amd import screen
from mediaserver.apps.base import CallControl, answer_and_wait_media
from mediaserver.apps.consent import ask_consent
from mediaserver.call.actor import CallActor
from mediaserver.call.spec import AgentSpec
from mediaserver.config import Route

log = structlog.get_logger("mediaserver.apps.agent")


async def run_agent(call: CallControl, route: Route) -> None:
    """Answer and let the route's agent talk until the call ends."""
    runtime, agent = call.runtime, call.agent
    if runtime is None or agent is None:
        raise RuntimeError("the agent app needs a loaded pipeline and agent")
    if agent.configure is not None:
        agent = await configured(call, agent)
    media = await answer_and_wait_media(call, route)
    if media is None:
        return
    if call.outbound and call.amd != "off" and not await screen(call, media, runtime, agent):
        return  # a machine (message left or not) or a fax: hung up
    if route.consent is not None:
        given = await ask_consent(call, media, runtime, agent, route.consent)
        agent = replace(agent, global_data={**agent.global_data, "recording_consent": given})
    # A caller whose SIP digest failed meets the first agent's auth-failure flow only.
    auth_error = call.auth_error
    while True:
        actor = CallActor(call, media, agent, runtime, auth_error=auth_error)
        auth_error = None
        call.actor = actor
        await actor.run()
        # The auth-failure flow may hand the call to another route's agent.
        handoff = actor.handoff
        next_agent = call.agent_for(handoff) if handoff else None
        if next_agent is None or call.ended.is_set():
            return
        agent = next_agent


async def configured(call: CallControl, agent: AgentSpec) -> AgentSpec:
    """The agent this call gets from its per-call configuration (run in a
    thread: it is the user's code), or the agent as it stands when that fails
    (logged and recorded: the call goes on)."""
    assert agent.configure is not None
    info = dict(agent.global_data.get("call") or {})
    try:
        spec = await asyncio.get_running_loop().run_in_executor(None, agent.configure, info)
    except Exception as exc:  # the user's callback: anything may go wrong
        log.warning("dynamic_config_failed", call_id=call.call_id, error=repr(exc))
        if call.record is not None:
            call.record.add("dynamic_config", {"ok": False, "error": repr(exc)})
        return agent
    if call.record is not None:
        call.record.add("dynamic_config", {"ok": True, "agent": spec.name})
    # The call's SIP data stays with it whatever the callback set.
    return replace(spec, global_data={**spec.global_data, "call": info}, configure=None)
