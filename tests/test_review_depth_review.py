"""Regression tests from the adversarial review of review depth and the report's scopes (issue
20, points 3 and 7): each test showed a defect, fixed since."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from datetime import datetime, timezone

from analytics.html import render
from analytics.periods import org_report

from report_rows import busy_org

NOW = datetime(2025, 5, 26, tzinfo=timezone.utc)


def test_two_repositories_whose_names_slug_alike_get_distinct_chart_ids():
    """GitHub allows both `my.repo` and `my_repo` (or `my-repo`) in one organisation. Every chart
    of a scope is a <div id="acme-repository-my-repo-throughput">: the two scopes' charts share
    their ids, so Plotly.newPlot("...") draws the second repository's chart into the first one's
    div, and the second scope shows empty frames."""
    prs, weeks, reviewers = busy_org()
    report = org_report("acme", prs, weeks, reviewers, 8, NOW)
    scopes = tuple(
        org_report("acme", [replace(pr, repo=name) for pr in prs], weeks, reviewers, 8, NOW,
                   scope=("repository", name), within=report)
        for name in ("my.repo", "my_repo"))
    page = render([replace(report, scopes=scopes)], NOW, "test")
    ids = Counter(re.findall(r'<div id="([^"]+)"', page))
    duplicated = sorted(i for i, n in ids.items() if n > 1)
    assert not duplicated, f"{len(duplicated)} element ids used twice, e.g. {duplicated[:3]}"


# -- REST request budget ----------------------------------------------------------------------

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from emulator import Dataset, GitHubEmulator  # noqa: E402
from emulator.faults import Fault  # noqa: E402
from fakes import FakeClock  # noqa: E402
from flows.extract import land  # noqa: E402
from settings import Settings  # noqa: E402
from sources.github.auth import TokenPool  # noqa: E402
from sources.github.client import GitHubClient  # noqa: E402
from sources.github.source import SyncContext  # noqa: E402

from landing_runs import ORG, T0, TOKEN  # noqa: E402


def test_a_chunk_of_retried_review_lists_keeps_to_its_request_budget(tmp_path: Path, monkeypatch) -> None:
    """A REST review list is two lists now (the reviews and the pull request's inline comments):
    the listing charges REST_LISTS_PER_PULL = 4 a pull request, but the retry list still charges
    len(entry["kinds"]), 1 for "reviews". A chunk of retried review lists (after failures, and
    after the upgrade, which puts every pull request's reviews on the retry list) makes twice
    the requests commit_every_requests allows: a kill loses twice the work the setting bounds."""
    fake = FakeClock(T0)
    dataset = Dataset.generate(orgs={ORG: 1}, prs_per_repo=[40], seed=3, edge_cases=False)
    budget = 10
    starts: list[int] = []
    original = SyncContext.start_chunk

    def start_chunk(self: SyncContext) -> None:
        starts.append(self.client.stats.requests)
        original(self)

    with GitHubEmulator(dataset, clock=fake.now) as emu:
        emu.faults.add(Fault("451", path_regex=r"/pulls/\d+/reviews", times=40))
        config = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, github_api_mode="rest")
        with GitHubClient(emu.url, TokenPool([TOKEN]), clock=fake, max_concurrency=4) as client:
            first = land(config, ORG, client)
        assert len(first.progress.failed) == 40
        monkeypatch.setattr(SyncContext, "start_chunk", start_chunk)
        config = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, github_api_mode="rest",
                          commit_every_requests=budget)
        with GitHubClient(emu.url, TokenPool([TOKEN]), clock=fake, max_concurrency=4) as client:
            report = land(config, ORG, client, retry_now=True)
            starts.append(client.stats.requests)
    assert not report.progress.failed and report.rows["pull_request_reviews"] > 0
    per_chunk = [b - a for a, b in zip(starts, starts[1:])]
    # A chunk stops taking entries once its charge reaches the budget: at most budget + one
    # entry's lists (2) - 1 requests, well under 1.5x.
    assert max(per_chunk) <= 1.5 * budget, f"requests per chunk {per_chunk} for a budget of {budget}"


# -- a team's scope: whose pull requests --------------------------------------------------------

from destinations import DuckDBConfig, DuckDBWarehouse, merge_landed_loads  # noqa: E402
from analytics.build import read_reports  # noqa: E402

import test_metrics as tm  # noqa: E402


def test_a_team_scopes_headline_and_charts_count_the_same_pull_requests(tmp_path: Path) -> None:
    """A team's charts come from weekly_team_metrics, which finds the members' pull requests by
    user id (mb.user_id = p.author_id); its headline, open pull requests and reviewer load by
    login (`pr.author_login in members`). A member who renamed their account (team_members has
    the new login, the pull requests landed before the rename the old one) counts in the charts
    and not in the headline: the scope says 0 PRs opened over bars that show 3."""
    warehouse = DuckDBWarehouse(DuckDBConfig(path=tmp_path / "wh" / "warehouse.duckdb"))
    try:
        tm.land_history(tmp_path)
        renamed = {**tm.ADA, "login": "ada-lovelace"}  # the same user (id 1), renamed since
        tm.land_teams(tmp_path, "1000.3", "2026-01-20", {"backend": [renamed]})
        merge_landed_loads(warehouse, str(tmp_path), tm.ORG, "github_acme")
        (report,) = read_reports(warehouse, [tm.ORG], 2, datetime(2026, 1, 21, tzinfo=timezone.utc))
    finally:
        warehouse.close()
    (team,) = [s for s in report.scopes if s.scope_key == "team:backend"]
    charted = sum(w.prs_opened for w in team.weeks)
    headline = next(m.current for m in team.headline if m.key == "prs_opened")
    assert charted == 3  # api#1, api#3, api#4: ada's
    assert headline == charted, f"headline PRs opened {headline}, throughput chart {charted}"


# -- GraphQL: a stop at the inline comment count ---------------------------------------------

from sources.github.errors import RateLimitExhausted  # noqa: E402

from test_graphql import FakeGraphQL, fetcher, pr_data  # noqa: E402
from test_graphql import T0 as GQL_T0  # noqa: E402


class CountRateLimited(FakeGraphQL):
    """Answers the pull requests' queries; the budget is spent by the time the counts are asked."""

    def __call__(self, request):
        import httpx
        import json as _json
        if "... on PullRequestReview {" in _json.loads(request.content)["query"]:
            self.rate_limited = 1
        return super().__call__(request)


def test_a_rate_limit_at_the_count_query_keeps_the_batches_already_fetched() -> None:
    """batches() now holds every batch until the counts are in. The budget running out at the
    count query (max_rate_limit_wait passed) raises before any batch is yielded: the caller's
    `done` is empty, so every pull request of the page goes on the retry list and the points
    spent on its completed batches (and their follow-ups) are spent again next run. Before the
    change, the batches fetched before the stop were landed. Here 2 queries fetched 60 pull
    requests whole; none is delivered."""
    prs = {f"P{i}": pr_data(2, 1) for i in range(60)}
    fake = CountRateLimited(prs)
    client, children, points = fetcher(fake, FakeClock(GQL_T0), max_rate_limit_wait=60)
    delivered: list[str] = []
    with client:
        try:
            for ids, result in children.batches(list(prs)):
                delivered.extend(result.children)
        except RateLimitExhausted:
            pass
    assert len(points) == 2  # the two batch queries, answered whole
    assert len(delivered) == 60, f"{len(delivered)} of the 60 pull requests fetched whole were delivered"


# -- REST: the comments list answers 404 while the reviews list answered 200 -------------------

import dlt  # noqa: E402
import duckdb  # noqa: E402

from landing_runs import merge_only, repo_names, run  # noqa: E402
from settings import pipeline_name  # noqa: E402


def test_a_404_on_the_comments_list_does_not_leave_the_upgrades_reviews_uncounted(tmp_path: Path) -> None:
    """After the upgrade every pull request's reviews are refetched once from the retry list
    (the entry is removed when taken). If the inline comments list of one pull request answers
    404 while its reviews list has just answered 200 (the pull request is there), the pair is
    treated as 'the pull request is gone': nothing lands, nothing goes back on the retry list,
    and the marker is set. Its reviews keep inline_comments NULL, and its review depth NULL in
    pull_request_metrics, for good: later runs never ask again."""
    fake = FakeClock(T0)
    dataset = Dataset.generate(orgs={ORG: 1}, prs_per_repo=[6], seed=1, edge_cases=False)
    with GitHubEmulator(dataset, clock=fake.now) as emu:
        settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, github_api_mode="rest")
        run(settings, emu, fake)
        merge_only(settings)
        pipeline = dlt.attach(pipeline_name(ORG), pipelines_dir=str(settings.pipelines_dir))
        with pipeline.managed_state() as managed:  # state of the version before inline counts
            for entry in managed["sources"][pipeline_name(ORG)]["repos"].values():
                entry["child_kinds"] = ["reviews", "files", "events", "events with commits and comments"]
        con = duckdb.connect(str(settings.duckdb_config.path))
        try:
            con.execute("UPDATE github.pull_request_reviews SET inline_comments = NULL")
        finally:
            con.close()
        repo = repo_names(dataset)[0]
        number = next(pr["number"] for pr in dataset.pull_requests(ORG, repo) if dataset.reviews(ORG, repo, pr["number"]))
        emu.faults.add(Fault("404", path_regex=rf"/repos/{ORG}/{repo}/pulls/{number}/comments", times=1))
        run(settings, emu, fake)  # the upgrade run: that pull request's reviews fail, on the retry list
        fake.advance(2 * 86400)  # past its backoff
        run(settings, emu, fake)  # and the next one, no fault
        merge_only(settings)
    con = duckdb.connect(str(settings.duckdb_config.path), read_only=True)
    try:
        uncounted = con.execute(
            "SELECT pull_request_number, count(*) FROM github.pull_request_reviews "
            "WHERE inline_comments IS NULL GROUP BY 1").fetchall()
    finally:
        con.close()
    assert uncounted == [], f"reviews still without inline comment counts (pull request, reviews): {uncounted}"


# -- GraphQL: a refusal mid-page ---------------------------------------------------------------

from sources.github.graphql import GraphQLRefused  # noqa: E402


class Refusing(FakeGraphQL):
    """No GraphQL API at this URL (an old GHES, a proxy): every query answers 404."""

    def __call__(self, request):
        import httpx
        self.queries.append({})
        return httpx.Response(404, json={"message": "Not Found"})


def test_a_refused_query_is_not_followed_by_the_rest_of_the_pages_queries() -> None:
    """`auto` falls back to REST at the first GraphQLRefused a batch yields (the caller breaks
    out of batches()). batches() now drains every batch of the page first, so each remaining
    batch is sent, and refused, too: 3 refused queries for a page of 100 pull requests instead
    of 1. The existing test_graphql_auto.py::test_auto_falls_back_to_rest_when_graphql_refuses
    (both parameters) fails on this commit for the same reason (4 refused queries, at most 2
    allowed); it passes on 54ea363."""
    prs = {f"P{i}": pr_data(1, 1) for i in range(100)}
    fake = Refusing(prs)
    client, children, _ = fetcher(fake, FakeClock(GQL_T0))
    with client:
        for _, result in children.batches(list(prs)):
            assert isinstance(result, GraphQLRefused)
            break  # as _graphql_children does (_fell_back_to_rest)
    assert len(fake.queries) == 1, f"{len(fake.queries)} queries sent after GraphQL refused the first"


# -- the emulator ------------------------------------------------------------------------------


def test_dismissing_a_review_in_the_emulator_keeps_its_inline_comments() -> None:
    """Dataset._inline_comments says the comments are derived from (seed, review id) alone, but
    the count is drawn from a table chosen by the review's *current* state (and body): dismissing
    an approval (edit_review(state="DISMISSED"), as the reconciliation tests do) redraws it. On
    GitHub a dismissal deletes no comment; here most dismissed approvals change their count, so
    a test of the reconciliation pass sees inline counts move for a reason GitHub never has."""
    ds = Dataset.generate(orgs={ORG: 1}, prs_per_repo=[30], seed=1, edge_cases=False)
    repo = ds.repositories(ORG)[0]["name"]
    moved = []
    for pr in ds.pull_requests(ORG, repo):
        number = pr["number"]
        for index, review in enumerate(ds.reviews(ORG, repo, number)):
            if review["state"] != "APPROVED":
                continue
            before = len(ds.inline_comments(ORG, repo, number, review))
            dismissed = ds.edit_review(ORG, repo, number, index, state="DISMISSED")
            after = len(ds.inline_comments(ORG, repo, number, dismissed))
            if before != after:
                moved.append((number, review["id"], before, after))
    assert not moved, f"{len(moved)} dismissed approvals changed their inline comments, e.g. {moved[:3]}"


class MalformedCount(FakeGraphQL):
    """The count query's answer has a review whose `comments` is a list, not an object."""

    def _inline_comments(self, ids):
        data, errors = super()._inline_comments(ids)
        data["nodes"][0] = {"id": ids[0], "comments": [{"totalCount": 3}]}
        return data, errors


def test_a_malformed_count_fails_its_pull_request_not_the_run() -> None:
    """Every other malformed GraphQL shape fails the pull request it belongs to (GitHubClientError,
    onto the retry list). `(node.get("comments") or {}).get("totalCount")` raises AttributeError
    on a `comments` that is a non-empty list or a string, out of batches(): the transformer, the
    chunk and the run fail."""
    fake = MalformedCount({"A": pr_data(1, 1)})
    client, children, _ = fetcher(fake, FakeClock(GQL_T0))
    with client:
        results = [result for _, result in children.batches(["A"])]
    assert "A" in results[0].failed and not results[0].children


def test_two_repositories_whose_names_slug_alike_both_draw_their_charts_in_chromium(tmp_path: Path) -> None:
    """The same page in Chromium: choosing `my_repo` shows 10 empty frames (its charts were drawn
    into `my.repo`'s divs, which hold two plots each)."""
    from browser import open_offline

    prs, weeks, reviewers = busy_org()
    report = org_report("acme", prs, weeks, reviewers, 8, NOW)
    scopes = tuple(
        org_report("acme", [replace(pr, repo=name) for pr in prs], weeks, reviewers, 8, NOW,
                   scope=("repository", name), within=report)
        for name in ("my.repo", "my_repo"))
    out = tmp_path / "report.html"
    out.write_text(render([replace(report, scopes=scopes)], NOW, "test"), encoding="utf-8")
    drawn = {}
    with open_offline(out) as opened:
        page = opened.page
        page.wait_for_function("() => typeof Plotly === 'object'")
        for key in ("repository:my.repo", "repository:my_repo"):
            page.select_option("select.scope-select", key)
            page.wait_for_timeout(300)
            drawn[key] = page.evaluate(
                "() => [...document.querySelector('.scope:not([hidden])').querySelectorAll("
                "'figure.chart:not(.empty)')].filter(f => f.querySelector('.main-svg')).length")
    assert drawn == {"repository:my.repo": 10, "repository:my_repo": 10}, drawn
