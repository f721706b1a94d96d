"""Turn-taking quality on fixed audio sets: end of turn, false and true barge-in.

Each item is one call to a live call actor (the real VAD, turn model, Whisper
STT, espeak-ng TTS, scripted LLM) from a caller on real loopback RTP, so the
audio goes through G.711 both ways. The sets are made here from espeak-ng
voices and sox-generated noise (nothing is downloaded):

(a) **end of turn**: complete utterances, and incomplete ones: a sentence, a
    pause of 0.6-1.5 s mid-thought, the rest. Some with background noise at
    20 or 10 dB SNR. *False end of turn*: the agent's audio started before
    the caller finished (they were cut off mid-thought). *End-of-turn
    latency* (complete items): the server's endpointing (speech end to turn
    end) and, on the wire, the caller's last word to the agent's first audio.
(b) **not interruptions**, played while the agent talks: backchannels,
    coughs, a door slam, keyboard, street noise, music on the line, and the
    agent's own echo (100-300 ms, -10 to -25 dB). *False barge-in*: the agent
    stopped and did not resume (a barge-in recorded as real).
(c) **real interruptions** ("no, wait, I meant Tuesday") while the agent
    talks. *Detected*: a barge-in recorded as real. *Stop*: the first speech
    frame sent -> the last agent audio packet received.

Every item runs once per detector (`--detectors smart_turn,silence`, and
`smart_turn+preemptive` for preemptive generation), in turn, so they are
compared in one run on the same audio. One JSON object
on stdout; progress on stderr.

    .venv/bin/python bench/turn_quality.py [--sets a,b,c] [--limit N] [--match TEXT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sip_cps import cpu_model, git_commit  # noqa: E402

from mediaserver.call.runtime import PipelineRuntime  # noqa: E402
from mediaserver.call.spec import AgentSpec  # noqa: E402
from mediaserver.observability.logging import configure  # noqa: E402
from mediaserver.pipeline.settings import PipelineSettings  # noqa: E402
from tests.call.harness import live_actor, wait_for  # noqa: E402
from tests.peers import read_wav_mono, speech_wav  # noqa: E402

RATE = 8000
FRAME = 0.02
VOICES = ["en-us", "en-gb", "en-us+f3", "en-us+m3", "en-gb+f2"]
#: Said by the agent in sets (b) and (c): long enough to be talked over.
STORY = (
    "Let me tell you about our opening hours and services. We are open from nine in the "
    "morning until six in the evening, Monday to Friday, and from ten until four on "
    "Saturdays. You can reach the support team by phone or by email, and most questions "
    "are answered within one working day. If you need to change an order, please have "
    "your order number ready, and we will be happy to help you with that today."
)

# -- set (a): complete and incomplete utterances --------------------------------------------

COMPLETE = [
    "Where is my order?",
    "I would like to cancel my subscription.",
    "Can you tell me the opening hours?",
    "My order number is four five two.",
    "Yes, that's right.",
    "I need to speak to someone about my bill.",
    "What time do you close on Saturday?",
    "Please send me a new password.",
    "No, that's not what I ordered.",
    "The package never arrived.",
    "Could you repeat that please?",
    "I'd like to book a table for two.",
]
#: (first part, second part): said with a pause between.
INCOMPLETE = [
    ("I want to change my order to", "the blue one."),
    ("My order number is", "seven three one."),
    ("I was wondering if", "you could help me with my bill."),
    ("Could you check whether", "my package has shipped?"),
    ("I'd like to book a table for", "four people tomorrow."),
    ("The problem is that", "my card was charged twice."),
    ("Can I pay with", "a credit card?"),
    ("I'm calling because", "my internet is down."),
    ("I need the address of", "your nearest store."),
    ("My name is John and", "I have a question."),
    ("So what I need is", "a refund."),
    ("It's about the", "delivery on Friday."),
]
PAUSES = [0.6, 0.9, 1.2, 1.5]

# -- set (b): what must not interrupt ---------------------------------------------------------

BACKCHANNELS = ["mhm", "uh huh", "yeah", "okay", "right", "I see", "yes", "sure"]
ECHOES = [(0.1, -10), (0.2, -15), (0.3, -20), (0.15, -25), (0.25, -12), (0.3, -18)]
#: Echoes whose path moves mid-call, as a phone's adaptive playout does when it
#: grows or shrinks its jitter buffer: (delay s, dB, then delay moved by s).
MOVING_ECHOES = [(0.12, -12, 0.02), (0.2, -15, -0.04), (0.25, -10, 0.06)]

# -- set (c): real interruptions --------------------------------------------------------------

INTERRUPTIONS = [
    "No, wait, I meant Tuesday.",
    "Stop, that's wrong.",
    "Hold on, can you repeat that?",
    "Actually, I want to cancel.",
    "Excuse me, I have a question.",
    "Sorry, that's not my order.",
    "Wait, wait, what was the number?",
    "No no, the other address.",
    "Can I speak to a person?",
    "Hang on, I need to check something.",
    "That's not what I asked.",
    "Just a second please.",
]


@dataclass
class Item:
    """One call of a set."""

    set: str
    name: str
    audio: np.ndarray
    #: (a) seconds into `audio` where the caller's speech ends, where a pause
    #: starts and ends (incomplete items).
    speech_end: float = 0.0
    pause: tuple[float, float] | None = None
    #: (b) the agent's echo: (delay s, dB), and how far its delay moves
    #: half-way through (s).
    echo: tuple[float, float] | None = None
    echo_moves: float = 0.0
    #: (c) seconds into `audio` of the first speech sample.
    onset: float = 0.0


@dataclass
class Outcome:
    """What one item did with one detector."""

    item: str
    detector: str
    fields: dict[str, Any] = field(default_factory=dict)


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def voice_pcm(text: str, folder: Path, voice: str) -> np.ndarray:
    pcm, rate = read_wav_mono(speech_wav(text, folder, voice=voice))
    assert rate == RATE
    return trim(pcm)


def trim(pcm: np.ndarray, level: int = 200) -> np.ndarray:
    """Without the leading and trailing silence espeak adds."""
    loud = np.nonzero(np.abs(pcm.astype(np.int32)) > level)[0]
    return pcm[loud[0] : loud[-1] + 1] if len(loud) else pcm


def sox(folder: Path, name: str, *effects: str) -> np.ndarray:
    """A sound made by sox (`sox -n ... synth ...`), 8 kHz int16."""
    path = folder / f"{name}.wav"
    if not path.exists():
        subprocess.run(
            ["sox", "-n", "-r", str(RATE), "-b", "16", "-c", "1", str(path), *effects],
            check=True,
            capture_output=True,
        )
    return read_wav_mono(path)[0]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


def with_noise(pcm: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`pcm` with `noise` (looped) at `snr_db` below its speech power."""
    speech = pcm.astype(np.float64)
    power = np.mean(speech[np.abs(speech) > 200] ** 2)
    bed = np.resize(noise.astype(np.float64), len(pcm))
    bed *= np.sqrt(power / (np.mean(bed**2) + 1e-9) / 10 ** (snr_db / 10))
    return np.clip(speech + bed, -32768, 32767).astype(np.int16)


def set_a(folder: Path) -> list[Item]:
    street = sox(folder, "street", "synth", "4", "brownnoise", "synth", "4", "pinknoise", "mix")
    items = []
    for i, text in enumerate(COMPLETE):
        pcm = voice_pcm(text, folder, VOICES[i % len(VOICES)])
        audio = np.concatenate([silence(0.3), pcm, silence(0.2)])
        if i % 3 == 2:
            audio = with_noise(audio, street, 20 if i % 2 else 10)
        items.append(Item("a", f"complete:{text}", audio, speech_end=0.3 + len(pcm) / RATE))
    for i, (first, rest) in enumerate(INCOMPLETE):
        voice = VOICES[(i + 2) % len(VOICES)]
        one, two = voice_pcm(first, folder, voice), voice_pcm(rest, folder, voice)
        gap = PAUSES[i % len(PAUSES)]
        audio = np.concatenate([silence(0.3), one, silence(gap), two, silence(0.2)])
        if i % 3 == 2:
            audio = with_noise(audio, street, 20 if i % 2 else 10)
        pause_start = 0.3 + len(one) / RATE
        items.append(
            Item(
                "a",
                f"incomplete:{first} / {rest} ({gap}s)",
                audio,
                speech_end=pause_start + gap + len(two) / RATE,
                pause=(pause_start, pause_start + gap),
            )
        )
    return items


def set_b(folder: Path) -> list[Item]:
    items = []
    for i, word in enumerate(BACKCHANNELS):
        items.append(Item("b", f"backchannel:{word}", voice_pcm(word, folder, VOICES[i % 5])))
    coughs = [
        sox(
            folder,
            f"cough{k}",
            "synth",
            "0.25",
            "whitenoise",
            "bandpass",
            str(f),
            "400",
            "fade",
            "q",
            "0.02",
            "0.25",
            "0.18",
            "vol",
            "0.6",
        )
        for k, f in enumerate((500, 800, 1100))
    ]
    for k, cough in enumerate(coughs):
        items.append(
            Item("b", f"cough:{k}", np.concatenate([cough, silence(0.1), cough[: len(cough) // 2]]))
        )
    for k, length in enumerate((0.3, 0.5)):
        slam = sox(
            folder,
            f"slam{k}",
            "synth",
            str(length),
            "brownnoise",
            "lowpass",
            "300",
            "fade",
            "p",
            "0",
            str(length),
            str(length - 0.01),
            "vol",
            "0.9",
        )
        items.append(Item("b", f"door:{k}", slam))
    click = sox(folder, "click", "synth", "0.012", "whitenoise", "highpass", "2000", "vol", "0.5")
    for k, pace in enumerate((0.12, 0.18, 0.25)):
        typing = np.concatenate([np.concatenate([click, silence(pace)]) for _ in range(12)])
        items.append(Item("b", f"keyboard:{k}", typing))
    for k, (kind, vol) in enumerate((("pinknoise", "0.15"), ("brownnoise", "0.3"))):
        items.append(
            Item("b", f"street:{k}", sox(folder, f"street{k}", "synth", "2.5", kind, "vol", vol))
        )
    for k, notes in enumerate((("C4", "E4", "G4"), ("A3", "C4", "E4"))):
        tune = sox(
            folder,
            f"music{k}",
            "synth",
            "2.5",
            *[x for n in notes for x in ("pluck", n)],
            "tremolo",
            "4",
            "vol",
            "0.4",
        )
        items.append(Item("b", f"music:{k}", tune))
    for delay, db in ECHOES:
        items.append(Item("b", f"echo:{int(delay * 1000)}ms{db}dB", silence(0.0), echo=(delay, db)))
    for delay, db, moves in MOVING_ECHOES:
        name = f"echo:{int(delay * 1000)}ms{db}dB{int(moves * 1000):+d}ms"
        items.append(Item("b", name, silence(0.0), echo=(delay, db), echo_moves=moves))
    return items


def set_c(folder: Path) -> list[Item]:
    items = []
    for i, text in enumerate(INTERRUPTIONS):
        pcm = voice_pcm(text, folder, VOICES[i % len(VOICES)])
        # A third of them from a phone that echoes the agent back: the
        # canceller must not take the caller's voice for our echo.
        echo = (0.2, -15.0) if i % 3 == 2 else None
        name = f"interrupt:{text}" + ("+echo" if echo else "")
        items.append(Item("c", name, pcm, onset=0.0, echo=echo))
    return items


# -- running ---------------------------------------------------------------------------------


def settings(detector: str, stt: str) -> PipelineSettings:
    """`detector`: smart_turn or silence, `+preemptive` for preemptive generation."""
    name, _, extra = detector.partition("+")
    return PipelineSettings.model_validate(
        {
            "stt": {"backend": stt, "pool_size": 1},
            "turn": {
                "detector": name,
                "preemptive": extra == "preemptive",
                "attention_timeout": 0,
                "inactivity_timeout": 0,
            },
            "fillers": {"enabled": False},
        }
    )


def agent(cfg: PipelineSettings, greeting: str | None) -> AgentSpec:
    return AgentSpec(
        name="bench",
        greeting=greeting,
        fallback="Okay, thank you. Let me look into that for you.",
        settings=cfg,
    )


def loud(packets: list[tuple[float, Any]], since: float, until: float) -> list[float]:
    """Arrival times of agent packets with audio (not silence) in a window."""
    from mediaserver.codecs.g711 import ulaw_decode

    out = []
    for t, pkt in packets:
        if since <= t < until:
            pcm = ulaw_decode(pkt.payload).astype(np.float64)
            if np.sqrt(np.mean(pcm**2)) > 150:
                out.append(t)
    return out


def events(actor: Any, kind: str) -> list[dict[str, Any]]:
    return [e for e in actor.timeline if e["event"] == kind]


async def run_a(item: Item, ag: AgentSpec, runtime: PipelineRuntime) -> dict[str, Any]:
    async with live_actor(ag, runtime) as live:
        actor, caller = live.actor, live.caller
        await asyncio.sleep(0.3)
        start, _ = await caller.say(item.audio)
        end = start + item.speech_end
        await wait_for(lambda: bool(loud(caller.received, end, 1e18)), 6.0)
        await asyncio.sleep(0.2)
        first = loud(caller.received, start, 1e18)
        # Cut off: the agent talked before the caller finished, or answered a
        # part of what they said (their words reached the model as two turns).
        users = [m for m in actor.convo.messages if m.role == "user"]
        out: dict[str, Any] = {
            "cut_off": (bool(first) and first[0] < end) or len(users) > 1,
            "user_turns": len(users),
        }
        if item.pause is None:
            out["v2v_wire_ms"] = round((first[0] - end) * 1000, 1) if first else None
            latency = events(actor, "turn_latency")
            out["endpointing_ms"] = latency[0].get("endpointing_ms") if latency else None
            out["v2v_ms"] = latency[0].get("voice_to_voice_ms") if latency else None
        out["held"] = bool(events(actor, "turn_held"))
        out["finals"] = [e.get("text") for e in events(actor, "caller_final")]
        out["check_ms"] = [e.get("ms") for e in events(actor, "turn_check")]
        out["preemptive"] = [e.get("used") for e in events(actor, "preemptive")]
        out["checks"] = [e.get("prob") for e in events(actor, "turn_check")]
        return out


async def run_bc(item: Item, ag: AgentSpec, runtime: PipelineRuntime) -> dict[str, Any]:
    async with live_actor(ag, runtime) as live:
        actor, caller = live.actor, live.caller
        if item.echo is not None:
            delay, db = item.echo
            caller.echo = (delay, 10 ** (db / 20))
        # The greeting (the story) is under way.
        assert await wait_for(lambda: bool(loud(caller.received, 0, 1e18)), 5.0)
        await asyncio.sleep(1.5)
        if item.echo is not None and item.set == "b":
            await asyncio.sleep(2.5)
            delay, db = item.echo
            caller.echo = (delay + item.echo_moves, 10 ** (db / 20))
            await asyncio.sleep(2.5)
            said_at = None
        else:
            said_at, _ = await caller.say(item.audio)
        await asyncio.sleep(3.0 if item.set == "b" else 4.0)
        barges = events(actor, "barge_in")
        real = [b for b in barges if not b.get("false")]
        out: dict[str, Any] = {
            "interrupted": bool(real),
            "paused_and_resumed": sum(1 for b in barges if b.get("false")),
            "finals": [e.get("text") for e in events(actor, "caller_final")],
        }
        if item.set == "c" and said_at is not None:
            # The caller's first speech frame left at `onset`; the agent's audio
            # stopped at the first 20 ms slot after its last packet before the
            # silence the barge-in made (packets in flight count: they were heard).
            onset = said_at + item.onset
            last = None
            for t, _ in caller.received:
                if t < onset - FRAME or t > onset + 1.5:
                    continue
                if last is not None and t - last > 0.1:
                    break
                last = t
            out["stop_ms"] = round(max(0.0, (last or onset) + FRAME - onset) * 1000, 1)
            # The server's own measure: speech onset (media clock) to audio flushed.
            out["server_stop_ms"] = next((b.get("stop_ms") for b in real), None)
            out["heard"] = next((b.get("heard") for b in real), None)
        return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(args.folder or tempfile.mkdtemp(prefix="turn-quality-"))
    folder.mkdir(parents=True, exist_ok=True)
    makers = {"a": set_a, "b": set_b, "c": set_c}
    sets = {
        name: [i for i in makers[name](folder) if args.match in i.name][: args.limit or None]
        for name in args.sets
    }
    detectors = args.detectors
    runtimes = {d: PipelineRuntime(settings(d, args.stt)) for d in detectors}
    results: dict[str, list[Outcome]] = {name: [] for name in sets}
    started = time.monotonic()
    try:
        for name, items in sets.items():
            for item in items:
                for det in detectors:
                    cfg = runtimes[det].settings
                    if name == "a":
                        ag = agent(cfg, None)
                        ag.settings = cfg.model_copy(deep=True)
                        ag.settings.turn.agent_speaks_first = False
                        fields = await run_a(item, ag, runtimes[det])
                    else:
                        fields = await run_bc(item, agent(cfg, STORY), runtimes[det])
                    results[name].append(Outcome(item.name, det, fields))
                    log(f"{name} {det:10s} {item.name}: {fields}")
        model_cost = {
            det: {
                "checks": rt.turns.stats.checks,
                "batches": rt.turns.stats.batches,
                "busy_ms_per_check": round(rt.turns.stats.busy_s * 1000 / rt.turns.stats.checks, 1),
                "cpu_ms_per_audio_second": round(
                    rt.turns.stats.busy_s * 1000 / max(rt.turns.stats.audio_s, 1e-9), 1
                ),
            }
            for det, rt in runtimes.items()
            if rt.turns is not None and rt.turns.stats.checks
        }
    finally:
        for runtime in runtimes.values():
            await runtime.aclose()
    return {
        "bench": "turn_quality",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "stt": args.stt,
        "seconds": round(time.monotonic() - started, 1),
        "sets": {name: summarise(name, results[name], detectors) for name in results},
        "turn_model": model_cost,
        "items": {name: [o.__dict__ for o in results[name]] for name in results},
    }


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def summarise(name: str, outcomes: list[Outcome], detectors: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for det in detectors:
        mine = [o.fields for o in outcomes if o.detector == det]
        if name == "a":
            kinds = [o.item.split(":")[0] for o in outcomes if o.detector == det]
            incomplete = [f for k, f in zip(kinds, mine, strict=True) if k == "incomplete"]
            complete = [f for k, f in zip(kinds, mine, strict=True) if k == "complete"]
            eot = [f["endpointing_ms"] for f in complete if f.get("endpointing_ms") is not None]
            v2v_server = [f["v2v_ms"] for f in complete if f.get("v2v_ms") is not None]
            v2v = [f["v2v_wire_ms"] for f in complete if f.get("v2v_wire_ms") is not None]
            out[det] = {
                "incomplete": len(incomplete),
                "false_end_of_turn": sum(f["cut_off"] for f in incomplete),
                "false_end_of_turn_rate": round(
                    sum(f["cut_off"] for f in incomplete) / max(1, len(incomplete)), 3
                ),
                "complete": len(complete),
                "complete_cut_off": sum(f["cut_off"] for f in complete),
                "complete_unanswered": sum(f.get("v2v_wire_ms") is None for f in complete),
                "endpointing_ms_p50": pct(eot, 50),
                "endpointing_ms_p90": pct(eot, 90),
                "v2v_ms_p50": pct(v2v_server, 50),
                "v2v_ms_p90": pct(v2v_server, 90),
                "v2v_wire_ms_p50": pct(v2v, 50),
                "v2v_wire_ms_p90": pct(v2v, 90),
            }
        elif name == "b":
            out[det] = {
                "items": len(mine),
                "false_barge_in": sum(f["interrupted"] for f in mine),
                "false_barge_in_rate": round(
                    sum(f["interrupted"] for f in mine) / max(1, len(mine)), 3
                ),
                "paused_then_resumed": sum(f["paused_and_resumed"] > 0 for f in mine),
            }
        else:
            real = [f for f in mine if f["interrupted"]]
            stops = [f["stop_ms"] for f in real if f.get("stop_ms") is not None]
            server = [f["server_stop_ms"] for f in real if f.get("server_stop_ms") is not None]
            out[det] = {
                "items": len(mine),
                "detected": sum(f["interrupted"] for f in mine),
                "detected_rate": round(sum(f["interrupted"] for f in mine) / max(1, len(mine)), 3),
                "stop_ms_p50": pct(stops, 50),
                "stop_ms_p95": pct(stops, 95),
                "server_stop_ms_p50": pct(server, 50),
                "server_stop_ms_p95": pct(server, 95),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="a,b,c", type=lambda s: s.split(","))
    parser.add_argument("--detectors", default="smart_turn,silence", type=lambda s: s.split(","))
    parser.add_argument("--stt", default="faster-whisper", help="STT backend (faster-whisper)")
    parser.add_argument("--limit", type=int, default=0, help="first N items of each set (0: all)")
    parser.add_argument("--match", default="", help="only the items whose name holds this")
    parser.add_argument("--folder", help="where the audio is made and kept (default: a temp dir)")
    args = parser.parse_args()
    configure("warning")  # stderr, and quiet: stdout is the JSON
    if shutil.which("sox") is None or shutil.which("espeak-ng") is None:
        sys.exit("turn_quality: needs sox and espeak-ng (scripts/setup.sh installs them)")
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
