"""mediaserver: a SIP/RTP media server with the voice-AI pipeline inside it.

    from mediaserver import AgentBase, SwaigFunctionResult

The agent API is imported on first use, so `python -m mediaserver` and the
protocol cores stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "AgentBase",
    "AgentServer",
    "ContextBuilder",
    "DataMap",
    "DialError",
    "FAQBotAgent",
    "FunctionResult",
    "InfoGatherer",
    "InfoGathererAgent",
    "ReceptionistAgent",
    "SkillBase",
    "SurveyAgent",
    "SwaigFunctionResult",
    "create_expression_tool",
    "create_simple_api_tool",
]

from mediaserver.agent import runner as _runner

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from mediaserver.agent import (
        AgentBase,
        AgentServer,
        ContextBuilder,
        DataMap,
        FAQBotAgent,
        FunctionResult,
        InfoGatherer,
        InfoGathererAgent,
        ReceptionistAgent,
        SkillBase,
        SurveyAgent,
        SwaigFunctionResult,
        create_expression_tool,
        create_simple_api_tool,
    )
    from mediaserver.call.spec import AgentSpec
    from mediaserver.config import Config
    from mediaserver.outbound import DialError


def _serve(config: Config, agents: dict[str, AgentSpec]) -> Coroutine[Any, Any, int]:
    """The server, for `AgentServer.run` (the agent layer cannot import it)."""
    from mediaserver.server import serve

    return serve(config, agents=agents)


_runner.install(_serve)


def __getattr__(name: str) -> Any:
    if name == "DialError":
        from mediaserver.outbound import DialError

        return DialError
    if name in __all__:
        from mediaserver import agent

        return getattr(agent, name)
    raise AttributeError(f"module 'mediaserver' has no attribute {name!r}")
