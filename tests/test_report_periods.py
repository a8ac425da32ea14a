"""The report's numbers: periods of whole weeks, headline values and their change against the
previous period, and the chart data derived from the views' rows (no warehouse)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest
from plotly.offline import get_plotlyjs

from analytics.html import MIN_SAMPLES, metric_change, metric_value, percentiles_figure, render
from analytics.periods import (
    Metric, Period, headline, latest_active_week, merge_times_by_size, org_report, periods,
    review_time_distribution, reviewer_totals, slowest_open,
)
from analytics.queries import ReviewerWeek
from report_rows import HOUR, at, busy_org, pull_request, week

MON = date(2025, 3, 3)  # a Monday
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_periods_are_whole_weeks_ending_with_the_given_week():
    current, previous = periods(MON + timedelta(days=3), weeks=4)  # a Thursday of that week
    assert current == Period(MON - timedelta(weeks=3), MON + timedelta(weeks=1))
    assert previous == Period(MON - timedelta(weeks=7), MON - timedelta(weeks=3))
    assert current.weeks == previous.weeks == 4
    assert current.last_week == MON
    assert current.holds(at(MON, 167.9)) and not current.holds(at(MON, 168))
    with pytest.raises(ValueError):
        periods(MON, 0)


def test_latest_active_week_skips_empty_trailing_weeks():
    weeks = [week(MON, opened=1), week(MON + timedelta(weeks=1), merged=1), week(MON + timedelta(weeks=2))]
    assert latest_active_week(weeks) == MON + timedelta(weeks=1)
    assert latest_active_week([week(MON)]) is None


def test_headline_counts_each_event_in_the_period_it_happened_in():
    current, previous = periods(MON, weeks=1)
    prev_day = previous.start
    prs = [
        # previous week: 2 opened, 1 merged there (after 10 h), 1 closed unmerged there
        pull_request(1, at(prev_day, 1), reviewed_after=2 * HOUR, merged_after=10 * HOUR),
        pull_request(2, at(prev_day, 2), closed_after=HOUR),
        # opened in the previous week, reviewed and merged in the current one
        pull_request(3, at(prev_day, 100), reviewed_after=100 * HOUR, merged_after=120 * HOUR),
        # current week: 3 opened, one merged, one reviewed only, one untouched
        pull_request(4, at(MON, 1), reviewed_after=4 * HOUR, merged_after=20 * HOUR),
        pull_request(5, at(MON, 2), reviewed_after=6 * HOUR),
        pull_request(6, at(MON, 3)),
    ]
    weeks = [week(previous.start, open_at_end=5), week(MON, open_at_end=8)]
    metrics = {m.key: m for m in headline(prs, weeks, current, previous)}

    assert (metrics["prs_opened"].current, metrics["prs_opened"].previous) == (3, 3)
    assert (metrics["prs_merged"].current, metrics["prs_merged"].previous) == (2, 1)
    assert metrics["merge_rate"].current == 1.0 and metrics["merge_rate"].previous == 0.5
    # first reviews in the current week: PR 3 (100 h), 4 (4 h), 5 (6 h); previous: PR 1 (2 h)
    assert metrics["time_to_first_review_p50"].current == 6 * HOUR
    assert metrics["time_to_first_review_p50"].previous == 2 * HOUR
    assert metrics["time_to_merge_p50"].current == (120 + 20) / 2 * HOUR
    assert metrics["open_prs_at_end"].current == 8 and metrics["open_prs_at_end"].previous == 5


def test_change_ratio_and_verdict():
    up = Metric("prs_merged", "PRs merged", "count", 12, 8, True)
    assert up.change == 4 and up.change_ratio == 0.5 and up.verdict == "better"
    slower = Metric("time_to_merge_p50", "Median time to merge", "seconds", 3 * HOUR, 2 * HOUR, False)
    assert slower.verdict == "worse" and slower.change_ratio == 0.5
    from_zero = Metric("prs_opened", "PRs opened", "count", 3, 0, True)
    assert from_zero.change == 3 and from_zero.change_ratio is None
    missing = Metric("merge_rate", "Merge rate", "ratio", 0.5, None, True)
    assert missing.change is None and missing.verdict == "unknown"
    neutral = Metric("open_prs_at_end", "Open PRs", "count", 5, 4, None)
    assert neutral.change == 1 and neutral.verdict == "unknown"
    assert Metric("prs_opened", "x", "count", 4, 4, True).verdict == "same"
    # Issue 20.7: a change the page writes as +0% (or +0 pts) is neutral, not red or green.
    assert metric_change(Metric("t", "", "count", 401, 400, True)) == "+1 (+0%)"
    assert Metric("t", "", "count", 401, 400, True).verdict == "same"
    assert Metric("t", "", "seconds", 3600 * 100 + 60, 3600 * 100, False).verdict == "same"
    assert Metric("merge_rate", "", "ratio", 0.752, 0.750, True).verdict == "same"
    assert Metric("merge_rate", "", "ratio", 0.76, 0.75, True).verdict == "better"


def test_change_is_written_for_a_person():
    assert metric_change(Metric("prs_merged", "", "count", 12, 8, True)) == "+4 (+50%)"
    assert metric_change(Metric("merge_rate", "", "ratio", 0.5, 0.75, True)) == "-25 pts"
    assert metric_change(Metric("t", "", "seconds", 2 * HOUR, 4 * HOUR, False)) == "-2.0 h (-50%)"
    assert metric_change(Metric("prs_opened", "", "count", 3, None, True)) == "no previous data"
    assert metric_change(Metric("t", "", "seconds", None, None, False)) == "no data to compare"
    assert metric_value(Metric("t", "", "seconds", 3 * 86400, None, False)) == "3.0 d"
    assert metric_value(Metric("merge_rate", "", "ratio", 0.666, None, True)) == "67%"


def test_review_time_distribution_buckets_first_reviews_of_the_period():
    current, _ = periods(MON, weeks=1)
    prs = [
        pull_request(1, at(MON, 1), reviewed_after=30 * 60),
        pull_request(2, at(MON, 1), reviewed_after=HOUR),  # the upper bound is exclusive
        pull_request(3, at(MON, 1), reviewed_after=30 * HOUR),
        pull_request(4, at(MON - timedelta(weeks=3), 1), reviewed_after=30 * 60),  # reviewed before
        pull_request(5, at(MON, 1)),  # no review
    ]
    assert dict(review_time_distribution(prs, current)) == {
        "< 1 h": 1, "1-4 h": 1, "4-24 h": 0, "1-3 d": 1, "3-7 d": 0, "7+ d": 0,
    }


def test_merge_times_by_size_keep_only_merges_of_the_period_in_size_order():
    current, _ = periods(MON, weeks=1)
    prs = [
        pull_request(1, at(MON, 1), merged_after=HOUR, size="L"),
        pull_request(2, at(MON, 1), merged_after=2 * HOUR, size="XS"),
        pull_request(3, at(MON, 1), closed_after=HOUR, size="XS"),
        pull_request(4, at(MON - timedelta(weeks=2)), merged_after=HOUR, size="M"),
    ]
    by_size = merge_times_by_size(prs, current)
    assert list(by_size) == ["XS", "S", "M", "L", "XL"]
    assert by_size == {"XS": [2 * HOUR], "S": [], "M": [], "L": [HOUR], "XL": []}


def test_reviewer_totals_rank_per_repository_rows_of_the_period():
    current, _ = periods(MON, weeks=2)
    rows = [
        ReviewerWeek(MON, "api", "bob", 3, 2),
        ReviewerWeek(MON, "web", "bob", 2, 1),
        ReviewerWeek(MON, None, "bob", 5, 3),  # an organisation-wide roll-up: not counted twice
        ReviewerWeek(MON - timedelta(weeks=1), "api", "alice", 4, 4),
        ReviewerWeek(MON - timedelta(weeks=2), "api", "alice", 9, 9),  # before the period
    ]
    totals = reviewer_totals(rows, current)
    assert [(t.reviewer_login, t.reviews, t.prs_reviewed) for t in totals] == [("bob", 5, 3), ("alice", 4, 4)]


def test_slowest_open_are_the_oldest_open_pull_requests():
    prs = [
        pull_request(1, at(MON, 1)),
        pull_request(2, at(MON - timedelta(weeks=4))),
        pull_request(3, at(MON - timedelta(weeks=9)), merged_after=HOUR),
        pull_request(4, NOW + timedelta(days=1)),  # after as_of
    ]
    slowest = slowest_open(prs, NOW)
    assert [item.pull_request.number for item in slowest] == [2, 1]
    assert slowest[0].age_seconds == (NOW - at(MON - timedelta(weeks=4))).total_seconds()


def test_org_report_without_activity_is_an_honest_empty_section():
    report = org_report("quiet", [], [week(MON)], [], 26, NOW)
    assert report.empty == "no pull request activity for quiet in the warehouse"
    page = render([report], NOW)
    assert "no pull request activity for quiet in the warehouse" in page
    assert 'data-chart=' not in page


def test_page_has_every_chart_and_the_headline_of_a_busy_org():
    prs, weeks, reviewers = busy_org()
    report = org_report("acme", prs, weeks, reviewers, 8, NOW)
    assert report.current is not None and report.current.weeks == 8
    assert report.current.last_week == weeks[-1].week_start
    page = render([report], NOW, "duckdb:test")
    for chart in ("throughput", "cycle-time-breakdown", "work-in-progress", "merged-without-review", "review-depth",
                  "time-to-first-review", "time-to-merge", "review-distribution", "size-vs-merge", "reviewer-load"):
        assert f'<figure class="chart" data-chart="{chart}">' in page
    assert page.count("data-metric=") == 6
    assert len(re.findall(r'Plotly\.newPlot\(\s*"', page)) == 10
    own = page.replace(get_plotlyjs(), "")  # plotly.js, inlined once, and our own markup
    assert len(own) < len(page) and page.count(get_plotlyjs()) == 1
    assert "<script src" not in own and "<link" not in own and "@import" not in own
    assert page.count("https://github.com/acme/") >= 1


def test_a_period_that_ended_long_before_the_report_says_so():
    """Issue 19.6: the demo's report covered a period that ended a year ago without saying why."""
    prs, weeks, reviewers = busy_org()
    last_day = weeks[-1].week_start + timedelta(days=6)
    soon, later = (datetime.combine(last_day + timedelta(days=n), datetime.min.time(), timezone.utc) for n in (3, 40))
    assert "gone quiet" not in render([org_report("acme", prs, weeks, reviewers, 8, soon)], soon)
    page = render([org_report("acme", prs, weeks, reviewers, 8, later)], later)
    assert f"is in the week ending {last_day.isoformat()}, 40 days before this report" in page


def test_percentiles_of_few_pull_requests_are_gaps_and_an_unfinished_week_is_marked():
    """A week's percentile of fewer than MIN_SAMPLES pull requests is not drawn (its sample size
    is still shown on the others); a period whose last week has not ended shades it."""
    first = date(2025, 12, 1)  # Mondays to 2025-12-29, the week NOW (2026-01-01) falls in
    weeks = [week(first + timedelta(weeks=i), opened=3, merged=3, review_p50=(i + 1) * HOUR, merge_p50=10 * HOUR,
                  samples=MIN_SAMPLES if i != 2 else MIN_SAMPLES - 1) for i in range(5)]
    report = org_report("acme", [], weeks, [], 5, NOW)
    figure = percentiles_figure(report, "time_to_first_review")
    assert figure is not None
    p50 = next(trace for trace in figure.data if trace.name == "p50")
    assert list(p50.y) == [1.0, 2.0, None, 4.0, 5.0] and list(p50.customdata) == [3, 3, 2, 3, 3]
    page = render([report], NOW, "test")
    # throughput, breakdown, merged without review, review depth, first review, merge (no open PRs: no
    # WIP chart)
    assert page.count("week in progress") == 6
    finished = render([org_report("acme", [], weeks[:4], [], 4, NOW)], NOW, "test")
    assert "week in progress" not in finished


def test_a_sync_older_than_a_day_is_a_banner_above_the_numbers():
    prs, weeks, reviewers = busy_org()
    fresh = org_report("acme", prs, weeks, reviewers, 8, NOW, last_merged_at=NOW - timedelta(hours=2))
    assert "stale-sync" not in render([fresh], NOW, "test")
    old = org_report("acme", prs, weeks, reviewers, 8, NOW, last_merged_at=NOW - timedelta(days=3))
    page = render([old], NOW, "test")
    assert page.index('class="banner stale-sync"') < page.index('data-metric=')
    assert "was merged on 2025-12-29 00:00 UTC, 3.0 d before this report" in page
    quiet = org_report("quiet", [], [], [], 8, NOW, last_merged_at=NOW - timedelta(days=9))
    assert "stale-sync" in render([quiet], NOW, "test")


def test_every_scope_gets_its_own_chart_ids_and_escaped_names():
    """Two repositories whose names make the same slug, and a team with markup in its name: each
    scope's charts have their own element ids, and names are text, never markup."""
    prs, weeks, reviewers = busy_org()
    report = org_report("acme", prs, weeks, reviewers, 8, NOW)
    scopes = tuple(org_report("acme", prs, weeks, reviewers, 8, NOW, scope=scope, within=report)
                   for scope in (("repository", "a_b"), ("repository", "a-b"), ("team", '<x y="1">')))
    page = render([replace(report, scopes=scopes)], NOW, "test")
    ids = re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', page)
    assert len(ids) == len(set(ids)) == 4 * 10 - 4  # the team has no breakdown, WIP, unreviewed or depth chart
    assert {"acme-repository-a-b-throughput", "acme-repository-a-b-2-throughput"} <= set(ids)
    assert '<x y="1">' not in page and "team:&lt;x y=&quot;1&quot;&gt;" in page
