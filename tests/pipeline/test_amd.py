"""AmdClassifier: the rules on a fake clock (VAD probabilities every 32 ms)."""

from __future__ import annotations

from mediaserver.media.tones import Tone
from mediaserver.pipeline.amd import AmdClassifier, AmdResult, machine_words

STEP = 0.032


def feed(amd: AmdClassifier, pattern: list[tuple[float, float]], start: float = 0.0) -> float:
    """Probabilities: (seconds, prob) runs; returns the time reached."""
    t = start
    for seconds, prob in pattern:
        end = t + seconds
        while t < end and not amd.decided:
            t += STEP
            amd.vad(t, prob)
    return t


def test_a_short_hello_then_silence_is_a_person_once_its_words_are_in() -> None:
    amd = AmdClassifier()
    t = feed(amd, [(0.4, 0.0), (0.6, 0.95), (0.7, 0.02)])
    assert amd.awaiting_words and not amd.decided
    result = amd.words(t, "hello?")
    assert result is not None and result.verdict == "human"
    assert 1.6 < result.at < 1.9 and 0.5 < result.speech < 0.7


def test_a_long_greeting_is_a_machine_before_it_ends() -> None:
    amd = AmdClassifier()
    # Sentences with short pauses: the speech adds up past 2.4 s.
    feed(amd, [(0.3, 0.0)] + [(1.0, 0.9), (0.35, 0.1)] * 5)
    assert amd.result is not None and amd.result.verdict == "machine"
    assert amd.result.at < 3.6 and "greeting" in amd.result.reason


def test_recording_words_in_a_short_greeting_make_a_machine() -> None:
    amd = AmdClassifier()
    t = feed(amd, [(0.2, 0.0), (1.5, 0.9), (0.7, 0.0)])
    result = amd.words(t, "Hi, you've reached Sam")
    assert result is not None and result.verdict == "machine" and "reached" in result.reason


def test_nobody_speaking_is_silence_and_a_tone_first_is_a_fax() -> None:
    quiet = AmdClassifier()
    feed(quiet, [(4.0, 0.0)])
    assert quiet.result == AmdResult("silence", quiet.result.at, quiet.result.reason)
    assert 3.5 <= quiet.result.at < 3.6
    fax = AmdClassifier()
    feed(fax, [(0.5, 0.0)])
    result = fax.tone(0.5, Tone(1100.0, 0.0, 0.5))
    assert result is not None and result.verdict == "fax" and "fax tone" in result.reason


def test_a_beep_after_speech_is_a_machine_and_one_verdict_only() -> None:
    amd = AmdClassifier()
    t = feed(amd, [(1.0, 0.9), (0.3, 0.0)])
    first = amd.tone(t, Tone(1000.0, t, 0.4))
    assert first is not None and first.verdict == "machine"
    assert amd.vad(t + 1, 0.9) is None and amd.words(t + 1, "hello") is None
    assert amd.result is first


def test_speech_still_going_at_the_end_of_analysis_is_a_machine() -> None:
    amd = AmdClassifier()
    # Short bursts with long gaps never pass the speech limit but never stop either.
    feed(amd, [(0.25, 0.9), (0.55, 0.0)] * 9)
    assert amd.result is not None and amd.result.verdict == "machine", amd.result


def test_machine_words() -> None:
    assert machine_words("Please leave a message after the tone.") == "leave a message"
    assert machine_words("You've reached the Smiths") == "you've reached"
    assert machine_words("hello, who is this?") is None
