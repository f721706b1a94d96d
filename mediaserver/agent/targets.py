"""Shared by the config-declared agents (routes' inline `agent:` and YAML agent files):
resolving "module:function" tool targets and filling response templates."""

from __future__ import annotations

import importlib
import string
from collections.abc import Callable
from typing import Any

from mediaserver.config import ConfigError


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
