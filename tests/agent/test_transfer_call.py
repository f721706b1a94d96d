"""Actions on a live SIP call (tests/agent/transfer_agent.py answered by baresip).

Transfer: the tool returns connect(URI), the server sends REFER, baresip calls the
weather desk (a second mediaserver), and the NOTIFY with 200 ends the agent's leg.
Hangup: the tool returns hangup(), the reply is said, then the server sends BYE.
"""

from __future__ import annotations

from pathlib import Path

from tests.peers import REPO_ROOT, caller_wav

AGENT = REPO_ROOT / "tests" / "agent" / "transfer_agent.py"
QUESTION = "what is the weather in paris"


def test_connect_sends_refer_and_the_caller_reaches_the_desk(  # type: ignore[no-untyped-def]
    start_server, agent_program, baresip, tmp_path: Path
) -> None:
    desk = start_server(routes={"desk": {"app": "hold", "duration": 3}})
    front = agent_program(AGENT, WEATHER_DESK_URI=desk.uri("desk"))
    source = caller_wav(QUESTION, tmp_path, tail=10)
    result = baresip(front.uri("desk"), seconds=25, source_wav=source)
    log = front.log_text()
    assert "Transferring you to the weather desk." in log, front.log_tail()
    front.wait_log("transfer_outcome", timeout=10)
    assert "ok=True" in front.log_text().split("transfer_outcome", 1)[1].splitlines()[0]
    # The caller's new call reached the desk.
    desk.wait_log("call_incoming", timeout=10)
    assert "user=desk" in desk.log_text()
    assert result.established, result.describe()


def test_hangup_action_ends_the_call_with_bye(  # type: ignore[no-untyped-def]
    agent_program, baresip, tmp_path: Path
) -> None:
    front = agent_program(AGENT, ACTION="hangup")
    source = caller_wav(QUESTION, tmp_path, tail=10)
    result = baresip(front.uri("desk"), seconds=25, source_wav=source)
    assert result.established, result.describe()
    ended = front.wait_log("call_ended", timeout=10)
    line = next(x for x in ended.splitlines() if "call_ended" in x)
    assert "by=local" in line, line  # our BYE, not the caller's
    assert "text='It is sunny. Goodbye.'" in front.log_text()
    assert "CALL_CLOSED" in result.event_types()
