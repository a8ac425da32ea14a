"""The report's numbers for a period of whole weeks, and their change against the period before.

Pure functions of the rows `analytics.queries` reads: no warehouse here.

A period is `weeks` whole weeks (Monday 00:00 UTC to Monday 00:00 UTC) ending with the latest week
in which the organisation had any activity; the previous period is the same number of weeks
just before it. Per pull request, an event counts in the period it happened in:
- opened: `created_at`; merged: `merged_at`; closed without merge: `closed_at` of an unmerged PR;
- merge rate: merged / (merged + closed without merge);
- median time to first review: over PRs whose first review came in the period;
- median time to merge: over PRs merged in the period;
- open PRs at the end: the weekly view's `open_prs_at_week_end` of the period's last week.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal

from analytics.queries import PullRequest, ReviewerWeek, Week

SIZE_BUCKETS = ("XS", "S", "M", "L", "XL")
HOUR = 3600.0
DAY = 86400.0
# Bars of the time-to-first-review distribution: (label, upper bound in seconds, exclusive).
REVIEW_TIME_BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 1 h", HOUR),
    ("1-4 h", 4 * HOUR),
    ("4-24 h", DAY),
    ("1-3 d", 3 * DAY),
    ("3-7 d", 7 * DAY),
    ("7+ d", float("inf")),
)


@dataclass(frozen=True)
class Period:
    """Whole weeks [start, end), both Mondays."""

    start: date
    end: date

    @property
    def weeks(self) -> int:
        return (self.end - self.start).days // 7

    def holds(self, moment: datetime | None) -> bool:
        return moment is not None and _midnight(self.start) <= moment < _midnight(self.end)

    def holds_week(self, week_start: date) -> bool:
        return self.start <= week_start < self.end

    @property
    def last_week(self) -> date:
        return self.end - timedelta(days=7)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def latest_active_week(weeks: list[Week]) -> date | None:
    """The last week with a PR opened, merged or closed (the views may extend past it)."""
    active = [w.week_start for w in weeks if w.prs_opened or w.prs_merged or w.prs_closed_without_merge]
    return max(active) if active else None


def periods(last_week: date, weeks: int) -> tuple[Period, Period]:
    """(current, previous): `weeks` whole weeks ending with the week of `last_week`, and the
    same length just before."""
    if weeks < 1:
        raise ValueError(f"weeks must be at least 1, got {weeks}")
    end = monday(last_week) + timedelta(days=7)
    current = Period(end - timedelta(weeks=weeks), end)
    return current, Period(current.start - timedelta(weeks=weeks), current.start)


@dataclass(frozen=True)
class Metric:
    """One headline number, this period and the previous one."""

    key: str
    label: str
    unit: Literal["count", "ratio", "seconds"]
    current: float | None
    previous: float | None
    higher_is_better: bool | None  # None: neither (open PRs are work, not a score)

    @property
    def change(self) -> float | None:
        if self.current is None or self.previous is None:
            return None
        return self.current - self.previous

    @property
    def change_ratio(self) -> float | None:
        """Relative change; None when either side is missing or the previous value is 0."""
        if self.change is None or not self.previous:
            return None
        return self.change / self.previous

    @property
    def verdict(self) -> Literal["better", "worse", "same", "unknown"]:
        if self.change is None or self.higher_is_better is None:
            return "unknown"
        if self.change == 0 or self.rounds_to_zero:
            return "same"
        return "better" if (self.change > 0) == self.higher_is_better else "worse"

    @property
    def rounds_to_zero(self) -> bool:
        """The change as the page writes it is nil (+0%, +0 pts): neither better nor worse, so
        never coloured as either."""
        if self.change is None:
            return False
        if self.unit == "ratio":
            return round(self.change * 100) == 0
        ratio = self.change_ratio
        return ratio is not None and round(ratio * 100) == 0


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _period_values(prs: list[PullRequest], period: Period) -> dict[str, float | None]:
    opened = sum(1 for pr in prs if period.holds(pr.created_at))
    merged = [pr for pr in prs if pr.is_merged and period.holds(pr.merged_at)]
    closed_unmerged = sum(1 for pr in prs if not pr.is_merged and period.holds(pr.closed_at))
    finished = len(merged) + closed_unmerged
    reviewed = [
        pr.time_to_first_review_seconds
        for pr in prs
        if pr.time_to_first_review_seconds is not None and period.holds(pr.first_review_at)
    ]
    merge_times = [pr.time_to_merge_seconds for pr in merged if pr.time_to_merge_seconds is not None]
    return {
        "prs_opened": float(opened),
        "prs_merged": float(len(merged)),
        "merge_rate": len(merged) / finished if finished else None,
        "time_to_first_review_p50": _median(reviewed),
        "time_to_merge_p50": _median(merge_times),
    }


def _open_at_end(weeks: list[Week], period: Period) -> float | None:
    for week in weeks:
        if week.week_start == period.last_week and week.open_prs_at_week_end is not None:
            return float(week.open_prs_at_week_end)
    return None


def _open_prs_at_end(prs: list[PullRequest], period: Period) -> float:
    """Pull requests created before the period's end and not closed by then (the weekly view's
    `open_prs_at_week_end`, for a scope whose weekly rows do not have it: a team's)."""
    end = _midnight(period.end)
    return float(sum(1 for pr in prs if pr.created_at < end and (pr.closed_at is None or pr.closed_at >= end)))


def headline(prs: list[PullRequest], weeks: list[Week], current: Period, previous: Period,
             open_from_prs: bool = False) -> list[Metric]:
    now, before = _period_values(prs, current), _period_values(prs, previous)
    specs: list[tuple[str, str, Literal["count", "ratio", "seconds"], bool | None]] = [
        ("prs_opened", "PRs opened", "count", True),
        ("prs_merged", "PRs merged", "count", True),
        ("merge_rate", "Merge rate", "ratio", True),
        ("time_to_first_review_p50", "Median time to first review", "seconds", False),
        ("time_to_merge_p50", "Median time to merge", "seconds", False),
    ]
    metrics = [Metric(key, label, unit, now[key], before[key], better) for key, label, unit, better in specs]
    if open_from_prs:
        at_end = (_open_prs_at_end(prs, current), _open_prs_at_end(prs, previous))
    else:
        at_end = (_open_at_end(weeks, current), _open_at_end(weeks, previous))
    metrics.append(Metric("open_prs_at_end", "Open PRs at period end", "count", *at_end, None))
    return metrics


def review_time_distribution(prs: list[PullRequest], period: Period) -> list[tuple[str, int]]:
    """How many first reviews in the period came within each bucket of `REVIEW_TIME_BUCKETS`."""
    counts = dict.fromkeys((label for label, _ in REVIEW_TIME_BUCKETS), 0)
    for pr in prs:
        seconds = pr.time_to_first_review_seconds
        if seconds is None or not period.holds(pr.first_review_at):
            continue
        label = next(label for label, upper in REVIEW_TIME_BUCKETS if seconds < upper)
        counts[label] += 1
    return list(counts.items())


def merge_times_by_size(prs: list[PullRequest], period: Period) -> dict[str, list[float]]:
    """Time to merge (seconds) of the PRs merged in the period, per size bucket, XS to XL."""
    by_size: dict[str, list[float]] = {bucket: [] for bucket in SIZE_BUCKETS}
    for pr in prs:
        if pr.is_merged and period.holds(pr.merged_at) and pr.time_to_merge_seconds is not None:
            by_size.setdefault(pr.size_bucket or "unknown", []).append(pr.time_to_merge_seconds)
    return by_size


@dataclass(frozen=True)
class ReviewerTotal:
    reviewer_login: str
    reviews: int
    prs_reviewed: int  # summed over weeks and repositories: a PR reviewed in two weeks counts twice


def reviewer_totals(rows: list[ReviewerWeek], period: Period, top: int = 20) -> list[ReviewerTotal]:
    """The `top` reviewers by reviews in the period, most first (per-repository rows only, so that
    an organisation-wide roll-up row, if the view has one, is not counted twice)."""
    reviews: dict[str, int] = defaultdict(int)
    prs: dict[str, int] = defaultdict(int)
    per_repo = [row for row in rows if row.repo is not None] or rows
    for row in per_repo:
        if period.holds_week(row.week_start):
            reviews[row.reviewer_login] += row.reviews
            prs[row.reviewer_login] += row.prs_reviewed
    ranked = sorted(reviews, key=lambda login: (-reviews[login], login))[:top]
    return [ReviewerTotal(login, reviews[login], prs[login]) for login in ranked]


@dataclass(frozen=True)
class OpenPullRequest:
    pull_request: PullRequest
    age_seconds: float


def slowest_open(prs: list[PullRequest], as_of: datetime, top: int = 15, *, drafts: bool = False) -> list[OpenPullRequest]:
    """The open pull requests that have waited longest (by age at `as_of`), oldest first: those
    ready for review, or (`drafts`) the drafts, which wait for their author, not for a reviewer."""
    waiting = [
        OpenPullRequest(pr, (as_of - pr.created_at).total_seconds())
        for pr in prs
        if pr.state == "open" and pr.created_at <= as_of and pr.is_draft == drafts
    ]
    return sorted(waiting, key=lambda item: (-item.age_seconds, item.pull_request.repo, item.pull_request.number))[:top]


@dataclass(frozen=True)
class OrgReport:
    """Everything the page shows for one organisation, or for one of its repositories or teams (a
    scope: `scope_kind` and `scope_name`, in the organisation's `scopes`); `empty` says why there
    is nothing to show."""

    org: str
    weeks_requested: int
    current: Period | None = None
    previous: Period | None = None
    headline: tuple[Metric, ...] = ()
    weeks: tuple[Week, ...] = ()  # the current period's organisation-wide weeks, oldest first
    review_time_distribution: tuple[tuple[str, int], ...] = ()
    merge_times_by_size: tuple[tuple[str, tuple[float, ...]], ...] = ()
    reviewers: tuple[ReviewerTotal, ...] = ()
    slowest_open: tuple[OpenPullRequest, ...] = ()
    oldest_drafts: tuple[OpenPullRequest, ...] = ()
    as_of: datetime | None = None
    last_merged_at: datetime | None = None  # the newest load merged for the organisation
    empty: str | None = None
    scope_kind: Literal["organisation", "repository", "team"] = "organisation"
    scope_name: str = ""  # the repository's name or the team's slug
    scopes: tuple[OrgReport, ...] = ()  # the organisation's repositories and teams the page can show

    @property
    def scope_key(self) -> str:
        """'' for the organisation, else 'repository:NAME' or 'team:SLUG'."""
        return f"{self.scope_kind}:{self.scope_name}" if self.scope_name else ""


def org_report(
    org: str, prs: list[PullRequest], weeks: list[Week], reviewer_rows: list[ReviewerWeek],
    weeks_requested: int, now: datetime, last_merged_at: datetime | None = None,
    scope: tuple[Literal["repository", "team"], str] | None = None, within: OrgReport | None = None,
) -> OrgReport:
    """The report of one organisation from its rows; empty (with the reason) when it has no
    activity. A `scope` (one repository's or team's rows) takes the periods of the organisation's
    report `within`, so that every scope of the page covers the same weeks."""
    kind, name = scope or ("organisation", "")
    if within is not None and within.current is not None and within.previous is not None:
        current, previous = within.current, within.previous
    else:
        last_week = latest_active_week(weeks)
        if last_week is None:
            return OrgReport(org, weeks_requested, last_merged_at=last_merged_at,
                             empty=f"no pull request activity for {org} in the warehouse",
                             scope_kind=kind, scope_name=name)
        current, previous = periods(last_week, weeks_requested)
    # Ages of open PRs at the end of the data, or now when the data reaches this week.
    as_of = min(now, _midnight(current.end))
    return OrgReport(
        org=org,
        weeks_requested=weeks_requested,
        current=current,
        previous=previous,
        headline=tuple(headline(prs, weeks, current, previous, open_from_prs=kind == "team")),
        weeks=tuple(w for w in weeks if current.holds_week(w.week_start)),
        review_time_distribution=tuple(review_time_distribution(prs, current)),
        merge_times_by_size=tuple((size, tuple(times)) for size, times in merge_times_by_size(prs, current).items()),
        reviewers=tuple(reviewer_totals(reviewer_rows, current)),
        slowest_open=tuple(slowest_open(prs, as_of)),
        oldest_drafts=tuple(slowest_open(prs, as_of, top=5, drafts=True)),
        as_of=as_of,
        last_merged_at=last_merged_at,
        scope_kind=kind,
        scope_name=name,
    )
