"""Agents declared in YAML: the same agent as an `AgentBase` program, without code.

    name: Support Agent
    route: /support
    prompt:
      - title: Instructions
        body: You are a customer support agent. Greet the caller and resolve their issue.
    languages:
      - {name: English, code: en-US, voice: "rime.spore:mistv2"}
    params: {end_of_speech_timeout: 700}
    hints: [order, refund]
    tools:
      - name: check_order
        description: Check the status of a customer order.
        parameters:
          order_id: {type: string, description: The order ID to look up}
        required: [order_id]
        response: "Order {order_id}: shipped, ETA April 2nd"

The schema is the one of a route's inline agent (`config.AgentConfig`): a
file may also use `greeting`, `replies`, `fallback` and `pipeline`, and a
route's agent may use `languages`, `params`, `post_prompt` and `global_data`.
A tool is one of: `response` (a template filled with the arguments),
`function` ("package.module:function", called with the arguments as keywords),
`http` (a request built from a URL template; the reply's JSON fills the
`response` template), or `data_map` (the SDK's DataMap: expressions, webhooks,
foreach, output, run in-process). `skills` adds skills by name, with their
parameters: `[datetime, {name: web_search, params: {api_key: ...}}]`; `contexts`
contexts and steps in the SDK's dictionary shape. A tool's
`parameters` are the SDK's properties map (with `required`) or a JSON object
schema. A mistake gives one line naming the file, the line and the key:
`agent.yaml:14: tools.0.parameters: Input should be a valid dictionary`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from mediaserver.agent.base import AgentBase
from mediaserver.agent.from_config import ConfigAgent
from mediaserver.config import AgentConfig, ConfigError, PromptSection


class AgentFile(AgentConfig):
    """A YAML agent file: the one agent schema (`config.AgentConfig`), with a
    required name, a route, and the SDK's defaults (no prompt text: "You are
    NAME, a voice assistant."; no greeting: `params.static_greeting`)."""

    name: str
    route: str = "/"
    prompt: list[PromptSection] | str = Field(default_factory=list)
    greeting: str | None = None


def is_agent_file(data: object) -> bool:
    """Whether parsed YAML looks like an agent (not a server config)."""
    return isinstance(data, dict) and "name" in data and not {"sip", "routes"} & set(data)


def load_agent(path: str | Path) -> AgentBase:
    """Read a YAML agent and build its `AgentBase`.

    Raises:
        ConfigError: one line naming the file, the line and the key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an agent file is a mapping (name, route, prompt, tools...)")
    try:
        spec = AgentFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p[:1].isupper())]
        key = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(node, loc)
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}:{line}: {key}: {msg}") from None
    return ConfigAgent(spec, name=spec.name, route=spec.route, where=f"{path}: ")


def _line_of(node: yaml.Node | None, loc: list[Any]) -> int:
    """The 1-based line of the deepest node `loc` reaches."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
