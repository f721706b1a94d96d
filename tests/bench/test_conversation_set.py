"""bench/conversation.py: the evaluation set's shape and the scoring helpers (no calls)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load() -> ModuleType:
    # bench/ is a folder of scripts, not a package: load the file, with bench/ on the
    # path for the modules it imports (sip_cps, turn_latency).
    name = "bench_conversation"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / "conversation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


conv = _load()


@pytest.fixture(scope="module")
def items() -> list:
    return conv.load_set()


def test_set_has_enough_requests_for_both_agents(items: list) -> None:
    requests = [(item, t) for item in items for t in item.turns]
    assert len(requests) >= 60
    by_agent = {a: sum(1 for item, _ in requests if item.agent == a) for a in conv.AGENTS}
    assert min(by_agent.values()) >= 20, by_agent


def test_a_third_is_noisy_at_10_to_20_db(items: list) -> None:
    requests = [(item, t) for item in items for t in item.turns]
    noisy = [item for item, _ in requests if item.noise is not None]
    assert len(noisy) * 3 >= len(requests) * 0.95  # a third, give or take one
    assert all(10 <= item.noise.snr_db <= 20 for item in noisy)
    assert {item.noise.kind for item in noisy} == set(conv.NOISE_KINDS)


def test_follow_ups_voices_and_speeds_vary(items: list) -> None:
    follow = [item for item in items if len(item.turns) > 1]
    assert len(follow) >= 8
    assert {item.agent for item in follow} == set(conv.AGENTS)
    assert len({item.voice for item in items}) >= 6
    assert min(item.wpm for item in items) <= 145 and max(item.wpm for item in items) >= 185


def test_every_request_expects_the_agents_tool_and_its_arguments(items: list) -> None:
    params = {"support": {"order_id"}, "weather": {"city"}}
    for item in items:
        for turn in item.turns:
            assert turn.say.strip(), item.id
            assert turn.tool == conv.AGENTS[item.agent].tool, item.id
            assert set(turn.args) == params[item.agent], item.id
            assert all(v.strip() for v in turn.args.values()), item.id
            # Digits are never written: the text is spoken as written.
            assert not any(c.isdigit() for c in turn.say), item.id


def test_the_spoken_number_is_the_expected_one(items: list) -> None:
    # The reference transcript says the order number the item expects.
    styles = set()
    for item in items:
        for turn in item.turns:
            number = conv.has_number(turn)
            if item.agent == "support":
                assert number is not None, item.id
                assert number in conv.normalise(turn.say), (item.id, conv.normalise(turn.say))
                words = turn.say.split()
                styles.add("double" if "double" in words or "triple" in words else "other")
            else:
                assert number is None, item.id
    assert styles == {"double", "other"}


def test_normalise_reads_numbers_as_digits() -> None:
    assert conv.normalise("Order #583.") == ["order", "583"]
    assert conv.normalise("order five eight three") == ["order", "583"]
    assert conv.normalise("five hundred eighty three") == ["583"]
    assert conv.normalise("double five one") == ["551"]
    assert conv.normalise("forty-two, please") == ["42", "please"]
    assert conv.normalise("two thousand and nineteen") == ["2019"]
    assert conv.normalise("What's the weather in Berlin?") == [
        "what",
        "is",
        "the",
        "weather",
        "in",
        "berlin",
    ]


def test_wer_counts_errors_after_normalising() -> None:
    assert conv.wer("check order five eight three", "Check order 583.") == (0, 3)
    assert conv.wer("check order forty two", "check order four two") == (0, 3)
    assert conv.wer("what's the weather in Berlin", "what is the weather in") == (1, 6)
    assert conv.wer("a b c", "") == (3, 3)
    assert conv.wer("", "noise") == (1, 0)
    assert conv.edit_distance(["a", "b", "c"], ["a", "x", "c", "d"]) == 2


def test_argument_and_answer_matching() -> None:
    assert conv.same_value("583", "five eight three")
    assert conv.same_value("New York", "new york")
    assert not conv.same_value("Berlin", "berlin today")
    assert not conv.same_value("583", "5830")
    assert not conv.same_value("583", None)
    assert conv.contains("Order 583: shipped, ETA April 2nd", "583")
    assert conv.contains("It is sunny in new york today.", "New York")
    assert not conv.contains("Order 5830: shipped", "583")
    assert not conv.contains("anything", "")


def test_select_draws_from_both_agents(items: list) -> None:
    chosen = conv.select(items, None, 4, seed=1)
    assert len(chosen) == 4
    assert {i.agent for i in chosen} == set(conv.AGENTS)
    assert conv.select(items, None, 4, seed=1) == chosen
    assert all(i.agent == "weather" for i in conv.select(items, "weather", None, seed=1))


def test_line_noise_level_and_seed() -> None:
    for kind in conv.NOISE_KINDS:
        a = conv.line_noise(kind, 100.0, 2.0, np.random.default_rng(7))
        b = conv.line_noise(kind, 100.0, 2.0, np.random.default_rng(7))
        assert len(a) == 16000
        assert np.array_equal(a, b)
        assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) == pytest.approx(100.0, rel=0.01)


def test_score_call_reads_the_record_window() -> None:
    item = conv.Item(
        "x1",
        "support",
        "en-us",
        160,
        (
            conv.Request("check order five eight three", "check_order", {"order_id": "583"}),
            conv.Request("and order twelve", "check_order", {"order_id": "12"}),
        ),
    )
    call = conv.CallResult(item, established=True)
    call.turns = [conv.SaidTurn(10.0, 12.0, 800.0), conv.SaidTurn(20.0, 21.0, 900.0)]

    def event(t: float, kind: str, **data: object) -> dict:
        return {"t": t, "kind": kind, "data": data}

    call.events = [
        event(5.0, "caller_final", turn=0, text="noise"),
        event(13.0, "caller_final", turn=1, text="check order five eight three"),
        event(13.0, "tool_call", name="check_order", arguments={"order_id": "583"}),
        event(13.1, "turn_latency", turn=1, voice_to_voice_ms=750.0, endpointing_ms=700.0),
        event(15.0, "turn", turn=1, assistant_heard="Order 583: shipped, ETA April 2nd"),
        event(22.0, "caller_final", turn=2, text="and order one two"),
        event(22.0, "tool_call", name="check_order", arguments={"order_id": "1"}),
        event(24.0, "turn", turn=2, assistant_heard="Order 1: shipped"),
    ]
    first, second = conv.score_call(call)
    assert first["transcript"] == "check order five eight three"
    assert first["wer"] == 0 and first["tool_ok"] and first["number_exact"] and first["answered"]
    assert first["latency_ms"] == {"voice_to_voice_ms": 750.0, "endpointing_ms": 700.0}
    assert second["follow_up"] and second["transcript_has_number"]
    assert not second["tool_ok"] and not second["number_exact"] and not second["answered"]
    assert second["tool_selected"]
    assert conv.early_turns(call) == 1
    summary = conv.summarise([first, second])
    assert summary["tool_accuracy"]["rate"] == 0.5
    assert summary["wer_clean"]["wer"] == 0.0
