"""LLM backends: the interface, the OpenAI-compatible client and the scripted engine.

`load_llm` picks the backend named by `settings.backend`:

* "openai": `OpenAiBackend`, any OpenAI-compatible Chat Completions server.
* "scripted": `ScriptedBackend`, the offline deterministic engine.
"""

from __future__ import annotations

from mediaserver.pipeline.llm.base import (
    Done,
    LlmBackend,
    LlmError,
    LlmEvent,
    LlmOptions,
    LlmTimeout,
    Message,
    Role,
    Token,
    ToolCall,
    ToolCalls,
    ToolSpec,
)
from mediaserver.pipeline.llm.openai_client import OpenAiBackend, from_settings
from mediaserver.pipeline.llm.scripted import ScriptedBackend, ScriptedConfig, ScriptedReply
from mediaserver.pipeline.settings import LlmSettings

__all__ = [
    "BACKENDS",
    "Done",
    "LlmBackend",
    "LlmError",
    "LlmEvent",
    "LlmOptions",
    "LlmTimeout",
    "Message",
    "OpenAiBackend",
    "Role",
    "ScriptedBackend",
    "ScriptedConfig",
    "ScriptedReply",
    "Token",
    "ToolCall",
    "ToolCalls",
    "ToolSpec",
    "load_llm",
]

#: Registry names `load_llm` knows.
BACKENDS = ("openai", "scripted")


def load_llm(settings: LlmSettings, scripted: ScriptedConfig | None = None) -> LlmBackend:
    """The backend named by `settings.backend`.

    Args:
        settings: The `llm` settings.
        scripted: Replies for the scripted engine (ignored by other backends).

    Returns:
        A ready backend; call `aclose()` when done with it.

    Raises:
        ValueError: Unknown backend, or an `env:` API key whose variable is unset
            (the message names the settings key).
    """
    if settings.backend == "openai":
        return from_settings(settings)
    if settings.backend == "scripted":
        return ScriptedBackend(scripted)
    raise ValueError(f"llm.backend: unknown backend {settings.backend!r}; known: {BACKENDS}")
