"""Assembles config -> SIP transports + SIP core + media ports + built-in apps.

Everything runs on one event loop. The sans-IO `UserAgent` decides; this module
moves bytes, keeps one wake-up armed for the core's next deadline, runs one app
task per call, and joins a caller to a transfer target as a B2BUA when the
caller's side will not take a REFER (`_Bridge`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from mediaserver.apps import APPS
from mediaserver.apps.agent import agent_from_config
from mediaserver.call.actor import CallActor
from mediaserver.call.errors import RECOVERY, ErrorKind
from mediaserver.call.events import HoldChanged, StageError, TransferResult
from mediaserver.call.runtime import PipelineRuntime
from mediaserver.call.spec import AgentSpec
from mediaserver.call.store import CallRecord, CallStore
from mediaserver.config import Config, ConfigError, SipSettings
from mediaserver.faults import Faults
from mediaserver.media.clock import MediaClock
from mediaserver.media.ports import PortPool
from mediaserver.media.relay import bridge_sessions
from mediaserver.media.session import MediaSettings, RtpSession
from mediaserver.observability.admin import AdminServer
from mediaserver.observability.metrics import Metrics
from mediaserver.sip.auth import Account, DigestAuth
from mediaserver.sip.errors import SipParseError
from mediaserver.sip.registrar import Registrar
from mediaserver.sip.session_timer import SessionTimerPolicy
from mediaserver.sip.transaction import Send, Target, Timers
from mediaserver.sip.transport import Transports
from mediaserver.sip.ua import (
    AuthRejected,
    Call,
    CallConfirmed,
    CallEnded,
    CallIncoming,
    CallMediaChanged,
    Dropped,
    DtmfInfo,
    Event,
    Registered,
    TransferOutcome,
    UaConfig,
    UserAgent,
)

log = structlog.get_logger("mediaserver.server")

#: Most "sip_message_rejected" log lines per second (the rest are counted).
REJECT_LOG_RATE = 20


def _call_log(call: Call) -> Any:
    """The logger for lines about `call`: our id and the SIP Call-ID on every line."""
    return log.bind(call=call.id, call_id=call.invite.call_id)


@dataclass
class _AppCall:
    """The server's handle on one call, given to its app (`CallControl`)."""

    server: SipServer
    call: Call
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    media_ready: asyncio.Event = field(default_factory=asyncio.Event)
    digits: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    session: RtpSession | None = None
    runtime: PipelineRuntime | None = None
    agent: AgentSpec | None = None
    actor: CallActor | None = None
    bridge: _Bridge | None = None
    #: Where the agent's last transfer goes (to bridge it if the REFER is refused).
    transfer_target: str | None = None
    #: The call's record (timeline in SQLite).
    record: CallRecord | None = None
    #: Why the caller's SIP digest failed (the agent runs its auth-failure flow).
    auth_error: str | None = None

    @property
    def call_id(self) -> str:
        return self.call.invite.call_id

    @property
    def media(self) -> RtpSession | None:
        return self.session

    def ring(self) -> None:
        self.server.command(lambda now: self.server.ua.ring(self.call, now))

    def answer(self) -> None:
        self.server.command(lambda now: self.server.ua.answer(self.call, now))

    def hangup(self) -> None:
        self.server.command(lambda now: self.server.ua.hangup(self.call, now))

    def transfer(self, target: str) -> None:
        self.server.transfer(self, target)

    def agent_for(self, route: str) -> AgentSpec | None:
        return self.server.agents.get(route)


@dataclass
class _Bridge:
    """A transfer done as a B2BUA: the caller's call and the leg we dialed to `target`.

    While the leg rings the agent still owns the caller's media; once the leg
    answers, the two RTP sessions are cross-connected and the agent steps out.
    Either side hanging up then hangs up the other.
    """

    app: _AppCall
    leg: Call
    target: str
    #: The leg's RTP session, once it answered and the media is cross-connected.
    session: RtpSession | None = None
    ring_timer: asyncio.TimerHandle | None = None

    @property
    def connected(self) -> bool:
        """The target answered and the two calls' media are cross-connected."""
        return self.session is not None


class SipServer:
    """One server process: listeners, the UAS core, and the calls' apps."""

    def __init__(self, config: Config, agents: dict[str, AgentSpec] | None = None) -> None:
        self.config = config
        self._preset_agents = dict(agents or {})
        self.transports = Transports(self._on_message)
        self.ua: UserAgent
        self.ports: PortPool
        self.apps: dict[str, _AppCall] = {}
        self.bound: dict[str, tuple[str, int]] = {}
        self._wakeup: asyncio.TimerHandle | None = None
        self._wakeup_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.calls_total = 0
        self._reject_window = 0.0
        self._reject_logged = 0
        self._reject_suppressed = 0
        self.runtime: PipelineRuntime | None = None
        self.agents: dict[str, AgentSpec] = {}
        #: Bridged transfers by the id of the leg we dialed.
        self.bridges: dict[str, _Bridge] = {}
        self.faults = Faults(config.faults)
        self.store = CallStore(config.records.path, dsn=config.records.dsn)
        self.metrics = Metrics()
        self.store.listeners.append(self._observe)
        self.admin: AdminServer | None = None

    def load_agents(self) -> None:
        """Build the agents of `agent` routes and load the pipeline's models (once).

        Raises:
            ConfigError: a tool cannot be imported or an override is invalid.
            ModelLoadError: a model failed to load (one line naming backend and path).
        """
        for user, route in self.config.routes.items():
            if user in self._preset_agents:
                self.agents[user] = self._preset_agents[user]  # a Python agent (AgentBase)
            elif route.app == "agent" and route.agent is not None:
                self.agents[user] = agent_from_config(user, route.agent, self.config.pipeline)
        if self.agents and self.runtime is None:
            self.runtime = PipelineRuntime(self.config.pipeline, faults=self.faults)
        for user, agent in self.agents.items():
            assert self.runtime is not None
            try:
                self.runtime.prepare(agent)  # e.g. a missing API key fails now, not mid-call
            except ValueError as exc:
                raise ConfigError(f"routes.{user}.agent: {exc}") from None

    async def start(self) -> None:
        """Bind every listener and build the core."""
        self._loop = loop = asyncio.get_running_loop()
        self.load_agents()
        sip = self.config.sip
        ssl_ctx: ssl.SSLContext | None = None
        local: dict[str, tuple[str, int]] = {}
        for lst in sip.listen:
            if lst.transport == "udp":
                host, port = await self.transports.listen_udp(lst.host, lst.port)
            else:
                if lst.transport == "tls" and ssl_ctx is None:
                    ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                    ssl_ctx.load_cert_chain(str(sip.tls.cert), str(sip.tls.key))
                ctx = ssl_ctx if lst.transport == "tls" else None
                host, port = await self.transports.listen_stream(
                    lst.transport, lst.host, lst.port, ctx
                )
            self.bound.setdefault(lst.transport, (host, port))
            local.setdefault(lst.transport, (lst.advertise or host, port))
        media = self.config.media
        self.clock = MediaClock(loop)
        self.ports = PortPool(
            media.address, media.port_min, media.port_max, media.codecs, self.clock
        )
        self.ua = UserAgent(
            UaConfig(
                local=local,
                routes=frozenset(self.config.routes),
                max_calls=sip.max_calls,
                retry_after=sip.retry_after,
                timers=Timers(sip.t1, sip.t2, sip.t4),
                session=SessionTimerPolicy(sip.session_expires, sip.min_se),
                user_agent=sip.user_agent,
                invite_auth=sip.auth.invites,
                **_auth(sip),
            ),
            self.ports,
        )
        for transport, (host, port) in self.bound.items():
            log.info("listening", transport=transport, host=host, port=port)
        admin = self.config.admin
        if admin.enabled:
            self.admin = AdminServer(self, admin.host, admin.port, admin.token)
            try:
                await self.admin.start()  # logs admin_listening with the bound port
            except OSError as exc:
                where = f"{admin.host}:{admin.port}"
                raise ConfigError(f"admin.port: cannot listen on {where}: {exc.strerror}") from None

    # -- what the admin HTTP serves (AdminSource) ---------------------------------------

    def ready(self) -> bool:
        """Taking calls (not draining)."""
        return hasattr(self, "ua") and not self.ua.draining

    def live_calls(self) -> list[dict[str, Any]]:
        """Summaries of the calls in progress."""
        return [record.summary_dict() for record in self.store.live.values()]

    def recent_calls(self, limit: int) -> list[dict[str, Any]]:
        """Summaries of finished calls, newest first."""
        return self.store.recent(limit)

    def call_detail(self, call_id: str) -> dict[str, Any] | None:
        """One call's record."""
        return self.store.detail(call_id)

    def registrations(self) -> dict[str, list[dict[str, Any]]]:
        """The registrar's live bindings by user."""
        registrar = self.ua.config.registrar if hasattr(self, "ua") else None
        if registrar is None:
            return {}
        now = self._now()
        return {
            user: [
                {
                    "contact": b.contact,
                    "expires_in": round(b.expires_at - now),
                    "source": f"{b.source.transport}:{b.source.host}:{b.source.port}",
                }
                for b in bindings
            ]
            for user, bindings in registrar.registered(now).items()
        }

    def metrics_text(self) -> bytes:
        """Prometheus exposition of this process."""
        self.metrics.set_active_calls(len(self.store.live))
        return self.metrics.render()

    def _observe(self, record: CallRecord, kind: str, data: dict[str, Any]) -> None:
        """Feed the metrics from what calls record (turns, barge-ins, errors)."""
        if kind == "turn" and data.get("latency_ms"):
            self.metrics.turn(data["latency_ms"])
        elif kind == "barge_in":
            self.metrics.barge_in(data.get("stop_ms") or 0.0, bool(data.get("false")))
        elif kind == "error":
            self.metrics.error(str(data.get("kind")), str(data.get("stage")))

    # -- the core's inputs ------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _on_message(self, data: bytes, source: Target) -> None:
        if self._loop is None or not hasattr(self, "ua"):
            return  # a listener is up but the core is not built yet: as if lost
        try:
            events = self.ua.receive(data, source, self._now())
        except Exception:
            # A bug must cost one message, never the process or other calls.
            log.exception("message_handling_failed", peer=f"{source.host}:{source.port}")
            return
        self._handle(events)

    def command(self, action: Callable[[float], list[Event]]) -> None:
        """Run an app command against the core (`action(now) -> events`)."""
        try:
            events = action(self._now())
        except Exception:
            log.exception("command_failed")
            return
        self._handle(events)

    def _on_wakeup(self) -> None:
        self._wakeup = None
        self._wakeup_at = None
        try:
            events = self.ua.tick(self._now())
        except Exception:
            log.exception("timer_handling_failed")
            events = []
        self._handle(events)

    # -- the core's outputs -------------------------------------------------------

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Send):
                method = getattr(event.message, "method", None)
                if method is not None and self.faults.check("sip", method) is not None:
                    continue  # injected: this request is lost on the way
                self.transports.send(event.message.encode(), event.target)
            elif isinstance(event, CallIncoming):
                self._start_app(event.call)
            elif isinstance(event, CallConfirmed):
                _call_log(event.call).info("call_confirmed")
                self._record(event.call, "sip", event="confirmed")
                if event.call.outbound:
                    self._bridge_answered(event.call)
                else:
                    self._open_media(event.call)  # the answer may have come in the ACK
            elif isinstance(event, CallMediaChanged):
                media = event.call.media
                _call_log(event.call).info(
                    "call_media_changed",
                    on_hold=event.call.on_hold,
                    direction=media.direction if media else None,
                )
                bridge = self.bridges.get(event.call.id)
                app = self.apps.get(event.call.id)
                self._record(event.call, "sip", event="media_changed", on_hold=event.call.on_hold)
                if bridge is not None:
                    if bridge.session is not None and media is not None:
                        bridge.session.update(media)
                elif app is not None and app.session is not None and media is not None:
                    app.session.update(media)
                    if app.actor is not None and app.bridge is None:
                        app.actor.post(HoldChanged(event.call.on_hold))
                else:
                    self._open_media(event.call)
            elif isinstance(event, CallEnded):
                if event.call.outbound:
                    self._bridge_ended(event)
                else:
                    self._end_app(event)
            elif isinstance(event, TransferOutcome):
                _call_log(event.call).info(
                    "transfer_outcome",
                    ok=event.ok,
                    status=event.status,
                    reason=event.reason,
                )
                app = self.apps.get(event.call.id)
                self._record(
                    event.call, "sip", event="transfer", ok=event.ok, status=event.status,
                    reason=event.reason, refused=event.refused,
                )  # fmt: skip
                if app is None or app.actor is None:
                    continue
                target = app.transfer_target
                if not event.ok and event.refused and target and self.config.sip.transfer == "auto":
                    # The caller's side will not transfer: bridge the call ourselves.
                    _call_log(event.call).info("transfer_bridging", refer_status=event.status)
                    self._bridge(app, target)
                else:
                    app.actor.post(TransferResult(event.ok, event.status, event.reason))
            elif isinstance(event, DtmfInfo):
                self._digit(event.call, event.digit, event.duration_ms, "info")
            elif isinstance(event, Registered):
                log.info(
                    "sip_registered",
                    user=event.user,
                    bindings=event.bindings,
                    peer=f"{event.source.host}:{event.source.port}",
                )
            elif isinstance(event, AuthRejected):
                self.metrics.error(ErrorKind.AUTH_FAILURE.value, "sip")
                self._log_rejected(
                    "sip_auth_rejected",
                    event.source,
                    method=event.method,
                    user=event.user,
                    reason=event.reason,
                    status=403,
                )
            elif isinstance(event, Dropped):
                self._log_rejected(
                    "sip_message_rejected", event.source, reason=event.reason, status=event.status
                )
        self._rearm()

    def _log_rejected(self, what: str, source: Target, **fields: Any) -> None:
        """One line per rejected message, at most REJECT_LOG_RATE a second.

        A flood of garbage must not turn into a flood of log lines; what is
        held back is counted and reported with the next line that gets out.
        """
        now = self._now()
        if now - self._reject_window >= 1.0:
            self._reject_window, self._reject_logged = now, 0
        if self._reject_logged >= REJECT_LOG_RATE:
            self._reject_suppressed += 1
            return
        self._reject_logged += 1
        suppressed, self._reject_suppressed = self._reject_suppressed, 0
        log.warning(
            what,
            **fields,
            peer=f"{source.host}:{source.port}",
            **({"suppressed_before": suppressed} if suppressed else {}),
        )

    def _rearm(self) -> None:
        deadline = self.ua.next_deadline()
        if deadline is None or (self._wakeup_at is not None and self._wakeup_at <= deadline):
            return
        assert self._loop is not None
        if self._wakeup is not None:
            self._wakeup.cancel()
        self._wakeup_at = deadline
        self._wakeup = self._loop.call_at(deadline, self._on_wakeup)

    def _start_app(self, call: Call) -> None:
        self.calls_total += 1
        route = self.config.routes[call.user]
        agent = self.agents.get(call.user)
        app = _AppCall(self, call, runtime=self.runtime, agent=agent)
        self.apps[call.id] = app
        app.record = self.store.start_call(
            call.id,
            call_id=call.invite.call_id,
            route=call.user,
            agent=agent.name if agent is not None else route.app,
            caller=str(call.invite.from_.uri),
        )
        app.record.add(
            "sip",
            {
                "event": "incoming",
                "peer": f"{call.source.host}:{call.source.port}",
                "transport": call.source.transport,
                "codec": call.media.codec.encoding if call.media is not None else None,
                "auth_user": call.auth_user,
            },
        )
        self.metrics.call_started()
        _call_log(call).info(
            "call_incoming",
            user=call.user,
            peer=f"{call.source.host}:{call.source.port}",
            transport=call.source.transport,
        )
        if call.auth_error is not None:
            _call_log(call).warning("sip_auth_failed", error=call.auth_error)
            if agent is None:
                # No agent to run the auth-failure flow: refuse the call.
                self._error(call, ErrorKind.AUTH_FAILURE, "sip", call.auth_error, "rejected 403")
                self.command(lambda now: self.ua.reject(call, 403, now))
                return
            app.auth_error = call.auth_error
        self._open_media(call)
        app.task = asyncio.get_running_loop().create_task(APPS[route.app](app, route))
        app.task.add_done_callback(lambda t: self._app_done(call, t))

    def _open_media(self, call: Call) -> None:
        """Start the call's RTP session once its media is negotiated (once)."""
        app = self.apps.get(call.id)
        if app is None or app.session is not None or call.media is None:
            return
        cfg = self.config.media
        settings = MediaSettings(
            jitter_window=cfg.jitter_window,
            inactivity_timeout=cfg.inactivity_timeout,
            latch_any_address=cfg.latch_any_address,
            record_path=cfg.recordings_dir / f"{call.id}.wav" if cfg.record_calls else None,
        )
        session = self._start_session(call, settings)
        if session is None:
            return
        self._inject_media_faults(session)
        app.session = session
        app.media_ready.set()

    def _start_session(self, call: Call, settings: MediaSettings) -> RtpSession | None:
        """Open `call`'s RTP session with its reports wired to us; None (and the call
        hung up) when it cannot carry audio."""
        assert call.media is not None
        try:
            session = self.ports.open_session(call.offer, call.media, settings)
        except Exception:
            # e.g. a codec we offered but cannot run: the call cannot carry audio.
            _call_log(call).exception("media_open_failed")
            self._hangup(call, "media failure")
            return None
        session.on_dtmf = lambda digit, ms: self._digit(call, digit, ms, "rfc4733")
        session.on_timeout = lambda: self._media_timeout(call)
        session.on_media_error = lambda error: self._media_error(call, error)
        return session

    def _inject_media_faults(self, session: RtpSession) -> None:
        """Configured media faults: undecodable packets, or inbound RTP cut off."""
        rule = self.faults.check("media")
        if rule is not None:
            session.fail_decodes(rule.count)
        if self.faults.check("rtp") is not None:
            session.drop_inbound()

    def _record(self, call: Call, what: str, /, **data: Any) -> None:
        """Append to the call's record (of the caller's call, for a bridge leg)."""
        app = self.apps.get(call.id)
        if app is None and (bridge := self.bridges.get(call.id)) is not None:
            app, data = bridge.app, {"leg": call.id, **data}
        if app is not None and app.record is not None:
            app.record.add(what, data)

    def _error(
        self,
        call: Call,
        kind: ErrorKind,
        stage: str,
        error: str,
        recovery: str | None = None,
        *,
        to_actor: bool = True,
    ) -> None:
        """An error the server classified (media, network, SIP): to the actor (which
        records it) when one runs the call, else straight to the record. The
        recovery is the kind's (DESIGN's table) unless said otherwise."""
        recovery = recovery or RECOVERY[kind]
        app = self.apps.get(call.id)
        if to_actor and app is not None and app.actor is not None and app.bridge is None:
            app.actor.post(StageError(kind, stage, error, recovery=recovery, final=False))
            return
        self._record(call, "error", kind=kind.value, stage=stage, error=error, recovery=recovery)

    def _media_error(self, call: Call, error: str) -> None:
        _call_log(call).warning("media_error", error=error)
        self._error(call, ErrorKind.MEDIA_FAILURE, "media", error)

    def _digit(self, call: Call, digit: str, duration_ms: int, via: str) -> None:
        _call_log(call).info("dtmf", digit=digit, duration_ms=duration_ms, via=via)
        self._record(call, "dtmf", digit=digit, duration_ms=duration_ms, via=via)
        app = self.apps.get(call.id)
        bridge = app.bridge if app is not None else self.bridges.get(call.id)
        if bridge is not None and bridge.connected:
            # Bridged: the digit is for the other party (e.g. a desk's IVR).
            other = bridge.session if call is bridge.app.call else bridge.app.session
            if other is not None:
                other.send_dtmf(digit, duration_ms or 100)
            return
        if app is not None:
            app.digits.put_nowait(digit)

    def _media_timeout(self, call: Call) -> None:
        timeout = self.config.media.inactivity_timeout
        _call_log(call).warning("rtp_timeout", seconds=timeout)
        self._error(call, ErrorKind.NETWORK_PARTITION, "rtp", f"no RTP for {timeout:g} s")
        self._hangup(call, "rtp timeout")

    def _app_done(self, call: Call, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            _call_log(call).error("app_failed", error=repr(task.exception()))
            self._hangup(call, "app failed")

    def _end_app(self, event: CallEnded) -> None:
        call = event.call
        if event.by == "timeout":
            # A SIP transaction (BYE, refresh) or the ACK timed out: the peer is gone.
            # Straight to the record: the call is over, its actor is stopping.
            self._error(call, ErrorKind.NETWORK_PARTITION, "sip", event.reason, to_actor=False)
        app = self.apps.pop(call.id, None)
        media: dict[str, Any] = {}
        if app is not None:
            app.ended.set()
            if app.session is not None:
                media = app.session.summary()  # the core already closed the session
            self._finish_record(app, event, media)
            if app.bridge is not None:
                # The caller left: the bridged party goes too (BYE, or CANCEL while ringing).
                leg = app.bridge.leg
                self._hangup(leg, "caller hung up")
        _call_log(call).info(
            "call_ended",
            reason=event.reason,
            by=event.by,
            **media,
        )

    def _finish_record(self, app: _AppCall, event: CallEnded, media: dict[str, Any]) -> None:
        """Close the call's record with the state the call ended in."""
        record = app.record
        if record is None:
            return
        final: dict[str, Any] = {"sip_reason": event.reason, "media": media}
        if app.actor is not None:
            summary = app.actor.summary()
            final.update(
                agent_end_reason=summary.end_reason,
                state=summary.state,
                global_data=summary.global_data,
                metadata=summary.metadata,
                digits=summary.digits,
                turns=summary.turns,
            )
        record.add("sip", {"event": "ended", "reason": event.reason, "by": event.by})
        record.finish(event.reason, event.by, final)
        started = record.summary.get("started_at") or 0.0
        ended = record.summary.get("ended_at") or started
        self.metrics.call_ended(event.by, ended - started, media)

    # -- transfers and bridges --------------------------------------------------------

    def transfer(self, app: _AppCall, target: str) -> None:
        """An agent's transfer: REFER, or a bridge where REFER will not do (`sip.transfer`)."""
        app.transfer_target = target
        rule = self.faults.check("transfer", target)
        if rule is not None and app.actor is not None:
            app.actor.post(TransferResult(False, rule.status or 503, "injected fault"))
            return
        mode = self.config.sip.transfer
        allow = _allowed_methods(app.call)
        if self.ua.registered_contact(target, self._now()) is not None:
            # A phone registered here: only we know where it is, so we dial it.
            why = "registered user"
        elif mode == "bridge" or (mode == "auto" and allow is not None and "REFER" not in allow):
            why = f"sip.transfer={mode}, Allow"
        else:
            self.command(lambda now: self.ua.refer(app.call, target, now))
            return
        _call_log(app.call).info("transfer_bridging", why=why)
        self._bridge(app, target)

    def _bridge(self, app: _AppCall, target: str) -> None:
        """Dial `target` for the caller of `app`; the agent hears how it went."""

        def fail(status: int, reason: str) -> None:
            if app.actor is not None:
                app.actor.post(TransferResult(False, status, reason))

        if app.bridge is not None or app.session is None:
            fail(491, "a transfer is already under way")
            return
        display = app.agent.name if app.agent is not None else None
        try:
            leg, events = self.ua.dial(target, app.call.user, self._now(), display=display)
        except SipParseError as exc:
            _call_log(app.call).warning("bridge_bad_target", target=target, error=exc.reason)
            fail(400, f"bad target: {exc.reason}")
            return
        if leg is None:
            fail(503, "no media ports for the bridge")
            return
        bridge = app.bridge = self.bridges[leg.id] = _Bridge(app, leg, target)
        assert self._loop is not None
        bridge.ring_timer = self._loop.call_later(
            self.config.sip.bridge_ring_timeout,
            lambda: self._hangup(leg, "no answer"),
        )
        _call_log(app.call).info("bridge_dialing", leg=leg.id, target=target)
        self._record(app.call, "sip", event="bridge_dialing", target=target, leg=leg.id)
        self._handle(events)

    def _bridge_answered(self, leg: Call) -> None:
        """The target answered: cross-connect the media and let the agent go."""
        bridge = self.bridges.get(leg.id)
        if bridge is None or bridge.app.call.id not in self.apps or leg.media is None:
            self._hangup(leg, "caller gone")
            return
        if bridge.ring_timer is not None:
            bridge.ring_timer.cancel()
        caller = bridge.app.session
        assert caller is not None
        # The caller's recording (if any) already holds both directions.
        session = self._start_session(leg, dataclasses.replace(caller.settings, record_path=None))
        if session is None:
            return
        bridge.session = session
        bridge_sessions(caller, session)
        _call_log(bridge.app.call).info(
            "bridge_connected",
            leg=leg.id,
            target=bridge.target,
            caller_codec=caller.media.codec.encoding,
            target_codec=leg.media.codec.encoding,
        )
        self._record(bridge.app.call, "sip", event="bridge_connected", leg=leg.id)
        if bridge.app.actor is not None:
            bridge.app.actor.post(TransferResult(True, 200, "bridged", bridged=True))

    def _bridge_ended(self, event: CallEnded) -> None:
        """The leg we dialed is over: before the answer the transfer failed, after
        it the bridge is over and the caller is hung up too."""
        leg = event.call
        bridge = self.bridges.pop(leg.id, None)
        if bridge is None:
            return
        if bridge.ring_timer is not None:
            bridge.ring_timer.cancel()
        app = bridge.app
        app.bridge = None
        media = bridge.session.summary() if bridge.session is not None else {}
        _call_log(app.call).info(
            "bridge_ended",
            leg=leg.id,
            connected=bridge.connected,
            reason=event.reason,
            by=event.by,
            status=leg.final_status,
            **media,
        )
        self._record(
            app.call, "sip", event="bridge_ended", leg=leg.id, connected=bridge.connected,
            reason=event.reason, by=event.by, status=leg.final_status,
        )  # fmt: skip
        if bridge.connected:
            # (The caller's session may relay a moment longer: to a closed session, a no-op.)
            if app.call.id in self.apps:
                self._hangup(app.call, "bridge ended")
        elif app.actor is not None:
            # DESIGN's transfer_failure: the agent tells the caller and goes on.
            app.actor.post(TransferResult(False, leg.final_status or 480, event.reason))

    # -- lifecycle ------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Stop taking calls, wait up to `timeout` for calls to end, then BYE the rest."""
        self.ua.drain()
        log.info("draining", active_calls=self.ua.active_calls, timeout=timeout)
        await self._wait_calls(timeout)
        await self.hangup_all()

    async def hangup_all(self, wait: float = 5.0) -> None:
        """Hang up every call and give the BYEs `wait` seconds to complete."""
        for call in list(self.ua.calls.values()):
            self._hangup(call, "shutdown")
        await self._wait_calls(wait)

    def _hangup(self, call: Call, reason: str) -> None:
        self.command(lambda now: self.ua.hangup(call, now, reason))

    async def _wait_calls(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.ua.active_calls and loop.time() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Cancel apps and close sockets."""
        for app in list(self.apps.values()):
            if app.task is not None:
                app.task.cancel()
        if self._wakeup is not None:
            self._wakeup.cancel()
        await self.transports.close()
        if self.admin is not None:
            await self.admin.close()
        if self.runtime is not None:
            await self.runtime.aclose()
        self.store.close()


def _auth(sip: SipSettings) -> dict[str, Any]:
    """The digest authenticator and registrar of `sip` (none without users)."""
    cfg = sip.auth
    if not cfg.users:
        return {}
    accounts = {
        name: Account(name, password=user.password, ha1=user.ha1)
        for name, user in cfg.users.items()
    }
    auth = DigestAuth(
        cfg.realm,
        accounts,
        nonce_ttl=cfg.nonce_ttl,
        algorithms=tuple(cfg.algorithms),
        max_failures=cfg.max_failures,
        failure_window=cfg.failure_window,
        secret=cfg.nonce_secret.encode() if cfg.nonce_secret else None,
    )
    reg = sip.registrar
    registrar = Registrar(
        min_expires=reg.min_expires, max_expires=reg.max_expires, max_contacts=reg.max_contacts
    )
    return {"auth": auth, "registrar": registrar}


def _allowed_methods(call: Call) -> set[str] | None:
    """The methods the caller's INVITE says it accepts, or None when it does not say."""
    if "Allow" not in call.invite.headers:
        return None
    try:
        return {token.upper() for token in call.invite.tokens("Allow")}
    except SipParseError:
        return None


#: Garbage-collector thresholds. Finished transactions keep ~25 objects per call
#: alive for 64*T1 (32 s), so at 1,000 calls/s the heap holds ~800k objects and
#: CPython's default gen-0 threshold (700) triggers full collections often
#: enough to stall the loop (mean INVITE->200 48 ms vs 4 ms with these values at
#: 1,000 calls/s; see docs/benchmarks.md). Override: MEDIASERVER_GC_THRESHOLD=a,b,c.
GC_THRESHOLDS = (10_000, 10, 10)


def gc_thresholds() -> tuple[int, int, int]:
    """The thresholds to use: MEDIASERVER_GC_THRESHOLD if valid, else GC_THRESHOLDS."""
    text = os.environ.get("MEDIASERVER_GC_THRESHOLD", "")
    if not text:
        return GC_THRESHOLDS
    try:
        a, b, c = (int(part) for part in text.split(","))
    except ValueError:
        log.warning("bad_gc_threshold", value=text, using=GC_THRESHOLDS)
        return GC_THRESHOLDS
    return a, b, c


async def serve(config: Config, agents: dict[str, AgentSpec] | None = None) -> int:
    """Run until SIGTERM (drain, then stop) or SIGINT (hang up and stop).

    `agents` are built agents (e.g. from `AgentBase`) by route user; they take
    the place of the config's inline agent of the same route.
    """
    server = SipServer(config, agents)
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    mode: list[str] = []

    def on_signal(name: str) -> None:
        if not mode:
            mode.append(name)
            log.info("signal", signal=name)
            stop.set()

    loop.add_signal_handler(signal.SIGTERM, on_signal, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, on_signal, "SIGINT")
    # Everything built so far lives as long as the process: move it out of the
    # collector's sight so full collections under load only scan call state.
    gc.freeze()
    gc.set_threshold(*gc_thresholds())
    log.info("ready", max_calls=config.sip.max_calls)
    await stop.wait()
    if mode[0] == "SIGTERM":
        await server.drain(config.shutdown.drain_timeout)
    else:
        await server.hangup_all(wait=2.0)
    await server.close()
    log.info("stopped", calls_total=server.calls_total)
    return 0
