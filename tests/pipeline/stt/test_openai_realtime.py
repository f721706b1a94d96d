"""Tests for mediaserver.pipeline.stt.openai_realtime against a local WebSocket server.

The fake service (`tests.pipeline.fake_ws.FakeService`) is started and
stopped by each test. It speaks the Realtime API's transcription-session wire
format: ``Authorization: Bearer`` checked at the handshake (HTTP 401 with
OpenAI's JSON error body otherwise), ``session.created`` first, then
``session.update`` answered by ``session.updated`` (or the beta
``transcription_session.*`` pair when the client sends ``OpenAI-Beta:
realtime=v1``), base64 PCM16 in ``input_audio_buffer.append``,
``input_audio_buffer.commit`` answered by ``input_audio_buffer.committed``,
``conversation.item.added``, transcription ``delta`` events and
``completed``, and ``error`` events shaped like the real ones.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection

from mediaserver.pipeline.settings import SttSettings
from mediaserver.pipeline.stt import ModelLoadError, SttError, SttHints, Transcript, load_stt
from mediaserver.pipeline.stt.openai_realtime import OpenAiRealtimeBackend, prompt_for
from tests.pipeline.fake_ws import EMPTY, FakeService, backend_maker, frames, speak

KEY = "sk-test-key"
RATE = 24000
SAMPLES_PER_WORD = RATE // 10  # the fake hears one word per 100 ms
HINTS = SttHints(phrases=("check order", "cancel my reservation"), words=("yes", "no"))


# ---------------------------------------------------------------- the fake service


@dataclass
class Seen:
    """One connection as the fake service saw it."""

    path: str
    query: dict[str, list[str]]
    headers: Headers
    #: Every client event (appends without their audio).
    events: list[dict[str, Any]] = field(default_factory=list)
    #: 24 kHz samples in each append.
    appended: list[int] = field(default_factory=list)


class FakeRealtime(FakeService):
    """A scripted transcription session: turn N is heard as ``transcripts[N]``.

    Args:
        transcripts: what each committed turn "says" (across connections).
        stream_deltas: send deltas while audio arrives (like gpt-live-transcribe),
            not only after the commit.
        ignore_commit: never answer a commit (the client must time out).
        fail_transcription: answer the commit with ``...transcription.failed``.
        close_after_samples: connection index -> close with 1011 once it has
            this many 24 kHz samples (a provider failure mid-utterance).
    """

    path = "/v1/realtime?intent=transcription"
    authorization = f"Bearer {KEY}"
    auth_error: ClassVar[dict[str, Any]] = {
        "error": {
            "message": "Incorrect API key provided: wrong-key.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }

    def __init__(
        self,
        *transcripts: str,
        stream_deltas: bool = False,
        ignore_commit: bool = False,
        fail_transcription: bool = False,
        close_after_samples: dict[int, int] | None = None,
    ) -> None:
        super().__init__(*transcripts)
        self.stream_deltas = stream_deltas
        self.ignore_commit = ignore_commit
        self.fail_transcription = fail_transcription
        self.close_after_samples = close_after_samples or {}
        self.connections: list[Seen] = []
        self._ids = itertools.count(1)

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    def _send(self, ws: ServerConnection, kind: str, **fields: Any) -> None:
        ws.send(json.dumps({"type": kind, "event_id": self._id("event"), **fields}))

    def _error(self, ws: ServerConnection, code: str, message: str, event_id: str | None) -> None:
        self._send(
            ws,
            "error",
            error={
                "type": "invalid_request_error",
                "code": code,
                "message": message,
                "param": None,
                "event_id": event_id,
            },
        )

    def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        parts = urlsplit(ws.request.path)
        seen = Seen(parts.path, parse_qs(parts.query), ws.request.headers)
        with self._lock:
            index = len(self.connections)
            self.connections.append(seen)
        beta = ws.request.headers.get("OpenAI-Beta") == "realtime=v1"
        prefix = "transcription_session" if beta else "session"
        self._send(
            ws,
            f"{prefix}.created",
            session={"id": self._id("sess"), "object": "realtime.transcription_session"},
        )
        buffered = 0  # samples in the input buffer
        total = 0
        item = self._id("item")
        said = 0  # words already sent as deltas for `item`
        previous: str | None = None
        try:
            for message in ws:
                event = json.loads(message)
                kind = event["type"]
                if kind == "input_audio_buffer.append":
                    pcm = base64.b64decode(event["audio"])
                    assert len(pcm) % 2 == 0, "pcm16 has whole samples"
                    seen.appended.append(len(pcm) // 2)
                    seen.events.append({k: v for k, v in event.items() if k != "audio"})
                    buffered += len(pcm) // 2
                    total += len(pcm) // 2
                    limit = self.close_after_samples.get(index)
                    if limit is not None and total >= limit:
                        ws.close(1011, "internal server error")
                        return
                    if self.stream_deltas:
                        words = self._words()
                        heard = min(len(words), buffered // SAMPLES_PER_WORD)
                        for word in words[said:heard]:
                            delta = word if said == 0 else " " + word
                            self._send(ws, _DELTA, item_id=item, content_index=0, delta=delta)
                            said += 1
                    continue
                seen.events.append(event)
                if kind in ("session.update", "transcription_session.update"):
                    if (kind == "session.update") == beta:
                        self._error(
                            ws, "invalid_event", f"Unsupported event {kind}", event.get("event_id")
                        )
                        continue
                    config = event["session"]
                    transcription = (
                        config["input_audio_transcription"]
                        if beta
                        else config["audio"]["input"]["transcription"]
                    )
                    if transcription["model"] not in MODELS:
                        self._error(
                            ws,
                            "invalid_value",
                            f"Invalid value: '{transcription['model']}'. Supported values are: "
                            + ", ".join(f"'{m}'" for m in MODELS),
                            event.get("event_id"),
                        )
                        continue
                    self._send(ws, f"{prefix}.updated", session=event["session"])
                elif kind == "input_audio_buffer.clear":
                    buffered = 0
                    self._send(ws, "input_audio_buffer.cleared")
                elif kind == "input_audio_buffer.commit":
                    if buffered < RATE // 10:
                        ms = buffered * 1000 / RATE
                        self._error(
                            ws,
                            "input_audio_buffer_commit_empty",
                            "Error committing input audio buffer: buffer too small. Expected at "
                            f"least 100ms of audio, but buffer only has {ms:.2f}ms of audio.",
                            event.get("event_id"),
                        )
                        continue
                    if self.ignore_commit:
                        continue
                    self._send(
                        ws, "input_audio_buffer.committed", previous_item_id=previous, item_id=item
                    )
                    self._send(
                        ws,
                        "conversation.item.added" if not beta else "conversation.item.created",
                        previous_item_id=previous,
                        item={
                            "id": item,
                            "object": "realtime.item",
                            "type": "message",
                            "status": "completed",
                            "role": "user",
                            "content": [{"type": "input_audio", "transcript": None}],
                        },
                    )
                    words = self._words()
                    if self.fail_transcription:
                        self._send(
                            ws,
                            _FAILED,
                            item_id=item,
                            content_index=0,
                            error={
                                "type": "transcription_error",
                                "code": "audio_unintelligible",
                                "message": "Audio could not be transcribed.",
                                "param": None,
                            },
                        )
                    else:
                        for word in words[said:]:
                            delta = word if said == 0 else " " + word
                            self._send(ws, _DELTA, item_id=item, content_index=0, delta=delta)
                            said += 1
                        self._send(
                            ws,
                            _COMPLETED,
                            item_id=item,
                            content_index=0,
                            transcript=" ".join(words),
                            usage={
                                "type": "tokens",
                                "total_tokens": 30,
                                "input_tokens": 20,
                                "input_token_details": {"text_tokens": 0, "audio_tokens": 20},
                                "output_tokens": 10,
                            },
                        )
                    with self._lock:
                        self.turn += 1
                    previous, item, said, buffered = item, self._id("item"), 0, 0
        except ConnectionClosed:
            pass


_DELTA = "conversation.item.input_audio_transcription.delta"
MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-live-transcribe")
_COMPLETED = "conversation.item.input_audio_transcription.completed"
_FAILED = "conversation.item.input_audio_transcription.failed"


# ---------------------------------------------------------------- helpers


@pytest.fixture
def make_backend() -> Iterator[Callable[..., OpenAiRealtimeBackend]]:
    with backend_maker(OpenAiRealtimeBackend, KEY) as make:
        yield make


def session_of(seen: Seen) -> dict[str, Any]:
    updates = [e for e in seen.events if e["type"].endswith("session.update")]
    assert len(updates) == 1
    session: dict[str, Any] = updates[0]["session"]
    return session


# ---------------------------------------------------------------- the wire format


def test_configures_a_transcription_session_and_streams_24khz_pcm(
    make_backend: Callable[..., OpenAiRealtimeBackend],
) -> None:
    with FakeRealtime("check my order please") as fake:
        stream = make_backend(fake.url, model="gpt-4o-transcribe").open(HINTS)
        assert fake.connections == []  # open() must not touch the network (it runs on the loop)
        partials = speak(stream, 0.5)
        final = stream.finalise()
        stream.close()

    assert partials == []  # a commit-time model: nothing before the commit
    assert final == Transcript("check my order please", final=True)
    seen = fake.connections[0]
    assert seen.path == "/v1/realtime" and seen.query == {"intent": ["transcription"]}
    assert seen.headers["Authorization"] == f"Bearer {KEY}"
    assert "OpenAI-Beta" not in seen.headers
    assert session_of(seen) == {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {
                    "model": "gpt-4o-transcribe",
                    "language": "en",
                    "prompt": "check order, cancel my reservation, yes, no.",
                },
                "turn_detection": None,
            }
        },
    }
    # 0.5 s at 16 kHz became 0.5 s at 24 kHz (the resampler's tail was flushed).
    assert abs(sum(seen.appended) - 12000) <= 2
    kinds = [e["type"] for e in seen.events]
    assert kinds[0] == "session.update"
    assert kinds[-1] == "input_audio_buffer.commit"
    assert set(kinds[1:-1]) == {"input_audio_buffer.append"}


def test_beta_protocol(make_backend: Callable[..., OpenAiRealtimeBackend]) -> None:
    with FakeRealtime("yes") as fake:
        stream = make_backend(fake.url, beta=True, language="de-de").open(SttHints())
        speak(stream, 0.3)
        final = stream.finalise()
        stream.close()
    assert final.text == "yes"
    seen = fake.connections[0]
    assert seen.headers["OpenAI-Beta"] == "realtime=v1"
    assert session_of(seen) == {
        "input_audio_format": "pcm16",
        "input_audio_transcription": {"model": "gpt-4o-mini-transcribe", "language": "de"},
        "turn_detection": None,
    }


def test_prompt_from_hints_is_bounded() -> None:
    assert prompt_for(SttHints()) is None
    assert prompt_for(SttHints(phrases=("a  b", "a b"), words=("c",))) == "a b, c."
    many = SttHints(phrases=tuple(f"product number {i}" for i in range(1000)))
    prompt = prompt_for(many)
    assert prompt is not None and len(prompt) <= 1001


def test_streaming_model_deltas_become_partials(
    make_backend: Callable[..., OpenAiRealtimeBackend],
) -> None:
    with FakeRealtime("I would like to cancel", stream_deltas=True) as fake:
        stream = make_backend(fake.url, model="gpt-live-transcribe").open(HINTS)
        partials = speak(stream, 0.6)
        for _ in range(200):  # bounded: the last deltas may still be in flight
            if partials and partials[-1] == "I would like to cancel":
                break
            partial = stream.feed(EMPTY)
            if partial is not None:
                partials.append(partial.text)
            time.sleep(0.01)
        final = stream.finalise()
        stream.close()
    assert partials[-1] == "I would like to cancel"
    assert all("I would like to cancel".startswith(p) for p in partials)
    assert final.text == "I would like to cancel"


def test_reuses_one_session_across_turns(
    make_backend: Callable[..., OpenAiRealtimeBackend],
) -> None:
    with FakeRealtime("yes please", "my order is seven", stream_deltas=True) as fake:
        stream = make_backend(fake.url).open(HINTS)
        speak(stream, 0.3)
        first = stream.finalise()
        speak(stream, 0.5)
        second = stream.finalise()
        stream.close()
    assert (first.text, second.text) == ("yes please", "my order is seven")
    assert len(fake.connections) == 1
    assert [e["type"] for e in fake.connections[0].events].count("input_audio_buffer.commit") == 2


def test_too_short_turn_is_cleared_not_committed(
    make_backend: Callable[..., OpenAiRealtimeBackend],
) -> None:
    with FakeRealtime("never heard", "hello") as fake:
        stream = make_backend(fake.url).open(HINTS)
        speak(stream, 0.06)
        assert stream.finalise() == Transcript("", final=True)
        speak(stream, 0.3)
        fake.turn = 1
        assert stream.finalise().text == "hello"
        stream.close()
    kinds = [
        e["type"] for e in fake.connections[0].events if e["type"] != "input_audio_buffer.append"
    ]
    assert kinds == [
        "session.update",
        "input_audio_buffer.clear",
        "input_audio_buffer.commit",
    ]


def test_turn_without_audio_needs_no_network(
    make_backend: Callable[..., OpenAiRealtimeBackend],
) -> None:
    with FakeRealtime() as fake:
        stream = make_backend(fake.url).open(HINTS)
        assert stream.finalise() == Transcript("", final=True)
        stream.close()
    assert fake.connections == []


# ---------------------------------------------------------------- failures


def test_bad_key_fails_at_load_and_says_authentication() -> None:
    with (
        FakeRealtime() as fake,
        pytest.raises(
            ModelLoadError, match=r"authentication failed \(HTTP 401\).*Incorrect API key"
        ),
    ):
        OpenAiRealtimeBackend("wrong-key", fake.url, verify=True, timeout=2)
    assert fake.rejected == 1


def test_bad_key_at_use_is_an_stt_error(
    make_backend: Callable[..., OpenAiRealtimeBackend],
) -> None:
    with FakeRealtime() as fake:
        stream = make_backend(fake.url, key="wrong-key").open(HINTS)
        with pytest.raises(SttError, match="authentication failed"):
            stream.feed(frames(0.02)[0])
        stream.close()


def test_rejected_session_update_fails_at_load() -> None:
    with (
        FakeRealtime() as fake,
        pytest.raises(ModelLoadError, match=r"session update \(invalid_value\).*'nope'"),
    ):
        OpenAiRealtimeBackend(KEY, fake.url, "nope", verify=True, timeout=2)
    assert len(fake.connections) == 1


def test_provider_closing_mid_utterance_fails_the_turn_and_the_next_turn_reconnects(
    make_backend: Callable[..., OpenAiRealtimeBackend],
) -> None:
    with FakeRealtime("lost", "book a table", close_after_samples={0: 4800}) as fake:
        stream = make_backend(fake.url).open(HINTS)
        with pytest.raises(SttError, match=r"closed mid-utterance.*1011"):
            for frame in frames(2.0):  # bounded: the server closes after 0.2 s
                stream.feed(frame)
                time.sleep(0.005)
        fake.turn = 1
        speak(stream, 0.4)
        final = stream.finalise()
        stream.close()
    assert final.text == "book a table"
    assert len(fake.connections) == 2


def test_no_transcript_in_time_is_an_stt_error_and_the_stream_recovers(
    make_backend: Callable[..., OpenAiRealtimeBackend],
) -> None:
    with FakeRealtime("stuck", "works again", ignore_commit=True) as fake:
        stream = make_backend(fake.url, timeout=0.5).open(HINTS)
        speak(stream, 0.3)
        started = time.monotonic()
        with pytest.raises(SttError, match=r"no transcript within 0\.4 s"):
            stream.finalise()
        assert time.monotonic() - started < 1.5
        fake.ignore_commit = False
        fake.turn = 1
        speak(stream, 0.3)
        assert stream.finalise().text == "works again"
        stream.close()
    assert len(fake.connections) == 2


def test_failed_transcription_is_an_stt_error(
    make_backend: Callable[..., OpenAiRealtimeBackend],
) -> None:
    with FakeRealtime("mumble", fail_transcription=True) as fake:
        stream = make_backend(fake.url).open(HINTS)
        speak(stream, 0.3)
        with pytest.raises(SttError, match="transcription failed: Audio could not be transcribed"):
            stream.finalise()
        stream.close()


def test_error_event_is_an_stt_error(make_backend: Callable[..., OpenAiRealtimeBackend]) -> None:
    with FakeRealtime("x") as fake:
        backend = make_backend(fake.url)
        stream = backend.open(HINTS)
        speak(stream, 0.2)
        conn = stream._conn  # a client bug: commit twice, the second on an empty buffer
        assert conn is not None
        conn.send(json.dumps({"type": "input_audio_buffer.commit"}))
        time.sleep(0.05)
        conn.send(json.dumps({"type": "input_audio_buffer.commit"}))
        with pytest.raises(SttError, match="input_audio_buffer_commit_empty"):
            for _ in range(100):
                stream.feed(EMPTY)
                time.sleep(0.01)
        stream.close()


# ---------------------------------------------------------------- settings and load_stt


def test_load_stt_reads_the_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_OPENAI_KEY", KEY)
    with FakeRealtime("hello there") as fake:
        settings = SttSettings(
            backend="openai-realtime",
            base_url=fake.url,
            api_key="env:MY_OPENAI_KEY",
            provider_model="whisper-1",
            timeout=2,
        )
        backend = load_stt(settings)
        try:
            assert backend.name == "openai-realtime"
            stream = backend.open(SttHints())
            speak(stream, 0.3)
            assert stream.finalise().text == "hello there"
            stream.close()
        finally:
            backend.close()
    assert len(fake.connections) == 2  # verify_at_start, then the call
    assert (
        session_of(fake.connections[1])["audio"]["input"]["transcription"]["model"] == "whisper-1"
    )


def test_missing_key_names_the_backend_and_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ModelLoadError, match=r"openai-realtime: stt\.api_key: .*OPENAI_API_KEY"):
        load_stt(SttSettings(backend="openai-realtime"))
