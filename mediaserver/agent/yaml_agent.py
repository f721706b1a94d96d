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

A tool is one of: `response` (a template filled with the arguments),
`function` ("package.module:function", called with the arguments as keywords),
or `http` (a request built from a URL template; the reply's JSON fills the
`response` template). A mistake gives one line naming the file, the line and
the key: `agent.yaml:14: tools.0.parameters: Input should be a valid dictionary`.
"""

from __future__ import annotations

import inspect
import urllib.parse
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from mediaserver.agent.base import AgentBase
from mediaserver.agent.targets import fill, import_callable
from mediaserver.config import ConfigError
from mediaserver.strict import Strict


class Section(Strict):
    """A prompt section."""

    title: str
    body: str = ""
    bullets: list[str] = Field(default_factory=list)
    numbered: bool = False
    numbered_bullets: bool = False
    subsections: list[dict[str, Any]] = Field(default_factory=list)


class LanguageEntry(Strict):
    """An `add_language` call."""

    name: str
    code: str
    voice: str
    speech_fillers: list[str] = Field(default_factory=list)
    function_fillers: list[str] = Field(default_factory=list)
    engine: str | None = None
    model: str | None = None


class HttpRequest(Strict):
    """A data tool that calls a web service."""

    url: str
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(5.0, gt=0)


class ToolEntry(Strict):
    """A tool: a template, a Python function or an HTTP request."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    description: str = ""
    #: The SDK's properties map: {arg: {type: string, description: ...}}.
    parameters: dict[str, dict[str, Any]] = Field(default_factory=dict)
    required: list[str] = Field(default_factory=list)
    response: str | None = None
    function: str | None = Field(None, pattern=r"^[\w.]+:[\w.]+$")
    http: HttpRequest | None = None
    fillers: list[str] = Field(default_factory=list)
    timeout: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _kind(self) -> ToolEntry:
        if self.function is not None and (self.response is not None or self.http is not None):
            raise ValueError("a tool has either `function`, or `response` (with optional `http`)")
        if self.function is None and self.response is None:
            raise ValueError("a tool needs `function` or `response`")
        unknown = [r for r in self.required if r not in self.parameters]
        if unknown:
            raise ValueError(f"required names unknown parameters: {', '.join(unknown)}")
        return self


class AgentFile(Strict):
    """The whole YAML agent."""

    name: str
    route: str = "/"
    prompt: list[Section] | str = Field(default_factory=list)
    post_prompt: str | None = None
    languages: list[LanguageEntry] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    hints: list[str] = Field(default_factory=list)
    global_data: dict[str, Any] = Field(default_factory=dict)
    tools: list[ToolEntry] = Field(default_factory=list)


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
    return _build(spec, path)


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


def _build(spec: AgentFile, path: Path) -> AgentBase:
    agent = AgentBase(name=spec.name, route=spec.route)
    if isinstance(spec.prompt, str):
        agent.set_prompt_text(spec.prompt)
    else:
        for section in spec.prompt:
            agent.prompt_add_section(
                section.title,
                section.body,
                section.bullets,
                section.numbered,
                section.numbered_bullets,
                section.subsections,
            )
    if spec.post_prompt:
        agent.set_post_prompt(spec.post_prompt)
    for lang in spec.languages:
        agent.add_language(
            lang.name,
            lang.code,
            lang.voice,
            lang.speech_fillers or None,
            lang.function_fillers or None,
            lang.engine,
            lang.model,
        )
    agent.set_params(spec.params)
    agent.add_hints(spec.hints)
    agent.set_global_data(spec.global_data)
    for i, tool in enumerate(spec.tools):
        parameters: dict[str, Any] = {"type": "object", "properties": dict(tool.parameters)}
        if tool.required:
            parameters["required"] = list(tool.required)
        agent.define_tool(
            tool.name,
            tool.description or tool.name,
            parameters,
            _handler(tool, f"{path}: tools.{i}"),
            fillers=tool.fillers or None,
            timeout=tool.timeout,
        )
    return agent


def _handler(tool: ToolEntry, where: str) -> Any:
    """A legacy-style handler(args, raw_data) for the tool."""
    if tool.function is not None:
        target = import_callable(tool.function, f"{where}.function")
        if inspect.iscoroutinefunction(target):
            # Awaited by the tool runner, not called in a thread.
            async def call_async(args: dict[str, Any], raw_data: dict[str, Any]) -> Any:
                return await target(**args)

            return call_async

        def call_function(args: dict[str, Any], raw_data: dict[str, Any]) -> Any:
            return target(**args)

        return call_function
    template = tool.response or ""
    request = tool.http
    if request is None:

        def fill_template(args: dict[str, Any], raw_data: dict[str, Any]) -> str:
            return fill(template, args)

        return fill_template

    def call_http(args: dict[str, Any], raw_data: dict[str, Any]) -> str:
        import httpx

        quoted = {k: urllib.parse.quote(str(v), safe="") for k, v in args.items()}
        url = fill(request.url, quoted)
        with httpx.Client(timeout=request.timeout) as client:
            if request.method == "GET":
                reply = client.get(url, headers=request.headers)
            else:
                reply = client.post(url, headers=request.headers, json=args)
        reply.raise_for_status()
        body = reply.json() if "json" in reply.headers.get("content-type", "") else {}
        values = {**args, **(body if isinstance(body, dict) else {"result": body})}
        return fill(template, values)

    return call_http
