"""What a call's owner may do with its call: the server's handle, as apps and the
call actor see it (the actor's port to SIP)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from mediaserver.media.session import RtpSession

if TYPE_CHECKING:
    from mediaserver.call.runtime import PipelineRuntime
    from mediaserver.call.spec import AgentSpec
    from mediaserver.call.store import CallRecord

__all__ = ["CallControl"]


class CallControl(Protocol):
    """The server's handle on one call, as the app sees it."""

    ended: asyncio.Event
    #: Set once the RTP session exists (after the answer, or the ACK's SDP).
    media_ready: asyncio.Event
    #: Digits from RFC 4733 events and SIP INFO, in arrival order.
    digits: asyncio.Queue[str]
    #: The loaded pipeline (models, executor) when the server runs agents.
    runtime: PipelineRuntime | None
    #: The agent of this call's route (`agent` app only).
    agent: AgentSpec | None
    #: The call actor once the agent app started one (for the call record).
    actor: Any
    #: The call's record (timeline), when the server keeps records.
    record: CallRecord | None
    #: Why the caller's SIP digest failed (a registered user's wrong
    #: credentials): the agent runs its auth-failure flow instead of talking.
    auth_error: str | None
    #: Answering-machine detection for a call we placed ("off", "detect",
    #: "detect_and_leave_message"), the message to leave, and the verdict.
    amd: str
    amd_message: str | None
    amd_verdict: str | None

    @property
    def call_id(self) -> str:
        """The SIP Call-ID (for logs and file names)."""

    @property
    def media(self) -> RtpSession | None:
        """The call's RTP session once `media_ready` is set."""

    @property
    def outbound(self) -> bool:
        """We placed this call: the callee answered before the app started."""

    def ring(self) -> None:
        """Send 180 Ringing."""

    def progress(self) -> bool:
        """Send 183 Session Progress with SDP so `media` can play before the
        answer (early media); False when the call cannot have it."""

    def answer(self) -> None:
        """Answer with 200 OK."""

    def hangup(self) -> None:
        """End the call from our side."""

    def agent_for(self, route: str) -> AgentSpec | None:
        """The agent answering route `route` on this server (for a hand-over)."""

    def transfer(self, target: str, whisper: str | None = None) -> None:
        """Put the caller through to `target`: REFER, or a B2BUA bridge when the
        caller's side will not take one (config `sip.transfer`); with `whisper`
        (a warm transfer) always a bridge, and whoever answers hears it before
        the two are joined. The outcome is posted to the call's actor as a
        `TransferResult`."""
