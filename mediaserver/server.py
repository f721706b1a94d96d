"""Assembles config -> SIP transports + SIP core + media ports + built-in apps.

Everything runs on one event loop. The sans-IO `UserAgent` decides; this module
moves bytes, keeps one wake-up armed for the core's next deadline, runs one app
task per call (`CallHandle`, `mediaserver.handle`), and hands transfers to
`mediaserver.bridge` (REFER, or a B2BUA bridge when the caller's side will
not take one).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import ssl
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import structlog

from mediaserver.agent.from_config import route_agent
from mediaserver.agent.runner import install_dialer
from mediaserver.apps import APPS
from mediaserver.bridge import Bridges
from mediaserver.call.bindings import SharedBindings
from mediaserver.call.campaign_store import CampaignStore
from mediaserver.call.errors import RECOVERY, ErrorKind
from mediaserver.call.events import HoldChanged, StageError, TransferResult
from mediaserver.call.runtime import PipelineRuntime
from mediaserver.call.spec import AgentSpec
from mediaserver.call.store import CallRecord, CallStore
from mediaserver.config import Config, ConfigError
from mediaserver.faults import Faults
from mediaserver.handle import CallHandle, call_info
from mediaserver.media.clock import MediaClock
from mediaserver.media.ports import PortPool
from mediaserver.media.recording import keep_for
from mediaserver.media.session import RtpSession, SessionSettings
from mediaserver.observability.admin import AdminServer
from mediaserver.observability.metrics import Metrics
from mediaserver.outbound import DialError, Dialouts, DialRequest
from mediaserver.outbound.campaigns import Campaigns
from mediaserver.pipeline.errors import ModelLoadError
from mediaserver.sip.calls import (
    AuthRejected,
    Blocked,
    Call,
    CallConfirmed,
    CallEnded,
    CallIncoming,
    CallMediaChanged,
    CallRinging,
    Dropped,
    DtmfInfo,
    Event,
    Registered,
    TransferOutcome,
    TrunkRegistration,
    UaConfig,
)
from mediaserver.sip.session_timer import SessionTimerPolicy
from mediaserver.sip.transaction import Send, Target, Timers
from mediaserver.sip.transport import Transports
from mediaserver.sip.trunks import TrunkTable
from mediaserver.sip.ua import UserAgent
from mediaserver.sip_policy import auth_and_registrar, edge_policy

log = structlog.get_logger("mediaserver.server")
#: Call record events counted as turn-taking outcomes (metric label by event).
_TURN_EVENTS = {
    "turn_held": "held",
    "backchannel": "backchannel",
    "noise_interruption": "noise_interruption",
    "go_ahead": "go_ahead",
}

#: Most "sip_message_rejected" log lines per second (the rest are counted).
REJECT_LOG_RATE = 20


def _call_log(call: Call) -> Any:
    """The logger for lines about `call`: our id and the SIP Call-ID on every line."""
    return log.bind(call=call.id, call_id=call.invite.call_id)


class SipServer:
    """One server process: listeners, the UAS core, and the calls' apps."""

    def __init__(self, config: Config, agents: dict[str, AgentSpec] | None = None) -> None:
        self.config = config
        self._preset_agents = dict(agents or {})
        self.transports = Transports(self._on_message)
        self.ua: UserAgent
        self.ports: PortPool
        self.apps: dict[str, CallHandle] = {}
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
        #: Transfers, and the B2BUA bridges of those REFER would not do.
        self.bridges = Bridges(self)
        #: Calls we place (`POST /calls`, `mediaserver dial`, `AgentBase.dial`).
        self.dialouts = Dialouts(self, lambda: self.config.sip.retry_after)
        self.faults = Faults(config.faults)
        self.store = CallStore(config.records.path, dsn=config.records.dsn)
        self.metrics = Metrics()
        #: Campaigns (their store is the records database's, set at start).
        self.campaigns = Campaigns(self.dialouts, None, self.metrics.campaign_outcome)
        self.store.listeners.append(self._observe)
        self.admin: AdminServer | None = None
        self.bindings: SharedBindings | None = None
        #: App tasks of ended calls still finishing (their records close after).
        self._finishing: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None  # recordings retention
        #: Told once that SRTP keys went over signalling without TLS.
        self._sdes_warned = False
        self._on_event: dict[type, Callable[[Any], None]] = {
            Send: self._on_send,
            CallIncoming: self._on_incoming,
            CallConfirmed: self._on_confirmed,
            CallRinging: lambda event: self.dialouts.ringing(event.call, event.status),
            CallMediaChanged: self._on_media_changed,
            CallEnded: self._on_ended,
            TransferOutcome: self._on_transfer_outcome,
            DtmfInfo: self._on_dtmf_info,
            Registered: self._on_registered,
            AuthRejected: self._on_auth_rejected,
            Dropped: self._on_dropped,
            Blocked: self._on_blocked,
            TrunkRegistration: self._on_trunk_registration,
        }

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
                self.agents[user] = route_agent(user, route.agent, self.config.pipeline)
        if self.agents and self.runtime is None:
            self.runtime = PipelineRuntime(self.config.pipeline, faults=self.faults)
        for user, agent in self.agents.items():
            assert self.runtime is not None
            try:
                self.runtime.prepare(agent)  # e.g. a missing API key fails now, not mid-call
            except (ValueError, ModelLoadError) as exc:
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
                trunks=self._trunks(),
                edge=edge_policy(sip),
                srtp=self.config.media.srtp,
                route_srtp={n: r.srtp for n, r in self.config.routes.items() if r.srtp},
                **auth_and_registrar(sip),
            ),
            self.ports,
        )
        self.bindings = self._share_bindings(loop)
        install_dialer(self._dial_from_python)
        if self.store.database is not None:
            # A cluster's campaigns run on its first worker only (their caps whole).
            store = self.dialouts.keys = CampaignStore(self.store.database)
            if self.config.records.worker in (None, "w0"):
                self.campaigns.store = store
        await self.campaigns.start()
        if media.recordings_retention_days is not None:
            sweep = keep_for(media.recordings_dir, media.recordings_retention_days)
            self._sweeper = loop.create_task(sweep)
        self.metrics.watch_edge(self._edge_state)
        self.metrics.watch_trunks(self._trunk_state)
        self.handle([])  # arms the first registrations with the providers
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

    def _share_bindings(self, loop: asyncio.AbstractEventLoop) -> SharedBindings | None:
        """The registrar's bindings shared through the records database
        (`sip.registrar.shared`, on in a cluster's workers)."""
        registrar, database = self.ua.config.registrar, self.store.database
        if registrar is None or not self.config.sip.registrar.shared:
            return None
        if database is None:
            log.warning("bindings_not_shared", reason="no records database (records.path, dsn)")
            return None
        shared = SharedBindings(database, registrar, loop)
        shared.start()
        log.info("bindings_shared", path=str(database))
        return shared

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

    async def dial(
        self, body: Any, idempotency_key: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """`POST /calls`: place an outbound call (`mediaserver.outbound`); 201 and
        the call's id, 200 for a retried key, or the error that dialed nothing."""
        try:
            answer = await self.dialouts.place(DialRequest.from_json(body, idempotency_key))
        except DialError as exc:
            return exc.status, {"error": exc.reason, "retry_after": exc.retry_after}
        return (200 if answer.get("duplicate") else 201), answer

    def _dial_from_python(self, body: dict[str, Any]) -> dict[str, Any]:
        """`AgentBase.dial` from the loop's thread or any other (then it waits for
        the loop, bounded)."""
        loop = self._loop
        assert loop is not None
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            return self.dialouts.dial(DialRequest.from_json(body))

        async def place() -> dict[str, Any]:
            return await self.dialouts.place(DialRequest.from_json(body))

        return asyncio.run_coroutine_threadsafe(place(), loop).result(timeout=10)

    async def campaigns_api(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        """`/campaigns...` and `/dnc...` (`mediaserver.outbound.campaigns`)."""
        return await self.campaigns.handle(method, parts, body)

    def end_call(self, call_id: str) -> bool:
        """`DELETE /calls/{id}`: hang up (or stop ringing) a call in progress."""
        app = self.apps.get(call_id)
        if app is None:
            return False
        self.hangup(app.call, "ended by the admin API")
        return True

    def registrations(self) -> dict[str, list[dict[str, Any]]]:
        """The registrar's live bindings by user."""
        registrar = self.ua.config.registrar if hasattr(self, "ua") else None
        if registrar is None:
            return {}
        now = self.now()
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
        self.metrics.set_campaign_calls(self.campaigns.in_progress())
        return self.metrics.render()

    def _observe(self, record: CallRecord, kind: str, data: dict[str, Any]) -> None:
        """Feed the metrics from what calls record (turns, barge-ins, errors)."""
        if kind == "turn" and data.get("latency_ms"):
            self.metrics.turn(data["latency_ms"])
        elif kind == "barge_in":
            self.metrics.barge_in(data.get("stop_ms") or 0.0, bool(data.get("false")))
        elif kind == "error":
            self.metrics.error(str(data.get("kind")), str(data.get("stage")))
        elif kind == "turn_check":
            self.metrics.turn_check(data.get("complete"), data.get("ms") or 0.0)
        elif kind == "preemptive":
            self.metrics.turn_event("preempt_used" if data.get("used") else "preempt_dropped")
        elif kind == "outbound" and data.get("event") == "ended":
            self.metrics.outbound(str(data.get("outcome")))
        elif kind == "amd":
            self.metrics.amd(str(data.get("verdict")), data.get("decision_s") or 0.0)
        elif kind in _TURN_EVENTS:
            self.metrics.turn_event(_TURN_EVENTS[kind])

    # -- the core's inputs ------------------------------------------------------

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _on_message(self, data: bytes, source: Target) -> None:
        if self._loop is None or not hasattr(self, "ua"):
            return  # a listener is up but the core is not built yet: as if lost
        try:
            events = self.ua.receive(data, source, self.now())
        except Exception:
            # A bug must cost one message, never the process or other calls.
            log.exception("message_handling_failed", peer=f"{source.host}:{source.port}")
            return
        self.handle(events)

    def command(self, action: Callable[[float], list[Event]]) -> None:
        """Run an app command against the core (`action(now) -> events`)."""
        try:
            events = action(self.now())
        except Exception:
            log.exception("command_failed")
            return
        self.handle(events)

    def _on_wakeup(self) -> None:
        self._wakeup = None
        self._wakeup_at = None
        try:
            events = self.ua.tick(self.now())
        except Exception:
            log.exception("timer_handling_failed")
            events = []
        self.handle(events)

    # -- the core's outputs -------------------------------------------------------

    def handle(self, events: list[Event]) -> None:
        """Carry out the SIP core's events, then re-arm its wake-up."""
        for event in events:
            self._on_event[type(event)](event)
        self._rearm()

    def _on_send(self, event: Send) -> None:
        method = getattr(event.message, "method", None)
        if method is not None and self.faults.check("sip", method) is not None:
            return  # injected: this request is lost on the way
        self.transports.send(event.message.encode(), event.target)

    def _on_incoming(self, event: CallIncoming) -> None:
        self._start_app(event.call)

    def _on_confirmed(self, event: CallConfirmed) -> None:
        _call_log(event.call).info("call_confirmed")
        self.record(event.call, "sip", event="confirmed")
        if event.call.outbound and event.call.id not in self.apps:
            self.bridges.answered(event.call)
        else:
            self._open_media(event.call)  # the answer may have come in the ACK
            self.dialouts.answered(event.call)  # a call we placed: its app starts now

    def _on_media_changed(self, event: CallMediaChanged) -> None:
        call, media = event.call, event.call.media
        _call_log(call).info(
            "call_media_changed",
            on_hold=call.on_hold,
            direction=media.direction if media else None,
        )
        bridge = self.bridges.legs.get(call.id)
        app = self.apps.get(call.id)
        self.record(call, "sip", event="media_changed", on_hold=call.on_hold)
        if bridge is not None:
            if bridge.session is not None and media is not None:
                bridge.session.update(media)
        elif app is not None and app.session is not None and media is not None:
            app.session.update(media)
            if app.actor is not None and app.bridge is None:
                app.actor.post(HoldChanged(call.on_hold))
        else:
            self._open_media(call)

    def _on_ended(self, event: CallEnded) -> None:
        if event.call.outbound and event.call.id not in self.apps:
            self.bridges.ended(event)
        else:
            self.dialouts.ended(event)
            self._end_app(event)

    def _on_transfer_outcome(self, event: TransferOutcome) -> None:
        _call_log(event.call).info(
            "transfer_outcome", ok=event.ok, status=event.status, reason=event.reason
        )
        self.record(
            event.call, "sip", event="transfer", ok=event.ok, status=event.status,
            reason=event.reason, refused=event.refused,
        )  # fmt: skip
        app = self.apps.get(event.call.id)
        if app is None or app.actor is None:
            return
        # The caller's side will not transfer: maybe bridge the call ourselves.
        if event.ok or not event.refused or not self.bridges.refused(app, event.status):
            app.actor.post(TransferResult(event.ok, event.status, event.reason))

    def _on_dtmf_info(self, event: DtmfInfo) -> None:
        self._digit(event.call, event.digit, event.duration_ms, "info")

    def _on_registered(self, event: Registered) -> None:
        log.info(
            "sip_registered",
            user=event.user,
            bindings=event.bindings,
            peer=f"{event.source.host}:{event.source.port}",
        )

    def _on_auth_rejected(self, event: AuthRejected) -> None:
        self.metrics.error(ErrorKind.AUTH_FAILURE.value, "sip")
        self._log_rejected(
            "sip_auth_rejected",
            event.source,
            method=event.method,
            user=event.user,
            reason=event.reason,
            status=403,
        )

    def _on_dropped(self, event: Dropped) -> None:
        self._log_rejected(
            "sip_message_rejected", event.source, reason=event.reason, status=event.status
        )

    def _on_blocked(self, event: Blocked) -> None:
        self._log_rejected("sip_blocked", event.source, reason=event.reason, status=event.status)

    def _trunks(self) -> TrunkTable:
        try:
            return TrunkTable(t.trunk(name) for name, t in self.config.trunks.items())
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _on_trunk_registration(self, event: TrunkRegistration) -> None:
        fields = {"trunk": event.trunk, "status": event.status, "reason": event.reason}
        if event.state == "registered":
            log.info("trunk_registered", **fields)
        else:
            # Once per failure: the backoff (2 s doubling to 5 min) bounds the rate.
            retry_in = round(event.retry_at - self.now(), 1) if event.retry_at else None
            log.warning("trunk_registration_failed", **fields, retry_in=retry_in)

    def _trunk_state(self) -> dict[str, tuple[bool, int]]:
        """For /metrics: per outbound trunk, whether calls can go through it and
        how many registrations failed."""
        out: dict[str, tuple[bool, int]] = {}
        for trunk in self.ua.config.trunks.outbound():
            reg = self.ua.registrations.get(trunk.name)
            out[trunk.name] = (self.ua.trunk_up(trunk), reg.failures_total if reg else 0)
        return out

    def trunks(self) -> dict[str, dict[str, Any]]:
        """Each trunk: where it calls from, calls in progress, and its outbound
        side (proxy, registration state)."""
        if not hasattr(self, "ua"):
            return {}
        now, out = self.now(), {}
        for trunk in self.ua.config.trunks.trunks:
            info: dict[str, Any] = {
                "allow": [str(n) for n in trunk.allow],
                "calls": self.ua.load["trunk", trunk.name],
            }
            if trunk.outbound is not None:
                o = trunk.outbound
                info["outbound"] = {
                    "proxy": f"{o.transport}:{o.host}:{o.port}",
                    "up": self.ua.trunk_up(trunk),
                }
                reg = self.ua.registrations.get(trunk.name)
                if reg is not None:
                    info["outbound"]["registration"] = {
                        "state": reg.state,
                        "status": reg.status,
                        "failures": reg.failures_total,
                        "expires_in": round(reg.expires_at - now) if reg.expires_at else None,
                    }
            out[trunk.name] = info
        return out

    def _edge_state(self) -> tuple[dict[str, int], int, dict[str, int]]:
        """For /metrics: refusals by reason, banned addresses, calls per trunk."""
        edge, load = self.ua.edge, self.ua.load
        trunks = {name: load["trunk", name] for name in self.config.trunks}
        if edge is None:
            return {}, 0, trunks
        return dict(edge.blocked), edge.banned(self.now()), trunks

    def _log_rejected(self, what: str, source: Target, **fields: Any) -> None:
        """One line per rejected message, at most REJECT_LOG_RATE a second.

        A flood of garbage must not turn into a flood of log lines; what is
        held back is counted and reported with the next line that gets out.
        """
        now = self.now()
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

    def open_app(self, call: Call, route: str, agent: AgentSpec | None, party: str) -> CallHandle:
        """A call's handle and record (`party`: who called us, or whom we call)."""
        self.calls_total += 1
        app = CallHandle(self, call, runtime=self.runtime, agent=agent)
        self.apps[call.id] = app
        app.record = self.store.start_call(
            call.id,
            call_id=call.invite.call_id,
            route=route,
            agent=agent.name if agent is not None else self.config.routes[route].app,
            caller=party,
            worker=self.config.records.worker,
        )
        self.metrics.call_started()
        return app

    def run_app(self, app: CallHandle) -> None:
        """Start the route's app on the call."""
        call = app.call
        route = self.config.routes[call.user]
        app.task = asyncio.get_running_loop().create_task(APPS[route.app](app, route))
        app.task.add_done_callback(lambda t: self._app_done(call, t))

    def _start_app(self, call: Call) -> None:
        info = call_info(call)
        agent = self.agents.get(call.user)
        if agent is not None:
            # Who called and how, for the agent's tools (SignalWire's caller_id_*).
            agent = replace(agent, global_data={**agent.global_data, "call": info})
        app = self.open_app(call, call.user, agent, str(call.invite.from_.uri))
        assert app.record is not None
        app.record.add(
            "sip",
            {
                "event": "incoming",
                "peer": f"{call.source.host}:{call.source.port}",
                "transport": call.source.transport,
                "codec": call.media.codec.encoding if call.media is not None else None,
                "auth_user": call.auth_user,
                **{k: v for k, v in info.items() if k in ("trunk", "called", "identity")},
            },
        )
        _call_log(call).info(
            "call_incoming",
            user=call.user,
            peer=f"{call.source.host}:{call.source.port}",
            transport=call.source.transport,
            **({"trunk": call.trunk, "called": call.called} if call.trunk else {}),
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
        self.run_app(app)

    def _open_media(self, call: Call) -> None:
        """Start the call's RTP session once its media is negotiated (once)."""
        app = self.apps.get(call.id)
        if app is None or app.session is not None or call.media is None:
            return
        session = self.start_session(call, self.config.media.for_call(call.id))
        if session is None:
            return
        self._inject_media_faults(session)
        app.session = session
        app.media_ready.set()

    def start_session(self, call: Call, settings: SessionSettings) -> RtpSession | None:
        """Open `call`'s RTP session with its reports wired to us; None (and the call
        hung up) when it cannot carry audio."""
        assert call.media is not None
        try:
            session = self.ports.open_session(call.offer, call.media, settings)
        except Exception:
            # e.g. a codec we offered but cannot run: the call cannot carry audio.
            _call_log(call).exception("media_open_failed")
            self.hangup(call, "media failure")
            return None
        if call.media.srtp is not None and call.source.transport != "tls" and not self._sdes_warned:
            # SDES keys are in the SDP: over UDP/TCP anyone on the path can read them.
            self._sdes_warned = True
            _call_log(call).warning("srtp_keys_in_clear", transport=call.source.transport)
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

    def record(self, call: Call, what: str, /, **data: Any) -> None:
        """Append to the call's record (of the caller's call, for a bridge leg)."""
        app = self.apps.get(call.id)
        if app is None and (bridge := self.bridges.legs.get(call.id)) is not None:
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
        self.record(call, "error", kind=kind.value, stage=stage, error=error, recovery=recovery)

    def _media_error(self, call: Call, error: str) -> None:
        _call_log(call).warning("media_error", error=error)
        self._error(call, ErrorKind.MEDIA_FAILURE, "media", error)

    def _digit(self, call: Call, digit: str, duration_ms: int, via: str) -> None:
        _call_log(call).info("dtmf", digit=digit, duration_ms=duration_ms, via=via)
        self.record(call, "dtmf", digit=digit, duration_ms=duration_ms, via=via)
        other = self.bridges.other_side(call)
        if other is not None:
            # Bridged: the digit is for the other party (e.g. a desk's IVR).
            other.send_dtmf(digit, duration_ms or 100)
            return
        app = self.apps.get(call.id)
        if app is not None:
            app.digits.put_nowait(digit)

    def _media_timeout(self, call: Call) -> None:
        timeout = self.config.media.inactivity_timeout
        _call_log(call).warning("rtp_timeout", seconds=timeout)
        self._error(call, ErrorKind.NETWORK_PARTITION, "rtp", f"no RTP for {timeout:g} s")
        self.hangup(call, "rtp timeout")

    def _app_done(self, call: Call, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            _call_log(call).error("app_failed", error=repr(task.exception()))
            self.hangup(call, "app failed")

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
            self._finish_when_done(app, event, media)
            if app.bridge is not None:
                # The caller left: the bridged party goes too (BYE, or CANCEL while ringing).
                leg = app.bridge.leg
                self.hangup(leg, "caller hung up")
        _call_log(call).info(
            "call_ended",
            reason=event.reason,
            by=event.by,
            **media,
        )

    def _finish_when_done(self, app: CallHandle, event: CallEnded, media: dict[str, Any]) -> None:
        """Close the record once the app is done: the actor handles the hangup after
        us (and may still summarise the call), and its final state belongs in it."""
        task = app.task
        if task is None or task.done():
            self._finish_record(app, event, media)
            return
        self._finishing.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._finishing.discard(task)
            self._finish_record(app, event, media)

        task.add_done_callback(done)

    def _finish_record(self, app: CallHandle, event: CallEnded, media: dict[str, Any]) -> None:
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

    # -- transfers ---------------------------------------------------------------------

    def transfer(self, handle: CallHandle, target: str, whisper: str | None = None) -> None:
        """An agent's transfer (REFER or a bridge, see `mediaserver.bridge`)."""
        self.bridges.transfer(handle, target, whisper)

    # -- lifecycle ------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Stop taking calls, wait up to `timeout` for calls to end, then BYE the rest."""
        self.ua.drain()
        log.info("draining", active_calls=self.ua.active_calls, timeout=timeout)
        await self.campaigns.stop()
        await self._wait_calls(timeout)
        await self.hangup_all()

    async def hangup_all(self, wait: float = 5.0) -> None:
        """Hang up every call and give the BYEs `wait` seconds to complete."""
        for call in list(self.ua.calls.values()):
            self.hangup(call, "shutdown")
        await self._wait_calls(wait)

    def hangup(self, call: Call, reason: str) -> None:
        self.command(lambda now: self.ua.hangup(call, now, reason))

    async def _wait_calls(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.ua.active_calls and loop.time() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Cancel apps (their records are closed first) and close sockets."""
        tasks = {app.task for app in self.apps.values() if app.task is not None}
        tasks |= self._finishing
        if self._sweeper is not None:
            tasks.add(self._sweeper)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if hasattr(self, "ua"):
            # Providers forget us now rather than at our registrations' expiry.
            self.command(self.ua.unregister_trunks)
            await asyncio.sleep(0)
        if self._wakeup is not None:
            self._wakeup.cancel()
        await self.transports.close()
        if self.admin is not None:
            await self.admin.close()
        install_dialer(None)
        await self.campaigns.aclose()
        await self.dialouts.aclose()
        if self.runtime is not None:
            await self.runtime.aclose()
        if self.bindings is not None:
            self.bindings.close()
        self.store.close()


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
