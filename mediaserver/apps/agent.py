"""The `agent` app: answer, then hand the call to a `CallActor` running its agent.

Also turns a route's inline `agent:` config into the actor's `AgentSpec`
(resolving "module:function" tools once, at start-up).
"""

from __future__ import annotations

import inspect
from typing import Any

from mediaserver.agent.targets import fill, import_callable
from mediaserver.apps.base import CallControl, answer_and_wait_media
from mediaserver.call.actor import CallActor
from mediaserver.call.spec import AgentSpec, Reply, Tool, ToolHandler
from mediaserver.config import AgentConfig, ConfigError, Route, ToolConfig, agent_pipeline
from mediaserver.pipeline.llm.base import ToolSpec
from mediaserver.pipeline.settings import PipelineSettings


async def run_agent(call: CallControl, route: Route) -> None:
    """Answer and let the route's agent talk until the call ends."""
    runtime, agent = call.runtime, call.agent
    if runtime is None or agent is None:
        raise RuntimeError("the agent app needs a loaded pipeline and agent")
    media = await answer_and_wait_media(call, route)
    if media is None:
        return
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


def agent_from_config(user: str, cfg: AgentConfig, pipeline: PipelineSettings) -> AgentSpec:
    """The `AgentSpec` of route `user`.

    Raises:
        ConfigError: a tool's function cannot be imported (the key is named).
    """
    where = f"routes.{user}.agent"
    try:
        settings = agent_pipeline(pipeline, cfg, f"{where}.pipeline")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    tools = [
        Tool(
            ToolSpec(t.name, t.description, t.parameters),
            _handler(t, f"{where}.tools.{i}"),
            fillers=list(t.fillers),
            timeout=t.timeout,
        )
        for i, t in enumerate(cfg.tools)
    ]
    return AgentSpec(
        name=cfg.name or user,
        system_prompt=cfg.prompt,
        greeting=cfg.greeting,
        tools=tools,
        hints=list(cfg.hints),
        replies=[Reply(tuple(r.match), r.reply) for r in cfg.replies],
        fallback=cfg.fallback,
        settings=settings,
    )


def _handler(tool: ToolConfig, where: str) -> ToolHandler:
    if tool.response is not None:
        template = tool.response
        return lambda args, raw: fill(template, args)
    assert tool.function is not None
    func = import_callable(tool.function, f"{where}.function")
    if inspect.iscoroutinefunction(func):

        async def call_async(args: dict[str, Any], raw: dict[str, Any]) -> Any:
            return await func(**args)

        return call_async
    return lambda args, raw: func(**args)
