"""LLM backends: the interface, the OpenAI-compatible client and the scripted engine.

`load_llm` picks the backend named by `settings.backend`:

* "openai": `OpenAiBackend`, any OpenAI-compatible Chat Completions server.
* "scripted": `ScriptedBackend`, the offline deterministic engine.
* "llama-cpp": `LlamaCppBackend`, a local GGUF model in-process (the `llama`
  extra; the package is imported only when this backend is configured).
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
from mediaserver.pipeline.llm.llama_cpp import LlamaCppBackend
from mediaserver.pipeline.llm.llama_cpp import from_settings as llama_cpp_from_settings
from mediaserver.pipeline.llm.openai_client import OpenAiBackend, from_settings
from mediaserver.pipeline.llm.scripted import ScriptedBackend, ScriptedConfig, ScriptedReply
from mediaserver.pipeline.registry import Backends
from mediaserver.pipeline.settings import LlmSettings

__all__ = [
    "BACKENDS",
    "Done",
    "LlamaCppBackend",
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


def _scripted(settings: LlmSettings, scripted: ScriptedConfig | None) -> LlmBackend:
    return ScriptedBackend(scripted)


def _openai(settings: LlmSettings, scripted: ScriptedConfig | None) -> LlmBackend:
    return from_settings(settings)


def _llama_cpp(settings: LlmSettings, scripted: ScriptedConfig | None) -> LlmBackend:
    return llama_cpp_from_settings(settings)


#: Backend name (`LlmSettings.backend`) -> factory (the scripted engine's replies
#: are the second argument).
BACKENDS: Backends[LlmSettings, LlmBackend] = Backends(
    "llm",
    {"openai": _openai, "scripted": _scripted, "llama-cpp": _llama_cpp},
    lambda settings: f"model {settings.model}",
)


def load_llm(settings: LlmSettings, scripted: ScriptedConfig | None = None) -> LlmBackend:
    """The backend named by `settings.backend`.

    Args:
        settings: The `llm` settings.
        scripted: Replies for the scripted engine (ignored by other backends).

    Returns:
        A ready backend; call `aclose()` when done with it.

    Raises:
        ModelLoadError: unknown backend; an `env:` API key whose variable is
            unset (the message names the settings key); llama-cpp: the package,
            the model file or its chat format is missing.
    """
    return BACKENDS.load(settings, scripted)
