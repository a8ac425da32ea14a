"""Build the report from a warehouse and write it to a file."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from analytics import queries
from analytics.html import metric_change, metric_value, render
from analytics.periods import OrgReport, latest_active_week, org_report, periods
from destinations.config import DuckDBConfig, SnowflakeConfig
from destinations.warehouse import Warehouse, open_warehouse
from sources.github.names import normalise_org

logger = logging.getLogger(__name__)

DEFAULT_WEEKS = 26


@dataclass(frozen=True)
class WrittenReport:
    path: Path
    reports: tuple[OrgReport, ...]
    bytes: int


def read_reports(warehouse: Warehouse, orgs: list[str], weeks: int, now: datetime | None = None) -> list[OrgReport]:
    """One report per organisation (every organisation in the views when `orgs` is empty)."""
    queries.check_views(warehouse)
    now = now or datetime.now(timezone.utc)
    names = [normalise_org(org) for org in orgs] or queries.organisations(warehouse)
    reports = []
    for org in names:
        org_weeks = queries.weeks(warehouse, org)
        merged_at = queries.last_merged_at(warehouse, org)
        last_week = latest_active_week(org_weeks)
        if last_week is None:
            reports.append(org_report(org, [], org_weeks, [], weeks, now, merged_at))
            continue
        # Both periods' rows: the current one and the one it is compared with.
        _, previous = periods(last_week, weeks)
        reports.append(
            org_report(
                org, queries.pull_requests(warehouse, org, previous.start), org_weeks,
                queries.reviewer_weeks(warehouse, org, previous.start), weeks, now, merged_at,
            )
        )
    return reports


def write_report(
    config: DuckDBConfig | SnowflakeConfig, out: Path, orgs: list[str], weeks: int = DEFAULT_WEEKS,
    now: datetime | None = None,
) -> WrittenReport:
    """Read the warehouse, write the page to `out`; ReportError when there is nothing to read."""
    if isinstance(config, DuckDBConfig) and not config.path.exists():
        raise queries.ReportError(f"no warehouse at {config.path}: run `./dev demo` or `./dev run` first")
    with open_warehouse(config) as warehouse:
        reports = read_reports(warehouse, orgs, weeks, now)
        source = warehouse.location()
    if not reports:
        raise queries.ReportError(f"no pull requests in {source}: nothing to report")
    text = render(reports, now, source)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a page
    size = out.stat().st_size
    logger.info("Wrote the report of %s to %s (%d KiB)", ", ".join(r.org for r in reports), out, size // 1024)
    return WrittenReport(out, tuple(reports), size)


def headline_rows(reports: tuple[OrgReport, ...] | list[OrgReport]) -> list[dict[str, str]]:
    """The headline numbers per organisation as table rows (the flow's table artifact)."""
    rows = []
    for report in reports:
        if report.empty or report.current is None:
            rows.append({"organisation": report.org, "metric": "", "value": "", "previous period": "",
                         "change": "", "period": report.empty or "no data"})
            continue
        last_day = report.current.end - timedelta(days=1)
        period = f"{report.current.start.isoformat()} to {last_day.isoformat()}"
        for metric in report.headline:
            rows.append({
                "organisation": report.org,
                "metric": metric.label,
                "value": metric_value(metric),
                "previous period": metric_value(metric, previous=True),
                "change": metric_change(metric),
                "period": period,
            })
    return rows
