"""Campaign specs and contacts: what a `POST /campaigns` body may hold, CSV lists,
quiet hours in a callee's time zone (no network, no database)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mediaserver.outbound import DialError
from mediaserver.outbound.campaigns import CampaignSpec, contacts_of


def spec(**body: Any) -> CampaignSpec:
    return CampaignSpec.from_json({"route": "remind", **body})


def test_a_full_spec_round_trips_through_its_stored_form() -> None:
    body = {
        "name": "flu shots",
        "route": "remind",
        "max_concurrent": 50,
        "cps": 5,
        "quiet_hours": {"start": "21:00", "end": "09:00"},
        "timezone": "America/New_York",
        "retries": {"busy": {"attempts": 2, "delay": 300}, "machine": {"attempts": 1}},
        "caller_id": "+15550001111",
        "amd": "detect_and_leave_message",
    }
    first = CampaignSpec.from_json(body)
    assert first.retries["machine"].delay == 300 and first.dial["amd"] == "detect_and_leave_message"
    stored = first.as_json()
    stored["quiet_hours"] = {"start": "21:00", "end": "09:00"}
    assert CampaignSpec.from_json(stored) == first


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"cps": 0}, "cps"),
        ({"cps": "fast"}, "cps"),
        ({"quiet_hours": {"start": "25:00", "end": "09:00"}}, "quiet_hours"),
        ({"quiet_hours": "21-9"}, "quiet_hours"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"retries": {"maybe": {"attempts": 1}}}, "retries"),
        ({"retries": {"busy": {"attempts": 11}}}, "retries.busy.attempts"),
        ({"amd": "sometimes"}, "amd"),
        ({"colour": 1}, "unknown field"),
        ({"route": ""}, "route"),
    ],
)
def test_bad_specs_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(DialError) as caught:
        spec(**body)
    assert caught.value.status == 422 and field in caught.value.reason


def test_contacts_from_a_list_and_from_csv() -> None:
    rules = spec()
    listed = contacts_of(
        {"contacts": ["+15551230000", {"to": "sip:a@pbx", "variables": {"x": 1}, "tz": "UTC"}]},
        rules,
    )
    assert listed == [("+15551230000", {}, None), ("sip:a@pbx", {"x": 1}, "UTC")]
    text = "Phone,Name,TZ,Slot\n+15551230000,Sam,America/Chicago,9am\n+15551230001,Ana,,10am\n"
    rows = contacts_of({"csv": text}, rules)
    assert rows[0] == ("+15551230000", {"name": "Sam", "slot": "9am"}, "America/Chicago")
    assert rows[1] == ("+15551230001", {"name": "Ana", "slot": "10am"}, None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "exactly one"),
        ({"contacts": [], "csv": "to\n1"}, "exactly one"),
        ({"contacts": []}, "none"),
        ({"contacts": [{"to": "sip:@"}]}, "contacts[0].to"),
        ({"contacts": ["ok", {"to": "+1", "tz": "Nowhere/City"}]}, "contacts[1].tz"),
        ({"csv": "name\nSam\n"}, "`to`"),
        ({"csv": "to,name\n,Sam\n"}, "csv line 2"),
    ],
)
def test_bad_contacts_name_the_row(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(DialError) as caught:
        contacts_of(body, spec())
    assert reason in caught.value.reason, caught.value.reason


def test_quiet_hours_in_the_callee_zone_end_at_the_window_end() -> None:
    rules = spec(quiet_hours={"start": "21:00", "end": "09:00"}, timezone="Europe/Paris")
    at = datetime(2026, 12, 7, 22, 30, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    until = rules.quiet_until(None, at)
    assert until == datetime(2026, 12, 8, 9, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    # The same instant is 16:30 in Chicago: not quiet there.
    assert rules.quiet_until("America/Chicago", at) is None
    morning = datetime(2026, 12, 8, 8, 59, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    assert rules.quiet_until(None, morning) == until
    assert spec().quiet_until("UTC", at) is None  # no quiet hours
