#!/usr/bin/env python3
"""Answering-machine detection on a fixed set: accuracy and decision time.

The set is built here (espeak-ng, several voices and speeds, through G.711
u-law, half of it with line noise):

- **human**: a short greeting ("hello?", "hi, this is Sam", ...), then the
  silence of someone waiting for an answer;
- **machine**: voicemail greetings of 3-15 s put together from the usual
  parts (who, not available, leave a message, call back), half of them ending
  in a beep (400-1400 Hz, 0.3-1 s), then silence;
- **fax**: a fax machine's calling tone (CNG, 1100 Hz, 0.5 s on, 3 s off);
- **silence**: an open line with nobody talking.

Each sample is played in real time (20 ms frames) into the server's own
detection (`mediaserver.apps.amd.detect`) on a stand-in media session,
`--concurrency` at once in one event loop (calls a campaign screens at the same
time), with the real pipeline runtime (silero VAD
batched across calls, the configured recogniser for a short greeting's words).
Goals (issue 17): accuracy >= 95 %, human decision time p50 <= 2.5 s. One JSON
object on stdout. From the repository root::

    .venv/bin/python bench/amd.py              # 48 samples, ~25 s
    .venv/bin/python bench/amd.py --per-class 40 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from sip_cps import emit, git_commit  # noqa: E402

from mediaserver.apps.amd import detect  # noqa: E402
from mediaserver.call.runtime import PipelineRuntime  # noqa: E402
from mediaserver.codecs.g711 import ulaw_decode, ulaw_encode  # noqa: E402
from mediaserver.pipeline.settings import PipelineSettings  # noqa: E402
from mediaserver.pipeline.stt.base import SttHints  # noqa: E402
from tests.peers import read_wav_mono, speech_wav  # noqa: E402

RATE = 8000
FRAME = 160
VOICES = ("en-us", "en-us+f3", "en-gb-x-rp", "en-029", "en-us+m7", "en-gb-scotland+f2")
NAMES = ("Sam", "Maria", "John", "Priya", "Alex", "Chen", "Olivia", "Ahmed", "Laura", "Tom")

HUMAN = (
    "hello?",
    "hello",
    "hi, this is {name}",
    "{name} speaking",
    "yes, hello?",
    "hello, {name} here",
    "hi there",
    "yeah?",
    "hello, who's calling?",
    "good morning",
    "hi, {name}",
    "hello, {name} speaking",
)
WHO = (
    "Hi, you've reached {name}.",
    "Hello, this is {name}.",
    "Hey, it's {name}.",
    "You have reached the voicemail of {name}.",
    "The person you are calling is not available.",
    "Thank you for calling {name} and associates.",
)
AWAY = (
    "I'm not available to take your call right now.",
    "I can't come to the phone right now.",
    "Sorry I missed your call.",
    "I'm either on the other line or away from my desk.",
    "",
)
ASK = (
    "Please leave your name, number and a short message after the tone,"
    " and I'll get back to you as soon as I can.",
    "Leave a message and I'll call you back.",
    "Please leave a message after the beep.",
    "Please record your message. When you have finished recording, you may hang up.",
    "Our office hours are Monday to Friday, nine to five."
    " Please call back during those hours or leave a message.",
)
CLOSE = ("Thanks!", "Have a great day.", "Bye.", "")
#: The agent's recogniser hints (a reminder line's words), as the server passes them.
HINTS = SttHints(phrases=("yes", "no", "confirm", "cancel", "reschedule"))


@dataclass
class Sample:
    """One greeting of the set."""

    name: str
    truth: str
    text: str
    audio: np.ndarray
    noisy: bool
    beep: bool = False


def _speech(text: str, voice: str, speed_folder: Path) -> np.ndarray:
    pcm, rate = read_wav_mono(speech_wav(text, speed_folder, voice=voice))
    assert rate == RATE, rate
    return pcm.astype(np.int16)


def _g711(pcm: np.ndarray) -> np.ndarray:
    return ulaw_decode(ulaw_encode(pcm))


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), dtype=np.int16)


def _tone(freq: float, seconds: float, level: float = 6000.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # no clicks at the edges
    return (level * ramp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def build_set(folder: Path, per_class: int, seed: int) -> list[Sample]:
    """`per_class` humans and machines, plus 2 fax and 2 silent lines."""
    rng = random.Random(seed)
    samples: list[Sample] = []
    for i in range(per_class):
        voice, name = VOICES[i % len(VOICES)], rng.choice(NAMES)
        text = HUMAN[i % len(HUMAN)].format(name=name)
        pcm = _speech(text, voice, folder)
        audio = np.concatenate([_silence(rng.uniform(0.2, 0.8)), pcm, _silence(6.0)])
        samples.append(Sample(f"human{i}", "human", text, audio, noisy=i % 2 == 1))
    for i in range(per_class):
        voice, name = VOICES[(i + 3) % len(VOICES)], rng.choice(NAMES)
        parts = [rng.choice(WHO), rng.choice(AWAY), rng.choice(ASK), rng.choice(CLOSE)]
        text = " ".join(p for p in parts if p).format(name=name)
        pcm = _speech(text, voice, folder)
        beep = i % 2 == 0
        tail = [_silence(0.5), _tone(rng.choice((440, 850, 1000, 1400)), rng.uniform(0.3, 1.0))]
        audio = np.concatenate(
            [_silence(rng.uniform(0.2, 0.8)), pcm, *(tail if beep else []), _silence(4.0)]
        )
        samples.append(Sample(f"machine{i}", "machine", text, audio, noisy=i % 2 == 1, beep=beep))
    for i in range(2):
        cng = np.concatenate([_tone(1100, 0.5), _silence(3.0)] * 3)
        samples.append(Sample(f"fax{i}", "fax", "CNG 1100 Hz", cng, noisy=i == 1))
        samples.append(Sample(f"silence{i}", "silence", "", _silence(8.0), noisy=i == 1))
    np_rng = np.random.default_rng(seed)
    for sample in samples:
        audio = sample.audio.astype(np.float64)
        if sample.noisy:
            audio += np_rng.normal(0.0, 150.0, len(audio))  # line noise, about -47 dBFS
        sample.audio = _g711(np.clip(audio, -32768, 32767).astype(np.int16))
    return samples


class StandInMedia:
    """What `detect` uses of an RtpSession: the rate and the audio callback."""

    sample_rate = RATE

    def __init__(self) -> None:
        self.on_audio: Any = None


async def _play(sample: Sample, runtime: PipelineRuntime) -> dict[str, Any]:
    media = StandInMedia()
    loop = asyncio.get_running_loop()

    async def feed() -> None:
        start = loop.time()
        for k in range(0, len(sample.audio) - FRAME + 1, FRAME):
            await asyncio.sleep(max(0.0, start + k / RATE - loop.time()))
            if media.on_audio is not None:
                media.on_audio(sample.audio[k : k + FRAME], k / RATE, False)

    feeder = asyncio.ensure_future(feed())
    try:
        outcome = await detect(media, runtime, HINTS)  # type: ignore[arg-type]
    finally:
        feeder.cancel()
    result = outcome.result
    return {
        "name": sample.name,
        "truth": sample.truth,
        "verdict": result.verdict,
        "ok": result.verdict == sample.truth,
        "decision_s": result.at,
        "reason": result.reason,
        "speech_s": result.speech,
        "noisy": sample.noisy,
        "beep": sample.beep,
        "greeting_s": round(len(sample.audio) / RATE, 2),
        "text": sample.text,
    }


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    arr = np.asarray(values)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p95": round(float(np.percentile(arr, 95)), 3),
        "max": round(float(arr.max()), 3),
    }


async def run(
    samples: list[Sample], settings: PipelineSettings, concurrency: int
) -> list[dict[str, Any]]:
    """Every sample through `detect`, at most `concurrency` at once."""
    runtime = PipelineRuntime(settings)
    runtime.stt.prepare(HINTS)  # as the server does for its agents at start-up
    gate = asyncio.Semaphore(concurrency)

    async def one(sample: Sample) -> dict[str, Any]:
        async with gate:
            return await _play(sample, runtime)

    try:
        return list(await asyncio.gather(*(one(s) for s in samples)))
    finally:
        await runtime.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--per-class", type=int, default=22, help="humans and machines each")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--concurrency", type=int, default=10, help="calls being screened at once (10)"
    )
    parser.add_argument(
        "--stt", default="faster-whisper", help="pipeline.stt.backend (the default's)"
    )
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="amd_set_"))
    started = time.monotonic()
    samples = build_set(folder, args.per_class, args.seed)
    settings = PipelineSettings.model_validate({"stt": {"backend": args.stt, "pool_size": 1}})
    results = asyncio.run(run(samples, settings, args.concurrency))
    classes = sorted({r["truth"] for r in results})
    confusion = {
        truth: {
            v: sum(1 for r in results if r["truth"] == truth and r["verdict"] == v) for v in classes
        }
        for truth in classes
    }
    correct = sum(r["ok"] for r in results)
    report = {
        "benchmark": "amd",
        "command": shlex.join(["python", *sys.argv]),
        "commit": git_commit(),
        "samples": len(results),
        "accuracy": round(correct / len(results), 4),
        "goal_accuracy": 0.95,
        "confusion": confusion,
        "decision_s": {
            c: _stats([r["decision_s"] for r in results if r["truth"] == c]) for c in classes
        },
        "goal_human_decision_p50_s": 2.5,
        "errors": [r for r in results if not r["ok"]],
        "stt": args.stt,
        "concurrency": args.concurrency,
        "wall_s": round(time.monotonic() - started, 1),
    }
    emit(report, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
