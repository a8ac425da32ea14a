"""Plain rows as the metrics views return them, for the report's unit and browser tests."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone

from analytics.queries import PullRequest, ReviewerWeek, Week

HOUR = 3600.0


def at(day: date, hours: float = 12) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(hours=hours)


def pull_request(
    number: int, created: datetime, *, repo: str = "api", reviewed_after: float | None = None,
    merged_after: float | None = None, closed_after: float | None = None, size: str = "S",
) -> PullRequest:
    """A PR opened at `created`; first review, merge or close that many seconds later."""
    first_review = created + timedelta(seconds=reviewed_after) if reviewed_after is not None else None
    merged = created + timedelta(seconds=merged_after) if merged_after is not None else None
    closed = merged or (created + timedelta(seconds=closed_after) if closed_after is not None else None)
    return PullRequest(
        repo=repo, number=number, title=f"Change {number}", html_url=f"https://github.com/acme/{repo}/pull/{number}",
        author_login="alice", state="closed" if closed else "open", is_draft=False, is_merged=merged is not None,
        created_at=created, first_review_at=first_review, merged_at=merged, closed_at=closed,
        time_to_first_review_seconds=reviewed_after, time_to_merge_seconds=merged_after, size_bucket=size,
    )


def week(start: date, opened: int = 0, merged: int = 0, closed: int = 0, open_at_end: int | None = None,
         review_p50: float | None = None, merge_p50: float | None = None, samples: int = 5) -> Week:
    """A week whose percentiles are of `samples` pull requests each (the page hides fewer than
    MIN_SAMPLES); with a merge p50, phases of the merged: coding a day, pickup the review p50,
    review the rest of the merge p50."""
    merged_phases = merge_p50 is not None
    pickup = review_p50 if merged_phases else None
    return Week(
        week_start=start, prs_opened=opened, prs_merged=merged, prs_closed_without_merge=closed,
        merge_rate=merged / (merged + closed) if merged + closed else None,
        time_to_first_review_p50_seconds=review_p50,
        time_to_first_review_p75_seconds=None if review_p50 is None else review_p50 * 2,
        time_to_first_review_p90_seconds=None if review_p50 is None else review_p50 * 3,
        time_to_merge_p50_seconds=merge_p50,
        time_to_merge_p75_seconds=None if merge_p50 is None else merge_p50 * 2,
        time_to_merge_p90_seconds=None if merge_p50 is None else merge_p50 * 3,
        open_prs_at_week_end=open_at_end, open_pr_median_age_seconds=None,
        time_to_first_review_samples=samples if review_p50 is not None else 0,
        time_to_merge_samples=samples if merge_p50 is not None else 0,
        coding_time_p50_seconds=86400.0 if merged_phases else None, coding_time_samples=samples if merged_phases else 0,
        pickup_time_p50_seconds=pickup, pickup_time_samples=samples if pickup is not None else 0,
        review_time_p50_seconds=max(0.0, merge_p50 - (pickup or 0)) if merge_p50 is not None else None,
        review_time_samples=samples if merged_phases else 0,
        cycle_time_p50_seconds=86400.0 + merge_p50 if merge_p50 is not None else None,
        cycle_time_samples=samples if merged_phases else 0,
        prs_merged_without_review=min(merged, 1),
        open_ready_prs_at_week_end=(open_at_end or 0) // 2,
        # Review depth of the merged: two reviews with comments and one bare approval each, 2.5
        # inline comments on average.
        review_comments_per_merged_pr=2.5 if merged else None, review_comments_samples=samples if merged else 0,
        reviews_with_comments=2 * merged if merged else None, bare_approvals=merged if merged else None,
    )


def busy_org(first_monday: date = date(2025, 1, 6), n_weeks: int = 20, seed: int = 3) -> tuple[list[PullRequest], list[Week], list[ReviewerWeek]]:
    """A few PRs every week with reviews, merges, closes and open ones, and matching weeks and
    reviewer rows: enough for every chart of the page to have data."""
    rng = random.Random(seed)
    prs: list[PullRequest] = []
    weeks: list[Week] = []
    reviewers: list[ReviewerWeek] = []
    number = 0
    for i in range(n_weeks):
        start = first_monday + timedelta(weeks=i)
        for _ in range(rng.randint(2, 6)):
            number += 1
            created = at(start, rng.uniform(0, 100))
            review = rng.choice([None, rng.uniform(600, 10 * 86400)])
            fate = rng.random()
            merge = review + rng.uniform(600, 86400) if review is not None and fate < 0.6 else None
            close = rng.uniform(3600, 5 * 86400) if merge is None and fate > 0.8 else None
            prs.append(pull_request(number, created, repo=rng.choice(["api", "web"]), reviewed_after=review,
                                    merged_after=merge, closed_after=close, size=rng.choice(["XS", "S", "M", "L", "XL"])))
        weeks.append(week(start, opened=rng.randint(2, 6), merged=rng.randint(0, 4), closed=rng.randint(0, 2),
                          open_at_end=rng.randint(3, 12), review_p50=rng.uniform(HOUR, 20 * HOUR),
                          merge_p50=rng.uniform(5 * HOUR, 80 * HOUR)))
        for login in ("alice", "bob", "carol"):
            reviewers.append(ReviewerWeek(start, "api", login, rng.randint(1, 6), rng.randint(1, 4)))
    return prs, weeks, reviewers
