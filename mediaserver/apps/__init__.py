"""Built-in applications chosen by the Request-URI user."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from mediaserver.apps.agent import run_agent
from mediaserver.apps.base import CallControl
from mediaserver.apps.dtmf import run_dtmf
from mediaserver.apps.echo import run_echo
from mediaserver.apps.hold import run_hold
from mediaserver.apps.playback import run_playback
from mediaserver.apps.record import run_record
from mediaserver.config import Route

App = Callable[[CallControl, Route], Coroutine[Any, Any, None]]

#: Route `app` name -> coroutine running the call.
APPS: dict[str, App] = {
    "hold": run_hold,
    "echo": run_echo,
    "playback": run_playback,
    "record": run_record,
    "dtmf": run_dtmf,
    "agent": run_agent,
}
