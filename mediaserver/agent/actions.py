"""The SignalWire action vocabulary, translated into the call's typed commands.

A SWAIG function result carries actions as one-key dicts (``{"say": "..."}``,
``{"toggle_functions": [...]}``); this is the only place that knows those
names. Anything malformed or unknown becomes `Unsupported`, which the call
records and logs instead of failing the tool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mediaserver.call import commands as cmd

__all__ = ["to_command", "to_commands"]


def _toggles(data: Any) -> cmd.Command:
    toggles = tuple(
        (str(t["function"]), bool(t.get("active", True)))
        for t in data or []
        if isinstance(t, dict) and t.get("function")
    )
    return cmd.ToggleTools(toggles)


def _keys(data: Any) -> cmd.Command:
    return cmd.UnsetGlobalData(tuple([data] if isinstance(data, str) else data or []))


def _file(data: Any) -> cmd.Command:
    return cmd.PlayBackground(str(data.get("file") if isinstance(data, dict) else data))


def _collect(data: Any) -> cmd.Command:
    data = data if isinstance(data, dict) else {"max_digits": data}
    return cmd.CollectDigits(
        int(data.get("max_digits", 0)),
        str(data.get("terminators", "#")),
        float(data.get("digit_timeout", 3000)) / 1000,
    )


def _dest(data: Any) -> cmd.Command:
    return cmd.Transfer(str(data.get("dest") if isinstance(data, dict) else data))


def _warm(data: Any) -> cmd.Command:
    data = data if isinstance(data, dict) else {"dest": data}
    summary, music = data.get("summary"), data.get("hold_music")
    return cmd.Transfer(
        str(data["dest"]),
        warm=True,
        summary=str(summary) if summary else None,
        music=str(music) if music else None,
    )


_ACTIONS: dict[str, Callable[[Any], cmd.Command]] = {
    "say": lambda data: cmd.Say(str(data)),
    "hangup": lambda _: cmd.Hangup(),
    "stop": lambda _: cmd.StopListening(),
    "toggle_functions": _toggles,
    "set_global_data": lambda data: cmd.SetGlobalData(dict(data or {})),
    "unset_global_data": _keys,
    "set_meta_data": lambda data: cmd.SetMetadata(dict(data or {})),
    # The SDK gives milliseconds; a pause under 250 ms would cut every caller off.
    "end_of_speech_timeout": lambda data: cmd.SetEndOfSpeech(max(0.25, float(data) / 1000)),
    "send_dtmf": lambda data: cmd.SendDtmf(str(data)),
    "user_input": lambda data: cmd.UserInput(str(data)),
    "collect_digits": _collect,
    "hold": lambda data: cmd.Hold(max(1.0, float(data or 300))),
    "playback_bg": _file,
    "stop_playback_bg": lambda _: cmd.StopBackground(),
    "wait_for_user": lambda _: cmd.WaitForUser(),
    "transfer": _dest,
    "warm_transfer": _warm,
    "change_step": lambda data: cmd.ChangeStep(str(data)),
    "change_context": lambda data: cmd.ChangeContext(str(data)),
    "record_call": lambda data: cmd.RecordCall(_control(data) or "main"),
    "stop_record_call": lambda data: cmd.StopRecordCall(_control(data)),
    "pause_record_call": lambda _: cmd.PauseRecordCall(True),
    "resume_record_call": lambda _: cmd.PauseRecordCall(False),
}


def _control(data: Any) -> str | None:
    control = data.get("control_id") if isinstance(data, dict) else None
    return str(control) if control else None


def to_command(action: Any) -> cmd.Command:
    """One SignalWire action (a one-key dict) as a command."""
    if not isinstance(action, dict) or len(action) != 1:
        return cmd.Unsupported(repr(action))
    ((name, data),) = action.items()
    make = _ACTIONS.get(name)
    if make is None:
        return cmd.Unsupported(str(name), data)
    try:
        return make(data)
    except (TypeError, ValueError, KeyError) as exc:
        return cmd.Unsupported(str(name), f"{data!r}: {exc}")


def to_commands(actions: list[Any]) -> tuple[cmd.Command, ...]:
    """Every action of a result, in order."""
    return tuple(to_command(a) for a in actions)
