"""Working calendars, worked out by hand: weekends, holidays, the days the clocks change."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from destinations.working_calendar import WorkingCalendar, working_seconds

UTC = timezone.utc
HOUR = 3600


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


BERLIN_WHOLE_DAYS = WorkingCalendar(timezone="Europe/Berlin")
BERLIN_OFFICE = WorkingCalendar(timezone="Europe/Berlin", days="mon-fri", hours="09:00-17:00",
                                holidays=[date(2026, 1, 6)])


@pytest.mark.parametrize(("calendar", "start", "end", "hours"), [
    # The default: Monday to Friday, whole days, UTC. Friday 12:00 to Monday 12:00: 12 h + 12 h.
    (WorkingCalendar(), "2026-01-09T12:00", "2026-01-12T12:00", 24),
    # Within a weekend: none.
    (WorkingCalendar(), "2026-01-10T08:00", "2026-01-11T20:00", 0),
    # Spring forward (Sunday 2026-03-29, 02:00 CET -> 03:00 CEST): Friday 13:00 CET (12:00 UTC) to
    # its end 24:00 CET (23:00 UTC) is 11 h; Monday starts 00:00 CEST = Sunday 22:00 UTC, and runs
    # to 12:00 UTC: 14 h. 25 h, where the same span without a clock change is 24 h.
    (BERLIN_WHOLE_DAYS, "2026-03-27T12:00", "2026-03-30T12:00", 25),
    # Fall back (Sunday 2026-10-25, 03:00 CEST -> 02:00 CET): Friday 14:00 CEST (12:00 UTC) to
    # 24:00 CEST (22:00 UTC) is 10 h; Monday 00:00 CET = Sunday 23:00 UTC to 12:00 UTC: 13 h. 23 h.
    (BERLIN_WHOLE_DAYS, "2026-10-23T12:00", "2026-10-26T12:00", 23),
    # Office hours keep 8 h a day across the change: Friday 09:00-17:00 CET, Monday 09:00-17:00 CEST
    # (07:00-15:00 UTC): from Friday 08:00 UTC (09:00 CET) to Monday 15:00 UTC (17:00 CEST): 16 h.
    (BERLIN_OFFICE, "2026-03-27T08:00", "2026-03-30T15:00", 16),
    # A holiday (Tuesday 2026-01-06): Monday 10:00-17:00 CET is 7 h, Wednesday 8 h, Thursday
    # 09:00-10:00 CET 1 h: 16 h from Monday 09:00 UTC to Thursday 09:00 UTC.
    (BERLIN_OFFICE, "2026-01-05T09:00", "2026-01-08T09:00", 16),
    # Outside the hours: 18:00 to 08:00 local the next morning holds no working time.
    (BERLIN_OFFICE, "2026-01-07T17:00", "2026-01-08T07:00", 0),
    # A six-day week over a weekend, in a zone east of UTC: Saturday works, Sunday does not.
    (WorkingCalendar(timezone="Asia/Tokyo", days="mon-sat"), "2026-01-09T15:00", "2026-01-11T15:00", 24),
])
def test_working_time_by_hand(calendar, start, end, hours):
    assert working_seconds(calendar, utc(start), utc(end)) == hours * HOUR


def test_a_calendar_as_a_row():
    assert BERLIN_OFFICE.row("acme") == ("acme", "Europe/Berlin", "12345", 9 * HOUR, 17 * HOUR)
    assert WorkingCalendar(days="fri-mon").row("*") == ("*", "UTC", "1567", 0, 24 * HOUR)


@pytest.mark.parametrize(("fields", "message"), [
    ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"hours": "17:00-09:00"}, "the end must come after the start"),
    ({"hours": "nine to five"}, "expected 'HH:MM-HH:MM'"),
    ({"days": "mon-fry"}, "days are mon..sun"),
    ({"days": []}, "ISO weekdays"),
])
def test_a_bad_calendar_is_named(fields, message):
    with pytest.raises(ValidationError, match=message):
        WorkingCalendar(**fields)


def test_calendars_come_from_the_environment_by_organisation(monkeypatch, tmp_path):
    from settings import Settings

    monkeypatch.setenv("PR_ANALYTICS_WORKING_CALENDARS", '{"Acme": {"timezone": "Europe/Berlin", "hours": '
                       '"09:00-17:00", "holidays": ["2026-12-25"]}, "*": {"days": "mon-sat"}}')
    settings = Settings(orgs=["acme"], data_dir=tmp_path)
    assert settings.working_calendars == {
        "acme": WorkingCalendar(timezone="Europe/Berlin", hours="09:00-17:00", holidays=[date(2026, 12, 25)]),
        "*": WorkingCalendar(days=(1, 2, 3, 4, 5, 6)),
    }
    monkeypatch.setenv("PR_ANALYTICS_WORKING_CALENDARS", '{"acme": {"timezone": "Berlin"}}')
    with pytest.raises(ValidationError, match="unknown time zone 'Berlin'"):
        Settings(orgs=["acme"], data_dir=tmp_path)
