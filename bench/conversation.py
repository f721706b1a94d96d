#!/usr/bin/env python3
"""Conversation evaluation: does the agent understand callers? Measured on real calls.

The evaluation set (``bench/conversation_set.yaml``, held out: never tune it to a
configuration) is a list of calls to two agents on one server: the support agent
of ``examples/support_agent.py`` (``check_order(order_id: str)``, "Order
{order_id}: shipped, ETA April 2nd") and a weather agent (``get_weather(city:
string, required)``, free text, no enum, "It is sunny in {city} today."), both
as ``agent`` routes with a ``response`` template. Each call has one request and
sometimes a follow-up ("and what about order twelve?", "what about London?")
in the same call; each request carries what is said (the reference
transcript), the tool a correct agent calls and its arguments. Callers are
espeak-ng voices (en-us, en, en+f3, en-us+m3, en-gb-scotland, ...) at 140-190
words per minute; numbers are said as digits ("five eight three"), as words
("five hundred eighty three", "forty two") and with "double"/"triple"; a third
of the calls have line noise (pink or white, some with mains hum and its
harmonics) under the whole call at 10-20 dB below the caller's speech, its
samples seeded by ``--seed``.

How: a fresh server (``python -m mediaserver run``, its own process, 127.0.0.1,
free SIP/RTP/admin ports, JSON logs, call records in a SQLite file in the work
folder; stopped by its PID at the end) with the pipeline chosen on the command
line (``--stt faster-whisper|pocketsphinx`` (default: the server's default,
faster-whisper), ``--stt-model``, ``--llm``; the
rest is the server's default: silero VAD, end-of-speech timeout 0.7 s,
espeak-ng). This process is the caller: per call a SIP UAC over UDP (the test
dialer's, ``mediaserver.dialer``, on the server's own SIP core; INVITE offering
PCMU, ACK, BYE) and one RTP
stream of 20 ms G.711 u-law frames sent on absolute deadlines for the whole call
(line noise, or digital silence, between utterances, as a phone does). It waits
for the greeting to end, says the request (an 8 kHz espeak-ng WAV trimmed to its
speech, so the send time of its last frame is the caller's *speech end*), waits
until the agent has answered and been quiet for 1 s, says the follow-up if any,
then hangs up. Calls run one at a time by default (``--concurrency``), so the
latencies are one call's.

Scoring, per request, from the server's call record (the ``events`` of the call
whose Call-ID the dialer used; a request owns the events from its speech onset
to the next request's onset):

- **WER**: the ``caller_final`` transcripts against the spoken text, both
  normalised (lowercase words, punctuation dropped, every number read as its
  digits with ``mediaserver.pipeline.llm.spoken``, so "583", "five eight three"
  and "five hundred eighty three" are the same word); corpus WER (errors / reference
  words) for clean and for noisy calls.
- **tool accuracy**: a ``tool_call`` to the expected tool with the expected
  arguments (same normalisation: numbers exact, case and punctuation ignored);
  ``tool_selected`` counts the right tool whatever its arguments.
- **numbers exact**: for requests with a number, the tool argument is exactly it;
  ``transcript_has_number``: the STT transcript already held it.
- **answered**: the assistant text of that turn as the caller heard it (the
  record's ``assistant_heard``: what left on the wire) contains the expected
  argument (the order number, the city) and the answer's key word ("shipped",
  "sunny").
- **latency**: the record's per-turn split (voice-to-voice from the caller's
  speech end to the first reply frame on the wire, endpointing, STT finalise,
  LLM first token, TTS first audio, overhead, first frame) of the first reply
  after the request's speech end, and the caller-measured voice-to-voice (send
  time of the last speech frame -> arrival of the first agent packet after it);
  p50/p95.

One JSON object on stdout (summary and a compact line per request), progress on
stderr; ``--details PATH`` also writes every request's full result and each call's
record events. Exit 0 whatever the scores (it is a measurement); non-zero only
when the harness fails (the server does not start, no call gets through). From
the repository root::

    .venv/bin/python bench/conversation.py --limit 6          # a quick look, ~1 min
    .venv/bin/python bench/conversation.py --details out.json # the whole set, ~13 min
    .venv/bin/python bench/conversation.py --stt pocketsphinx # the low-cost recogniser
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import wave
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from sip_cps import git_commit  # noqa: E402
from turn_latency import machine, stats  # noqa: E402

from mediaserver.codecs.g711 import ulaw_encode  # noqa: E402
from mediaserver.dialer import _agent_quiet, _Dialer  # noqa: E402
from mediaserver.media.rtp import RtpPacket  # noqa: E402
from mediaserver.pipeline.llm.spoken import find_numbers, words_of  # noqa: E402
from tests.peers import (  # noqa: E402
    LOCALHOST,
    ServerNotReady,
    ServerProcess,
    free_port,
    free_rtp_range,
    weather_route,
    which,
)

SET_PATH = BENCH_DIR / "conversation_set.yaml"
DEFAULT_WHISPER = REPO_ROOT / "models" / "faster-whisper-base"
RATE = 8000
FRAME = 0.020
SAMPLES = 160
#: The agent's answer is over after this long without a packet from it.
ANSWER_QUIET = 1.0
#: Longest wait for the greeting, and for an answer to start and end.
GREETING_LIMIT = 10.0
ANSWER_LIMIT = 14.0
#: The server's per-turn split, as the call record's ``turn_latency`` events name it.
SPLIT = (
    "voice_to_voice_ms",
    "endpointing_ms",
    "stt_finalise_ms",
    "llm_first_token_ms",
    "tts_first_audio_ms",
    "overhead_ms",
    "first_frame_ms",
)
NOISE_KINDS = ("pink", "white", "pink+hum", "white+hum")


def log(message: str) -> None:
    """Progress on stderr; stdout carries the JSON."""
    print(f"[conversation] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the set


@dataclass(frozen=True)
class Request:
    """One thing a caller asks, and what a correct agent does about it."""

    say: str
    tool: str
    args: dict[str, str]


@dataclass(frozen=True)
class Noise:
    """Line noise under the whole call, ``snr_db`` below the caller's speech."""

    snr_db: float
    kind: str


@dataclass(frozen=True)
class Item:
    """One call of the evaluation set."""

    id: str
    agent: str
    voice: str
    wpm: int
    turns: tuple[Request, ...]
    noise: Noise | None = None


@dataclass(frozen=True)
class AgentSpec:
    """An agent under test: its route, its tool and what its answer must contain."""

    route: str
    tool: str
    answer_word: str


AGENTS: dict[str, AgentSpec] = {
    "support": AgentSpec("support", "check_order", "shipped"),
    "weather": AgentSpec("weather", "get_weather", "sunny"),
}


def load_set(path: Path = SET_PATH) -> list[Item]:
    """Read and check the evaluation set.

    Raises:
        ValueError: an entry is malformed (the message names it).
    """
    data = yaml.safe_load(path.read_text())
    items: list[Item] = []
    seen: set[str] = set()
    for n, raw in enumerate(data.get("calls") or []):
        where = f"{path.name}: call #{n + 1} ({raw.get('id', '?')})"
        try:
            noise = raw.get("noise")
            item = Item(
                id=str(raw["id"]),
                agent=str(raw["agent"]),
                voice=str(raw["voice"]),
                wpm=int(raw["wpm"]),
                noise=Noise(float(noise["snr_db"]), str(noise["kind"])) if noise else None,
                turns=tuple(
                    Request(
                        str(t["say"]),
                        str(t["tool"]),
                        {str(k): str(v) for k, v in (t["args"] or {}).items()},
                    )
                    for t in raw["turns"]
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc!r}") from None
        if item.id in seen:
            raise ValueError(f"{where}: duplicate id")
        seen.add(item.id)
        if item.agent not in AGENTS or not item.turns:
            raise ValueError(f"{where}: unknown agent or no turns")
        if item.noise is not None and item.noise.kind not in NOISE_KINDS:
            raise ValueError(f"{where}: noise kind must be one of {NOISE_KINDS}")
        items.append(item)
    return items


def select(items: list[Item], only: str | None, limit: int | None, seed: int) -> list[Item]:
    """The calls to run: one agent's with ``only``; ``limit`` of them, drawn with ``seed``
    alternately from each agent (so a short run still sees both), in set order."""
    pool = [i for i in items if only is None or i.agent == only]
    if limit is None or limit >= len(pool):
        return pool
    rng = random.Random(seed)
    by_agent = {
        a: rng.sample(g, len(g)) for a in AGENTS if (g := [i for i in pool if i.agent == a])
    }
    chosen: list[Item] = []
    while len(chosen) < limit:
        for group in by_agent.values():
            if group and len(chosen) < limit:
                chosen.append(group.pop())
    order = {item.id: n for n, item in enumerate(pool)}
    return sorted(chosen, key=lambda i: order[i.id])


# --------------------------------------------------------------------------- scoring


#: Contractions said either way ("what's" / "what is"), spelled out before comparing.
CONTRACTIONS = {
    "what's": "what is", "where's": "where is", "how's": "how is", "it's": "it is",
    "that's": "that is", "there's": "there is", "i'm": "i am", "i'd": "i would",
    "i've": "i have", "i'll": "i will", "isn't": "is not", "hasn't": "has not",
    "haven't": "have not", "can't": "cannot", "don't": "do not", "didn't": "did not",
    "won't": "will not", "let's": "let us",
}  # fmt: skip
_SCALES = {"thousand", "million", "billion"}


def normalise(text: str) -> list[str]:
    """Words for comparison: lowercase, no punctuation, contractions spelled out, every
    number as its digits.

    "Order #583." -> ["order", "583"]; "five eight three", "five hundred eighty
    three" -> ["583"]; "double five one" -> ["551"]; "forty-two" -> ["42"];
    "two thousand and nineteen" -> ["2019"].
    """
    words = [w for word in words_of(text) for w in CONTRACTIONS.get(word, word).split()]
    # "two thousand and nineteen": spoken.py takes no "and" right after a scale word.
    words = [
        w
        for n, w in enumerate(words)
        if not (
            w == "and"
            and 0 < n < len(words) - 1
            and words[n - 1] in _SCALES
            and find_numbers(words[n + 1 : n + 2])
        )
    ]
    out: list[str] = []
    at = 0
    for start, end, value in find_numbers(words):
        out.extend(words[at:start])
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        out.append(str(value))
        at = end
    out.extend(words[at:])
    return out


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Word-level Levenshtein distance (substitutions, deletions, insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word errors, reference words) of a transcript, after `normalise` on both sides."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    return edit_distance(ref, hyp), len(ref)


def same_value(expected: str, got: Any) -> bool:
    """An argument as expected: numbers exact, case, spacing and punctuation ignored."""
    return got is not None and normalise(expected) == normalise(str(got))


def contains(text: str, phrase: str) -> bool:
    """`phrase` appears in `text` as whole words (after `normalise` on both)."""
    hay, needle = normalise(text), normalise(phrase)
    if not needle:
        return False
    return any(hay[k : k + len(needle)] == needle for k in range(len(hay) - len(needle) + 1))


def has_number(request: Request) -> str | None:
    """The expected argument that is a number, as digits (None if none is)."""
    for value in request.args.values():
        words = normalise(value)
        if len(words) == 1 and words[0].isdigit():
            return words[0]
    return None


def rate(hits: int, n: int) -> dict[str, Any]:
    """hits / n as a fraction, with its counts."""
    return {"n": n, "hits": hits, "rate": round(hits / n, 4) if n else None}


# --------------------------------------------------------------------------- audio


def espeak_wav(text: str, voice: str, wpm: int, folder: Path) -> Path:
    """``text`` said by espeak-ng ``voice`` at ``wpm``, as an 8 kHz mono 16-bit WAV
    (espeak-ng + sox, cached in ``folder`` by content)."""
    espeak, sox = which("espeak-ng"), which("sox")
    if espeak is None or sox is None:
        raise FileNotFoundError("espeak-ng and sox are needed to make the callers' speech")
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(f"{voice}|{wpm}|{text}".encode()).hexdigest()[:12]
    out = folder / f"say_{key}_8k.wav"
    if out.exists():
        return out
    raw = folder / f"say_{key}_raw.wav"
    subprocess.run(
        [espeak, "-v", voice, "-s", str(wpm), "-w", str(raw), text], check=True, timeout=60
    )
    tmp = folder / f"say_{key}_tmp.wav"
    subprocess.run(
        [sox, str(raw), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(tmp)],
        check=True,
        timeout=60,
    )
    tmp.replace(out)
    raw.unlink(missing_ok=True)
    return out


def speech_of(path: Path) -> npt.NDArray[np.int16]:
    """The WAV's samples from the first to the last 20 ms frame with speech in it
    (RMS above 1% of the loudest frame's and above 30), whole frames."""
    with wave.open(str(path), "rb") as wav:
        if wav.getframerate() != RATE or wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(f"{path}: need 8 kHz 16-bit mono")
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
    n = len(pcm) // SAMPLES
    frames = pcm[: n * SAMPLES].reshape(n, SAMPLES)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > max(30.0, 0.01 * float(rms.max(initial=0.0))))
    if loud.size == 0:
        raise ValueError(f"{path}: no speech")
    return frames[int(loud[0]) : int(loud[-1]) + 1].reshape(-1)


def speech_rms(pcm: npt.NDArray[np.int16]) -> float:
    """RMS over the frames that carry speech (louder than 10% of the loudest)."""
    frames = pcm[: len(pcm) // SAMPLES * SAMPLES].reshape(-1, SAMPLES).astype(np.float64)
    rms = np.sqrt((frames**2).mean(axis=1))
    active = rms[rms > 0.1 * float(rms.max(initial=0.0))]
    return float(np.sqrt((active**2).mean())) if active.size else 0.0


def line_noise(
    kind: str, level_rms: float, seconds: float, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """``seconds`` of line noise at RMS ``level_rms``: pink (1/f power) or white noise,
    and for "+hum" mains hum (50 Hz and its odd harmonics) making up a third of it."""
    n = int(seconds * RATE)
    white = rng.standard_normal(n)
    if kind.startswith("pink"):
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n, 1 / RATE)
        spectrum[1:] /= np.sqrt(freqs[1:])
        spectrum[0] = 0
        base = np.fft.irfft(spectrum, n)
    else:
        base = white
    base /= np.sqrt((base**2).mean())
    if kind.endswith("+hum"):
        t = np.arange(n) / RATE
        phase = rng.uniform(0, 2 * np.pi, 3)
        hum = sum(
            a * np.sin(2 * np.pi * f * t + p)
            for a, f, p in zip((1.0, 0.5, 0.3), (50.0, 150.0, 250.0), phase)
        )
        hum /= np.sqrt((hum**2).mean())
        base = np.sqrt(2 / 3) * base + np.sqrt(1 / 3) * hum
    return (base * level_rms).astype(np.float32)


# --------------------------------------------------------------------------- the caller


class Line:
    """The caller's RTP stream: a 20 ms PCMU frame every 20 ms for the whole call,
    speech over the line noise when it talks, the noise (or silence) otherwise."""

    def __init__(self, dialer: _Dialer, noise: npt.NDArray[np.float32] | None) -> None:
        self.dialer = dialer
        self.noise = noise
        self.noise_at = 0
        self.queue: deque[npt.NDArray[np.int16]] = deque()
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.ssrc = random.getrandbits(32)
        #: Send times (monotonic, wall) of the current utterance's first and last frames.
        self.first_sent: tuple[float, float] | None = None
        self.last_sent: tuple[float, float] | None = None

    def say(self, pcm: npt.NDArray[np.int16]) -> None:
        """Queue an utterance (whole frames)."""
        self.first_sent = self.last_sent = None
        pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % SAMPLES, dtype=np.int16)])
        self.queue.extend(pcm.reshape(-1, SAMPLES))

    @property
    def talking(self) -> bool:
        """Frames of an utterance are still to be sent."""
        return bool(self.queue)

    def _frame(self) -> tuple[npt.NDArray[np.int16], bool]:
        speech = bool(self.queue)
        frame = self.queue.popleft() if speech else np.zeros(SAMPLES, dtype=np.int16)
        if self.noise is not None:
            if self.noise_at + SAMPLES > len(self.noise):
                self.noise_at = 0
            mixed = frame + self.noise[self.noise_at : self.noise_at + SAMPLES]
            self.noise_at += SAMPLES
            frame = np.clip(mixed, -32768, 32767).astype(np.int16)
        return frame, speech

    async def run(self) -> None:
        """Send frames on absolute 20 ms deadlines until cancelled."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while True:
            n += 1
            await asyncio.sleep(max(0.0, start + n * FRAME - loop.time()))
            target = self.dialer.media_target
            if target is None:
                continue
            frame, speech = self._frame()
            payload = ulaw_encode(frame).tobytes()
            packet = RtpPacket(self.dialer.audio_pt, self.seq, self.ts, self.ssrc, payload)
            with contextlib.suppress(OSError):
                self.dialer.rtp.sendto(packet.serialise(), target)
            if speech:
                sent = (time.monotonic(), time.time())
                if self.first_sent is None:
                    self.first_sent = sent
                if not self.queue:
                    self.last_sent = sent
            self.seq = (self.seq + 1) & 0xFFFF
            self.ts = (self.ts + SAMPLES) & 0xFFFFFFFF


@dataclass
class SaidTurn:
    """When the caller said one request (monotonic and wall clocks) and heard back."""

    onset_wall: float | None = None
    end_wall: float | None = None
    caller_v2v_ms: float | None = None
    answer_s: float | None = None


@dataclass
class CallResult:
    """One call of the set as the caller saw it, and its record."""

    item: Item
    call_id: str = ""
    established: bool = False
    error: str | None = None
    turns: list[SaidTurn] = field(default_factory=list)
    ended_wall: float = 0.0
    wall_s: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    ended_by: str | None = None


async def place(
    item: Item,
    uri: str,
    audio: list[npt.NDArray[np.int16]],
    noise: npt.NDArray[np.float32] | None,
    timeout: float,
) -> CallResult:
    """One call: greeting, each request and its answer, BYE; bounded by ``timeout``."""
    result = CallResult(item)
    loop = asyncio.get_running_loop()
    dialer = _Dialer(uri, LOCALHOST)
    await dialer.start()
    loop.add_reader(dialer.rtp.fileno(), dialer.read_rtp)
    line = Line(dialer, noise)
    sending = loop.create_task(line.run())
    started = time.monotonic()
    deadline = loop.time() + timeout

    def budget(limit: float) -> float:
        return max(0.0, min(limit, deadline - loop.time()))

    try:
        answered = await dialer.invite(loop.time() + budget(16.0))
        if dialer.leg is not None:
            result.call_id = dialer.leg.invite.call_id
        if not answered:
            status = dialer.leg.final_status if dialer.leg is not None else None
            result.error = f"{status} to INVITE" if status else "no answer"
            return result
        result.established = True
        await _agent_quiet(dialer, time.monotonic(), 0.8, budget(GREETING_LIMIT))
        for pcm in audio:
            if dialer.remote_bye.is_set() or budget(1) <= 0:
                break
            said = SaidTurn()
            result.turns.append(said)
            line.say(pcm)
            end_by = loop.time() + len(pcm) / RATE + 2.0
            while line.talking and loop.time() < end_by and budget(1) > 0:
                await asyncio.sleep(FRAME)
            await asyncio.sleep(2 * FRAME)  # the last frame's send time is set
            if line.first_sent is None or line.last_sent is None:
                result.error = "could not send the utterance in time"
                break
            said.onset_wall, said.end_wall = line.first_sent[1], line.last_sent[1]
            end_mono = line.last_sent[0]
            await _agent_quiet(dialer, end_mono, ANSWER_QUIET, budget(ANSWER_LIMIT))
            after = [t for t, _ in dialer.received if t > end_mono]
            if after:
                said.caller_v2v_ms = round((after[0] - end_mono) * 1000, 1)
                said.answer_s = round(after[-1] - after[0] + FRAME, 2)
        result.ended_by = "server" if dialer.remote_bye.is_set() else "caller"
        if not dialer.remote_bye.is_set():
            await dialer.bye()
        return result
    finally:
        result.ended_wall = time.time()
        result.wall_s = round(time.monotonic() - started, 2)
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        loop.remove_reader(dialer.rtp.fileno())
        dialer.rtp.close()
        await dialer.close()


# --------------------------------------------------------------------------- the record


def read_record(db: Path, call_id: str, wait: float = 5.0) -> list[dict[str, Any]]:
    """The call's record events (in order), once its ``final`` event is in (or ``wait``
    seconds have passed: then whatever is there)."""
    deadline = time.monotonic() + wait
    events: list[dict[str, Any]] = []
    while True:
        if db.exists():
            try:
                with contextlib.closing(
                    sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
                ) as conn:
                    rows = conn.execute(
                        "SELECT e.seq, e.t, e.kind, e.data FROM events e JOIN calls c"
                        " ON e.call = c.id WHERE c.call_id = ? ORDER BY e.seq",
                        (call_id,),
                    ).fetchall()
                events = [
                    {"seq": seq, "t": t, "kind": kind, "data": json.loads(data)}
                    for seq, t, kind, data in rows
                ]
            except sqlite3.Error as exc:
                log(f"reading the record of {call_id}: {exc}")
        if any(e["kind"] == "final" for e in events) or time.monotonic() >= deadline:
            return events
        time.sleep(0.1)


def score_call(call: CallResult) -> list[dict[str, Any]]:
    """Each request of the call scored against its slice of the record."""
    out: list[dict[str, Any]] = []
    events = call.events
    agent = AGENTS[call.item.agent]
    turns_by_id = {e["data"].get("turn"): e["data"] for e in events if e["kind"] == "turn"}
    for k, request in enumerate(call.item.turns):
        said = call.turns[k] if k < len(call.turns) else None
        row: dict[str, Any] = {
            "call": call.item.id,
            "turn": k + 1,
            "agent": call.item.agent,
            "voice": call.item.voice,
            "wpm": call.item.wpm,
            "noise": None
            if call.item.noise is None
            else {"snr_db": call.item.noise.snr_db, "kind": call.item.noise.kind},
            "follow_up": k > 0,
            "said": request.say,
            "expected_tool": request.tool,
            "expected_args": request.args,
            "number": has_number(request),
        }
        out.append(row)
        if said is None or said.onset_wall is None or said.end_wall is None:
            row.update(spoken=False, error=call.error or "not said")
            continue
        start = said.onset_wall
        nxt = call.turns[k + 1].onset_wall if k + 1 < len(call.turns) else None
        stop = nxt if nxt is not None else float("inf")
        window = [e for e in events if start <= e["t"] < stop]
        finals = [e["data"] for e in window if e["kind"] == "caller_final"]
        transcript = " ".join(str(f.get("text") or "") for f in finals).strip()
        errors, ref_words = wer(request.say, transcript)
        calls = [
            {"name": e["data"].get("name"), "arguments": e["data"].get("arguments") or {}}
            for e in window
            if e["kind"] == "tool_call"
        ]
        right_tool = [c for c in calls if c["name"] == request.tool]
        tool_ok = any(
            all(same_value(v, c["arguments"].get(a)) for a, v in request.args.items())
            and set(c["arguments"]) <= set(request.args)
            for c in right_tool
        )
        number = row["number"]
        number_exact = None
        if number is not None:
            number_exact = any(
                any(same_value(number, v) for v in c["arguments"].values()) for c in right_tool
            )
        heard_parts = [
            str(turns_by_id[f.get("turn")].get("assistant_heard") or "")
            for f in finals
            if f.get("turn") in turns_by_id
        ]
        heard = " ".join(p for p in heard_parts if p).strip()
        answered = bool(heard) and all(contains(heard, v) for v in request.args.values())
        answered = answered and contains(heard, agent.answer_word)
        latency = next(
            (
                {k2: e["data"].get(k2) for k2 in SPLIT if k2 in e["data"]}
                for e in window
                if e["kind"] == "turn_latency" and e["t"] >= said.end_wall
            ),
            None,
        )
        row.update(
            spoken=True,
            transcript=transcript,
            stt_finals=len(finals),
            wer=round(errors / ref_words, 4) if ref_words else None,
            word_errors=errors,
            ref_words=ref_words,
            tool_calls=calls,
            tool_selected=bool(right_tool),
            tool_ok=tool_ok,
            number_exact=number_exact,
            transcript_has_number=None if number is None else number in normalise(transcript),
            heard=heard,
            answered=answered,
            latency_ms=latency,
            caller_v2v_ms=said.caller_v2v_ms,
            not_understood=sum(1 for e in window if e["kind"] == "not_understood"),
            barge_ins=sum(1 for e in window if e["kind"] == "barge_in"),
            errors=[e["data"] for e in window if e["kind"] == "error"],
        )
    return out


def early_turns(call: CallResult) -> int:
    """Caller turns (``caller_final``) the server heard before the first request: line
    noise taken for speech during the greeting."""
    onset = call.turns[0].onset_wall if call.turns else None
    return sum(
        1 for e in call.events if e["kind"] == "caller_final" and (onset is None or e["t"] < onset)
    )


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy, WER and latency over the scored requests."""
    spoken = [r for r in rows if r.get("spoken")]

    def acc(key: str, subset: list[dict[str, Any]]) -> dict[str, Any]:
        vals = [r[key] for r in subset if r.get(key) is not None]
        return rate(sum(1 for v in vals if v), len(vals))

    def breakdown(key: str) -> dict[str, Any]:
        # The rate over every request, then the rate of each group.
        return {
            **acc(key, spoken),
            **{name: acc(key, g)["rate"] for name, g in groups.items() if name != "all"},
        }

    def corpus_wer(subset: list[dict[str, Any]]) -> dict[str, Any]:
        errors = sum(r["word_errors"] for r in subset)
        words = sum(r["ref_words"] for r in subset)
        return {
            "wer": round(errors / words, 4) if words else None,
            "word_errors": errors,
            "ref_words": words,
            "requests": len(subset),
        }

    groups: dict[str, list[dict[str, Any]]] = {
        "all": spoken,
        "support": [r for r in spoken if r["agent"] == "support"],
        "weather": [r for r in spoken if r["agent"] == "weather"],
        "clean": [r for r in spoken if r["noise"] is None],
        "noisy": [r for r in spoken if r["noise"] is not None],
        "first_turn": [r for r in spoken if not r["follow_up"]],
        "follow_up": [r for r in spoken if r["follow_up"]],
    }
    latencies = [r["latency_ms"] for r in spoken if r.get("latency_ms")]
    latency = {
        key.removesuffix("_ms"): {
            k: v
            for k, v in stats([float(x[key]) for x in latencies if x.get(key) is not None]).items()
            if k in ("n", "p50", "p95")
        }
        for key in SPLIT
    }
    caller = stats([float(r["caller_v2v_ms"]) for r in spoken if r.get("caller_v2v_ms")])
    latency["caller_voice_to_voice"] = {k: caller[k] for k in ("n", "p50", "p95")}
    return {
        "tool_accuracy": breakdown("tool_ok"),
        "tool_selected": breakdown("tool_selected"),
        "numbers_exact": acc("number_exact", spoken),
        "transcript_has_number": acc("transcript_has_number", spoken),
        "wer_clean": corpus_wer(groups["clean"]),
        "wer_noisy": corpus_wer(groups["noisy"]),
        "wer_by_agent": {a: corpus_wer(groups[a])["wer"] for a in ("support", "weather")},
        "answered": breakdown("answered"),
        "latency_ms": latency,
    }


# --------------------------------------------------------------------------- the server


def server_config(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One UDP listener on a free port, both agents, the pipeline from the command line."""
    rtp = free_rtp_range(2 * args.concurrency + 20)
    stt: dict[str, Any] = {"backend": args.stt, "pool_size": max(2, args.concurrency)}
    if args.stt == "faster-whisper":
        stt["model"] = str(Path(args.stt_model).resolve())
    llm: dict[str, Any] = {"backend": args.llm}
    if args.llm == "openai":
        llm.update(base_url=args.llm_base_url, model=args.llm_model)
        if args.llm_api_key_env:
            llm["api_key"] = f"env:{args.llm_api_key_env}"
    pipeline: dict[str, Any] = {"stt": stt, "llm": llm}
    if args.eos is not None:
        pipeline["turn"] = {"end_of_speech_timeout": args.eos}
    weather = weather_route()
    weather["agent"]["tools"][0]["parameters"] = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    support = {
        "app": "agent",
        "duration": 0,
        "agent": {
            # examples/support_agent.py, as a route.
            "name": "Support Agent",
            "prompt": "You are a customer support agent. Greet the caller and resolve their issue.",
            "tools": [
                {
                    "name": "check_order",
                    "description": "Check the status of a customer order.",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "order_id": {
                                "type": "string",
                                "description": "The order ID to look up",
                            }
                        },
                        "required": ["order_id"],
                    },
                    "response": "Order {order_id}: shipped, ETA April 2nd",
                }
            ],
        },
    }
    return {
        "sip": {"listen": [{"transport": "udp", "host": LOCALHOST, "port": free_port()}]},
        "media": {"address": LOCALHOST, "port_min": rtp[0], "port_max": rtp[1]},
        "admin": {"host": LOCALHOST, "port": 0},
        "records": {"path": str(workdir / "records" / "calls.db")},
        "logging": {"level": "info", "format": "json"},
        "shutdown": {"drain_timeout": 2},
        "pipeline": pipeline,
        "routes": {"support": support, "weather": weather},
    }


# --------------------------------------------------------------------------- the run


def prepare_audio(
    items: list[Item], folder: Path, seed: int
) -> dict[str, tuple[list[npt.NDArray[np.int16]], npt.NDArray[np.float32] | None]]:
    """Per call: its utterances (trimmed 8 kHz PCM) and its line noise (or None)."""
    out: dict[str, tuple[list[npt.NDArray[np.int16]], npt.NDArray[np.float32] | None]] = {}
    for item in items:
        audio = [speech_of(espeak_wav(t.say, item.voice, item.wpm, folder)) for t in item.turns]
        noise = None
        if item.noise is not None:
            level = float(np.mean([speech_rms(a) for a in audio])) / 10 ** (item.noise.snr_db / 20)
            digest = hashlib.sha1(f"{seed}|{item.id}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
            noise = line_noise(item.noise.kind, level, 60.0, rng)
        out[item.id] = (audio, noise)
    return out


async def run_calls(
    items: list[Item],
    audio: dict[str, tuple[list[npt.NDArray[np.int16]], npt.NDArray[np.float32] | None]],
    server: ServerProcess,
    db: Path,
    args: argparse.Namespace,
) -> tuple[list[CallResult], list[str]]:
    """Every call, ``args.concurrency`` at a time, until ``args.time_limit``."""
    gate = asyncio.Semaphore(args.concurrency)
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + args.time_limit
    skipped: list[str] = []
    done = 0

    async def one(item: Item) -> CallResult | None:
        nonlocal done
        async with gate:
            if loop.time() >= stop_at or not server.running():
                skipped.append(item.id)
                return None
            pcm, noise = audio[item.id]
            timeout = 25.0 + sum(len(p) / RATE + ANSWER_LIMIT for p in pcm)
            uri = server.uri(AGENTS[item.agent].route)
            result = await place(item, uri, pcm, noise, timeout)
            result.events = await asyncio.to_thread(read_record, db, result.call_id)
            done += 1
            rows = score_call(result)
            brief = "; ".join(
                f"'{r.get('transcript', '')}' -> "
                + (
                    ", ".join(f"{c['name']}{c['arguments']}" for c in r.get("tool_calls", []))
                    or "no tool"
                )
                + (" OK" if r.get("tool_ok") else "")
                for r in rows
            )
            log(f"{done}/{len(items)} {item.id} ({result.wall_s:.1f} s): {brief}")
            if result.error:
                log(f"  {item.id}: {result.error}")
            return result

    results = await asyncio.gather(*(one(item) for item in items))
    return [r for r in results if r is not None], skipped


def load_details(path: Path, set_path: Path) -> tuple[list[Item], list[CallResult], dict[str, Any]]:
    """The items, calls (with their records) and config of an earlier run's --details file."""
    data = json.loads(path.read_text())
    by_id = {item.id: item for item in load_set(set_path)}
    items: list[Item] = []
    calls: list[CallResult] = []
    for raw in data["calls"]:
        if raw["id"] not in by_id:
            raise ValueError(f"{path}: call {raw['id']} is not in {set_path.name}")
        call = CallResult(
            by_id[raw["id"]],
            call_id=raw["call_id"],
            established=raw["established"],
            error=raw.get("error"),
            turns=[SaidTurn(**t) for t in raw.get("turns", [])],
            wall_s=raw.get("wall_s", 0.0),
            events=raw["events"],
            ended_by=raw.get("ended_by"),
        )
        items.append(call.item)
        calls.append(call)
    skipped = data["summary"]["counts"].get("calls_skipped", [])
    items.extend(by_id[i] for i in skipped if i in by_id)
    config = {**data["summary"]["config"], "rescored_from": str(path)}
    return items, calls, config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--stt", choices=("pocketsphinx", "faster-whisper"), default="faster-whisper"
    )
    parser.add_argument(
        "--stt-model",
        default=str(DEFAULT_WHISPER),
        help="faster-whisper model folder (models/faster-whisper-base)",
    )
    parser.add_argument("--llm", choices=("scripted", "openai"), default="scripted")
    parser.add_argument("--llm-base-url", default="http://127.0.0.1:8000/v1", help="--llm openai")
    parser.add_argument("--llm-model", default="gpt-4o-mini", help="--llm openai")
    parser.add_argument("--llm-api-key-env", help="--llm openai: the API key's variable name")
    parser.add_argument(
        "--eos", type=float, help="pipeline.turn.end_of_speech_timeout s (server default)"
    )
    parser.add_argument("--set", default=str(SET_PATH), help="the evaluation set (YAML)")
    parser.add_argument("--only", choices=tuple(AGENTS), help="one agent's calls")
    parser.add_argument("--limit", type=int, help="at most N calls (drawn with --seed)")
    parser.add_argument("--seed", type=int, default=1, help="line noise and --limit draw (1)")
    parser.add_argument("--concurrency", type=int, default=1, help="calls at a time (1)")
    parser.add_argument(
        "--time-limit", type=float, default=1200.0, help="stop placing calls after s (1200)"
    )
    parser.add_argument("--details", help="write every request's result and record here")
    parser.add_argument(
        "--rescore", help="place no calls: score the calls of this --details file again"
    )
    parser.add_argument("--workdir", help="keep the server log, records and WAVs here")
    parser.add_argument("--python", default=sys.executable, help="runs the server")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if not 1 <= args.concurrency <= 4:
        parser.error("--concurrency 1..4 (the machine has 2 cores)")
    if args.stt == "faster-whisper" and not Path(args.stt_model).is_dir():
        parser.error(f"--stt-model: no model folder at {args.stt_model}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Start the server, place the calls, score them, print the report."""
    args = parse_args(argv)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    workdir = (
        Path(args.workdir).resolve()
        if args.workdir
        else Path(tempfile.mkdtemp(prefix="conversation_"))
    )
    workdir.mkdir(parents=True, exist_ok=True)
    server: ServerProcess | None = None
    calls: list[CallResult] = []
    skipped: list[str] = []
    error: str | None = None
    items: list[Item] = []

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.monotonic()
    config_note: dict[str, Any] | None = None
    try:
        if args.rescore:
            # Score the calls of an earlier run again (e.g. after a scoring change).
            items, calls, config_note = load_details(Path(args.rescore), Path(args.set))
            placed = {c.item.id for c in calls}
            skipped = [i.id for i in items if i.id not in placed]
        else:
            items = select(load_set(Path(args.set)), args.only, args.limit, args.seed)
            log(f"{len(items)} calls, {sum(len(i.turns) for i in items)} requests")
            audio = prepare_audio(items, workdir / "wavs", args.seed)
            config = server_config(args, workdir)
            server = ServerProcess(
                config, workdir / "server", command=[args.python, "-m", "mediaserver", "run"]
            )
            server.start()
            server.wait_ready(timeout=120)
            log(f"server pid {server.pid} ready in {time.monotonic() - t0:.1f} s")
            db = Path(config["records"]["path"])
            calls, skipped = asyncio.run(run_calls(items, audio, server, db, args))
            if skipped:
                log(f"time limit or server exit: {len(skipped)} calls not placed")
            if not any(c.established for c in calls):
                error = "no call was answered"
            elif not server.running():
                error = "the server exited during the run"
    except KeyboardInterrupt as exc:
        error = f"interrupted ({exc})"
    except (ServerNotReady, OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        log(error)
    finally:
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop(grace=10.0)
    rows = [row for call in calls for row in score_call(call)]
    whisper = args.stt == "faster-whisper"
    report: dict[str, Any] = {
        "benchmark": "conversation",
        "config": config_note
        or {
            "stt": args.stt,
            "stt_model": str(Path(args.stt_model).resolve()) if whisper else None,
            "llm": args.llm,
            "llm_model": args.llm_model if args.llm == "openai" else None,
            "tts": "espeak-ng (server default)",
            "vad": "silero (server default)",
            "end_of_speech_timeout_s": args.eos if args.eos is not None else "server default",
            "concurrency": args.concurrency,
            "seed": args.seed,
            "set": os.path.relpath(Path(args.set).resolve(), REPO_ROOT),
            "only": args.only,
            "limit": args.limit,
        },
        "counts": {
            "calls": len(items),
            "calls_placed": len(calls),
            "calls_answered": sum(1 for c in calls if c.established),
            "calls_failed": sorted(c.item.id for c in calls if c.error),
            "calls_skipped": skipped,
            "requests": sum(len(i.turns) for i in items),
            "requests_said": sum(1 for r in rows if r.get("spoken")),
            "support_requests": sum(1 for r in rows if r["agent"] == "support"),
            "weather_requests": sum(1 for r in rows if r["agent"] == "weather"),
            "noisy_requests": sum(1 for r in rows if r["noise"] is not None),
            "follow_ups": sum(1 for r in rows if r["follow_up"]),
            "with_number": sum(1 for r in rows if r["number"] is not None),
            "not_understood": sum(r.get("not_understood", 0) for r in rows),
            "barge_ins": sum(r.get("barge_ins", 0) for r in rows),
            "record_errors": sum(len(r.get("errors", [])) for r in rows),
            "caller_turns_before_first_request": sum(early_turns(c) for c in calls),
        },
        **summarise(rows),
        "items": [
            {
                "id": f"{r['call']}.{r['turn']}",
                "noisy": r["noise"] is not None,
                "said": r["said"],
                "transcript": r.get("transcript"),
                "wer": r.get("wer"),
                "tool_calls": r.get("tool_calls"),
                "tool_ok": r.get("tool_ok"),
                "number_exact": r.get("number_exact"),
                "heard": r.get("heard"),
                "answered": r.get("answered"),
                "v2v_ms": (r.get("latency_ms") or {}).get("voice_to_voice_ms"),
            }
            for r in rows
        ],
        "command": shlex.join(["python", *sys.argv]),
        "started_at": started_at,
        "wall_s": round(time.monotonic() - t0, 1),
        "commit": git_commit(),
        "machine": machine(),
        "error": error,
        "workdir": str(workdir) if args.workdir else None,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.details:
        details = {
            "summary": {k: v for k, v in report.items() if k != "items"},
            "requests": rows,
            "calls": [
                {
                    "id": c.item.id,
                    "call_id": c.call_id,
                    "established": c.established,
                    "error": c.error,
                    "ended_by": c.ended_by,
                    "wall_s": c.wall_s,
                    "turns": [asdict(t) for t in c.turns],
                    "events": c.events,
                }
                for c in calls
            ],
        }
        Path(args.details).write_text(json.dumps(details, indent=2) + "\n")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main())
