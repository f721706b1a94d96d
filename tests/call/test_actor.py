"""The call actor driven by caller audio over real RTP, with the real VAD, STT and TTS.

The LLM is the scripted engine (offline, deterministic); every other stage is
the embedded default: silero VAD on onnxruntime, pocketsphinx, espeak-ng.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediaserver.call.lifecycle import CallState
from mediaserver.call.runtime import PipelineRuntime
from mediaserver.call.voicing import FrameTag
from mediaserver.pipeline.llm import ScriptedBackend, ScriptedConfig, ScriptedReply
from mediaserver.pipeline.settings import PipelineSettings, RecoverySettings, SttSettings
from mediaserver.pipeline.stt.base import SttBackend, SttHints, SttStream, Transcript
from tests.call.harness import agent_call, live_actor, speech, wait_for, weather_agent

pytestmark = pytest.mark.timeout(90)


def settings(barge_in: dict[str, Any] | None = None, **turn: Any) -> PipelineSettings:
    return PipelineSettings.model_validate(
        {
            "stt": {"backend": "pocketsphinx", "pool_size": 1},
            "turn": {"end_of_speech_timeout": 0.5, "attention_timeout": 0, **turn},
            "barge_in": barge_in or {},
        }
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_greets_answers_a_question_with_a_tool_and_keeps_the_conversation(
    tmp_path: Path,
) -> None:
    question = speech("what is the weather in paris", tmp_path)

    async def main() -> None:
        cfg = settings()
        agent = weather_agent(cfg)
        async with agent_call(agent) as live:
            actor, caller = live.actor, live.caller
            # The agent speaks first: the greeting reaches the caller.
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            greeting_packets = len(caller.received)
            assert greeting_packets > 20
            assert actor.convo.messages[1].content == "Hello, this is the weather line."

            _, spoke_end = await caller.say(question)
            assert await wait_for(lambda: len(actor.replies.turns) == 1, 10)
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            roles = [m.role for m in actor.convo.messages]
            assert roles == ["system", "assistant", "user", "assistant", "tool", "assistant"]
            user = actor.convo.messages[2].content or ""
            assert "weather" in user and "paris" in user
            call = actor.convo.messages[3].tool_calls[0]
            assert call.name == "get_weather" and call.arguments == {"city": "paris"}
            assert actor.convo.messages[4].content == "It is sunny in paris today."
            assert "sunny in paris" in (actor.convo.messages[5].content or "")
            # The answer was sent on the wire after the question ended.
            answer = caller.agent_audio(since=spoke_end)
            assert len(answer) > 8000  # more than a second of speech
            metrics = actor.replies.turns[0].summary()
            # The turn model is asked after 0.2 s of silence (the ceiling is 0.5 s).
            assert metrics["voice_to_voice_ms"] > metrics["endpointing_ms"] >= 150
            assert not actor.life.refused

    run(main())


@pytest.mark.parametrize("detector", ["smart_turn", "silence"])
def test_a_caller_pausing_mid_sentence_is_heard_to_the_end(tmp_path: Path, detector: str) -> None:
    start = speech("what is the weather like in", tmp_path)
    rest = speech("the city of paris, in france", tmp_path)

    async def main() -> bool:
        """One call; False when it could not test the rule (the recogniser
        misheard the first part as a finished sentence and the model agreed)."""
        cfg = settings(detector=detector, end_of_speech_timeout=None)
        # Whisper (the default recogniser): the transcript's last word is the
        # second opinion, and pocketsphinx's grammar adds words that are not said.
        cfg.stt = SttSettings()
        async with agent_call(weather_agent(cfg, greeting="Hi.")) as live:
            actor, caller = live.actor, live.caller
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            await caller.say(start)
            await asyncio.sleep(1.2)  # thinking of the city
            await caller.say(rest)
            assert await wait_for(lambda: len(actor.replies.turns) >= 1, 10)
            await asyncio.sleep(1.0)
            said = [(m.content or "").lower() for m in actor.convo.messages if m.role == "user"]
            if detector == "silence":
                # 0.7 s of silence ends the turn: the agent answered half a sentence.
                assert len(said) == 2 and said[0].startswith("what is")
                return True
            first = next(e["text"] for e in actor.timeline if e["event"] == "caller_final")
            if len(said) == 2 and not actor.listener.taker.unfinished(first):
                return False  # misheard as a finished sentence
            # One turn: the model or the transcript ("...like in") kept the turn open.
            assert len(said) == 1 and said[0].startswith("what is")
            assert [e for e in actor.timeline if e["event"] == "turn_check"]
            return True

    assert any(run(main()) for _ in range(3)), "whisper misheard the first part every time"


class _LateFinals(SttBackend):
    """A recogniser whose final comes `delay` s after the turn ended (no guess at
    the pause): the turn model decides before the transcript is there."""

    def __init__(self, inner: SttBackend, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.name, self.punctuates = inner.name, inner.punctuates

    def open(self, hints: SttHints) -> SttStream:
        inner, delay = self.inner.open(hints), self.delay

        class Late(SttStream):
            def feed(self, pcm: np.ndarray) -> Transcript | None:
                return inner.feed(pcm)

            def finalise(self) -> Transcript:
                time.sleep(delay)
                return inner.finalise()

            def close(self) -> None:
                inner.close()

        return Late()


def test_a_turn_held_for_the_caller_to_go_on_keeps_its_latency_record(tmp_path: Path) -> None:
    """The turn model ends the turn; its final ends on a word a sentence seldom ends on ("...is"), so
    it waits for more up to the ceiling; when none comes the turn is answered
    then, and its latency record counts the hold as endpointing."""
    start = speech("I would like to know where it is", tmp_path)

    async def main() -> bool:
        # The model calls every pause complete (threshold), so the turn ends
        # before its late final; Whisper, as it writes "is." for this voice.
        cfg = settings(end_of_speech_timeout=2.0, smart_turn={"threshold": 0.001})
        cfg.stt = SttSettings()
        agent = weather_agent(cfg, greeting="Hi.")
        runtime = PipelineRuntime(agent.settings)
        runtime.stt = _LateFinals(runtime.stt, 0.5)
        try:
            async with live_actor(agent, runtime) as live:
                actor, caller = live.actor, live.caller
                assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
                await caller.say(start)
                assert await wait_for(lambda: len(actor.replies.turns) >= 1, 10)
                held = [e for e in actor.timeline if e["event"] == "turn_held"]
                if not held:
                    return False  # Whisper misheard the last word
                metrics = actor.replies.turns[0].summary()
                # The hold is endpointing (up to the 2 s ceiling), not overhead.
                assert metrics["endpointing_ms"] >= 1000 * held[0]["seconds"]
                assert metrics["endpointing_ms"] >= 1500
                assert 0 <= metrics["overhead_ms"] < 300
                return True
        finally:
            await runtime.aclose()

    assert any(run(main()) for _ in range(3)), "the turn was never held"


def test_preemptive_generation_answers_the_words_it_started_on(tmp_path: Path) -> None:
    question = speech("what is the weather in paris", tmp_path)

    async def main() -> None:
        cfg = settings(preemptive=True)
        async with agent_call(weather_agent(cfg, greeting="Hi.")) as live:
            actor, caller = live.actor, live.caller
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            await caller.say(question)
            assert await wait_for(lambda: len(actor.replies.turns) == 1, 10)
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            used = [e for e in actor.timeline if e["event"] == "preemptive"]
            assert used and used[-1]["used"] and used[-1]["head_start_ms"] >= 0
            # Its tool ran once, after the turn was over; the caller spoke once.
            users = [m.content for m in actor.convo.messages if m.role == "user"]
            assert len(users) == 1 and "paris" in (users[0] or "")
            calls = [c for m in actor.convo.messages for c in m.tool_calls]
            assert [c.arguments for c in calls] == [{"city": "paris"}]
            assert "sunny in paris" in (actor.convo.messages[-1].content or "")

    run(main())


@pytest.mark.parametrize("token_delay", [0.0, 0.08], ids=["fast-llm", "streaming-llm"])
def test_barge_in_flushes_cancels_and_keeps_only_what_was_heard(
    tmp_path: Path, token_delay: float
) -> None:
    story = speech("tell me a story", tmp_path)
    interruption = speech("stop stop stop", tmp_path)

    async def main() -> None:
        cfg = settings()
        agent = weather_agent(cfg, greeting="Hi.")
        llm = ScriptedBackend(
            ScriptedConfig(
                [ScriptedReply(list(r.match), r.reply) for r in agent.replies],
                token_delay=token_delay,
            )
        )
        async with agent_call(agent, llm) as live:
            actor, caller, session = live.actor, live.caller, live.session
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            await caller.say(story)
            assert await wait_for(lambda: actor.life.state == CallState.SPEAKING, 10)
            reply = actor.replies.current
            assert reply is not None and reply.kind == "llm"
            await asyncio.sleep(1.5)  # the story is being told
            sent: list[object] = []
            session_on_sent = session.on_sent
            assert session_on_sent is not None

            def spy(tag: object) -> None:
                sent.append((asyncio.get_running_loop().time(), tag))
                session_on_sent(tag)

            session.on_sent = spy
            await caller.say(interruption)
            assert await wait_for(lambda: bool(actor.replies.interruptions.all), 5)
            barge = actor.replies.interruptions.all[0]
            assert barge.flushed_frames > 0
            # Nothing of the reply left after the decision, but what was
            # already in this tick's batch (one frame at most).
            after = [
                t
                for t, tag in sent
                if isinstance(tag, FrameTag) and tag.reply == reply.id and t > barge.decided
            ]
            assert len(after) <= 1
            assert all(t.done() for t in reply.tasks())
            if token_delay:
                # The model was still streaming the story: cancelled in-process.
                assert reply.llm_task is not None and reply.llm_task.cancelled()
                assert not reply.llm_done
            # The caller's words end the interruption; the conversation keeps
            # exactly the text voiced by the frames that were sent.
            assert await wait_for(
                lambda: any(
                    m.role == "user" and "stop" in (m.content or "") for m in actor.convo.messages
                ),
                10,
            )
            heard, _ = reply.voicing.heard(reply.text)
            kept = [m.content for m in actor.convo.messages if m.role == "assistant"]
            assert heard in kept
            assert barge.heard == heard and heard != reply.text
            assert reply.text.startswith(heard.rstrip("—").rsplit(" ", 1)[0])
            frames_of_reply = [p for _, p in caller.received if p.payload_type == 0]
            assert frames_of_reply
            assert reply.voicing.frames_sent == reply.voicing.last_sent.index + 1  # type: ignore[union-attr]

    run(main())


async def interrupt_story(live: Any, story: np.ndarray, audio: np.ndarray) -> Any:
    """Ask for the story, say `audio` ~1.5 s into it; the reply that was cut."""
    actor, caller = live.actor, live.caller
    assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
    await caller.say(story)
    assert await wait_for(lambda: actor.life.state == CallState.SPEAKING, 10)
    told = actor.replies.current
    assert told is not None
    await asyncio.sleep(1.5)
    await caller.say(audio)
    assert await wait_for(lambda: bool(actor.replies.interruptions.all), 5)
    return told


async def assert_story_resumed(live: Any, told: Any) -> None:
    """The story went on from the cut word to its end; the caller said one thing."""
    actor = live.actor
    assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 20)
    said = [m.content for m in actor.convo.messages if m.role == "assistant"]
    assert said[-1] == told.text
    users = [m.content for m in actor.convo.messages if m.role == "user"]
    assert users == ["tell me a story"]


def test_false_barge_in_resumes_where_the_agent_stopped(tmp_path: Path) -> None:
    story = speech("tell me a story", tmp_path)
    backchannel = speech("mmm hmm", tmp_path)  # voice, but (mostly) no words for the grammar

    async def main() -> bool:
        """One call; False when pocketsphinx heard a word in the backchannel."""
        cfg = settings()
        agent = weather_agent(cfg, greeting="Hi.")
        async with agent_call(agent) as live:
            actor = live.actor
            told = await interrupt_story(live, story, backchannel)

            def heard() -> list[str]:
                finals = [e.get("text") for e in actor.timeline if e["event"] == "caller_final"]
                return [t for t in finals if t and t != "tell me a story"]

            assert await wait_for(
                lambda: actor.replies.interruptions.all[0].resumed or bool(heard()), 5
            )
            if heard():
                # A grammar decoder sometimes finds a word ("hello", "get") in a
                # hum, depending on the turn's exact edges: then the interruption
                # was real, and this call cannot test the false one.
                return False
            barge = actor.replies.interruptions.all[0]
            assert barge.false
            # The agent goes on from the word it was cut in, to the end.
            await assert_story_resumed(live, told)  # the backchannel is not a turn
            return True

    # Five calls: on a loaded machine the decoder found a word in all three of the
    # earlier count once (a clean-clone CI run); a call that hears none tests it all.
    assert any(run(main()) for _ in range(5)), "pocketsphinx heard words in every backchannel"


def yeah_agent(cfg: PipelineSettings) -> Any:
    """The weather agent, with "yeah" among its hints (for the backchannel tests)."""
    agent = weather_agent(cfg, greeting="Hi.")
    agent.hints = [*agent.hints, "yeah"]
    return agent


def finals(actor: Any, kind: str) -> list[str | None]:
    """The `text` of the actor's timeline events of `kind`."""
    return [e.get("text") for e in actor.timeline if e["event"] == kind]


async def backchannel_decided(actor: Any) -> bool:
    """Wait until the interruption's words are decided: True when they were a
    backchannel, False when the recogniser heard a real turn."""
    assert await wait_for(
        lambda: bool(finals(actor, "backchannel")) or len(finals(actor, "caller_final")) > 1, 8
    )
    return bool(finals(actor, "backchannel"))


def test_a_backchannel_over_the_agent_is_not_an_interruption(tmp_path: Path) -> None:
    story = speech("tell me a story", tmp_path)
    yeah = speech("yeah yeah", tmp_path)

    async def main() -> bool:
        """One call; False when the recogniser heard more than the backchannel."""
        async with agent_call(yeah_agent(settings())) as live:
            actor = live.actor
            told = await interrupt_story(live, story, yeah)
            if not await backchannel_decided(actor):
                return False  # the recogniser heard other words: a real turn
            assert "yeah" in (finals(actor, "backchannel")[0] or "").lower()
            barge = actor.replies.interruptions.all[0]
            assert await wait_for(lambda: barge.false, 5)
            # The story goes on from the cut word, and "yeah" never reached the model.
            await assert_story_resumed(live, told)
            return True

    assert any(run(main()) for _ in range(3)), "the recogniser never heard just the backchannel"


def test_a_false_interruption_resolved_late_asks_the_caller_to_go_ahead(tmp_path: Path) -> None:
    story = speech("tell me a story", tmp_path)
    yeah = speech("yeah yeah", tmp_path)

    async def main() -> bool:
        """One call; False when the recogniser heard more than the backchannel."""
        async with agent_call(yeah_agent(settings(barge_in={"resume_within": 0.1}))) as live:
            actor = live.actor
            told = await interrupt_story(live, story, yeah)
            if not await backchannel_decided(actor):
                return False
            # Too late to go on mid-sentence: what was heard is kept, and the agent asks.
            assert await wait_for(lambda: bool(finals(actor, "go_ahead")), 5)
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            said = [m.content or "" for m in actor.convo.messages if m.role == "assistant"]
            assert said[-1] == "Sorry, go ahead?"
            # Before it, what the caller heard of the story: not all of it.
            assert said[-2] and len(said[-2]) < len(told.text)
            return True

    assert any(run(main()) for _ in range(3)), "the recogniser never heard just the backchannel"


def test_unintelligible_speech_gets_the_recovery_phrase(tmp_path: Path) -> None:
    mumble = speech("mmm hmm", tmp_path)

    async def main() -> None:
        cfg = settings()
        agent = weather_agent(cfg, greeting="Hi.")
        # Only the question's words: a hum matches none of them ("hello" it would).
        agent.hints = ["what is the weather in"]
        async with agent_call(agent) as live:
            actor, caller = live.actor, live.caller
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            await caller.say(mumble)
            assert await wait_for(
                lambda: any(e["event"] == "not_understood" for e in actor.timeline), 5
            )
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            assert actor.convo.messages[-1].content == cfg.turn.not_understood

    run(main())


def test_silent_caller_gets_a_prompt_then_a_polite_hangup() -> None:
    async def main() -> None:
        cfg = settings(attention_timeout=0.5, inactivity_timeout=0.5)
        agent = weather_agent(cfg, greeting="Hi.")
        async with agent_call(agent) as live:
            actor = live.actor
            assert await wait_for(lambda: live.call.hangups == 1, 15)
            assert await wait_for(lambda: actor.life.state == CallState.ENDED, 5)
            events = [e["event"] for e in actor.timeline]
            assert events.index("attention_prompt") < events.index("inactivity_hangup")
            said = [m.content for m in actor.convo.messages if m.role == "assistant"]
            assert said == ["Hi.", cfg.turn.attention_prompt, cfg.turn.goodbye]
            assert actor.end_reason == "caller silent"
            assert not actor.life.refused

    run(main())


def test_slow_tool_gets_a_filler_then_its_answer(tmp_path: Path) -> None:
    question = speech("what is the weather in paris", tmp_path)

    async def main() -> None:
        cfg = PipelineSettings.model_validate(
            {
                "stt": {"backend": "pocketsphinx", "pool_size": 1},
                "turn": {"end_of_speech_timeout": 0.5, "attention_timeout": 0},
                "fillers": {"after": 0.3, "phrases": ["Let me check."]},
            }
        )
        agent = weather_agent(cfg, greeting="Hi.")

        async def slow_weather(args: dict[str, Any], raw: dict[str, Any]) -> str:
            await asyncio.sleep(1.5)
            return f"It is raining in {args['city']}."

        agent.tools[0].handler = slow_weather
        async with agent_call(agent) as live:
            actor, caller = live.actor, live.caller
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            await caller.say(question)
            assert await wait_for(lambda: any(e["event"] == "filler" for e in actor.timeline), 10)

            def said() -> list[str]:
                return [e["text"] for e in actor.timeline if e["event"] == "agent_said"]

            assert await wait_for(lambda: len(said()) == 2, 15)
            assert said()[-1] == "Let me check. It is raining in paris."
            events = [e["event"] for e in actor.timeline]
            assert events.index("filler") < events.index("tool")
            assert actor.convo.messages[-1].content == "It is raining in paris."
            assert actor.convo.messages[-1].role == "assistant"

    run(main())


def test_a_noise_burst_pauses_the_agent_which_then_resumes_mid_word(tmp_path: Path) -> None:
    story = speech("tell me a story", tmp_path)
    # 80 ms of loud white noise: the fast onset test fires, silero does not confirm.
    burst = (np.random.default_rng(7).standard_normal(640) * 6000).astype(np.int16)

    async def main() -> None:
        cfg = settings()
        agent = weather_agent(cfg, greeting="Hi.")
        async with agent_call(agent) as live:
            actor, caller = live.actor, live.caller
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            await caller.say(story)
            assert await wait_for(lambda: actor.life.state == CallState.SPEAKING, 10)
            told = actor.replies.current
            assert told is not None
            await asyncio.sleep(1.0)
            await caller.say(burst)
            assert await wait_for(
                lambda: any(e["event"] == "barge_in_unpause" for e in actor.timeline), 5
            )
            events = [e["event"] for e in actor.timeline]
            assert events.index("barge_in_pause") < events.index("barge_in_unpause")
            assert not actor.replies.interruptions.all  # never confirmed
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 20)
            said = [m.content for m in actor.convo.messages if m.role == "assistant"]
            assert said[-1] == told.text

    run(main())


@pytest.mark.parametrize("cancel", [True, False], ids=["cancelled", "not cancelled"])
def test_the_agents_own_echo_does_not_interrupt_it(tmp_path: Path, cancel: bool) -> None:
    story = speech("tell me a story", tmp_path)

    async def main() -> None:
        async with agent_call(
            weather_agent(settings(), greeting="Hi."), echo_cancel=cancel
        ) as live:
            actor, caller = live.actor, live.caller
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            await caller.say(story)
            assert await wait_for(lambda: actor.life.state == CallState.SPEAKING, 10)
            told = actor.replies.current
            assert told is not None
            # A phone with poor echo cancellation sends the story back, 200 ms
            # late and 12 dB down; half-way its playout buffer grows by 40 ms.
            caller.echo = (0.2, 10 ** (-12 / 20))
            await asyncio.sleep(1.5)
            caller.echo = (0.24, 10 ** (-12 / 20))
            if not cancel:
                # Without the canceller the VAD hears the agent: the test can fail.
                assert await wait_for(lambda: bool(actor.replies.interruptions.all), 10)
                return
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 20)
            said = [m.content for m in actor.convo.messages if m.role == "assistant"]
            assert said[-1] == told.text
            assert not actor.replies.interruptions.all
            # At most a moment's pause where the path moved (the one frame that
            # shows it can slip through before the path is found again).
            pauses = [e for e in actor.timeline if e["event"] == "barge_in_pause"]
            assert len(pauses) <= 1
            assert live.session.echo is not None and live.session.echo.stats.cancelled > 20

    run(main())


def test_speech_pauses_the_agent_before_silero_confirms(tmp_path: Path) -> None:
    story = speech("tell me a story", tmp_path)
    interruption = speech("stop stop stop", tmp_path)

    async def main() -> None:
        cfg = settings()
        agent = weather_agent(cfg, greeting="Hi.")
        async with agent_call(agent) as live:
            actor, caller = live.actor, live.caller
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            await caller.say(story)
            assert await wait_for(lambda: actor.life.state == CallState.SPEAKING, 10)
            await asyncio.sleep(1.0)
            await caller.say(interruption)
            assert await wait_for(lambda: bool(actor.replies.interruptions.all), 5)
            events = [e["event"] for e in actor.timeline]
            pause = events.index("barge_in_pause")
            # The audio stopped on the fast test; silero's speech start confirmed it.
            assert pause < events.index("interrupted")
            assert pause < len(events) - 1 - events[::-1].index("speech_start")
            assert actor.replies.interruptions.all[0].flushed_frames > 0

    run(main())


def test_tool_actions_say_toggle_data_and_hangup(tmp_path: Path) -> None:
    question = speech("what is the weather in paris", tmp_path)

    async def main() -> None:
        from mediaserver.agent.result import SwaigFunctionResult

        cfg = settings()
        agent = weather_agent(cfg, greeting="Hi.")
        agent.global_data = {"visits": 1}

        def forecast(args: dict[str, Any], raw: dict[str, Any]) -> SwaigFunctionResult:
            seen = raw["global_data"]["visits"]
            return (
                SwaigFunctionResult(f"Rain in {args['city']}, visit {seen}.")
                .say("Bring an umbrella.")
                .update_global_data({"visits": seen + 1, "city": args["city"]})
                .toggle_functions([{"function": "get_weather", "active": False}])
                .hangup()
            )

        agent.tools[0].handler = forecast
        async with agent_call(agent) as live:
            actor = live.actor
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            await live.caller.say(question)
            # say is heard, the reply is spoken, then the call ends with a hangup.
            assert await wait_for(lambda: live.call.hangups == 1, 20)
            said = [e["text"] for e in actor.timeline if e["event"] == "agent_said"]
            assert said[-1] == "Bring an umbrella. Rain in paris, visit 1."
            assert actor.convo.global_data == {"visits": 2, "city": "paris"}
            assert actor.convo.disabled_tools == {"get_weather"}
            actions = [e["name"] for e in actor.timeline if e["event"] == "action"]
            assert actions == ["say", "set_global_data", "toggle_functions", "hangup"]
            assert actor.end_reason == "agent"

    run(main())


def test_a_tool_that_raises_gets_a_recovery_phrase_and_the_call_goes_on(tmp_path: Path) -> None:
    question = speech("what is the weather in paris", tmp_path)

    async def main() -> None:
        TOOL_FAILED = RecoverySettings().tool_error_phrase

        cfg = settings()
        agent = weather_agent(cfg, greeting="Hi.")

        def broken(args: dict[str, Any], raw: dict[str, Any]) -> str:
            raise RuntimeError("database down")

        agent.tools[0].handler = broken
        async with agent_call(agent) as live:
            actor = live.actor
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            await live.caller.say(question)
            assert await wait_for(lambda: any(e["event"] == "tool" for e in actor.timeline), 10)
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            result = next(e for e in actor.timeline if e["event"] == "tool")
            assert result["error"].startswith("tool_error") and "database down" in result["error"]
            said = [e["text"] for e in actor.timeline if e["event"] == "agent_said"]
            assert said[-1] == TOOL_FAILED
            # The call goes on: the next question is answered again.
            agent.tools[0].handler = lambda args, raw: "Sunny."
            await live.caller.say(question)
            assert await wait_for(
                lambda: (
                    [e["text"] for e in actor.timeline if e["event"] == "agent_said"][-1]
                    == "Sunny."
                ),
                10,
            )
            assert live.call.hangups == 0

    run(main())


def test_post_call_summary_reaches_on_summary() -> None:
    async def main() -> None:
        cfg = settings(attention_timeout=0.3, inactivity_timeout=0.3)
        agent = weather_agent(cfg, greeting="Hi.")
        got: list[tuple[Any, dict[str, Any]]] = []

        async def on_summary(summary: Any, raw_data: dict[str, Any]) -> None:
            got.append((summary, raw_data))

        agent.post_prompt = "Summarise the call."
        agent.on_summary = on_summary
        async with agent_call(agent) as live:
            assert await wait_for(lambda: bool(got), 20)
            summary, raw = got[0]
            # The scripted engine answers the post prompt like any question.
            assert summary == agent.fallback
            assert raw["end_reason"] == "caller silent"
            assert raw["messages"][1] == {"role": "assistant", "content": "Hi."}
            assert any(e["event"] == "inactivity_hangup" for e in raw["timeline"])
            assert live.call.hangups == 1

    run(main())


@pytest.mark.parametrize("accepted", [True, False], ids=["transferred", "declined"])
def test_connect_transfers_after_the_reply_and_recovers_when_declined(
    tmp_path: Path, accepted: bool
) -> None:
    question = speech("what is the weather in paris", tmp_path)

    async def main() -> None:
        from mediaserver.agent.result import SwaigFunctionResult
        from mediaserver.call import events as ev

        TRANSFER_FAILED = RecoverySettings().transfer_failed_phrase

        cfg = settings()
        agent = weather_agent(cfg, greeting="Hi.")
        agent.tools[0].handler = lambda args, raw: SwaigFunctionResult("Transferring you.").connect(
            "sip:desk@127.0.0.1:5099"
        )
        async with agent_call(agent) as live:
            actor = live.actor
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            await live.caller.say(question)
            # REFER only once "Transferring you." has been said.
            assert await wait_for(lambda: live.call.transfers == ["sip:desk@127.0.0.1:5099"], 10)
            said = [e["text"] for e in actor.timeline if e["event"] == "agent_said"]
            assert said[-1] == "Transferring you."
            actor.post(ev.TransferResult(accepted, 200 if accepted else 603, "Decline"))
            if accepted:
                assert await wait_for(lambda: live.call.hangups == 1, 5)
                assert actor.end_reason == "transferred"
            else:
                assert await wait_for(
                    lambda: (
                        [e.get("text") for e in actor.timeline if e["event"] == "agent_said"][-1]
                        == TRANSFER_FAILED
                    ),
                    10,
                )
                errors = [e for e in actor.timeline if e["event"] == "error"]
                assert errors[-1]["kind"] == "transfer_failure"
                assert live.call.hangups == 0

    run(main())


def test_failed_sip_digest_gets_only_the_auth_failure_flow(tmp_path: Path) -> None:
    """A caller whose SIP digest failed: no greeting, the transfer flow's message and
    transfer, nothing they say reaches the model, and a failed transfer ends the
    call (no conversation instead)."""
    question = speech("what is the weather in paris", tmp_path)

    async def main() -> None:
        from mediaserver.call import events as ev

        cfg = settings()
        flow = {"action": "transfer", "message": "Let me find someone.", "target": "sip:ops@x"}
        cfg.recovery = RecoverySettings.model_validate({"auth_failure": flow})
        agent = weather_agent(cfg, greeting="Hi.")
        async with agent_call(agent, auth_error="SIP digest failed for alice") as live:
            actor = live.actor
            assert await wait_for(lambda: live.call.transfers == ["sip:ops@x"], 10)
            await live.caller.say(question)
            await asyncio.sleep(1.5)  # time enough for a turn, were one taken
            actor.post(ev.TransferResult(False, 486, "Busy Here"))
            assert await wait_for(lambda: live.call.hangups == 1, 10)
            said = [e["text"] for e in actor.timeline if e["event"] == "agent_said"]
            assert said == ["Let me find someone.", RecoverySettings().transfer_failed_phrase]
            (error, transfer_error) = [e for e in actor.timeline if e["event"] == "error"]
            assert error["kind"] == "auth_failure" and error["stage"] == "sip"
            assert error["recovery"] == "message, then transfer to sip:ops@x"
            assert transfer_error["kind"] == "transfer_failure"
            assert not [e for e in actor.timeline if e["event"] == "caller_final"]
            assert actor.end_reason == "auth failure"

    run(main())


def test_failed_sip_digest_can_hand_the_call_to_another_agent() -> None:
    async def main() -> None:
        cfg = settings()
        cfg.recovery = RecoverySettings.model_validate(
            {"auth_failure": {"action": "agent", "agent": "guest"}}
        )
        async with agent_call(weather_agent(cfg), auth_error="SIP digest failed") as live:
            actor = live.actor
            assert await wait_for(lambda: actor.life.state == CallState.ENDED, 10)
            assert actor.handoff == "guest" and live.call.hangups == 0
            assert not [e for e in actor.timeline if e["event"] == "agent_said"]

    run(main())


def test_hold_action_ignores_the_caller_then_resumes(tmp_path: Path) -> None:
    question = speech("what is the weather in paris", tmp_path)

    async def main() -> None:
        from mediaserver.agent.result import SwaigFunctionResult
        from mediaserver.call.actor import HOLD_ENDED

        cfg = settings()
        agent = weather_agent(cfg, greeting="Hi.")
        agent.tools[0].handler = lambda args, raw: SwaigFunctionResult("Please hold.").hold(3)
        async with agent_call(agent) as live:
            actor = live.actor

            def said() -> list[str]:
                return [e["text"] for e in actor.timeline if e["event"] == "agent_said"]

            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            await live.caller.say(question)
            assert await wait_for(lambda: said()[-1:] == ["Please hold."], 10)
            users = len([m for m in actor.convo.messages if m.role == "user"])
            await live.caller.say(question)  # while on hold: not a turn
            assert await wait_for(lambda: said()[-1] == HOLD_ENDED, 10)
            assert len([m for m in actor.convo.messages if m.role == "user"]) == users
            events = [e["event"] for e in actor.timeline]
            assert events.index("hold_started") < events.index("hold_ended")

    run(main())


def test_background_file_action_is_mixed_into_the_call(tmp_path: Path) -> None:
    from tests.peers import write_wav

    question = speech("what is the weather in paris", tmp_path)
    music = write_wav(tmp_path / "music.wav", np.full(16000 * 2, 3000, np.int16), rate=16000)

    async def main() -> None:
        from mediaserver.agent.result import SwaigFunctionResult

        cfg = settings()
        agent = weather_agent(cfg, greeting="Hi.")
        agent.tools[0].handler = lambda args, raw: SwaigFunctionResult(
            "Here is some music."
        ).play_background_file(str(music))
        async with agent_call(agent) as live:
            actor, caller = live.actor, live.caller
            assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
            await caller.say(question)
            assert await wait_for(
                lambda: any(e["event"] == "background_file" for e in actor.timeline), 10
            )
            assert await wait_for(lambda: live.session._background is None, 10)
            # Two seconds of a steady level reached the caller (8 kHz after resampling).
            levels = [
                int(np.median(caller.agent_audio(since=t, until=t + 0.001)))
                for t in caller.arrivals()
            ]
            steady = sum(1 for lv in levels if abs(lv - 3000) < 150)
            assert steady >= 50

    run(main())
