"""Agents in Python (`AgentBase`, SignalWire-style) and their tool results.

The names load on first use, so `mediaserver.agent.runner` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> the module (under mediaserver.agent) that holds it.
_HOMES = {
    "AgentBase": "base",
    "AgentServer": "server",
    "ContextBuilder": "contexts",
    "DataMap": "data_map",
    "FAQBotAgent": "prefabs",
    "FunctionResult": "result",
    "InfoGatherer": "prefabs",
    "InfoGathererAgent": "prefabs",
    "ReceptionistAgent": "prefabs",
    "SkillBase": "skills",
    "SurveyAgent": "prefabs",
    "SwaigFunctionResult": "result",
    "create_expression_tool": "data_map",
    "create_simple_api_tool": "data_map",
}
__all__ = [
    "AgentBase",
    "AgentServer",
    "ContextBuilder",
    "DataMap",
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

if TYPE_CHECKING:
    from mediaserver.agent.base import AgentBase
    from mediaserver.agent.contexts import ContextBuilder
    from mediaserver.agent.data_map import DataMap, create_expression_tool, create_simple_api_tool
    from mediaserver.agent.prefabs import (
        FAQBotAgent,
        InfoGatherer,
        InfoGathererAgent,
        ReceptionistAgent,
        SurveyAgent,
    )
    from mediaserver.agent.result import FunctionResult, SwaigFunctionResult
    from mediaserver.agent.server import AgentServer
    from mediaserver.agent.skills import SkillBase


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'mediaserver.agent' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mediaserver.agent.{home}"), name)
