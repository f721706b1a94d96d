"""Feeding one caller turn to the recogniser, in order, off the event loop.

`SttFeed` is a child task of the call actor for one turn: the actor queues the
turn's audio and the turn taker's pause/resume marks; the task passes audio
runs to the call's `SttStream` in the STT executor (batched per wake-up),
keeps the marks in their place, finalises when the turn ends, and reports
`SttPartial`, `SttFinal` or a `StageError` (stt_failure) to the inbox.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from mediaserver.call import events as ev
from mediaserver.call.errors import ErrorKind
from mediaserver.faults import Faults
from mediaserver.pipeline.settings import SttSettings
from mediaserver.pipeline.stt.base import SttError, SttStream

__all__ = ["SttFeed"]


class _Mark(enum.Enum):
    PAUSE = "pause"  # VAD heard the caller stop: SttStream.pause (a speculative guess)
    RESUME = "resume"  # ...and start again in the same turn: SttStream.resume
    END = "end"  # the turn is over: finalise
    FLUSH = "flush"  # internal: feed the audio gathered so far


class SttFeed:
    """One turn's audio into `stream` (see the module docstring).

    Args:
        turn: the turn's id (on every event it posts).
        stream: the call's recogniser stream (one per call, reused by turns).
        settings: the call's STT settings (`timeout` for the final).
        executor: where the recogniser runs.
        faults: the fault injection rules ("stt": the final fails or hangs).
        post: the actor's inbox.
        spawn: starts a supervised child task of the actor.
        after: the previous turn's feed, still finalising on the same stream:
            this one's audio waits (queued) until it is done.
    """

    def __init__(
        self,
        turn: int,
        stream: SttStream,
        settings: SttSettings,
        executor: Executor,
        faults: Faults,
        post: Callable[[ev.Event], None],
        spawn: Callable[[Any], asyncio.Task[Any]],
        after: asyncio.Task[Any] | None = None,
    ) -> None:
        self.turn = turn
        #: The feed this one waits for (see `after`).
        self.after = after
        self._stream = stream
        self._settings = settings
        self._executor = executor
        self._faults = faults
        self._post = post
        self._queue: asyncio.Queue[np.ndarray | _Mark] = asyncio.Queue()
        self.task = spawn(self._run())

    def audio(self, pcm: np.ndarray) -> None:
        """More of the turn (16 kHz)."""
        self._queue.put_nowait(pcm)

    def pause(self) -> None:
        """The caller paused: a window recogniser may transcribe what it has."""
        self._queue.put_nowait(_Mark.PAUSE)

    def resume(self) -> None:
        """The caller speaks again in the same turn."""
        self._queue.put_nowait(_Mark.RESUME)

    def end(self) -> None:
        """The turn is over: finalise after the audio already queued."""
        self._queue.put_nowait(_Mark.END)

    async def _run(self) -> None:
        loop, executor, stream = asyncio.get_running_loop(), self._executor, self._stream
        if self.after is not None:
            # One stream per call: the last turn's final resets it when done.
            await asyncio.wait([self.after])
        try:
            ended = False
            while not ended:
                pieces = [await self._queue.get()]
                while not self._queue.empty():
                    pieces.append(self._queue.get_nowait())
                audio: list[np.ndarray] = []
                # Audio runs are fed in one call; marks keep their place.
                for piece in [*pieces, _Mark.FLUSH]:
                    if isinstance(piece, np.ndarray):
                        audio.append(piece)
                        continue
                    if audio:
                        partial = await loop.run_in_executor(
                            executor, stream.feed, np.concatenate(audio)
                        )
                        audio = []
                        if partial is not None:
                            self._post(ev.SttPartial(self.turn, partial.text))
                    if piece is _Mark.END:
                        ended = True
                        break
                    if piece is _Mark.PAUSE:
                        partial = await loop.run_in_executor(executor, stream.pause)
                        if partial is not None:
                            self._post(ev.SttPartial(self.turn, partial.text))
                    elif piece is _Mark.RESUME:
                        stream.resume()
            started = time.monotonic()
            rule = self._faults.check("stt")
            timeout = self._settings.timeout
            try:
                async with asyncio.timeout(timeout):
                    await self._faults.inject(rule, SttError("injected fault"))
                    final = await loop.run_in_executor(executor, stream.finalise)
            except TimeoutError:
                raise SttError(f"no transcript within {timeout:g} s") from None
            self._post(ev.SttFinal(self.turn, final.text, time.monotonic() - started))
        except SttError as exc:
            self._post(ev.StageError(ErrorKind.STT_FAILURE, "stt", str(exc), turn=self.turn))
