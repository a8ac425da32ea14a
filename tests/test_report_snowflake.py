"""The report reads Snowflake (the real connector against fakesnow's server) as it reads DuckDB:
the same history merged into both gives the same numbers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from analytics.build import read_reports, write_report
from analytics.periods import OrgReport
from destinations import DuckDBConfig, DuckDBWarehouse, SnowflakeConfig, merge_landed_loads
from destinations.warehouse import open_warehouse
from test_metrics import ORG, W2, land_history

NOW = datetime(2026, 2, 1, tzinfo=timezone.utc)
WEEKS = 2


def comparable(report: OrgReport) -> tuple:
    """What the page shows, but the 'reviewed' flag of open PRs (fakesnow sends a NULL
    TIMESTAMP_TZ as 1970-01-01, see test_metrics.select)."""
    slowest = [(item.pull_request.repo, item.pull_request.number, item.age_seconds) for item in report.slowest_open]
    return (report.current, report.previous, report.headline, report.weeks, report.review_time_distribution,
            report.merge_times_by_size, report.reviewers, slowest)


def test_report_on_snowflake_equals_the_report_on_duckdb(tmp_path: Path, snowflake_config: Callable[..., SnowflakeConfig]):
    land_history(tmp_path)
    duck = DuckDBWarehouse(DuckDBConfig(path=tmp_path / "wh" / "warehouse.duckdb"))
    try:
        merge_landed_loads(duck, str(tmp_path), ORG, "github_acme")
        (on_duckdb,) = read_reports(duck, [ORG], WEEKS, NOW)
    finally:
        duck.close()
    config = snowflake_config(f"file://{tmp_path.resolve()}/github/")
    with open_warehouse(config) as snow:
        merge_landed_loads(snow, str(tmp_path), ORG, "github_acme")

    written = write_report(config, tmp_path / "report.html", [ORG], WEEKS, now=NOW)

    (on_snowflake,) = written.reports
    assert on_duckdb.empty is None and on_duckdb.current is not None and on_duckdb.current.last_week == W2
    assert any(metric.current for metric in on_duckdb.headline)
    assert comparable(on_snowflake) == comparable(on_duckdb)
    assert "snowflake:" in (tmp_path / "report.html").read_text(encoding="utf-8")
