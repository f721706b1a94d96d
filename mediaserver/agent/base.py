"""`AgentBase`: write an agent in Python the way the SignalWire Agents SDK does.

    from mediaserver import AgentBase, SwaigFunctionResult

    class SupportAgent(AgentBase):
        def __init__(self):
            super().__init__(name="Support Agent", route="/support")
            self.prompt_add_section("Instructions", body="Greet the caller...")
            self.add_language("English", "en-US", "rime.spore:mistv2")

        @AgentBase.tool(name="check_order")
        def check_order(self, order_id: str):
            \"\"\"Check the status of a customer order.

            Args:
                order_id: The order ID to look up
            \"\"\"
            return SwaigFunctionResult(f"Order {order_id}: shipped, ETA April 2nd")

    SupportAgent().run()

The agent is a description (prompt, voice, params, tools); `to_spec()` turns
it into the `AgentSpec` the call actor runs, and `run()` starts the whole
server with the agent at `sip:<last route segment>@HOST`. Everything runs
in-process and offline by default (pocketsphinx, the scripted engine,
espeak-ng); `set_params({"llm_backend": "openai", ...})` or a server config
picks real models.
"""

from __future__ import annotations

import copy
import inspect
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from mediaserver.agent.compat import AGENT_LENIENT, AGENT_UNSUPPORTED
from mediaserver.agent.contexts import ContextBuilder
from mediaserver.agent.data_map_exec import DataMapTool
from mediaserver.agent.post_prompt import post_summary
from mediaserver.agent.result import SwaigFunctionResult, coerce_result
from mediaserver.agent.runner import dial as place_call
from mediaserver.agent.schema import infer_schema, validate
from mediaserver.agent.skills import SkillBase, SkillError, skill_class
from mediaserver.agent.voices import LocalVoice, local_voice
from mediaserver.call.flow import Flow
from mediaserver.call.spec import AgentSpec, Tool, ToolHandler
from mediaserver.pipeline.llm.base import ToolSpec
from mediaserver.pipeline.settings import PipelineSettings

log = structlog.get_logger("mediaserver.agent")

_TOOL_ATTR = "_mediaserver_tool"


@dataclass
class _ToolOptions:
    name: str | None
    description: str | None
    parameters: dict[str, Any] | None
    fillers: list[str] | None
    timeout: float | None
    extra: dict[str, Any]


@dataclass
class _Section:
    title: str
    body: str = ""
    bullets: list[str] = field(default_factory=list)
    numbered: bool = False
    numbered_bullets: bool = False
    subsections: list[_Section] = field(default_factory=list)


@dataclass(frozen=True)
class Language:
    """One `add_language` entry, with the local voice it maps to."""

    name: str
    code: str
    voice: str
    engine: str | None
    model: str | None
    local: LocalVoice
    speech_fillers: tuple[str, ...] = ()
    function_fillers: tuple[str, ...] = ()


class _ToolDecorator:
    """`@AgentBase.tool(...)` in a class body, or `@agent.tool(...)` on an instance."""

    def __get__(self, obj: AgentBase | None, owner: type | None = None) -> Callable[..., Any]:
        def tool(
            name: str | None = None,
            description: str | None = None,
            parameters: dict[str, Any] | None = None,
            fillers: list[str] | dict[str, list[str]] | None = None,
            timeout: float | None = None,
            **extra: Any,
        ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
            def mark(func: Callable[..., Any]) -> Callable[..., Any]:
                options = _ToolOptions(
                    name, description, parameters, _filler_list(fillers), timeout, extra
                )
                setattr(func, _TOOL_ATTR, options)
                if obj is not None:
                    obj._add_tool(func, options)
                return func

            return mark

        return tool


#: Words the SDK accepts for booleans.
_FLAGS = {"true", "false", "yes", "no", "on", "off"}


def _seconds_or_flag(value: Any) -> float:
    """`interrupt_on_noise`: true is 1 s, false 0; a number is seconds, or
    milliseconds from 100 up (the SDK's other params are in ms)."""
    if isinstance(value, bool) or str(value).lower() in _FLAGS:
        return 1.0 if _truthy(value) else 0.0
    number = float(value)
    return number / 1000 if number >= 100 else number


def _filler_list(fillers: list[str] | dict[str, list[str]] | None) -> list[str] | None:
    if fillers is None:
        return None
    if isinstance(fillers, dict):  # the SDK's {"en-US": [...]} form
        return [phrase for phrases in fillers.values() for phrase in phrases]
    return list(fillers)


#: set_params keys -> (pipeline path, scale); scale turns the SDK's ms into seconds.
_PARAMS: dict[str, tuple[str, float]] = {
    "end_of_speech_timeout": ("turn.end_of_speech_timeout", 0.001),
    "attention_timeout": ("turn.attention_timeout", 0.001),
    "inactivity_timeout": ("turn.inactivity_timeout", 0.001),
    "barge_min_words": ("barge_in.min_words", 1),
    "barge_min_speech": ("barge_in.min_speech", 0.001),
    "barge_match_string": ("barge_in.match", 1),
    "digit_timeout": ("dtmf.digit_timeout", 0.001),
    "digit_terminators": ("dtmf.terminators", 1),
    "transparent_barge_max_time": ("barge_in.transparent_max_time", 0.001),
    "temperature": ("llm.temperature", 1),
    "max_tokens": ("llm.max_tokens", 1),
    "ai_model": ("llm.model", 1),
    "llm_backend": ("llm.backend", 1),
    "llm_base_url": ("llm.base_url", 1),
    "llm_api_key": ("llm.api_key", 1),
    "stt_backend": ("stt.backend", 1),
    "tts_backend": ("tts.backend", 1),
}
#: Keys understood elsewhere (not pipeline settings).
_OTHER_PARAMS = {"static_greeting", "enable_barge", "barge_in"}


#: What a per-call copy of an agent owns (changes to it stay with that call):
#: data copied deep, tools and skills (bound to the agent) by container.
_PER_CALL_DATA = (
    "_sections", "_languages", "_hints", "_pronunciations", "_params", "_global_data",
    "_contexts",
)  # fmt: skip
_PER_CALL_SHALLOW = ("_tools", "_skills")


class AgentBase:
    """An AI agent answering calls (see the module docstring).

    Args:
        name: display name (logs, the call record).
        route: e.g. "/support"; its last segment is the SIP user
            (`sip:support@HOST`). "/" uses the name, slugged.
        host: SIP listen address (env `HOST`, default 127.0.0.1).
        port: SIP listen port, UDP and TCP (env `PORT` or `SIP_PORT`, default 5060).
        config: a server config file for everything else (media ports, pipeline,
            logging); env `MEDIASERVER_CONFIG` when not given.
        **kwargs: other SDK keywords (basic_auth, use_pom, ...) are accepted and
            logged once, so SDK programs run unchanged.
    """

    tool = _ToolDecorator()

    def __init__(
        self,
        name: str,
        route: str = "/",
        host: str | None = None,
        port: int | None = None,
        *,
        config: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        self.name = name
        self.route = route
        self.host = host or os.environ.get("HOST") or "127.0.0.1"
        env_port = os.environ.get("PORT") or os.environ.get("SIP_PORT")
        self.port = int(port if port is not None else (env_port or 5060))
        self.config_path = config or os.environ.get("MEDIASERVER_CONFIG") or None
        self._sections: list[_Section] = []
        self._prompt_text: str | None = None
        self._post_prompt: str | None = None
        self._post_prompt_url: str | None = None
        self._languages: list[Language] = []
        self._hints: list[str] = []
        self._pronunciations: list[tuple[str, str, bool]] = []
        self._params: dict[str, Any] = {}
        self._global_data: dict[str, Any] = {}
        self._tools: dict[str, Tool] = {}
        self._dynamic: Callable[..., None] | None = None
        self._contexts: ContextBuilder | None = None
        #: Skills by instance key: (the skill, its tools, its prompt section titles).
        self._skills: dict[str, tuple[SkillBase, set[str], list[str]]] = {}
        self._logged: set[str] = set()
        if kwargs:
            log.info("agent_options_ignored", agent=name, options=sorted(kwargs))
        # Tools declared with @AgentBase.tool in the class (and its bases).
        for klass in reversed(type(self).__mro__):
            for attr, value in vars(klass).items():
                options = getattr(value, _TOOL_ATTR, None)
                if isinstance(options, _ToolOptions):
                    self._add_tool(getattr(self, attr), options)

    # -- routing ---------------------------------------------------------------------

    @property
    def sip_user(self) -> str:
        """The Request-URI user that reaches this agent."""
        segment = self.route.strip("/").split("/")[-1]
        return segment or re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "agent"

    # -- prompt ----------------------------------------------------------------------

    def prompt_add_section(
        self,
        title: str,
        body: str = "",
        bullets: list[str] | None = None,
        numbered: bool = False,
        numbered_bullets: bool = False,
        subsections: list[dict[str, Any]] | None = None,
    ) -> AgentBase:
        """Add a titled section to the system prompt."""
        section = _Section(title, body, list(bullets or []), numbered, numbered_bullets)
        for sub in subsections or []:
            section.subsections.append(
                _Section(sub.get("title", ""), sub.get("body", ""), list(sub.get("bullets", [])))
            )
        self._sections.append(section)
        return self

    def prompt_add_to_section(
        self,
        title: str,
        body: str | None = None,
        bullet: str | None = None,
        bullets: list[str] | None = None,
    ) -> AgentBase:
        """Append text or bullets to a section (created if missing)."""
        section = self._section(title)
        if body:
            section.body = f"{section.body}\n\n{body}" if section.body else body
        if bullet:
            section.bullets.append(bullet)
        section.bullets.extend(bullets or [])
        return self

    def prompt_add_subsection(
        self, parent_title: str, title: str, body: str = "", bullets: list[str] | None = None
    ) -> AgentBase:
        """Add a subsection under `parent_title` (created if missing)."""
        self._section(parent_title).subsections.append(_Section(title, body, list(bullets or [])))
        return self

    def prompt_has_section(self, title: str) -> bool:
        """Whether a section called `title` exists."""
        return any(s.title == title for s in self._sections)

    def set_prompt_text(self, text: str) -> AgentBase:
        """Use `text` as the whole system prompt (instead of sections)."""
        self._prompt_text = text
        return self

    def set_post_prompt(self, text: str) -> AgentBase:
        """The prompt for the post-call summary."""
        self._post_prompt = text
        return self

    def set_post_prompt_url(self, url: str) -> AgentBase:
        """Also POST each post-call summary to `url` (SignalWire's webhook body;
        retried on network errors, 408, 429 and 5xx)."""
        self._post_prompt_url = url
        return self

    async def _summary_done(self, summary: Any, raw_data: dict[str, Any]) -> None:
        """The summary to `on_summary`, then to the post-prompt URL."""
        result = self.on_summary(summary, raw_data)
        if inspect.isawaitable(result):
            await result
        if self._post_prompt_url:
            await post_summary(self._post_prompt_url, summary, raw_data)

    def _section(self, title: str) -> _Section:
        for section in self._sections:
            if section.title == title:
                return section
        section = _Section(title)
        self._sections.append(section)
        return section

    def get_prompt(self) -> str:
        """The system prompt, rendered as markdown."""
        if self._prompt_text is not None:
            return self._prompt_text
        parts: list[str] = []
        for i, section in enumerate(self._sections, 1):
            parts.append(_render(section, 2, f"{i}. " if section.numbered else ""))
        return "\n\n".join(parts).strip()

    # -- voice, hints, params, data ----------------------------------------------------------

    def add_language(
        self,
        name: str,
        code: str,
        voice: str,
        speech_fillers: list[str] | None = None,
        function_fillers: list[str] | None = None,
        engine: str | None = None,
        model: str | None = None,
    ) -> AgentBase:
        """Add a language; `voice` may be "engine.voice:model" (e.g. "rime.spore:mistv2").

        Cloud voices map onto a local TTS voice (see `mediaserver.agent.voices`);
        an unknown voice falls back by language, never an error.
        """
        parsed_engine, voice_name, parsed_model = _parse_voice(voice)
        engine = engine or parsed_engine
        model = model or parsed_model
        local = local_voice(code, voice_name, engine)
        log.info(
            "agent_voice",
            agent=self.name,
            language=code,
            voice=voice,
            local_backend=local.backend,
            local_voice=local.voice,
            why=local.reason,
        )
        self._languages.append(
            Language(
                name,
                code,
                voice_name,
                engine,
                model,
                local,
                tuple(speech_fillers or ()),
                tuple(function_fillers or ()),
            )
        )
        return self

    def add_hint(self, hint: str) -> AgentBase:
        """A word or phrase callers are likely to say (STT bias)."""
        self._hints.append(hint)
        return self

    def add_hints(self, hints: list[str]) -> AgentBase:
        """Several hints."""
        self._hints.extend(hints)
        return self

    def add_pronunciation(
        self, replace: str, with_text: str, ignore_case: bool = False
    ) -> AgentBase:
        """Say `with_text` wherever the agent's text has `replace` (a whole word or
        phrase); the records keep the written words."""
        self._pronunciations.append((replace, with_text, ignore_case))
        return self

    def set_pronunciations(self, pronunciations: list[dict[str, Any]]) -> AgentBase:
        """Replace all pronunciations: `[{"replace", "with", "ignore_case"}]`."""
        self._pronunciations = [
            (
                str(p["replace"]),
                str(p.get("with", p.get("with_text", ""))),
                bool(p.get("ignore_case")),
            )
            for p in pronunciations
        ]
        return self

    def set_param(self, key: str, value: Any) -> AgentBase:
        """One AI parameter (see `set_params`)."""
        self._params[key] = value
        return self

    def set_params(self, params: dict[str, Any]) -> AgentBase:
        """AI parameters, mapped onto the pipeline's settings.

        Known: end_of_speech_timeout, attention_timeout, inactivity_timeout
        (milliseconds, as in the SDK), barge_min_words, barge_min_speech (ms),
        enable_barge / barge_in (false turns barge-in off), barge_match_string,
        interrupt_on_noise, transparent_barge, transparent_barge_max_time (ms),
        acknowledge_interruptions, digit_timeout (ms), digit_terminators,
        turn_detection (false: the silence detector), turn_detection_timeout (ms),
        temperature,
        max_tokens, ai_model, static_greeting, and llm_backend, llm_base_url,
        llm_api_key, stt_backend, tts_backend. Others are logged once and ignored.
        """
        self._params.update(params)
        return self

    def set_global_data(self, data: dict[str, Any]) -> AgentBase:
        """Data every call starts with."""
        self._global_data = dict(data)
        return self

    def update_global_data(self, data: dict[str, Any]) -> AgentBase:
        """Merge into the data every call starts with."""
        self._global_data.update(data)
        return self

    # -- tools ------------------------------------------------------------------------------

    def define_tool(
        self,
        name: str,
        description: str,
        parameters: dict[str, Any],
        handler: Callable[..., Any],
        fillers: list[str] | dict[str, list[str]] | None = None,
        timeout: float | None = None,
        **extra: Any,
    ) -> AgentBase:
        """Add a tool with an explicit schema.

        `parameters` is either a JSON object schema or the SDK's properties map
        (`{"order_id": {"type": "string", ...}}`). The handler is either typed,
        `handler(order_id=..., raw_data=...)`, or the SDK's legacy
        `handler(args, raw_data)`.
        """
        options = _ToolOptions(name, description, parameters, _filler_list(fillers), timeout, extra)
        self._add_tool(handler, options)
        return self

    def _add_tool(self, func: Callable[..., Any], options: _ToolOptions) -> None:
        description, inferred = infer_schema(func)
        if _is_legacy(func):
            # handler(args, raw_data): the schema can only come from `parameters`.
            inferred = {"type": "object", "properties": {}}
        name = options.name or func.__name__
        schema = _object_schema(options.parameters) if options.parameters else inferred
        if name in self._tools:
            raise ValueError(f"agent {self.name!r}: two tools named {name!r}")
        self._tools[name] = Tool(
            ToolSpec(name, options.description or description or name, schema),
            _wrap_handler(func, name, schema),
            fillers=list(options.fillers or []),
            timeout=options.timeout,
        )

    def register_swaig_function(self, function_dict: dict[str, Any]) -> AgentBase:
        """Add a tool from its SDK definition: a DataMap tool (what
        `DataMap.to_swaig_function()` makes), run in this process.

        Raises:
            ValueError: no name, a name taken, or not a DataMap tool (the SDK's
                remote ``web_hook_url`` tools are not supported here).
        """
        name = str(function_dict.get("function") or "")
        if not name:
            raise ValueError("register_swaig_function: the definition has no 'function' name")
        if "data_map" not in function_dict:
            raise ValueError(
                f"register_swaig_function({name!r}): only DataMap tools (a 'data_map') are "
                "supported; remote web_hook_url functions are not"
            )
        if name in self._tools:
            raise ValueError(f"agent {self.name!r}: two tools named {name!r}")
        runner = DataMapTool(name, function_dict["data_map"])
        self._tools[name] = Tool(
            ToolSpec(
                name,
                str(function_dict.get("description") or name),
                _object_schema(function_dict.get("parameters") or {}),
            ),
            runner.__call__,
            fillers=_filler_list(function_dict.get("fillers")) or [],
        )
        return self

    @property
    def tools(self) -> dict[str, Tool]:
        """The agent's tools by name."""
        return dict(self._tools)

    # -- contexts and steps ----------------------------------------------------------------

    def define_contexts(self, contexts: dict[str, Any] | None = None) -> ContextBuilder:
        """The agent's contexts and steps (a `ContextBuilder` to fill in); or set
        them from the SDK's dictionary shape."""
        if contexts is not None:
            # The SDK's dictionary shape: read into a builder, so its rules apply.
            self._contexts = ContextBuilder.from_dict(dict(contexts))
        if self._contexts is None:
            self._contexts = ContextBuilder(self)
        return self._contexts

    @property
    def contexts(self) -> ContextBuilder:
        """The same builder as `define_contexts()`."""
        return self.define_contexts()

    def _contexts_spec(self) -> dict[str, Any] | None:
        """The contexts as the call runs them (validated), or None."""
        if self._contexts is None or not self._contexts.contexts:
            return None
        return self._contexts.to_dict()

    # -- per-call configuration -------------------------------------------------------------

    def set_dynamic_config_callback(
        self, callback: Callable[[dict[str, Any], dict[str, Any], dict[str, Any], Any], None]
    ) -> AgentBase:
        """Configure the agent per call: `callback(query_params, body_params,
        headers, agent)` gets a copy of this agent to change (prompt, params,
        languages, tools, skills, global data, contexts) and the call's SIP data:
        `body_params["call"]` has ``from``, ``to``, ``caller_id_name``, ``trunk``,
        ``headers``; `headers` the INVITE's headers (X- headers carry tenant
        data); `query_params` the Request-URI user's parameters (none for SIP).
        It runs in a thread before the call is answered; if it raises, the
        call gets the agent as configured here (logged and recorded)."""
        self._dynamic = callback
        return self

    def _per_call(self, base: PipelineSettings | None) -> Callable[[dict[str, Any]], AgentSpec]:
        """The spec factory the call runs with its SIP data (see above)."""
        callback = self._dynamic
        assert callback is not None

        def configure(info: dict[str, Any]) -> AgentSpec:
            agent = copy.copy(self)
            for attr in _PER_CALL_DATA:
                setattr(agent, attr, copy.deepcopy(getattr(self, attr)))
            for attr in _PER_CALL_SHALLOW:
                setattr(agent, attr, copy.copy(getattr(self, attr)))
            agent._dynamic = None
            headers = dict(info.get("headers") or {})
            call = {
                "from": info.get("caller_id_num", ""),
                "to": info.get("called", ""),
                "caller_id_name": info.get("caller_id_name", ""),
                "trunk": info.get("trunk"),
                "headers": headers,
            }
            callback({}, {"call": call}, headers, agent)
            return agent.to_spec(base)

        return configure

    # -- skills --------------------------------------------------------------------------------

    def add_skill(self, skill_name: str, params: dict[str, Any] | None = None) -> AgentBase:
        """Add a skill: built in ("datetime", "math", "joke", "weather_api",
        "wikipedia_search", "web_search"), an entry point of the
        ``mediaserver.skills`` group, or "module:Class".

        Raises:
            SkillError: unknown, already added, a missing parameter, package or
                environment variable, or its setup failed (the message names it).
        """
        skill = skill_class(skill_name)(self, params)
        key = skill.get_instance_key()
        if key in self._skills:
            raise SkillError(f"skill {key!r} is already added to agent {self.name!r}")
        if not skill.validate_packages() or not skill.validate_env_vars():
            raise SkillError(
                f"skill {skill_name!r} needs packages {skill.REQUIRED_PACKAGES} and "
                f"environment variables {skill.REQUIRED_ENV_VARS}"
            )
        if not skill.setup():
            raise SkillError(f"skill {skill_name!r}: setup failed (see the log)")
        before = set(self._tools)
        skill.register_tools()
        self.add_hints(skill.get_hints())
        self.update_global_data(skill.get_global_data())
        sections = skill.get_prompt_sections()
        for section in sections:
            self.prompt_add_section(**section)
        self._skills[key] = (skill, set(self._tools) - before, [s["title"] for s in sections])
        return self

    def remove_skill(self, skill_name: str) -> AgentBase:
        """Take a skill out again: its tools and prompt sections go with it."""
        for key, (skill, tools, titles) in list(self._skills.items()):
            if skill_name in (key, skill.SKILL_NAME):
                skill.cleanup()
                for tool in tools:
                    self._tools.pop(tool, None)
                self._sections = [s for s in self._sections if s.title not in titles]
                del self._skills[key]
        return self

    def list_skills(self) -> list[str]:
        """The keys of the skills added."""
        return list(self._skills)

    def has_skill(self, skill_name: str) -> bool:
        """Whether a skill of that name (or key) is added."""
        return any(skill_name in (k, s.SKILL_NAME) for k, (s, _, _) in self._skills.items())

    # -- building and running --------------------------------------------------------------------

    def pipeline_settings(self, base: PipelineSettings | None = None) -> PipelineSettings:
        """`base` (default settings when None) with this agent's params and voice applied."""
        data = (base or PipelineSettings()).model_dump()
        for key, value in self._params.items():
            if key in _PARAMS:
                path, scale = _PARAMS[key]
                section, attr = path.split(".")
                data[section][attr] = value * scale if scale != 1 else value
            elif key in ("enable_barge", "barge_in"):
                data["barge_in"]["enabled"] = _truthy(value)
            elif key == "turn_detection":
                # The SDK's switch for its own turn model: ours is Smart Turn.
                data["turn"]["detector"] = "smart_turn" if _truthy(value) else "silence"
            elif key == "turn_detection_timeout":
                data["turn"]["smart_turn"]["max_wait"] = float(value) / 1000
            elif key == "transparent_barge":
                data["barge_in"]["transparent"] = _truthy(value)
            elif key == "interrupt_on_noise":
                data["barge_in"]["interrupt_on_noise"] = _seconds_or_flag(value)
            elif key == "acknowledge_interruptions":
                # true: every interruption; a number: at most that many.
                flag = isinstance(value, bool) or str(value).lower() in _FLAGS
                data["barge_in"]["acknowledge"] = (
                    (1_000_000 if _truthy(value) else 0) if flag else int(value)
                )
            elif key not in _OTHER_PARAMS:
                self._log_once(f"param:{key}", "agent_param_unknown", param=key)
        eos = data["turn"]["end_of_speech_timeout"]
        if eos is not None and eos < 0.25:
            data["turn"]["end_of_speech_timeout"] = 0.25
        data["tts"]["pronunciations"] += [
            {"replace": r, "with_text": w, "ignore_case": i} for r, w, i in self._pronunciations
        ]
        if self._languages:
            local = self._languages[0].local
            data["tts"]["backend"], data["tts"]["voice"] = local.backend, local.voice
            fillers = self._languages[0].function_fillers
            if fillers:
                data["fillers"]["phrases"] = list(fillers)
        return PipelineSettings.model_validate(data)

    def greeting(self, settings: PipelineSettings) -> str | None:
        """What the agent says first: `static_greeting`, else the model decides;
        the offline scripted engine cannot, so it gets a plain hello."""
        static = self._params.get("static_greeting")
        if static:
            return str(static)
        if settings.llm.backend == "scripted":
            return f"Hello, this is {self.name}. How can I help you?"
        return None

    def to_spec(self, base: PipelineSettings | None = None) -> AgentSpec:
        """The `AgentSpec` the call actor runs."""
        settings = self.pipeline_settings(base)
        contexts = self._contexts_spec()
        greeting = self.greeting(settings)
        prompt = self.get_prompt() or f"You are {self.name}, a voice assistant."
        question = Flow(contexts, prompt).first_question() if contexts else None
        if greeting and question:
            greeting = f"{greeting} {question}"  # a gather step first: ask at once
        return AgentSpec(
            name=self.name,
            system_prompt=prompt,
            greeting=greeting,
            tools=list(self._tools.values()),
            hints=list(self._hints),
            settings=settings,
            global_data=copy.deepcopy(self._global_data),
            post_prompt=self._post_prompt,
            on_summary=self._summary_done if self._post_prompt else None,
            contexts=contexts,
            configure=self._per_call(base) if self._dynamic is not None else None,
        )

    def on_summary(self, summary: Any, raw_data: dict[str, Any] | None = None) -> Any:
        """Called after each call with the model's answer to `set_post_prompt`.

        Override it (sync or async). `summary` is the parsed JSON when the
        answer is JSON, else the text; `raw_data` has the call id, the
        conversation, the timeline, global data and why the call ended.
        """

    def dial(
        self,
        to: str,
        *,
        caller_id: str | None = None,
        caller_name: str | None = None,
        ring_timeout: float | None = None,
        variables: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        webhook: str | None = None,
        amd: str | None = None,
    ) -> dict[str, Any]:
        """Have this agent call `to` (a SIP URI, a number through the trunks, or a
        registered user) on the running server; it talks once the callee answers.

        Call it while `run()` serves (from a tool, a thread or a timer). Returns
        the call's ``id`` (for ``GET /calls/{id}``) and its state; `variables`
        go into the call's global data. See `mediaserver.outbound.DialRequest`.

        Raises:
            mediaserver.DialError: refused (bad request, destination not allowed,
                no capacity); nothing was dialed.
            RuntimeError: no server is running in this process.
        """
        options = {
            "caller_id": caller_id,
            "caller_name": caller_name,
            "ring_timeout": ring_timeout,
            "variables": variables,
            "idempotency_key": idempotency_key,
            "webhook": webhook,
            "amd": amd,
        }
        body: dict[str, Any] = {"to": to, "route": self.sip_user}
        body.update({k: v for k, v in options.items() if v is not None})
        return place_call(body)

    def run(self, host: str | None = None, port: int | None = None) -> None:
        """Start the whole server with this agent and block until SIGINT/SIGTERM."""
        from mediaserver.agent.server import AgentServer

        server = AgentServer(
            host or self.host, port if port is not None else self.port, config=self.config_path
        )
        server.register(self)
        server.run()

    def get_name(self) -> str:
        """The agent's name."""
        return self.name

    def get_post_prompt(self) -> str | None:
        """The post-call summary prompt."""
        return self._post_prompt

    def add_pattern_hint(
        self, hint: str, pattern: str, replace: str, ignore_case: bool = False
    ) -> AgentBase:
        """A hint (the SDK's transcript rewrite by `pattern` is not applied)."""
        self._log_once("pattern_hint", "agent_option_ignored", option="add_pattern_hint.pattern")
        return self.add_hint(hint)

    def serve(self, host: str | None = None, port: int | None = None) -> None:
        """The same as `run`."""
        self.run(host, port)

    def __getattr__(self, name: str) -> Any:
        if name in AGENT_LENIENT:

            def ignored(*args: Any, **kwargs: Any) -> AgentBase:
                # Web-hosting and SWML-document options: nothing to do in a media server.
                self._log_once(name, "agent_option_ignored", option=name)
                return self

            return ignored
        if name in AGENT_UNSUPPORTED:
            raise NotImplementedError(
                f"AgentBase.{name} (SignalWire Agents SDK) is not supported by mediaserver "
                "yet; docs/agents.md lists what is"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _log_once(self, once: str, event: str, **fields: Any) -> None:
        if once not in self._logged:
            self._logged.add(once)
            log.warning(event, agent=self.name, **fields)


def _render(section: _Section, level: int, prefix: str = "") -> str:
    lines = [f"{'#' * level} {prefix}{section.title}".rstrip()]
    if section.body:
        lines += ["", section.body.strip()]
    if section.bullets:
        lines.append("")
        for i, bullet in enumerate(section.bullets, 1):
            lines.append(f"{i}. {bullet}" if section.numbered_bullets else f"- {bullet}")
    for sub in section.subsections:
        lines += ["", _render(sub, level + 1)]
    return "\n".join(lines)


def _parse_voice(voice: str) -> tuple[str | None, str, str | None]:
    """Split "engine.voice:model": "rime.spore:mistv2" -> ("rime", "spore", "mistv2")."""
    model = None
    if ":" in voice:
        voice, model = voice.split(":", 1)
    engine = None
    if "." in voice:
        engine, voice = voice.split(".", 1)
    return engine, voice, model


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "no", "off", "0")
    return bool(value)


def _object_schema(parameters: dict[str, Any]) -> dict[str, Any]:
    """Accept a full object schema or the SDK's bare properties map."""
    if parameters.get("type") == "object" or "properties" in parameters:
        return {"type": "object", **parameters}
    return {"type": "object", "properties": dict(parameters)}


def _is_legacy(func: Callable[..., Any]) -> bool:
    """The SDK's old `handler(args, raw_data)` style."""
    names = [n for n in inspect.signature(func).parameters if n not in ("self", "cls")]
    return names == ["args", "raw_data"]


def _wrap_handler(func: Callable[..., Any], name: str, schema: dict[str, Any]) -> ToolHandler:
    """Validate arguments, call the handler its way, coerce what it returns.

    Handler styles: typed `func(order_id=..., raw_data=...)` (raw_data only if
    declared), or the SDK's legacy `func(args, raw_data)`.
    """
    params = [
        p
        for p in inspect.signature(func).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    names = [p.name for p in params]
    legacy = _is_legacy(func)
    wants_raw = "raw_data" in names
    accepts_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(func).parameters.values())

    def call(args: dict[str, Any], raw: dict[str, Any]) -> Any:
        checked = validate(schema, args)
        if legacy:
            return func(checked, raw)
        kwargs = {k: v for k, v in checked.items() if accepts_any or k in names}
        if wants_raw:
            kwargs["raw_data"] = raw
        return func(**kwargs)

    if inspect.iscoroutinefunction(func):

        async def call_async(args: dict[str, Any], raw: dict[str, Any]) -> SwaigFunctionResult:
            return coerce_result(await call(args, raw))

        return call_async

    def call_sync(args: dict[str, Any], raw: dict[str, Any]) -> SwaigFunctionResult:
        return coerce_result(call(args, raw))

    return call_sync
