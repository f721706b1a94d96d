"""`CallHandle`: the server's typed handle on one call, as its app and actor see it.

It implements `CallControl` (the port an app, and through it the call actor,
uses to ring, answer, hang up and transfer) on top of the server's SIP core,
and holds what the server keeps per call: the app task, the RTP session, the
actor, the record, the `Bridge` of a transfer in progress.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mediaserver.call.actor import CallActor
from mediaserver.call.runtime import PipelineRuntime
from mediaserver.call.spec import AgentSpec
from mediaserver.call.store import CallRecord
from mediaserver.media.session import RtpSession
from mediaserver.sip.calls import Call, Event
from mediaserver.sip.ua import UserAgent

__all__ = ["Bridge", "CallHandle", "Switchboard", "call_info"]


class Switchboard(Protocol):
    """What a call handle needs of the server."""

    ua: UserAgent
    agents: dict[str, AgentSpec]

    def command(self, action: Callable[[float], list[Event]]) -> None:
        """Run `action(now)` against the SIP core and handle its events."""

    def transfer(self, handle: CallHandle, target: str, whisper: str | None = None) -> None:
        """Put the caller of `handle` through to `target` (REFER or a bridge; with
        `whisper`, a bridge that tells the target first)."""


@dataclass
class CallHandle:
    """One call's handle (see the module docstring)."""

    server: Switchboard
    call: Call
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    media_ready: asyncio.Event = field(default_factory=asyncio.Event)
    digits: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    session: RtpSession | None = None
    runtime: PipelineRuntime | None = None
    agent: AgentSpec | None = None
    actor: CallActor | None = None
    bridge: Bridge | None = None
    #: Where the agent's last transfer goes (to bridge it if the REFER is refused).
    transfer_target: str | None = None
    #: The call's record (timeline in SQLite).
    record: CallRecord | None = None
    #: Why the caller's SIP digest failed (the agent runs its auth-failure flow).
    auth_error: str | None = None
    #: A call we placed: its answering-machine detection, message and verdict.
    amd: str = "off"
    amd_message: str | None = None
    amd_verdict: str | None = None

    @property
    def call_id(self) -> str:
        """The SIP Call-ID."""
        return self.call.invite.call_id

    @property
    def media(self) -> RtpSession | None:
        """The call's RTP session once `media_ready` is set."""
        return self.session

    @property
    def outbound(self) -> bool:
        """We placed this call (it is answered before its app starts)."""
        return self.call.outbound

    def ring(self) -> None:
        """Send 180 Ringing."""
        self.server.command(lambda now: self.server.ua.ring(self.call, now))

    def progress(self) -> bool:
        """Send 183 Session Progress with our SDP (early media); False when the
        call cannot have early media (past ringing, or the INVITE had no offer)."""
        sent: list[Event] = []

        def act(now: float) -> list[Event]:
            sent.extend(self.server.ua.progress(self.call, now))
            return sent

        self.server.command(act)
        return bool(sent) and self.session is not None

    def answer(self) -> None:
        """Answer with 200 OK."""
        self.server.command(lambda now: self.server.ua.answer(self.call, now))

    def hangup(self) -> None:
        """End the call from our side."""
        self.server.command(lambda now: self.server.ua.hangup(self.call, now))

    def transfer(self, target: str, whisper: str | None = None) -> None:
        """Transfer the caller to `target` (the outcome reaches the actor)."""
        self.server.transfer(self, target, whisper)

    def agent_for(self, route: str) -> AgentSpec | None:
        """The agent answering `route` on this server."""
        return self.server.agents.get(route)


@dataclass
class Bridge:
    """A transfer done as a B2BUA: the caller's call and the leg we dialed to `target`.

    While the leg rings the agent still owns the caller's media; once the leg
    answers, the two RTP sessions are cross-connected and the agent steps out.
    Either side hanging up then hangs up the other (`mediaserver.bridge`).
    """

    app: CallHandle
    leg: Call
    target: str
    #: Said to the target when they answer, before the two are joined (a warm transfer).
    whisper: str | None = None
    #: The leg's RTP session, once it answered (cross-connected unless `whispering`).
    session: RtpSession | None = None
    whispering: bool = False
    ring_timer: asyncio.TimerHandle | None = None

    @property
    def connected(self) -> bool:
        """The target answered and the two calls' media are cross-connected."""
        return self.session is not None and not self.whispering


_PRIVATE_HEADERS = frozenset(
    ["authorization", "proxy-authorization", "via", "v", "record-route", "route", "path"]
)


def call_info(call: Call) -> dict[str, Any]:
    """What an agent is told about its call: the caller's number and name, the
    number called, and for a trunk's call the trunk and what the network
    asserts about the caller (P-Asserted-Identity, STIR/SHAKEN)."""
    caller = call.invite.from_
    info: dict[str, Any] = {
        "caller_id_num": caller.uri.user or "",
        "caller_id_name": caller.display_name or "",
        "called": call.called or call.invite.ruri.user or "",
    }
    # The INVITE's headers (X- headers carry tenant data), less credentials and routing.
    info["headers"] = {
        name: value
        for name, value in call.invite.headers
        if name.lower() not in _PRIVATE_HEADERS
    }
    if call.trunk is not None:
        info["trunk"] = call.trunk
    if call.identity:
        info["identity"] = dict(call.identity)
    return info
