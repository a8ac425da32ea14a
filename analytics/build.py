"""Build the report from a warehouse and write it to a file."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from analytics import queries
from analytics.html import metric_change, metric_value, render
from analytics.periods import OrgReport, latest_active_week, org_report, periods
from analytics.queries import PullRequest, Week
from destinations.config import DuckDBConfig, SnowflakeConfig
from destinations.warehouse import Warehouse, open_warehouse
from sources.github.names import normalise_org

logger = logging.getLogger(__name__)

DEFAULT_WEEKS = 26
# The page offers the most active repositories and the largest teams of an organisation, this many
# of each: every scope is a copy of the charts, and a page of hundreds would not open quickly.
MAX_SCOPES = 20


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
        prs = queries.pull_requests(warehouse, org, previous.start)
        reviewer_rows = queries.reviewer_weeks(warehouse, org, previous.start)
        report = org_report(org, prs, org_weeks, reviewer_rows, weeks, now, merged_at)
        reports.append(replace(report, scopes=tuple(_scopes(warehouse, report, prs, org_weeks, reviewer_rows, now))))
    return reports


def _scopes(warehouse: Warehouse, report: OrgReport, prs: list[PullRequest], org_weeks: list[Week],
            reviewer_rows: list[queries.ReviewerWeek], now: datetime) -> list[OrgReport]:
    """The organisation's report for each of its most active repositories and largest teams (a
    team's pull requests: those its current members opened, by user id; its reviewers: its
    members, by login)."""
    assert report.current is not None
    current = report.current
    activity = Counter(pr.repo for pr in prs if pr.state == "open" or current.holds(pr.created_at)
                       or current.holds(pr.merged_at) or current.holds(pr.closed_at))
    repos = sorted(activity, key=lambda repo: (-activity[repo], repo))[:MAX_SCOPES]
    by_repo = queries.repository_weeks(warehouse, report.org, repos)
    scopes = [
        org_report(report.org, [pr for pr in prs if pr.repo == repo], by_repo[repo],
                   [row for row in reviewer_rows if row.repo == repo], report.weeks_requested, now,
                   report.last_merged_at, scope=("repository", repo), within=report)
        for repo in sorted(repos)
    ]
    teams = queries.teams(warehouse, report.org)
    by_team = queries.team_weeks(warehouse, report.org)
    for slug in sorted(sorted(teams, key=lambda slug: (-len(teams[slug].user_ids), slug))[:MAX_SCOPES]):
        team = teams[slug]
        scopes.append(org_report(
            report.org, [pr for pr in prs if pr.author_id in team.user_ids],
            _every_week(org_weeks, by_team.get(slug, [])),
            [row for row in reviewer_rows if row.reviewer_login in team.logins], report.weeks_requested, now,
            report.last_merged_at, scope=("team", slug), within=report,
        ))
    return scopes


def _every_week(spine: list[Week], weeks: list[Week]) -> list[Week]:
    """`weeks` (a team's, only those with activity) on every week of `spine`, quiet ones as zeros."""
    have = {week.week_start: week for week in weeks}
    return [have.get(week.week_start) or Week(week.week_start, 0, 0, 0, None, None, None, None, None, None, None,
                                              None, None) for week in spine]


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
