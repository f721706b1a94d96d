"""Skills: packaged capabilities an agent adds with one line, as in the
SignalWire Agents SDK (`agent.add_skill("datetime")`,
`agent.add_skill("web_search", {"api_key": ..., "search_engine_id": ...})`).

A skill is a `SkillBase` subclass: `setup()` checks its parameters, then
`register_tools()` adds its tools (Python handlers or DataMap tools) to the
agent, and its hints, global data and prompt sections are merged in. Built in:
``datetime``, ``math``, ``joke``, ``weather_api``, ``wikipedia_search`` and
``web_search``. Others come from an entry point in the ``mediaserver.skills``
group, or by module path (``"mypackage.skills:MySkill"``).
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

if TYPE_CHECKING:
    from mediaserver.agent.result import SwaigFunctionResult

__all__ = ["SkillBase", "SkillError", "skill_class"]

#: Built-in skills: name -> "module:Class" under this package.
_BUILTIN = {
    "datetime": "datetime_skill:DateTimeSkill",
    "math": "math_skill:MathSkill",
    "joke": "web_skills:JokeSkill",
    "weather_api": "web_skills:WeatherApiSkill",
    "wikipedia_search": "web_skills:WikipediaSearchSkill",
    "web_search": "web_skills:WebSearchSkill",
}


class SkillError(ValueError):
    """A skill cannot be added (unknown, a missing key or package, bad parameters)."""


class SkillBase:
    """The SDK's skill interface.

    Subclasses set `SKILL_NAME` and `SKILL_DESCRIPTION`, implement `setup`
    (True when the parameters are usable) and `register_tools`, and may give
    hints, global data and prompt sections.
    """

    SKILL_NAME: ClassVar[str | None] = None
    SKILL_DESCRIPTION: ClassVar[str | None] = None
    SKILL_VERSION: ClassVar[str] = "1.0.0"
    REQUIRED_PACKAGES: ClassVar[list[str]] = []
    REQUIRED_ENV_VARS: ClassVar[list[str]] = []
    SUPPORTS_MULTIPLE_INSTANCES: ClassVar[bool] = False

    def __init__(self, agent: Any, params: dict[str, Any] | None = None) -> None:
        # `agent` is the AgentBase adding the skill (typed Any: it imports this module).
        if self.SKILL_NAME is None or self.SKILL_DESCRIPTION is None:
            raise SkillError(f"{type(self).__name__} must define SKILL_NAME and SKILL_DESCRIPTION")
        self.agent = agent
        self.params = dict(params or {})
        self.logger = structlog.get_logger(f"mediaserver.skills.{self.SKILL_NAME}")
        #: Extra SWAIG fields merged into every tool the skill defines.
        self.swaig_fields: dict[str, Any] = dict(self.params.pop("swaig_fields", None) or {})

    def setup(self) -> bool:
        """Check parameters and prepare; False when the skill cannot work."""
        raise NotImplementedError

    def register_tools(self) -> None:
        """Add the skill's tools to `self.agent`."""
        raise NotImplementedError

    def define_tool(self, **kwargs: Any) -> None:
        """`agent.define_tool` with the skill's `swaig_fields` merged in."""
        self.agent.define_tool(**{**self.swaig_fields, **kwargs})

    def get_hints(self) -> list[str]:
        """Words callers use with this skill (STT bias)."""
        return []

    def get_global_data(self) -> dict[str, Any]:
        """Data merged into the agent's global data."""
        return {}

    def get_prompt_sections(self) -> list[dict[str, Any]]:
        """Prompt sections to add (none when the ``skip_prompt`` parameter is set)."""
        return [] if self.params.get("skip_prompt") else self._get_prompt_sections()

    def _get_prompt_sections(self) -> list[dict[str, Any]]:
        return []

    def cleanup(self) -> None:
        """Called when the skill is removed."""

    def validate_env_vars(self) -> bool:
        """Whether every `REQUIRED_ENV_VARS` is set."""
        missing = [v for v in self.REQUIRED_ENV_VARS if not os.environ.get(v)]
        if missing:
            self.logger.error("skill_env_missing", missing=missing)
        return not missing

    def validate_packages(self) -> bool:
        """Whether every `REQUIRED_PACKAGES` imports."""
        missing = []
        for package in self.REQUIRED_PACKAGES:
            try:
                importlib.import_module(package)
            except ImportError:
                missing.append(package)
        if missing:
            self.logger.error("skill_packages_missing", missing=missing)
        return not missing

    def get_instance_key(self) -> str:
        """The key the agent keeps this instance under (one per skill, or per
        ``tool_name`` for skills that may be added more than once)."""
        if not self.SUPPORTS_MULTIPLE_INSTANCES:
            return str(self.SKILL_NAME)
        return f"{self.SKILL_NAME}_{self.params.get('tool_name', self.SKILL_NAME)}"

    def _get_skill_namespace(self) -> str:
        prefix = self.params.get("prefix")
        return f"skill:{prefix}" if prefix else f"skill:{self.get_instance_key()}"

    def get_skill_data(self, raw_data: dict[str, Any]) -> dict[str, Any]:
        """This instance's state in the call's global data."""
        data = (raw_data.get("global_data") or {}).get(self._get_skill_namespace(), {})
        return dict(data) if isinstance(data, dict) else {}

    def update_skill_data(
        self, result: SwaigFunctionResult, data: dict[str, Any]
    ) -> SwaigFunctionResult:
        """Store this instance's state in the call's global data (via `result`)."""
        return result.update_global_data({self._get_skill_namespace(): data})

    def require_params(self, *names: str) -> None:
        """Raise `SkillError` naming the parameters that are missing."""
        missing = [n for n in names if not self.params.get(n)]
        if missing:
            raise SkillError(
                f"skill {self.SKILL_NAME!r} needs the parameter(s) {', '.join(missing)}"
            )


def skill_class(name: str) -> type[SkillBase]:
    """The class of the skill `name`: built in, an entry point of the
    ``mediaserver.skills`` group, or a "module:Class" path.

    Raises:
        SkillError: no such skill, or it is not a `SkillBase`.
    """
    target = _BUILTIN.get(name)
    if target is not None:
        target = f"{__name__}.{target}"
    elif ":" in name:
        target = name
    else:
        found = [ep for ep in entry_points(group="mediaserver.skills") if ep.name == name]
        if not found:
            known = ", ".join(sorted(_BUILTIN))
            raise SkillError(f"unknown skill {name!r} (built in: {known}; or 'module:Class')")
        target = found[0].value
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SkillError(f"skill {name!r}: cannot load {target}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, SkillBase)):
        raise SkillError(f"skill {name!r}: {target} is not a SkillBase")
    return cls
