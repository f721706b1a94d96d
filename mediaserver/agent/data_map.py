"""`DataMap`: declarative tools, as in the SignalWire Agents SDK.

A DataMap tool has no Python handler: it is a description of what to do with
the model's arguments (match them against patterns, call HTTP APIs, format
their JSON into the answer) that the server carries out. On SignalWire's
platform that happens in their cloud; here the call's own process runs it
(`mediaserver.agent.data_map_exec`), with the same processing order and
variables, so an agent's DataMap tools work unchanged:

    weather = (DataMap("get_weather")
        .purpose("Get the current weather for a city")
        .parameter("city", "string", "The city", required=True)
        .webhook("GET", "https://api.weatherapi.com/v1/current.json?key=KEY&q=${args.city}")
        .output(SwaigFunctionResult("It is ${response.current.condition.text} in ${args.city}"))
        .fallback_output(SwaigFunctionResult("The weather service is not answering.")))
    agent.register_swaig_function(weather.to_swaig_function())

The builder makes the SDK's wire shape (`to_swaig_function`), which is also
what an agent may pass to `register_swaig_function` directly (and what a YAML
agent's `data_map:` tool holds).
"""

from __future__ import annotations

import re
from typing import Any

from mediaserver.agent.result import SwaigFunctionResult

__all__ = ["DataMap", "create_expression_tool", "create_simple_api_tool"]


class DataMap:
    """Builder of one DataMap tool (chainable; see the module docstring)."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self._purpose = ""
        self._properties: dict[str, dict[str, Any]] = {}
        self._required: list[str] = []
        self._expressions: list[dict[str, Any]] = []
        self._webhooks: list[dict[str, Any]] = []
        self._output: dict[str, Any] | None = None
        self._error_keys: list[str] = []

    def purpose(self, description: str) -> DataMap:
        """What the tool does (the model reads it)."""
        self._purpose = description
        return self

    description = purpose

    def parameter(
        self,
        name: str,
        param_type: str,
        description: str,
        required: bool = False,
        enum: list[str] | None = None,
    ) -> DataMap:
        """An argument of the tool (JSON-schema `param_type`)."""
        spec: dict[str, Any] = {"type": param_type, "description": description}
        if enum:
            spec["enum"] = list(enum)
        self._properties[name] = spec
        if required and name not in self._required:
            self._required.append(name)
        return self

    def expression(
        self,
        test_value: str,
        pattern: str | re.Pattern[str],
        output: SwaigFunctionResult,
        nomatch_output: SwaigFunctionResult | None = None,
    ) -> DataMap:
        """When `test_value` (a template, e.g. "${args.command}") matches the
        regular expression `pattern`, answer `output` without any webhook."""
        expr: dict[str, Any] = {
            "string": test_value,
            "pattern": pattern.pattern if isinstance(pattern, re.Pattern) else str(pattern),
            "output": output.to_dict(),
        }
        if nomatch_output is not None:
            expr["nomatch-output"] = nomatch_output.to_dict()
        self._expressions.append(expr)
        return self

    def webhook(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        form_param: str | None = None,
        input_args_as_params: bool = False,
        require_args: list[str] | None = None,
    ) -> DataMap:
        """An HTTP request (tried in order until one succeeds); `url` and
        `headers` may hold variables."""
        hook: dict[str, Any] = {"url": url, "method": method.upper()}
        if headers:
            hook["headers"] = dict(headers)
        if form_param:
            hook["form_param"] = form_param
        if input_args_as_params:
            hook["input_args_as_params"] = True
        if require_args:
            hook["require_args"] = list(require_args)
        self._webhooks.append(hook)
        return self

    def _last(self, what: str) -> dict[str, Any]:
        if not self._webhooks:
            raise ValueError(f"DataMap {self.function_name!r}: add a webhook before {what}")
        return self._webhooks[-1]

    def webhook_expressions(self, expressions: list[dict[str, Any]]) -> DataMap:
        """Expressions checked on the last webhook's response before its output."""
        self._last("webhook_expressions")["expressions"] = list(expressions)
        return self

    def body(self, data: dict[str, Any]) -> DataMap:
        """The last webhook's JSON body (values may hold variables)."""
        self._last("body")["body"] = data
        return self

    def params(self, data: dict[str, Any]) -> DataMap:
        """The last webhook's parameters (query string for GET, else the JSON body)."""
        self._last("params")["params"] = data
        return self

    def foreach(self, foreach_config: dict[str, Any]) -> DataMap:
        """Format every item of an array in the last webhook's response:
        `{"input_key", "output_key", "append", "max"}` (`${this.x}` is the item)."""
        if not isinstance(foreach_config, dict):
            raise ValueError("foreach_config must be a dictionary")
        missing = [k for k in ("input_key", "output_key", "append") if k not in foreach_config]
        if missing:
            raise ValueError(f"foreach config missing required keys: {missing}")
        self._last("foreach")["foreach"] = dict(foreach_config)
        return self

    def output(self, result: SwaigFunctionResult) -> DataMap:
        """The answer when the last webhook succeeds."""
        self._last("output")["output"] = result.to_dict()
        return self

    def fallback_output(self, result: SwaigFunctionResult) -> DataMap:
        """The answer when no expression matched and every webhook failed."""
        self._output = result.to_dict()
        return self

    def error_keys(self, keys: list[str]) -> DataMap:
        """Keys whose presence in the response means failure (the last webhook's,
        or every webhook's before the first one is added)."""
        if self._webhooks:
            self._webhooks[-1]["error_keys"] = list(keys)
        else:
            self._error_keys = list(keys)
        return self

    def global_error_keys(self, keys: list[str]) -> DataMap:
        """Error keys for every webhook."""
        self._error_keys = list(keys)
        return self

    def to_swaig_function(self) -> dict[str, Any]:
        """The SDK's function definition with its `data_map`."""
        schema: dict[str, Any] = {"type": "object", "properties": dict(self._properties)}
        if self._required:
            schema["required"] = list(self._required)
        data_map: dict[str, Any] = {}
        if self._expressions:
            data_map["expressions"] = list(self._expressions)
        if self._webhooks:
            data_map["webhooks"] = list(self._webhooks)
        if self._output is not None:
            data_map["output"] = self._output
        if self._error_keys:
            data_map["error_keys"] = list(self._error_keys)
        return {
            "function": self.function_name,
            "description": self._purpose or f"Execute {self.function_name}",
            "parameters": schema,
            "data_map": data_map,
        }


def _with_parameters(data_map: DataMap, parameters: dict[str, dict[str, Any]] | None) -> DataMap:
    for name, spec in (parameters or {}).items():
        data_map.parameter(
            name,
            spec.get("type", "string"),
            spec.get("description", f"{name} parameter"),
            required=bool(spec.get("required", False)),
        )
    return data_map


def create_simple_api_tool(
    name: str,
    url: str,
    response_template: str,
    parameters: dict[str, dict[str, Any]] | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    error_keys: list[str] | None = None,
) -> DataMap:
    """One webhook whose JSON fills `response_template`."""
    data_map = _with_parameters(DataMap(name), parameters).webhook(method, url, headers)
    if body:
        data_map.body(body)
    if error_keys:
        data_map.error_keys(error_keys)
    return data_map.output(SwaigFunctionResult(response_template))


def create_expression_tool(
    name: str,
    patterns: dict[str, tuple[str, SwaigFunctionResult]],
    parameters: dict[str, dict[str, Any]] | None = None,
) -> DataMap:
    """Answers chosen by patterns: `{test_value: (pattern, result)}`."""
    data_map = _with_parameters(DataMap(name), parameters)
    for test_value, (pattern, result) in patterns.items():
        data_map.expression(test_value, pattern, result)
    return data_map
