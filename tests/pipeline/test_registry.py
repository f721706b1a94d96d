"""Backends by name: every stage fails the same way, and names what it could not load."""

from __future__ import annotations

from typing import get_args

import pytest

from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.pipeline.llm import BACKENDS as LLM_BACKENDS
from mediaserver.pipeline.llm import load_llm
from mediaserver.pipeline.settings import LlmSettings, SttSettings, TtsSettings
from mediaserver.pipeline.stt import BACKENDS as STT_BACKENDS
from mediaserver.pipeline.stt import load_stt
from mediaserver.pipeline.tts import BACKENDS as TTS_BACKENDS
from mediaserver.pipeline.tts import load_tts


def test_the_registries_know_exactly_the_names_the_settings_accept() -> None:
    assert STT_BACKENDS.names() == sorted(get_args(SttSettings.model_fields["backend"].annotation))
    assert TTS_BACKENDS.names() == sorted(get_args(TtsSettings.model_fields["backend"].annotation))
    assert LLM_BACKENDS.names() == sorted(get_args(LlmSettings.model_fields["backend"].annotation))


@pytest.mark.parametrize(
    ("load", "settings", "stage"),
    [
        (load_stt, SttSettings.model_construct(backend="nope"), "stt"),
        (load_tts, TtsSettings.model_construct(backend="nope"), "tts"),
        (load_llm, LlmSettings.model_construct(backend="nope"), "llm"),
    ],
)
def test_an_unknown_backend_is_a_model_load_error_listing_the_known_ones(
    load: object, settings: object, stage: str
) -> None:
    with pytest.raises(
        ModelLoadError, match=rf"^{stage}\.backend: unknown backend 'nope' \(known: "
    ):
        load(settings)  # type: ignore[operator]


def test_a_backend_that_cannot_be_built_names_itself_and_what_it_loads() -> None:
    settings = SttSettings(backend="deepgram", api_key="env:MEDIASERVER_TEST_UNSET_KEY")
    with pytest.raises(ModelLoadError, match=r"^deepgram: "):
        load_stt(settings)
