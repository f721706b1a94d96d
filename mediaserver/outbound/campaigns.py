"""Outbound campaigns: a list of numbers called by a route's agent, within caps.

A campaign (`POST /campaigns`) is a route, its contacts (a list or CSV, each
with variables for the agent's global data and an optional time zone) and its
rules: at most `max_concurrent` calls up and `cps` new calls a second, no
calls in the callee's quiet hours, retries by outcome (busy, no-answer,
machine, ...) after a delay, and the do-not-call list checked before every
dial. Its state is in the records database (`CampaignStore`): a contact is
claimed in a committed write before it is dialed, so a restart never dials a
number twice; running campaigns carry on after a restart.

`Campaigns` runs one task per running campaign and answers the admin API
(`handle`): the campaigns, one campaign's progress and contacts, pause,
resume, cancel, and the do-not-call list.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from mediaserver.call.campaign_store import PENDING, CampaignStore, Contact
from mediaserver.outbound.calls import Dialouts
from mediaserver.outbound.request import DialError, DialRequest
from mediaserver.sip.trunks import normalise_number

__all__ = ["CampaignSpec", "Campaigns", "contacts_of"]

log = structlog.get_logger("mediaserver.outbound")

MAX_CONTACTS: Final = 100_000
#: Outcomes a campaign may retry on.
RETRYABLE: Final = ("busy", "no-answer", "machine", "declined", "failed", "fax")
#: When the server refuses a dial for now (503: draining, full, no trunk), seconds.
BUSY_SERVER_RETRY: Final = 5.0
#: Kept on top of a second between the first and the last of `cps` dials (s).
RATE_MARGIN: Final = 0.02
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_DIAL_OPTIONS: Final = ("caller_id", "caller_name", "ring_timeout", "amd", "message", "webhook")
_FIELDS: Final = frozenset(
    {
        "name", "route", "contacts", "csv", "max_concurrent", "cps", "quiet_hours",
        "timezone", "retries", *_DIAL_OPTIONS,
    }
)  # fmt: skip


@dataclass(frozen=True)
class Retry:
    """Try again after `delay` seconds, at most `attempts` more times."""

    attempts: int
    delay: float


@dataclass(frozen=True)
class CampaignSpec:
    """A campaign's rules (the contacts are stored apart)."""

    name: str
    route: str
    max_concurrent: int = 10
    cps: float = 1.0
    #: Local times (HH:MM) between which nobody is called, e.g. 21:00-09:00.
    quiet_hours: tuple[str, str] | None = None
    #: A contact's time zone when it has none.
    timezone: str = "UTC"
    retries: dict[str, Retry] = field(default_factory=dict)
    #: Passed to every dial (caller_id, ring_timeout, amd, ...).
    dial: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """For the store and the API."""
        return {
            "name": self.name,
            "route": self.route,
            "max_concurrent": self.max_concurrent,
            "cps": self.cps,
            "quiet_hours": list(self.quiet_hours) if self.quiet_hours else None,
            "timezone": self.timezone,
            "retries": {
                k: {"attempts": r.attempts, "delay": r.delay} for k, r in self.retries.items()
            },
            **self.dial,
        }

    @classmethod
    def from_json(cls, body: Any) -> CampaignSpec:
        """The rules of a `POST /campaigns` body (or of a stored spec).

        Raises:
            DialError: 422 naming the bad field (or contact).
        """
        if not isinstance(body, dict):
            raise DialError(422, "the body must be a JSON object")
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise DialError(422, f"unknown field: {unknown[0]}")
        route = body.get("route")
        if not isinstance(route, str) or not route:
            raise DialError(422, "route: required")
        name = body.get("name", "campaign")
        if not isinstance(name, str) or not 0 < len(name) <= 100:
            raise DialError(422, "name: 1..100 characters")
        dial = {k: body[k] for k in _DIAL_OPTIONS if body.get(k) is not None}
        try:  # the options a dial takes, checked once here
            DialRequest.from_json({"to": "campaign-check", "route": route, **dial})
        except DialError as exc:
            raise DialError(422, exc.reason) from None
        return cls(
            name=name,
            route=route,
            max_concurrent=_integer(body.get("max_concurrent", 10), "max_concurrent", 1, 1000),
            cps=_number(body.get("cps", 1.0), "cps", 0.01, 200.0),
            quiet_hours=_quiet(body.get("quiet_hours")),
            timezone=_zone(body.get("timezone", "UTC"), "timezone"),
            retries=_retries(body.get("retries", {})),
            dial=dial,
        )

    def quiet_until(self, tz: str | None, now: float) -> float | None:
        """When the quiet hours around `now` end in `tz` (None: not quiet now)."""
        if self.quiet_hours is None:
            return None
        local = datetime.fromtimestamp(now, ZoneInfo(tz or self.timezone))
        (h1, m1), (h2, m2) = (map(int, t.split(":")) for t in self.quiet_hours)
        start, end = h1 * 60 + m1, h2 * 60 + m2
        minute = local.hour * 60 + local.minute
        inside = start <= minute < end if start <= end else (minute >= start or minute < end)
        if not inside:
            return None
        ends = local.replace(hour=h2, minute=m2, second=0, microsecond=0)
        if ends <= local:
            ends += timedelta(days=1)
        return ends.timestamp()


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DialError(422, f"{name}: an integer {low}..{high}")
    return value


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DialError(422, f"{name}: a number {low:g}..{high:g}")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise DialError(422, f"{name}: a number {low:g}..{high:g}")
    return number


def _zone(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise DialError(422, f"{name}: an IANA time zone, e.g. America/New_York")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise DialError(422, f"{name}: unknown time zone {value!r}") from None
    return value


def _quiet(value: Any) -> tuple[str, str] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or set(value) != {"start", "end"}
        or not all(isinstance(v, str) and _CLOCK.fullmatch(v) for v in value.values())
    ):
        raise DialError(422, 'quiet_hours: {"start": "HH:MM", "end": "HH:MM"}')
    return value["start"], value["end"]


def _retries(value: Any) -> dict[str, Retry]:
    if not isinstance(value, dict):
        raise DialError(422, "retries: an object by outcome")
    out: dict[str, Retry] = {}
    for outcome, rule in value.items():
        if outcome not in RETRYABLE:
            raise DialError(422, f"retries: {outcome!r} is not one of {', '.join(RETRYABLE)}")
        if not isinstance(rule, dict) or set(rule) - {"attempts", "delay"}:
            raise DialError(422, f"retries.{outcome}: {{attempts, delay}}")
        out[outcome] = Retry(
            _integer(rule.get("attempts", 1), f"retries.{outcome}.attempts", 0, 10),
            _number(rule.get("delay", 300), f"retries.{outcome}.delay", 1.0, 7 * 86400.0),
        )
    return out


def contacts_of(
    body: dict[str, Any], spec: CampaignSpec
) -> list[tuple[str, dict[str, Any], str | None]]:
    """The contacts of a `POST /campaigns` body: (to, variables, tz), each checked.

    Raises:
        DialError: 422 naming the contact (or CSV line) and field.
    """
    if ("contacts" in body) == ("csv" in body):
        raise DialError(422, "contacts or csv: exactly one")
    rows: list[Any]
    if "csv" in body:
        if not isinstance(body["csv"], str):
            raise DialError(422, "csv: the CSV text (a header row with a `to` column)")
        rows = list(_csv_rows(body["csv"]))
    else:
        rows = body["contacts"]
        if not isinstance(rows, list):
            raise DialError(422, "contacts: a list")
    if not rows:
        raise DialError(422, "contacts: none")
    if len(rows) > MAX_CONTACTS:
        raise DialError(422, f"contacts: at most {MAX_CONTACTS}")
    out: list[tuple[str, dict[str, Any], str | None]] = []
    for i, row in enumerate(rows):
        where = f"contacts[{i}]"
        if isinstance(row, str):
            row = {"to": row}
        if not isinstance(row, dict) or set(row) - {"to", "variables", "tz"}:
            raise DialError(422, f"{where}: {{to, variables, tz}}")
        try:
            request = DialRequest.from_json(
                {"to": row.get("to"), "route": spec.route, "variables": row.get("variables", {})}
            )
        except DialError as exc:
            raise DialError(422, f"{where}.{exc.reason}") from None
        tz = row.get("tz")
        if tz is not None:
            tz = _zone(tz, f"{where}.tz")
        out.append((request.to, request.variables, tz))
    return out


def _csv_rows(text: str) -> list[dict[str, Any]]:
    """CSV rows as contacts: the `to` column (or number/phone), `tz`, the rest variables."""
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    column = next((c for c in ("to", "number", "phone") if c in fields), None)
    if column is None:
        raise DialError(422, "csv: a header row with a `to` (or number, phone) column")
    rows: list[dict[str, Any]] = []
    for line, raw in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        if not row.get(column):
            raise DialError(422, f"csv line {line}: no {column}")
        variables = {k: v for k, v in row.items() if k not in (column, "tz") and k}
        zone = {"tz": row["tz"]} if row.get("tz") else {}
        rows.append({"to": row[column], "variables": variables, **zone})
    return rows


@dataclass
class _Run:
    """A campaign being dialed: its spec, calls up (call id -> contact) and pacing."""

    id: str
    spec: CampaignSpec
    state: str
    created: float
    inflight: dict[str, int] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    next_dial: float = 0.0
    #: When the last `cps` dials went (the per-second cap).
    sent: deque[float] = field(default_factory=deque)
    dialed: int = 0


class Campaigns:
    """The server's campaigns (see the module docstring).

    Args:
        dialouts: places the calls.
        store: the campaign tables (None without a records database: refused).
        on_outcome: told each campaign call's outcome (metrics).
    """

    def __init__(
        self,
        dialouts: Dialouts,
        store: CampaignStore | None,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self._dialouts = dialouts
        self.store = store
        self._on_outcome = on_outcome
        self.runs: dict[str, _Run] = {}
        self._writes: set[asyncio.Task[Any]] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Close contacts a dead process left `dialing`, resume running campaigns."""
        store = self.store
        if store is None:
            return
        try:
            await self._resume(store)
        except store.database.errors as exc:
            # The calls go on; the campaigns wait for the database (a restart).
            log.error("campaigns_not_loaded", database=str(store.database), error=str(exc))

    async def _resume(self, store: CampaignStore) -> None:
        interrupted = await store.run(store.interrupt)
        for cid, _, spec_json, state, created in await store.run(store.campaigns):
            spec = CampaignSpec.from_json(_stored(spec_json))
            run = self.runs[cid] = _Run(cid, spec, state, created)
            if state == "running":
                self._launch(run)
        if interrupted or self.runs:
            log.info("campaigns_loaded", campaigns=len(self.runs), interrupted=interrupted)

    async def stop(self) -> None:
        """Stop dialing (on drain); calls up go on, and their outcomes are kept."""
        tasks = [r.task for r in self.runs.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Stop dialing, wait for the outcome writes, close the store."""
        await self.stop()
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=10)
        if self.store is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.store.close)

    def in_progress(self) -> int:
        """Campaign calls up now."""
        return sum(len(r.inflight) for r in self.runs.values())

    def _launch(self, run: _Run) -> None:
        run.task = asyncio.get_running_loop().create_task(self._dialer(run))

    # -- the admin API --------------------------------------------------------------------

    async def handle(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        """`/campaigns[/ID[/ACTION]]` and `/dnc[/NUMBER]`: (status, JSON answer)."""
        store = self.store
        if store is None:
            return 503, {"error": "campaigns need a records database (records.path or dsn)"}
        try:
            if parts[0] == "dnc":
                return await self._dnc(method, parts[1:], body)
            if len(parts) == 1:
                if method == "POST":
                    return 201, await self.create(body)
                return 200, {"campaigns": [await self.describe(r) for r in self.runs.values()]}
            run = self.runs.get(parts[1])
            if run is None:
                return 404, {"error": "no such campaign"}
            if len(parts) == 2 and method == "DELETE":
                return 200, await self.control(run, "cancel")
            if len(parts) == 3:
                return 200, await self.control(run, parts[2])
            detail = await self.describe(run)
            contacts = await store.run(store.contacts, run.id, 1000)
            detail["contacts"] = [_contact_json(c) for c in contacts]
            return 200, detail
        except DialError as exc:
            return exc.status, {"error": exc.reason}

    async def create(self, body: Any) -> dict[str, Any]:
        """A new campaign, dialing at once."""
        assert self.store is not None
        spec = CampaignSpec.from_json(body)
        contacts = contacts_of(body, spec)
        if spec.route not in self._dialouts.routes():
            raise DialError(422, f"route: no such route {spec.route!r}")
        cid = secrets.token_hex(6)
        await self.store.run(self.store.create, cid, spec.name, spec.as_json(), contacts)
        run = self.runs[cid] = _Run(cid, spec, "running", time.time())
        self._launch(run)
        log.info("campaign_started", campaign=cid, name=spec.name, contacts=len(contacts))
        return await self.describe(run)

    async def control(self, run: _Run, action: str) -> dict[str, Any]:
        """pause, resume or cancel (calls already up go on to their end)."""
        assert self.store is not None
        moves = {"pause": ({"running"}, "paused"), "resume": ({"paused"}, "running"),
                 "cancel": ({"running", "paused"}, "cancelled")}  # fmt: skip
        if action not in moves:
            raise DialError(404, f"no such action: {action}")
        before, after = moves[action]
        if run.state not in before:
            raise DialError(409, f"campaign is {run.state}")
        run.state = after
        await self.store.run(self.store.set_state, run.id, after)
        if after == "running":
            self._launch(run)
        else:
            run.wake.set()
        log.info("campaign_state", campaign=run.id, state=after)
        return await self.describe(run)

    async def describe(self, run: _Run) -> dict[str, Any]:
        """The campaign, its counts by state and outcome, and its calls up."""
        assert self.store is not None
        progress = await self.store.run(self.store.progress, run.id)
        return {
            "id": run.id,
            "name": run.spec.name,
            "state": run.state,
            "created": run.created,
            "spec": run.spec.as_json(),
            "in_progress": len(run.inflight),
            **progress,
        }

    async def _dnc(self, method: str, rest: list[str], body: Any) -> tuple[int, Any]:
        store = self.store
        assert store is not None
        if method == "DELETE" and rest:
            found = await store.run(store.dnc_remove, _dnc_key(rest[0]))
            return (200, {"removed": rest[0]}) if found else (404, {"error": "not on the list"})
        if method == "POST":
            numbers = body.get("numbers") if isinstance(body, dict) else None
            if not isinstance(numbers, list) or not all(isinstance(n, str) and n for n in numbers):
                raise DialError(
                    422, 'numbers: a list of numbers, e.g. {"numbers": ["+15551230000"]}'
                )
            await store.run(store.dnc_add, [_dnc_key(n) for n in numbers])
            return 201, {"added": len(numbers)}
        return 200, {"numbers": await store.run(store.dnc_list, 10_000)}

    # -- dialing ----------------------------------------------------------------------------

    async def _dialer(self, run: _Run) -> None:
        """Dial the campaign's due contacts within its caps until none is left."""
        store = self.store
        assert store is not None
        spec = run.spec
        try:
            while run.state == "running":
                run.wake.clear()
                free = spec.max_concurrent - len(run.inflight)
                if free <= 0:
                    await _wait(run.wake, 1.0)
                    continue
                due = await store.run(store.due, run.id, time.time(), min(free, 100))
                if not due:
                    if not run.inflight and await store.run(store.unfinished, run.id) == 0:
                        run.state = "completed"
                        await store.run(store.set_state, run.id, "completed")
                        log.info("campaign_completed", campaign=run.id, dialed=run.dialed)
                        return
                    upcoming = await store.run(store.next_due, run.id)
                    wait = 1.0 if upcoming is None else min(1.0, max(0.0, upcoming - time.time()))
                    await _wait(run.wake, wait)
                    continue
                for contact in due:
                    if run.state != "running" or len(run.inflight) >= spec.max_concurrent:
                        break
                    await self._one(run, contact)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("campaign_failed", campaign=run.id)

    async def _one(self, run: _Run, contact: Contact) -> None:
        """Quiet hours, pacing, do-not-call, claim, dial: one contact."""
        store = self.store
        assert store is not None
        now = time.time()
        until = run.spec.quiet_until(contact.tz, now)
        if until is not None:
            await store.run(store.postpone, run.id, contact.idx, until)
            return
        await self._pace(run)
        if await store.run(store.dnc_has, _dnc_forms(contact.target)):
            await store.run(store.finish, run.id, contact.idx, "dnc", None)
            self._outcome("dnc")
            return
        if not await store.run(store.claim, run.id, contact.idx):
            return
        attempt = contact.attempts + 1
        request = DialRequest.from_json(
            {
                "to": contact.target,
                "route": run.spec.route,
                "variables": {**contact.variables, "campaign": run.spec.name},
                "idempotency_key": f"campaign:{run.id}:{contact.idx}:{attempt}",
                **run.spec.dial,
            }
        )
        try:
            answer = self._dialouts.dial(
                request, on_end=partial(self._ended, run, contact.idx, attempt)
            )
        except DialError as exc:
            if exc.status >= 500:  # the server is busy now: the same attempt later
                retry = time.time() + (exc.retry_after or BUSY_SERVER_RETRY)
                await store.run(store.finish, run.id, contact.idx, "unavailable", retry)
            else:
                await store.run(store.finish, run.id, contact.idx, "rejected", None)
                self._outcome("rejected")
            log.warning("campaign_dial_refused", campaign=run.id, contact=contact.idx,
                        status=exc.status, reason=exc.reason)  # fmt: skip
            return
        run.inflight[answer["id"]] = contact.idx
        run.dialed += 1
        await store.run(store.placed, run.id, contact.idx, answer["id"])

    async def _pace(self, run: _Run) -> None:
        """Wait for the next dial slot: evenly spaced at `cps`, and never more than
        `cps` in any second (with a margin, so a callee's clock sees it too)."""
        loop = asyncio.get_running_loop()
        cps, sent = run.spec.cps, run.sent
        wait = run.next_dial - loop.time()
        if cps >= 1 and len(sent) >= int(cps):
            wait = max(wait, sent[0] + 1.0 + RATE_MARGIN - loop.time())
        if wait > 0:
            await asyncio.sleep(wait)
        now = loop.time()
        # From now, not from the schedule: a late wake-up never lets two go closer.
        run.next_dial = now + 1.0 / cps
        sent.append(now)
        while len(sent) > max(int(cps), 1):
            sent.popleft()

    def _ended(self, run: _Run, idx: int, attempt: int, call: str, outcome: str) -> None:
        """A campaign call's outcome (from `Dialouts`): done, or a retry later."""
        run.inflight.pop(call, None)
        rule = run.spec.retries.get(outcome)
        retry_at = time.time() + rule.delay if rule and attempt <= rule.attempts else None
        store = self.store
        assert store is not None
        task = asyncio.get_running_loop().create_task(
            store.run(store.finish, run.id, idx, outcome, retry_at)
        )
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        self._outcome(outcome)
        run.wake.set()

    def _outcome(self, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


def _stored(spec: dict[str, Any]) -> dict[str, Any]:
    """A stored spec as a body again (quiet hours back to their object form)."""
    body = dict(spec)
    quiet = body.pop("quiet_hours", None)
    if quiet:
        body["quiet_hours"] = {"start": quiet[0], "end": quiet[1]}
    return body


def _dnc_forms(target: str) -> list[str]:
    """How a contact may be written on the list: as given, its user part, its E.164 forms."""
    bare = (
        target.split(":", 1)[1] if target.lower().startswith(("sip:", "sips:", "tel:")) else target
    )
    user = bare.split("@", 1)[0].split(";", 1)[0]
    return sorted({target, bare, user, *normalise_number(user)})


def _dnc_key(number: str) -> str:
    """A number as the list keeps it: E.164 when it is one, else as given."""
    forms = normalise_number(number.strip())
    return forms[0] if forms else number.strip()


def _contact_json(contact: Contact) -> dict[str, Any]:
    return {
        "idx": contact.idx,
        "to": contact.target,
        "state": contact.state,
        "attempts": contact.attempts,
        "outcome": contact.outcome,
        "call": contact.call,
        "next_at": contact.next_at if contact.state == PENDING and contact.next_at else None,
    }
