"""How the agent layer starts a server without importing the layer above it.

`AgentServer.run` (and so `AgentBase.run`, as in the SignalWire SDK) starts the
SIP server, which sits above the agent layer. The package's top module installs
the real `serve` here when `mediaserver` is imported (always, before any of its
submodules), so the agent layer calls down into this module only.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mediaserver.call.spec import AgentSpec
    from mediaserver.config import Config

__all__ = ["dial", "install", "install_dialer", "serve"]

Serve = Callable[["Config", "dict[str, AgentSpec]"], Coroutine[Any, Any, int]]
Dialer = Callable[["dict[str, Any]"], "dict[str, Any]"]

_serve: Serve | None = None
_dialer: Dialer | None = None


def install(serve: Serve) -> None:
    """Make `serve` what starts a server (done by `mediaserver/__init__.py`)."""
    global _serve
    _serve = serve


def serve(config: Config, agents: dict[str, AgentSpec]) -> Coroutine[Any, Any, int]:
    """The coroutine that runs a server for `agents` until SIGINT/SIGTERM.

    Raises:
        RuntimeError: no server was installed (the package was not imported as
            `mediaserver`).
    """
    if _serve is None:
        raise RuntimeError("no server installed: import mediaserver first")
    return _serve(config, agents)


def install_dialer(dialer: Dialer | None) -> None:
    """Make `dialer` place outbound calls for `dial` (the running server sets it
    when it starts and clears it when it stops)."""
    global _dialer
    _dialer = dialer


def dial(request: dict[str, Any]) -> dict[str, Any]:
    """Place an outbound call on the running server (the body of `POST /calls`).

    Raises:
        RuntimeError: no server is running in this process.
        mediaserver.DialError: the request was refused; nothing was dialed.
    """
    if _dialer is None:
        raise RuntimeError("no server is running in this process: start it with run() first")
    return _dialer(request)
