"""GraphQL mode against the emulator's own `POST /graphql` (emulator/graphql.py), over real HTTP:
a GraphQL-mode warehouse equals a REST-mode warehouse of the same data in every column both modes
fill, table by table; big pull requests get follow-up pages; a heavy query halves the batch; a
spent points budget waits, or stops and resumes. Virtual clock shared with the emulator."""

from __future__ import annotations

import math

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator import Dataset, Fault, GitHubEmulator
from fakes import FakeClock
from destinations.merge import merge_landed_loads
from destinations.warehouse import open_warehouse
from flows.extract import LandingReport, land
from settings import Settings, pipeline_name
from flows.summary import OrgResult, RunSummary, render_summary
from sources.github.auth import TokenPool
from sources.github.client import GitHubClient
from sources.github.graphql import GraphQLChildren
from landing_runs import ORG, T0, TOKEN
from test_graphql_source import sync, table

TABLES = ("pull_requests", "pull_request_reviews", "pull_request_files", "pull_request_events",
          "pull_request_child_fetches")

logger = logging.getLogger(__name__)


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def dataset() -> Dataset:
    # The first pull requests of the first repository are the edge cases: a deleted author,
    # unicode file names, 3,050 files, 130 reviews (one by a bot), none.
    return Dataset.generate(orgs={ORG: 2}, prs_per_repo=[40, 8], seed=11)


def emulator(dataset: Dataset, fake: FakeClock, **options: Any) -> GitHubEmulator:
    return GitHubEmulator(dataset, clock=fake.now, **options)


def graphql_run(emu: GitHubEmulator, fake: FakeClock, data_dir: Path, **client_options: Any) -> LandingReport:
    return sync(emu, fake, data_dir, "graphql", **client_options)


def assert_same_warehouse(got_dir: Path, want_dir: Path, tables: tuple[str, ...] = TABLES) -> None:
    for name in tables:
        got, want = table(got_dir, name), table(want_dir, name)
        assert len(got) == len(want), name
        assert got == want, name


def test_graphql_warehouse_equals_rest_warehouse(dataset: Dataset, fake: FakeClock, tmp_path: Path) -> None:
    with emulator(dataset, fake) as emu:
        rest = sync(emu, fake, tmp_path / "rest", "rest")
        rest_stats = emu.stats
        emu.reset_stats()
        graphql = graphql_run(emu, fake, tmp_path / "graphql")
        stats = emu.stats
    assert_same_warehouse(tmp_path / "graphql", tmp_path / "rest")
    prs = len(table(tmp_path / "rest", "pull_requests"))
    assert graphql.progress.graphql_pull_requests == prs and not graphql.progress.failed
    assert graphql.progress.graphql_points == stats["graphql_points"] > 0
    # The 130 reviews and 3,050 files came in follow-up pages; files stop at GitHub's 3,000.
    files = table(tmp_path / "graphql", "pull_request_files")
    per_pr: dict[int, int] = {}
    for row in files:
        per_pr[row["pull_request_id"]] = per_pr.get(row["pull_request_id"], 0) + 1
    assert max(per_pr.values()) == 3000 and any(row["file_list_truncated"] for row in files)
    reviews: dict[int, int] = {}
    for row in table(tmp_path / "graphql", "pull_request_reviews"):
        reviews[row["pull_request_id"]] = reviews.get(row["pull_request_id"], 0) + 1
    assert max(reviews.values()) == 130
    logger.warning(
        "REST: %d requests (%s); GraphQL mode: %d requests (%s), %d points for %d pull requests (%.2f per PR)",
        rest_stats["requests"], rest_stats["by_endpoint"], stats["requests"], stats["by_endpoint"],
        stats["graphql_points"], prs, stats["graphql_points"] / prs,
    )
    assert {kind: stats["by_endpoint"].get(kind, 0) for kind in ("reviews", "files", "timeline")} == \
        {"reviews": 0, "files": 0, "timeline": 0}  # every child list over GraphQL
    summary = render_summary(RunSummary([OrgResult(ORG, landing=graphql)]))
    per_pr = stats["graphql_points"] / prs
    assert f"GraphQL: {stats['graphql_points']} points for the child lists of {prs} pull request(s) " \
           f"({per_pr:.2f} points per pull request)" in summary
    assert "GraphQL" not in render_summary(RunSummary([OrgResult(ORG, landing=rest)]))


def test_heavy_query_halves_the_batch_and_everything_lands(dataset: Dataset, fake: FakeClock, tmp_path: Path) -> None:
    with emulator(dataset, fake) as emu:
        sync(emu, fake, tmp_path / "rest", "rest")
    with emulator(dataset, fake, graphql_heavy_nodes=2_000) as emu:  # 20 PRs ask for 6,020 nodes (20 + 20 x 300)
        report = graphql_run(emu, fake, tmp_path / "graphql")
        # The first repository's 40 pull requests go as 2 queries of 20 at the starting size (34):
        # 20, then 10, are too heavy; 5 fit.
        assert emu.stats["by_status"].get(502, 0) >= 2
    assert not report.progress.failed and report.progress.stopped_early is None
    assert_same_warehouse(tmp_path / "graphql", tmp_path / "rest")


def test_a_node_the_emulator_does_not_have_is_gone(dataset: Dataset, fake: FakeClock) -> None:
    real = dataset.pull_requests(ORG, dataset.repositories(ORG)[0]["name"])[5]["node_id"]
    with emulator(dataset, fake) as emu, GitHubClient(emu.url, TokenPool([TOKEN]), clock=fake) as client:
        [(ids, result)] = list(GraphQLChildren(client, emu.graphql_url).batches(["PR_kwDOgone", real]))
    assert ids == ["PR_kwDOgone", real] and not isinstance(result, Exception)
    assert set(result.children) == {real} and "PR_kwDOgone" in result.gone


def test_spent_points_wait_for_the_reset(dataset: Dataset, fake: FakeClock, tmp_path: Path) -> None:
    with emulator(dataset, fake) as emu:
        emu.graphql.exhaust(TOKEN, seconds=600)
        report = graphql_run(emu, fake, tmp_path)
    assert report.progress.stopped_early is None and not report.progress.failed
    assert fake.now() >= T0 + 600 and report.requests.rate_limit_waits >= 1
    assert report.progress.graphql_pull_requests == len(table(tmp_path, "pull_requests"))


def test_spent_points_past_max_wait_stop_and_the_next_run_resumes(
    dataset: Dataset, fake: FakeClock, tmp_path: Path
) -> None:
    with emulator(dataset, fake) as emu:
        sync(emu, fake, tmp_path / "rest", "rest")
        emu.graphql.exhaust(TOKEN, seconds=600)
        first = graphql_run(emu, fake, tmp_path / "graphql", max_rate_limit_wait=60)
        assert first.progress.stopped_early and "GraphQL" in first.progress.stopped_early
        assert not first.progress.failed
        fake.advance(700)
        emu.reset_stats()
        second = graphql_run(emu, fake, tmp_path / "graphql", max_rate_limit_wait=60)
        stats = emu.stats
    assert second.progress.stopped_early is None and not second.progress.failed
    # The lists stopped by the limit came from the retry list over GraphQL too, by node id.
    assert second.progress.graphql_pull_requests == len(table(tmp_path / "rest", "pull_requests"))
    assert not {kind for kind in ("reviews", "files", "timeline") if stats["by_endpoint"].get(kind)}
    assert_same_warehouse(tmp_path / "graphql", tmp_path / "rest")


def test_a_malformed_review_is_set_aside_as_in_rest(dataset: Dataset, fake: FakeClock, tmp_path: Path) -> None:
    repo = dataset.repositories(ORG)[0]["name"]
    number = next(p["number"] for p in dataset.pull_requests(ORG, repo) if len(dataset.reviews(ORG, repo, p["number"])) >= 2)
    dataset.corrupt_review(ORG, repo, number, 1, "id")  # served without its id
    with emulator(dataset, fake) as emu:
        rest = sync(emu, fake, tmp_path / "rest", "rest")
        graphql = graphql_run(emu, fake, tmp_path / "graphql")
    assert len(graphql.progress.rejected) == len(rest.progress.rejected) == 1
    assert f"{ORG}/{repo}#{number} review" in graphql.progress.rejected[0]
    assert_same_warehouse(tmp_path / "graphql", tmp_path / "rest")  # the other reviews and the fetch record land


def test_a_pull_request_with_250_reviews_and_450_files_gets_follow_up_pages(
    dataset: Dataset, fake: FakeClock, tmp_path: Path
) -> None:
    repo = dataset.repositories(ORG)[1]["name"]
    number = dataset.pull_requests(ORG, repo)[0]["number"]
    had = len(dataset.reviews(ORG, repo, number)), len(dataset.files(ORG, repo, number))
    for _ in range(250 - had[0]):
        dataset.add_review(ORG, repo, number)
    for n in range(450 - had[1]):
        dataset.add_file(ORG, repo, number, filename=f"big/file_{n:03}.py")
    with emulator(dataset, fake) as emu:
        sync(emu, fake, tmp_path / "rest", "rest")
        emu.reset_stats()
        report = graphql_run(emu, fake, tmp_path / "graphql")
        stats = emu.stats
    assert not report.progress.failed
    assert_same_warehouse(tmp_path / "graphql", tmp_path / "rest")
    big = next(pr["id"] for pr in table(tmp_path / "rest", "pull_requests") if pr["repo"] == repo and pr["number"] == number)
    assert sum(r["pull_request_id"] == big for r in table(tmp_path / "graphql", "pull_request_reviews")) == 250
    assert sum(r["pull_request_id"] == big for r in table(tmp_path / "graphql", "pull_request_files")) == 450
    assert stats["by_endpoint"].get("reviews", 0) == stats["by_endpoint"].get("files", 0) == 0


def test_a_truncated_answer_is_retried_and_everything_lands(dataset: Dataset, fake: FakeClock, tmp_path: Path) -> None:
    with emulator(dataset, fake) as emu:
        sync(emu, fake, tmp_path / "rest", "rest")
        emu.reset_stats()
        emu.faults.add(Fault("truncated", r"graphql", times=2))  # the body ends mid-JSON
        report = graphql_run(emu, fake, tmp_path / "graphql")
        stats = emu.stats
    assert stats["faults_served"] == 2 and report.requests.retries >= 2
    assert not report.progress.failed and report.progress.stopped_early is None
    assert_same_warehouse(tmp_path / "graphql", tmp_path / "rest")


def test_chunks_never_cut_a_page_in_graphql_mode(fake: FakeClock, tmp_path: Path) -> None:
    """A chunk of 30 requests holds 10 pull requests by the budget's count (3 lists each): REST
    mode cuts a page there, GraphQL mode takes it whole (its lists cost a point or two), so no
    pull-request page is read twice and no batch is made smaller."""
    dataset = Dataset.generate(orgs={ORG: 1}, prs_per_repo=[250], seed=3, edge_cases=False)
    with emulator(dataset, fake) as emu:
        sync(emu, fake, tmp_path / "rest", "rest")
        emu.reset_stats()
        settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path / "graphql",
                            github_api_mode="graphql", commit_every_requests=30)
        with GitHubClient(emu.url, TokenPool([TOKEN]), clock=fake, max_concurrency=4) as client:
            report = land(settings, ORG, client)
        with open_warehouse(settings.warehouse_config) as warehouse:
            merge_landed_loads(warehouse, settings.landing, ORG, pipeline_name(ORG))
        stats = emu.stats
    assert report.progress.chunks == 3 and report.progress.stopped_early is None  # a page a chunk
    assert stats["by_endpoint"]["pulls"] == 3  # each of the 3 pages read once
    # 34 + 33 + 33 a page of 100, 25 + 25 the last 50; and a follow-up query in each page whose
    # pull requests include a timeline of more than 100 landed items (a long discussion)
    [repo] = [r["name"] for r in dataset.repositories(ORG)]
    served = sorted(dataset.pull_requests(ORG, repo), key=lambda pr: pr["updated_at"], reverse=True)
    long_pages = {i // 100 for i, pr in enumerate(served) if len(dataset.events(ORG, repo, pr["number"])) > 100}
    assert long_pages, "the seed has long discussions"
    # Each page's reviews' inline comment counts: a query per 100 reviews.
    counts = sum(math.ceil(sum(len(dataset.reviews(ORG, repo, pr["number"])) for pr in served[start:start + 100]) / 100)
                 for start in range(0, len(served), 100))
    assert stats["by_endpoint"]["graphql"] == 3 + 3 + 2 + len(long_pages) + counts
    assert_same_warehouse(tmp_path / "graphql", tmp_path / "rest")
