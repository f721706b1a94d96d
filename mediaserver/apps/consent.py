"""Recording consent before the conversation: the route's announcement as the
agent's first words, then (if the route asks for it) the caller's consent by
keypad or voice; the recording starts only once consent is given."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace
from typing import Any, Final

from mediaserver.apps.amd import Listening, Quiet, transcribe
from mediaserver.apps.base import play_out
from mediaserver.apps.speech import speak
from mediaserver.call.control import CallControl
from mediaserver.call.runtime import PipelineRuntime
from mediaserver.call.spec import AgentSpec
from mediaserver.config import Consent
from mediaserver.media.session import RtpSession
from mediaserver.media.wavfile import load_wav

__all__ = ["ask_consent", "consent_words"]

YES: Final = ("yes", "yeah", "yep", "sure", "okay", "ok", "agree", "consent", "fine", "go ahead")
NO: Final = ("no", "nope", "don't", "do not", "disagree", "decline", "not ok", "stop")
#: Silence that ends the caller's spoken answer (s).
ANSWER_END: Final = 0.6


def consent_words(text: str) -> bool | None:
    """True for a yes, False for a no, None when the words say neither."""
    words = " ".join(re.findall(r"[a-z']+", text.lower()))
    if not words:
        return None
    padded = f" {words} "
    if any(f" {w} " in padded for w in NO):
        return False  # "no", "I don't agree": a no wins over the "agree" in it
    if any(f" {w} " in padded for w in YES):
        return True
    return None


async def ask_consent(
    call: CallControl,
    media: RtpSession,
    runtime: PipelineRuntime,
    agent: AgentSpec,
    consent: Consent,
) -> bool:
    """Announce, collect consent as `consent.require` says, record it; start the
    recording when consent is given and `consent.record`. True when given."""
    started = time.monotonic()
    if consent.say:
        await speak(media, runtime, agent.settings.tts, consent.say)
    elif consent.file is not None:
        await play_out(media, load_wav(consent.file, media.sample_rate), ended=call.ended)
    how = "announced"
    given = True
    if consent.require != "none" and not call.ended.is_set():
        given, how = await _answer(call, media, runtime, agent, consent)
    data: dict[str, Any] = {
        "given": given,
        "how": how,
        "required": consent.require,
        "seconds": round(time.monotonic() - started, 2),
    }
    if given and consent.record and media.settings.recordings_dir is not None:
        path = media.settings.recordings_dir / f"{media.settings.record_name}.wav"
        if media.start_recording(path):
            data["recording"] = str(path)
    if call.record is not None:
        call.record.add("consent", data)
    return given


async def _answer(
    call: CallControl,
    media: RtpSession,
    runtime: PipelineRuntime,
    agent: AgentSpec,
    consent: Consent,
) -> tuple[bool, str]:
    """Wait (bounded) for the key or a spoken yes/no, as `consent.require` allows."""
    keys = consent.require in ("dtmf", "any")
    voice = consent.require in ("voice", "any")
    ears = Listening(media, runtime) if voice else None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + consent.timeout
    quiet = Quiet(ANSWER_END, after_speech=True)
    # The answer's words in the vocabulary, beside the agent's own hints.
    base = runtime.hints(agent)
    hints = replace(base, phrases=(*base.phrases, *YES, *NO))
    try:
        while loop.time() < deadline and not call.ended.is_set():
            if keys and not call.digits.empty():
                digit = call.digits.get_nowait()
                return digit == consent.key, f"dtmf {digit}"
            if ears is None:
                await asyncio.sleep(0.05)
                continue
            kind, _, value = await ears.next(0.05)
            if kind == "vad":
                quiet.vad(float(value), loop.time())  # type: ignore[arg-type]
            if quiet.over(loop.time()):
                words = await transcribe(runtime, hints, list(ears.audio))
                verdict = consent_words(words)
                if verdict is not None:
                    return verdict, f"voice {words.strip()!r}"
                quiet = Quiet(ANSWER_END, after_speech=True)  # neither: listen on
                ears.audio.clear()
        return False, "no answer"
    finally:
        if ears is not None:
            ears.close()
