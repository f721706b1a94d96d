"""The process-wide part of the pipeline: models loaded once, shared by every call.

Bounded executors run all CPU-bound inference (one thread for VAD batches,
`executor_threads` for STT decoding and as many for TTS synthesis and the
rest), so a burst of calls queues work instead of starting threads without
limit; the event loop only moves packets and events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import structlog

from mediaserver.call.spec import AgentSpec
from mediaserver.faults import Faults
from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.pipeline.llm import ScriptedConfig, ScriptedReply, load_llm
from mediaserver.pipeline.llm.base import LlmBackend
from mediaserver.pipeline.settings import LlmSettings, PipelineSettings, TurnSettings
from mediaserver.pipeline.stt import load_stt
from mediaserver.pipeline.stt.base import SttBackend, SttHints
from mediaserver.pipeline.stt.hints import hints_for, phrase_for_name
from mediaserver.pipeline.tts import load_tts
from mediaserver.pipeline.tts.base import TtsBackend
from mediaserver.pipeline.turn import SmartTurnModel, TurnBatcher
from mediaserver.pipeline.vad.silero import SileroModel, VadBatcher

log = structlog.get_logger("mediaserver.call.runtime")


def _yield_cpu() -> None:
    """Run this thread (and the decoder threads it starts) at a lower priority:
    a transcription is throughput work, while VAD and the turn model decide
    when the agent speaks and must not wait behind it on a busy core."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)


class PipelineRuntime:
    """Loaded models, the executor and the VAD batcher.

    Raises:
        ModelLoadError: a model could not be loaded (one line naming backend and path).
    """

    def __init__(
        self,
        settings: PipelineSettings,
        loop: asyncio.AbstractEventLoop | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.settings = settings
        #: Injected faults (tests, demos); none unless configured.
        self.faults = faults or Faults()
        self.executor = ThreadPoolExecutor(
            max_workers=settings.executor_threads, thread_name_prefix="inference"
        )
        # VAD gets its own thread: it is on every call's critical path (barge-in,
        # end of turn) and must never queue behind a long STT or TTS job.
        self.vad_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad")
        # STT has its own threads too: a Whisper transcription holds one for
        # ~0.3-0.6 s, and TTS (first audio of every reply) must not wait behind it.
        self.stt_executor = ThreadPoolExecutor(
            max_workers=settings.executor_threads,
            thread_name_prefix="stt",
            initializer=_yield_cpu,
        )
        self.vad_model = SileroModel(settings.vad.model)
        self.vad = VadBatcher(self.vad_model, self.vad_executor, settings.vad, loop)
        # The turn model has its own thread too: a check (~30 ms) ends a turn.
        self.turn_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turn")
        #: The turn model, batched across calls; loaded when a detector needs it.
        self.turns: TurnBatcher | None = None
        self._turn_failed = False
        self.turns_for(settings.turn)
        # Loaded on an STT thread: the decoder threads a backend starts now
        # (CTranslate2's pool) inherit its lower priority.
        self.stt: SttBackend = self.stt_executor.submit(load_stt, settings.stt).result()
        self.tts: TtsBackend = load_tts(settings.tts)
        self._llms: dict[tuple[str, str], LlmBackend] = {}
        log.info(
            "pipeline_loaded",
            stt=self.stt.name,
            tts=self.tts.name,
            turn=settings.turn.detector if self.turns is not None else "silence",
            llm=settings.llm.backend,
            threads=settings.executor_threads,
        )

    @staticmethod
    def hints(agent: AgentSpec) -> SttHints:
        """The STT bias of `agent`: its hints and its tools' argument types."""
        # Tool names are what callers ask for ("check order"): phrases too.
        names = [phrase_for_name(t.spec.name) for t in agent.tools]
        return hints_for([*agent.hints, *names], [t.spec.parameters for t in agent.tools])

    def turns_for(self, turn: TurnSettings) -> TurnBatcher | None:
        """The turn model for calls with `turn` settings (None: the silence detector).

        Raises:
            ModelLoadError: the model is missing or corrupt and
                `smart_turn.on_error` is `fail` (one line naming path and backend).
        """
        if turn.detector != "smart_turn":
            return None
        if self.turns is None and not self._turn_failed:
            try:
                model = SmartTurnModel(turn.smart_turn.model)
            except ModelLoadError as exc:
                if turn.smart_turn.on_error == "fail":
                    raise
                self._turn_failed = True
                log.warning("turn_model_unavailable", error=str(exc), fallback="silence")
                return None
            self.turns = TurnBatcher(model, self.turn_executor)
        return self.turns

    def prepare(self, agent: AgentSpec) -> None:
        """Load what `agent`'s calls need (decoders, its LLM) before calls arrive.

        Raises:
            ModelLoadError: the agent's LLM cannot be built (e.g. an unset API key
                variable: the message names the settings key).
        """
        self.stt.prepare(self.hints(agent))
        self.turns_for(agent.settings.turn)
        self.llm_for(agent)
        for fallback in agent.settings.llm.fallbacks:
            self.llm_for(agent, fallback)

    def llm_for(self, agent: AgentSpec, settings: LlmSettings | None = None) -> LlmBackend:
        """The LLM backend for `agent` (one per agent and backend, reused across calls)."""
        settings = settings or agent.settings.llm
        key = (agent.name, settings.model_dump_json())
        backend = self._llms.get(key)
        if backend is None:
            scripted = ScriptedConfig(
                replies=[ScriptedReply(list(r.match), r.reply) for r in agent.replies],
                fallback=agent.fallback,
            )
            backend = self._llms[key] = load_llm(settings, scripted)
        return backend

    async def aclose(self) -> None:
        """Close LLM connections and release the models and threads."""
        for backend in self._llms.values():
            await backend.aclose()
        self.stt.close()
        self.tts.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.stt_executor.shutdown(wait=False, cancel_futures=True)
        self.vad_executor.shutdown(wait=False, cancel_futures=True)
        self.turn_executor.shutdown(wait=False, cancel_futures=True)
