"""GraphQL mode end to end: the REST emulator lists repositories and pull requests; reviews,
files and timeline events come over GraphQL; landed and merged into DuckDB, compared table by
table with a REST-mode warehouse of the same data.

The GraphQL side is `graphql_server` below: the dataset's reviews, files and timeline in GitHub's
GraphQL shapes, answered by tests/test_graphql.py's fake endpoint, reached through the client's
transport.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from emulator import Dataset, GitHubEmulator
from fakes import FakeClock
from destinations.merge import merge_landed_loads
from destinations.warehouse import open_warehouse
from flows.extract import LandingReport, land
from settings import Settings, pipeline_name
from sources.github.auth import TokenPool
from sources.github.client import GitHubClient
from landing_runs import (  # noqa: F401 - dataset, emu and fake are shared fixtures
    ORG,
    T0,
    TOKEN,
    assert_landed_exactly_once,
    dataset,
    emu,
    fake,
)
from test_graphql import FakeGraphQL

# Columns GraphQL cannot fill (docs/rest-and-graphql.md, "What each mode lands"); fetched_at is the time of the fetch.
NOT_COMPARED = {"pull_request_files": {"sha", "blob_url", "previous_filename"},
                "pull_request_events": {"id", "requested_team_slug"},
                "pull_request_child_fetches": {"fetched_at"}}
TABLES = ("pull_requests", "pull_request_reviews", "pull_request_files", "pull_request_events",
          "pull_request_child_fetches")
_CHANGE_TYPE = {"added": "ADDED", "removed": "DELETED", "modified": "MODIFIED", "renamed": "RENAMED",
                "copied": "COPIED", "changed": "CHANGED"}


def as_graphql_review(review: dict[str, Any]) -> dict[str, Any]:
    user = review["user"]
    return {
        "id": review["node_id"], "fullDatabaseId": str(review["id"]),
        "author": None if user is None else {"__typename": user["type"], "login": user["login"], "databaseId": user["id"]},
        "authorAssociation": review["author_association"], "state": review["state"], "body": review["body"],
        "commit": {"oid": review["commit_id"]} if review.get("commit_id") else None,
        "url": review["html_url"], "submittedAt": review["submitted_at"],
    }


def as_graphql_file(file: dict[str, Any]) -> dict[str, Any]:
    return {"path": file["filename"], "additions": file["additions"], "deletions": file["deletions"],
            "changeType": _CHANGE_TYPE[file["status"]]}


_EVENT_TYPES = {"review_requested": "ReviewRequestedEvent", "review_request_removed": "ReviewRequestRemovedEvent",
                "ready_for_review": "ReadyForReviewEvent", "convert_to_draft": "ConvertToDraftEvent",
                "closed": "ClosedEvent", "reopened": "ReopenedEvent", "merged": "MergedEvent",
                "labeled": "LabeledEvent", "committed": "PullRequestCommit", "commented": "IssueComment"}


def as_graphql_actor(user: dict[str, Any] | None) -> dict[str, Any] | None:
    if user is None:
        return None
    login = user["login"].removesuffix("[bot]") if user["type"] == "Bot" else user["login"]
    return {"__typename": user["type"], "login": login, "databaseId": user["id"]}


def as_graphql_event(event: dict[str, Any]) -> dict[str, Any]:
    """A REST timeline event as GitHub's timelineItems serve it (a label too: the client drops it)."""
    if event["event"] == "committed":
        return {"__typename": "PullRequestCommit", "id": "PURC_" + event["node_id"],
                "gitCommit": {"id": event["node_id"], "oid": event["sha"], "authoredDate": event["author"]["date"],
                              "committedDate": event["committer"]["date"]}}
    if event["event"] == "commented":
        return {"__typename": "IssueComment", "id": event["node_id"], "createdAt": event["created_at"],
                "author": as_graphql_actor(event.get("user"))}
    reviewer = as_graphql_actor(event.get("requested_reviewer"))
    if event.get("requested_team"):
        reviewer = {"__typename": "Team", "slug": event["requested_team"]["slug"]}
    commit = {"oid": event["commit_id"]} if event.get("commit_id") else None
    return {"__typename": _EVENT_TYPES[event["event"]], "id": event["node_id"], "createdAt": event["created_at"],
            "actor": as_graphql_actor(event.get("actor")), "requestedReviewer": reviewer,
            "commit": commit, "closer": commit}


def graphql_server(dataset: Dataset) -> FakeGraphQL:
    prs: dict[str, dict[str, list[dict]]] = {}
    for repo in dataset.repositories(ORG):
        for pr in dataset.pull_requests(ORG, repo["name"]):
            number = pr["number"]
            prs[pr["node_id"]] = {
                "reviews": [as_graphql_review(r) for r in dataset.reviews(ORG, repo["name"], number)],
                "files": [as_graphql_file(f) for f in dataset.served_files(ORG, repo["name"], number)],
                "events": [as_graphql_event(e) for e in dataset.timeline(ORG, repo["name"], number)
                           if e.get("event") in _EVENT_TYPES],
            }
    reviews_by_id = {r["id"]: r["node_id"] for repo in dataset.repositories(ORG)
                     for pr in dataset.pull_requests(ORG, repo["name"])
                     for r in dataset.reviews(ORG, repo["name"], pr["number"])}
    counts: dict[str, int] = {}
    for repo in dataset.repositories(ORG):
        for pr in dataset.pull_requests(ORG, repo["name"]):
            for comment in dataset.review_comments(ORG, repo["name"], pr["number"]):
                node_id = reviews_by_id[comment["pull_request_review_id"]]
                counts[node_id] = counts.get(node_id, 0) + 1
    return FakeGraphQL(prs, counts)


class Routed(httpx.BaseTransport):
    """POST /graphql to the fake GraphQL endpoint, everything else to the REST emulator."""

    def __init__(self, graphql: FakeGraphQL) -> None:
        self.graphql = httpx.MockTransport(graphql)
        self.rest = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        target = self.graphql if request.url.path.endswith("/graphql") else self.rest
        return target.handle_request(request)

    def close(self) -> None:
        self.rest.close()


def sync(emu: GitHubEmulator, fake: FakeClock, data_dir: Path, mode: str, server: FakeGraphQL | None = None,
         **client_options: Any) -> LandingReport:
    settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=data_dir, github_api_mode=mode)
    transport = Routed(server) if server is not None else None
    client_options.setdefault("max_concurrency", 4)
    with GitHubClient(emu.url, TokenPool([TOKEN]), clock=fake, transport=transport, **client_options) as client:
        report = land(settings, ORG, client)
    with open_warehouse(settings.warehouse_config) as warehouse:
        merge_landed_loads(warehouse, settings.landing, ORG, pipeline_name(ORG))
    return report


def table(data_dir: Path, name: str) -> list[dict[str, Any]]:
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.sql(f"SELECT * FROM github.{name} ORDER BY row_key").to_arrow_table().to_pylist()
    finally:
        con.close()
    return [{k: v for k, v in row.items() if k not in NOT_COMPARED.get(name, set())} for row in rows]


def test_graphql_warehouse_equals_rest_warehouse(emu: GitHubEmulator, fake: FakeClock, dataset: Dataset,
                                                 tmp_path: Path) -> None:
    rest = sync(emu, fake, tmp_path / "rest", "rest")
    emu.reset_stats()
    server = graphql_server(dataset)
    graphql = sync(emu, fake, tmp_path / "graphql", "graphql", server)
    for name in TABLES:
        got, want = table(tmp_path / "graphql", name), table(tmp_path / "rest", name)
        assert got == want, name
        assert want or name == "pull_request_events", f"{name}: nothing to compare"
    prs = len(table(tmp_path / "rest", "pull_requests"))
    assert graphql.progress.graphql_pull_requests == prs
    assert graphql.progress.graphql_points == len(server.queries)
    # REST: a request per review list and per file list; GraphQL: none of those.
    assert rest.requests.requests - graphql.requests.requests >= 2 * prs - len(server.queries)
    assert not graphql.progress.failed and not graphql.progress.stopped_early


def test_graphql_rerun_costs_no_points(emu: GitHubEmulator, fake: FakeClock, dataset: Dataset, tmp_path: Path) -> None:
    server = graphql_server(dataset)
    sync(emu, fake, tmp_path, "graphql", server)
    before = len(server.queries)
    again = sync(emu, fake, tmp_path, "graphql", server)
    assert len(server.queries) == before and again.progress.graphql_points == 0


def test_a_vanished_pull_request_is_skipped_as_in_rest(emu: GitHubEmulator, fake: FakeClock, dataset: Dataset,
                                                       tmp_path: Path) -> None:
    server = graphql_server(dataset)
    gone_id, gone = next(iter(server.prs.items()))
    del server.prs[gone_id]
    report = sync(emu, fake, tmp_path, "graphql", server)
    # Its reviews, files and events, as REST logs each list it finds gone.
    assert report.progress.pull_requests_skipped == [report.progress.pull_requests_skipped[0]] * 3
    fetched = {(r["pull_request_id"], r["kind"]) for r in table(tmp_path, "pull_request_child_fetches")}
    gone_pr = next(r for r in table(tmp_path, "pull_requests") if r["node_id"] == gone_id)
    assert not {kind for pr_id, kind in fetched if pr_id == gone_pr["id"]}
    assert len({pr_id for pr_id, _ in fetched}) == len(server.prs)  # every other one fetched
    assert not report.progress.failed


def test_rate_limited_past_max_wait_stops_and_the_next_run_resumes(
    emu: GitHubEmulator, fake: FakeClock, dataset: Dataset, tmp_path: Path
) -> None:
    server = graphql_server(dataset)
    server.rate_limited, server.reset_at = 1, fake.now() + 600
    first = sync(emu, fake, tmp_path, "graphql", server, max_rate_limit_wait=60)
    assert first.progress.stopped_early and "GraphQL" in first.progress.stopped_early
    assert not first.progress.failed  # stopped, not failing: on the retry list for the next run
    fake.advance(700)  # past the GraphQL reset
    second = sync(emu, fake, tmp_path, "graphql", server, max_rate_limit_wait=60)
    assert second.progress.stopped_early is None
    rest_dir = tmp_path / "rest"
    sync(emu, fake, rest_dir, "rest")
    for name in ("pull_request_reviews", "pull_request_files", "pull_request_events"):
        assert table(tmp_path, name) == table(rest_dir, name), name


def test_a_heavy_query_halves_the_batch_and_everything_lands(
    emu: GitHubEmulator, fake: FakeClock, dataset: Dataset, tmp_path: Path
) -> None:
    server = graphql_server(dataset)
    server.heavy_above = 3
    report = sync(emu, fake, tmp_path, "graphql", server)
    assert not report.progress.failed and report.progress.stopped_early is None
    rest_dir = tmp_path / "rest"
    sync(emu, fake, rest_dir, "rest")
    for name in ("pull_request_reviews", "pull_request_files", "pull_request_events"):
        assert table(tmp_path, name) == table(rest_dir, name), name
    assert any(len(q["variables"].get("ids", [])) > 3 for q in server.queries)  # some were refused


@pytest.mark.parametrize("mode", ["rest", "auto"])
def test_auto_is_the_default_and_needs_a_credential(mode: str, emu: GitHubEmulator, tmp_path: Path) -> None:
    from flows.extract import graphql_endpoint

    settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, **({"github_api_mode": mode} if mode != "auto" else {}))
    assert Settings(orgs=[ORG], data_dir=tmp_path).github_api_mode == "auto"
    with GitHubClient(emu.url, TokenPool([])) as anonymous, GitHubClient(emu.url, TokenPool([TOKEN])) as token:
        assert graphql_endpoint(settings, anonymous) is None
        assert graphql_endpoint(settings, token) == (None if mode == "rest" else f"{emu.url}/graphql")
