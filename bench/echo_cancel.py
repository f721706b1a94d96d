"""The echo canceller on its own: how much echo it removes, what slips through
when an echo starts mid-call or its path moves, and what it costs.

The far end is espeak-ng speech (voiced sounds correlate with themselves a
pitch period away: the hard case for finding a path in a few frames) over
G.711; the echo is that speech delayed, attenuated and through a short room
response, G.711 again. Frames are fed as the RTP session feeds them (20 ms,
near then far). A frame *leaks* when it is loud (> 50 dB) and less than
10 dB of it was removed: enough for the VAD to hear the agent.

- **onset**: the echo starts at one of 100 moments of the speech (a
  speakerphone switched on), for three paths (120 ms -10 dB, 200 ms -15 dB,
  300 ms -25 dB); leaks in the first second after it.
- **moves**: a 200 ms, -12 dB path moves by +20, +40 or -40 ms at one of 50
  moments (a phone's playout buffer growing or shrinking); leaks in the half
  second after the move.
- **erle**: dB removed after the first second, for a steady echo.
- **cost**: CPU per second of a call while the agent talks over its echo.

    .venv/bin/python bench/echo_cancel.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sip_cps import cpu_model, git_commit  # noqa: E402

from mediaserver.media.echo import EchoCanceller  # noqa: E402
from tests.media.test_echo import FRAME, RATE, echo_of, g711, power_db  # noqa: E402
from tests.peers import read_wav_mono, speech_wav  # noqa: E402

STORY = (
    "Once upon a time there was a small robot who lived in a lighthouse by the sea, "
    "and every night it counted the ships that passed, one by one."
)


def run(far: np.ndarray, near: np.ndarray) -> tuple[np.ndarray, float]:
    """The canceller's output for `near`, and the CPU seconds it took."""
    canceller, out = EchoCanceller(RATE), []
    cpu = time.process_time()
    for i in range(0, len(far) - FRAME + 1, FRAME):
        out += canceller.near(near[i : i + FRAME])
        canceller.far(far[i : i + FRAME], FRAME)
    cpu = time.process_time() - cpu
    out += [f for f, _ in canceller.held_frames()]
    return np.concatenate(out).astype(np.float64), cpu


def leaks(near: np.ndarray, out: np.ndarray, start: int, seconds: float) -> int:
    return sum(
        1
        for i in range(start, min(len(out), start + int(seconds * RATE)), FRAME)
        if power_db(near[i : i + FRAME]) > 50
        and power_db(near[i : i + FRAME]) - power_db(out[i : i + FRAME]) < 10
    )


def summary(counts: list[int]) -> dict[str, Any]:
    return {
        "cases": len(counts),
        "cases_with_a_leak": sum(1 for c in counts if c),
        "leaked_frames": sum(counts),
        "most_in_one_case": max(counts),
    }


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        pcm, rate = read_wav_mono(speech_wav(STORY, Path(folder)))
    assert rate == RATE
    far = g711(np.concatenate([np.zeros(RATE), pcm.astype(np.float64)]))
    seconds = len(far) / RATE
    onset: list[int] = []
    for at in np.linspace(RATE, len(far) - 2 * RATE, 100).astype(int) // FRAME * FRAME:
        for delay, db in ((0.12, -10.0), (0.2, -15.0), (0.3, -25.0)):
            echo = echo_of(far, delay, db)
            echo[:at] = 0
            near = g711(echo)
            onset.append(leaks(near, run(far, near)[0], at, 1.0))
    moves: list[int] = []
    for at in np.linspace(2 * RATE, len(far) - RATE, 50).astype(int) // FRAME * FRAME:
        for moved in (0.02, 0.04, -0.04):
            before, after = echo_of(far, 0.2, -12), echo_of(far, 0.2 + moved, -12)
            near = g711(np.concatenate([before[:at], after[at:]]))
            moves.append(leaks(near, run(far, near)[0], at, 0.5))
    erle, cpu = {}, []
    for delay, db in ((0.1, -10.0), (0.2, -18.0), (0.3, -25.0)):
        near = g711(echo_of(far, delay, db))
        out, spent = run(far, near)
        erle[f"{int(delay * 1000)}ms{int(db)}dB"] = round(
            power_db(near[RATE:]) - power_db(out[RATE:]), 1
        )
        cpu.append(spent / seconds)
    report = {
        "bench": "echo_cancel",
        "commit": git_commit(),
        "cpu": cpu_model(),
        "speech_seconds": round(seconds, 2),
        "onset": summary(onset),
        "moves": summary(moves),
        "erle_db": erle,
        "cpu_ms_per_call_second": round(1000 * float(np.mean(cpu)), 2),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
