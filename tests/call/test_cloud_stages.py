"""Cloud STT and TTS backends inside a live call: DESIGN's bad-input rule end to end.

Each test runs the call actor on real loopback RTP with silero VAD and the
harness's scripted caller (espeak-ng speech), against local fake providers on
127.0.0.1 that speak the real wire formats (the fakes of the backend tests):
Deepgram's ``/v1/listen`` WebSocket, OpenAI's ``/v1/audio/speech`` and
ElevenLabs' stream-input WebSocket. Every fake is started and stopped by its
test; the LLM is the offline scripted engine.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.sync.server import ServerConnection

from mediaserver.call.actor import CallActor
from mediaserver.call.errors import RECOVERY, ErrorKind
from mediaserver.call.lifecycle import CallState
from mediaserver.call.voicing import CUT_MARK, FrameTag
from mediaserver.pipeline.settings import PipelineSettings
from mediaserver.pipeline.tts.clauses import ClauseAggregator
from mediaserver.pipeline.tts.cloud import tokens
from tests.call.harness import Caller, agent_call, speech, wait_for, weather_agent
from tests.pipeline.stt.test_deepgram import KEY as DEEPGRAM_KEY
from tests.pipeline.stt.test_deepgram import FakeDeepgram
from tests.pipeline.tts.test_elevenlabs import Clip, FakeServer
from tests.pipeline.tts.test_openai_speech import (
    Cut,
    FakeSpeech,
    Reply,
    Seen,
    Sleep,
    Stall,
    error_body,
    pcm_bytes,
    tone,
)

pytestmark = pytest.mark.timeout(90)

QUESTION = "what is the weather in paris"
ANSWER = "It is sunny in paris today."
#: The fake speech server: audio per character of the clause, and how it streams.
SPEECH_RATE = 24000
SECONDS_PER_CHAR = 0.06
PIECES = 4
PIECE_GAP = 0.25
#: The fake ElevenLabs voice: milliseconds of audio per character (16 kHz).
ELEVEN_MS_PER_CHAR = 40
ELEVEN_CHARS_PER_MESSAGE = 12


def cloud_settings(stt_url: str, tts: dict[str, Any] | None = None) -> PipelineSettings:
    """Deepgram at `stt_url` (and `tts`, default espeak-ng), fast turn-taking."""
    return PipelineSettings.model_validate(
        {
            "stt": {
                "backend": "deepgram",
                "base_url": stt_url,
                "api_key": DEEPGRAM_KEY,
                "verify_at_start": False,
                "timeout": 3.0,
            },
            "tts": tts or {"backend": "espeak-ng"},
            # The silence detector: these tests close the socket inside its 0.5 s.
            "turn": {"detector": "silence", "end_of_speech_timeout": 0.5, "attention_timeout": 0},
        }
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def errors(actor: CallActor, kind: ErrorKind) -> list[dict[str, Any]]:
    return [e for e in actor.timeline if e["event"] == "error" and e["kind"] == kind.value]


def said(actor: CallActor) -> list[str]:
    return [e["text"] for e in actor.timeline if e["event"] == "agent_said"]


def agent_frames(caller: Caller, since: float = 0.0, until: float = float("inf")) -> list[float]:
    """Arrival times of the agent's PCMU frames (not RTCP, which shares the port)."""
    return [t for t, p in caller.received if p.payload_type == 0 and since <= t < until]


def heard_samples(caller: Caller, since: float = 0.0) -> int:
    """Samples of agent audio the caller got (8 kHz PCMU: one per payload byte)."""
    return sum(len(p.payload) for t, p in caller.received if p.payload_type == 0 and t >= since)


async def answered(actor: CallActor, calls: int = 1) -> bool:
    """The weather tool ran `calls` times and the agent said its answer and listens."""
    return await wait_for(
        lambda: (
            len([e for e in actor.timeline if e["event"] == "tool"]) == calls
            and said(actor)[-1:] == [ANSWER]
            and actor.life.state == CallState.LISTENING
        ),
        15,
    )


# ---------------------------------------------------------------- STT: deepgram


def caller_silent(actor: CallActor) -> bool:
    """VAD's last word on the caller: they stopped speaking."""
    marks = [e["event"] for e in actor.timeline if e["event"] in ("speech_start", "speech_stop")]
    return marks[-1:] == ["speech_stop"]


def test_deepgram_closing_mid_turn_asks_to_repeat_and_the_call_goes_on(tmp_path: Path) -> None:
    """Deepgram drops the socket (1011) during the caller's turn, after their last
    word and before the turn ends: an stt_failure is recorded (kind, stage,
    recovery) on the timeline and the call record, the caller hears the recovery
    phrase, and their next turn, on a fresh connection, is transcribed and
    answered with the tool."""
    question = speech(QUESTION, tmp_path)

    with FakeDeepgram(QUESTION) as fake:

        async def main() -> None:
            cfg = cloud_settings(fake.url)
            agent = weather_agent(cfg, greeting="Hi.")
            async with agent_call(agent) as live:
                actor, caller = live.actor, live.caller
                assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
                _, spoke_end = await caller.say(question)
                # The caller has stopped; the end-of-speech timeout is running.
                assert await wait_for(lambda: caller_silent(actor), 2, step=0.005)
                fake.close_after_bytes[0] = 0  # the next audio frame: close 1011
                assert await wait_for(lambda: bool(errors(actor, ErrorKind.STT_FAILURE)), 5)
                (error,) = errors(actor, ErrorKind.STT_FAILURE)
                assert error["stage"] == "stt"
                assert error["recovery"] == RECOVERY[ErrorKind.STT_FAILURE]
                assert "closed mid-utterance" in error["error"] and "1011" in error["error"]
                recorded = [e["data"] for e in live.call.record.events if e["kind"] == "error"]
                assert recorded == [{k: error[k] for k in ("kind", "stage", "error", "recovery")}]
                assert not [e for e in actor.timeline if e["event"] == "caller_final"]

                # The caller is asked to repeat, and hears it.
                phrase = cfg.turn.not_understood
                assert await wait_for(lambda: said(actor)[-1:] == [phrase], 15)
                assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
                assert heard_samples(caller, spoke_end) > 8000  # over a second
                assert [m.content for m in actor.convo.messages if m.role == "user"] == []
                assert actor.convo.messages[-1].role == "assistant"
                assert actor.convo.messages[-1].content == phrase

                # The call goes on: the repeated question reaches the model.
                await caller.say(question)
                assert await answered(actor)
                call = next(c for m in actor.convo.messages for c in m.tool_calls)
                assert (call.name, call.arguments) == ("get_weather", {"city": "paris"})
                assert [m.content for m in actor.convo.messages if m.role == "user"] == [QUESTION]
                assert live.call.hangups == 0 and actor.life.live
                assert len(errors(actor, ErrorKind.STT_FAILURE)) == 1

        run(main())
    assert len(fake.connections) == 2  # the broken socket was replaced


def test_deepgram_closing_while_the_caller_speaks_still_gets_the_phrase_heard(
    tmp_path: Path,
) -> None:
    """Deepgram drops the socket while the caller is still speaking: the recovery
    phrase must still reach the caller (once they stop), and the call go on."""
    question = speech(QUESTION, tmp_path)

    # 0.5 s of 16 kHz audio: the 0.3 s pre-roll plus the first words.
    with FakeDeepgram(QUESTION, close_after_bytes={0: 16000}) as fake:

        async def main() -> None:
            cfg = cloud_settings(fake.url)
            agent = weather_agent(cfg, greeting="Hi.")
            async with agent_call(agent) as live:
                actor, caller = live.actor, live.caller
                assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
                say = asyncio.ensure_future(caller.say(question))
                assert await wait_for(lambda: bool(errors(actor, ErrorKind.STT_FAILURE)), 5)
                assert not say.done()  # the caller is still talking
                _, spoke_end = await say
                phrase = cfg.turn.not_understood
                assert await wait_for(lambda: said(actor)[-1:] == [phrase], 8)
                assert heard_samples(caller, spoke_end) > 8000

        run(main())


def test_deepgram_final_transcript_reaches_the_model(tmp_path: Path) -> None:
    """A normal turn: audio streams to Deepgram with the agent's hints as keyterms,
    VAD's end of turn sends Finalize, and the final transcript reaches the model,
    which calls the tool with the city it names."""
    question = speech(QUESTION, tmp_path)

    with FakeDeepgram(QUESTION) as fake:

        async def main() -> None:
            cfg = cloud_settings(fake.url)
            agent = weather_agent(cfg, greeting="Hi.")
            async with agent_call(agent) as live:
                actor = live.actor
                assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
                await live.caller.say(question)
                assert await answered(actor)
                roles = [m.role for m in actor.convo.messages]
                assert roles == ["system", "assistant", "user", "assistant", "tool", "assistant"]
                assert actor.convo.messages[2].content == QUESTION
                call = actor.convo.messages[3].tool_calls[0]
                assert (call.name, call.arguments) == ("get_weather", {"city": "paris"})
                finals = [e["text"] for e in actor.timeline if e["event"] == "caller_final"]
                assert finals == [QUESTION]
                assert not errors(actor, ErrorKind.STT_FAILURE)

        run(main())
    (seen,) = fake.connections
    assert "what is the weather in" in seen.query["keyterm"]
    assert sum(seen.audio) > 32000  # more than a second of linear16 at 16 kHz
    assert next(c["type"] for c in seen.controls if c["type"] != "KeepAlive") == "Finalize"


# ---------------------------------------------------------------- TTS: openai /audio/speech


class SpeechScript:
    """The fake speech server's answers: each clause as 24 kHz PCM, in `PIECES`
    body chunks `PIECE_GAP` apart; the first request whose input contains
    `fail_on` (if any) gets HTTP 500 instead."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on = fail_on
        self.failed: list[Seen] = []

    @staticmethod
    def samples(text: str) -> int:
        return round(len(text) * SECONDS_PER_CHAR * SPEECH_RATE)

    def __call__(self, seen: Seen) -> Reply:
        text = seen.body["input"]
        if self.fail_on and self.fail_on in text and not self.failed:
            self.failed.append(seen)
            return Reply(500, body=error_body("The server had an error", "server_error", None))
        raw = pcm_bytes(tone(self.samples(text)))
        step = -(-len(raw) // PIECES) // 2 * 2  # whole samples per piece
        body: list[bytes | Sleep | Cut | Stall] = []
        for i in range(0, len(raw), step):
            body += [Sleep(PIECE_GAP)] if body else []
            body.append(raw[i : i + step])
        return Reply(body=body)


def openai_tts(fake: FakeSpeech, **extra: Any) -> dict[str, Any]:
    return {"backend": "openai", "base_url": fake.url, "api_key": "sk-test", **extra}


def test_openai_speech_streams_the_reply_before_the_clause_is_done(tmp_path: Path) -> None:
    """OpenAI speech streamed in pieces: the caller hears the greeting and the
    tool's answer, every sample of each, and each reply's first RTP packet arrives
    while the fake is still sending that clause (at least one piece gap early)."""
    question = speech(QUESTION, tmp_path)
    greeting = "Hello, this is the weather line."
    fake = FakeSpeech([], answer=SpeechScript())
    try:
        with FakeDeepgram(QUESTION) as stt:

            async def main() -> None:
                cfg = cloud_settings(stt.url, openai_tts(fake))
                agent = weather_agent(cfg, greeting=greeting)
                async with agent_call(agent) as live:
                    actor, caller = live.actor, live.caller
                    assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
                    assert said(actor) == [greeting]
                    assert fake.sent_all and agent_frames(caller)
                    assert agent_frames(caller)[0] < fake.sent_all[0] - PIECE_GAP
                    # Every sample (24 kHz -> 8 kHz), padded to whole frames.
                    expected = SpeechScript.samples(greeting) // 3
                    assert await wait_for(lambda: heard_samples(caller) >= expected, 2)
                    assert heard_samples(caller) <= expected + 2 * 160

                    _, spoke_end = await caller.say(question)
                    assert await answered(actor)
                    inputs = [r.body["input"].strip() for r in fake.requests]
                    assert inputs == [greeting, ANSWER]
                    assert agent_frames(caller, spoke_end)[0] < fake.sent_all[1] - PIECE_GAP
                    expected = SpeechScript.samples(fake.requests[1].body["input"]) // 3
                    assert await wait_for(lambda: heard_samples(caller, spoke_end) >= expected, 2)
                    assert heard_samples(caller, spoke_end) <= expected + 2 * 160
                    assert not errors(actor, ErrorKind.TTS_FAILURE)

            run(main())
    finally:
        fake.close()
    for request in fake.requests:
        assert request.path == "/v1/audio/speech"
        assert request.headers["authorization"] == "Bearer sk-test"
        assert {k: request.body[k] for k in ("model", "voice", "response_format")} == {
            "model": "tts-1",
            "voice": "alloy",
            "response_format": "pcm",
        }


@pytest.mark.parametrize("fallback_voice", [None, "nova"], ids=["skipped", "fallback-voice"])
def test_openai_speech_500_is_a_tts_failure_and_the_call_goes_on(
    tmp_path: Path, fallback_voice: str | None
) -> None:
    """The speech server answers 500 for the answer's clause: a tts_failure is
    recorded with what recovery did (the fallback voice speaks the clause, or,
    with none configured, the clause is skipped and nothing of it is sent), and
    the call goes on: the next question is answered aloud."""
    question = speech(QUESTION, tmp_path)
    script = SpeechScript(fail_on="sunny")
    fake = FakeSpeech([], answer=script)
    try:
        with FakeDeepgram(QUESTION, QUESTION) as stt:

            async def main() -> None:
                extra = {"fallback_voice": fallback_voice} if fallback_voice else {}
                cfg = cloud_settings(stt.url, openai_tts(fake, **extra))
                agent = weather_agent(cfg, greeting="Hi.")
                async with agent_call(agent) as live:
                    actor, caller = live.actor, live.caller
                    assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
                    _, spoke_end = await caller.say(question)
                    if fallback_voice:
                        assert await answered(actor)
                    else:  # the tool ran, but its answer was never voiced
                        assert await wait_for(
                            lambda: len([e for e in actor.timeline if e["event"] == "tool"]) == 1
                            and actor.replies.current is None
                            and actor.life.state == CallState.LISTENING,
                            15,
                        )
                    (error,) = errors(actor, ErrorKind.TTS_FAILURE)
                    assert error["stage"] == "tts"
                    assert "server error (HTTP 500): The server had an error" in error["error"]
                    recorded = [e["data"] for e in live.call.record.events if e["kind"] == "error"]
                    assert recorded == [
                        {k: error[k] for k in ("kind", "stage", "error", "recovery")}
                    ]
                    answer_samples = SpeechScript.samples(ANSWER) // 3  # at 8 kHz
                    voices = [r.body["voice"] for r in fake.requests[1:]]
                    if fallback_voice:
                        assert error["recovery"] == f"fallback voice {fallback_voice}"
                        assert voices == ["alloy", fallback_voice]
                        # (the reply's last packet may still be on its way)
                        assert await wait_for(
                            lambda: heard_samples(caller, spoke_end) >= answer_samples, 2
                        )
                    else:
                        assert error["recovery"] == "clause skipped"
                        assert voices == ["alloy"]
                        assert heard_samples(caller, spoke_end) == 0  # nothing of the failed clause
                        # ...so neither the conversation nor the record claims it was said.
                        assert ANSWER not in said(actor)
                        agent_said = [
                            e["data"]["text"]
                            for e in live.call.record.events
                            if e["kind"] == "agent_said"
                        ]
                        assert ANSWER not in agent_said[-1]

                    # The call goes on: the next answer is spoken with the usual voice.
                    _, again_end = await caller.say(question)
                    assert await answered(actor, calls=2)
                    assert fake.requests[-1].body["voice"] == "alloy"
                    assert await wait_for(
                        lambda: heard_samples(caller, again_end) >= answer_samples, 2
                    )
                    assert len(errors(actor, ErrorKind.TTS_FAILURE)) == 1
                    assert live.call.hangups == 0 and actor.life.live

            run(main())
    finally:
        fake.close()
    assert len(script.failed) == 1


# ---------------------------------------------------------------- TTS: elevenlabs with alignment


def eleven_voice(conn: ServerConnection, server: FakeServer) -> None:
    """One stream-input connection: read the clause, send its audio (at the rate
    asked for) with exact character timing, `ELEVEN_MS_PER_CHAR` per character,
    a few characters per message."""
    assert conn.request is not None
    query = parse_qs(urlsplit(conn.request.path).query)
    step = 16000 // int(query["output_format"][0].removeprefix("pcm_"))
    messages = [server.recv_json(conn) for _ in range(3)]
    text = messages[1]["text"]
    sample = 0
    for i in range(0, len(text), ELEVEN_CHARS_PER_MESSAGE):
        clip = Clip(text[i : i + ELEVEN_CHARS_PER_MESSAGE], 0, ELEVEN_MS_PER_CHAR)
        data, pcm = clip.message(sample)  # 16 kHz audio: decimated for 8 kHz
        data["audio"] = base64.b64encode(pcm[::step].astype("<i2").tobytes()).decode()
        server.send(conn, data)
        sample += len(pcm)
        server.stop.wait(0.02)
    server.send(conn, {"audio": None, "isFinal": True, "alignment": None})
    conn.close()


def clauses_of(text: str) -> list[str]:
    """The clauses the actor cuts `text` into (they depend on the text alone)."""
    aggregator = ClauseAggregator()
    clauses = aggregator.push(text)
    rest = aggregator.flush()
    return [*clauses, *([rest] if rest else [])]


def expected_heard(text: str, frames: int) -> str:
    """What a caller who got the first `frames` 20 ms frames of a reply saying
    `text` heard, by the fake voice's timing: every word whose audio (up to the
    next word's start) is complete, then the word in progress with the cut mark."""
    starts: list[int] = []  # ms into the reply's audio at which each word starts
    clock = 0
    for clause in clauses_of(text):
        starts += [clock + s * ELEVEN_MS_PER_CHAR for s, _ in tokens(clause)]
        clock += len(clause.rstrip() + " ") * ELEVEN_MS_PER_CHAR  # as the client sends it
    words = tokens(text)
    heard_ms = frames * 20
    done = 0
    for k, (_, end) in enumerate(words):
        chunk_end = starts[k + 1] if k + 1 < len(words) else clock
        if chunk_end <= heard_ms:
            done = end
        elif starts[k] < heard_ms:
            return text[:end] + CUT_MARK
        else:
            break
    return text[:done]


def tag_heard(text: str, tag: FrameTag) -> str:
    """What the actor counts as heard once the frame with `tag` is sent."""
    if tag.partial is not None:
        return text[: tag.partial[1]] + CUT_MARK
    return text[: tag.heard_end]


def words(heard: str) -> str:
    """`heard` without the whitespace a clause's last span carries (before the cut mark)."""
    return heard.replace(f" {CUT_MARK}", CUT_MARK).rstrip()


@pytest.mark.parametrize(
    "rate",
    [8000, 16000],
    ids=["8k-voice", "16k-voice"],
)
def test_elevenlabs_barge_in_keeps_exactly_the_words_sent(tmp_path: Path, rate: int) -> None:
    """ElevenLabs with character alignment: every frame of the story claims exactly
    the words whose audio (by the provider's timing) ends within it; the caller
    interrupts, and the conversation keeps exactly the words of the frames the
    caller got, the word in progress marked as cut."""
    story = speech("tell me a story", tmp_path)
    interruption = speech("stop stop stop", tmp_path)
    eleven = FakeServer(eleven_voice)
    try:
        with FakeDeepgram("tell me a story", "stop stop stop") as stt:

            async def main() -> None:
                tts = {
                    "backend": "elevenlabs",
                    "base_url": eleven.url,
                    "api_key": "xi-test",
                    "voice": "voice123",
                    "sample_rate": rate,
                }
                cfg = cloud_settings(stt.url, tts)
                agent = weather_agent(cfg, greeting="Hi.")
                async with agent_call(agent) as live:
                    actor, caller = live.actor, live.caller
                    assert await wait_for(lambda: actor.life.state == CallState.LISTENING, 10)
                    _, story_end = await caller.say(story)
                    assert await wait_for(lambda: actor.life.state == CallState.SPEAKING, 10)
                    reply = actor.replies.current
                    assert reply is not None and reply.kind == "llm"
                    await asyncio.sleep(1.5)  # the story is being told
                    await caller.say(interruption)
                    assert await wait_for(lambda: bool(actor.replies.interruptions.all), 5)
                    barge = actor.replies.interruptions.all[0]
                    assert await wait_for(
                        lambda: any(
                            m.role == "user" and m.content == "stop stop stop"
                            for m in actor.convo.messages
                        ),
                        10,
                    )
                    text = reply.text
                    # Each frame made claims what the provider's timing says it voices.
                    frames = reply.voicing.frames
                    assert len(frames) > 100  # past the interruption
                    for n, (_, tag) in enumerate(frames, 1):
                        assert words(tag_heard(text, tag)) == expected_heard(text, n), n
                    # The caller got the frames the media plane reported sent...
                    got = len(agent_frames(caller, story_end, barge.decided + 0.2))
                    assert got == reply.voicing.frames_sent
                    # ...and the conversation keeps exactly what they voiced.
                    assert words(barge.heard) == expected_heard(text, got)
                    assert barge.heard.endswith(CUT_MARK) or text.startswith(barge.heard)
                    assert 0 < len(barge.heard) < len(text)
                    kept = [m.content for m in actor.convo.messages if m.role == "assistant"]
                    assert barge.heard in kept and text not in kept

            run(main())
    finally:
        eleven.close()
    clauses = [m["text"] for m in eleven.received if m.get("flush")]
    assert clauses[0] == "Hi. "  # the greeting: one connection per clause
    assert len(clauses) >= 2
