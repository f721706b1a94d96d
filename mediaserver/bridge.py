"""Transfers: REFER where the caller's side takes one, else a B2BUA bridge.

`Bridges` decides how an agent's transfer is done and runs the bridged ones:
it dials the target for the caller (`UserAgent.dial`), rings it for at most
`sip.bridge_ring_timeout`, cross-connects the two RTP sessions when it answers
(the agent steps out), and hangs up either side when the other leaves. A warm
transfer is always a bridge: whoever answers first hears the agent's summary of
the call (the caller meanwhile holds), and only then are the two joined. How it
went reaches the call's actor as a `TransferResult` (DESIGN: transfer_failure).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from mediaserver.apps.speech import speak
from mediaserver.call.events import TransferResult
from mediaserver.config import Config
from mediaserver.faults import Faults
from mediaserver.handle import Bridge, CallHandle
from mediaserver.media.relay import bridge_sessions
from mediaserver.media.session import RtpSession, SessionSettings
from mediaserver.sip.calls import Call, CallEnded, Event
from mediaserver.sip.edge import destination_allowed
from mediaserver.sip.errors import SipParseError
from mediaserver.sip.ua import UserAgent

__all__ = ["BridgeHost", "Bridges"]

log = structlog.get_logger("mediaserver.bridge")


class BridgeHost(Protocol):
    """What the bridges need of the server."""

    ua: UserAgent
    config: Config
    faults: Faults
    apps: dict[str, CallHandle]

    def command(self, action: Callable[[float], list[Event]]) -> None:
        """Run `action(now)` against the SIP core and handle its events."""

    def now(self) -> float:
        """The SIP core's clock."""

    def handle(self, events: list[Event]) -> None:
        """Carry out the SIP core's events."""

    def record(self, call: Call, what: str, /, **data: Any) -> None:
        """Append to the call's record."""

    def start_session(self, call: Call, settings: SessionSettings) -> RtpSession | None:
        """Open `call`'s RTP session (None: it cannot carry audio; hung up)."""

    def hangup(self, call: Call, reason: str) -> None:
        """Hang up `call` from our side."""


def _log(call: Call) -> Any:
    return log.bind(call=call.id, call_id=call.invite.call_id)


def allowed_methods(call: Call) -> set[str] | None:
    """The methods the caller's INVITE says it accepts, or None when it does not say."""
    if "Allow" not in call.invite.headers:
        return None
    try:
        return {token.upper() for token in call.invite.tokens("Allow")}
    except SipParseError:
        return None


class Bridges:
    """The server's transfers (see the module docstring).

    Args:
        host: the server.
    """

    def __init__(self, host: BridgeHost) -> None:
        self._host = host
        #: Bridged transfers by the id of the leg we dialed.
        self.legs: dict[str, Bridge] = {}
        #: Briefings of warm transfers in progress.
        self._tasks: set[asyncio.Task[None]] = set()

    def transfer(self, app: CallHandle, target: str, whisper: str | None = None) -> None:
        """An agent's transfer: REFER, or a bridge where REFER will not do
        (`sip.transfer`) or the target is to be told `whisper` first."""
        host = self._host
        app.transfer_target = target
        rule = host.faults.check("transfer", target)
        if rule is not None and app.actor is not None:
            app.actor.post(TransferResult(False, rule.status or 503, "injected fault"))
            return
        registered = host.ua.registered_contact(target, host.now()) is not None
        if not destination_allowed(target, host.config.sip.transfer_allow, registered):
            # Whatever the model was talked into, the call goes nowhere else.
            _log(app.call).warning("transfer_refused", target=target)
            host.record(app.call, "sip", event="transfer_refused", target=target)
            if app.actor is not None:
                app.actor.post(TransferResult(False, 403, "destination not allowed"))
            return
        mode = host.config.sip.transfer
        allow = allowed_methods(app.call)
        if whisper is not None:
            why = "warm transfer"  # REFER would hand the caller over unannounced
        elif registered:
            # A phone registered here: only we know where it is, so we dial it.
            why = "registered user"
        elif host.ua.config.trunks.outbound() and not target.lower().startswith(("sip:", "sips:")):
            # A number, and trunks of our own to reach it: dial it (with failover).
            why = "number through a trunk"
        elif mode == "bridge" or (mode == "auto" and allow is not None and "REFER" not in allow):
            why = f"sip.transfer={mode}, Allow"
        else:
            host.command(lambda now: host.ua.refer(app.call, target, now))
            return
        _log(app.call).info("transfer_bridging", why=why)
        self.dial(app, target, whisper)

    def refused(self, app: CallHandle, status: int) -> bool:
        """The caller's side refused our REFER: bridge instead where `sip.transfer`
        is "auto". True when a bridge is being dialed."""
        target = app.transfer_target
        if not target or self._host.config.sip.transfer != "auto":
            return False
        _log(app.call).info("transfer_bridging", refer_status=status)
        self.dial(app, target)
        return True

    def dial(self, app: CallHandle, target: str, whisper: str | None = None) -> None:
        """Dial `target` for the caller of `app` (to be told `whisper` first, if
        any); the agent hears how it went."""
        host = self._host

        def fail(status: int, reason: str) -> None:
            if app.actor is not None:
                app.actor.post(TransferResult(False, status, reason))

        if app.bridge is not None or app.session is None:
            fail(491, "a transfer is already under way")
            return
        display = app.agent.name if app.agent is not None else None
        try:
            leg, events = host.ua.dial(target, app.call.user, host.now(), display=display)
        except SipParseError as exc:
            _log(app.call).warning("bridge_bad_target", target=target, error=exc.reason)
            fail(exc.status, exc.reason if exc.status != 400 else f"bad target: {exc.reason}")
            return
        if leg is None:
            fail(503, "no media ports for the bridge")
            return
        bridge = app.bridge = self.legs[leg.id] = Bridge(app, leg, target, whisper)
        bridge.ring_timer = asyncio.get_running_loop().call_later(
            host.config.sip.bridge_ring_timeout, lambda: host.hangup(leg, "no answer")
        )
        _log(app.call).info("bridge_dialing", leg=leg.id, target=target)
        host.record(app.call, "sip", event="bridge_dialing", target=target, leg=leg.id)
        host.handle(events)

    def answered(self, leg: Call) -> None:
        """The target answered: cross-connect the media and let the agent go."""
        host = self._host
        bridge = self.legs.get(leg.id)
        if bridge is None or bridge.app.call.id not in host.apps or leg.media is None:
            host.hangup(leg, "caller gone")
            return
        if bridge.ring_timer is not None:
            bridge.ring_timer.cancel()
        caller = bridge.app.session
        assert caller is not None
        # The caller's recording (if any) already holds both directions.
        session = host.start_session(leg, dataclasses.replace(caller.settings, record_path=None))
        if session is None:
            return
        bridge.session = session
        if bridge.whisper and bridge.app.runtime is not None and bridge.app.agent is not None:
            bridge.whispering = True
            self._tasks.add(task := asyncio.get_running_loop().create_task(self._brief(bridge)))
            task.add_done_callback(self._tasks.discard)
            return
        self._join(bridge)

    async def _brief(self, bridge: Bridge) -> None:
        """Tell the target the summary, then join the calls (if both are still there)."""
        host, app = self._host, bridge.app
        assert bridge.session is not None and app.runtime is not None and app.agent is not None
        tts = app.agent.settings.tts
        said = await speak(bridge.session, app.runtime, tts, bridge.whisper or "")
        _log(app.call).info("bridge_briefed", leg=bridge.leg.id, said=said)
        host.record(app.call, "sip", event="bridge_briefed", leg=bridge.leg.id, said=said)
        if self.legs.get(bridge.leg.id) is bridge and app.call.id in host.apps:
            bridge.whispering = False
            self._join(bridge)

    def _join(self, bridge: Bridge) -> None:
        """Cross-connect the caller and the target: the agent is done."""
        host, leg, session = self._host, bridge.leg, bridge.session
        caller = bridge.app.session
        assert caller is not None and session is not None and leg.media is not None
        bridge_sessions(caller, session)
        # Through a trunk: which one, and the ones that failed it first ("name:status").
        trunk = {"trunk": leg.trunk, "failovers": leg.failovers} if leg.trunk else {}
        _log(bridge.app.call).info(
            "bridge_connected",
            leg=leg.id,
            target=bridge.target,
            caller_codec=caller.media.codec.encoding,
            target_codec=leg.media.codec.encoding,
            **trunk,
        )
        host.record(bridge.app.call, "sip", event="bridge_connected", leg=leg.id, **trunk)
        if bridge.app.actor is not None:
            bridge.app.actor.post(TransferResult(True, 200, "bridged", bridged=True))

    def ended(self, event: CallEnded) -> None:
        """The leg we dialed is over: before the answer the transfer failed, after
        it the bridge is over and the caller is hung up too."""
        host, leg = self._host, event.call
        bridge = self.legs.pop(leg.id, None)
        if bridge is None:
            return
        if bridge.ring_timer is not None:
            bridge.ring_timer.cancel()
        app = bridge.app
        app.bridge = None
        media = bridge.session.summary() if bridge.session is not None else {}
        _log(app.call).info(
            "bridge_ended",
            leg=leg.id,
            connected=bridge.connected,
            reason=event.reason,
            by=event.by,
            status=leg.final_status,
            **media,
        )
        host.record(
            app.call, "sip", event="bridge_ended", leg=leg.id, connected=bridge.connected,
            reason=event.reason, by=event.by, status=leg.final_status,
        )  # fmt: skip
        if bridge.connected:
            # (The caller's session may relay a moment longer: to a closed session, a no-op.)
            if app.call.id in host.apps:
                host.hangup(app.call, "bridge ended")
        elif app.actor is not None:
            # DESIGN's transfer_failure: the agent tells the caller and goes on.
            app.actor.post(TransferResult(False, leg.final_status or 480, event.reason))

    def other_side(self, call: Call) -> RtpSession | None:
        """The session a connected bridge joins `call` to (None: not bridged)."""
        app = self._host.apps.get(call.id)
        bridge = app.bridge if app is not None else self.legs.get(call.id)
        if bridge is None or not bridge.connected:
            return None
        return bridge.session if call is bridge.app.call else bridge.app.session
