"""mediaserver: a SIP/RTP media server with the voice-AI pipeline inside it.

    from mediaserver import AgentBase, SwaigFunctionResult

The agent API is imported on first use, so `python -m mediaserver` and the
protocol cores stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["AgentBase", "AgentServer", "FunctionResult", "SwaigFunctionResult"]

if TYPE_CHECKING:
    from mediaserver.agent import AgentBase, AgentServer, FunctionResult, SwaigFunctionResult


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mediaserver import agent

        return getattr(agent, name)
    raise AttributeError(f"module 'mediaserver' has no attribute {name!r}")
