"""Agents in Python (`AgentBase`, SignalWire-style) and their tool results."""

from mediaserver.agent.base import AgentBase
from mediaserver.agent.result import FunctionResult, SwaigFunctionResult
from mediaserver.agent.server import AgentServer

__all__ = ["AgentBase", "AgentServer", "FunctionResult", "SwaigFunctionResult"]
