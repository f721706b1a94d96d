"""The turn rules, sans-IO: VAD chunks, word counts and timer expiries on a fake clock."""

from __future__ import annotations

import pytest

from mediaserver.call import turns as tt
from mediaserver.call.turns import Floor, TurnTaker
from mediaserver.pipeline.settings import BargeInSettings, TurnSettings, VadSettings

CHUNK = 0.032
QUIET = Floor()
SPEAKING = Floor(reply=True, speaking=True)
INTERRUPTED = Floor(interrupted=True)


class Clock:
    """Media time, advanced one VAD chunk at a time."""

    def __init__(self) -> None:
        self.t = 0.0


def make(**barge: object) -> TurnTaker:
    return TurnTaker(
        VadSettings(),
        TurnSettings(end_of_speech_timeout=0.5, attention_timeout=10, inactivity_timeout=20),
        BargeInSettings(**barge),  # type: ignore[arg-type]
    )


def chunks(
    taker: TurnTaker, clock: Clock, seconds: float, prob: float, floor: Floor = QUIET
) -> list[tt.Decision]:
    """`seconds` of chunks at `prob`; every decision made on the way."""
    out: list[tt.Decision] = []
    for _ in range(round(seconds / CHUNK)):
        clock.t += CHUNK
        out += taker.vad(clock.t, prob, clock.t, floor)
    return out


def kinds(decisions: list[tt.Decision]) -> list[type]:
    return [type(d) for d in decisions if not isinstance(d, tt.SetTimer | tt.StopTimer)]


def timers(decisions: list[tt.Decision]) -> dict[str, float]:
    """The last deadline set for each timer."""
    return {d.name: d.at for d in decisions if isinstance(d, tt.SetTimer)}


def test_a_turn_ends_after_the_end_of_speech_silence() -> None:
    taker, clock = make(), Clock()
    out = chunks(taker, clock, 1.0, 0.9)
    assert kinds(out) == [tt.SpeechStart, tt.TurnStarted]
    turn = taker.turn
    assert turn is not None and turn.speech_s == pytest.approx(clock.t - turn.started_media)
    speech_end = clock.t
    out = chunks(taker, clock, 0.4, 0.05)
    assert kinds(out) == [tt.SpeechStop, tt.SpeechPaused]
    # Not yet: the deadline is the speech's end plus the timeout, on the media clock.
    assert timers(out)["eos"] == pytest.approx(speech_end + 0.5)
    out = chunks(taker, clock, 0.2, 0.05)
    (ended,) = [d for d in out if isinstance(d, tt.TurnEnded)]
    assert ended.turn is turn and ended.speech_end == pytest.approx(speech_end)
    assert turn.finalising
    # Ended once: more silence decides nothing.
    assert kinds(chunks(taker, clock, 0.2, 0.05)) == []


def test_the_eos_timer_ends_the_turn_between_chunks() -> None:
    taker, clock = make(), Clock()
    chunks(taker, clock, 0.5, 0.9)
    chunks(taker, clock, 0.15, 0.05)
    assert kinds(taker.timer("eos", Floor(), clock.t + 0.5)) == [tt.TurnEnded]
    # A stale expiry (the turn already ended) decides nothing.
    assert taker.timer("eos", Floor(), clock.t + 0.5) == []


def test_speech_before_the_timeout_continues_the_same_turn() -> None:
    taker, clock = make(), Clock()
    chunks(taker, clock, 0.5, 0.9)
    turn = taker.turn
    chunks(taker, clock, 0.3, 0.05)
    out = chunks(taker, clock, 0.3, 0.9)
    assert kinds(out) == [tt.SpeechStart, tt.SpeechResumed]
    assert tt.StopTimer("eos") in out
    assert taker.turn is turn
    # The timer that was set for the first pause is now stale.
    assert taker.timer("eos", Floor(), clock.t) == []


def test_a_fading_word_does_not_delay_the_end_of_the_turn() -> None:
    taker, clock = make(), Clock()
    chunks(taker, clock, 0.5, 0.9)
    confident_end = clock.t
    # Between neg_threshold and threshold: still "speaking", not confident speech.
    chunks(taker, clock, 0.3, 0.4)
    out = chunks(taker, clock, 0.2, 0.05)
    assert timers(out)["eos"] == pytest.approx(confident_end + 0.5)


def test_end_of_speech_timeout_changed_during_the_call_applies() -> None:
    settings = TurnSettings(end_of_speech_timeout=0.5)
    taker, clock = TurnTaker(VadSettings(), settings, BargeInSettings()), Clock()
    chunks(taker, clock, 0.5, 0.9)
    settings.end_of_speech_timeout = 2.0
    out = chunks(taker, clock, 1.0, 0.05)
    assert tt.TurnEnded not in kinds(out)
    assert timers(out)["eos"] == pytest.approx(0.5 - CHUNK + 0.032 + 2.0, abs=0.04)


def test_speech_over_the_agent_barges_in_at_once_by_default() -> None:
    taker, clock = make(), Clock()
    out = chunks(taker, clock, 0.1, 0.9, SPEAKING)
    assert kinds(out) == [tt.SpeechStart, tt.TurnStarted, tt.BargeInDecided]
    # Decided once.
    assert tt.BargeInDecided not in kinds(chunks(taker, clock, 0.5, 0.9, SPEAKING))


def test_barge_in_waits_for_min_speech() -> None:
    taker, clock = make(min_speech=0.5), Clock()
    out = chunks(taker, clock, 0.45, 0.9, SPEAKING)
    assert tt.BargeInDecided not in kinds(out)
    out = chunks(taker, clock, 0.15, 0.9, SPEAKING)
    assert kinds(out) == [tt.BargeInDecided]


def test_barge_in_waits_for_min_words_from_stt() -> None:
    taker, clock = make(min_words=2), Clock()
    chunks(taker, clock, 0.5, 0.9, SPEAKING)
    turn = taker.turn
    assert turn is not None
    assert kinds(taker.words(turn.id, 1, SPEAKING)) == []
    assert kinds(taker.words(turn.id, 2, SPEAKING)) == [tt.BargeInDecided]
    # Words of another (stale) turn change nothing.
    assert taker.words(turn.id + 1, 5, SPEAKING) == []


def test_no_barge_in_while_the_agent_thinks_or_when_disabled() -> None:
    taker, clock = make(), Clock()
    thinking = Floor(reply=True, speaking=False)
    assert tt.BargeInDecided not in kinds(chunks(taker, clock, 0.3, 0.9, thinking))
    taker, clock = make(enabled=False), Clock()
    assert tt.BargeInDecided not in kinds(chunks(taker, clock, 0.3, 0.9, SPEAKING))


def test_an_interruption_without_words_is_false_after_the_window() -> None:
    taker, clock = make(false_resume_window=1.0), Clock()
    chunks(taker, clock, 0.2, 0.9, SPEAKING)
    out = chunks(taker, clock, 0.2, 0.05, INTERRUPTED)
    stop = next(d for d in out if isinstance(d, tt.SpeechStop))
    assert timers(out)["false_resume"] == pytest.approx(stop.media_time + 1.0, abs=0.2)
    turn = taker.turn
    out = taker.timer("false_resume", INTERRUPTED, 0.0)
    assert out == [tt.TurnAbandoned(turn), tt.FalseBargeIn("no words within the window")]  # type: ignore[arg-type]
    assert taker.turn is None


def test_words_within_the_window_make_the_interruption_real() -> None:
    taker, clock = make(), Clock()
    chunks(taker, clock, 0.2, 0.9, SPEAKING)
    chunks(taker, clock, 0.2, 0.05, INTERRUPTED)
    turn = taker.turn
    assert turn is not None
    assert tt.StopTimer("false_resume") in taker.words(turn.id, 1, INTERRUPTED)
    # An expiry that raced the words decides nothing.
    assert taker.timer("false_resume", INTERRUPTED, 0.0) == []


def test_an_empty_transcript_resumes_asks_again_or_is_ignored() -> None:
    taker, clock = make(), Clock()
    chunks(taker, clock, 0.2, 0.9, SPEAKING)
    turn = taker.turn
    assert turn is not None
    assert taker.final(turn.id + 1) is None  # stale
    assert taker.final(turn.id) is turn and taker.turn is None
    assert taker.empty_final(turn, clock.t, INTERRUPTED) == [tt.FalseBargeIn("no words")]
    turn.speech_s = 0.5
    assert taker.empty_final(turn, clock.t, Floor()) == [tt.NotUnderstood(turn)]
    turn.speech_s = 0.1  # a cough: ignored, the caller still owes an answer
    assert taker.empty_final(turn, clock.t, Floor()) == [tt.SetTimer("attention", clock.t + 10)]


def test_fast_pause_is_confirmed_or_undone() -> None:
    taker, clock = make(), Clock()
    assert taker.fast_pause_armed(SPEAKING)
    assert not taker.fast_pause_armed(Floor(reply=True, speaking=True, paused=True))
    assert not make(min_words=1).fast_pause_armed(SPEAKING)
    assert taker.paused(5.0) == [tt.SetTimer("confirm", 5.3)]
    # Silero heard nothing: play on.
    assert taker.timer("confirm", Floor(reply=True, speaking=True, paused=True), 0.0) == [
        tt.Unpause()
    ]
    # Silero confirmed: a turn is open and the pause stands (the barge-in decides).
    chunks(taker, clock, 0.2, 0.9, Floor(reply=True, speaking=True, paused=True))
    assert not taker.fast_pause_armed(SPEAKING)
    assert taker.timer("confirm", SPEAKING, 0.0) == []


def test_speech_that_makes_no_turn_unpauses_when_it_ends() -> None:
    taker, clock = make(), Clock()
    taker.deaf = True
    paused = Floor(reply=True, speaking=True, paused=True)
    out = chunks(taker, clock, 0.3, 0.9, paused)
    assert kinds(out) == [tt.SpeechStart] and taker.turn is None
    out = chunks(taker, clock, 0.2, 0.05, paused)
    assert kinds(out) == [tt.SpeechStop, tt.Unpause]


def test_attention_prompt_then_inactivity_and_speech_resets_it() -> None:
    taker, clock = make(), Clock()
    assert taker.idle(1.0) == [tt.SetTimer("attention", 11.0)]
    assert taker.timer("attention", Floor(reply=True), 0.0) == []  # the agent is busy
    assert taker.timer("attention", Floor(), 0.0) == [tt.AttentionDue()]
    assert taker.idle(20.0) == [tt.SetTimer("attention", 40.0)]
    assert taker.timer("attention", Floor(), 0.0) == [tt.InactivityDue()]
    # The caller speaks: the attention clock starts over with the prompt.
    out = chunks(taker, clock, 0.2, 0.9)
    assert tt.StopTimer("attention") in out
    taker.final(taker.turn.id)  # type: ignore[union-attr]
    assert taker.idle(50.0) == [tt.SetTimer("attention", 60.0)]


def test_no_attention_prompts_on_hold_and_no_turns_when_deaf() -> None:
    taker, clock = make(), Clock()
    taker.on_hold = True
    assert taker.idle(1.0) == []
    taker.deaf = True
    assert tt.TurnStarted not in kinds(chunks(taker, clock, 0.5, 0.9))
    assert taker.turn is None


@pytest.mark.parametrize("said", ["Mhm.", "uh-huh", "Yeah, yeah.", "Okay okay", "mm hmm right"])
def test_a_backchannel_over_the_agent_keeps_the_agents_floor(said: str) -> None:
    taker = make()
    # Still talking (the barge-in waits for words): the agent goes on.
    assert taker.backchannel(said, 1.5, SPEAKING) == []
    # Already cut: it was no interruption, the reply resumes from the cut word.
    assert taker.backchannel(said, 1.5, INTERRUPTED) == [tt.FalseBargeIn("backchannel")]


def test_words_beyond_a_backchannel_or_after_the_agent_finished_are_a_turn() -> None:
    taker = make()
    assert taker.backchannel("yeah I want to cancel", 1.5, SPEAKING) is None
    assert taker.backchannel("no wait", 1.5, INTERRUPTED) is None
    # The agent asked and finished: "yes" answers it.
    assert taker.backchannel("Yes.", 0.3, QUIET) is None
    assert taker.backchannel("", 0.3, SPEAKING) is None


@pytest.mark.parametrize("misheard", ["and make him", "i.e.", "Ripe."])
def test_a_short_overlap_is_a_backchannel_whatever_the_recogniser_heard(misheard: str) -> None:
    taker = make()
    assert taker.backchannel(misheard, 0.4, INTERRUPTED) == [tt.FalseBargeIn("short overlap")]
    assert taker.backchannel(misheard, 0.4, SPEAKING) == []
    # As long as a sentence, the same words are a turn.
    assert taker.backchannel(misheard, 0.9, INTERRUPTED) is None


@pytest.mark.parametrize("said", ["Stop!", "No.", "Wait", "Hold on.", "What?"])
def test_a_short_overlap_that_claims_the_floor_interrupts(said: str) -> None:
    assert make().backchannel(said, 0.4, INTERRUPTED) is None


def test_the_short_overlap_rule_is_configurable() -> None:
    assert make(short_overlap=0).backchannel("Ripe.", 0.3, INTERRUPTED) is None
    # `match` claims the floor too ("Tuesday" alone would be a backchannel).
    assert make(match="tuesday").backchannel("Tuesday", 0.4, INTERRUPTED) is None
    taker = make(interrupt_words=["tuesday"])
    assert taker.backchannel("Tuesday.", 0.4, INTERRUPTED) is None
    assert taker.backchannel("Stop.", 0.4, INTERRUPTED) == [tt.FalseBargeIn("short overlap")]


def test_backchannels_do_not_count_towards_min_words() -> None:
    taker, clock = make(min_words=2), Clock()
    chunks(taker, clock, 0.5, 0.9, SPEAKING)
    turn = taker.turn
    assert turn is not None
    assert taker.content_words("yeah yeah") == 0
    assert kinds(taker.words(turn.id, taker.content_words("yeah yeah"), SPEAKING)) == []
    words = taker.content_words("stop talking")
    assert kinds(taker.words(turn.id, words, SPEAKING)) == [tt.BargeInDecided]


def test_an_empty_backchannel_list_turns_the_rule_off() -> None:
    taker = make(backchannels=[])
    assert taker.backchannel("mhm", 0.9, INTERRUPTED) is None
    assert taker.content_words("mhm") == 1


# -- the turn model (smart_turn) ------------------------------------------------------------


def smart(**turn: object) -> TurnTaker:
    return TurnTaker(
        VadSettings(),
        TurnSettings.model_validate({"attention_timeout": 0, **turn}),
        BargeInSettings(),
        model=True,
    )


def pause_asked(taker: TurnTaker, clock: Clock) -> tuple[tt.CheckTurn, float]:
    """Half a second of speech, then silence until the model is asked."""
    chunks(taker, clock, 0.5, 0.9)
    speech_end = clock.t
    out = chunks(taker, clock, 0.1, 0.05)
    assert not [d for d in out if isinstance(d, tt.CheckTurn)]
    out = chunks(taker, clock, 0.15, 0.05)
    (check,) = [d for d in out if isinstance(d, tt.CheckTurn)]
    assert check.speech_end == pytest.approx(speech_end)
    # Asked once per pause.
    assert not [d for d in chunks(taker, clock, 0.1, 0.05) if isinstance(d, tt.CheckTurn)]
    return check, speech_end


def test_a_complete_turn_ends_as_soon_as_the_model_says_so() -> None:
    taker, clock = smart(), Clock()
    check, speech_end = pause_asked(taker, clock)
    out = taker.turn_checked(check.turn.id, check.speech_end, 0.93, clock.t)
    (ended,) = [d for d in out if isinstance(d, tt.TurnEnded)]
    assert ended.speech_end == pytest.approx(speech_end)


def test_an_incomplete_turn_waits_up_to_max_wait_or_speech() -> None:
    taker, clock = smart(), Clock()
    check, speech_end = pause_asked(taker, clock)
    out = taker.turn_checked(check.turn.id, check.speech_end, 0.1, clock.t)
    assert kinds(out) == [] and timers(out)["eos"] == pytest.approx(speech_end + 3.0)
    # Two seconds of silence: still waiting.
    assert tt.TurnEnded not in kinds(chunks(taker, clock, 2.0, 0.05))
    assert kinds(taker.timer("eos", QUIET, speech_end + 3.0)) == [tt.TurnEnded]


def test_the_caller_going_on_makes_a_stale_answer_and_a_new_question() -> None:
    taker, clock = smart(), Clock()
    check, _ = pause_asked(taker, clock)
    chunks(taker, clock, 0.4, 0.9)  # "...the blue one"
    assert taker.turn_checked(check.turn.id, check.speech_end, 0.99, clock.t) == []
    out = chunks(taker, clock, 0.3, 0.05)
    (again,) = [d for d in out if isinstance(d, tt.CheckTurn)]
    assert again.turn is check.turn and again.speech_end > check.speech_end


def test_a_transcript_ending_mid_sentence_overrides_a_complete_verdict() -> None:
    taker, clock = smart(), Clock()
    check, speech_end = pause_asked(taker, clock)
    taker.transcript(check.turn.id, "I want to change my order to", clock.t)
    out = taker.turn_checked(check.turn.id, check.speech_end, 0.95, clock.t)
    assert kinds(out) == [] and timers(out)["eos"] == pytest.approx(speech_end + 3.0)


def test_an_incomplete_verdict_on_a_finished_transcript_waits_the_silence_timeout() -> None:
    taker, clock = smart(), Clock()
    check, speech_end = pause_asked(taker, clock)
    taker.turn_checked(check.turn.id, check.speech_end, 0.2, clock.t)
    out = taker.transcript(check.turn.id, "where is my order", clock.t)
    assert timers(out)["eos"] == pytest.approx(speech_end + 0.7)


def test_a_failed_model_is_the_silence_detector() -> None:
    taker, clock = smart(), Clock()
    check, speech_end = pause_asked(taker, clock)
    out = taker.turn_checked(check.turn.id, check.speech_end, None, clock.t)
    assert timers(out)["eos"] == pytest.approx(speech_end + 0.7)


def test_the_agents_end_of_speech_timeout_is_the_ceiling() -> None:
    taker, clock = smart(end_of_speech_timeout=1.2), Clock()
    check, speech_end = pause_asked(taker, clock)
    out = taker.turn_checked(check.turn.id, check.speech_end, 0.1, clock.t)
    assert timers(out)["eos"] == pytest.approx(speech_end + 1.2)


def checks(out: list[tt.Decision]) -> list[tt.CheckTurn]:
    return [d for d in out if isinstance(d, tt.CheckTurn)]


def test_the_model_is_not_asked_when_its_answer_cannot_end_the_turn() -> None:
    # The transcript at the pause ends mid-sentence: the turn waits for the
    # ceiling whatever the model says, so it is not asked...
    taker, clock = smart(), Clock()
    chunks(taker, clock, 0.5, 0.9)
    speech_end = clock.t
    turn = taker.turn
    assert turn is not None
    taker.transcript(turn.id, "I want to change my order to", clock.t)
    out = chunks(taker, clock, 0.3, 0.05)
    assert not checks(out)
    assert timers(out)["eos"] == pytest.approx(speech_end + 3.0)
    # ...until a newer transcript of the same pause looks finished.
    assert checks(taker.transcript(turn.id, "I want to change my order.", clock.t))
    # A ceiling too close to the pause for an answer to come first: never asked.
    taker, clock = smart(end_of_speech_timeout=0.25), Clock()
    chunks(taker, clock, 0.5, 0.9)
    out = chunks(taker, clock, 0.4, 0.05)
    assert not checks(out) and tt.TurnEnded in kinds(out)


def test_an_unfinished_final_is_held_until_the_ceiling() -> None:
    taker, clock = smart(), Clock()
    check, speech_end = pause_asked(taker, clock)
    taker.turn_checked(check.turn.id, check.speech_end, 0.9, clock.t)
    now = speech_end + 0.5
    assert taker.hold_for("I want to change my order to", now) == pytest.approx(2.5)
    assert taker.hold_for("I want the blue one.", now) == 0.0
    # The silence detector holds nothing.
    assert make().hold_for("I want to change my order to", now) == 0.0


@pytest.mark.parametrize(
    ("text", "unfinished"),
    [
        ("My order number is", True),
        ("and then I", True),
        ("I'd like a table for", True),
        ("um", True),
        ("I'd like a pizza with...", True),
        ("So my card number,", True),
        ("My order number is 452.", False),
        ("Where is my order?", False),
        ("Yes, that's right.", False),
        ("", False),
    ],
)
def test_unfinished_is_the_last_word(text: str, unfinished: bool) -> None:
    assert smart().unfinished(text) is unfinished


# -- the SDK's barge parameters -------------------------------------------------------------


def test_words_matching_barge_match_interrupt_below_min_words() -> None:
    taker, clock = make(min_words=3, match=r"\b(stop|wait)\b"), Clock()
    chunks(taker, clock, 0.3, 0.9, SPEAKING)
    turn = taker.turn
    assert turn is not None
    turn.partial = "the other"
    assert tt.BargeInDecided not in kinds(taker.words(turn.id, 2, SPEAKING))
    turn.partial = "no Wait"
    assert kinds(taker.words(turn.id, 2, SPEAKING)) == [tt.BargeInDecided]


def test_long_wordless_sound_interrupts_with_interrupt_on_noise() -> None:
    taker, clock = make(interrupt_on_noise=1.0), Clock()
    chunks(taker, clock, 1.2, 0.9, SPEAKING)
    chunks(taker, clock, 0.3, 0.05, INTERRUPTED)
    turn = taker.turn
    assert turn is not None and turn.speech_s >= 1.0
    # No words: not resumed as false, but kept as a real interruption.
    assert taker.timer("false_resume", INTERRUPTED, 0.0) == []
    assert taker.empty_final(turn, clock.t, INTERRUPTED) == [tt.NoiseInterruption(turn)]
    # A short sound still resumes.
    short, clock = make(interrupt_on_noise=1.0), Clock()
    chunks(short, clock, 0.3, 0.9, SPEAKING)
    chunks(short, clock, 0.3, 0.05, INTERRUPTED)
    assert short.turn is not None
    assert short.empty_final(short.turn, clock.t, INTERRUPTED) == [tt.FalseBargeIn("no words")]


def test_barge_match_must_be_a_regular_expression() -> None:
    with pytest.raises(ValueError, match="not a regular expression"):
        BargeInSettings(match="(stop")


def test_preemptive_generation_starts_on_a_finished_transcript_in_a_pause() -> None:
    taker, clock = smart(preemptive=True), Clock()
    chunks(taker, clock, 0.5, 0.9)
    turn = taker.turn
    assert turn is not None
    # While the caller speaks: nothing.
    assert taker.transcript(turn.id, "where is my order", clock.t) == []
    # At the pause the model is asked, and the answer may start.
    out = chunks(taker, clock, 0.25, 0.05)
    assert tt.Preempt(turn, "where is my order") in out
    # A transcript that trails off does not start one.
    taker2, clock2 = smart(preemptive=True), Clock()
    chunks(taker2, clock2, 0.5, 0.9)
    assert taker2.turn is not None
    taker2.transcript(taker2.turn.id, "I want to change my order to", clock2.t)
    assert not [d for d in chunks(taker2, clock2, 0.25, 0.05) if isinstance(d, tt.Preempt)]
    # Off by default.
    taker3, clock3 = smart(), Clock()
    chunks(taker3, clock3, 0.5, 0.9)
    assert taker3.turn is not None
    taker3.transcript(taker3.turn.id, "where is my order", clock3.t)
    assert not [d for d in chunks(taker3, clock3, 0.25, 0.05) if isinstance(d, tt.Preempt)]


@pytest.mark.parametrize(
    ("text", "unfinished"),
    [
        ("I ordered a very", True),
        ("Where is my order?", False),
        ("My order number is 452.", False),
        ("Yes!", False),
    ],
)
def test_from_a_punctuating_recogniser_no_full_stop_is_unfinished(
    text: str, unfinished: bool
) -> None:
    taker = TurnTaker(VadSettings(), TurnSettings(), BargeInSettings(), model=True, punctuated=True)
    assert taker.unfinished(text) is unfinished
    # pocketsphinx writes no punctuation: there it says nothing.
    assert smart().unfinished("I ordered a very") is False


def test_going_on_before_the_last_transcript_reopens_the_turn_from_its_start() -> None:
    taker, clock = make(), Clock()
    chunks(taker, clock, 0.5, 0.9)
    first = taker.turn
    out = chunks(taker, clock, 0.6, 0.05)
    assert tt.TurnEnded in kinds(out) and first is not None
    # "It is 312." before the first turn's final came: one turn from the start,
    # so the recogniser hears it whole; the first final is stale.
    chunks(taker, clock, 0.3, 0.9)
    second = taker.turn
    assert second is not None and second is not first
    assert second.started_media == first.started_media
    assert taker.final(first.id) is None and taker.turn is second


def test_without_transparent_barge_a_late_transcript_closes_its_own_turn() -> None:
    taker, clock = make(transparent=False), Clock()
    chunks(taker, clock, 0.5, 0.9)
    first = taker.turn
    chunks(taker, clock, 0.6, 0.05)
    chunks(taker, clock, 0.3, 0.9)
    second = taker.turn
    assert first is not None and second is not None and second.started_media > first.started_media
    assert taker.final(first.id) is first  # not stale: its words are kept
    assert taker.turn is second
    assert taker.final(first.id) is None  # once
