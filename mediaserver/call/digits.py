"""Keypad input: digits collected until a terminator, a count or a pause (sans-IO).

`DigitCollector` takes each digit the caller presses and says when the input
is complete: on a terminator key (not part of the input), when `max_digits`
are in, or when the shell's timer (`digit_timeout` after the last press)
expires. A tool can ask for the next input with its own limits
(`CollectDigits`); they apply once, then the call's settings again.
"""

from __future__ import annotations

from dataclasses import dataclass

from mediaserver.pipeline.settings import DtmfSettings

__all__ = ["DigitCollector", "DigitRequest"]


@dataclass(frozen=True)
class DigitRequest:
    """Limits for one input (a tool's request)."""

    max_digits: int = 0
    terminators: str = "#"
    timeout: float = 3.0


class DigitCollector:
    """Collects one input at a time (see the module docstring).

    Args:
        settings: the call's DTMF settings (read live).
    """

    def __init__(self, settings: DtmfSettings) -> None:
        self._settings = settings
        self._request: DigitRequest | None = None
        self._digits: list[str] = []

    @property
    def timeout(self) -> float:
        """Seconds after a press that end the input."""
        request = self._request
        return request.timeout if request is not None else self._settings.digit_timeout

    def request(self, request: DigitRequest) -> None:
        """A tool asks for the next input with these limits."""
        self._request = request

    def press(self, digit: str) -> str | None:
        """One key; the complete input when this key completes it."""
        request = self._request
        terminators = request.terminators if request else self._settings.terminators
        limit = request.max_digits if request else self._settings.max_digits
        if digit in terminators:
            return self.flush() if self._digits else None
        self._digits.append(digit)
        return self.flush() if limit and len(self._digits) >= limit else None

    def flush(self) -> str | None:
        """End the input now (the timer expired); None when nothing was pressed."""
        digits, self._digits = "".join(self._digits), []
        if not digits:
            return None
        self._request = None
        return digits
