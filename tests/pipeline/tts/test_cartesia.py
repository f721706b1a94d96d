"""Tests for mediaserver.pipeline.tts.cartesia against a local WebSocket server.

The fake server (`tests.pipeline.fake_ws.FakeServer`, 127.0.0.1 only)
speaks Cartesia's TTS WebSocket protocol: it checks the handshake
(`/tts/websocket?cartesia_version=...`, `X-API-Key`, `Cartesia-Version`),
reads the generation request, and answers with messages tagged with its
`context_id`: {"type": "chunk", "data": base64 PCM}, {"type": "timestamps",
"word_timestamps": {"words", "start", "end"}} (seconds from the start of the
audio, sent before or after the audio they time), "flush_done", and finally
{"type": "done"} or {"type": "error"}.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("websockets", reason="the websockets package (mediaserver[cloud]) is missing")

from websockets.sync.server import ServerConnection

from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.pipeline.settings import TtsSettings
from mediaserver.pipeline.tts import TtsChunk, TtsError, load_tts
from mediaserver.pipeline.tts.cartesia import (
    CARTESIA_VERSION,
    CartesiaBackend,
    WordMatcher,
    from_settings,
)
from mediaserver.pipeline.tts.cloud import tokens
from tests.pipeline.fake_ws import FakeServer, server_pool, spans, start, tone

RATE = 16000

# ---------------------------------------------------------------- the fake server


@pytest.fixture
def servers() -> Iterator[list[FakeServer]]:
    with server_pool() as made:
        yield made


# ---------------------------------------------------------------- the wire format


def chunk(ctx: str, pcm: np.ndarray) -> dict[str, Any]:
    return {
        "type": "chunk",
        "data": base64.b64encode(pcm.astype("<i2").tobytes()).decode(),
        "done": False,
        "status_code": 206,
        "step_time": 12.5,
        "context_id": ctx,
    }


def stamps(ctx: str, words: list[str], start: list[float], end: list[float]) -> dict[str, Any]:
    return {
        "type": "timestamps",
        "done": False,
        "status_code": 206,
        "context_id": ctx,
        "word_timestamps": {"words": words, "start": start, "end": end},
    }


def done(ctx: str) -> dict[str, Any]:
    return {"type": "done", "done": True, "status_code": 206, "context_id": ctx}


TEXT = "Hello, well-known caller."
AUDIO = tone(int(1.2 * RATE))  # 1.2 s
# Cartesia's words: punctuation dropped, the hyphenated word in two.
WORDS = ["Hello", "well", "known", "caller"]
STARTS = [0.1, 0.45, 0.6, 0.8]
ENDS = [0.4, 0.6, 0.75, 1.1]


def streaming_script(
    pause: float = 0.25, ending: str = "done"
) -> Callable[[ServerConnection, FakeServer], None]:
    """Audio in three messages, timestamps before and after the audio they time."""

    def script(conn: ServerConnection, server: FakeServer) -> None:
        ctx = server.recv_json(conn)["context_id"]
        a, b = int(0.5 * RATE), int(0.9 * RATE)
        server.send(conn, chunk(ctx, AUDIO[:a]))
        server.send(conn, stamps(ctx, WORDS[:2], STARTS[:2], ENDS[:2]))
        server.stop.wait(pause)
        server.send(conn, stamps(ctx, WORDS[2:], STARTS[2:], ENDS[2:]))
        server.send(conn, chunk(ctx, AUDIO[a:b]))
        server.send(
            conn,
            {
                "type": "flush_done",
                "done": False,
                "flush_done": True,
                "flush_id": 1,
                "status_code": 206,
                "context_id": ctx,
            },
        )
        if ending == "close":
            conn.close(1011, "upstream failure")
            return
        if ending == "stall":
            server.stop.wait(10)
            return
        server.stop.wait(pause)
        server.send(conn, chunk(ctx, AUDIO[b:]))
        server.send(conn, done(ctx))

    return script


def backend_for(server: FakeServer, **kwargs: Any) -> CartesiaBackend:
    kwargs.setdefault("timeout", 2.0)
    return CartesiaBackend(
        kwargs.pop("api_key", "sk_car_test"), "voice-uuid", "sonic-2", base_url=server.url, **kwargs
    )


# ---------------------------------------------------------------- tests


def test_words_stream_with_exact_spans(servers: list[FakeServer]) -> None:
    server = start(servers, streaming_script())
    got: list[tuple[float, TtsChunk]] = []
    for item in backend_for(server).synthesize(TEXT):
        got.append((time.monotonic(), item))
    chunks = [c for _, c in got]

    (handshake,) = server.handshakes
    assert handshake.path == f"/tts/websocket?cartesia_version={CARTESIA_VERSION}"
    assert handshake.headers["X-API-Key"] == "sk_car_test"
    assert handshake.headers["Cartesia-Version"] == CARTESIA_VERSION
    (request,) = server.received
    assert isinstance(request.pop("context_id"), str)
    assert request == {
        "model_id": "sonic-2",
        "transcript": TEXT,
        "voice": {"mode": "id", "id": "voice-uuid"},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": RATE},
        "add_timestamps": True,
        "continue": False,
    }

    assert spans(chunks) == [(0, 0), (0, 6), (7, 17), (18, 25)]
    assert [TEXT[c.start : c.end] for c in chunks[1:]] == ["Hello,", "well-known", "caller."]
    # Cut at the word starts (seconds from the start of the audio).
    assert [len(c.pcm) for c in chunks] == [
        int(0.1 * RATE),
        int(0.35 * RATE),
        int(0.35 * RATE),
        int(0.4 * RATE),
    ]
    assert np.array_equal(np.concatenate([c.pcm for c in chunks]), AUDIO)
    assert got[0][0] < server.last_sent_at - 0.2  # first audio well before "done"


def test_voice_override_language_and_rate(servers: list[FakeServer]) -> None:
    def script(conn: ServerConnection, server: FakeServer) -> None:
        ctx = server.recv_json(conn)["context_id"]
        server.send(conn, {**chunk("someone-else", tone(50)), "context_id": "someone-else"})
        server.send(conn, chunk(ctx, tone(240)))
        server.send(conn, done(ctx))

    server = start(servers, script)
    backend = backend_for(server, sample_rate=24000, language="fr")
    (only,) = list(backend.synthesize("Bonjour.", voice="other-voice"))
    assert (only.start, only.end, len(only.pcm)) == (0, 8, 240)  # no timestamps: one span
    request = server.received[0]
    assert request["voice"] == {"mode": "id", "id": "other-voice"}
    assert request["language"] == "fr"
    assert request["output_format"]["sample_rate"] == 24000


def test_auth_refused_at_handshake(servers: list[FakeServer]) -> None:
    server = start(servers, streaming_script(), reject=(401, "Invalid API key\n"))
    with pytest.raises(
        TtsError, match=r"cartesia: authentication failed \(HTTP 401\): Invalid API key"
    ):
        list(backend_for(server).synthesize(TEXT))


@pytest.mark.parametrize(
    ("message", "pattern"),
    [
        (
            {"type": "error", "done": True, "error": "Invalid API key", "status_code": 401},
            r"cartesia: authentication failed: Invalid API key",
        ),
        (
            {
                "type": "error",
                "done": True,
                "title": "Invalid model",
                "message": "The model is not valid, make sure it is a valid model ID.",
                "error_code": "model_not_found",
                "status_code": 400,
            },
            r"cartesia: server error \(400\): Invalid model; The model is not valid",
        ),
        (
            {"type": "error", "done": True, "error": "Internal server error", "status_code": 500},
            r"cartesia: server error \(500\): Internal server error",
        ),
    ],
)
def test_error_messages(servers: list[FakeServer], message: dict[str, Any], pattern: str) -> None:
    def script(conn: ServerConnection, server: FakeServer) -> None:
        ctx = server.recv_json(conn)["context_id"]
        server.send(conn, {**message, "context_id": ctx})
        server.stop.wait(10)

    server = start(servers, script)
    with pytest.raises(TtsError, match=pattern):
        list(backend_for(server).synthesize(TEXT))


def test_closed_mid_clause(servers: list[FakeServer]) -> None:
    server = start(servers, streaming_script(pause=0, ending="close"))
    got: list[TtsChunk] = []
    with pytest.raises(
        TtsError, match=r"connection closed mid-clause \(code 1011: upstream failure\)"
    ):
        for item in backend_for(server).synthesize(TEXT):
            got.append(item)
    # Only words whose audio was complete were given out.
    assert spans(got) == [(0, 0), (0, 6), (7, 17)]


def test_stall_times_out(servers: list[FakeServer]) -> None:
    server = start(servers, streaming_script(pause=0, ending="stall"))
    t0 = time.monotonic()
    with pytest.raises(TtsError, match=r"no audio within 0\.4 s"):
        list(backend_for(server, timeout=0.4).synthesize(TEXT))
    assert time.monotonic() - t0 < 2.0


def test_connection_refused() -> None:
    server = FakeServer(streaming_script())
    url = server.url
    server.close()
    with pytest.raises(TtsError, match="cartesia: cannot connect"):
        list(CartesiaBackend("k", "v", base_url=url, timeout=1.0).synthesize(TEXT))


# ---------------------------------------------------------------- word matching


def test_word_matcher() -> None:
    text = "Well-known (and trusted) Dr. Smith's 3rd plan, okay?"
    matcher = WordMatcher(text, tokens(text))
    words = ["Well", "known", "and", "trusted", "Doctor", "Smith's", "third", "plan", "okay"]
    got = [matcher.match(w) for w in words]
    # "Doctor" and "third" were rewritten: no match, their audio stays with the word before.
    assert got == [0, None, 1, 2, None, 4, None, 6, 7]


# ---------------------------------------------------------------- settings


def test_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTESIA_API_KEY", "sk_car_env")
    backend = from_settings(
        TtsSettings(backend="cartesia", voice="v1", provider_model="sonic-turbo")
    )
    assert backend._api_key == "sk_car_env" and backend.model == "sonic-turbo"
    assert backend.url == f"wss://api.cartesia.ai/tts/websocket?cartesia_version={CARTESIA_VERSION}"
    assert backend.sample_rate == 16000
    assert isinstance(load_tts(TtsSettings(backend="cartesia", voice="v1")), CartesiaBackend)

    with pytest.raises(ModelLoadError, match=r"cartesia: tts\.voice is not set"):
        load_tts(TtsSettings(backend="cartesia"))
    with pytest.raises(ModelLoadError, match=r"cartesia: tts\.sample_rate 32000"):
        load_tts(TtsSettings(backend="cartesia", voice="v1", sample_rate=32000))
    monkeypatch.delenv("CARTESIA_API_KEY")
    with pytest.raises(
        ModelLoadError, match=r"cartesia: tts\.api_key is not set and neither is CARTESIA_API_KEY"
    ):
        load_tts(TtsSettings(backend="cartesia", voice="v1"))
