"""Tests for mediaserver.pipeline.tts.openai_speech against a local HTTP server.

The fake server speaks the OpenAI speech wire format: it takes
`POST /v1/audio/speech` with a JSON body and a Bearer token, and answers
with the audio as a chunked body (raw 24 kHz s16le for "pcm", a RIFF header
first for "wav"), or OpenAI's JSON error object with the status. Each test
scripts the pieces it sends, with pauses, a cut connection or a stall.
"""

from __future__ import annotations

import http.server
import json
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.pipeline.settings import TtsSettings
from mediaserver.pipeline.tts import TtsChunk, TtsError, load_tts
from mediaserver.pipeline.tts.openai_speech import OpenAiSpeechBackend, from_settings

# ---------------------------------------------------------------- the fake server


@dataclass
class Sleep:
    seconds: float


@dataclass
class Cut:
    """Close the connection without the terminating chunk."""


@dataclass
class Stall:
    """Send nothing more until the server stops."""


@dataclass
class Reply:
    status: int = 200
    content_type: str = "audio/pcm"
    #: Error body, or (for 200) the body pieces, one HTTP chunk each.
    body: bytes | list[bytes | Sleep | Cut | Stall] = b""


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeSpeech:
    """`/v1/audio/speech` on 127.0.0.1 playing scripted replies in order (or, with
    `answer`, the reply it makes for each request)."""

    replies: list[Reply]
    answer: Callable[[Seen], Reply] | None = None
    requests: list[Seen] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    sent_all: list[float] = field(default_factory=list)  # when each reply's last byte went out

    def __post_init__(self) -> None:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                seen = Seen(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw)
                )
                fake.requests.append(seen)
                fake.play(self, fake.answer(seen) if fake.answer else fake.replies.pop(0))

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def play(self, handler: http.server.BaseHTTPRequestHandler, reply: Reply) -> None:
        if isinstance(reply.body, bytes):
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(reply.body)))
            handler.end_headers()
            handler.wfile.write(reply.body)
            return
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        handler.wfile.flush()
        for item in reply.body:
            if isinstance(item, Sleep):
                self.stop.wait(item.seconds)
            elif isinstance(item, Cut):
                handler.wfile.flush()
                handler.close_connection = True
                handler.connection.close()
                return
            elif isinstance(item, Stall):
                self.stop.wait(10)
                handler.close_connection = True
                return
            else:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(item), item))
                handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
        self.sent_all.append(time.monotonic())

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def fake() -> Iterator[FakeSpeech]:
    server = FakeSpeech([])
    try:
        yield server
    finally:
        server.close()


def tone(n: int, start: int = 0) -> np.ndarray:
    """Distinct int16 samples, so reassembled audio can be compared exactly."""
    return ((np.arange(start, start + n) * 37) % 20000 - 10000).astype(np.int16)


def pcm_bytes(samples: np.ndarray) -> bytes:
    return samples.astype("<i2").tobytes()


def error_body(message: str, kind: str, code: str | None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}
    ).encode()


def backend_for(fake: FakeSpeech, **kwargs: Any) -> OpenAiSpeechBackend:
    kwargs.setdefault("timeout", 2.0)
    return OpenAiSpeechBackend(
        fake.url, kwargs.pop("api_key", "sk-test"), "tts-1", "alloy", **kwargs
    )


TEXT = "Hello there, caller."

# ---------------------------------------------------------------- tests


def test_streams_pcm_and_request_format(fake: FakeSpeech) -> None:
    audio = tone(4800)  # 200 ms at 24 kHz
    raw = pcm_bytes(audio)
    # Pieces split at odd byte positions, with pauses: first audio must come early.
    fake.replies.append(
        Reply(body=[raw[:1001], Sleep(0.3), raw[1001:5001], Sleep(0.3), raw[5001:]])
    )
    backend = backend_for(fake, api_key="sk-secret", speed=1.25)
    got: list[tuple[float, TtsChunk]] = []
    try:
        for chunk in backend.synthesize(TEXT, voice="nova"):
            got.append((time.monotonic(), chunk))
    finally:
        backend.close()
    (seen,) = fake.requests
    assert seen.path == "/v1/audio/speech"
    assert seen.headers["authorization"] == "Bearer sk-secret"
    assert seen.headers["content-type"] == "application/json"
    assert seen.body == {
        "model": "tts-1",
        "input": TEXT,
        "voice": "nova",
        "response_format": "pcm",
        "speed": 1.25,
    }
    chunks = [c for _, c in got]
    assert np.array_equal(np.concatenate([c.pcm for c in chunks]), audio)
    assert len(chunks) >= 2
    # Nothing is claimed before the clause's last piece; that one claims it all.
    assert [(c.start, c.end) for c in chunks[:-1]] == [(0, 0)] * (len(chunks) - 1)
    assert (chunks[-1].start, chunks[-1].end) == (0, len(TEXT))
    assert got[0][0] < fake.sent_all[0] - 0.2  # first audio well before the body ended
    assert backend.sample_rate == 24000


def test_default_voice_and_no_key(fake: FakeSpeech) -> None:
    fake.replies.append(Reply(body=[pcm_bytes(tone(100))]))
    backend = backend_for(fake, api_key=None)
    try:
        (chunk,) = list(backend.synthesize("Hi."))
    finally:
        backend.close()
    assert (chunk.start, chunk.end) == (0, 3)
    assert "authorization" not in fake.requests[0].headers
    assert fake.requests[0].body["voice"] == "alloy"


def wav_header(rate: int, channels: int, data_size: int = 0xFFFFFFFF) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    info = b"INFOISFT\x05\x00\x00\x00test\x00\x00"  # an odd-sized sub-chunk, padded
    return (
        b"RIFF\xff\xff\xff\xffWAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"LIST"
        + struct.pack("<I", len(info))
        + info
        + b"data"
        + struct.pack("<I", data_size)
    )


def test_wav_same_rate_stereo_split_header(fake: FakeSpeech) -> None:
    left, right = tone(2400), tone(2400, 7)
    stereo = np.stack([left, right], axis=1).reshape(-1)
    body = wav_header(24000, 2) + pcm_bytes(stereo)
    fake.replies.append(
        Reply(content_type="audio/wav", body=[body[i : i + 333] for i in range(0, len(body), 333)])
    )
    backend = backend_for(fake, response_format="wav")
    try:
        chunks = list(backend.synthesize(TEXT))
    finally:
        backend.close()
    assert fake.requests[0].body["response_format"] == "wav"
    mono = np.concatenate([c.pcm for c in chunks])
    expected = ((left.astype(np.int32) + right) / 2).round().astype(np.int16)
    assert np.array_equal(mono, expected)


def test_wav_other_rate_is_resampled_and_sized_data_ends(fake: FakeSpeech) -> None:
    audio = tone(1600)  # 100 ms at 16 kHz
    body = wav_header(16000, 1, data_size=len(audio) * 2) + pcm_bytes(audio) + b"JUNKtrailer"
    fake.replies.append(Reply(content_type="audio/wav", body=[body[:50], body[50:]]))
    backend = backend_for(fake)  # asked for pcm: a RIFF body is parsed as WAV anyway
    try:
        chunks = list(backend.synthesize(TEXT))
    finally:
        backend.close()
    total = sum(len(c.pcm) for c in chunks)
    assert abs(total - 2400) <= 2  # 100 ms at 24 kHz
    assert (chunks[-1].start, chunks[-1].end) == (0, len(TEXT))


def test_auth_failure(fake: FakeSpeech) -> None:
    fake.replies.append(
        Reply(
            401,
            body=error_body(
                "Incorrect API key provided: sk-test.", "invalid_request_error", "invalid_api_key"
            ),
        )
    )
    backend = backend_for(fake)
    try:
        with pytest.raises(
            TtsError, match=r"openai: authentication failed \(HTTP 401\): Incorrect API key"
        ):
            list(backend.synthesize(TEXT))
    finally:
        backend.close()


def test_server_error(fake: FakeSpeech) -> None:
    fake.replies.append(
        Reply(503, body=error_body("The server is overloaded", "server_error", None))
    )
    backend = backend_for(fake)
    try:
        with pytest.raises(TtsError, match=r"server error \(HTTP 503\): The server is overloaded"):
            list(backend.synthesize(TEXT))
    finally:
        backend.close()


def test_bad_request_and_json_instead_of_audio(fake: FakeSpeech) -> None:
    fake.replies.append(Reply(422, body=json.dumps({"detail": "voice not found"}).encode()))
    fake.replies.append(
        Reply(content_type="application/json", body=[b'{"error": "no audio for you"}'])
    )
    backend = backend_for(fake)
    try:
        with pytest.raises(TtsError, match=r"request refused \(HTTP 422\): voice not found"):
            list(backend.synthesize(TEXT))
        with pytest.raises(TtsError, match="JSON instead of audio: no audio for you"):
            list(backend.synthesize(TEXT))
    finally:
        backend.close()


def test_cut_mid_clause(fake: FakeSpeech) -> None:
    raw = pcm_bytes(tone(4800))
    fake.replies.append(Reply(body=[raw[:4000], Sleep(0.05), raw[4000:6000], Cut()]))
    backend = backend_for(fake)
    got: list[TtsChunk] = []
    try:
        with pytest.raises(TtsError, match="stream ended early"):
            for chunk in backend.synthesize(TEXT):
                got.append(chunk)
    finally:
        backend.close()
    assert all(c.end == 0 for c in got)  # nothing claimed as voiced


def test_stall_times_out(fake: FakeSpeech) -> None:
    fake.replies.append(Reply(body=[pcm_bytes(tone(2000)), Stall()]))
    backend = backend_for(fake, timeout=0.4)
    t0 = time.monotonic()
    try:
        with pytest.raises(TtsError, match=r"no audio within 0\.4 s"):
            list(backend.synthesize(TEXT))
    finally:
        backend.close()
    assert time.monotonic() - t0 < 2.0


def test_empty_body_is_an_error(fake: FakeSpeech) -> None:
    fake.replies.append(Reply(body=[]))
    backend = backend_for(fake)
    try:
        with pytest.raises(TtsError, match="no audio"):
            list(backend.synthesize(TEXT))
        assert list(backend.synthesize("   ")) == []  # blank text: no request at all
    finally:
        backend.close()
    assert len(fake.requests) == 1


def test_connection_refused() -> None:
    server = FakeSpeech([])
    url = server.url
    server.close()
    backend = OpenAiSpeechBackend(url, None, timeout=1.0)
    try:
        with pytest.raises(TtsError, match="cannot connect"):
            list(backend.synthesize(TEXT))
    finally:
        backend.close()


# ---------------------------------------------------------------- settings


def test_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_TTS_KEY", "sk-env")
    backend = from_settings(
        TtsSettings(
            backend="openai",
            api_key="env:TEST_TTS_KEY",
            provider_model="gpt-4o-mini-tts",
            voice="coral",
            speed=0.9,
            timeout=3,
        )
    )
    try:
        assert backend.url == "https://api.openai.com/v1/audio/speech"
        assert backend._headers()["Authorization"] == "Bearer sk-env"
        assert backend.request_body("x") == {
            "model": "gpt-4o-mini-tts",
            "input": "x",
            "voice": "coral",
            "response_format": "pcm",
            "speed": 0.9,
        }
        assert backend.timeout == 3 and backend.sample_rate == 24000
    finally:
        backend.close()

    # A self-hosted server (Kokoro-FastAPI): no key needed, its own rate.
    local = load_tts(
        TtsSettings(backend="openai", base_url="http://127.0.0.1:8880/v1", sample_rate=22050)
    )
    try:
        assert isinstance(local, OpenAiSpeechBackend)
        assert local.voice == "alloy" and local.sample_rate == 22050 and local._api_key is None
    finally:
        local.close()

    monkeypatch.delenv("TEST_TTS_KEY")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(
        ModelLoadError, match=r"openai: tts\.api_key: environment variable TEST_TTS_KEY"
    ):
        load_tts(TtsSettings(backend="openai", api_key="env:TEST_TTS_KEY"))
    with pytest.raises(
        ModelLoadError, match=r"openai: tts\.api_key is not set and neither is OPENAI_API_KEY"
    ):
        load_tts(TtsSettings(backend="openai"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-default")
    default = load_tts(TtsSettings(backend="openai"))
    try:
        assert isinstance(default, OpenAiSpeechBackend) and default._api_key == "sk-default"
    finally:
        default.close()
