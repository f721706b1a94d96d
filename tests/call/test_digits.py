"""Keypad input collected for the conversation (sans-IO)."""

from __future__ import annotations

import pytest

from mediaserver.call import commands as cmd
from mediaserver.call.conversation import Conversation
from mediaserver.call.digits import DigitCollector, DigitRequest
from mediaserver.call.spec import AgentSpec
from mediaserver.pipeline.settings import DtmfSettings


def press(collector: DigitCollector, keys: str) -> list[str]:
    return [done for key in keys if (done := collector.press(key)) is not None]


def test_a_terminator_ends_the_input_and_is_not_part_of_it() -> None:
    keys = DigitCollector(DtmfSettings())
    assert press(keys, "1234#") == ["1234"]
    assert press(keys, "#") == []  # nothing pressed: nothing to say
    assert press(keys, "9") == [] and keys.flush() == "9"  # the timer ends it


def test_max_digits_ends_the_input_when_reached() -> None:
    keys = DigitCollector(DtmfSettings(max_digits=4, terminators="*"))
    assert press(keys, "123456#78") == ["1234", "56#7"]


def test_a_tools_request_applies_to_the_next_input_only() -> None:
    settings = DtmfSettings(digit_timeout=3.0)
    keys = DigitCollector(settings)
    convo = Conversation.start(AgentSpec(name="a"))
    convo.keypad = keys
    assert convo.apply(cmd.CollectDigits(max_digits=3, terminators="*", timeout=5.0))
    assert keys.timeout == 5.0
    assert press(keys, "1#23") == ["1#2"]
    assert keys.timeout == 3.0
    assert press(keys, "45#") == ["345"]


def test_terminators_must_be_keys() -> None:
    with pytest.raises(ValueError, match="not DTMF keys"):
        DtmfSettings(terminators="#x")
    assert DigitRequest().terminators == "#"
