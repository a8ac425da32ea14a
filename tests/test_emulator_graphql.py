"""The emulator's `POST /graphql` serves GitHub's GraphQL API over the same data as its REST API,
with GitHub's resource limits, points budget, error shapes and faults. Every test talks HTTP to a
running emulator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from emulator import Dataset, Fault, GitHubEmulator
from emulator.data import TIMELINE_KEPT
from emulator.graphql import MAX_NODES
from test_emulator import walk

TOKEN = {"Authorization": "token t0ken"}
KEPT_TYPES = {"review_requested": "ReviewRequestedEvent", "review_request_removed": "ReviewRequestRemovedEvent",
              "ready_for_review": "ReadyForReviewEvent", "convert_to_draft": "ConvertToDraftEvent",
              "closed": "ClosedEvent", "reopened": "ReopenedEvent", "merged": "MergedEvent",
              "committed": "PullRequestCommit", "commented": "IssueComment"}
assert set(KEPT_TYPES) == TIMELINE_KEPT
ITEM_TYPES = "[REVIEW_REQUESTED_EVENT, REVIEW_REQUEST_REMOVED_EVENT, READY_FOR_REVIEW_EVENT, " \
             "CONVERT_TO_DRAFT_EVENT, CLOSED_EVENT, REOPENED_EVENT, MERGED_EVENT, PULL_REQUEST_COMMIT, ISSUE_COMMENT]"
CHANGE_TYPES = {"added": "ADDED", "removed": "DELETED", "modified": "MODIFIED", "renamed": "RENAMED"}

ACTOR = "login __typename ... on User { databaseId } ... on Bot { databaseId }"
REVIEW = f"id databaseId author {{ {ACTOR} }} authorAssociation state body commit {{ oid }} url submittedAt"
FILE = "path additions deletions changeType"
EVENT = f"""__typename
  ... on ReviewRequestedEvent {{ id actor {{ {ACTOR} }} createdAt
        requestedReviewer {{ __typename ... on User {{ login databaseId }} ... on Bot {{ login databaseId }}
                             ... on Team {{ slug databaseId }} }} }}
  ... on ReviewRequestRemovedEvent {{ id actor {{ {ACTOR} }} createdAt
        requestedReviewer {{ __typename ... on User {{ login databaseId }} ... on Team {{ slug databaseId }} }} }}
  ... on ReadyForReviewEvent {{ id actor {{ {ACTOR} }} createdAt }}
  ... on ConvertToDraftEvent {{ id actor {{ {ACTOR} }} createdAt }}
  ... on ClosedEvent {{ id actor {{ {ACTOR} }} createdAt }}
  ... on ReopenedEvent {{ id actor {{ {ACTOR} }} createdAt }}
  ... on MergedEvent {{ id actor {{ {ACTOR} }} createdAt commit {{ oid }} }}
  ... on PullRequestCommit {{ id gitCommit: commit {{ id oid authoredDate committedDate }} }}
  ... on IssueComment {{ id createdAt author {{ {ACTOR} }} }}"""
PAGE = "totalCount pageInfo { hasNextPage endCursor }"
CONNECTIONS = {
    "reviews": f"reviews(first: 100) {{ {PAGE} nodes {{ {REVIEW} }} }}",
    "files": f"files(first: 100) {{ {PAGE} nodes {{ {FILE} }} }}",
    "timelineItems": f"timelineItems(first: 100, itemTypes: {ITEM_TYPES}) {{ {PAGE} nodes {{ {EVENT} }} }}",
}
NODES = """query($ids: [ID!]!) {
  rateLimit { cost remaining used limit nodeCount resetAt }
  nodes(ids: $ids) { ... on PullRequest { id databaseId number updatedAt %s } }
}""" % " ".join(CONNECTIONS.values())


@pytest.fixture
def dataset() -> Dataset:
    # demo/api's first PRs are the edge cases: a deleted author, unicode files, 3,050 files,
    # 130 reviews (one by a bot), no reviews.
    return Dataset.generate({"demo": 2}, [60, 12], seed=11)


@pytest.fixture
def emu(dataset: Dataset) -> Iterator[GitHubEmulator]:
    with GitHubEmulator(dataset) as emulator:
        emulator.graphql.org_readers = {"t0ken"}  # TOKEN has read:org: these queries ask for Team fields
        yield emulator


@pytest.fixture
def gql(emu: GitHubEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, headers=TOKEN, timeout=30) as c:
        yield c


def post(client: httpx.Client, emu: GitHubEmulator, query: str, **variables: object) -> httpx.Response:
    return client.post(emu.graphql_url, json={"query": query, "variables": variables})


def page_on(client: httpx.Client, emu: GitHubEmulator, pr_id: str, name: str, conn: dict) -> list[dict]:
    """Every node of `conn` (one PR's connection, first page already fetched), following `after`."""
    nodes = list(conn["nodes"])
    field = CONNECTIONS[name].replace("first: 100", "first: 100, after: $after")
    query = f"query($id: ID!, $after: String) {{ node(id: $id) {{ ... on PullRequest {{ {field} }} }} }}"
    while conn["pageInfo"]["hasNextPage"]:
        r = post(client, emu, query, id=pr_id, after=conn["pageInfo"]["endCursor"])
        assert r.status_code == 200 and "errors" not in r.json()
        conn = r.json()["data"]["node"][name]
        nodes += conn["nodes"]
    return nodes


def same_actor(gql_actor: dict | None, rest_user: dict | None) -> None:
    if rest_user is None:
        assert gql_actor is None
        return
    assert gql_actor["__typename"] == rest_user["type"] and gql_actor["databaseId"] == rest_user["id"]
    # GitHub's GraphQL names a bot without REST's "[bot]" suffix.
    suffix = "[bot]" if rest_user["type"] == "Bot" else ""
    assert gql_actor["login"] + suffix == rest_user["login"]


def test_nodes_query_matches_the_rest_endpoints(gql: httpx.Client, emu: GitHubEmulator, dataset: Dataset) -> None:
    open_pr = next(p for p in dataset.pull_requests("demo", "api")[5:40] if p["state"] == "open")
    dataset.request_review("demo", "api", open_pr["number"], team="platform")
    pulls = sorted(walk(gql, "/repos/demo/api/pulls?state=all&per_page=100"), key=lambda p: p["number"])[:40]
    r = post(gql, emu, NODES, ids=[p["node_id"] for p in pulls])
    assert r.status_code == 200 and "errors" not in r.json()
    assert r.headers["x-ratelimit-resource"] == "graphql"
    data = r.json()["data"]
    assert len(data["nodes"]) == 40
    checked = {"reviews": 0, "files": 0, "events": 0, "bot": 0, "deleted": 0, "team": 0}
    for pull, node in zip(pulls, data["nodes"]):
        assert (node["id"], node["databaseId"], node["number"], node["updatedAt"]) == \
            (pull["node_id"], pull["id"], pull["number"], pull["updated_at"])
        base = f"/repos/demo/api/pulls/{pull['number']}"

        reviews = walk(gql, f"{base}/reviews?per_page=100")
        got = page_on(gql, emu, node["id"], "reviews", node["reviews"])
        assert node["reviews"]["totalCount"] == len(reviews) == len(got)
        for rest, g in zip(reviews, got):
            assert (g["id"], g["databaseId"], g["authorAssociation"], g["state"], g["body"], g["commit"]["oid"],
                    g["url"], g["submittedAt"]) == \
                (rest["node_id"], rest["id"], rest["author_association"], rest["state"], rest["body"],
                 rest["commit_id"], rest["html_url"], rest["submitted_at"])
            same_actor(g["author"], rest["user"])
            checked["bot"] += bool(rest["user"] and rest["user"]["type"] == "Bot")
            checked["deleted"] += rest["user"] is None
        checked["reviews"] += len(got)

        files = walk(gql, f"{base}/files?per_page=100")
        got = page_on(gql, emu, node["id"], "files", node["files"])
        assert node["files"]["totalCount"] == len(files) == len(got)
        assert [(g["path"], g["additions"], g["deletions"], g["changeType"]) for g in got] == \
            [(f["filename"], f["additions"], f["deletions"], CHANGE_TYPES[f["status"]]) for f in files]
        checked["files"] += len(got)

        events = [e for e in walk(gql, f"/repos/demo/api/issues/{pull['number']}/timeline?per_page=100")
                  if e["event"] in TIMELINE_KEPT]
        got = page_on(gql, emu, node["id"], "timelineItems", node["timelineItems"])
        assert node["timelineItems"]["totalCount"] == len(events) == len(got)
        for rest, g in zip(events, got):
            assert g["__typename"] == KEPT_TYPES[rest["event"]]
            if rest["event"] == "committed":  # the item is not the commit: the commit has REST's node id
                assert g["id"] != rest["node_id"]
                assert g["gitCommit"] == {"id": rest["node_id"], "oid": rest["sha"],
                                          "authoredDate": rest["author"]["date"],
                                          "committedDate": rest["committer"]["date"]}
                continue
            assert (g["id"], g["createdAt"]) == (rest["node_id"], rest["created_at"])
            same_actor(g.get("actor", g.get("author")), rest["actor"])
            if rest["event"] == "merged":
                assert g["commit"]["oid"] == rest["commit_id"]
            if "requested_reviewer" in rest:
                same_actor(g["requestedReviewer"], rest["requested_reviewer"])
            elif "requested_team" in rest:
                assert g["requestedReviewer"] == {"__typename": "Team", "slug": rest["requested_team"]["slug"],
                                                  "databaseId": rest["requested_team"]["id"]}
                checked["team"] += 1
        checked["events"] += len(got)
    # the comparison covered the cases that matter: a bot, a deleted account, a team request, the
    # 3,000 served files of the 3,050-file PR, the 130-review PR
    assert checked["bot"] and checked["deleted"] and checked["team"]
    assert checked["files"] > 3000 and checked["reviews"] > 130 and checked["events"] > 40


def test_paging_with_after_across_big_prs(gql: httpx.Client, emu: GitHubEmulator, dataset: Dataset) -> None:
    big_reviews = next(p for p in dataset.pull_requests("demo", "api")
                       if len(dataset.reviews("demo", "api", p["number"])) == 130)
    query = """query($id: ID!, $n: Int!, $after: String) { node(id: $id) { ... on PullRequest {
        reviews(first: $n, after: $after) { totalCount pageInfo { hasNextPage hasPreviousPage endCursor }
                                           nodes { databaseId } } } } }"""
    ids, after, pages = [], None, 0
    while True:
        r = post(gql, emu, query, id=big_reviews["node_id"], n=50, after=after).json()["data"]["node"]["reviews"]
        pages += 1
        assert r["totalCount"] == 130 and r["pageInfo"]["hasPreviousPage"] == (after is not None)
        ids += [n["databaseId"] for n in r["nodes"]]
        if not r["pageInfo"]["hasNextPage"]:
            break
        after = r["pageInfo"]["endCursor"]
    assert pages == 3 and ids == [rv["id"] for rv in dataset.reviews("demo", "api", big_reviews["number"])]

    # A cursor names its item: a review added later lands after the old last page's end.
    local = Dataset.generate({"demo": 1}, 6, seed=11)
    with GitHubEmulator(local) as emu2, httpx.Client(headers=TOKEN) as c:
        node_id = local.pull_requests("demo", "api")[3]["node_id"]
        assert len(local.reviews("demo", "api", 4)) == 130
        last = post(c, emu2, query, id=node_id, n=100, after=None).json()["data"]["node"]["reviews"]
        end = post(c, emu2, query, id=node_id, n=100, after=last["pageInfo"]["endCursor"])
        end = end.json()["data"]["node"]["reviews"]
        assert end["nodes"] == [{"databaseId": rv["id"]} for rv in local.reviews("demo", "api", 4)[100:]]
        added = local.add_review("demo", "api", 4)
        more = post(c, emu2, query, id=node_id, n=100, after=end["pageInfo"]["endCursor"])
        assert more.json()["data"]["node"]["reviews"]["nodes"] == [{"databaseId": added["id"]}]

    big_files = next(p for p in dataset.pull_requests("demo", "api")
                     if len(dataset.files("demo", "api", p["number"])) == 3050)
    query = """query($id: ID!, $after: String) { node(id: $id) { ... on PullRequest {
        files(first: 100, after: $after) { totalCount pageInfo { hasNextPage endCursor } nodes { path } } } } }"""
    paths, after, pages = [], None, 0
    while True:
        f = post(gql, emu, query, id=big_files["node_id"], after=after).json()["data"]["node"]["files"]
        pages += 1
        paths += [n["path"] for n in f["nodes"]]
        if not f["pageInfo"]["hasNextPage"]:
            break
        after = f["pageInfo"]["endCursor"]
    assert pages == 30 and f["totalCount"] == 3000  # REST's cap: GitHub serves 3,000 files
    assert paths == [x["filename"] for x in dataset.served_files("demo", "api", big_files["number"])]

    # Timeline items page by time, small pages give what one big page gives; `last` pages backwards.
    busy = max(dataset.pull_requests("demo", "api"), key=lambda p: len(dataset.timeline("demo", "api", p["number"])))
    query = """query($id: ID!, $n: Int!, $after: String) { node(id: $id) { ... on PullRequest {
        timelineItems(first: $n, after: $after) { totalCount pageInfo { hasNextPage endCursor }
            nodes { __typename ... on IssueComment { id } ... on PullRequestCommit { id } ... on LabeledEvent { id }
                    ... on PullRequestReview { id } ... on ClosedEvent { id } ... on MergedEvent { id }
                    ... on ReviewRequestedEvent { id } ... on ReviewRequestRemovedEvent { id }
                    ... on ReadyForReviewEvent { id } ... on ConvertToDraftEvent { id } ... on ReopenedEvent { id } } } } } }"""
    items, after, total = [], None, None
    while True:
        t = post(gql, emu, query, id=busy["node_id"], n=7, after=after).json()["data"]["node"]["timelineItems"]
        items += t["nodes"]
        total = t["totalCount"]
        if not t["pageInfo"]["hasNextPage"]:
            break
        after = t["pageInfo"]["endCursor"]
    timeline = dataset.timeline("demo", "api", busy["number"])
    assert total == len(timeline) == len(items) > 7
    assert [i["id"] for i in items] == [("PURC_" if e["event"] == "committed" else "") + e["node_id"] for e in timeline]
    backwards = query.replace("first: $n, after: $after", "last: $n").replace(", $after: String", "")
    back = post(gql, emu, backwards, id=busy["node_id"], n=2)
    assert back.json()["data"]["node"]["timelineItems"]["nodes"] == items[-2:]


def cost_of(client: httpx.Client, emu: GitHubEmulator, query: str, **variables: object) -> dict:
    r = post(client, emu, query, **variables)
    assert r.status_code == 200 and "errors" not in r.json(), r.text
    return r.json()["data"]["rateLimit"]


def test_cost_formula_figures(gql: httpx.Client, emu: GitHubEmulator, dataset: Dataset) -> None:
    ids = [p["node_id"] for p in dataset.pull_requests("demo", "api")]
    assert len(ids) == 60
    # NOTES.md's example: 50 PRs with three connections of 100 each: 1 + 3 * 50 = 151 requests -> 2
    # points, 50 + 3 * 50 * 100 = 15,050 nodes.
    fifty = cost_of(gql, emu, NODES, ids=ids[:50])
    assert (fifty["cost"], fifty["nodeCount"], fifty["limit"]) == (2, 15050, 5000)
    assert fifty["used"] == 2 and fifty["remaining"] == 4998
    # rateLimit alone: no connection, the minimum of 1 point.
    alone = cost_of(gql, emu, "{ rateLimit { cost nodeCount used remaining } }")
    assert alone == {"cost": 1, "nodeCount": 0, "used": 3, "remaining": 4997}
    # 10 PRs x reviews(first: 5): 11 requests -> 0.11 -> at least 1.
    small = cost_of(gql, emu, """query($ids: [ID!]!) { rateLimit { cost nodeCount }
        nodes(ids: $ids) { ... on PullRequest { reviews(first: 5) { nodes { id } } } } }""", ids=ids[:10])
    assert small == {"cost": 1, "nodeCount": 10 + 50}
    # 60 PRs x 4 connections through a fragment, page size from a variable, one via `last`:
    # 1 + 4 * 60 = 241 requests -> 2 points; an aliased second `nodes` adds 1 + 2 * 10 = 21 -> 262 -> 3.
    frag = cost_of(gql, emu, """query($ids: [ID!]!, $few: [ID!]!, $n: Int!) { rateLimit { cost nodeCount }
        all: nodes(ids: $ids) { ...Kids ... on PullRequest { more: reviews(last: 10) { nodes { id } } } }
        some: nodes(ids: $few) { ... on PullRequest { files(first: 100) { nodes { path } }
                                                      reviews(first: 1) { totalCount } } } }
        fragment Kids on PullRequest { reviews(first: $n) { nodes { id } } files(first: $n) { nodes { path } }
                                        timelineItems(first: $n) { nodes { __typename } } }""",
                   ids=ids, few=ids[:10], n=30)
    assert frag == {"cost": 3, "nodeCount": 60 + 3 * 60 * 30 + 60 * 10 + 10 + 10 * 100 + 10 * 1}
    # The charge shows in the headers and the REST /rate_limit; REST's own budget is untouched.
    r = post(gql, emu, "{ rateLimit { used } }")
    assert r.headers["x-ratelimit-used"] == str(2 + 1 + 1 + 3 + 1) and r.headers["x-ratelimit-limit"] == "5000"
    limits = gql.get("/rate_limit").json()["resources"]
    assert limits["graphql"]["used"] == 8 and limits["core"]["used"] == 0
    # A connection asked only for its totalCount needs no page size.
    count = cost_of(gql, emu, """query($ids: [ID!]!) { rateLimit { cost nodeCount }
        nodes(ids: $ids) { ... on PullRequest { reviews { totalCount } } } }""", ids=ids[:3])
    assert count == {"cost": 1, "nodeCount": 3}
    assert emu.stats["graphql_points"] == 9 and emu.stats["cost"] == 0  # /rate_limit is free


def test_pagination_limits(gql: httpx.Client, emu: GitHubEmulator, dataset: Dataset) -> None:
    pr = dataset.pull_requests("demo", "api")[0]["node_id"]
    tpl = "query($id: ID!) { node(id: $id) { ... on PullRequest { reviews%s { nodes { id } } } } }"
    missing = post(gql, emu, tpl % "", id=pr).json()
    assert "data" not in missing and missing["errors"][0]["type"] == "MISSING_PAGINATION_BOUNDARIES"
    assert missing["errors"][0]["message"] == \
        "You must provide a `first` or `last` value to properly paginate the `reviews` connection."
    assert missing["errors"][0]["path"] == ["node", "reviews"]
    over = post(gql, emu, tpl % "(first: 101)", id=pr).json()
    assert over["errors"][0]["type"] == "EXCESSIVE_PAGINATION"
    assert over["errors"][0]["message"] == \
        "Requesting 101 records on the `reviews` connection exceeds the `first` limit of 100 records."
    assert post(gql, emu, tpl % "(last: 0)", id=pr).json()["errors"][0]["type"] == "EXCESSIVE_PAGINATION"
    assert "errors" not in post(gql, emu, tpl % "(last: 100)", id=pr).json()
    bad_field = post(gql, emu, "{ rateLimit { points } }").json()
    assert "data" not in bad_field and "points" in bad_field["errors"][0]["message"]
    assert post(gql, emu, "{ rateLimit { cost }").json()["errors"][0]["message"].startswith("Syntax Error")
    # refused queries cost nothing; the accepted one cost 1
    assert post(gql, emu, "{ rateLimit { used } }").json()["data"]["rateLimit"]["used"] == 2


def test_node_limit(gql: httpx.Client, emu: GitHubEmulator, dataset: Dataset) -> None:
    ids = [p["node_id"] for p in dataset.pull_requests("demo", "api")] + \
          [p["node_id"] for p in dataset.pull_requests("demo", "web")]
    ids = (ids * 2)[:100]
    # 100 PRs x 50 aliased reviews(first: 100): 100 + 50 * 10,000 = 500,100 nodes
    many = " ".join(f"r{i}: reviews(first: 100) {{ nodes {{ id }} }}" for i in range(50))
    query = "query($ids: [ID!]!) { nodes(ids: $ids) { ... on PullRequest { %s } } }" % many
    r = post(gql, emu, query, ids=ids)
    body = r.json()
    assert r.status_code == 200 and "data" not in body
    assert body["errors"] == [{"type": "MAX_NODE_LIMIT_EXCEEDED", "message":
                               "This query requests up to 500,100 possible nodes which exceeds the maximum "
                               f"limit of {MAX_NODES:,}."}]
    fits = " ".join(f"r{i}: reviews(first: 100) {{ totalCount }}" for i in range(49))
    ok = post(gql, emu, "query($ids: [ID!]!) { rateLimit { nodeCount cost } nodes(ids: $ids) { ... on PullRequest "
                        "{ %s } } }" % fits, ids=ids).json()
    assert ok["data"]["rateLimit"] == {"nodeCount": 100 + 49 * 10_000, "cost": 49}  # (1 + 49*100) / 100
    assert r.headers["x-ratelimit-used"] == "0"  # the refused query was not charged


def test_more_than_100_ids_refused(gql: httpx.Client, emu: GitHubEmulator, dataset: Dataset) -> None:
    ids = [p["node_id"] for p in dataset.pull_requests("demo", "api")]
    r = post(gql, emu, "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", ids=(ids * 2)[:101])
    body = r.json()
    assert r.status_code == 200 and body["data"] is None
    assert body["errors"] == [{"type": "ARGUMENT_LIMIT", "path": ["nodes"], "locations": [{"line": 1, "column": 23}],
                               "message": "You may not provide more than 100 node ids; you provided 101."}]
    ok = post(gql, emu, "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", ids=(ids * 2)[:100])
    assert len(ok.json()["data"]["nodes"]) == 100 and ok.headers["x-ratelimit-used"] == "1"


def test_unknown_id_gives_a_partial_result(gql: httpx.Client, emu: GitHubEmulator, dataset: Dataset) -> None:
    known = [p["node_id"] for p in dataset.pull_requests("demo", "web")[:2]]
    ids = [known[0], "PR_kwDOnope", known[1]]
    r = post(gql, emu, "query($ids: [ID!]!) {\n  nodes(ids: $ids) { id ... on PullRequest { number } } }", ids=ids)
    body = r.json()
    assert r.status_code == 200
    assert body["data"]["nodes"] == [{"id": known[0], "number": 1}, None, {"id": known[1], "number": 2}]
    assert body["errors"] == [{"type": "NOT_FOUND", "path": ["nodes", 1], "locations": [{"line": 2, "column": 3}],
                               "message": "Could not resolve to a node with the global id of 'PR_kwDOnope'"}]
    single = post(gql, emu, '{ node(id: "nope") { id } }').json()
    assert single["data"] == {"node": None} and single["errors"][0]["type"] == "NOT_FOUND"
    assert single["errors"][0]["path"] == ["node"]
    # A deleted repository's pull requests are gone from GraphQL too.
    local = Dataset.generate({"demo": 2}, 3, seed=2)
    gone = local.pull_requests("demo", "web")[0]["node_id"]
    local.delete_repository("demo", "web")
    with GitHubEmulator(local) as emu2, httpx.Client(headers=TOKEN) as c:
        r = post(c, emu2, "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", ids=[gone])
        assert r.json()["data"] == {"nodes": [None]} and r.json()["errors"][0]["type"] == "NOT_FOUND"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_points_budget_exhaustion(dataset: Dataset) -> None:
    clock = FakeClock()
    ids = [p["node_id"] for p in dataset.pull_requests("demo", "api")][:50]
    with GitHubEmulator(dataset, graphql_points=5, rate_limit_window=3600, clock=clock) as emu, \
            httpx.Client(base_url=emu.url, headers=TOKEN) as c:
        emu.graphql.org_readers = {"t0ken"}  # NODES asks for Team fields
        used = [int(post(c, emu, NODES, ids=ids).headers["x-ratelimit-used"]) for _ in range(3)]
        assert used == [2, 4, 6]  # the third query is charged whole, past the budget (as GitHub does)
        r = post(c, emu, "{ rateLimit { remaining } }")
        assert r.status_code == 200 and "data" not in r.json()
        assert r.json()["errors"] == [{"type": "RATE_LIMITED", "message": "API rate limit exceeded for user ID 1."}]
        assert (r.headers["x-ratelimit-remaining"], r.headers["x-ratelimit-resource"]) == ("0", "graphql")
        assert r.headers["x-ratelimit-reset"] == str(int(clock.now + 3600))
        assert c.get("/orgs/demo/repos").status_code == 200  # the REST budget is a separate one
        other = c.post(emu.graphql_url, json={"query": "{ rateLimit { remaining } }"},
                       headers={"Authorization": "token other"})
        assert other.json()["data"]["rateLimit"]["remaining"] == 4  # budgets are per token
        clock.now += 3601
        again = post(c, emu, "{ rateLimit { remaining used } }")
        assert again.json()["data"]["rateLimit"] == {"remaining": 4, "used": 1}
        assert emu.stats["graphql_points"] == 2 + 2 + 2 + 1 + 1


def test_heavy_query_gets_a_502(dataset: Dataset) -> None:
    ids = [p["node_id"] for p in dataset.pull_requests("demo", "api")][:50]
    with GitHubEmulator(dataset, graphql_heavy_nodes=10_000) as emu, \
            httpx.Client(base_url=emu.url, headers=TOKEN) as c:
        emu.graphql.org_readers = {"t0ken"}  # NODES asks for Team fields
        r = post(c, emu, NODES, ids=ids)  # 15,050 nodes
        assert r.status_code == 502 and r.json()["data"] is None
        assert r.json()["errors"][0]["message"].startswith("Something went wrong while executing your query.")
        assert r.headers["x-ratelimit-used"] == "0"
        assert post(c, emu, NODES, ids=ids[:30]).status_code == 200  # 9,030 nodes
        # The admin API changes the threshold and the budget from another process (the benchmark).
        assert c.post("/_emulator/graphql", json={"heavy_nodes": None, "points": 7}).json() == \
            {"heavy_nodes": None, "points": 7, "enabled": True, "refused": []}
        r = post(c, emu, NODES, ids=ids)
        assert r.status_code == 200 and r.json()["data"]["rateLimit"]["limit"] == 7


def test_auth_like_rest(dataset: Dataset) -> None:
    query = {"query": "{ rateLimit { cost } }"}
    with GitHubEmulator(dataset, tokens={"good"}, base_path="/api/v3") as emu, httpx.Client() as c:
        assert emu.graphql_url.endswith("/api/graphql")  # GitHub Enterprise's GraphQL path
        none = c.post(emu.graphql_url, json=query)
        bad = c.post(emu.graphql_url, json=query, headers={"Authorization": "bearer nope"})
        assert none.status_code == bad.status_code == 401
        assert bad.json() == {"message": "Bad credentials", "documentation_url": "https://docs.github.com/graphql"}
        assert c.post(emu.graphql_url, json=query, headers={"Authorization": "bearer good"}).status_code == 200
        emu.revoke("good")
        assert c.post(emu.graphql_url, json=query, headers={"Authorization": "bearer good"}).status_code == 401
        assert [(r.kind, r.status) for r in emu.received()] == [("graphql", 401), ("graphql", 401),
                                                               ("graphql", 200), ("graphql", 401)]
    with GitHubEmulator(dataset) as emu, httpx.Client() as c:  # any token works, but one is needed
        r = c.post(emu.graphql_url, json=query)
        assert r.status_code == 401 and r.json()["message"] == "This endpoint requires you to be authenticated."
        assert c.post(emu.graphql_url, json=query, headers=TOKEN).status_code == 200


@pytest.mark.parametrize("kind,status", [("500", 500), ("502", 502), ("503", 503), ("secondary", 403),
                                         ("429", 429)])
def test_status_faults_apply_to_graphql(gql: httpx.Client, emu: GitHubEmulator, kind: str, status: int) -> None:
    emu.faults.add(Fault(kind, path_regex="^/graphql", retry_after=3))
    assert gql.get("/orgs/demo/repos").status_code == 200  # does not match
    r = post(gql, emu, "{ rateLimit { cost } }")
    assert r.status_code == status and r.headers["x-ratelimit-resource"] == "graphql"
    assert post(gql, emu, "{ rateLimit { cost } }").status_code == 200  # times=1
    assert emu.stats["faults_served"] == 1 and emu.stats["by_endpoint"]["graphql"] == 2


def test_truncated_drop_primary_and_slow_faults(gql: httpx.Client, emu: GitHubEmulator, dataset: Dataset) -> None:
    ids = [p["node_id"] for p in dataset.pull_requests("demo", "api")][:5]
    emu.faults.add(Fault("truncated", path_regex="^/graphql"))
    r = post(gql, emu, NODES, ids=ids)
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    emu.faults.add(Fault("drop", path_regex="^/graphql"))
    with pytest.raises(httpx.TransportError):
        post(gql, emu, NODES, ids=ids)
    emu.faults.add(Fault("primary", path_regex="^/graphql", seconds=120))
    r = post(gql, emu, NODES, ids=ids)
    assert r.status_code == 200 and r.json()["errors"][0]["type"] == "RATE_LIMITED"
    assert post(gql, emu, NODES, ids=ids).json()["errors"][0]["type"] == "RATE_LIMITED"  # until the reset
    assert gql.get("/orgs/demo/repos").status_code == 200
    gql.post("/_emulator/reset_rate_limit")
    emu.faults.add(Fault("slow", path_regex="^/graphql", seconds=0.3))
    start = time.monotonic()
    assert post(gql, emu, NODES, ids=ids).status_code == 200
    assert time.monotonic() - start >= 0.3
    graphql = [r for r in emu.received() if r.kind == "graphql"]
    assert [(r.method, r.path, r.status) for r in graphql] == [("POST", "/graphql", 200), ("POST", "/graphql", None),
                                                              ("POST", "/graphql", 200), ("POST", "/graphql", 200),
                                                              ("POST", "/graphql", 200)]
    assert [r.points for r in graphql] == [1, 0, 0, 0, 1]  # the truncated answer was executed and charged


def test_latency_and_request_counting(dataset: Dataset) -> None:
    with GitHubEmulator(dataset, latency=0.2) as emu, httpx.Client(base_url=emu.url, headers=TOKEN) as c:
        start = time.monotonic()
        assert post(c, emu, "{ rateLimit { cost } }").status_code == 200
        assert time.monotonic() - start >= 0.2
        c.get("/orgs/demo/repos")
        assert [(r.kind, r.points) for r in emu.received()] == [("graphql", 1), ("repos", 0)]
        assert emu.stats["by_endpoint"] == {"graphql": 1, "repos": 1} and emu.stats["cost"] == 1


def test_connection_filters(gql: httpx.Client, emu: GitHubEmulator, dataset: Dataset) -> None:
    pr = next(p for p in dataset.pull_requests("demo", "api")
              if len(dataset.reviews("demo", "api", p["number"])) == 130)
    reviews = dataset.reviews("demo", "api", pr["number"])
    query = """query($id: ID!, $states: [PullRequestReviewState!], $author: String) { node(id: $id) {
        ... on PullRequest { reviews(first: 100, states: $states, author: $author) { totalCount nodes { databaseId } } } } }"""
    got = post(gql, emu, query, id=pr["node_id"], states=["APPROVED", "DISMISSED"]).json()["data"]["node"]["reviews"]
    wanted = [r["id"] for r in reviews if r["state"] in ("APPROVED", "DISMISSED")]
    assert got["totalCount"] == len(wanted) and [n["databaseId"] for n in got["nodes"]] == wanted[:100]
    login = reviews[0]["user"]["login"]
    got = post(gql, emu, query, id=pr["node_id"], author=login).json()["data"]["node"]["reviews"]
    assert [n["databaseId"] for n in got["nodes"]] == [r["id"] for r in reviews
                                                       if r["user"] and r["user"]["login"] == login]

    timeline = dataset.timeline("demo", "api", pr["number"])
    query = """query($id: ID!, $since: DateTime, $skip: Int) { node(id: $id) { ... on PullRequest {
        timelineItems(first: 100, since: $since, skip: $skip, itemTypes: [ISSUE_COMMENT, CLOSED_EVENT, MERGED_EVENT,
                      REVIEW_REQUESTED_EVENT, PULL_REQUEST_REVIEW]) {
          totalCount nodes { ... on IssueComment { id createdAt } ... on ClosedEvent { id createdAt }
                             ... on MergedEvent { id createdAt } ... on ReviewRequestedEvent { id createdAt }
                             ... on PullRequestReview { id createdAt } } } } } }"""
    kinds = {"commented", "closed", "merged", "review_requested", "reviewed"}
    wanted = [e for e in timeline if e["event"] in kinds]
    at = {e["node_id"]: e.get("created_at") or e.get("submitted_at") for e in wanted}
    since = sorted(at.values())[len(at) // 2]
    after_since = [e["node_id"] for e in wanted if at[e["node_id"]] >= since]
    got = post(gql, emu, query, id=pr["node_id"], since=since).json()["data"]["node"]["timelineItems"]
    assert got["totalCount"] == len(after_since) and [n["id"] for n in got["nodes"]] == after_since[:100]
    assert all(n["createdAt"] >= since for n in got["nodes"])
    got = post(gql, emu, query, id=pr["node_id"], skip=3).json()["data"]["node"]["timelineItems"]
    assert got["totalCount"] == len(wanted) - 3
    assert [n["id"] for n in got["nodes"]] == [e["node_id"] for e in wanted][3:103]


def test_database_id_past_32_bits_is_a_field_error(gql: httpx.Client, emu: GitHubEmulator, dataset: Dataset) -> None:
    pr = dataset.pull_requests("demo", "api")[3]
    dataset.edit_review("demo", "api", pr["number"], 0, id=3_000_000_000)
    query = """query($id: ID!) { node(id: $id) { ... on PullRequest {
        reviews(first: 1) { nodes { databaseId fullDatabaseId } } } } }"""
    body = post(gql, emu, query, id=pr["node_id"]).json()
    assert body["data"]["node"]["reviews"]["nodes"] == [{"databaseId": None, "fullDatabaseId": "3000000000"}]
    assert body["errors"][0]["path"] == ["node", "reviews", "nodes", 0, "databaseId"]
    assert "32-bit" in body["errors"][0]["message"]


def test_malformed_requests(gql: httpx.Client, emu: GitHubEmulator, dataset: Dataset) -> None:
    bad_json = gql.post(emu.graphql_url, content=b"{not json")
    assert bad_json.status_code == 400 and bad_json.json()["message"] == "Problems parsing JSON"
    no_query = gql.post(emu.graphql_url, json={"variables": {}})
    assert no_query.status_code == 200
    assert no_query.json() == {"errors": [{"message": "A query attribute must be specified and must be a string."}]}
    pr = dataset.pull_requests("demo", "api")[3]["node_id"]
    query = """query($id: ID!, $after: String) { node(id: $id) { ... on PullRequest {
        reviews(first: 10, after: $after) { nodes { id } } } } }"""
    cursor = post(gql, emu, query, id=pr, after="bm90IGEgY3Vyc29y").json()  # base64 of "not a cursor"
    assert cursor["data"] == {"node": {"reviews": None}}  # `reviews` is nullable in GitHub's schema
    assert cursor["errors"][0]["type"] == "INVALID_CURSOR_ARGUMENTS"
    assert cursor["errors"][0]["path"] == ["node", "reviews"]
    wrong_variable = post(gql, emu, query, id=pr, after=5).json()
    assert "data" not in wrong_variable and "$after" in wrong_variable["errors"][0]["message"]
    mutation = post(gql, emu, 'mutation { addStar(input: {starrableId: "x"}) { clientMutationId } }').json()
    assert "data" not in mutation and mutation["errors"]
    assert emu.stats["graphql_points"] == 1  # only the query that ran was charged


def test_team_fields_need_read_org(gql: httpx.Client, emu: GitHubEmulator, dataset: Dataset) -> None:
    """As GitHub: a token without read:org is refused a whole query that names a Team field, before
    it runs (no point charged), whether or not a team is requested; `__typename` needs no scope."""
    pull = dataset.pull_requests("demo", "api")[0]
    emu.graphql.org_readers = set()
    refused = post(gql, emu, NODES, ids=[pull["node_id"]]).json()
    assert "data" not in refused and {e["type"] for e in refused["errors"]} == {"INSUFFICIENT_SCOPES"}
    assert {e["message"].split("'")[1] for e in refused["errors"]} == {"slug", "databaseId"}
    assert "read:org" in refused["errors"][0]["message"] and emu.stats["graphql_points"] == 0
    untyped = NODES.replace("... on Team {{ slug databaseId }}".replace("{{", "{").replace("}}", "}"), "")
    answer = post(gql, emu, untyped, ids=[pull["node_id"]]).json()
    assert "errors" not in answer and answer["data"]["nodes"][0]["id"] == pull["node_id"]
