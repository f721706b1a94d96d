"""The ``datetime`` skill: the current time and date, in any IANA time zone
(or a city that names one: "Tokyo", "New York")."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from mediaserver.agent.result import SwaigFunctionResult
from mediaserver.agent.skills import SkillBase

_ZONE = {
    "type": "string",
    "description": "Time zone name (e.g. 'America/New_York', 'Europe/London'). Defaults to UTC.",
}


def _zone(args: dict[str, Any]) -> tzinfo:
    """The zone the arguments name (UTC when none).

    Raises:
        ValueError: an unknown zone name (the message names it).
    """
    name = str(args.get("timezone") or "UTC").strip()
    if name.upper() in ("UTC", "GMT", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        pass
    # Callers name cities: "Tokyo" -> Asia/Tokyo, "new york" -> America/New_York.
    zone = _by_city().get("_".join(name.lower().split()))
    if zone is None:
        raise ValueError(f"unknown time zone {name!r}")
    return ZoneInfo(zone)


@functools.cache
def _by_city() -> dict[str, str]:
    """The IANA zones by their city (the last part of the name), lower case."""
    cities: dict[str, str] = {}
    for zone in sorted(available_timezones()):
        if "/" in zone and not zone.startswith(("Etc/", "SystemV/")):
            cities.setdefault(zone.rsplit("/", 1)[1].lower(), zone)
    return cities


def _now(args: dict[str, Any], what: str, answer: str) -> SwaigFunctionResult:
    """`answer` filled with the time now in the arguments' zone, or the error."""
    try:
        return SwaigFunctionResult(answer.format(datetime.now(_zone(args))))
    except ValueError as exc:
        return SwaigFunctionResult(f"Error getting {what}: {exc}")


class DateTimeSkill(SkillBase):
    """`get_current_time` and `get_current_date` (zoneinfo: no extra package)."""

    SKILL_NAME = "datetime"
    SKILL_DESCRIPTION = "Get current date, time, and timezone information"

    def setup(self) -> bool:
        return True

    def register_tools(self) -> None:
        self.define_tool(
            name="get_current_time",
            description="Get the current time, optionally in a specific timezone",
            parameters={"timezone": dict(_ZONE)},
            handler=self._time,
        )
        self.define_tool(
            name="get_current_date",
            description="Get the current date",
            parameters={"timezone": dict(_ZONE)},
            handler=self._date,
        )

    def _time(self, args: dict[str, Any], raw_data: dict[str, Any]) -> SwaigFunctionResult:
        return _now(args, "time", "The current time is {:%I:%M:%S %p %Z}")

    def _date(self, args: dict[str, Any], raw_data: dict[str, Any]) -> SwaigFunctionResult:
        return _now(args, "date", "Today's date is {:%A, %B %d, %Y}")

    def _get_prompt_sections(self) -> list[dict[str, Any]]:
        return [
            {
                "title": "Date and Time Information",
                "body": "You can tell the current date and time in any time zone.",
                "bullets": [
                    "Use get_current_time for the time",
                    "Use get_current_date for the date",
                    "Both default to UTC; pass a time zone name for another",
                ],
            }
        ]
