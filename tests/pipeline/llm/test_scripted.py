"""Tests for mediaserver.pipeline.llm.scripted: the offline deterministic engine."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from mediaserver.pipeline.llm import (
    Done,
    LlmEvent,
    Message,
    ScriptedBackend,
    ScriptedConfig,
    ScriptedReply,
    Token,
    ToolCall,
    ToolCalls,
    ToolSpec,
)


def schema(required: list[str] | None = None, **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or []}


CHECK_ORDER = ToolSpec(
    "check_order_status",
    "Look up the delivery status of an order.",
    schema(["order_id"], order_id={"type": "string", "description": "The order reference"}),
)
BOOK_TABLE = ToolSpec(
    "bookTable",
    "Reserve a table at the restaurant.",
    schema(
        ["party_size"],
        party_size={"type": "integer", "description": "How many guests"},
        outdoor={"type": "boolean"},
    ),
)
ORDER_PIZZA = ToolSpec(
    "order_pizza",
    "Order a pizza for delivery.",
    schema(
        ["size", "quantity"],
        size={"type": "string", "enum": ["small", "medium", "large", "extra large"]},
        quantity={"type": "integer"},
        extra_cheese={"type": "boolean"},
    ),
)
WEATHER = ToolSpec(
    "get_weather",
    "Current weather forecast for a city.",
    schema(["city"], city={"type": "string", "description": "City name"}),
)
TRANSFER = ToolSpec("transfer_call", "Transfer the caller to a human agent.", schema())
TOOLS = [CHECK_ORDER, BOOK_TABLE, ORDER_PIZZA, WEATHER, TRANSFER]

CONFIG = ScriptedConfig(
    replies=[
        ScriptedReply(["hello", "good morning"], "Hello! How can I help you today?"),
        ScriptedReply(["opening hours", "open"], "We are open from nine to five."),
        ScriptedReply(["repeat after me"], "You said: {user}"),
    ],
    fallback="Sorry, I did not get that.",
)


def run_stream(
    backend: ScriptedBackend, messages: list[Message], tools: list[ToolSpec] | None = None
) -> list[LlmEvent]:
    async def main() -> list[LlmEvent]:
        async with asyncio.timeout(5):
            return [e async for e in backend.stream(messages, TOOLS if tools is None else tools)]

    return asyncio.run(main())


def said(events: list[LlmEvent]) -> str:
    assert events[-1] == Done("stop")
    return "".join(e.text for e in events if isinstance(e, Token))


def call(text: str, tools: list[ToolSpec] | None = None) -> ToolCall:
    events = run_stream(ScriptedBackend(CONFIG), [Message("user", text)], tools)
    assert len(events) == 2, events
    assert isinstance(events[0], ToolCalls)
    assert events[1] == Done("tool_calls")
    (only,) = events[0].calls
    return only


# ---------------------------------------------------------------- tool choice and arguments


@pytest.mark.parametrize(
    ("text", "name", "arguments"),
    [
        ("check order a b one two three", "check_order_status", {"order_id": "AB123"}),
        ("what is the status of my order one two three", "check_order_status", {"order_id": "123"}),
        ("check orders bravo oh seven", "check_order_status", {"order_id": "B07"}),
        ("book a table for forty two", "bookTable", {"party_size": 42}),
        ("book a table for four outside yes", "bookTable", {"party_size": 4, "outdoor": True}),
        ("book a table for six no not outdoor", "bookTable", {"party_size": 6, "outdoor": False}),
        ("book a table for two outdoor", "bookTable", {"party_size": 2, "outdoor": True}),
        ("i want two large pizzas", "order_pizza", {"size": "large", "quantity": 2}),
        (
            "order three extra large pizza with extra cheese",
            "order_pizza",
            {"size": "extra large", "quantity": 3, "extra_cheese": True},
        ),
        ("pizza SMALL one please", "order_pizza", {"size": "small", "quantity": 1}),
        ("what's the weather in paris", "get_weather", {"city": "paris"}),
        ("weather forecast for new york", "get_weather", {"city": "new york"}),
        ("transfer me to a human", "transfer_call", {}),
    ],
)
def test_tool_call(text: str, name: str, arguments: dict[str, Any]) -> None:
    got = call(text)
    assert (got.name, got.arguments) == (name, arguments)
    json.dumps(got.arguments)  # always valid JSON


def test_integer_spoken_as_digits() -> None:
    got = call("book table for one two")
    assert got.arguments == {"party_size": 12}


def test_description_words_choose_a_tool() -> None:
    # No name word ("check", "order", "status"), but two description words (look, delivery).
    got = call("can you look up my delivery one two three", [CHECK_ORDER])
    assert got.arguments == {"order_id": "123"}
    # one description word alone (score 1) is not enough
    events = run_stream(ScriptedBackend(CONFIG), [Message("user", "delivery")], [CHECK_ORDER])
    assert said(events) == "Sorry, I did not get that."


def test_tie_goes_to_first_tool() -> None:
    a = ToolSpec("cancel_order", "", schema())
    b = ToolSpec("cancel_booking", "", schema())
    assert call("please cancel", [a, b]).name == "cancel_order"
    assert call("please cancel", [b, a]).name == "cancel_booking"


def test_call_ids_count_per_instance() -> None:
    backend = ScriptedBackend()
    ids = []
    for _ in range(3):
        events = run_stream(backend, [Message("user", "transfer me")])
        assert isinstance(events[0], ToolCalls)
        ids.append(events[0].calls[0].id)
    assert ids == ["call_1", "call_2", "call_3"]
    other = run_stream(ScriptedBackend(), [Message("user", "transfer me")])
    assert isinstance(other[0], ToolCalls) and other[0].calls[0].id == "call_1"


# ---------------------------------------------------------------- missing parameters


@pytest.mark.parametrize(
    ("text", "question"),
    [
        ("check my order", "What is the order id?"),
        ("book a table", "What is the party size?"),
        ("order a large pizza", "What is the quantity?"),
        ("order two pizzas", "What is the size?"),
        ("weather", "What is the city?"),
    ],
)
def test_asks_for_missing_required(text: str, question: str) -> None:
    backend = ScriptedBackend(CONFIG)
    assert said(run_stream(backend, [Message("user", text)])) == question
    assert backend._calls == 0  # no id spent on a question


def test_answer_to_question_completes_the_call() -> None:
    backend = ScriptedBackend(CONFIG)
    history = [Message("system", "You are a shop."), Message("user", "check my order")]
    question = said(run_stream(backend, history))
    history += [Message("assistant", question), Message("user", "a b one two three")]
    events = run_stream(backend, history)
    assert isinstance(events[0], ToolCalls)
    assert events[0].calls[0] == ToolCall("call_1", "check_order_status", {"order_id": "AB123"})

    # two missing parameters asked one after the other
    history = [Message("user", "i would like a pizza")]
    history += [Message("assistant", said(run_stream(backend, history)))]
    assert history[-1].content == "What is the size?"
    history += [Message("user", "medium")]
    history += [Message("assistant", said(run_stream(backend, history)))]
    assert history[-1].content == "What is the quantity?"
    history += [Message("user", "three")]
    events = run_stream(backend, history)
    assert isinstance(events[0], ToolCalls)
    assert events[0].calls[0].arguments == {"size": "medium", "quantity": 3}


# ---------------------------------------------------------------- tool results


def after_tool(content: str) -> str:
    history = [
        Message("user", "check order one two three"),
        Message(
            "assistant",
            None,
            tool_calls=[ToolCall("call_1", "check_order_status", {"order_id": "123"})],
        ),
        Message("tool", content, tool_call_id="call_1", name="check_order_status"),
    ]
    events = run_stream(ScriptedBackend(CONFIG), history)
    assert all(isinstance(e, Token) for e in events[:-1])
    return said(events)


def test_speaks_tool_result() -> None:
    assert after_tool("Your order ships tomorrow.") == "Your order ships tomorrow."
    assert after_tool(json.dumps({"response": "It was delivered today.", "status": 3})) == (
        "It was delivered today."
    )
    assert after_tool(json.dumps("quoted string")) == "quoted string"
    assert after_tool(json.dumps({"status": "shipped"})) == '{"status": "shipped"}'
    assert after_tool("") == "Done."


def test_tool_result_one_word_per_token() -> None:
    history = [Message("tool", "  Your   order ships.  ", tool_call_id="c")]
    events = run_stream(ScriptedBackend(), history)
    assert events == [Token("Your   "), Token("order "), Token("ships."), Done("stop")]


# ---------------------------------------------------------------- replies


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("Hello there", "Hello! How can I help you today?"),
        ("well GOOD MORNING to you", "Hello! How can I help you today?"),
        ("what are your opening hours", "We are open from nine to five."),
        ("are you open", "We are open from nine to five."),
        ("othello", "Sorry, I did not get that."),  # "hello" only as a whole word
        ("reopen", "Sorry, I did not get that."),
        ("repeat after me banana", "You said: repeat after me banana"),
        ("something else entirely", "Sorry, I did not get that."),
    ],
)
def test_replies(text: str, reply: str) -> None:
    assert said(run_stream(ScriptedBackend(CONFIG), [Message("user", text)], [])) == reply


def test_first_reply_wins_and_tools_come_first() -> None:
    config = ScriptedConfig([ScriptedReply(["a"], "first"), ScriptedReply(["a"], "second")])
    assert said(run_stream(ScriptedBackend(config), [Message("user", "a")], [])) == "first"
    # "hello" matches a reply, but naming a tool wins
    assert call("hello, transfer me please").name == "transfer_call"


def test_default_fallback_and_no_user_message() -> None:
    backend = ScriptedBackend()
    assert (
        said(run_stream(backend, [Message("user", "xyz")])) == "I'm sorry, I can't help with that."
    )
    assert said(run_stream(backend, [])) == "I'm sorry, I can't help with that."
    assert (
        said(run_stream(backend, [Message("system", "hi")])) == "I'm sorry, I can't help with that."
    )


def test_words_per_token() -> None:
    config = ScriptedConfig(fallback="one two three four five", words_per_token=2)
    events = run_stream(ScriptedBackend(config), [Message("user", "x")], [])
    assert events == [Token("one two "), Token("three four "), Token("five"), Done("stop")]


# ---------------------------------------------------------------- pacing and cancellation


def test_token_delay_paces_tokens() -> None:
    config = ScriptedConfig(fallback="a b c d", token_delay=0.05)
    t0 = time.monotonic()
    events = run_stream(ScriptedBackend(config), [Message("user", "x")], [])
    elapsed = time.monotonic() - t0
    assert said(events) == "a b c d"
    assert 0.14 <= elapsed < 1.0  # three gaps between four tokens


def test_cancel_during_token_delay() -> None:
    config = ScriptedConfig(fallback="one two three four five six", token_delay=10.0)
    got: list[LlmEvent] = []

    async def main() -> None:
        async def consume() -> None:
            async for event in ScriptedBackend(config).stream([Message("user", "x")], []):
                got.append(event)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 1.0)
        assert time.monotonic() - t0 < 0.5

    asyncio.run(main())
    assert got == [Token("one ")]
