"""Shared by the config-declared agents (routes' inline `agent:` and YAML agent files):
resolving "module:function" tool targets, filling response templates, and the
one handler every config-declared tool gets (`tool_handler`)."""

from __future__ import annotations

import importlib
import inspect
import string
import urllib.parse
from collections.abc import Callable
from typing import Any

from mediaserver.config import ConfigError, HttpRequest, ToolConfig


def import_callable(spec: str, where: str) -> Callable[..., Any]:
    """The callable named "package.module:attr.path".

    Raises:
        ConfigError: it cannot be imported or is not callable (`where` names the key).
    """
    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}: cannot import {spec}: {exc}") from None
    if not callable(target):
        raise ConfigError(f"{where}: {spec} is not callable")
    return target  # type: ignore[no-any-return]


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def fill(template: str, values: dict[str, Any]) -> str:
    """`template` with {names} from `values`; names without a value become empty."""
    return string.Formatter().vformat(template, (), _Blank(values))


def tool_handler(tool: ToolConfig, where: str) -> Callable[[dict[str, Any], dict[str, Any]], Any]:
    """The SDK-style `handler(args, raw_data)` of a config-declared tool: its
    function (awaited when it is a coroutine function), its template, or its
    template filled from a web service.

    Raises:
        ConfigError: the function cannot be imported (`where` names the key).
    """
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
        return fill(template, _fetch(request, args))

    return call_http


def _fetch(request: HttpRequest, args: dict[str, Any]) -> dict[str, Any]:
    """`args` plus the fields of the web service's JSON answer (a list as "result")."""
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
    return {**args, **(body if isinstance(body, dict) else {"result": body})}
