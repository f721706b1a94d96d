"""Config-declared agents (a route's inline `agent:` or a YAML agent file) as
`AgentBase` agents: one builder, so both kinds get the same prompt sections,
languages, params, tools and handlers as an agent written in Python.
"""

from __future__ import annotations

import dataclasses

from mediaserver.agent.base import AgentBase
from mediaserver.agent.skills import SkillError
from mediaserver.agent.targets import tool_handler
from mediaserver.call.spec import AgentSpec, Reply
from mediaserver.config import AgentConfig, ConfigError, agent_pipeline
from mediaserver.pipeline.settings import PipelineSettings

__all__ = ["ConfigAgent", "route_agent"]


class ConfigAgent(AgentBase):
    """The `AgentBase` an `AgentConfig` declares.

    Args:
        cfg: the agent's config.
        name: its name (the config's, or the route's user).
        route: its route ("/support": SIP user "support").
        where: where the config is, for errors ("routes.support.agent.", "a.yaml: ").

    Raises:
        ConfigError: a tool's function cannot be imported (the key is named).
    """

    def __init__(self, cfg: AgentConfig, *, name: str, route: str, where: str) -> None:
        super().__init__(name=name, route=route)
        self.config = cfg
        self._where = where
        if isinstance(cfg.prompt, str):
            self.set_prompt_text(cfg.prompt)
        else:
            for section in cfg.prompt:
                self.prompt_add_section(
                    section.title,
                    section.body,
                    section.bullets,
                    section.numbered,
                    section.numbered_bullets,
                    section.subsections,
                )
        if cfg.post_prompt:
            self.set_post_prompt(cfg.post_prompt)
        for lang in cfg.languages:
            self.add_language(
                lang.name,
                lang.code,
                lang.voice,
                lang.speech_fillers or None,
                lang.function_fillers or None,
                lang.engine,
                lang.model,
            )
        self.set_params(cfg.params)
        self.add_hints(cfg.hints)
        self.set_global_data(cfg.global_data)
        if cfg.contexts:
            try:
                self.define_contexts(cfg.contexts).validate()
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{where}contexts: {exc}") from None
        for i, skill in enumerate(cfg.skills):
            name, params = (skill, {}) if isinstance(skill, str) else (skill.name, skill.params)
            try:
                self.add_skill(name, params)
            except SkillError as exc:
                raise ConfigError(f"{where}skills.{i}: {exc}") from None
        for i, tool in enumerate(cfg.tools):
            if tool.data_map is not None:
                self.register_swaig_function(
                    {
                        "function": tool.name,
                        "description": tool.description or tool.name,
                        "parameters": tool.object_schema(),
                        "data_map": tool.data_map,
                        "fillers": tool.fillers,
                    }
                )
                continue
            self.define_tool(
                tool.name,
                tool.description or tool.name,
                tool.object_schema(),
                tool_handler(tool, f"{where}tools.{i}"),
                fillers=tool.fillers or None,
                timeout=tool.timeout,
            )

    def to_spec(self, base: PipelineSettings | None = None) -> AgentSpec:
        """The `AgentSpec`, with the config's `pipeline` overrides, greeting and
        scripted replies applied.

        Raises:
            ConfigError: an override is invalid (the message names the full key).
        """
        cfg = self.config
        try:
            settings = agent_pipeline(base or PipelineSettings(), cfg, f"{self._where}pipeline")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        spec = super().to_spec(settings)
        greeting = spec.greeting
        # A greeting the config gives wins; the default one yields to static_greeting.
        if "greeting" in cfg.model_fields_set or (
            cfg.greeting is not None and not cfg.params.get("static_greeting")
        ):
            greeting = cfg.greeting
        return dataclasses.replace(
            spec,
            greeting=greeting,
            replies=[Reply(tuple(r.match), r.reply) for r in cfg.replies],
            fallback=cfg.fallback,
        )


def route_agent(user: str, cfg: AgentConfig, pipeline: PipelineSettings) -> AgentSpec:
    """The `AgentSpec` of route `user`'s inline agent.

    Raises:
        ConfigError: a tool cannot be imported or an override is invalid.
    """
    where = f"routes.{user}.agent."
    agent = ConfigAgent(cfg, name=cfg.name or user, route=f"/{user}", where=where)
    return agent.to_spec(pipeline)
