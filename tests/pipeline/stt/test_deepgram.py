"""Tests for mediaserver.pipeline.stt.deepgram against a local WebSocket server.

The fake service (`tests.pipeline.fake_ws.FakeService`) is started and
stopped by each test. It speaks Deepgram's live ``/v1/listen`` wire format: it
checks the ``Authorization: Token`` header at the handshake (HTTP 401 with
Deepgram's JSON error body otherwise), records the query and every frame,
and answers binary linear16 audio with ``Results`` messages shaped like the
real ones (``type``, ``channel_index``, ``start``, ``duration``, ``is_final``,
``speech_final``, ``from_finalize``, ``channel.alternatives[0]`` with
``transcript``, ``confidence`` and ``words``, ``metadata``). Its "recogniser"
hears one word of the scripted transcript per 100 ms of audio.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection

from mediaserver.pipeline.settings import SttSettings
from mediaserver.pipeline.stt import (
    STT_RATE,
    ModelLoadError,
    SttError,
    SttHints,
    SttStream,
    Transcript,
    load_stt,
)
from mediaserver.pipeline.stt.deepgram import (
    DeepgramBackend,
    query_params,
)
from tests.pipeline.fake_ws import EMPTY, FRAME, FakeService, backend_maker, frames, speak

KEY = "dg-test-key"
SECONDS_PER_WORD = 0.1
HINTS = SttHints(phrases=("check order", "cancel my reservation"), words=("yes", "no", "seven"))


# ---------------------------------------------------------------- the fake service


@dataclass
class Seen:
    """One connection as the fake service saw it."""

    path: str
    query: dict[str, list[str]]
    headers: Headers
    #: Bytes of each binary frame.
    audio: list[int] = field(default_factory=list)
    #: The JSON control messages, in order.
    controls: list[dict[str, Any]] = field(default_factory=list)


def results(
    text: str,
    start: float,
    duration: float,
    *,
    is_final: bool,
    from_finalize: bool = False,
    speech_final: bool = False,
) -> str:
    """A ``Results`` message exactly as Deepgram frames it."""
    words = text.split()
    step = duration / max(len(words), 1)
    return json.dumps(
        {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(duration, 3),
            "start": round(start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {
                "alternatives": [
                    {
                        "transcript": text,
                        "confidence": 0.97 if text else 0.0,
                        "words": [
                            {
                                "word": w.lower().strip(".,?"),
                                "start": round(start + i * step, 3),
                                "end": round(start + (i + 1) * step, 3),
                                "confidence": 0.97,
                                "punctuated_word": w,
                            }
                            for i, w in enumerate(words)
                        ],
                    }
                ]
            },
            "metadata": {
                "request_id": str(uuid.uuid4()),
                "model_info": {
                    "name": "general-nova-3",
                    "version": "2024-12-20.0",
                    "arch": "nova-3",
                },
                "model_uuid": str(uuid.uuid4()),
            },
            "from_finalize": from_finalize,
        }
    )


class FakeDeepgram(FakeService):
    """A scripted ``/v1/listen`` service: turn N is heard as ``transcripts[N]``.

    Args:
        transcripts: what each successive turn "says" (across connections).
        endpoint_after: close a segment (is_final) after this many words, as
            Deepgram's endpointing does at a pause.
        flag_finalize: mark the flushed result ``from_finalize``.
        ignore_finalize: never answer Finalize (the client must time out).
        close_after_bytes: connection index -> close it with 1011 once it has
            received this many audio bytes (a provider failure mid-utterance).
        close_after_turn: connection index -> close it right after answering
            its first Finalize (a drop between turns).
    """

    path = "/v1/listen"
    authorization = f"Token {KEY}"
    auth_error: ClassVar[dict[str, Any]] = {
        "err_code": "INVALID_AUTH",
        "err_msg": "Invalid credentials.",
        "request_id": "r1",
    }

    def __init__(
        self,
        *transcripts: str,
        endpoint_after: int | None = None,
        flag_finalize: bool = True,
        ignore_finalize: bool = False,
        close_after_bytes: dict[int, int] | None = None,
        close_after_turn: set[int] | None = None,
    ) -> None:
        super().__init__(*transcripts)
        self.endpoint_after = endpoint_after
        self.flag_finalize = flag_finalize
        self.ignore_finalize = ignore_finalize
        self.close_after_bytes = close_after_bytes or {}
        self.close_after_turn = close_after_turn or set()
        self.connections: list[Seen] = []

    def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        parts = urlsplit(ws.request.path)
        seen = Seen(parts.path, parse_qs(parts.query), ws.request.headers)
        with self._lock:
            index = len(self.connections)
            self.connections.append(seen)
        received = 0.0  # seconds of audio on this connection (Deepgram's clock)
        segment_start = 0.0  # where the audio not yet final begins
        turn_start = 0.0
        segment_words = 0  # words of the turn already sent as is_final
        heard_sent = -1
        try:
            for message in ws:
                words = self._words()
                if isinstance(message, bytes):
                    assert len(message) % 2 == 0, "linear16 frames have whole samples"
                    seen.audio.append(len(message))
                    received += len(message) / 2 / STT_RATE
                    limit = self.close_after_bytes.get(index)
                    if limit is not None and sum(seen.audio) >= limit:
                        ws.close(1011, "NET-0000: internal error")
                        return
                    heard = min(len(words), int((received - turn_start) / SECONDS_PER_WORD + 1e-6))
                    if (
                        self.endpoint_after is not None
                        and segment_words == 0
                        and heard >= self.endpoint_after
                    ):
                        # Endpointing: a pause closes the first segment.
                        text = " ".join(words[: self.endpoint_after])
                        ws.send(
                            results(
                                text,
                                segment_start,
                                received - segment_start,
                                is_final=True,
                                speech_final=True,
                            )
                        )
                        segment_words = self.endpoint_after
                        segment_start = received
                    elif heard != heard_sent and heard > segment_words:
                        text = " ".join(words[segment_words:heard])
                        ws.send(
                            results(text, segment_start, received - segment_start, is_final=False)
                        )
                    heard_sent = heard
                    continue
                control = json.loads(message)
                seen.controls.append(control)
                kind = control["type"]
                if kind == "Finalize" and not self.ignore_finalize:
                    text = " ".join(words[segment_words:])
                    ws.send(
                        results(
                            text,
                            segment_start,
                            received - segment_start,
                            is_final=True,
                            from_finalize=self.flag_finalize,
                        )
                    )
                    with self._lock:
                        self.turn += 1
                    segment_start = turn_start = received
                    segment_words, heard_sent = 0, -1
                    if index in self.close_after_turn:
                        ws.close(1011, "NET-0001: no audio received")
                        return
                elif kind == "CloseStream":
                    ws.send(
                        json.dumps(
                            {
                                "type": "Metadata",
                                "transaction_key": "deprecated",
                                "request_id": str(uuid.uuid4()),
                                "sha256": "0" * 64,
                                "created": "2025-01-01T00:00:00.000Z",
                                "duration": round(received, 3),
                                "channels": 1,
                            }
                        )
                    )
                    ws.close()
                    return
        except ConnectionClosed:
            pass


# ---------------------------------------------------------------- helpers


@pytest.fixture
def make_backend() -> Iterator[Callable[..., DeepgramBackend]]:
    with backend_maker(DeepgramBackend, KEY) as make:
        yield make


def settle(stream: SttStream, want: str, seen: list[str]) -> list[str]:
    """Poll (bounded) with empty feeds until the partial reads `want` (`seen`: so far)."""
    partials: list[str] = []
    if seen and seen[-1] == want:
        return partials
    for _ in range(300):
        partial = stream.feed(EMPTY)
        if partial is not None:
            partials.append(partial.text)
            if partial.text == want:
                return partials
        time.sleep(0.01)
    raise AssertionError(f"partial never became {want!r}; saw {partials}")


# ---------------------------------------------------------------- the wire format


def test_connects_with_token_and_query_and_streams_linear16(
    make_backend: Callable[..., DeepgramBackend],
) -> None:
    with FakeDeepgram("check my order please") as fake:
        backend = make_backend(fake.url, endpointing_ms=250)
        stream = backend.open(HINTS)
        assert fake.connections == []  # open() must not touch the network (it runs on the loop)
        partials = speak(stream, 0.5)
        partials += settle(stream, "check my order please", partials)
        final = stream.finalise()
        stream.close()

    assert (final.text, final.final) == ("check my order please", True)
    assert final.confidence == pytest.approx(0.97)
    assert partials[-1] == "check my order please"
    assert all("check my order please".startswith(p) for p in partials)
    assert len(fake.connections) == 1
    seen = fake.connections[0]
    assert seen.path == "/v1/listen"
    assert seen.headers["Authorization"] == f"Token {KEY}"
    query = {k: v for k, v in seen.query.items() if k != "keyterm"}
    assert query == {
        "model": ["nova-3"],
        "encoding": ["linear16"],
        "sample_rate": ["16000"],
        "channels": ["1"],
        "interim_results": ["true"],
        "endpointing": ["250"],
        "smart_format": ["true"],
        "punctuate": ["true"],
        "language": ["en-US"],
    }
    # Every 20 ms frame went out whole, as one binary message of 16-bit samples.
    assert seen.audio == [FRAME * 2] * 25
    assert next(c["type"] for c in seen.controls if c["type"] != "KeepAlive") == "Finalize"


def test_hints_become_repeated_keyterms_on_nova3(
    make_backend: Callable[..., DeepgramBackend],
) -> None:
    with FakeDeepgram("yes") as fake:
        stream = make_backend(fake.url).open(HINTS)
        speak(stream, 0.2)
        stream.finalise()
        stream.close()
    assert fake.connections[0].query["keyterm"] == [
        "check order",
        "cancel my reservation",
        "yes",
        "no",
        "seven",
    ]


def test_older_models_get_single_keywords_and_limits_hold() -> None:
    params = query_params("nova-2-phonecall", "en-gb", 0, HINTS)
    assert ("keywords", "yes") in params and ("keywords", "seven") in params
    assert not any(k == "keyterm" for k, _ in params)
    assert not any(k == "keywords" and " " in v for k, v in params)
    assert ("endpointing", "false") in params
    assert ("language", "en-GB") in params
    many = SttHints(phrases=tuple(f"product number {i}" for i in range(500)))
    keyterms = [v for k, v in query_params("nova-3", "en", 10, many) if k == "keyterm"]
    assert keyterms and sum(len(t.split()) for t in keyterms) <= 300


# ---------------------------------------------------------------- turns


def test_final_joins_the_segments_deepgram_closed_during_the_turn(
    make_backend: Callable[..., DeepgramBackend],
) -> None:
    with FakeDeepgram("I would like to cancel my reservation", endpoint_after=3) as fake:
        stream = make_backend(fake.url).open(HINTS)
        partials = speak(stream, 0.8)
        # The partial is the closed segment plus the newest interim.
        partials += settle(stream, "I would like to cancel my reservation", partials)
        final = stream.finalise()
        stream.close()
    assert final.text == "I would like to cancel my reservation"


def test_reuses_one_connection_across_turns(make_backend: Callable[..., DeepgramBackend]) -> None:
    with FakeDeepgram("yes please", "my order is seven") as fake:
        stream = make_backend(fake.url).open(HINTS)
        speak(stream, 0.3)
        first = stream.finalise()
        time.sleep(0.05)  # the agent talks; no audio flows
        partials = speak(stream, 0.5)
        settle(stream, "my order is seven", partials)
        second = stream.finalise()
        stream.close()
    assert (first.text, second.text) == ("yes please", "my order is seven")
    assert len(fake.connections) == 1
    assert [c["type"] for c in fake.connections[0].controls if c["type"] != "KeepAlive"] == [
        "Finalize",
        "Finalize",
        "CloseStream",
    ]


def test_final_without_from_finalize_flag_still_ends_the_wait(
    make_backend: Callable[..., DeepgramBackend],
) -> None:
    # Deepgram sends from_finalize only "typically"; the final still counts.
    with FakeDeepgram("no thanks", flag_finalize=False) as fake:
        stream = make_backend(fake.url).open(HINTS)
        speak(stream, 0.3)
        started = time.monotonic()
        final = stream.finalise()
        took = time.monotonic() - started
        stream.close()
    assert final.text == "no thanks"
    assert took < 1.0


def test_turn_without_audio_needs_no_network(make_backend: Callable[..., DeepgramBackend]) -> None:
    with FakeDeepgram() as fake:
        stream = make_backend(fake.url).open(HINTS)
        assert stream.finalise() == Transcript("", final=True)
        stream.close()
    assert fake.connections == []


def test_keepalive_on_an_idle_connection(make_backend: Callable[..., DeepgramBackend]) -> None:
    with FakeDeepgram("hello", "again") as fake:
        stream = make_backend(fake.url, keepalive=0.1).open(HINTS)
        speak(stream, 0.2)
        stream.finalise()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not any(
            c["type"] == "KeepAlive" for c in fake.connections[0].controls
        ):
            time.sleep(0.02)
        speak(stream, 0.2)
        second = stream.finalise()
        stream.close()
    assert any(c["type"] == "KeepAlive" for c in fake.connections[0].controls)
    assert second.text == "again"
    assert len(fake.connections) == 1


# ---------------------------------------------------------------- failures


def test_bad_key_fails_at_load_and_says_authentication() -> None:
    with FakeDeepgram() as fake, pytest.raises(ModelLoadError, match="authentication failed"):
        DeepgramBackend("wrong-key", fake.url, verify=True, timeout=2)
    assert fake.rejected == 1


def test_bad_key_at_use_is_an_stt_error(make_backend: Callable[..., DeepgramBackend]) -> None:
    with FakeDeepgram() as fake:
        stream = make_backend(fake.url, key="wrong-key").open(HINTS)
        with pytest.raises(SttError, match=r"authentication failed \(HTTP 401\).*Invalid"):
            stream.feed(frames(0.02)[0])
        stream.close()


def test_refused_connection_fails_at_load() -> None:
    with FakeDeepgram() as fake:
        url = fake.url
    # The server is gone: nothing listens on that port any more.
    with pytest.raises(ModelLoadError, match="deepgram: cannot connect"):
        DeepgramBackend(KEY, url, verify=True, timeout=2)


def test_provider_closing_mid_utterance_fails_the_turn_and_the_next_turn_reconnects(
    make_backend: Callable[..., DeepgramBackend],
) -> None:
    with FakeDeepgram("lost words", "book a table", close_after_bytes={0: 6400}) as fake:
        stream = make_backend(fake.url).open(HINTS)
        with pytest.raises(SttError, match=r"closed mid-utterance.*1011"):
            for frame in frames(2.0):  # bounded: the server closes after 0.2 s
                stream.feed(frame)
                time.sleep(0.005)
        fake.turn = 1  # the lost turn is not retried
        speak(stream, 0.4)
        final = stream.finalise()
        stream.close()
    assert final.text == "book a table"
    assert len(fake.connections) == 2


def test_drop_between_turns_reconnects_quietly(
    make_backend: Callable[..., DeepgramBackend],
) -> None:
    with FakeDeepgram("first", "second", close_after_turn={0}) as fake:
        stream = make_backend(fake.url).open(HINTS)
        speak(stream, 0.2)
        assert stream.finalise().text == "first"
        time.sleep(0.1)  # the close arrives while the caller is silent
        speak(stream, 0.2)
        assert stream.finalise().text == "second"
        stream.close()
    assert len(fake.connections) == 2


def test_no_final_in_time_is_an_stt_error_and_the_stream_recovers(
    make_backend: Callable[..., DeepgramBackend],
) -> None:
    with FakeDeepgram("never final", ignore_finalize=True) as fake:
        stream = make_backend(fake.url, timeout=0.5).open(HINTS)
        speak(stream, 0.3)
        started = time.monotonic()
        with pytest.raises(SttError, match=r"no final transcript within 0\.4 s"):
            stream.finalise()
        assert time.monotonic() - started < 1.5
        fake.ignore_finalize = False
        fake.transcripts.append("works again")
        fake.turn = 1
        speak(stream, 0.3)
        assert stream.finalise().text == "works again"
        stream.close()
    assert len(fake.connections) == 2  # the stuck connection was dropped


def test_closed_stream_refuses_work(make_backend: Callable[..., DeepgramBackend]) -> None:
    with FakeDeepgram("hi") as fake:
        stream = make_backend(fake.url).open(HINTS)
        speak(stream, 0.1)
        stream.close()
        with pytest.raises(SttError, match="closed"):
            stream.feed(frames(0.02)[0])
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not any(
            c["type"] == "CloseStream" for c in fake.connections[0].controls
        ):
            time.sleep(0.02)
    assert fake.connections[0].controls[-1]["type"] == "CloseStream"


# ---------------------------------------------------------------- settings and load_stt


def test_load_stt_reads_the_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_DG_KEY", KEY)
    with FakeDeepgram("hello there") as fake:
        settings = SttSettings(
            backend="deepgram",
            base_url=fake.url,
            api_key="env:MY_DG_KEY",
            provider_model="nova-2-phonecall",
            timeout=2,
        )
        backend = load_stt(settings)
        try:
            assert backend.name == "deepgram"
            stream = backend.open(SttHints())
            speak(stream, 0.3)
            assert stream.finalise().text == "hello there"
            stream.close()
        finally:
            backend.close()
    # verify_at_start connected once; the call connected again.
    assert len(fake.connections) == 2
    assert fake.connections[1].query["model"] == ["nova-2-phonecall"]


def test_missing_key_names_the_backend_and_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    with pytest.raises(ModelLoadError, match=r"deepgram: stt\.api_key: .*DEEPGRAM_API_KEY"):
        load_stt(SttSettings(backend="deepgram"))
    with pytest.raises(ModelLoadError, match=r"deepgram: stt\.api_key: .*NOPE_UNSET"):
        load_stt(SttSettings(backend="deepgram", api_key="env:NOPE_UNSET"))


def test_bad_url_names_the_key() -> None:
    with pytest.raises(ModelLoadError, match=r"stt\.base_url"):
        load_stt(SttSettings(backend="deepgram", api_key="k", base_url="https://api.deepgram.com"))
