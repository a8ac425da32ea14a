"""`auto` mode, the default, against the emulator over real HTTP (virtual clock shared with it):
REST without a credential, GraphQL with one, and REST for the rest of the run once the GraphQL
endpoint refuses for a reason REST would not (no GraphQL there, the token refused for GraphQL
only): one warning, every list fetched once, the same warehouse as a REST run. Explicit `graphql`
mode keeps its behaviour; rate limits and faults are no reason to fall back."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from emulator import Dataset, GitHubEmulator
from emulator.faults import Fault
from fakes import FakeClock
from destinations.merge import merge_landed_loads
from destinations.warehouse import open_warehouse
from flows.extract import LandingReport, land
from settings import Settings, pipeline_name
from flows.summary import OrgResult, RunSummary, render_summary
from sources.github.auth import TokenPool
from sources.github.client import GitHubClient, GraphQLTooHeavy
from sources.github.errors import (
    AuthenticationError,
    GitHubClientError,
    GitHubServerError,
    NotFoundError,
    RateLimitExhausted,
)
from sources.github.graphql import GraphQLChildren, GraphQLRefused, refusal
from landing_runs import ORG, T0, TOKEN

TABLES = ("pull_requests", "pull_request_reviews", "pull_request_files", "pull_request_events",
          "pull_request_child_fetches")
FALLBACK = "child lists over REST for the rest of the run"


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def dataset() -> Dataset:
    return Dataset.generate(orgs={ORG: 2}, prs_per_repo=[12, 5], seed=1, edge_cases=False)


def run(emu: GitHubEmulator, fake: FakeClock, data_dir: Path, tokens: tuple[str, ...] = (TOKEN,),
        mode: str | None = None, **settings: Any) -> LandingReport:
    """Land and merge one run; `mode` None leaves `github_api_mode` at its default. The client
    takes `max_rate_limit_wait`, the settings the rest."""
    if mode is not None:
        settings["github_api_mode"] = mode
    wait = settings.pop("max_rate_limit_wait", 3600.0)
    config = Settings(orgs=[ORG], github_url=emu.url, data_dir=data_dir, **settings)
    with GitHubClient(emu.url, TokenPool(list(tokens)), clock=fake, max_concurrency=4,
                      max_rate_limit_wait=wait) as client:
        report = land(config, ORG, client)
    with open_warehouse(config.warehouse_config) as warehouse:
        merge_landed_loads(warehouse, config.landing, ORG, pipeline_name(ORG))
    return report


def table(data_dir: Path, name: str) -> list[dict[str, Any]]:
    """Every column but the time of the fetch."""
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.sql(f"SELECT * FROM github.{name} ORDER BY row_key").to_arrow_table().to_pylist()
    finally:
        con.close()
    return [{k: v for k, v in row.items() if k != "fetched_at"} for row in rows]


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and FALLBACK in r.getMessage()]


def test_auto_is_the_default_and_without_a_token_is_rest(dataset: Dataset, fake: FakeClock, tmp_path: Path) -> None:
    assert Settings(orgs=[ORG], data_dir=tmp_path).github_api_mode == "auto"
    with GitHubEmulator(dataset, clock=fake.now) as emu:
        report = run(emu, fake, tmp_path, tokens=())
        stats = emu.stats
    assert "graphql" not in stats["by_endpoint"] and stats["by_endpoint"]["reviews"] > 0
    assert report.progress.graphql_pull_requests == 0 and report.progress.graphql_fallback is None


def test_auto_with_a_token_is_graphql(dataset: Dataset, fake: FakeClock, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    with GitHubEmulator(dataset, clock=fake.now) as emu:
        report = run(emu, fake, tmp_path)
        stats = emu.stats
    prs = len(table(tmp_path, "pull_requests"))
    assert stats["by_endpoint"]["graphql"] >= 1 and stats["by_status"].get(404, 0) == 0
    assert "reviews" not in stats["by_endpoint"] and "files" not in stats["by_endpoint"]
    assert report.progress.graphql_pull_requests == prs and report.progress.graphql_fallback is None
    assert not fallback_warnings(caplog) and not report.progress.failed


@pytest.mark.parametrize("refused", ["no_graphql", "token_refused"])
def test_auto_falls_back_to_rest_when_graphql_refuses(refused: str, fake: FakeClock, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """404 on /graphql (an old GHES, a proxy) or a 403 GraphQL gives the token and REST does not:
    one warning naming why and where, every list over REST, the warehouse of a REST run."""
    # Two pull-request pages in the first repository: GraphQL mode takes a page whole, so the
    # second page is what puts the run (REST by then) in more than one chunk.
    dataset = Dataset.generate(orgs={ORG: 2}, prs_per_repo=[120, 5], seed=1, edge_cases=False)
    with GitHubEmulator(dataset, clock=fake.now) as emu:
        run(emu, fake, tmp_path / "rest", mode="rest")
        emu.reset_stats()
        if refused == "no_graphql":
            emu.graphql_enabled = False
        else:
            emu.graphql_refused = {TOKEN}
        # Small chunks: the chunks after the fallback build REST transformers.
        with caplog.at_level(logging.WARNING):
            report = run(emu, fake, tmp_path / "auto", commit_every_requests=20)
        stats = emu.stats
    status = 404 if refused == "no_graphql" else 403
    assert report.progress.chunks > 1
    [warning] = fallback_warnings(caplog)
    assert f"{status} from POST {emu.graphql_url}" in warning
    assert ("no GraphQL API at this URL" if status == 404 else "the credential is refused for GraphQL") in warning
    # Only the queries already in flight when GraphQL refused (one per page, at most) were sent.
    assert 1 <= stats["by_endpoint"]["graphql"] == stats["by_status"][status] <= 2
    assert report.progress.graphql_pull_requests == 0 and report.progress.graphql_points == 0
    assert not report.progress.failed and report.progress.stopped_early is None
    # Every list fetched exactly once, over REST, with its fetch record: the REST run's warehouse,
    # sha and blob_url included.
    prs = len(table(tmp_path / "rest", "pull_requests"))
    assert stats["by_endpoint"]["reviews"] == stats["by_endpoint"]["files"] == prs
    for name in TABLES:
        assert table(tmp_path / "auto", name) == table(tmp_path / "rest", name), name
    fetches = [(r["pull_request_id"], r["kind"]) for r in table(tmp_path / "auto", "pull_request_child_fetches")]
    assert len(fetches) == len(set(fetches)) == 3 * prs
    summary = render_summary(RunSummary([OrgResult(ORG, landing=report)]))
    assert f"GraphQL refused ({report.progress.graphql_fallback}): child lists over REST" in summary
    assert emu.graphql_url in summary


def test_explicit_graphql_mode_does_not_fall_back(dataset: Dataset, fake: FakeClock, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """As before `auto` fell back: a 404 on /graphql fails the organisation, naming the URL; a
    403 for the token puts the lists on the retry list, and the summary says why."""
    with GitHubEmulator(dataset, clock=fake.now, graphql=False) as emu:
        with pytest.raises(NotFoundError, match=f"404 from POST {emu.graphql_url}"):
            run(emu, fake, tmp_path / "404", mode="graphql")
        assert "reviews" not in emu.stats["by_endpoint"]
    with GitHubEmulator(dataset, clock=fake.now, graphql_refused={TOKEN}) as emu:
        report = run(emu, fake, tmp_path / "403", mode="graphql")
        assert "reviews" not in emu.stats["by_endpoint"]
    prs = len(table(tmp_path / "403", "pull_requests"))
    assert not fallback_warnings(caplog) and report.progress.graphql_fallback is None
    assert report.progress.partial and len(report.progress.failed) == 3 * prs  # reviews, files and events of each
    assert all("403 from POST" in item.reason and "Resource not accessible" in item.reason
               for item in report.progress.failed)
    summary = render_summary(RunSummary([OrgResult(ORG, landing=report)]))
    assert "NOT SYNCED reviews" in summary and "GraphQL refused" not in summary


def test_auto_rate_limited_stops_without_falling_back(dataset: Dataset, fake: FakeClock, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with GitHubEmulator(dataset, clock=fake.now) as emu:
        emu.graphql.exhaust(TOKEN, seconds=600)
        with caplog.at_level(logging.WARNING):
            report = run(emu, fake, tmp_path, max_rate_limit_wait=60)
        stats = emu.stats
    assert report.progress.stopped_early and "GraphQL" in report.progress.stopped_early
    assert report.progress.graphql_fallback is None and not fallback_warnings(caplog)
    assert "reviews" not in stats["by_endpoint"]
    # The wait is logged with the request's own method.
    assert any("paused" in r.getMessage() and f"POST {emu.graphql_url}" in r.getMessage() for r in caplog.records)


def test_auto_with_server_errors_does_not_fall_back(dataset: Dataset, fake: FakeClock, tmp_path: Path) -> None:
    with GitHubEmulator(dataset, clock=fake.now) as emu:
        emu.faults.add(Fault("500", path_regex="^/graphql", times=100))
        report = run(emu, fake, tmp_path, max_rate_limit_wait=60)
        stats = emu.stats
    assert report.progress.graphql_fallback is None and "reviews" not in stats["by_endpoint"]
    assert report.progress.failed and all("500" in item.reason for item in report.progress.failed)


# -- what counts as a refusal (sources/github/graphql.py) ----------------------------------------

URL = "https://ghes.example/api/graphql"


@pytest.mark.parametrize("error, refused", [
    (NotFoundError("404 from POST", status=404, url=URL), True),
    (NotFoundError("410 from POST", status=410, url=URL), True),
    (GitHubClientError("POST answered 404 with text/html", status=404, url=URL), True),  # a proxy's page
    (AuthenticationError("401 from POST", status=401, url=URL), True),
    (AuthenticationError("403 from POST: Resource not accessible by integration", status=403, url=URL), True),
    (GitHubClientError("POST: GraphQL error None: Resource not accessible by personal access token", url=URL), True),
    (GitHubServerError("POST failed after 6 retries; last cause: 500", url=URL), False),
    (GraphQLTooHeavy("POST: 502 Bad Gateway", url=URL), False),
    (RateLimitExhausted(T0 + 600, "GitHub rate limit: token-1 is paused", url=URL), False),
    (GitHubClientError("422 from POST: Unprocessable", status=422, url=URL), False),
])
def test_what_counts_as_a_graphql_refusal(error: Exception, refused: bool) -> None:
    result = refusal(error)  # type: ignore[arg-type]
    assert (result is not None) is refused
    if result is not None:
        assert result.error is error and result.url == URL and str(error) in str(result)


@pytest.mark.parametrize("gh_type, message, refused", [
    ("FORBIDDEN", "Forbidden", True),
    ("INSUFFICIENT_SCOPES", "Your token has not been granted the required scopes to execute this query.", True),
    (None, "Resource not accessible by integration", True),
    ("NOT_FOUND", "Could not resolve to a node with the global id of 'PR_1'", False),
    ("RATE_LIMITED", "API rate limit exceeded for user ID 1.", False),
    ("RESOURCE_LIMITS_EXCEEDED", "Resource limits for this query exceeded.", False),
    ("INTERNAL", "Something went wrong", False),
])
def test_graphql_errors_that_refuse_the_credential(gh_type: str | None, message: str, refused: bool,
                                                   fake: FakeClock) -> None:
    """A 200 whose errors refuse the token (FORBIDDEN, INSUFFICIENT_SCOPES) is a refusal; a node
    not found, a rate limit, a heavy query or another error is not."""
    answers = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal answers
        answers += 1
        ids = json.loads(request.content)["variables"]["ids"]
        if gh_type == "RATE_LIMITED" and answers > 1:  # the gate waited (virtual clock): served now
            return httpx.Response(200, json={"data": {"nodes": [{"id": i, "reviews": {"nodes": []},
                                                                  "files": {"nodes": []}} for i in ids]}})
        data = {"nodes": [None] * len(ids)} if gh_type == "NOT_FOUND" else None
        error = {"type": gh_type, "path": ["nodes", 0], "message": message}
        return httpx.Response(200, json={"data": data, "errors": [error]})

    with GitHubClient(URL.removesuffix("/graphql") + "/v3", TokenPool([TOKEN]), clock=fake,
                      transport=httpx.MockTransport(handler)) as client:
        [(_, result)] = list(GraphQLChildren(client, URL).batches(["PR_1"]))
    assert isinstance(result, GraphQLRefused) is refused, result
    if refused:
        assert message in str(result) and "the credential is refused for GraphQL" in str(result)


# -- the emulator's switches --------------------------------------------------------------------


def test_emulator_without_graphql_and_with_a_refused_token(dataset: Dataset) -> None:
    query = {"query": "{ rateLimit { cost } }"}
    with GitHubEmulator(dataset, graphql=False) as emu, httpx.Client() as http:
        answer = http.post(emu.graphql_url, json=query, headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 404 and answer.json()["message"] == "Not Found"
        assert http.get(f"{emu.url}/orgs/{ORG}/repos", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        http.post(f"{emu.url}/_emulator/graphql", json={"enabled": True, "refused": ["other"]}).raise_for_status()
        assert http.post(emu.graphql_url, json=query, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        refused = http.post(emu.graphql_url, json=query, headers={"Authorization": "Bearer other"})
        assert refused.status_code == 403 and "Resource not accessible" in refused.json()["message"]
        assert refused.headers["x-ratelimit-remaining"] != "0"  # a refusal, not a rate limit
        assert emu.stats["by_status"] == {404: 1, 200: 2, 403: 1}


def test_request_review_of_an_unknown_login_or_team_is_a_clear_error(dataset: Dataset) -> None:
    repo = dataset.repositories(ORG)[0]["name"]
    number = dataset.pull_requests(ORG, repo)[0]["number"]
    before = dataset.pull_request(ORG, repo, number)["updated_at"]
    with pytest.raises(KeyError, match="unknown user 'nobody'"):
        dataset.request_review(ORG, repo, number, login="nobody")
    with pytest.raises(KeyError, match="unknown team 'nobody'"):
        dataset.request_review(ORG, repo, number, team="nobody")
    assert dataset.pull_request(ORG, repo, number)["updated_at"] == before  # nothing changed
