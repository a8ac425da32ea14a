"""Review of issue 20 (working time), kept as regression tests: the view's *_working_seconds against the reference
`working_seconds`, on DuckDB, with hand-made rows (as tests/test_metrics.py lands them)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from destinations import DuckDBConfig, DuckDBWarehouse, bootstrap, merge_landed_loads
from destinations.merge import write_calendars
from destinations.working_calendar import WorkingCalendar, working_seconds
from sources.github.schema import child_fetch_row, event_row, pull_request_row
from warehouse_loads import land

UTC = timezone.utc
ADA = {"login": "ada", "id": 1, "type": "User"}


def z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def merged_pr(org: str, pr_id: int, ready: datetime, merged: datetime) -> dict:
    return pull_request_row(org, "repo", {
        "id": pr_id, "number": pr_id % 1000, "title": "t", "user": ADA, "state": "closed",
        "created_at": z(ready), "updated_at": z(merged), "closed_at": z(merged), "merged_at": z(merged),
    })


def commit(org: str, pr: dict, authored: datetime) -> dict:
    payload = {"sha": "a" * 40, "node_id": "C_old", "event": "committed",
               "author": {"name": "A", "date": z(authored)}, "committer": {"name": "A", "date": z(authored)}}
    return event_row(org, "repo", pr, payload, 0)


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[DuckDBWarehouse]:
    warehouse = DuckDBWarehouse(DuckDBConfig(path=tmp_path / "wh" / "warehouse.duckdb"))
    yield warehouse
    warehouse.close()


def metric(duck: DuckDBWarehouse, column: str, pr_id: int) -> object:
    [(value,)] = duck.execute(f"SELECT {column} FROM {duck.table('pull_request_metrics')} WHERE id = ?", [pr_id])
    return value


def test_review20_a_first_commit_older_than_the_day_table_is_counted_whole(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    """A commit's author date is whatever git was told (imported history, SOURCE_DATE_EPOCH builds,
    a wrong clock: 1970-01-01 is common). The day table stops at 10,000 days (27 years), so the
    view silently drops every day after the 10,000th: here it counts 1990-01-01 to 2017-05-19 and none of
    the 8.6 years after, and the cycle time (to the merge) equals that truncated coding time."""
    calendar = WorkingCalendar()  # the default: Monday to Friday, whole days, UTC
    ready, merged = datetime(2026, 1, 5, 9, tzinfo=UTC), datetime(2026, 1, 6, 9, tzinfo=UTC)
    authored = datetime(1990, 1, 1, tzinfo=UTC)
    pr = merged_pr("old", 7001, ready, merged)
    land(tmp_path, "old", "1000.1", {
        "pull_requests": [pr], "pull_request_events": [commit("old", pr, authored)],
        "pull_request_child_fetches": [child_fetch_row("old", "repo", pr, "events", 1, merged)],
    })
    bootstrap(duck, ["github_old"], {"*": calendar})
    merge_landed_loads(duck, str(tmp_path), "old", "github_old")
    assert metric(duck, "coding_time_seconds", 7001) == int((ready - authored).total_seconds())
    expected_coding = working_seconds(calendar, authored, ready)
    expected_cycle = working_seconds(calendar, authored, merged)
    assert (metric(duck, "coding_time_working_seconds", 7001), metric(duck, "cycle_time_working_seconds", 7001)) \
        == (expected_coding, expected_cycle)


def test_review20_an_ambiguous_local_hour_is_placed_as_the_reference_places_it(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    """Hours that start inside the hour a zone repeats when its clocks go back: Los Angeles,
    Sunday 2026-11-01, 01:30 happens at 08:30 and at 09:30 UTC. The reference (zoneinfo, fold=0)
    takes the first, DuckDB's AT TIME ZONE the second: the view counts an hour less than
    `working_seconds`, which "the tests hold the views to"."""
    calendar = WorkingCalendar(timezone="America/Los_Angeles", days="mon-sun", hours="01:30-09:00")
    ready, merged = datetime(2026, 10, 31, 18, tzinfo=UTC), datetime(2026, 11, 2, 0, tzinfo=UTC)
    land(tmp_path, "la", "1000.1", {"pull_requests": [merged_pr("la", 8001, ready, merged)]})
    bootstrap(duck, ["github_la"], {"*": calendar})
    merge_landed_loads(duck, str(tmp_path), "la", "github_la")
    assert metric(duck, "time_to_merge_working_seconds", 8001) == working_seconds(calendar, ready, merged)


def test_review20_a_calendar_written_twice_at_once_is_not_counted_twice(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    """Two first merges of a fresh Snowflake warehouse (separate processes: Snowflake has no
    `exclusive()` lock) each read working_calendars empty, then each insert the default row:
    write_calendars reads, then writes, with nothing between that stops the second. Replayed
    here in one process: the second write runs between the first's read and its insert."""
    ready, merged = datetime(2026, 1, 5, 9, tzinfo=UTC), datetime(2026, 1, 6, 9, tzinfo=UTC)
    land(tmp_path, "race", "1000.1", {"pull_requests": [merged_pr("race", 9001, ready, merged)]})
    merge_landed_loads(duck, str(tmp_path), "race", "github_race")
    duck.execute(f"DELETE FROM {duck.table('working_calendars')}")  # a fresh warehouse: none yet

    execute, raced = duck.execute, []

    def interleaved(statement: str, *args: object, **kwargs: object) -> object:
        result = execute(statement, *args, **kwargs)
        if "FROM" in statement and "working_holidays" in statement and not raced:
            raced.append(True)
            write_calendars(duck, None)  # the other process, between this one's read and write
        return result

    duck.execute = interleaved  # type: ignore[method-assign]
    try:
        write_calendars(duck, None)
    finally:
        del duck.execute
    assert metric(duck, "time_to_merge_working_seconds", 9001) == 86400


@pytest.mark.parametrize("zone", ["posix/Europe/Berlin", "right/UTC", "localtime"])
def test_review20_a_zone_the_settings_accept_does_not_break_every_organisations_views(
    zone: str, tmp_path: Path, duck: DuckDBWarehouse
) -> None:
    """WorkingCalendar checks a zone with ZoneInfo(name), which also opens any file under the
    system's zoneinfo directory ("posix/...", "right/...", "localtime"); DuckDB's ICU does not know
    them, and the views then fail for every organisation (the report with them). Either the
    setting is refused, or the views work."""
    try:
        calendar = WorkingCalendar(timezone=zone)
    except ValueError:
        return  # refused up front: fine
    ready, merged = datetime(2026, 1, 5, 9, tzinfo=UTC), datetime(2026, 1, 6, 9, tzinfo=UTC)
    land(tmp_path, "typo", "1000.1", {"pull_requests": [merged_pr("typo", 9501, ready, merged)]})
    land(tmp_path, "other", "1000.1", {"pull_requests": [merged_pr("other", 9502, ready, merged)]})
    bootstrap(duck, ["github_typo", "github_other"], {"typo": calendar})
    merge_landed_loads(duck, str(tmp_path), "typo", "github_typo")
    merge_landed_loads(duck, str(tmp_path), "other", "github_other")
    rows = duck.execute(f"SELECT org, time_to_merge_working_seconds FROM {duck.table('pull_request_metrics')} ORDER BY org")
    assert rows[0] == ("other", 86400)  # another organisation's, and the report reads them all
