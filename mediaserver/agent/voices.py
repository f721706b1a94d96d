"""Cloud voice names -> a local TTS voice.

Agents written for a hosted platform name cloud voices ("rime.spore:mistv2",
"elevenlabs.josh", "en-US-Neural2-F"). Here speech is synthesised locally, so
each voice maps onto an espeak-ng voice: first by the table below (a few
well-known voices, by their gender), then by the language code, then
`en-us`. A cloud voice is never an error; the choice is logged.

| cloud voice (engine.voice)        | local (espeak-ng)  |
|-----------------------------------|--------------------|
| rime.spore, rime.marsh, rime.cove | en-us+m3 (male)    |
| rime.luna, rime.celeste           | en-us+f3 (female)  |
| elevenlabs.josh, elevenlabs.adam  | en-us+m3           |
| elevenlabs.rachel, elevenlabs.bella | en-us+f3         |
| *-Neural2-F / *-Wavenet-F (Google, female letters C E F G H) | <lang>+f3 |
| *-Neural2-D / *-Wavenet-D (Google, male letters A B D I J)   | <lang>+m3 |
| anything else                     | the language code's espeak voice, else en-us |
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TABLE: dict[str, str] = {
    "rime.spore": "m3",
    "rime.marsh": "m3",
    "rime.cove": "m3",
    "rime.luna": "f3",
    "rime.celeste": "f3",
    "elevenlabs.josh": "m3",
    "elevenlabs.adam": "m3",
    "elevenlabs.rachel": "f3",
    "elevenlabs.bella": "f3",
}
#: Language code -> espeak-ng voice.
_LANGUAGES: dict[str, str] = {
    "en-us": "en-us",
    "en-gb": "en-gb",
    "en-au": "en-us",
    "en": "en-us",
    "es": "es",
    "es-us": "es-419",
    "es-mx": "es-419",
    "fr": "fr",
    "fr-ca": "fr",
    "de": "de",
    "it": "it",
    "pt": "pt",
    "pt-br": "pt-br",
    "nl": "nl",
}
_GOOGLE = re.compile(r"-(?:Neural2|Wavenet|Standard|Studio|Journey)-([A-Z])$")


@dataclass(frozen=True)
class LocalVoice:
    """The local voice a cloud voice maps to, and why."""

    backend: str
    voice: str
    reason: str


def _language(code: str) -> str:
    code = code.lower()
    return _LANGUAGES.get(code) or _LANGUAGES.get(code.split("-")[0]) or "en-us"


def local_voice(code: str, voice: str, engine: str | None = None) -> LocalVoice:
    """The espeak-ng voice for language `code` and cloud `voice` (never fails)."""
    base = _language(code)
    key = f"{engine}.{voice}".lower() if engine else voice.lower()
    if key in _TABLE:
        return LocalVoice("espeak-ng", f"{base}+{_TABLE[key]}", "voice table")
    match = _GOOGLE.search(voice)
    if match:
        variant = "f3" if match.group(1) in "CEFGH" else "m3"
        return LocalVoice("espeak-ng", f"{base}+{variant}", "voice name letter")
    reason = "language code" if base != "en-us" or code.lower().startswith("en") else "fallback"
    return LocalVoice("espeak-ng", base, reason)
