"""The team's day: TEAM_TIMEZONE, and where one of its days begins and ends in UTC.

"Today" on the supervisor's view and each day of the daily report are the team's calendar days,
not UTC's: a day in Europe/Berlin runs from local midnight to the next, 23 or 25 hours long on
the days the clocks change. Calls belong to the day (and hour) they started in.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone of that name; ValueError saying so when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder ("America")
        raise ValueError(
            f"not an IANA time zone name (such as Europe/Berlin): {name[:64]!r}"
        ) from None


def team_zone() -> ZoneInfo:
    """TEAM_TIMEZONE (checked when the settings were read)."""
    return ZoneInfo(current_app.config["TEAM_TIMEZONE"])


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of the team's calendar day in UTC: local midnight to the next midnight."""
    start = datetime.combine(day, time(), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def today(zone: ZoneInfo, now: datetime | None = None) -> date:
    """The team's date now."""
    return (now or datetime.now(UTC)).astimezone(zone).date()
