"""Outbound calls: dial a callee and, once they answer, run a route's app (its
agent) on the call, as if they had called that route.

`Dialouts` is the server's part for them: it checks a `DialRequest` (route,
destination allowed, capacity, idempotency), dials through the SIP core
(`UserAgent.dial`: a SIP URI, a registered user, or a number through the
trunks), rings for at most the request's `ring_timeout`, and follows the call
to its outcome, in the call record and to the optional status webhook. The
app starts only when the callee answers, so the agent never talks to a phone
that is still ringing.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

import httpx
import structlog

from mediaserver.call.campaign_store import CampaignStore
from mediaserver.call.spec import AgentSpec
from mediaserver.config import Config
from mediaserver.handle import CallHandle
from mediaserver.outbound.request import DialError, DialRequest
from mediaserver.outbound.webhook import StatusWebhook
from mediaserver.sip.calls import Call, CallEnded, Event
from mediaserver.sip.edge import destination_allowed
from mediaserver.sip.errors import SipParseError
from mediaserver.sip.ua import UserAgent
from mediaserver.sip.ua_trunks import NoTrunk

__all__ = ["DialHost", "Dialout", "Dialouts", "outcome_of"]

log = structlog.get_logger("mediaserver.outbound")

#: How long, and for how many requests, an idempotency key is remembered.
KEY_TTL: Final = 24 * 3600.0
MAX_KEYS: Final = 10_000


class DialHost(Protocol):
    """What outbound calls need of the server."""

    ua: UserAgent
    config: Config
    agents: dict[str, AgentSpec]

    def now(self) -> float:
        """The SIP core's clock."""

    def handle(self, events: list[Event]) -> None:
        """Carry out the SIP core's events."""

    def hangup(self, call: Call, reason: str) -> None:
        """Hang up `call` from our side (CANCEL while it rings)."""

    def open_app(self, call: Call, route: str, agent: AgentSpec | None, party: str) -> CallHandle:
        """The call's handle and record (its app not started yet)."""

    def run_app(self, app: CallHandle) -> None:
        """Start the route's app on an answered call."""


@dataclass
class Dialout:
    """One outbound call we placed, until it ends."""

    request: DialRequest
    app: CallHandle
    state: str = "dialing"  # dialing, ringing, answered
    ring_timer: asyncio.TimerHandle | None = None
    rang_out: bool = False  # our ring timeout hung it up
    webhook: StatusWebhook | None = None
    #: Told (call id, outcome) when the call ends (a campaign's bookkeeping).
    on_end: Callable[[str, str], None] | None = None

    @property
    def call(self) -> Call:
        """The SIP call."""
        return self.app.call


def outcome_of(
    call: Call, answered: bool, rang_out: bool, by: str, amd_verdict: str | None = None
) -> str:
    """How an outbound call went, in the words campaigns retry on: completed,
    machine, fax, busy, no-answer, declined, cancelled, failed."""
    if answered:
        return amd_verdict if amd_verdict in ("machine", "fax") else "completed"
    status = call.final_status
    if rang_out or status in (408, 480):
        return "no-answer"
    if status in (486, 600):
        return "busy"
    if status == 603:
        return "declined"
    if status == 487 or (status is None and by == "local"):
        return "cancelled"
    return "failed"


class Dialouts:
    """The server's outbound calls (see the module docstring)."""

    def __init__(self, host: DialHost, retry_after: Callable[[], int]) -> None:
        self._host = host
        self._retry_after = retry_after
        #: Calls placed and not ended, by our call id.
        self.calls: dict[str, Dialout] = {}
        #: idempotency key -> (when, the request's fingerprint, the first answer).
        self._keys: OrderedDict[str, tuple[float, str, dict[str, Any]]] = OrderedDict()
        self._client: httpx.AsyncClient | None = None
        self._webhooks: set[asyncio.Task[None]] = set()
        #: Keeps the keys across restarts (the records database), when there is one.
        self.keys: CampaignStore | None = None

    # -- placing a call ------------------------------------------------------------

    def routes(self) -> list[str]:
        """The routes a call may be placed for."""
        return list(self._host.config.routes)

    def dial(
        self, request: DialRequest, on_end: Callable[[str, str], None] | None = None
    ) -> dict[str, Any]:
        """Place `request`'s call; the answer names it (``id``: for GET /calls/{id}).
        `on_end(call id, outcome)` is told how it ended.

        Raises:
            DialError: nothing was dialed (the status and reason say why).
        """
        earlier = self._remembered(request)
        if earlier is not None:
            return earlier
        host = self._host
        now = host.now()
        if request.route not in host.config.routes:
            raise DialError(422, f"route: no such route {request.route!r}")
        ua = host.ua
        if ua.draining:
            raise DialError(503, "draining: not placing calls", self._retry_after())
        if ua.active_calls >= ua.config.max_calls:
            raise DialError(503, "at sip.max_calls", self._retry_after())
        target = self._target(request)
        registered = ua.registered_contact(target, now) is not None
        if request.kind == "user" and not registered:
            raise DialError(404, f"to: {request.to!r} is not registered here")
        if not destination_allowed(request.to, host.config.sip.transfer_allow, registered):
            raise DialError(403, "to: destination not allowed (sip.transfer_allow)")
        try:
            call, events = ua.dial(
                target,
                request.route,
                now,
                display=request.caller_name,
                caller_id=request.caller_id,
            )
        except NoTrunk as exc:
            raise DialError(503, exc.reason, self._retry_after()) from None
        except SipParseError as exc:
            raise DialError(422, f"to: {exc.reason}") from None
        if call is None:
            raise DialError(503, "no media ports free", self._retry_after())
        self._adopt(call, request).on_end = on_end
        answer = {
            "id": call.id,
            "call_id": call.invite.call_id,
            "state": "dialing",
            "to": request.to,
            "route": request.route,
        }
        if request.idempotency_key is not None:
            self._keys[request.idempotency_key] = (time.monotonic(), request.fingerprint(), answer)
        host.handle(events)
        log.info(
            "outbound_dialing",
            call=call.id,
            call_id=call.invite.call_id,
            to=request.to,
            route=request.route,
            trunk=call.trunk,
        )
        return dict(answer)

    async def place(self, request: DialRequest) -> dict[str, Any]:
        """`dial`, with the idempotency key also looked up in and written to the
        records database: a request retried after a restart finds its first call.

        Raises:
            DialError: as `dial`.
        """
        key, store = request.idempotency_key, self.keys
        if key is None or store is None or key in self._keys:
            return self.dial(request)
        try:
            stored = await store.run(store.key_get, key)
        except store.database.errors as exc:  # the in-process keys still hold
            log.warning("dial_key_unavailable", error=str(exc))
            return self.dial(request)
        if stored is not None:
            fingerprint, answer = stored
            if fingerprint != request.fingerprint():
                raise DialError(409, "idempotency_key: already used for a different call")
            return {**answer, "duplicate": True}
        answer = self.dial(request)
        if not answer.get("duplicate"):
            try:
                await store.run(store.key_put, key, request.fingerprint(), answer, KEY_TTL)
            except store.database.errors as exc:
                log.warning("dial_key_not_kept", error=str(exc))
        return answer

    def _remembered(self, request: DialRequest) -> dict[str, Any] | None:
        """The first answer to this idempotency key (a retry), or None (a new call).

        Raises:
            DialError: 409 when the key was used for a different request.
        """
        key = request.idempotency_key
        if key is None:
            return None
        cutoff = time.monotonic() - KEY_TTL
        while self._keys and (
            len(self._keys) > MAX_KEYS or next(iter(self._keys.values()))[0] < cutoff
        ):
            self._keys.popitem(last=False)
        hit = self._keys.get(key)
        if hit is None:
            return None
        if hit[1] != request.fingerprint():
            raise DialError(409, "idempotency_key: already used for a different call")
        return {**hit[2], "duplicate": True}

    def _target(self, request: DialRequest) -> str:
        """What the SIP core dials: a registered user's name becomes our own URI
        (the core finds the binding), a number in a user's name too when one is
        registered by that name."""
        if request.kind == "uri":
            return request.to
        ua = self._host.ua
        host, port = next(iter(ua.config.local.values()))
        here = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        own = f"sip:{request.to}@{here}"
        if request.kind == "user" or ua.registered_contact(own, self._host.now()) is not None:
            return own
        return request.to

    def _adopt(self, call: Call, request: DialRequest) -> Dialout:
        """Open the call's handle and record, its ring timer and webhook."""
        host = self._host
        agent = host.agents.get(request.route)
        if agent is not None:
            info = {
                "direction": "outbound",
                "to": request.to,
                "caller_id_num": request.caller_id or call.invite.from_.uri.user or "",
                "caller_id_name": request.caller_name or "",
            }
            data = {**agent.global_data, **request.variables, "call": info}
            agent = replace(agent, global_data=data)
        app = host.open_app(call, request.route, agent, request.to)
        app.amd, app.amd_message = request.amd, request.message
        dialout = Dialout(request, app)
        self.calls[call.id] = dialout
        if app.record is not None:
            app.record.add(
                "outbound",
                {
                    "event": "dialing",
                    "to": request.to,
                    "caller_id": request.caller_id,
                    "ring_timeout": request.ring_timeout,
                    "amd": request.amd,
                    "variables": sorted(request.variables),
                    "idempotency_key": request.idempotency_key,
                    "trunk": call.trunk,
                },
            )
        dialout.ring_timer = asyncio.get_running_loop().call_later(
            request.ring_timeout, self._rang_out, call.id
        )
        if request.webhook is not None:
            if self._client is None:
                self._client = httpx.AsyncClient(headers={"User-Agent": "mediaserver"})
            dialout.webhook = StatusWebhook(request.webhook, call.id, self._client)
        return dialout

    def _rang_out(self, call_id: str) -> None:
        dialout = self.calls.get(call_id)
        if dialout is not None and dialout.state != "answered":
            dialout.rang_out = True
            self._host.hangup(dialout.call, "no answer")

    # -- what the SIP core reports --------------------------------------------------

    def ringing(self, call: Call, status: int) -> None:
        """The callee's phone rings (first 180/183)."""
        dialout = self.calls.get(call.id)
        if dialout is None:
            return
        dialout.state = "ringing"
        self._note(dialout, "ringing", sip_status=status)

    def answered(self, call: Call) -> None:
        """The callee answered: the route's app takes the call."""
        dialout = self.calls.get(call.id)
        if dialout is None:
            return
        if dialout.ring_timer is not None:
            dialout.ring_timer.cancel()
        dialout.state = "answered"
        self._note(dialout, "answered")
        self._host.run_app(dialout.app)

    def ended(self, event: CallEnded) -> None:
        """The call is over (never answered, or hung up): its outcome."""
        dialout = self.calls.pop(event.call.id, None)
        if dialout is None:
            return
        if dialout.ring_timer is not None:
            dialout.ring_timer.cancel()
        call = event.call
        answered = dialout.state == "answered"
        outcome = outcome_of(call, answered, dialout.rang_out, event.by, dialout.app.amd_verdict)
        self._note(
            dialout,
            "ended",
            outcome=outcome,
            sip_status=call.final_status,
            reason=event.reason,
            by=event.by,
        )
        log.info("outbound_ended", call=call.id, outcome=outcome, status=call.final_status)
        if dialout.on_end is not None:
            try:
                dialout.on_end(call.id, outcome)
            except Exception:
                log.exception("outbound_on_end_failed", call=call.id)
        if dialout.webhook is not None:
            task = asyncio.get_running_loop().create_task(dialout.webhook.aclose(30.0))
            self._webhooks.add(task)
            task.add_done_callback(self._webhooks.discard)

    def _note(self, dialout: Dialout, status: str, **data: Any) -> None:
        """Into the record and to the webhook."""
        if dialout.app.record is not None:
            dialout.app.record.add("outbound", {"event": status, **data})
        if dialout.webhook is not None:
            request = dialout.request
            dialout.webhook.report(status, to=request.to, route=request.route, **data)

    async def aclose(self) -> None:
        """Let queued webhook reports go (bounded), then close the HTTP client."""
        if self._webhooks:
            await asyncio.wait(set(self._webhooks), timeout=10.0)
        if self._client is not None:
            await self._client.aclose()
