"""Saying a text on an RTP session outside a conversation: a voicemail message
after the beep, a whisper to the person a call is handed to."""

from __future__ import annotations

import numpy as np

from mediaserver.apps.base import play_out
from mediaserver.call.runtime import PipelineRuntime
from mediaserver.codecs.resample import resample
from mediaserver.media.session import RtpSession
from mediaserver.pipeline.settings import TtsSettings
from mediaserver.pipeline.tts.fallback import FallbackTts, TtsFailure

__all__ = ["speak"]


async def speak(
    media: RtpSession, runtime: PipelineRuntime, settings: TtsSettings, text: str
) -> bool:
    """Synthesise `text` (the agent's voice, with its fallback), send it and wait
    until it has left (bounded by its length); True when all of it was voiced."""
    tts = FallbackTts(runtime.tts, settings, runtime.executor)
    failures: list[TtsFailure] = []
    pieces = [chunk.pcm async for chunk in tts.clause(text, failures.append)]
    if not pieces:
        return False
    await play_out(media, resample(np.concatenate(pieces), tts.sample_rate, media.sample_rate))
    return not failures
