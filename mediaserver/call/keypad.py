"""The caller's keys: DTMF in, complete keypad inputs out to the conversation.

`Keypad` is the IO shell around the sans-IO `DigitCollector`: it records each
digit, arms the digit timer, and hands a complete input ("1234") to the
actor, which gives it to the model as the caller's words.
"""

from __future__ import annotations

from collections.abc import Callable

from mediaserver.call.conversation import Conversation
from mediaserver.call.digits import DigitCollector
from mediaserver.call.ports import CallPorts
from mediaserver.pipeline.settings import DtmfSettings

__all__ = ["Keypad"]


class Keypad:
    """Keypad input of one call.

    Args:
        ports: the actor's plumbing (notes, the "digits" timer).
        settings: the call's DTMF settings (read live).
        convo: the conversation (keeps every digit; tools set input limits on it).
        listening: whether keys are input now (not while nobody listens).
        entered: called with each complete input.
    """

    def __init__(
        self,
        ports: CallPorts,
        settings: DtmfSettings,
        convo: Conversation,
        listening: Callable[[], bool],
        entered: Callable[[str], None],
    ) -> None:
        self._ports = ports
        self._settings = settings
        self._convo = convo
        self._listening = listening
        self._entered = entered
        self._collector = convo.keypad = DigitCollector(settings)

    def press(self, digit: str) -> None:
        """The caller pressed `digit`."""
        self._convo.digits.append(digit)
        self._ports.note("dtmf", digit=digit)
        if not self._settings.to_conversation or not self._listening():
            return
        digits = self._collector.press(digit)
        if digits is None:
            self._ports.arm("digits", self._collector.timeout)
        else:
            self._ports.disarm("digits")
            self._done(digits)

    def timer(self) -> None:
        """No key for `digit_timeout`: the input is complete."""
        digits = self._collector.flush()
        if digits is not None:
            self._done(digits)

    def _done(self, digits: str) -> None:
        self._ports.note("keypad_input", digits=digits)
        self._entered(digits)
