"""The `agent` app: answer, then hand the call to a `CallActor` running its agent.

(A route's inline `agent:` becomes its `AgentSpec` in `mediaserver.agent.from_config`.)
"""

from __future__ import annotations

from dataclasses import replace

from mediaserver.apps.amd import screen
from mediaserver.apps.base import CallControl, answer_and_wait_media
from mediaserver.apps.consent import ask_consent
from mediaserver.call.actor import CallActor
from mediaserver.config import Route


async def run_agent(call: CallControl, route: Route) -> None:
    """Answer and let the route's agent talk until the call ends."""
    runtime, agent = call.runtime, call.agent
    if runtime is None or agent is None:
        raise RuntimeError("the agent app needs a loaded pipeline and agent")
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
