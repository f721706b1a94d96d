"""Fast speech-onset detection for barge-in, on audio as it arrives.

Silero is the judge of speech, but it needs whole 32 ms chunks, waits for its
batch, and takes a chunk or more to rise on soft onsets such as the /s/ of
"stop". Waiting for it costs about 150 ms before the agent falls silent. This
detector runs on every packet as the media plane delivers it (on arrival, with
the AI listener's eager jitter buffer), in 10 ms frames, and says "someone may
be starting to talk" within 20-60 ms: webrtcvad (when installed) and an
energy test against a running noise floor must both agree for `frames_needed`
frames in a row. A steady noise raises the floor, so it does not keep firing.

It only *pauses* the agent; silero then confirms the interruption (cancel the
reply) or not (resume where it stopped). See `CallActor`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: webrtcvad's supported rates; other rates use the energy test alone.
_WEBRTC_RATES = (8000, 16000, 32000, 48000)


class OnsetDetector:
    """Sans-IO onset detector for one caller (int16 PCM in, "onset now?" out).

    Args:
        sample_rate: rate of the PCM given to `update`.
        margin_db: how far above the noise floor a frame must be.
        min_db: frames quieter than this (dBFS) are never speech.
        frames_needed: consecutive 10 ms speech frames that make an onset.
        mode: webrtcvad aggressiveness (0-3).
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        margin_db: float = 12.0,
        min_db: float = -45.0,
        frames_needed: int = 2,
        mode: int = 2,
    ) -> None:
        self.sample_rate = sample_rate
        self.frame = sample_rate // 100
        self.margin_db = margin_db
        self.min_db = min_db
        self.frames_needed = frames_needed
        self.floor_db = -70.0
        self._run = 0
        self._carry = np.zeros(0, dtype=np.int16)
        self.mode = mode
        self._armed = False
        self._webrtcvad: Any = None
        self._vad: Any = None
        if sample_rate in _WEBRTC_RATES:
            try:
                import webrtcvad  # type: ignore[import-untyped]
            except ImportError:
                pass  # energy alone (webrtcvad is an optional extra)
            else:
                self._webrtcvad = webrtcvad

    def reset(self) -> None:
        """Forget the current run (keep the learned noise floor)."""
        self._run = 0
        self._carry = np.zeros(0, dtype=np.int16)

    def update(self, pcm: np.ndarray, armed: bool = True) -> bool:
        """Feed arriving audio; True when an onset completes in it.

        Call it with every packet, `armed` only while an onset matters (the
        agent is talking): the noise floor is learned all the time, the
        webrtcvad test runs only when armed.
        """
        if len(self._carry):
            pcm = np.concatenate([self._carry, pcm])
        n = self.frame
        usable = len(pcm) - len(pcm) % n
        self._carry = pcm[usable:]
        if armed and not self._armed and self._webrtcvad is not None:
            # A fresh webrtcvad each time the agent starts talking: its models
            # adapt to what they hear, and measured onsets of the same word then
            # came 20 or 120 ms late depending on what it had heard before.
            self._vad = self._webrtcvad.Vad(self.mode)
        self._armed = armed
        onset = False
        for start in range(0, usable, n):
            frame = pcm[start : start + n]
            if armed and self._speech_like(frame):
                self._run += 1
                if self._run == self.frames_needed:
                    onset = True
            else:
                self._run = 0
                if not armed:
                    self._track(frame)
        return onset

    @staticmethod
    def _level(frame: np.ndarray) -> float:
        power = float(np.mean(frame.astype(np.float64) ** 2)) / (32768.0**2)
        return 10 * math.log10(power) if power > 1e-12 else -120.0

    def _track(self, frame: np.ndarray) -> float:
        """Follow the noise floor: down fast, up slowly (a steady noise becomes
        the floor within about two seconds, a word does not)."""
        level = self._level(frame)
        weight = 0.3 if level < self.floor_db else 0.005
        self.floor_db += weight * (level - self.floor_db)
        return level

    def _speech_like(self, frame: np.ndarray) -> bool:
        floor = self.floor_db
        level = self._track(frame)
        if level < self.min_db or level < floor + self.margin_db:
            return False
        if self._vad is None:
            return True
        return bool(self._vad.is_speech(frame.tobytes(), self.sample_rate))
