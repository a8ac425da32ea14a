"""Working calendars: working days and hours in a time zone, with holidays, per organisation.

The metric views count working time in SQL (destinations/metrics.sql, "working time"): for each
local day a duration touches (a number table), the overlap of the duration with that day's
working hours, the hours turned into instants with CONVERT_TIMEZONE(zone, 'UTC', ...). The time
zone is the calendar's, never the session's, so DST is applied by the warehouse's own zone
database: a working day of 09:00-17:00 stays 8 h on the day the clocks change, a whole working
day is 23 or 25 h long. The bootstrap writes the calendars as two small tables
(`working_calendars`, `working_holidays`); "*" is the calendar of every organisation not
configured: Monday to Friday, whole days, UTC unless configured.

`working_seconds` computes the same in Python, for tests and for a person checking one by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT = "*"  # the calendar of every organisation not configured
# Working time counts at most the last this many days of a duration (the views' number table):
# a first commit dated decades back (imported history, a 1970 clock) is not worth the scan.
MAX_DAYS = 9_999
_WEEKDAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}


class WorkingCalendar(BaseModel):
    """Working days and hours in a time zone. `days`: ISO weekdays (1 = Monday) or names like
    "mon-fri"; `hours`: "HH:MM-HH:MM" in local time ("00:00-24:00": whole days); `holidays`:
    local dates that are not working days."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str = "UTC"
    days: tuple[int, ...] = (1, 2, 3, 4, 5)
    hours: str = "00:00-24:00"
    holidays: tuple[date, ...] = Field(default_factory=tuple)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        # An IANA name, not any file of the zoneinfo folder ("posix/...", "right/...",
        # "localtime" open too): the warehouse knows only the names.
        if name not in _zone_names():
            raise ValueError(f"unknown time zone {name!r} (an IANA name such as 'Europe/Berlin')")
        return name

    @field_validator("days", mode="before")
    @classmethod
    def _weekdays(cls, value: object) -> object:
        """"mon-fri", "mon,wed,fri" or a list of ISO weekday numbers."""
        if not isinstance(value, str):
            return value
        days: list[int] = []
        for part in value.lower().replace(" ", "").split(","):
            first, _, last = part.partition("-")
            if first not in _WEEKDAYS or (last and last not in _WEEKDAYS):
                raise ValueError(f"{value!r}: days are mon..sun, as 'mon-fri' or 'mon,wed'")
            start, end = _WEEKDAYS[first], _WEEKDAYS[last or first]
            days += range(start, end + 1) if start <= end else [*range(start, 8), *range(1, end + 1)]
        return tuple(sorted(set(days)))

    @model_validator(mode="after")
    def _valid(self) -> WorkingCalendar:
        if not self.days or any(d not in range(1, 8) for d in self.days):
            raise ValueError(f"days {self.days}: ISO weekdays, 1 (Monday) to 7 (Sunday)")
        start, end = self.span()
        if end <= start:
            raise ValueError(f"hours {self.hours!r}: the end must come after the start")
        return self

    def span(self) -> tuple[timedelta, timedelta]:
        """The working hours as offsets from local midnight."""
        try:
            start, end = (self._offset(part) for part in self.hours.split("-"))
        except ValueError:
            raise ValueError(f"hours {self.hours!r}: expected 'HH:MM-HH:MM', e.g. '09:00-17:00'") from None
        return start, end

    @staticmethod
    def _offset(text: str) -> timedelta:
        hours, minutes = text.strip().split(":")
        offset = timedelta(hours=int(hours), minutes=int(minutes))
        if not timedelta(0) <= offset <= timedelta(hours=24) or not 0 <= int(minutes) < 60:
            raise ValueError(text)
        return offset

    def row(self, org: str) -> tuple[str, str, str, int, int]:
        """The calendar as a `working_calendars` row: org, time zone, working ISO weekdays as
        digits ("12345"), start and end of the working hours in seconds from local midnight."""
        start, end = self.span()
        return (org, self.timezone, "".join(str(d) for d in self.days), int(start.total_seconds()),
                int(end.total_seconds()))


def working_intervals(calendar: WorkingCalendar, first: date, last: date) -> Iterator[tuple[datetime, datetime]]:
    """The working intervals of the local days `first`..`last`, as UTC instants, in order."""
    zone = ZoneInfo(calendar.timezone)
    start, end = calendar.span()
    holidays = set(calendar.holidays)
    day = first
    while day <= last:
        if day.isoweekday() in calendar.days and day not in holidays:
            midnight = datetime.combine(day, time(0))
            # Local wall-clock times (24:00 is the next midnight), each placed in its own offset.
            yield (_utc(midnight + start, zone), _utc(midnight + end, zone))
        day += timedelta(days=1)


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    """IANA zone names; the system folder's extra files (posix/, right/, localtime...) left out."""
    return frozenset(name for name in available_timezones()
                     if not name.startswith(("posix/", "right/")) and name not in {"localtime", "posixrules", "Factory"})


def _utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """A local wall time as an instant. A wall time the zone repeats (clocks going back) is
    taken the second time, as the warehouses' zone libraries (ICU) take it; one the zone skips
    (clocks going forward) with the offset before the change."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)
    repeated = first != second and second.astimezone(zone).replace(tzinfo=None) == wall
    return second if repeated else first


def working_seconds(calendar: WorkingCalendar, start: datetime, end: datetime) -> int:
    """Working seconds between two instants (of at most the last MAX_DAYS days): what the views
    compute, for tests and for a person to check one by hand."""
    start = max(start, end - timedelta(days=MAX_DAYS))
    first, last = (start - timedelta(days=2)).date(), (end + timedelta(days=2)).date()
    total = 0
    for s, e in working_intervals(calendar, first, last):
        overlap = (min(e, end) - max(s, start)).total_seconds()
        total += max(0, int(overlap))
    return total
