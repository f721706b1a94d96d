"""Per-call stereo WAV recording: the caller on the left, the server on the right."""

from __future__ import annotations

import asyncio
import os
import time
import wave
from pathlib import Path

import numpy as np


class StereoRecorder:
    """Writes both directions of a call, one 20 ms step at a time.

    Audio is queued per channel as it comes (the caller's packets may be 30 ms
    long, or arrive two at once) and every media tick writes exactly one tick's
    worth of samples per channel, padding with silence when a side has nothing.
    That keeps the channels aligned on the media clock.
    """

    #: A channel's backlog is capped (e.g. after a burst) so the two sides
    #: cannot drift apart by more than this many ticks.
    MAX_BACKLOG_TICKS = 10

    def __init__(self, path: Path, sample_rate: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Written beside its name and renamed when complete: a reader (or the
        # retention sweep) never sees half a file under the final name.
        self._part = path.with_name(path.name + ".part")
        self._wav = wave.open(str(self._part), "wb")  # noqa: SIM115 - closed in close()
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(sample_rate)
        self._pending: list[np.ndarray] = [np.zeros(0, np.int16), np.zeros(0, np.int16)]
        self.frames = 0
        #: Paused (a card number being read out): silence is written instead, so
        #: the timeline stays whole and nothing said meanwhile is kept.
        self.paused = False

    def add(self, channel: int, pcm: np.ndarray | None) -> None:
        """Queue audio for channel 0 (caller) or 1 (server)."""
        if pcm is not None and len(pcm):
            self._pending[channel] = np.concatenate([self._pending[channel], pcm])

    def tick(self, samples: int) -> None:
        """Write `samples` samples per channel from what is queued (silence if short)."""
        out = np.zeros((samples, 2), dtype="<i2")
        for ch in (0, 1):
            if self.paused:
                self._pending[ch] = np.zeros(0, np.int16)
                continue
            queued = self._pending[ch]
            n = min(samples, len(queued))
            out[:n, ch] = queued[:n]
            rest = queued[n:]
            limit = samples * self.MAX_BACKLOG_TICKS
            self._pending[ch] = rest[-limit:] if len(rest) > limit else rest
        self._wav.writeframes(out.tobytes())
        self.frames += samples

    def close(self) -> None:
        """Write what is still queued and finish the WAV header."""
        while any(len(p) for p in self._pending):
            self.tick(max(len(p) for p in self._pending))
        self._wav.close()
        os.replace(self._part, self.path)


def delete_expired(folder: Path, days: float, now: float | None = None) -> int:
    """Delete the finished recordings (``*.wav``) in `folder` older than `days`;
    how many. Files still being written (``.part``) are never touched."""
    cutoff = (now if now is not None else time.time()) - days * 86400.0
    deleted = 0
    for path in folder.glob("*.wav") if folder.is_dir() else ():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
        except FileNotFoundError:
            continue
    return deleted


async def keep_for(folder: Path, days: float, interval: float = 3600.0) -> None:
    """Delete expired recordings now and every `interval` seconds (a task)."""
    import structlog

    log = structlog.get_logger("mediaserver.media.recording")
    loop = asyncio.get_running_loop()
    while True:
        try:
            deleted = await loop.run_in_executor(None, delete_expired, folder, days)
        except OSError as exc:
            log.warning("recordings_retention_failed", folder=str(folder), error=str(exc))
        else:
            if deleted:
                log.info("recordings_deleted", folder=str(folder), count=deleted, days=days)
        await asyncio.sleep(interval)
