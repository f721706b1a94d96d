"""`SwaigFunctionResult`: what a tool returns, as in the SignalWire Agents SDK.

A result is the text the model sees (`response`) plus actions the call actor
carries out, chainable:

    return (SwaigFunctionResult("Transferring you now.")
            .say("Please hold.")
            .connect("sip:sales@example.com"))

Actions are plain dicts in the SDK's wire shape (`to_dict()`), so results can
be logged, stored in the call record and compared in tests.
"""

from __future__ import annotations

import json
from typing import Any

from mediaserver.agent.actions import to_commands
from mediaserver.agent.compat import RESULT_UNSUPPORTED
from mediaserver.call.commands import Command


class SwaigFunctionResult:
    """A tool's answer for the model and the actions for the call.

    Args:
        response: text the model reads (and the scripted engine speaks).
        post_process: let the model speak once more after the actions ran.
    """

    def __init__(self, response: str | None = None, post_process: bool = False) -> None:
        self.response = response or ""
        self.post_process = post_process
        self.action: list[dict[str, Any]] = []

    # -- the response ---------------------------------------------------------------

    def set_response(self, response: str) -> SwaigFunctionResult:
        """Replace the text for the model."""
        self.response = response
        return self

    def set_post_process(self, post_process: bool) -> SwaigFunctionResult:
        """Whether the model gets a turn after the actions."""
        self.post_process = post_process
        return self

    def add_action(self, name: str, data: Any) -> SwaigFunctionResult:
        """Add a raw action `{name: data}`."""
        self.action.append({name: data})
        return self

    def add_actions(self, actions: list[dict[str, Any]]) -> SwaigFunctionResult:
        """Add several raw actions."""
        self.action.extend(actions)
        return self

    # -- call control -------------------------------------------------------------------

    def say(self, text: str) -> SwaigFunctionResult:
        """Speak `text` to the caller."""
        return self.add_action("say", text)

    def hangup(self) -> SwaigFunctionResult:
        """End the call (BYE) once what is being said has been said."""
        return self.add_action("hangup", True)

    def stop(self) -> SwaigFunctionResult:
        """Stop the agent: no more model turns; the call stays up."""
        return self.add_action("stop", True)

    def hold(self, timeout: int = 300) -> SwaigFunctionResult:
        """Put the caller on hold for up to `timeout` seconds."""
        return self.add_action("hold", max(0, min(int(timeout), 900)))

    def connect(
        self, destination: str, final: bool = True, from_addr: str | None = None
    ) -> SwaigFunctionResult:
        """Transfer the call to a SIP URI (REFER where allowed, else bridged)."""
        data: dict[str, Any] = {"dest": destination, "final": final}
        if from_addr:
            data["from"] = from_addr
        return self.add_action("transfer", data)

    def transfer(self, destination: str, final: bool = True) -> SwaigFunctionResult:
        """Same as `connect`."""
        return self.connect(destination, final)

    def record_call(
        self,
        control_id: str | None = None,
        stereo: bool = True,
        format: str = "wav",
        direction: str = "both",
        **options: Any,
    ) -> SwaigFunctionResult:
        """Start recording the call (here: both directions, a stereo WAV in
        `media.recordings_dir`; the path goes into the call record)."""
        data: dict[str, Any] = {"stereo": stereo, "format": format, "direction": direction}
        if control_id:
            data["control_id"] = control_id
        return self.add_action("record_call", {**data, **options})

    def stop_record_call(self, control_id: str | None = None) -> SwaigFunctionResult:
        """Stop the call's recording."""
        return self.add_action("stop_record_call", {"control_id": control_id} if control_id else {})

    def pause_record_call(self) -> SwaigFunctionResult:
        """Pause the recording, e.g. while the caller reads a card number (silence
        is recorded instead; an extension)."""
        return self.add_action("pause_record_call", {})

    def resume_record_call(self) -> SwaigFunctionResult:
        """Resume a paused recording (an extension)."""
        return self.add_action("resume_record_call", {})

    def warm_transfer(
        self, destination: str, summary: str | None = None, hold_music: str | None = None
    ) -> SwaigFunctionResult:
        """Hand the caller to a person: hold the caller (`hold_music`, a WAV, or
        silence), call `destination`, tell them `summary` (default: the model's
        summary of the call), then join the two; if nobody takes the call the
        agent is back with the caller and says so (an extension)."""
        data: dict[str, Any] = {"dest": destination}
        if summary:
            data["summary"] = summary
        if hold_music:
            data["hold_music"] = hold_music
        return self.add_action("warm_transfer", data)

    def collect_digits(
        self, max_digits: int = 0, terminators: str = "#", digit_timeout: int = 3000
    ) -> SwaigFunctionResult:
        """Ask for the caller's next keypad input with these limits (an extension:
        the digits reach the model as the caller's words)."""
        return self.add_action(
            "collect_digits",
            {"max_digits": max_digits, "terminators": terminators, "digit_timeout": digit_timeout},
        )

    def send_dtmf(self, digits: str) -> SwaigFunctionResult:
        """Send DTMF digits to the caller (RFC 4733)."""
        return self.add_action("send_dtmf", digits)

    def wait_for_user(self, enabled: bool = True) -> SwaigFunctionResult:
        """Wait for the caller to speak before the agent talks again."""
        return self.add_action("wait_for_user", enabled)

    def simulate_user_input(self, text: str) -> SwaigFunctionResult:
        """Act as if the caller had said `text`."""
        return self.add_action("user_input", text)

    def play_background_file(self, filename: str, wait: bool = False) -> SwaigFunctionResult:
        """Play a WAV under the conversation."""
        return self.add_action("playback_bg", {"file": filename, "wait": wait})

    def stop_background_file(self) -> SwaigFunctionResult:
        """Stop the background file."""
        return self.add_action("stop_playback_bg", True)

    def set_end_of_speech_timeout(self, milliseconds: int) -> SwaigFunctionResult:
        """Change how long a pause ends the caller's turn."""
        return self.add_action("end_of_speech_timeout", int(milliseconds))

    # -- data ----------------------------------------------------------------------------

    def update_global_data(self, data: dict[str, Any]) -> SwaigFunctionResult:
        """Merge `data` into the call's global data."""
        return self.add_action("set_global_data", dict(data))

    def remove_global_data(self, keys: str | list[str]) -> SwaigFunctionResult:
        """Remove keys from the call's global data."""
        return self.add_action("unset_global_data", [keys] if isinstance(keys, str) else keys)

    def set_metadata(self, data: dict[str, Any]) -> SwaigFunctionResult:
        """Merge `data` into the tool's metadata (kept on the call record)."""
        return self.add_action("set_meta_data", dict(data))

    def swml_change_step(self, step_name: str) -> SwaigFunctionResult:
        """Move the conversation to another step of its context."""
        return self.add_action("change_step", step_name)

    def swml_change_context(self, context_name: str) -> SwaigFunctionResult:
        """Move the conversation to another context."""
        return self.add_action("change_context", context_name)

    def toggle_functions(self, toggles: list[dict[str, Any]]) -> SwaigFunctionResult:
        """Enable or disable tools: `[{"function": "name", "active": False}, ...]`."""
        return self.add_action("toggle_functions", list(toggles))

    # -- output ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The SDK's wire shape."""
        out: dict[str, Any] = {"response": self.response}
        if self.action:
            out["action"] = list(self.action)
        if self.post_process:
            out["post_process"] = True
        return out

    def to_tool_output(self) -> tuple[str, tuple[Command, ...]]:
        """(text for the model, the actions as the call's commands): what the call runs."""
        return self.response, to_commands(self.action)

    def __repr__(self) -> str:
        return f"SwaigFunctionResult({json.dumps(self.to_dict())})"

    def __getattr__(self, name: str) -> Any:
        if name in RESULT_UNSUPPORTED:
            raise NotImplementedError(
                f"SwaigFunctionResult.{name} (SignalWire Agents SDK) is not supported by "
                "mediaserver; docs/agents.md lists what is"
            )
        raise AttributeError(f"'SwaigFunctionResult' object has no attribute {name!r}")


#: The newer SDK name.
FunctionResult = SwaigFunctionResult


def coerce_result(value: Any) -> SwaigFunctionResult:
    """The SDK's coercion of a handler's return value.

    None -> an empty response; str -> the response; a dict with "response"
    (and maybe "action") -> that result; any other dict or list -> its JSON as
    the response; anything else -> its str().
    """
    if isinstance(value, SwaigFunctionResult):
        return value
    if value is None:
        return SwaigFunctionResult("")
    if isinstance(value, str):
        return SwaigFunctionResult(value)
    if isinstance(value, dict) and "response" in value:
        result = SwaigFunctionResult(str(value["response"]), bool(value.get("post_process")))
        actions = value.get("action") or []
        if isinstance(actions, list):
            result.add_actions([a for a in actions if isinstance(a, dict)])
        return result
    if isinstance(value, (dict, list)):
        return SwaigFunctionResult(json.dumps(value, default=str))
    return SwaigFunctionResult(str(value))
