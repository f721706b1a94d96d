"""The call lifecycle refuses illegal transitions and records them."""

from mediaserver.call.lifecycle import TRANSITIONS, CallState, Lifecycle


def test_normal_conversation_path() -> None:
    life = Lifecycle()
    for state in (
        CallState.GREETING,
        CallState.LISTENING,
        CallState.THINKING,
        CallState.SPEAKING,
        CallState.LISTENING,
        CallState.THINKING,
        CallState.SPEAKING,
        CallState.ENDING,
        CallState.ENDED,
    ):
        assert life.go(state)
    assert life.state == CallState.ENDED
    assert not life.refused


def test_illegal_transitions_are_refused_and_recorded() -> None:
    life = Lifecycle()
    assert not life.go(CallState.SPEAKING, "no greeting yet")
    assert life.state == CallState.ANSWERED
    assert life.go(CallState.LISTENING)
    assert life.go(CallState.ENDING)
    assert not life.go(CallState.LISTENING, "after ending")
    assert life.state == CallState.ENDING
    assert [(r.source, r.target) for r in life.refused] == [
        (CallState.ANSWERED, CallState.SPEAKING),
        (CallState.ENDING, CallState.LISTENING),
    ]
    assert life.refused[0].reason == "no greeting yet"


def test_every_live_state_can_end_and_ended_is_final() -> None:
    for state, targets in TRANSITIONS.items():
        if state not in (CallState.ENDING, CallState.ENDED):
            assert {CallState.ENDING, CallState.ENDED} <= targets
    assert TRANSITIONS[CallState.ENDED] == frozenset()
    life = Lifecycle(CallState.ENDED)
    assert not life.live
    assert not life.go(CallState.LISTENING)
