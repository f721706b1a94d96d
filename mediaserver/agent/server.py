"""`AgentServer`: several Python agents on one server, each on its own SIP user.

    server = AgentServer(host="0.0.0.0", port=5060)
    server.register(SupportAgent())        # sip:support@HOST
    server.register(SalesAgent())          # sip:sales@HOST
    server.run()

`AgentBase.run()` is this with one agent. A server config file (the same YAML
`mediaserver run` takes) supplies everything but the agents and the SIP
address: media ports, pipeline models, logging, extra built-in routes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Protocol

from mediaserver.agent.runner import dial as place_call
from mediaserver.agent.runner import serve
from mediaserver.call.spec import AgentSpec
from mediaserver.config import Config, ConfigError, Listen, Route, load_config
from mediaserver.pipeline.settings import PipelineSettings


class Servable(Protocol):
    """What the server needs of an agent (`AgentBase` is one)."""

    name: str

    @property
    def sip_user(self) -> str:
        """The SIP user the agent answers at."""

    def to_spec(self, base: PipelineSettings | None = None) -> AgentSpec:
        """The agent as the call actor runs it."""


class AgentServer:
    """A registry of agents and the server that answers their calls.

    Args:
        host: SIP listen address (UDP and TCP); also the media address unless
            it is a wildcard.
        port: SIP listen port.
        config: a server config file (or a loaded `Config`) for the rest.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 5060, config: str | Path | Config | None = None
    ) -> None:
        self.host = host
        self.port = port
        self._config = config
        self.agents: dict[str, Servable] = {}

    def register(self, agent: Servable, route: str | None = None) -> None:
        """Serve `agent` at its route's SIP user (or `route`'s last segment).

        Raises:
            ValueError: another agent already has that route.
        """
        user = route.strip("/").split("/")[-1] if route else agent.sip_user
        if user in self.agents:
            other = self.agents[user].name
            raise ValueError(f"route /{user}: both {other!r} and {agent.name!r} are on it")
        self.agents[user] = agent

    def config(self) -> Config:
        """The server config: the file's (or defaults) with these agents' routes."""
        if isinstance(self._config, Config):
            base = self._config.model_copy(deep=True)
        elif self._config is not None:
            base = load_config(self._config)
        else:
            base = Config()
        base.sip.listen = [
            Listen(transport="udp", host=self.host, port=self.port),
            Listen(transport="tcp", host=self.host, port=self.port),
        ]
        if self.host not in ("0.0.0.0", "::"):
            base.media.address = self.host
        for user in self.agents:
            if user in base.routes and base.routes[user].app != "agent":
                raise ConfigError(f"routes.{user}: the config has a {base.routes[user].app!r} app")
            base.routes[user] = Route(app="agent", duration=0)
        return base

    def specs(self, config: Config) -> dict[str, AgentSpec]:
        """Each agent's `AgentSpec`, on the config's pipeline settings."""
        return {user: agent.to_spec(config.pipeline) for user, agent in self.agents.items()}

    def dial(self, to: str, route: str, **options: Any) -> dict[str, Any]:
        """Have the agent on `route` call `to` on the running server (the options
        of `AgentBase.dial`); the call's id and state.

        Raises:
            mediaserver.DialError: refused; nothing was dialed.
            RuntimeError: no server is running in this process.
        """
        body: dict[str, Any] = {"to": to, "route": route.strip("/").split("/")[-1]}
        body.update({k: v for k, v in options.items() if v is not None})
        return place_call(body)

    def run(self) -> None:
        """Start serving; returns when the server stops (SIGINT/SIGTERM)."""
        import uvloop

        from mediaserver.observability.logging import configure
        from mediaserver.pipeline.errors import ModelLoadError

        try:
            config = self.config()
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        configure(config.logging.level, config.logging.format)
        try:
            code = uvloop.run(serve(config, self.specs(config)))
        except (ConfigError, ModelLoadError) as exc:
            print(f"cannot start: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except OSError as exc:
            print(f"cannot start: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        if code:
            raise SystemExit(code)
