"""Pipeline settings: typed, documented, with the defaults users get.

They are part of the server config (`pipeline:` section, and per route under
`agent.params`); a bad value fails start-up with one line naming the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from mediaserver.strict import Strict


class VadSettings(Strict):
    """Silero VAD with hysteresis (probabilities per 32 ms chunk at 16 kHz)."""

    #: Path to a silero ONNX file; default: the one in the silero-vad wheel.
    model: Path | None = None
    #: Speech starts when the probability reaches this...
    threshold: float = Field(0.5, gt=0, lt=1)
    #: ...and stops once it falls below this (hysteresis) for `min_silence`.
    neg_threshold: float = Field(0.35, gt=0, lt=1)
    #: Seconds of speech probability above threshold before "speech started".
    min_speech: float = Field(0.032, ge=0)
    #: Seconds below neg_threshold before "speech stopped".
    min_silence: float = Field(0.1, ge=0)
    #: Seconds a chunk may wait so one inference serves every call (batching).
    batch_period: float = Field(0.008, gt=0, le=0.064)
    #: webrtcvad as a cheap pre-gate: chunks it calls silence skip silero.
    webrtc_pregate: bool = False
    #: webrtcvad aggressiveness 0-3.
    webrtc_mode: int = Field(2, ge=0, le=3)

    @model_validator(mode="after")
    def _hysteresis(self) -> VadSettings:
        if self.neg_threshold > self.threshold:
            raise ValueError("neg_threshold must not exceed threshold")
        return self


#: The silence that ends a turn when nothing smarter decides (the silence
#: detector's default, and the wait after a turn model that cannot answer).
SILENCE_TIMEOUT = 0.7

#: Words an English sentence does not end on: articles, prepositions,
#: conjunctions, possessives, auxiliaries, hesitations. A transcript ending on
#: one is a caller who has not finished ("I want to change my order to...").
UNFINISHED_EN = (
    "a an the my your our their his her its this that these those "
    "to of for from with without about at by in into on onto as than "
    "and or but so because if when while although though unless until whether "
    "is are was were am be been being do does did have has had will would "
    "can could should shall may might must "
    "um uh er erm uhm like i i'm i'd we we're you you're it's there's"
)


class SmartTurnSettings(Strict):
    """The `smart_turn` end-of-turn detector: Smart Turn v3 on the caller's audio
    after a short pause, with the transcript's last word as a second opinion."""

    #: Path to a Smart Turn v3 ONNX file; default: the one in the pipecat-ai wheel.
    model: Path | None = None
    #: P(complete) from which the model's "complete" ends the turn.
    threshold: float = Field(0.5, gt=0, lt=1)
    #: Seconds of silence after the caller's speech before the model is asked.
    pause: float = Field(0.2, ge=0.05, le=2.0)
    #: Seconds of silence that end a turn the model and transcript call
    #: unfinished (an agent's `end_of_speech_timeout`, when set, replaces it).
    max_wait: float = Field(3.0, ge=0.25, le=10)
    #: A missing or corrupt model: `fail` start-up with one line naming it, or
    #: warn once and use the silence detector.
    on_error: Literal["fail", "silence"] = "fail"
    #: Last words that mean the caller has not finished (per language; empty: the
    #: model alone decides).
    unfinished_words: list[str] = Field(default_factory=lambda: UNFINISHED_EN.split())


class TurnSettings(Strict):
    """When the caller's turn ends and who speaks first."""

    #: `smart_turn`: an audio turn model decides after a short pause (complete
    #: turns end in ~0.2-0.3 s, unfinished ones wait up to `smart_turn.max_wait`);
    #: `silence`: `end_of_speech_timeout` of silence alone.
    detector: Literal["smart_turn", "silence"] = "smart_turn"
    #: Seconds of silence that end the caller's turn at the latest (the SDK's
    #: param). None: 0.7 s for the silence detector, `smart_turn.max_wait` for
    #: the turn model (which ends complete turns long before).
    end_of_speech_timeout: float | None = Field(None, ge=0.25, le=10)
    smart_turn: SmartTurnSettings = Field(default_factory=SmartTurnSettings)
    #: Preemptive generation (turn model only): start the model on the caller's
    #: words as soon as a pause's transcript looks finished, while the turn is
    #: still being decided; the answer plays only if the final transcript is the
    #: same (else it is dropped). Costs model calls; saves their latency.
    preemptive: bool = False
    #: The agent greets first (otherwise it waits for the caller).
    agent_speaks_first: bool = True
    #: Seconds of caller silence before the attention prompt (0: never).
    attention_timeout: float = Field(10.0, ge=0)
    #: What the agent says when the caller stays silent.
    attention_prompt: str = "Are you still there?"
    #: Seconds of silence (after the attention prompt) before a polite hangup (0: never).
    inactivity_timeout: float = Field(20.0, ge=0)
    #: Said before hanging up on a silent caller.
    goodbye: str = "I have not heard anything, so I will hang up now. Goodbye."
    #: Said when speech was heard but nothing was recognised.
    not_understood: str = "Sorry, I did not catch that. Could you say it again?"

    def ceiling(self, model: bool) -> float:
        """The longest silence inside a turn (`model`: the turn model is running)."""
        if self.end_of_speech_timeout is not None:
            return self.end_of_speech_timeout
        return self.smart_turn.max_wait if model else SILENCE_TIMEOUT


class BargeInSettings(Strict):
    """Interrupting the agent."""

    enabled: bool = True
    #: Seconds of caller speech before it counts as an interruption.
    min_speech: float = Field(0.0, ge=0)
    #: Words (from STT partials) before it counts; 0: VAD alone decides.
    min_words: int = Field(0, ge=0)
    #: Resume the interrupted reply when the interruption brings no words in this
    #: many seconds after the caller stops (0: never resume).
    false_resume_window: float = Field(1.0, ge=0)
    #: Pause the agent at the first sign of caller speech (a fast onset test on
    #: each delivered packet), before silero confirms it: the agent stops talking in
    #: 20-60 ms instead of ~200. Only with min_speech and min_words at 0.
    fast_pause: bool = True
    #: Seconds silero has to confirm speech after a fast pause; without it the
    #: agent resumes from the word it was in.
    confirm_window: float = Field(0.3, gt=0, le=2.0)
    #: Sound over the agent that lasts this many seconds interrupts it for good
    #: even without words (the SDK's `interrupt_on_noise`; 0: noise, coughs and
    #: clicks only pause the agent, which then resumes).
    interrupt_on_noise: float = Field(0.0, ge=0)
    #: A regular expression: caller words over the agent that match it interrupt
    #: at once, even below `min_words` (the SDK's `barge_match_string`).
    match: str | None = None
    #: The caller speaking again before the agent's answer is heard: the answer
    #: in the works is dropped and their words join (the SDK's
    #: `transparent_barge`)...
    transparent: bool = True
    #: ...when they go on within this many seconds (`transparent_barge_max_time`).
    transparent_max_time: float = Field(3.0, ge=0, le=60)
    #: Real interruptions the agent acknowledges (the model is told it was cut
    #: off and what the caller heard); the SDK's `acknowledge_interruptions`.
    acknowledge: int = Field(0, ge=0)
    #: A false interruption resumes the reply from the cut word when it ends
    #: within this many seconds of the cut; later, the agent says `go_ahead`
    #: instead (resuming mid-sentence after a long pause sounds broken).
    resume_within: float = Field(2.0, gt=0)
    go_ahead: str = "Sorry, go ahead?"
    #: What a listener says while the agent talks without taking the turn: said
    #: over the agent (alone or repeated, e.g. "mhm", "yeah yeah"), it is not an
    #: interruption: the agent goes on, or resumes from the cut word. Empty: off.
    backchannels: list[str] = Field(
        default_factory=lambda: [
            "mhm",
            "mm hmm",
            "hmm",
            "uh huh",
            "yeah",
            "yep",
            "yes",
            "okay",
            "ok",
            "right",
            "sure",
            "i see",
            "got it",
        ]
    )
    #: Caller speech over the agent shorter than this (seconds, as the VAD
    #: counts it: its 0.1 s hangover included) is taken for a backchannel
    #: whatever the recogniser made of it: a listener's short sounds are what
    #: recognisers misread most ("mhm" -> "and make him"), and a short overlap
    #: that wants the floor says so (`interrupt_words`, `match`) or goes on.
    #: 0: off (only `backchannels` decide).
    short_overlap: float = Field(0.8, ge=0, le=3.0)
    #: Words that make even a short overlap an interruption ("stop", "no").
    interrupt_words: list[str] = Field(
        default_factory=lambda: [
            "no",
            "not",
            "stop",
            "wait",
            "hold on",
            "hang on",
            "sorry",
            "excuse me",
            "pardon",
            "what",
            "actually",
        ]
    )

    @model_validator(mode="after")
    def _pattern(self) -> BargeInSettings:
        if self.match:
            try:
                re.compile(self.match)
            except re.error as exc:
                raise ValueError(f"match is not a regular expression: {exc}") from None
        return self


class SttSettings(Strict):
    """Speech-to-text backend."""

    #: faster-whisper (Whisper base, installed by setup) is the default; when its
    #: default model is not installed the server warns and uses pocketsphinx.
    backend: Literal["pocketsphinx", "faster-whisper", "deepgram", "openai-realtime"] = (
        "faster-whisper"
    )
    #: Model folder or file (faster-whisper: models/faster-whisper-base, or
    #: $MEDIASERVER_MODELS/faster-whisper-base; pocketsphinx: the wheel's en-us model).
    model: Path | None = None
    language: str = "en-us"
    #: pocketsphinx: decoders kept ready (more are made on demand); faster-whisper:
    #: transcriptions run at once over the one shared model (more wait their turn).
    pool_size: int = Field(2, ge=0)
    #: faster-whisper: CPU threads per transcription (0: the cores / pool_size).
    threads: int = Field(0, ge=0, le=64)
    #: faster-whisper: CTranslate2 quantisation ("int8" on CPU; "float16" on GPU).
    compute_type: str = "int8"
    #: faster-whisper: beam width (1: greedy, faster; 4: fewer misheard words).
    beam_size: int = Field(4, ge=1, le=10)
    #: faster-whisper: the shortest encoder window, seconds (Whisper pads to 30 s;
    #: a turn plus padding to this is as accurate and several times cheaper).
    window: float = Field(10.0, ge=1, le=30)
    #: faster-whisper: seconds of new audio between interim transcripts (0: none;
    #: each costs a full transcription; barge_in.min_words needs them).
    partials: float = Field(0.0, ge=0)
    #: A second backend that transcribes a turn this one failed (the turn's audio
    #: is kept), e.g. {backend: faster-whisper} under deepgram; stt_failure only
    #: when both fail.
    fallback: SttSettings | None = None
    #: Seconds the final transcript may take once the turn ended (stt_failure after).
    #: Cloud backends also bound connecting by it.
    timeout: float = Field(5.0, gt=0)
    #: Cloud backends (deepgram, openai-realtime): the service's WebSocket URL; None:
    #: the provider's (wss://api.deepgram.com/v1/listen,
    #: wss://api.openai.com/v1/realtime?intent=transcription).
    base_url: str | None = None
    #: Cloud backends: API key, or `env:NAME` to read it from the environment;
    #: None: env:DEEPGRAM_API_KEY (deepgram) or env:OPENAI_API_KEY (openai-realtime).
    api_key: str | None = None
    #: Cloud backends: the provider's model name; None: "nova-3" (deepgram),
    #: "gpt-4o-mini-transcribe" (openai-realtime).
    provider_model: str | None = None
    #: deepgram: milliseconds of silence after which Deepgram closes a segment by
    #: itself (0: never); our VAD still decides when the caller's turn ends.
    endpointing_ms: int = Field(300, ge=0)
    #: Cloud backends: open one connection at start-up, so that a bad key or URL
    #: fails start-up (ModelLoadError) instead of the first call.
    verify_at_start: bool = True
    #: openai-realtime: speak the older beta protocol (`OpenAI-Beta: realtime=v1`,
    #: `transcription_session.update`) instead of the current one.
    openai_beta: bool = False


class PronunciationSettings(Strict):
    """One pronunciation: say `with_text` where the text has `replace`."""

    replace: str = Field(min_length=1)
    with_text: str
    ignore_case: bool = False


class TtsSettings(Strict):
    """Text-to-speech backend."""

    backend: Literal["espeak-ng", "piper", "openai", "elevenlabs", "cartesia"] = "espeak-ng"
    #: espeak-ng voice name, the piper voice (.onnx) path, or the provider's
    #: voice: openai a voice name ("alloy" when left unset), elevenlabs and
    #: cartesia a voice id (required).
    voice: str = "en-us"
    #: espeak-ng words per minute.
    rate: int = Field(175, ge=80, le=450)
    #: Fallback voice tried when synthesis with `voice` fails (tts_failure).
    fallback_voice: str | None = None
    #: Words said differently from how they are written (the SDK's
    #: add_pronunciation): `[{replace: SQL, with_text: sequel, ignore_case: false}]`.
    pronunciations: list[PronunciationSettings] = Field(default_factory=list)
    #: Seconds one clause's synthesis may take before it counts as failed.
    timeout: float = Field(5.0, gt=0)
    #: API root of a network backend; default: openai "https://api.openai.com/v1"
    #: (any OpenAI-compatible server, e.g. "http://localhost:8880/v1" for
    #: Kokoro-FastAPI), elevenlabs "wss://api.elevenlabs.io", cartesia
    #: "wss://api.cartesia.ai".
    base_url: str | None = None
    #: API key of a network backend, or `env:NAME` to read it from the
    #: environment; None: env:ELEVENLABS_API_KEY (elevenlabs), env:CARTESIA_API_KEY
    #: (cartesia), env:OPENAI_API_KEY (openai at api.openai.com; other
    #: OpenAI-compatible servers get no key).
    api_key: str | None = None
    #: Provider model; default: openai "tts-1", elevenlabs "eleven_flash_v2_5",
    #: cartesia "sonic-2".
    provider_model: str | None = None
    #: Sample rate asked of a network backend (the rate of openai's raw "pcm");
    #: default: openai 24000, elevenlabs and cartesia 16000.
    sample_rate: int | None = Field(None, ge=8000, le=48000)
    #: Speaking speed of a network backend (openai 0.25-4.0, elevenlabs
    #: 0.7-1.2; cartesia ignores it).
    speed: float = Field(1.0, ge=0.25, le=4.0)
    #: A second backend that speaks a clause this one failed before any audio,
    #: e.g. {backend: espeak-ng} under a cloud voice (resampled to this one's rate).
    fallback: TtsSettings | None = None


class LlmSettings(Strict):
    """One LLM backend."""

    #: "openai" (any OpenAI-compatible server), "scripted" (offline rules) or
    #: "llama-cpp" (a local GGUF model in-process, `pip install 'mediaserver[llama]'`).
    backend: Literal["openai", "scripted", "llama-cpp"] = "scripted"
    base_url: str = "https://api.openai.com/v1"
    #: API key, or `env:NAME` to read it from the environment.
    api_key: str | None = None
    model: str = "gpt-4o-mini"
    #: llama-cpp: the GGUF model file (needed when backend is llama-cpp).
    model_path: Path | None = None
    #: llama-cpp: context window in tokens (prompt, tools and reply together).
    n_ctx: int = Field(2048, ge=256)
    #: llama-cpp: CPU threads for generation (one worker process per core: 1).
    threads: int = Field(1, ge=1)
    #: llama-cpp: a llama-cpp-python chat format name ("gemma", "chatml", ...);
    #: None uses the template inside the GGUF, or "gemma" for a Gemma file without one.
    chat_format: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0)
    #: Seconds to wait for the first token.
    first_token_timeout: float = Field(10.0, gt=0)
    #: Seconds to wait between tokens once streaming.
    idle_timeout: float = Field(10.0, gt=0)
    #: Tool calls allowed in one caller turn before the model must answer.
    max_tool_calls: int = Field(5, ge=0)
    #: Retries of a failed request (before its first token) on this backend.
    retries: int = Field(1, ge=0, le=10)
    #: Seconds before the first retry; doubled for each next one (or the
    #: provider's Retry-After when it gives one).
    retry_backoff: float = Field(0.25, ge=0)
    #: Backends tried in order when this one keeps failing (llm_timeout, llm_error).
    fallbacks: list[LlmSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _model_path(self) -> LlmSettings:
        if self.backend == "llama-cpp" and self.model_path is None:
            raise ValueError("model_path: needed when backend is llama-cpp")
        return self


class FillerSettings(Strict):
    """Phrases played when a tool runs long."""

    enabled: bool = True
    #: Seconds a tool may run before a filler is spoken.
    after: float = Field(1.0, ge=0)
    phrases: list[str] = Field(default_factory=lambda: ["One moment please."])


class AuthFailureFlow(Strict):
    """What happens when the LLM provider refuses our credentials (401/403), or a
    registered user's SIP digest fails."""

    #: "message": say `message`, then hang up; "transfer": say `message`, then
    #: transfer to `target`; "agent": hand the call to the agent of route `agent`.
    action: Literal["message", "transfer", "agent"] = "message"
    message: str = "Sorry, this service is not available right now. Please call again later."
    target: str | None = None
    agent: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> AuthFailureFlow:
        if self.action == "transfer" and not self.target:
            raise ValueError("target: needed when action is transfer")
        if self.action == "agent" and not self.agent:
            raise ValueError("agent: needed when action is agent")
        return self


class RecoverySettings(Strict):
    """Phrases and flows of the error recoveries (DESIGN's error table)."""

    #: Said when the model (and every fallback) failed.
    trouble_phrase: str = "Sorry, I am having trouble answering right now."
    #: A failed tool's result, as the model sees it (the scripted engine says it).
    tool_error_phrase: str = "Sorry, I could not do that just now."
    #: Phrases for particular errors, by exception class name (the class or any of
    #: its bases); `tool_error_phrase` for the rest.
    tool_error_phrases: dict[str, str] = Field(
        default_factory=lambda: {
            "ToolArgumentError": "Sorry, I need a few more details to do that.",
            "ConnectionError": "Sorry, that system is not reachable right now.",
            "PermissionError": "Sorry, I am not allowed to do that.",
        }
    )
    #: Said when a tool runs past its timeout (then it is retried or skipped).
    tool_timeout_phrase: str = "This is taking longer than expected."
    #: After a tool timeout: "retry" it once more, or "skip" it (the model is
    #: told it timed out). A tool may say otherwise (`on_timeout`).
    tool_timeout_action: Literal["retry", "skip"] = "skip"
    #: Said when a transfer fails; the conversation goes on.
    transfer_failed_phrase: str = "Sorry, I could not transfer your call."
    auth_failure: AuthFailureFlow = Field(default_factory=AuthFailureFlow)


class DtmfSettings(Strict):
    """Keypad digits the caller presses, as input to the conversation."""

    #: Digits reach the model as the caller's words ("Keypad: 1234").
    to_conversation: bool = True
    #: Seconds after the last digit that end the input (the SDK's `digit_timeout`).
    digit_timeout: float = Field(3.0, gt=0, le=30)
    #: Keys that end the input at once, not sent (the SDK's `digit_terminators`).
    terminators: str = "#"
    #: Digits that end the input when reached (0: no limit).
    max_digits: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _keys(self) -> DtmfSettings:
        bad = sorted(set(self.terminators) - set("0123456789*#ABCD"))
        if bad:
            raise ValueError(f"terminators: not DTMF keys: {''.join(bad)!r}")
        return self


class PipelineSettings(Strict):
    """Everything the voice-AI pipeline of one call needs."""

    vad: VadSettings = Field(default_factory=VadSettings)
    turn: TurnSettings = Field(default_factory=TurnSettings)
    barge_in: BargeInSettings = Field(default_factory=BargeInSettings)
    stt: SttSettings = Field(default_factory=SttSettings)
    tts: TtsSettings = Field(default_factory=TtsSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    fillers: FillerSettings = Field(default_factory=FillerSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    dtmf: DtmfSettings = Field(default_factory=DtmfSettings)
    #: Hand caller audio to VAD/STT as soon as it is in order, instead of on the
    #: jitter buffer's playout schedule (`media.jitter_window` later); only a
    #: missing packet is waited for. Saves the window on every turn and barge-in.
    eager_jitter: bool = True
    #: Threads for STT decoding, and as many for TTS and tools' blocking work,
    #: shared by all calls (VAD has a thread of its own).
    executor_threads: int = Field(2, ge=1, le=64)
    #: Seconds a tool may run before it is abandoned (tool_timeout).
    tool_timeout: float = Field(10.0, gt=0)
