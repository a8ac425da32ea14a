"""The GraphQL transport of reviews and files (sources/github/graphql.py) against a fake GitHub
GraphQL endpoint (httpx.MockTransport) that answers the transport's queries in GitHub's
documented shapes: `nodes(ids:)`, connections with `pageInfo`, `rateLimit`, NOT_FOUND partial
results, RATE_LIMITED, 502 on a heavy query. Virtual clock: no real waiting."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from fakes import FakeClock
from sources.github.auth import TokenPool
from sources.github.client import GitHubClient
from sources.github.errors import GitHubClientError, GitHubServerError, RateLimitExhausted
from sources.github.graphql import (
    GITHUB_COM,
    BatchSize,
    GraphQLChildren,
    GraphQLRefused,
    event_as_rest,
    file_as_rest,
    first_query,
    graphql_url,
    review_as_rest,
)
from sources.github.schema import FILES_CAP, event_row, file_row, review_row

API = "https://api.github.com"
GRAPHQL = f"{API}/graphql"
T0 = 1_700_000_000.0
TOKEN = "ghp_SECRETsecretSECRET123"
PR = {"id": 7, "number": 3, "updated_at": datetime(2024, 5, 1, tzinfo=timezone.utc)}


def gql_review(n: int) -> dict[str, Any]:
    return {
        "id": f"PRR_{n}", "fullDatabaseId": str(1000 + n),
        "author": {"__typename": "User", "login": f"user{n}", "databaseId": 50 + n},
        "authorAssociation": "MEMBER", "state": "APPROVED", "body": "", "commit": {"oid": "abc"},
        "url": f"https://github.com/o/r/pull/3#pullrequestreview-{1000 + n}", "submittedAt": "2024-05-01T10:00:00Z",
    }


def gql_file(n: int) -> dict[str, Any]:
    return {"path": f"src/f{n}.py", "additions": n, "deletions": 1, "changeType": "MODIFIED"}


def gql_event(n: int) -> dict[str, Any]:
    return {"__typename": "ReviewRequestedEvent", "id": f"RRE_{n}", "createdAt": "2024-05-01T09:00:00Z",
            "actor": {"__typename": "User", "login": "author", "databaseId": 5},
            "requestedReviewer": {"__typename": "User", "login": f"user{n}", "databaseId": 50 + n}}


@dataclass
class FakeGraphQL:
    """Pull requests by node id, each with `reviews` and `files` lists; answers the transport's
    first query and its aliased follow-ups, 100 a page."""

    prs: dict[str, dict[str, list[dict]]]
    inline: dict[str, int] = field(default_factory=dict)  # review node id -> its inline comments (else 0)
    heavy_above: int | None = None  # a first query with more ids than this answers 502
    rate_limited: int = 0  # answer this many queries RATE_LIMITED (budget spent) first
    queries: list[dict[str, Any]] = field(default_factory=list)
    remaining: int = 5000
    reset_at: float = T0 + 600  # the GraphQL budget's reset, as announced in every answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST" and request.url.path == "/graphql"
        body = json.loads(request.content)
        self.queries.append(body)
        reset = {"x-ratelimit-reset": str(int(self.reset_at)), "x-ratelimit-resource": "graphql"}
        if self.rate_limited:
            self.rate_limited -= 1
            error = {"type": "RATE_LIMITED", "message": "API rate limit already exceeded for user ID 1."}
            return httpx.Response(200, json={"errors": [error]}, headers={"x-ratelimit-remaining": "0", **reset})
        variables = body["variables"]
        if "... on PullRequestReview {" in body["query"]:
            data, errors = self._inline_comments(variables["ids"])
        elif "ids" in variables:
            if self.heavy_above is not None and len(variables["ids"]) > self.heavy_above:
                return httpx.Response(502, text="<html>Bad gateway</html>", headers={"content-type": "text/html"})
            data, errors = self._first(variables["ids"])
        else:
            data, errors = self._follow(body["query"], variables)
        self.remaining -= 1
        data["rateLimit"] = {"cost": 1, "remaining": self.remaining, "resetAt": "2023-11-14T22:23:20Z"}
        answer: dict[str, Any] = {"data": data}
        if errors:
            answer["errors"] = errors
        return httpx.Response(200, json=answer, headers={"x-ratelimit-remaining": str(self.remaining), **reset})

    @staticmethod
    def _page(items: list[dict], after: str | None) -> dict[str, Any]:
        start = int(after.split(":")[1]) if after else 0
        end = start + 100
        return {"pageInfo": {"hasNextPage": end < len(items), "endCursor": f"cursor:{end}"}, "nodes": items[start:end]}

    def _first(self, ids: list[str]) -> tuple[dict[str, Any], list[dict]]:
        nodes: list[Any] = []
        errors = []
        for index, node_id in enumerate(ids):
            pr = self.prs.get(node_id)
            if pr is None:
                nodes.append(None)
                errors.append({"type": "NOT_FOUND", "path": ["nodes", index],
                               "message": f"Could not resolve to a node with the global id of '{node_id}'"})
            else:
                nodes.append({"id": node_id, "reviews": self._page(pr["reviews"], None),
                              "files": self._page(pr["files"], None), "events": self._page(pr.get("events", []), None)})
        return {"nodes": nodes}, errors

    def _inline_comments(self, ids: list[str]) -> tuple[dict[str, Any], list[dict]]:
        reviews = {r["id"] for pr in self.prs.values() for r in pr["reviews"]}
        nodes: list[Any] = [{"id": i, "comments": {"totalCount": self.inline.get(i, 0)}} if i in reviews else None
                            for i in ids]
        errors = [{"type": "NOT_FOUND", "path": ["nodes", index], "message": f"Could not resolve '{i}'"}
                  for index, i in enumerate(ids) if i not in reviews]
        return {"nodes": nodes}, errors

    def _follow(self, query: str, variables: dict[str, Any]) -> tuple[dict[str, Any], list[dict]]:
        data: dict[str, Any] = {}
        for alias, kind in re.findall(r"(c\d+): node\(id: \$id\d+\) \{ \.\.\. on PullRequest \{ (\w+): ", query):
            index = alias[1:]
            pr = self.prs[variables[f"id{index}"]]
            data[alias] = {kind: self._page(pr[kind], variables[f"after{index}"])}
        return data, []


def fetcher(fake: FakeGraphQL, clock: FakeClock, batch: BatchSize | None = None, **kwargs: Any) -> tuple[GitHubClient, GraphQLChildren, list[int]]:
    client = GitHubClient(API, TokenPool([TOKEN]), clock=clock, transport=httpx.MockTransport(fake),
                          backoff_base=0.01, **kwargs)
    points: list[int] = []
    return client, GraphQLChildren(client, GRAPHQL, batch, on_points=points.append), points


def pr_data(reviews: int, files: int, events: int = 0) -> dict[str, list[dict]]:
    return {"reviews": [gql_review(n) for n in range(reviews)], "files": [gql_file(n) for n in range(files)],
            "events": [gql_event(n) for n in range(events)]}


# -- mapping -------------------------------------------------------------------------------------


def test_graphql_objects_make_the_rows_rest_makes() -> None:
    rest_review = {
        "id": 1000, "node_id": "PRR_0", "user": {"login": "user0", "id": 50, "type": "User"},
        "body": "", "state": "APPROVED", "submitted_at": "2024-05-01T10:00:00Z", "commit_id": "abc",
        "author_association": "MEMBER", "html_url": "https://github.com/o/r/pull/3#pullrequestreview-1000",
    }
    assert review_row("o", "r", PR, review_as_rest(gql_review(0))) == review_row("o", "r", PR, rest_review)
    bot = review_as_rest({**gql_review(0), "author": {"__typename": "Bot", "login": "dependabot", "databaseId": 9}})
    assert bot["user"] == {"login": "dependabot[bot]", "id": 9, "type": "Bot"}
    ghost = review_row("o", "r", PR, review_as_rest({**gql_review(0), "author": None, "commit": None}))
    assert (ghost["author_login"], ghost["author_id"], ghost["commit_id"]) == (None, None, None)

    rest_file = {"filename": "src/f4.py", "status": "modified", "additions": 4, "deletions": 1, "changes": 5,
                 "sha": "f" * 40, "blob_url": "https://github.com/o/r/blob/x/src/f4.py"}
    got = file_row("o", "r", PR, file_as_rest(gql_file(4)), truncated=False)
    want = file_row("o", "r", PR, rest_file, truncated=False)
    assert got == {**want, "sha": None, "blob_url": None}  # what GraphQL cannot give is null
    statuses = {t: file_as_rest({**gql_file(1), "changeType": t})["status"] for t in ("ADDED", "DELETED", "RENAMED")}
    assert statuses == {"ADDED": "added", "DELETED": "removed", "RENAMED": "renamed"}


def test_graphql_timeline_events_make_the_rows_rest_makes_but_the_rest_id() -> None:
    """Each landed kind, as REST's timeline serves it and as GraphQL's timelineItems do: the same
    row, keyed by node_id, but for REST's numeric `id`, which GraphQL does not have."""
    ada = {"login": "ada", "id": 1, "type": "User"}
    gql_ada = {"__typename": "User", "login": "ada", "databaseId": 1}
    at = {"created_at": "2024-05-01T09:00:00Z"}
    cases = [  # (REST timeline item, GraphQL timeline item)
        ({"event": "review_requested", "requested_reviewer": {"login": "bob", "id": 2, "type": "User"}},
         {"__typename": "ReviewRequestedEvent", "requestedReviewer": {"__typename": "User", "login": "bob", "databaseId": 2}}),
        ({"event": "review_requested", "requested_team": {"slug": "backend", "id": 9}},
         {"__typename": "ReviewRequestedEvent", "requestedReviewer": {"__typename": "Team", "slug": "backend"}}),
        ({"event": "review_request_removed", "requested_reviewer": {"login": "lint[bot]", "id": 3, "type": "Bot"}},
         {"__typename": "ReviewRequestRemovedEvent",
          "requestedReviewer": {"__typename": "Bot", "login": "lint", "databaseId": 3}}),
        ({"event": "ready_for_review"}, {"__typename": "ReadyForReviewEvent"}),
        ({"event": "convert_to_draft"}, {"__typename": "ConvertToDraftEvent"}),
        ({"event": "closed", "commit_id": None}, {"__typename": "ClosedEvent", "closer": None}),
        ({"event": "closed", "commit_id": "c0ffee"}, {"__typename": "ClosedEvent", "closer": {"oid": "c0ffee"}}),
        ({"event": "reopened"}, {"__typename": "ReopenedEvent"}),
        ({"event": "merged", "commit_id": "abc123"}, {"__typename": "MergedEvent", "commit": {"oid": "abc123"}}),
        ({"event": "commented", "user": ada}, {"__typename": "IssueComment", "author": gql_ada, "actor": None}),
    ]
    for position, (rest, gql) in enumerate(cases):
        rest_item = {"id": 500 + position, "node_id": f"E_{position}", "actor": ada, **at, **rest}
        gql_item = {"id": f"E_{position}", "createdAt": at["created_at"], "actor": gql_ada, **gql}
        want = event_row("o", "r", PR, rest_item, position)
        got = event_row("o", "r", PR, event_as_rest(gql_item), position)
        assert got == {**want, "id": None}, rest["event"]
    # A commit: the commit's node id (not the timeline item's), sha, author and committer dates.
    rest_commit = {"event": "committed", "sha": "c0ffee", "node_id": "C_1", "author": {"name": "A", "date": "2024-05-01T08:00:00Z"},
                   "committer": {"name": "A", "date": "2024-05-02T08:00:00Z"}}
    gql_commit = {"__typename": "PullRequestCommit", "id": "PURC_1", "gitCommit": {
        "id": "C_1", "oid": "c0ffee", "authoredDate": "2024-05-01T08:00:00Z", "committedDate": "2024-05-02T08:00:00Z"}}
    assert event_row("o", "r", PR, event_as_rest(gql_commit), 3) == event_row("o", "r", PR, rest_commit, 3)
    # A Team's fields need the read:org scope, and GitHub refuses a whole query asking for one
    # the token lacks: the query names no Team field, so a `repo` token can use GraphQL; with
    # read:org known for every credential, it asks for the slug.
    assert "on Team" not in first_query() and "Team {" not in first_query(("events",))
    assert "... on Team { slug }" in first_query(("events",), replace(GITHUB_COM, team_slug=True))
    # Other timeline types are named, for the caller to drop as it drops REST's other kinds.
    assert event_as_rest({"__typename": "LabeledEvent", "id": "LE_1"}) == {"event": "LabeledEvent"}
    # An organisation's or a deleted account's action.
    org = event_as_rest({"__typename": "ClosedEvent", "id": "E", "createdAt": at["created_at"],
                         "actor": {"__typename": "Organization", "login": "acme", "databaseId": 8}})
    assert org["actor"] == {"login": "acme", "id": 8, "type": "Organization"}
    assert event_as_rest({"__typename": "ReopenedEvent", "id": "E", "actor": None})["actor"] is None


def test_graphql_url_of_each_kind_of_server() -> None:
    assert graphql_url("https://api.github.com") == "https://api.github.com/graphql"
    assert graphql_url("https://ghe.example.com/api/v3/") == "https://ghe.example.com/api/graphql"
    assert graphql_url("http://127.0.0.1:8123") == "http://127.0.0.1:8123/graphql"


# -- batches and follow-up pages -----------------------------------------------------------------


def test_follow_up_pages_are_batched_across_pull_requests() -> None:
    fake = FakeGraphQL({"A": pr_data(250, 130), "B": pr_data(120, 3, 101), "C": pr_data(0, 0, 5)})
    clock = FakeClock(T0)
    client, children, points = fetcher(fake, clock)
    with client:
        [(ids, result)] = list(children.batches(["A", "B", "C"]))
    assert ids == ["A", "B", "C"] and not isinstance(result, Exception)
    got = {node: {kind: [i.get("id") or i.get("filename") for i in items] for kind, items in c.items.items()}
           for node, c in result.children.items()}
    for node, data in fake.prs.items():
        assert got[node]["reviews"] == [1000 + n for n in range(len(data["reviews"]))]
        assert got[node]["files"] == [f"src/f{n}.py" for n in range(len(data["files"]))]
        assert [e["node_id"] for e in result.children[node].items["events"]] == [e["id"] for e in data["events"]]
    # One first query; follow-ups: A's reviews page 2, A's files page 2, B's reviews page 2 and
    # B's events page 2 together, then A's reviews page 3 alone.
    pages = [q for q in fake.queries if "on PullRequestReview {" not in q["query"]]
    follow_ups = [sorted(k for k in q["variables"] if k.startswith("id")) for q in pages[1:]]
    assert follow_ups == [["id0", "id1", "id2", "id3"], ["id0"]]
    assert "timelineItems(itemTypes: [REVIEW_REQUESTED_EVENT" in pages[1]["query"]
    # Then the inline comment counts of the 250 reviews, once all are in: 3 queries of equal size.
    counts = [q["variables"]["ids"] for q in fake.queries if "on PullRequestReview {" in q["query"]]
    assert fake.queries[-len(counts):] == [q for q in fake.queries if "on PullRequestReview {" in q["query"]]
    # (A's and B's first 120 reviews share their fake ids: each id is asked once.)
    assert sorted(map(len, counts)) == [83, 83, 84] and sorted(sum(counts, [])) == sorted(
        {r["id"] for pr in fake.prs.values() for r in pr["reviews"]})
    assert all(r["inline_comments"] == 0 for c in result.children.values() for r in c.items["reviews"])
    assert points == [1] * 6 and result.children["A"].pages == 4


def test_files_stop_at_githubs_cap_as_in_rest() -> None:
    fake = FakeGraphQL({"A": pr_data(0, FILES_CAP + 150)})
    client, children, _ = fetcher(fake, FakeClock(T0))
    with client:
        [(_, result)] = list(children.batches(["A"]))
    assert len(result.children["A"].items["files"]) == FILES_CAP
    assert len(fake.queries) == FILES_CAP // 100  # page 31 is never asked for


def test_a_heavy_query_halves_the_batch_and_everything_lands() -> None:
    prs = {f"N{i}": pr_data(2, 2) for i in range(40)}
    fake = FakeGraphQL(prs, heavy_above=10)
    batch = BatchSize(size=25)
    client, children, _ = fetcher(fake, FakeClock(T0), batch)
    with client:
        results = list(children.batches(list(prs)))
    fetched = {node for _, r in results for node in r.children}
    assert fetched == set(prs) and not [r for _, r in results if isinstance(r, Exception)]
    sizes = [len(q["variables"]["ids"]) for q in fake.queries if "on PullRequestReview {" not in q["query"]]
    # 40 at 25 a query is 2 equal queries of 20: a 502 sends that one again in halves of 10 (one
    # 502 may be a blip); the next query (15 of the 30 left) is heavy too, so the batch halves to
    # 10 (half the larger of the two heavy queries), that query's first 7 go, then the 23 left in
    # 3 equal queries; the batch grew to 12 after 3 successes.
    assert sizes == [20, 10, 15, 7, 8, 8, 7] and batch.current() == 12
    assert client.stats.retries == 0  # a 502 on GraphQL is not re-sent as it was


def test_one_pull_request_too_heavy_fails_its_batch_only() -> None:
    fake = FakeGraphQL({"A": pr_data(1, 1)}, heavy_above=0)
    client, children, _ = fetcher(fake, FakeClock(T0), BatchSize(size=4))
    with client:
        [(ids, error)] = list(children.batches(["A"]))
    assert ids == ["A"] and isinstance(error, GitHubServerError)


def test_batch_halves_at_the_second_heavy_answer_and_grows_back_gradually() -> None:
    batch = BatchSize(size=8, ceiling=50, grow_after=3)
    assert batch.too_heavy(8) == 4 and batch.size == 8  # one 502 may be a blip: that query alone
    batch.succeeded()
    assert batch.too_heavy(8) == 4 and batch.size == 4  # the second since the size changed
    for _ in range(3):
        batch.succeeded()
    assert batch.size == 5
    assert batch.too_heavy(1) == 0


def test_a_node_github_no_longer_has_is_reported_gone() -> None:
    fake = FakeGraphQL({"A": pr_data(3, 1)})
    client, children, _ = fetcher(fake, FakeClock(T0))
    with client:
        [(_, result)] = list(children.batches(["GONE", "A"]))
    assert set(result.children) == {"A"} and "Could not resolve" in result.gone["GONE"]


@pytest.mark.parametrize("gh_type", ["FORBIDDEN", "INTERNAL"])
def test_other_graphql_errors_fail_the_batch(gh_type: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"errors": [{"type": gh_type, "message": "Resource not accessible"
                                                     if gh_type == "FORBIDDEN" else "Something went wrong"}]})

    client = GitHubClient(API, TokenPool([TOKEN]), clock=FakeClock(T0), transport=httpx.MockTransport(answer))
    with client:
        [(_, error)] = list(GraphQLChildren(client, GRAPHQL).batches(["A"]))
    # FORBIDDEN refuses the credential for GraphQL: a GraphQLRefused (`auto` falls back to REST on
    # it, tests/test_graphql_auto.py) around the same GitHubClientError.
    if gh_type == "FORBIDDEN":
        assert isinstance(error, GraphQLRefused)
        error = error.error
    assert isinstance(error, GitHubClientError) and gh_type in str(error)


# -- rate limits -----------------------------------------------------------------------------------


def test_rate_limited_waits_for_the_graphql_reset_and_leaves_rest_alone() -> None:
    fake = FakeGraphQL({"A": pr_data(1, 1)}, rate_limited=1)
    clock = FakeClock(T0)
    client, children, _ = fetcher(fake, clock)
    with client:
        [(_, result)] = list(children.batches(["A"]))
        token = client.auth.choose(clock.now())
        assert token.gate.is_open(clock.now())  # REST's budget is another one
    assert set(result.children) == {"A"}
    # The refused query, the query again after the reset, its reviews' inline comment count.
    assert clock.now() >= T0 + 600 and len(fake.queries) == 3


def test_rate_limited_past_max_wait_stops() -> None:
    fake = FakeGraphQL({"A": pr_data(1, 1)}, rate_limited=1)
    clock = FakeClock(T0)
    client, children, _ = fetcher(fake, clock, max_rate_limit_wait=60)
    with client, pytest.raises(RateLimitExhausted):
        list(children.batches(["A"]))
    assert clock.now() < T0 + 60


def test_a_secondary_limit_on_graphql_pauses_rest_too() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"message": "You have exceeded a secondary rate limit."},
                              headers={"retry-after": "120"})

    clock = FakeClock(T0)
    client = GitHubClient(API, TokenPool([TOKEN]), clock=clock, transport=httpx.MockTransport(answer),
                          max_rate_limit_wait=60)
    with client, pytest.raises(RateLimitExhausted):
        client.post_graphql(GRAPHQL, "query { viewer { login } }", {})
    token = client.auth.choose(clock.now())
    assert not token.gate.is_open(clock.now()) and not token.budget(True).gate.is_open(clock.now())


def test_queries_are_not_counted_as_rest_requests_against_the_limit() -> None:
    fake = FakeGraphQL({"A": pr_data(1, 1)})
    client, children, points = fetcher(fake, FakeClock(T0))
    with client:
        list(children.batches(["A"]))
    # The first query and its reviews' inline comment count.
    assert client.stats.requests == 2 and client.stats.cost == 0 and points == [1, 1]


def test_a_refused_team_slug_query_is_asked_again_without_team_fields(caplog: pytest.LogCaptureFixture) -> None:
    """The scopes said read:org, yet GitHub refuses the query naming a Team field (an organisation
    whose SSO the token is not authorised for): asked again without it, once for the run; the
    requested team lands without its slug, nothing falls back to REST."""
    asked: list[bool] = []

    def answer(request: httpx.Request) -> httpx.Response:
        query = json.loads(request.content)["query"]
        asked.append("on Team" in query)
        if "on Team" in query:
            return httpx.Response(200, json={"errors": [{"type": "INSUFFICIENT_SCOPES", "message":
                                                         "Your token has not been granted the required scopes"}]})
        team = {"__typename": "ReviewRequestedEvent", "id": "E_1", "createdAt": "2024-05-01T09:00:00Z", "actor": None,
                "requestedReviewer": {"__typename": "Team"}}
        node = {"id": "A", "events": {"pageInfo": {"hasNextPage": False, "endCursor": None}, "nodes": [team]}}
        return httpx.Response(200, json={"data": {"rateLimit": {"cost": 1}, "nodes": [node]}})

    client = GitHubClient(API, TokenPool([TOKEN]), clock=FakeClock(T0), transport=httpx.MockTransport(answer))
    caplog.set_level(logging.INFO, logger="sources.github.graphql")
    with client:
        children = GraphQLChildren(client, GRAPHQL, team_slugs=True)
        [(_, first)] = list(children.batches(["A"], ("events",)))
        [(_, second)] = list(children.batches(["A"], ("events",)))
    assert asked == [True, False, False]
    for result in (first, second):
        [event] = result.children["A"].items["events"]
        assert event["requested_team"] == {"slug": None}
    assert sum("refused the query asking for team slugs" in r.getMessage() for r in caplog.records) == 1
