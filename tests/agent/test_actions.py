"""The SignalWire action vocabulary as the call's typed commands."""

from __future__ import annotations

from mediaserver.agent.actions import to_command, to_commands
from mediaserver.agent.result import SwaigFunctionResult
from mediaserver.call import commands as cmd


def test_every_sdk_action_becomes_its_command() -> None:
    result = (
        SwaigFunctionResult("ok")
        .say("Hi.")
        .hangup()
        .stop()
        .hold(20)
        .connect("sip:desk@example.com")
        .send_dtmf("12#")
        .wait_for_user()
        .simulate_user_input("yes")
        .play_background_file("music.wav")
        .stop_background_file()
        .set_end_of_speech_timeout(900)
        .update_global_data({"a": 1})
        .remove_global_data("a")
        .set_metadata({"m": 2})
        .toggle_functions([{"function": "f", "active": False}, {"function": "g"}])
    )
    text, commands = result.to_tool_output()
    assert text == "ok"
    assert commands == (
        cmd.Say("Hi."),
        cmd.Hangup(),
        cmd.StopListening(),
        cmd.Hold(20.0),
        cmd.Transfer("sip:desk@example.com"),
        cmd.SendDtmf("12#"),
        cmd.WaitForUser(),
        cmd.UserInput("yes"),
        cmd.PlayBackground("music.wav"),
        cmd.StopBackground(),
        cmd.SetEndOfSpeech(0.9),
        cmd.SetGlobalData({"a": 1}),
        cmd.UnsetGlobalData(("a",)),
        cmd.SetMetadata({"m": 2}),
        cmd.ToggleTools((("f", False), ("g", True))),
    )


def test_limits_are_applied_where_the_call_needs_them() -> None:
    # A pause under 250 ms would cut every caller off; a hold of 0 is a short hold.
    assert to_command({"end_of_speech_timeout": 50}) == cmd.SetEndOfSpeech(0.25)
    assert to_command({"hold": 0}) == cmd.Hold(300.0)


def test_unknown_or_malformed_actions_are_unsupported_not_errors() -> None:
    assert to_command({"play_on_mars": 1}) == cmd.Unsupported("play_on_mars", 1)
    assert to_command({"a": 1, "b": 2}) == cmd.Unsupported("{'a': 1, 'b': 2}")
    assert to_command("say") == cmd.Unsupported("'say'")
    bad = to_command({"end_of_speech_timeout": "soon"})
    assert isinstance(bad, cmd.Unsupported) and bad.action == "end_of_speech_timeout"
    assert to_commands([{"say": "a"}, {"nope": None}]) == (
        cmd.Say("a"),
        cmd.Unsupported("nope", None),
    )


def test_a_warm_transfer_carries_its_summary_and_music() -> None:
    _, commands = (
        SwaigFunctionResult("One moment.")
        .warm_transfer("sip:sales@pbx", summary="Sam wants a quote.", hold_music="hold.wav")
        .warm_transfer("sip:desk@pbx")
        .to_tool_output()
    )
    assert commands == (
        cmd.Transfer("sip:sales@pbx", warm=True, summary="Sam wants a quote.", music="hold.wav"),
        cmd.Transfer("sip:desk@pbx", warm=True),
    )


def test_recording_actions() -> None:
    _, commands = (
        SwaigFunctionResult("ok")
        .record_call(control_id="rec1", stereo=True)
        .pause_record_call()
        .resume_record_call()
        .stop_record_call("rec1")
        .record_call()
        .to_tool_output()
    )
    assert commands == (
        cmd.RecordCall("rec1"),
        cmd.PauseRecordCall(True),
        cmd.PauseRecordCall(False),
        cmd.StopRecordCall("rec1"),
        cmd.RecordCall("main"),
    )
