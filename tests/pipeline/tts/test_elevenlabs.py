"""Tests for mediaserver.pipeline.tts.elevenlabs (and the shared WordCutter).

The fake server (`tests.pipeline.fake_ws.FakeServer`) is a real WebSocket
server on 127.0.0.1 speaking ElevenLabs' stream-input protocol: it
checks the handshake (path, query, `xi-api-key`), reads the client's three
messages ({"text": " "}, the clause with "flush", {"text": ""}) and answers
with {"audio", "alignment", "normalizedAlignment"} messages whose character
times are relative to each message's audio, as the API reference says, then
{"isFinal": true}. Tests script pauses, errors, closes and stalls.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

pytest.importorskip("websockets", reason="the websockets package (mediaserver[cloud]) is missing")

from websockets.sync.server import ServerConnection

from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.pipeline.settings import TtsSettings
from mediaserver.pipeline.tts import TtsChunk, TtsError, load_tts
from mediaserver.pipeline.tts.cloud import WordCutter
from mediaserver.pipeline.tts.elevenlabs import CharAligner, ElevenLabsBackend, from_settings
from tests.pipeline.fake_ws import FakeServer, server_pool, spans, start, tone

RATE = 16000
MS = RATE // 1000  # samples per millisecond

# ---------------------------------------------------------------- the fake server


@pytest.fixture
def servers() -> Iterator[list[FakeServer]]:
    with server_pool() as made:
        yield made


# ---------------------------------------------------------------- the wire format


@dataclass
class Clip:
    """One scripted audio message: `chars` at `ms_per_char` each after `lead_ms` of silence."""

    chars: str
    lead_ms: int = 0
    ms_per_char: int = 40
    duration_key: str = "charsDurationsMs"  # the documented spelling; servers send charDurationsMs
    aligned: bool = True

    def message(self, start_sample: int) -> tuple[dict[str, Any], np.ndarray]:
        n = (self.lead_ms + self.ms_per_char * len(self.chars)) * MS
        pcm = tone(n, start_sample)
        starts = [self.lead_ms + i * self.ms_per_char for i in range(len(self.chars))]
        durations = [self.ms_per_char] * len(self.chars)
        data: dict[str, Any] = {"audio": base64.b64encode(pcm.astype("<i2").tobytes()).decode()}
        if self.aligned:
            data["alignment"] = {
                "chars": list(self.chars),
                "charStartTimesMs": starts,
                self.duration_key: durations,
            }
            # Real servers put a leading space in the normalized alignment.
            data["normalizedAlignment"] = {
                "chars": [" ", *self.chars],
                "charStartTimesMs": [0, *starts],
                self.duration_key: [0, *durations],
            }
        else:
            data["alignment"] = None
            data["normalizedAlignment"] = None
        data["isFinal"] = None
        return data, pcm


def eleven_script(
    clips: list[Clip], pause: float = 0.0, ending: str = "final"
) -> Callable[[ServerConnection, FakeServer], None]:
    """Read the client's three messages, send the clips, then end as `ending` says."""

    def script(conn: ServerConnection, server: FakeServer) -> None:
        for _ in range(3):
            server.recv_json(conn)
        sample = 0
        for i, clip in enumerate(clips):
            if i and pause:
                server.stop.wait(pause)
            data, pcm = clip.message(sample)
            server.send(conn, data)
            sample += len(pcm)
        if ending == "final":
            server.send(
                conn,
                {"audio": None, "isFinal": True, "normalizedAlignment": None, "alignment": None},
            )
            conn.close()
        elif ending == "close":
            conn.close(1011, "internal error")
        elif ending == "stall":
            server.stop.wait(10)

    return script


def all_audio(clips: list[Clip]) -> np.ndarray:
    out, sample = [], 0
    for clip in clips:
        _, pcm = clip.message(sample)
        out.append(pcm)
        sample += len(pcm)
    return np.concatenate(out)


TEXT = "Hello there, caller."
# The clause split mid-word across three messages, 100 ms of lead silence.
CLIPS = [Clip("Hello th", lead_ms=100), Clip("ere, cal"), Clip("ler. ")]


def backend_for(server: FakeServer, **kwargs: Any) -> ElevenLabsBackend:
    kwargs.setdefault("timeout", 2.0)
    return ElevenLabsBackend(
        kwargs.pop("api_key", "xi-test"),
        "voice123",
        "eleven_flash_v2_5",
        base_url=server.url,
        **kwargs,
    )


# ---------------------------------------------------------------- tests


def test_words_stream_with_exact_spans(servers: list[FakeServer]) -> None:
    server = start(servers, eleven_script(CLIPS, pause=0.3))
    backend = backend_for(server)
    got: list[tuple[float, TtsChunk]] = []
    for chunk in backend.synthesize(TEXT):
        got.append((time.monotonic(), chunk))
    chunks = [c for _, c in got]

    (handshake,) = server.handshakes
    assert handshake.path.startswith("/v1/text-to-speech/voice123/stream-input?")
    query = dict(p.split("=", 1) for p in handshake.path.split("?", 1)[1].split("&"))
    assert query == {
        "model_id": "eleven_flash_v2_5",
        "output_format": "pcm_16000",
        "sync_alignment": "true",
        "auto_mode": "true",
    }
    assert handshake.headers["xi-api-key"] == "xi-test"
    assert server.received == [{"text": " "}, {"text": TEXT + " ", "flush": True}, {"text": ""}]

    # A pause before the first word, then one chunk per word with its exact span.
    assert spans(chunks) == [(0, 0), (0, 5), (6, 12), (13, 20)]
    assert [TEXT[c.start : c.end] for c in chunks[1:]] == ["Hello", "there,", "caller."]
    # Cuts at the word starts: 100 ms lead, 40 ms per character.
    assert [len(c.pcm) for c in chunks[:3]] == [100 * MS, 6 * 40 * MS, 7 * 40 * MS]
    assert np.array_equal(np.concatenate([c.pcm for c in chunks]), all_audio(CLIPS))
    # First audio long before the server sent its last message.
    assert got[0][0] < server.last_sent_at - 0.2


def test_server_spelling_audio_only_messages_and_options(servers: list[FakeServer]) -> None:
    clips = [
        Clip("Hello there, ", duration_key="charDurationsMs"),
        Clip("", lead_ms=60, aligned=False),  # audio without timing (alignment null)
        Clip("caller. ", duration_key="charDurationsMs"),
    ]
    server = start(servers, eleven_script(clips))
    backend = backend_for(server, speed=1.1, sample_rate=RATE)
    chunks = list(backend.synthesize(TEXT, voice="other voice"))
    assert server.handshakes[0].path.startswith("/v1/text-to-speech/other%20voice/stream-input?")
    assert server.received[0] == {"text": " ", "voice_settings": {"speed": 1.1}}
    assert spans(chunks) == [(0, 5), (6, 12), (13, 20)]
    # The untimed audio stays with the word before it.
    assert len(chunks[1].pcm) == (7 * 40 + 60) * MS
    assert np.array_equal(np.concatenate([c.pcm for c in chunks]), all_audio(clips))


def test_auth_refused_at_handshake(servers: list[FakeServer]) -> None:
    server = start(servers, eleven_script([]), reject=(401, "invalid api key\n"))
    backend = backend_for(server)
    with pytest.raises(
        TtsError, match=r"elevenlabs: authentication failed \(HTTP 401\): invalid api key"
    ):
        list(backend.synthesize(TEXT))


def test_auth_refused_by_policy_close(servers: list[FakeServer]) -> None:
    def script(conn: ServerConnection, server: FakeServer) -> None:
        server.recv_json(conn)
        conn.close(1008, "Invalid API key")

    server = start(servers, script)
    with pytest.raises(TtsError, match="elevenlabs: authentication failed: Invalid API key"):
        list(backend_for(server).synthesize(TEXT))


def test_error_message(servers: list[FakeServer]) -> None:
    def script(conn: ServerConnection, server: FakeServer) -> None:
        for _ in range(3):
            server.recv_json(conn)
        server.send(
            conn, {"message": "Model is overloaded", "error": "service_unavailable", "code": 1011}
        )
        conn.close()

    server = start(servers, script)
    with pytest.raises(TtsError, match=r"elevenlabs: server error.*Model is overloaded"):
        list(backend_for(server).synthesize(TEXT))


def test_closed_mid_clause(servers: list[FakeServer]) -> None:
    server = start(servers, eleven_script(CLIPS[:2], ending="close"))
    got: list[TtsChunk] = []
    with pytest.raises(
        TtsError, match=r"connection closed mid-clause \(code 1011: internal error\)"
    ):
        for chunk in backend_for(server).synthesize(TEXT):
            got.append(chunk)
    # What came before the close claimed only words whose audio was complete.
    assert spans(got) == [(0, 0), (0, 5), (6, 12)]


def test_stall_times_out(servers: list[FakeServer]) -> None:
    server = start(servers, eleven_script(CLIPS[:1], ending="stall"))
    t0 = time.monotonic()
    with pytest.raises(TtsError, match=r"no audio within 0\.4 s"):
        list(backend_for(server, timeout=0.4).synthesize(TEXT))
    assert time.monotonic() - t0 < 2.0


def test_connection_refused(servers: list[FakeServer]) -> None:
    server = FakeServer(eleven_script([]))
    url = server.url
    server.close()
    backend = ElevenLabsBackend("k", "v", base_url=url, timeout=1.0)
    with pytest.raises(TtsError, match="elevenlabs: cannot connect"):
        list(backend.synthesize(TEXT))


def test_no_audio_is_an_error(servers: list[FakeServer]) -> None:
    server = start(servers, eleven_script([]))
    with pytest.raises(TtsError, match="no audio"):
        list(backend_for(server).synthesize(TEXT))


# ---------------------------------------------------------------- alignment and cutting


def test_aligner_skips_rewrites_and_dropped_characters() -> None:
    text = "It costs $5 today, ok?"
    cutter = WordCutter(text)
    aligner = CharAligner(text, cutter.tokens)
    # A normalised alignment: "$5" spoken as "five dollars"; "today," lost its "d".
    chars = list(" It costs five dollars toay, ok?")
    words = aligner.feed(chars, list(range(len(chars))))
    assert [(cutter.tokens[t], ms) for t, ms in words] == [
        ((0, 2), 1.0),
        ((3, 8), 4.0),
        ((12, 18), 23.0),
        ((19, 22), 29.0),
    ]


def test_cutter_merges_words_without_audio_and_late_timing() -> None:
    text = "one two three four"
    cutter = WordCutter(text)
    out: list[TtsChunk] = []
    out += cutter.add_word(0, 0)
    out += cutter.add_word(1, 100)
    out += cutter.add_word(2, 100)  # no audio of its own: joins the next chunk
    assert out == []  # no audio yet
    out += cutter.add_audio(tone(150))
    assert spans(out) == [(0, 3)]
    out += cutter.add_word(1, 120)  # not after the last word: ignored
    out += cutter.add_word(3, 400)  # past the end of the audio
    out += cutter.add_audio(tone(100, 150))
    out += cutter.finish()
    # "two" had no audio: "two three" share a chunk; "four" never got audio:
    # the last chunk claims it.
    assert spans(out) == [(0, 3), (4, 18)]
    assert [len(c.pcm) for c in out] == [100, 150]


# ---------------------------------------------------------------- settings


def test_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELEVENLABS_API_KEY", "xi-env")
    backend = from_settings(TtsSettings(backend="elevenlabs", voice="abc", sample_rate=24000))
    assert backend._api_key == "xi-env" and backend.sample_rate == 24000
    assert backend.url().startswith("wss://api.elevenlabs.io/v1/text-to-speech/abc/stream-input?")
    assert "output_format=pcm_24000" in backend.url()
    assert isinstance(load_tts(TtsSettings(backend="elevenlabs", voice="abc")), ElevenLabsBackend)

    with pytest.raises(ModelLoadError, match=r"elevenlabs: tts\.voice is not set"):
        load_tts(TtsSettings(backend="elevenlabs"))
    with pytest.raises(ModelLoadError, match=r"elevenlabs: tts\.sample_rate 11025"):
        load_tts(TtsSettings(backend="elevenlabs", voice="abc", sample_rate=11025))
    with pytest.raises(ModelLoadError, match=r"elevenlabs: tts\.base_url must be a ws"):
        load_tts(TtsSettings(backend="elevenlabs", voice="abc", base_url="https://x"))
    monkeypatch.delenv("ELEVENLABS_API_KEY")
    with pytest.raises(
        ModelLoadError,
        match=r"elevenlabs: tts\.api_key is not set and neither is ELEVENLABS_API_KEY",
    ):
        load_tts(TtsSettings(backend="elevenlabs", voice="abc"))
    with pytest.raises(
        ModelLoadError, match=r"elevenlabs: tts\.api_key: environment variable NOPE_KEY"
    ):
        load_tts(TtsSettings(backend="elevenlabs", voice="abc", api_key="env:NOPE_KEY"))
