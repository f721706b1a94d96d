"""Running DataMap tools in the call's process, with SignalWire's semantics.

Order: the `expressions` (the first whose expanded `string` matches its
regular expression `pattern` answers; a `nomatch-output` answers when its own
pattern does not match), then the `webhooks` in order until one succeeds (a 2xx
answer with a JSON body, none of its `error_keys` set; one whose
`require_args` are missing is skipped), its `foreach` and `expressions`, its
`output`; when every webhook failed, the DataMap's `output` (the fallback);
with none, an error answer the model can explain.

Variables are `${...}` (or `%{...}`) paths with dots and `[index]`: `args.x`
(also plain `x`), `global_data.x`, `meta_data.x`, `response.x` (an object
response; its keys also stand alone, `${current.temp_f}`), `array[0].x` (an
array response), `this.x` (the item in a `foreach` template), and a foreach's
`output_key`. A path that leads nowhere
is empty. Modifiers go before the path: ``lc:`` and ``uc:`` change the case,
``enc:`` percent-encodes (``${lc:enc:args.city}``). Values put into a URL are
percent-encoded; a body value that is one variable alone keeps its JSON type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from mediaserver.agent.result import SwaigFunctionResult, coerce_result

__all__ = ["DataMapTool", "expand", "lookup"]

log = structlog.get_logger("mediaserver.agent.data_map")

_VAR = re.compile(r"[$%]\{([^}]+)\}")
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
#: Items a foreach formats when its config gives no `max`.
_FOREACH_MAX = 100


def lookup(context: dict[str, Any], path: str) -> Any:
    """The value at `path` ("response.items[0].name") in `context`, or None."""
    path = path.strip()
    if path.startswith("input."):
        path = path[len("input.") :]
    value: Any = context
    for name, index in _PART.findall(path):
        if index:
            if not isinstance(value, list) or int(index) >= len(value):
                return None
            value = value[int(index)]
        elif isinstance(value, dict) and name in value:
            value = value[name]
        else:
            return None
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, default=str)


#: Modifiers before a path ("${lc:enc:args.city}"): lower/upper case, URL-encoding.
_MODIFIERS: dict[str, Callable[[str], str]] = {
    "lc": str.lower,
    "uc": str.upper,
    "enc": lambda s: quote(s, safe=""),
}


def _value_text(context: dict[str, Any], path: str) -> str:
    """The text of `path`, through its modifiers (applied right to left)."""
    *mods, path = path.split(":")
    text = _text(lookup(context, path))
    for mod in reversed(mods):
        change = _MODIFIERS.get(mod.strip())
        text = change(text) if change is not None else text
    return text


def _fill(text: str, context: dict[str, Any]) -> str:
    """`text` with every variable as text."""
    return _VAR.sub(lambda m: _value_text(context, m.group(1)), text)


def expand(template: Any, context: dict[str, Any], *, url: bool = False) -> Any:
    """`template` with its variables filled from `context`: strings inside
    dicts and lists too. A string that is one variable alone becomes that value
    (a number stays a number) unless `url`; in a URL values are percent-encoded."""
    if isinstance(template, dict):
        return {k: expand(v, context, url=url) for k, v in template.items()}
    if isinstance(template, list):
        return [expand(v, context, url=url) for v in template]
    if not isinstance(template, str):
        return template
    whole = _VAR.fullmatch(template)
    if whole and not url and ":" not in whole.group(1):
        value = lookup(context, whole.group(1))
        return "" if value is None else value

    if not url:
        return _fill(template, context)

    def in_url(match: re.Match[str]) -> str:
        path = match.group(1)
        text = _value_text(context, path)
        return text if "enc:" in path else quote(text, safe="")

    return _VAR.sub(in_url, template)


def _expand_output(output: Any, context: dict[str, Any]) -> SwaigFunctionResult:
    """An output (`{"response", "action"}`) with its variables as text."""

    def texts(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: texts(v) for k, v in node.items()}
        if isinstance(node, list):
            return [texts(v) for v in node]
        if isinstance(node, str):
            return _fill(node, context)
        return node

    expanded = texts(output)
    if isinstance(expanded, dict) and "response" not in expanded:
        expanded = {"response": "", **expanded}
    return coerce_result(expanded)


def _match(expr: dict[str, Any], context: dict[str, Any]) -> SwaigFunctionResult | None:
    """The expression's answer: its output on a match, its nomatch-output else."""
    value = _text(expand(expr.get("string", ""), context))
    try:
        hit = re.search(str(expr.get("pattern", "")), value) is not None
    except re.error as exc:
        log.warning("data_map_bad_pattern", pattern=expr.get("pattern"), error=str(exc))
        return None
    if hit and "output" in expr:
        return _expand_output(expr["output"], context)
    if not hit and "nomatch-output" in expr:
        return _expand_output(expr["nomatch-output"], context)
    return None


class DataMapTool:
    """One DataMap tool's handler: `await tool(args, raw)` -> its result.

    Args:
        name: the tool's name (for logs and the error answer).
        data_map: the definition's ``data_map`` (expressions, webhooks, output,
            error_keys).
        timeout: seconds for each webhook request.
    """

    def __init__(self, name: str, data_map: dict[str, Any], timeout: float = 10.0) -> None:
        if not isinstance(data_map, dict):
            raise ValueError(f"tool {name!r}: data_map must be a mapping")
        self.name = name
        self.data_map = data_map
        self.timeout = timeout

    async def __call__(self, args: dict[str, Any], raw: dict[str, Any]) -> SwaigFunctionResult:
        context: dict[str, Any] = {
            **args,
            "args": dict(args),
            "global_data": raw.get("global_data") or {},
            "meta_data": raw.get("meta_data") or {},
        }
        for expr in self.data_map.get("expressions") or []:
            answer = _match(expr, context)
            if answer is not None:
                return answer
        failures: list[str] = []
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=True) as client:
            for n, hook in enumerate(self.data_map.get("webhooks") or []):
                missing = [a for a in hook.get("require_args") or [] if args.get(a) in (None, "")]
                if missing:
                    failures.append(f"webhook {n + 1}: missing {', '.join(missing)}")
                    continue
                body, why = await self._request(client, hook, context)
                if why:
                    failures.append(f"webhook {n + 1}: {why}")
                    log.info("data_map_webhook_failed", tool=self.name, webhook=n + 1, why=why)
                    continue
                return self._answer(hook, body, context)
        if "output" in self.data_map:
            return _expand_output(self.data_map["output"], context)
        reason = "; ".join(failures) or "no expression matched and it has no webhook"
        return SwaigFunctionResult(f"The {self.name} tool could not get an answer ({reason}).")

    async def _request(
        self, client: httpx.AsyncClient, hook: dict[str, Any], context: dict[str, Any]
    ) -> tuple[Any, str]:
        """(the JSON answer, "") on success, else (None, why it failed)."""
        method = str(hook.get("method", "POST")).upper()
        url = expand(str(hook.get("url", "")), context, url=True)
        headers = {k: _text(expand(v, context)) for k, v in (hook.get("headers") or {}).items()}
        data = expand(hook.get("params", hook.get("body")), context)
        if hook.get("input_args_as_params"):
            data = {**context["args"], **(data if isinstance(data, dict) else {})}
        request: dict[str, Any] = {"headers": headers}
        if method in ("GET", "DELETE") and isinstance(data, dict):
            request["params"] = {k: _text(v) for k, v in data.items()}
        elif hook.get("form_param") and data is not None:
            request["data"] = {str(hook["form_param"]): json.dumps(data)}
        elif isinstance(data, str):
            request["content"] = data
        elif data is not None:
            request["json"] = data
        try:
            response = await client.request(method, url, **request)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        if not 200 <= response.status_code <= 299:
            return None, f"HTTP {response.status_code}"
        try:
            body = response.json()
        except ValueError:
            return None, "the answer is not JSON"
        keys = hook.get("error_keys", self.data_map.get("error_keys")) or []
        keys = [keys] if isinstance(keys, str) else keys
        if isinstance(body, dict):
            for key in ("parse_error", "protocol_error", *keys):
                if body.get(key):
                    return None, f"error key {key!r} in the answer"
        return body, ""

    def _answer(
        self, hook: dict[str, Any], body: Any, context: dict[str, Any]
    ) -> SwaigFunctionResult:
        """A successful webhook's answer: foreach, its expressions, its output."""
        if isinstance(body, list):
            context = {**context, "array": body}
        else:
            # The response's keys are variables of their own too ("${current.temp_f}"),
            # before the plain argument names; the named roots stay as they are.
            roots = {k: context[k] for k in ("args", "global_data", "meta_data")}
            context = {**context, **(body if isinstance(body, dict) else {}), **roots}
            context["response"] = body
        each = hook.get("foreach")
        if isinstance(each, dict):
            context[str(each.get("output_key", "result"))] = _foreach(each, context)
        for expr in hook.get("expressions") or []:
            answer = _match(expr, context)
            if answer is not None:
                return answer
        if "output" in hook:
            return _expand_output(hook["output"], context)
        return coerce_result(body)


def _foreach(each: dict[str, Any], context: dict[str, Any]) -> str:
    """The items of the array `input_key` names, each through `append`."""
    key = str(each.get("input_key", ""))
    var = _VAR.fullmatch(key)
    if var:
        items = lookup(context, var.group(1))
    else:
        items = lookup(context, f"response.{key}")
        if items is None and key == "array":
            items = context.get("array")
    if not isinstance(items, list):
        return ""
    template = str(each.get("append", "${this.value}"))
    limit = int(each.get("max", _FOREACH_MAX))
    parts = []
    for item in items[:limit]:
        this = item if isinstance(item, dict) else {"value": item}
        parts.append(_fill(template, {**context, "this": this}))
    return "".join(parts)
