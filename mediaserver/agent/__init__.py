"""Agents in Python (`AgentBase`, SignalWire-style) and their tool results.

The names load on first use, so `mediaserver.agent.runner` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["AgentBase", "AgentServer", "FunctionResult", "SwaigFunctionResult"]

if TYPE_CHECKING:
    from mediaserver.agent.base import AgentBase
    from mediaserver.agent.result import FunctionResult, SwaigFunctionResult
    from mediaserver.agent.server import AgentServer


def __getattr__(name: str) -> Any:
    if name == "AgentBase":
        from mediaserver.agent.base import AgentBase

        return AgentBase
    if name == "AgentServer":
        from mediaserver.agent.server import AgentServer

        return AgentServer
    if name in ("FunctionResult", "SwaigFunctionResult"):
        from mediaserver.agent import result

        return getattr(result, name)
    raise AttributeError(f"module 'mediaserver.agent' has no attribute {name!r}")
