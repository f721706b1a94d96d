"""Tool functions of the recovery tests' agent ("tests.call.recovery_tools:...")."""

from mediaserver import SwaigFunctionResult


def weather_desk() -> SwaigFunctionResult:
    """Put the caller through to the weather desk (the test injects a transfer fault)."""
    return SwaigFunctionResult("Putting you through.").connect("sip:desk@127.0.0.1:9")
