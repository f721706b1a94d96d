"""STT and TTS fallback wrappers (`stt.fallback`, `tts.fallback`) with real backends.

The primaries are the cloud backends against their local fakes in the
providers' wire formats (tests/pipeline/stt/test_deepgram.py,
tests/pipeline/tts/test_openai_speech.py); the fallbacks are the embedded
Whisper and espeak-ng.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mediaserver.codecs.resample import resample
from mediaserver.faults import FaultRule, Faults
from mediaserver.pipeline.settings import SttSettings, TtsSettings
from mediaserver.pipeline.stt import STT_RATE, SttError, SttHints, load_stt
from mediaserver.pipeline.stt.fallback import FallbackSttBackend
from mediaserver.pipeline.stt.whisper import FasterWhisperBackend
from mediaserver.pipeline.tts import load_tts
from mediaserver.pipeline.tts.base import TtsChunk, TtsError
from mediaserver.pipeline.tts.fallback import FallbackTts, FallbackTtsBackend, TtsFailure
from tests.pipeline.stt.test_deepgram import KEY, FakeDeepgram
from tests.pipeline.tts.test_openai_speech import FakeSpeech, Reply

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing"),
]

QUESTION = "what is the weather in paris"


def speech(text: str, tmp_path: Path) -> np.ndarray:
    path = tmp_path / "q.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, timeout=20)
    with wave.open(str(path)) as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        return resample(pcm, wav.getframerate(), STT_RATE)


def deepgram_over_whisper(url: str) -> FallbackSttBackend:
    stt = load_stt(
        SttSettings(
            backend="deepgram",
            base_url=url,
            api_key=KEY,
            verify_at_start=False,
            timeout=3.0,
            fallback=SttSettings(backend="faster-whisper", pool_size=1, beam_size=1),
        )
    )
    assert isinstance(stt, FallbackSttBackend) and stt.name == "deepgram"
    assert isinstance(stt.fallback, FasterWhisperBackend)
    return stt


def feed(stream: object, audio: np.ndarray) -> None:
    for at in range(0, audio.size, STT_RATE // 50):
        stream.feed(audio[at : at + STT_RATE // 50])  # type: ignore[attr-defined]


def test_stt_provider_closing_mid_utterance_is_transcribed_by_the_fallback(
    tmp_path: Path,
) -> None:
    audio = speech(QUESTION, tmp_path)
    # The first connection closes (1011) after 0.5 s of audio; later ones answer.
    with FakeDeepgram(QUESTION, QUESTION, close_after_bytes={0: 16000}) as fake:
        stt = deepgram_over_whisper(fake.url)
        stream = stt.open(SttHints(phrases=("get weather",)))
        before = stt.fallback.transcriptions  # type: ignore[attr-defined]
        feed(stream, audio)  # no SttError: the turn moved to Whisper
        text = stream.finalise().text
        assert {"weather", "paris"} <= set(text.lower().replace("?", "").split()), text
        assert stt.fallback.transcriptions > before  # type: ignore[attr-defined]
        # The next turn is the provider's again, over a new connection.
        feed(stream, audio)
        assert stream.finalise().text == QUESTION
        assert len(fake.connections) == 2
        stream.close()
        stt.close()


def test_stt_without_failure_never_uses_the_fallback(tmp_path: Path) -> None:
    audio = speech(QUESTION, tmp_path)
    with FakeDeepgram(QUESTION) as fake:
        stt = deepgram_over_whisper(fake.url)
        stream = stt.open(SttHints())
        before = stt.fallback.transcriptions  # type: ignore[attr-defined]
        feed(stream, audio)
        stream.pause()  # VAD's pause goes to the provider, not to Whisper
        assert stream.finalise().text == QUESTION
        assert stt.fallback.transcriptions == before  # type: ignore[attr-defined]
        stream.close()
        stt.close()


def test_stt_both_failing_is_an_stt_failure(tmp_path: Path) -> None:
    stt = load_stt(
        SttSettings(
            backend="deepgram",
            base_url="ws://127.0.0.1:9/v1/listen",  # nothing listens: refused
            api_key=KEY,
            verify_at_start=False,
            timeout=1.0,
            fallback=SttSettings(
                backend="deepgram",
                base_url="ws://127.0.0.1:9/v1/listen",
                api_key=KEY,
                verify_at_start=False,
                timeout=1.0,
            ),
        )
    )
    stream = stt.open(SttHints())
    with pytest.raises(SttError):
        feed(stream, speech(QUESTION, tmp_path)[: STT_RATE // 10])
    stream.close()
    stt.close()


def test_tts_provider_error_is_spoken_by_the_fallback_at_the_providers_rate() -> None:
    fake = FakeSpeech([Reply(500, body=b'{"error": {"message": "The server had an error"}}')])
    try:
        tts = load_tts(
            TtsSettings(
                backend="openai",
                base_url=fake.url,
                api_key="sk-test",
                timeout=3.0,
                fallback=TtsSettings(backend="espeak-ng"),
            )
        )
        assert isinstance(tts, FallbackTtsBackend) and tts.sample_rate == 24000
        text = "It is sunny in Paris today."
        chunks = list(tts.synthesize(text))
        assert len(fake.requests) == 1, "the provider was asked first"
        # espeak-ng's per-word spans, in order, covering the text; audio at 24 kHz.
        words = [text[c.start : c.end].strip() for c in chunks if c.end > c.start]
        assert " ".join(words).rstrip(".") == text.rstrip(".")
        seconds = sum(c.pcm.size for c in chunks) / 24000
        assert 1.0 < seconds < 4.0
        tts.close()
    finally:
        fake.close()


def test_tts_without_failure_is_the_providers_audio() -> None:
    t = np.arange(12000) / 24000
    pcm = (3000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()
    fake = FakeSpeech([Reply(body=[pcm[:12000], pcm[12000:]])])
    try:
        tts = load_tts(
            TtsSettings(
                backend="openai",
                base_url=fake.url,
                api_key="sk-test",
                timeout=3.0,
                fallback=TtsSettings(backend="espeak-ng"),
            )
        )
        chunks = list(tts.synthesize("Hello there."))
        assert len(fake.requests) == 1
        assert sum(c.pcm.size for c in chunks) == len(pcm) // 2
        tts.close()
    finally:
        fake.close()


def test_tts_fallback_failing_too_raises() -> None:
    tts = FallbackTtsBackend(
        load_tts(TtsSettings(backend="openai", base_url="http://127.0.0.1:9/v1", api_key="k",
                             timeout=1.0)),
        load_tts(TtsSettings(backend="openai", base_url="http://127.0.0.1:9/v1", api_key="k",
                             timeout=1.0)),
    )  # fmt: skip
    with pytest.raises(TtsError):
        list(tts.synthesize("Hello."))
    tts.close()


def _voice_chain(faults: Faults, timeout: float = 5.0) -> FallbackTts:
    cfg = TtsSettings(voice="en-us", fallback_voice="en-gb", timeout=timeout)
    return FallbackTts(load_tts(cfg), cfg, ThreadPoolExecutor(1), faults)


async def _clause(tts: FallbackTts, text: str) -> tuple[list[TtsChunk], list[TtsFailure]]:
    failures: list[TtsFailure] = []
    chunks = [c async for c in tts.clause(text, failures.append)]
    return chunks, failures


def test_a_voice_that_fails_before_any_audio_is_replaced_by_the_fallback_voice() -> None:
    faults = Faults()
    faults.add(FaultRule(stage="tts", match="en-us", mode="fail", times=1))
    chunks, failures = asyncio.run(_clause(_voice_chain(faults), "Hello there."))
    assert [(c.start, c.end) for c in chunks] == [(0, 5), (6, 11)]  # word by word
    assert failures == [TtsFailure("en-us: injected fault", "fallback voice en-gb")]


def test_a_clause_no_voice_can_say_is_skipped_whole() -> None:
    faults = Faults()
    faults.add(FaultRule(stage="tts", mode="hang", delay=30))
    chunks, failures = asyncio.run(_clause(_voice_chain(faults, timeout=0.2), "Hello there."))
    assert chunks == []
    assert [f.step for f in failures] == ["fallback voice en-gb", "clause skipped"]
    assert failures[-1].unsaid == (0, len("Hello there."))
