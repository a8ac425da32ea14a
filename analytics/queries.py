"""What the report reads from the warehouse views, as plain typed rows.

The views (`pull_request_metrics`, `weekly_pull_request_metrics`, `reviewer_load`,
`weekly_team_metrics`) live in the same schema as the tables; the SQL here is Snowflake's dialect, translated for DuckDB by
`Warehouse.execute`. Rows are filtered to the report's window coarsely in SQL (by date, a day
wider) and exactly in Python (`analytics.periods`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from destinations.merge import LEDGER
from destinations.warehouse import Warehouse
from settings import pipeline_name

PULL_REQUEST_METRICS = "pull_request_metrics"
WEEKLY_METRICS = "weekly_pull_request_metrics"
REVIEWER_LOAD = "reviewer_load"
TEAM_METRICS = "weekly_team_metrics"
VIEWS = (PULL_REQUEST_METRICS, WEEKLY_METRICS, REVIEWER_LOAD)


class ReportError(RuntimeError):
    """The report cannot be built (no views, no data for an organisation): one line for a person."""


@dataclass(frozen=True)
class PullRequest:
    repo: str
    number: int
    title: str
    html_url: str
    author_login: str | None
    state: str
    is_draft: bool
    is_merged: bool
    created_at: datetime
    first_review_at: datetime | None
    merged_at: datetime | None
    closed_at: datetime | None
    time_to_first_review_seconds: float | None
    time_to_merge_seconds: float | None
    size_bucket: str | None
    author_id: int | None = None  # the author's user id, which a rename keeps (team membership)


@dataclass(frozen=True)
class Week:
    """One row of `weekly_pull_request_metrics`: the organisation's (repo IS NULL) or a
    repository's; or a team's from `weekly_team_metrics`, which has fewer of the numbers (the
    others None or 0)."""

    week_start: date
    prs_opened: int
    prs_merged: int
    prs_closed_without_merge: int
    merge_rate: float | None
    time_to_first_review_p50_seconds: float | None
    time_to_first_review_p75_seconds: float | None
    time_to_first_review_p90_seconds: float | None
    time_to_merge_p50_seconds: float | None
    time_to_merge_p75_seconds: float | None
    time_to_merge_p90_seconds: float | None
    open_prs_at_week_end: int | None
    open_pr_median_age_seconds: float | None
    time_to_first_review_samples: int = 0
    time_to_merge_samples: int = 0
    prs_merged_without_review: int = 0
    # The medians of the phases of the pull requests merged in the week, and how many each is of.
    coding_time_p50_seconds: float | None = None
    coding_time_samples: int = 0
    pickup_time_p50_seconds: float | None = None
    pickup_time_samples: int = 0
    review_time_p50_seconds: float | None = None
    review_time_samples: int = 0
    cycle_time_p50_seconds: float | None = None
    cycle_time_samples: int = 0
    open_ready_prs_at_week_end: int = 0  # open and not in draft at the week's end: work in progress
    # Review depth of the pull requests merged in the week (None: no merged pull request with counts).
    review_comments_per_merged_pr: float | None = None
    review_comments_samples: int = 0
    reviews_with_comments: int | None = None
    bare_approvals: int | None = None


@dataclass(frozen=True)
class ReviewerWeek:
    week_start: date
    repo: str | None
    reviewer_login: str
    reviews: int
    prs_reviewed: int


_PULL_REQUEST_COLUMNS = [
    "repo", "number", "title", "html_url", "author_login", "state", "is_draft", "is_merged",
    "created_at", "first_review_at", "merged_at", "closed_at", "time_to_first_review_seconds",
    "time_to_merge_seconds", "size_bucket",
]
_WEEK_COLUMNS = [
    "week_start", "prs_opened", "prs_merged", "prs_closed_without_merge", "merge_rate",
    "time_to_first_review_p50_seconds", "time_to_first_review_p75_seconds",
    "time_to_first_review_p90_seconds", "time_to_merge_p50_seconds", "time_to_merge_p75_seconds",
    "time_to_merge_p90_seconds", "open_prs_at_week_end", "open_pr_median_age_seconds",
    "time_to_first_review_samples", "time_to_merge_samples", "prs_merged_without_review",
    "coding_time_p50_seconds", "coding_time_samples", "pickup_time_p50_seconds", "pickup_time_samples",
    "review_time_p50_seconds", "review_time_samples", "cycle_time_p50_seconds", "cycle_time_samples",
    "open_ready_prs_at_week_end", "review_comments_per_merged_pr", "review_comments_samples", "reviews_with_comments",
    "bare_approvals",
]
_TEAM_WEEK_COLUMNS = [
    "team_slug", "week_start", "prs_opened", "prs_merged", "time_to_first_review_p50_seconds",
    "time_to_first_review_p90_seconds", "time_to_first_review_samples", "time_to_merge_p50_seconds",
    "time_to_merge_samples", "cycle_time_p50_seconds", "cycle_time_samples",
]
_REVIEWER_COLUMNS = ["week_start", "repo", "reviewer_login", "reviews", "prs_reviewed"]


def utc(value: Any) -> datetime | None:
    """A warehouse timestamp as an aware UTC datetime (naive ones are UTC already)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"expected a timestamp, got {type(value).__name__}: {value!r}")
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _day(value: Any) -> date:
    return value.date() if isinstance(value, datetime) else value


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def check_views(warehouse: Warehouse) -> None:
    """ReportError naming the first missing view: the warehouse predates them."""
    for view in VIEWS:
        if not warehouse.columns(view):
            raise ReportError(
                f"the warehouse {warehouse.location()} has no view {view}: run `./dev bootstrap` "
                "(or any merge) with this version to create the metrics views"
            )


def organisations(warehouse: Warehouse) -> list[str]:
    """Every organisation with at least one pull request in the warehouse."""
    rows = warehouse.execute(f"SELECT DISTINCT org FROM {warehouse.table(PULL_REQUEST_METRICS)} ORDER BY org")
    return [str(row[0]) for row in rows]


def weeks(warehouse: Warehouse, org: str) -> list[Week]:
    """The organisation-wide weekly rows, oldest first."""
    return repository_weeks(warehouse, org, [])[None]


def repository_weeks(warehouse: Warehouse, org: str, repos: list[str]) -> dict[str | None, list[Week]]:
    """The weekly rows of the organisation (key None) and of each of `repos`, oldest first."""
    marks = ", ".join("?" for _ in repos)
    rows = warehouse.execute(
        f"SELECT repo, {', '.join(_WEEK_COLUMNS)} FROM {warehouse.table(WEEKLY_METRICS)} "
        f"WHERE org = ? AND (repo IS NULL{f' OR repo IN ({marks})' if repos else ''}) ORDER BY week_start",
        [org, *repos],
    )
    out: dict[str | None, list[Week]] = {None: [], **{repo: [] for repo in repos}}
    for row in rows:
        out[None if row[0] is None else str(row[0])].append(_week(row[1:]))
    return out


def _week(r: Any) -> Week:
    return Week(
            week_start=_day(r[0]),
            prs_opened=int(r[1] or 0),
            prs_merged=int(r[2] or 0),
            prs_closed_without_merge=int(r[3] or 0),
            merge_rate=_number(r[4]),
            time_to_first_review_p50_seconds=_number(r[5]),
            time_to_first_review_p75_seconds=_number(r[6]),
            time_to_first_review_p90_seconds=_number(r[7]),
            time_to_merge_p50_seconds=_number(r[8]),
            time_to_merge_p75_seconds=_number(r[9]),
            time_to_merge_p90_seconds=_number(r[10]),
            open_prs_at_week_end=None if r[11] is None else int(r[11]),
            open_pr_median_age_seconds=_number(r[12]),
            time_to_first_review_samples=int(r[13] or 0),
            time_to_merge_samples=int(r[14] or 0),
            prs_merged_without_review=int(r[15] or 0),
            coding_time_p50_seconds=_number(r[16]),
            coding_time_samples=int(r[17] or 0),
            pickup_time_p50_seconds=_number(r[18]),
            pickup_time_samples=int(r[19] or 0),
            review_time_p50_seconds=_number(r[20]),
            review_time_samples=int(r[21] or 0),
            cycle_time_p50_seconds=_number(r[22]),
            cycle_time_samples=int(r[23] or 0),
            open_ready_prs_at_week_end=int(r[24] or 0),
            review_comments_per_merged_pr=_number(r[25]),
            review_comments_samples=int(r[26] or 0),
            reviews_with_comments=None if r[27] is None else int(r[27]),
            bare_approvals=None if r[28] is None else int(r[28]),
        )


def pull_requests(warehouse: Warehouse, org: str, since: date) -> list[PullRequest]:
    """The organisation's open pull requests and those created, closed or first reviewed (a
    review may come after the close) on or after `since`, a day earlier so that no time zone
    loses a row at the edge."""
    day_before = (since - timedelta(days=1)).isoformat()
    rows = warehouse.execute(
        f"SELECT {', '.join('m.' + c for c in _PULL_REQUEST_COLUMNS)}, p.author_id "
        f"FROM {warehouse.table(PULL_REQUEST_METRICS)} AS m JOIN {warehouse.table('pull_requests')} AS p ON p.id = m.id "
        "WHERE m.org = ? AND (m.state = 'open' OR m.created_at >= CAST(? AS DATE) OR m.closed_at >= CAST(? AS DATE) "
        "OR m.first_review_at >= CAST(? AS DATE))",
        [org, day_before, day_before, day_before],
    )
    return [
        PullRequest(
            repo=str(r[0]),
            number=int(r[1]),
            title=str(r[2] or ""),
            html_url=str(r[3] or ""),
            author_login=None if r[4] is None else str(r[4]),
            state=str(r[5]),
            is_draft=bool(r[6]),
            is_merged=bool(r[7]),
            created_at=utc(r[8]),  # type: ignore[arg-type] - never NULL in the view
            first_review_at=utc(r[9]),
            merged_at=utc(r[10]),
            closed_at=utc(r[11]),
            time_to_first_review_seconds=_number(r[12]),
            time_to_merge_seconds=_number(r[13]),
            size_bucket=None if r[14] is None else str(r[14]),
            author_id=None if r[15] is None else int(r[15]),
        )
        for r in rows
    ]


def last_merged_at(warehouse: Warehouse, org: str) -> datetime | None:
    """When a load of the organisation was last merged (the merge ledger), or None. A run that
    found nothing new lands no load: this is the newest data, not necessarily the last run."""
    if not warehouse.columns(LEDGER):
        return None
    rows = warehouse.execute(f"SELECT MAX(merged_at) FROM {warehouse.table(LEDGER)} WHERE pipeline_name = ?",
                             [pipeline_name(org)])
    return utc(rows[0][0]) if rows else None


def reviewer_weeks(warehouse: Warehouse, org: str, since: date) -> list[ReviewerWeek]:
    rows = warehouse.execute(
        f"SELECT {', '.join(_REVIEWER_COLUMNS)} FROM {warehouse.table(REVIEWER_LOAD)} "
        "WHERE org = ? AND week_start >= CAST(? AS DATE) ORDER BY week_start",
        [org, since.isoformat()],
    )
    return [
        ReviewerWeek(_day(r[0]), None if r[1] is None else str(r[1]), str(r[2]), int(r[3] or 0), int(r[4] or 0))
        for r in rows
    ]


@dataclass(frozen=True)
class Team:
    """A team as it is now: its members' user ids (what its pull requests are found by, as in
    `weekly_team_metrics`: a rename keeps the id) and logins (what its reviews are found by:
    `reviewer_load` has logins only)."""

    user_ids: frozenset[int]
    logins: frozenset[str]


def teams(warehouse: Warehouse, org: str) -> dict[str, Team]:
    """Each team of the organisation by slug; none when the token could not read the teams or
    the warehouse predates them."""
    if not warehouse.columns("team_members") or not warehouse.columns(TEAM_METRICS):
        return {}
    rows = warehouse.execute(
        f"SELECT t.slug, m.user_id, m.login FROM {warehouse.table('teams')} AS t "
        f"LEFT JOIN {warehouse.table('team_members')} AS m ON m.org = t.org AND m.team_id = t.id "
        "WHERE t.org = ? ORDER BY t.slug",
        [org],
    )
    members: dict[str, list[tuple[Any, Any]]] = {}
    for slug, user_id, login in rows:
        members.setdefault(str(slug), []).append((user_id, login))
    return {slug: Team(frozenset(int(u) for u, _ in people if u is not None),
                       frozenset(str(login) for _, login in people if login is not None))
            for slug, people in members.items()}


def team_weeks(warehouse: Warehouse, org: str) -> dict[str, list[Week]]:
    """Each team's rows of `weekly_team_metrics` (weeks with activity only), oldest first, as Weeks."""
    if not warehouse.columns(TEAM_METRICS):
        return {}
    rows = warehouse.execute(
        f"SELECT {', '.join(_TEAM_WEEK_COLUMNS)} FROM {warehouse.table(TEAM_METRICS)} "
        "WHERE org = ? ORDER BY team_slug, week_start",
        [org],
    )
    out: dict[str, list[Week]] = {}
    for r in rows:
        out.setdefault(str(r[0]), []).append(Week(
            week_start=_day(r[1]), prs_opened=int(r[2] or 0), prs_merged=int(r[3] or 0), prs_closed_without_merge=0,
            merge_rate=None, time_to_first_review_p50_seconds=_number(r[4]), time_to_first_review_p75_seconds=None,
            time_to_first_review_p90_seconds=_number(r[5]), time_to_first_review_samples=int(r[6] or 0),
            time_to_merge_p50_seconds=_number(r[7]), time_to_merge_p75_seconds=None, time_to_merge_p90_seconds=None,
            time_to_merge_samples=int(r[8] or 0), cycle_time_p50_seconds=_number(r[9]),
            cycle_time_samples=int(r[10] or 0), open_prs_at_week_end=None, open_pr_median_age_seconds=None,
        ))
    return out
