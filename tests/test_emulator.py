"""The GitHub emulator behaves like the parts of the GitHub REST API the pipeline relies on."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from emulator import DROP_KEY, MAX_SERVED_FILES, Dataset, Fault, GitHubEmulator
from emulator.data import TIMELINE_KEPT
from sources.github.schema import TIMELINE_EVENTS

PULLS = "/repos/demo/api/pulls?state=all&sort=updated&direction=desc&per_page=100"


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dataset() -> Dataset:
    return Dataset.generate(orgs={"demo": 3, "empty": 0}, prs_per_repo=[120, 25, 40], seed=7)


@pytest.fixture
def emu(dataset: Dataset) -> Iterator[GitHubEmulator]:
    with GitHubEmulator(dataset) as emulator:
        yield emulator


@pytest.fixture
def client(emu: GitHubEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=10) as c:
        yield c


def walk(client: httpx.Client, url: str) -> list[dict]:
    """Follow Link rel="next" to the end."""
    items: list[dict] = []
    while url:
        r = client.get(url)
        r.raise_for_status()
        items += r.json()
        url = r.links.get("next", {}).get("url")
    return items


def test_generation_is_deterministic() -> None:
    a = Dataset.generate({"demo": 2}, 30, seed=3)
    b = Dataset.generate({"demo": 2}, 30, seed=3)
    c = Dataset.generate({"demo": 2}, 30, seed=4)
    for repo in ("api", "web"):
        assert a.pull_requests("demo", repo) == b.pull_requests("demo", repo)
        assert a.files("demo", repo, 7) == b.files("demo", repo, 7)
    assert a.expected("demo") == b.expected("demo")
    assert a.pull_requests("demo", "api") != c.pull_requests("demo", "api")
    assert a.mutate_random(20, seed=1) == b.mutate_random(20, seed=1)
    assert a.expected() == b.expected()


def test_the_emulator_keeps_what_the_pipeline_keeps() -> None:
    assert TIMELINE_KEPT == TIMELINE_EVENTS


def test_data_shapes_and_edge_cases(dataset: Dataset) -> None:
    pulls = dataset.pull_requests("demo", "api")
    assert len(pulls) == 120
    assert {p["state"] for p in pulls} == {"open", "closed"}
    assert any(p["draft"] for p in pulls) and any(p["merged_at"] for p in pulls)
    assert any(p["state"] == "closed" and not p["merged_at"] for p in pulls)
    assert all(p["updated_at"] >= p["created_at"] for p in pulls)
    assert "additions" not in pulls[0]
    assert any(p["user"] is None for p in pulls)
    assert any(r["user"] is None for p in pulls for r in dataset.reviews("demo", "api", p["number"]))
    unicode_pr = next(p for p in pulls if "☕" in p["title"])
    assert any(" " in f["filename"] and not f["filename"].isascii()
               for f in dataset.files("demo", "api", unicode_pr["number"]))
    sizes = {p["number"]: len(dataset.files("demo", "api", p["number"])) for p in pulls}
    big = max(sizes, key=sizes.__getitem__)
    assert sizes[big] == 3050 and len(dataset.served_files("demo", "api", big)) == MAX_SERVED_FILES
    review_counts = [len(dataset.reviews("demo", "api", p["number"])) for p in pulls]
    assert 130 in review_counts and 0 in review_counts
    assert dataset.repositories("empty") == []
    expected = dataset.expected("demo")
    assert len(expected["pull_requests"]) == 185
    single = dataset.pull_request("demo", "api", big)
    assert single["changed_files"] == 3050 and single["commits"] >= 1


def test_link_pagination_gives_every_pr_once(client: httpx.Client, dataset: Dataset) -> None:
    first = client.get(PULLS)
    assert set(first.links) == {"next", "last"}
    assert first.links["next"]["url"].startswith("http://127.0.0.1:")
    assert "page=2" in first.links["next"]["url"] and "state=all" in first.links["next"]["url"]
    items = walk(client, PULLS)
    assert len(items) == 120
    assert {p["id"] for p in items} == {p["id"] for p in dataset.pull_requests("demo", "api")}
    updated = [p["updated_at"] for p in items]
    assert updated == sorted(updated, reverse=True)
    # Exactly 100 items with per_page=100: one page, no next.
    exact = Dataset.generate({"o": 1}, 100, edge_cases=False)
    with GitHubEmulator(exact) as emu2:
        r = httpx.get(f"{emu2.url}/repos/o/api/pulls?state=all&per_page=100")
        assert len(r.json()) == 100 and "next" not in r.links
    page2 = client.get("/repos/demo/api/pulls?state=all&per_page=30&page=2")
    assert set(page2.links) == {"prev", "next", "last", "first"}
    assert len(walk(client, "/repos/demo/api/pulls?state=open")) == sum(
        p["state"] == "open" for p in dataset.pull_requests("demo", "api"))


def test_etag_304_costs_nothing(client: httpx.Client, emu: GitHubEmulator) -> None:
    r = client.get(PULLS)
    etag = r.headers["etag"]
    assert etag.startswith('W/"')
    remaining = int(r.headers["x-ratelimit-remaining"])
    r2 = client.get(PULLS, headers={"If-None-Match": etag})
    assert r2.status_code == 304 and r2.content == b""
    assert int(r2.headers["x-ratelimit-remaining"]) == remaining
    stats = emu.stats
    assert stats["not_modified"] == 1 and stats["cost"] == 1 and stats["requests"] == 2
    assert stats["by_endpoint"] == {"pulls": 2} and stats["by_status"] == {200: 1, 304: 1}


def test_mutation_moves_pr_to_first_page(client: httpx.Client, dataset: Dataset) -> None:
    first = client.get(PULLS)
    last_number = walk(client, PULLS)[-1]["number"]
    old_top = first.json()[0]["updated_at"]
    dataset.edit_title("demo", "api", last_number, "Renamed")
    again = client.get(PULLS, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 200 and again.headers["etag"] != first.headers["etag"]
    top = again.json()[0]
    assert top["number"] == last_number and top["title"] == "Renamed"
    assert top["updated_at"] > old_top

    n = dataset.add_pull_request("demo", "api")
    review = dataset.add_review("demo", "api", 5)
    removed = dataset.remove_file("demo", "api", 6)
    dataset.merge_pull_request("demo", "api", n)
    expected = dataset.expected("demo")
    assert review["id"] in expected["pull_request_reviews"]
    pr6 = dataset.pull_requests("demo", "api")[5]
    assert (pr6["id"], removed) not in expected["pull_request_files"]
    merged = client.get(f"/repos/demo/api/pulls/{n}").json()
    assert merged["merged_at"] and merged["state"] == "closed"
    assert client.get(PULLS).json()[0]["number"] == n
    dataset.delete_repository("demo", "web")
    assert client.get("/repos/demo/web/pulls").status_code == 404
    assert [r["name"] for r in client.get("/orgs/demo/repos").json()] == ["api", "infra"]


def test_files_capped_at_3000(client: httpx.Client, dataset: Dataset) -> None:
    big = next(p["number"] for p in dataset.pull_requests("demo", "api")
               if len(dataset.files("demo", "api", p["number"])) == 3050)
    pages = 0
    url = f"/repos/demo/api/pulls/{big}/files?per_page=100"
    files: list[dict] = []
    while url:
        r = client.get(url)
        files += r.json()
        pages += 1
        url = r.links.get("next", {}).get("url")
    assert pages == 30 and len(files) == MAX_SERVED_FILES


def test_reviews_paginate_in_id_order(client: httpx.Client, dataset: Dataset) -> None:
    busy = next(p["number"] for p in dataset.pull_requests("demo", "api")
                if len(dataset.reviews("demo", "api", p["number"])) == 130)
    reviews = walk(client, f"/repos/demo/api/pulls/{busy}/reviews?per_page=100")
    assert len(reviews) == 130 and [r["id"] for r in reviews] == sorted(r["id"] for r in reviews)


def _at(event: dict) -> str:
    """When a timeline item happened: events have `created_at`, reviews `submitted_at`, commits
    their author's date."""
    return event.get("created_at") or event.get("submitted_at") or event["author"]["date"]


def test_timeline_is_consistent_with_the_pull_request(dataset: Dataset) -> None:
    kinds: set[str] = set()
    for repo in ("api", "web", "infra"):
        for pr in dataset.pull_requests("demo", repo):
            timeline = dataset.timeline("demo", repo, pr["number"])
            kinds |= {e["event"] for e in timeline}
            times = [_at(e) for e in timeline]
            assert times == sorted(times) and all(t <= pr["updated_at"] for t in times)
            # Only commits precede the pull request: its first was written before it was opened.
            assert all(pr["created_at"] <= _at(e) for e in timeline if e["event"] != "committed")
            commits = [e for e in timeline if e["event"] == "committed"]
            assert all("id" not in e and e["author"]["date"] <= e["committer"]["date"] for e in commits)
            drafts = [e["event"] for e in timeline if e["event"] in ("ready_for_review", "convert_to_draft")]
            if drafts and "draft" in pr:
                assert pr["draft"] == (drafts[-1] == "convert_to_draft")
            requested = [e for e in timeline if e["event"] == "review_requested"]
            for reviewer in pr["requested_reviewers"]:
                assert any((e.get("requested_reviewer") or {}).get("login") == reviewer["login"] for e in requested)
            for team in pr["requested_teams"]:
                assert any((e.get("requested_team") or {}).get("slug") == team["slug"] for e in requested)
            for event in requested:
                reviewer = event.get("requested_reviewer")
                reviews = [r for r in dataset.reviews("demo", repo, pr["number"])
                           if reviewer and r["user"] and r["user"]["login"] == reviewer["login"]]
                if reviews and reviewer not in pr["requested_reviewers"]:
                    assert event["created_at"] <= reviews[0]["submitted_at"], "requested before the review"
            removed = [e["requested_reviewer"]["login"] for e in timeline if e["event"] == "review_request_removed"]
            assert all(any((e.get("requested_reviewer") or {}).get("login") == login for e in requested)
                       for login in removed)
            ends = [(e["event"], e["created_at"]) for e in timeline if e["event"] in ("merged", "closed")]
            if pr["merged_at"]:
                assert ends[-2:] == [("merged", pr["merged_at"]), ("closed", pr["closed_at"])]
            elif pr["closed_at"]:
                assert ends[-1] == ("closed", pr["closed_at"])
            else:
                opened_again = [e["event"] for e in timeline if e["event"] in ("closed", "reopened")]
                assert not opened_again or opened_again[-1] == "reopened"
    assert {"review_requested", "review_request_removed", "ready_for_review", "convert_to_draft",
            "closed", "reopened", "merged", "committed", "commented", "labeled", "reviewed"} <= kinds
    again = Dataset.generate(orgs={"demo": 3, "empty": 0}, prs_per_repo=[120, 25, 40], seed=7)
    assert again.timeline("demo", "api", 9) == dataset.timeline("demo", "api", 9)
    assert again.expected() == dataset.expected()


def test_timeline_pages_and_mutations(client: httpx.Client, emu: GitHubEmulator, dataset: Dataset) -> None:
    long = next(p["number"] for p in dataset.pull_requests("demo", "api")
                if len(dataset.timeline("demo", "api", p["number"])) > 100)
    served = walk(client, f"/repos/demo/api/issues/{long}/timeline?per_page=100")
    assert served == dataset.timeline("demo", "api", long)
    assert emu.stats["by_endpoint"] == {"timeline": 2} and emu.stats["cost"] == 2
    assert len(client.get(f"/repos/demo/api/issues/{long}/timeline?per_page=30").json()) == 30
    assert client.get("/repos/demo/api/issues/9999/timeline").status_code == 404

    number = next(p["number"] for p in dataset.pull_requests("demo", "web") if p["state"] == "open")
    before = dataset.pull_request("demo", "web", number)["updated_at"]
    event = dataset.request_review("demo", "web", number, login="dev-grace")
    pr = dataset.pull_request("demo", "web", number)
    assert pr["updated_at"] > before and event["created_at"] == pr["updated_at"]
    assert "dev-grace" in [u["login"] for u in pr["requested_reviewers"]]
    assert dataset.timeline("demo", "web", number)[-1] == event and event["node_id"] in dataset.expected("demo")["pull_request_events"]
    dataset.merge_pull_request("demo", "web", number)
    assert [e["event"] for e in dataset.timeline("demo", "web", number)[-2:]] == ["merged", "closed"]

    bad = dataset.corrupt_event("demo", "web", number, 0, "id", "x")
    assert bad in dataset.timeline("demo", "web", number)
    assert len(dataset.events("demo", "web", number)) == len(
        [e for e in dataset.timeline("demo", "web", number) if e["event"] in TIMELINE_KEPT]) - 1


def test_rate_limit_exhaustion_and_reset(dataset: Dataset) -> None:
    clock = FakeClock()
    with GitHubEmulator(dataset, rate_limit=3, rate_limit_window=60, clock=clock) as emu, \
            httpx.Client(base_url=emu.url, headers={"Authorization": "token a"}) as c:
        for left in (2, 1, 0):
            assert c.get("/orgs/demo/repos").headers["x-ratelimit-remaining"] == str(left)
        r = c.get("/orgs/demo/repos")
        assert r.status_code == 403 and "rate limit exceeded" in r.json()["message"]
        assert r.headers["x-ratelimit-reset"] == str(int(clock.now + 60))
        assert c.get("/rate_limit").json()["resources"]["core"]["remaining"] == 0
        other = c.get("/orgs/demo/repos", headers={"Authorization": "token b"})
        assert other.status_code == 200  # budgets are per token
        clock.now += 61
        r = c.get("/orgs/demo/repos")
        assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == "2"
        assert emu.stats["cost"] == 5


def test_unknown_token_and_app_token(dataset: Dataset) -> None:
    with GitHubEmulator(dataset, tokens={"good"}, base_path="/api/v3") as emu, \
            httpx.Client(base_url=emu.url) as c:
        assert emu.url.endswith("/api/v3")
        bad = c.get("/orgs/demo/repos", headers={"Authorization": "token nope"})
        assert bad.status_code == 401 and bad.json()["message"] == "Bad credentials"
        assert c.get("/orgs/demo/repos", headers={"Authorization": "Bearer good"}).status_code == 200
        assert c.post("/app/installations/1/access_tokens",
                      headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401
        issued = c.post("/app/installations/1/access_tokens", headers={"Authorization": "Bearer a.b.c"})
        assert issued.status_code == 201 and issued.json()["token"].startswith("ghs_")
        ok = c.get("/orgs/demo/repos", headers={"Authorization": f"token {issued.json()['token']}"})
        assert ok.status_code == 200
        assert c.get("/repos/demo/nope/pulls", headers={"Authorization": "token good"}).status_code == 404


@pytest.mark.parametrize("kind,status", [("500", 500), ("502", 502), ("503", 503), ("404", 404),
                                         ("429", 429), ("secondary", 403)])
def test_status_faults(client: httpx.Client, emu: GitHubEmulator, kind: str, status: int) -> None:
    emu.faults.add(Fault(kind, path_regex=r"/pulls\?", retry_after=7, after=1))
    assert client.get(PULLS).status_code == 200  # skipped by after=1
    assert client.get("/orgs/demo/repos").status_code == 200  # does not match
    r = client.get(PULLS)
    assert r.status_code == status
    if kind in ("429", "secondary", "502"):
        assert r.headers["retry-after"] == "7"
    if kind == "secondary":
        assert "secondary rate limit" in r.json()["message"]
    assert client.get(PULLS).status_code == 200  # times=1
    assert emu.stats["faults_served"] == 1 and emu.stats["cost"] == 3


def test_primary_fault_until_reset(dataset: Dataset) -> None:
    clock = FakeClock()
    with GitHubEmulator(dataset, clock=clock) as emu, httpx.Client(base_url=emu.url) as c:
        emu.faults.add(Fault("primary", seconds=30))
        r = c.get(PULLS)
        assert r.status_code == 403 and r.headers["x-ratelimit-remaining"] == "0"
        assert r.headers["x-ratelimit-reset"] == str(int(clock.now + 30))
        assert c.get(PULLS).status_code == 403
        clock.now += 31
        assert c.get(PULLS).status_code == 200


def test_drop_truncated_slow_faults(client: httpx.Client, emu: GitHubEmulator) -> None:
    emu.faults.add(Fault("drop"))
    with pytest.raises(httpx.TransportError):
        client.get(PULLS)
    emu.faults.add(Fault("truncated"))
    r = client.get(PULLS)
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    emu.faults.add(Fault("slow", seconds=0.3))
    r = client.get(PULLS)
    assert r.status_code == 200 and r.elapsed.total_seconds() >= 0.3 and len(r.json()) == 100
    assert emu.stats["faults_served"] == 3


def test_admin_api(client: httpx.Client, emu: GitHubEmulator, dataset: Dataset) -> None:
    client.get(PULLS)
    root = emu.url
    assert httpx.get(f"{root}/_emulator/stats").json()["requests"] == 1
    assert httpx.get(f"{root}/_emulator/expected", params={"org": "demo"}).json()["pull_requests"] == 185
    done = httpx.post(f"{root}/_emulator/mutate", json={"count": 5, "seed": 1}).json()["mutations"]
    assert len(done) == 5
    assert httpx.post(f"{root}/_emulator/faults", json={"kind": "503", "times": 1}).status_code == 201
    assert client.get(PULLS).status_code == 503
    httpx.post(f"{root}/_emulator/reset_stats")
    assert emu.stats["requests"] == 0


def test_pull_request_fields_served_like_github(client: httpx.Client, dataset: Dataset) -> None:
    pulls = walk(client, PULLS)
    repo_id = dataset.repository("demo", "api")["id"]
    milestones = [p["milestone"] for p in pulls]
    assert any(m is None for m in milestones)
    assert any(m and m["title"] and m["number"] for m in milestones)
    assignees = [a for p in pulls for a in p["assignees"]]
    assert assignees and all(a["login"] and a["type"] == "User" for a in assignees)
    assert any(not p["assignees"] for p in pulls)
    teams = [t for p in pulls for t in p["requested_teams"]]
    assert teams and all(t["slug"] for t in teams)
    assert all(not p["requested_teams"] for p in pulls if p["state"] == "closed")
    auto = [p["auto_merge"] for p in pulls]
    assert any(a is None for a in auto)
    assert any(a and a["enabled_by"]["login"] and a["merge_method"] in ("merge", "squash", "rebase") for a in auto)
    assert all(p["auto_merge"] is None for p in pulls if p["state"] == "closed")
    heads = [p["head"]["repo"] for p in pulls]
    assert any(h is None for h in heads), "a deleted fork: head.repo is null"
    assert any(h and h["fork"] for h in heads) and any(h and not h["fork"] for h in heads)
    assert all(p["base"]["repo"]["id"] == repo_id and p["base"]["repo"]["fork"] is False for p in pulls)
    # An older payload: no draft or locked key at all.
    older = [p for p in pulls if "draft" not in p]
    assert [p["number"] for p in older] == [5] and "locked" not in older[0]
    assert any(p["draft"] is False for p in pulls if "draft" in p)
    # Reviews by a bot, so bots can be told apart.
    busy = next(p["number"] for p in pulls if len(dataset.reviews("demo", "api", p["number"])) == 130)
    reviews = walk(client, f"/repos/demo/api/pulls/{busy}/reviews?per_page=100")
    assert {"login": "dependabot[bot]", "id": 49699333, "type": "Bot"} in [r["user"] for r in reviews]


def test_serve_older_payload(dataset: Dataset) -> None:
    before = dataset.pull_requests("demo", "web")[0]
    expected = dataset.expected("demo")
    dataset.serve_older_payload("demo", "web", before["number"])
    after = dataset.pull_requests("demo", "web")[0]
    assert "draft" not in after and "locked" not in after
    assert "draft" in before, "copy-on-write: what was handed out is unchanged"
    assert after["updated_at"] == before["updated_at"] and dataset.expected("demo") == expected


def test_corrupt_pull_request_is_served_and_left_out_of_expected(client: httpx.Client, dataset: Dataset) -> None:
    from sources.github.schema import MalformedItem, pull_request_row

    before = dataset.pull_requests("demo", "web")[2]
    number, pr_id = before["number"], before["id"]
    review_ids = {r["id"] for r in dataset.reviews("demo", "web", number)}
    file_keys = {(pr_id, f["filename"]) for f in dataset.files("demo", "web", number)}
    expected = dataset.expected("demo")
    assert pr_id in expected["pull_requests"] and file_keys <= expected["pull_request_files"]

    dataset.corrupt_pull_request("demo", "web", number, "updated_at", "not-a-date")

    served = next(p for p in walk(client, "/repos/demo/web/pulls?state=all&per_page=100") if p["id"] == pr_id)
    assert served["updated_at"] == "not-a-date"
    assert {k: v for k, v in served.items() if k != "updated_at"} == {
        k: v for k, v in before.items() if k != "updated_at"
    }
    assert before["updated_at"] != "not-a-date", "copy-on-write: what was handed out is unchanged"
    after = dataset.expected("demo")
    assert pr_id not in after["pull_requests"]
    assert not review_ids & after["pull_request_reviews"] and not file_keys & after["pull_request_files"]
    assert after["pull_requests"] == expected["pull_requests"] - {pr_id}
    with pytest.raises(MalformedItem, match=r"updated_at: 'not-a-date' is not an ISO 8601 timestamp"):
        pull_request_row("demo", "web", served)

    # Another field: updated_at stays as it was; DROP_KEY removes a key.
    other = dataset.pull_requests("demo", "web")[3]
    dataset.corrupt_pull_request("demo", "web", other["number"], "labels", "bug")
    dataset.corrupt_pull_request("demo", "web", other["number"], "number", DROP_KEY)
    corrupted = next(p for p in dataset.pull_requests("demo", "web") if p["id"] == other["id"])
    assert corrupted["labels"] == "bug" and "number" not in corrupted
    assert corrupted["updated_at"] == other["updated_at"]
    assert other["id"] not in dataset.expected("demo")["pull_requests"]
    # The emulator itself still works on the uncorrupted PR: listing, files, mutations.
    listed = walk(client, "/repos/demo/web/pulls?state=all&sort=updated&direction=desc&per_page=100")
    assert len(listed) == 25 and corrupted in listed
    assert client.get(f"/repos/demo/web/pulls/{other['number']}/files").status_code == 200
    dataset.edit_title("demo", "web", other["number"], "still served")
    edited = next(p for p in dataset.pull_requests("demo", "web") if p["id"] == other["id"])
    assert edited["title"] == "still served" and edited["labels"] == "bug" and "number" not in edited


def test_corrupt_review_leaves_out_only_that_review(client: httpx.Client, dataset: Dataset) -> None:
    from sources.github.schema import MalformedItem, pull_request_row, review_row

    number = next(p["number"] for p in dataset.pull_requests("demo", "web")
                  if len(dataset.reviews("demo", "web", number := p["number"])) >= 2)
    pr = dataset.pull_requests("demo", "web")[number - 1]
    reviews = dataset.reviews("demo", "web", number)
    expected = dataset.expected("demo")

    bad = dataset.corrupt_review("demo", "web", number, 1, "submitted_at", "yesterday")

    assert bad["submitted_at"] == "yesterday" and bad["id"] == reviews[1]["id"]
    assert reviews[1]["submitted_at"] != "yesterday", "copy-on-write: what was handed out is unchanged"
    served = client.get(f"/repos/demo/web/pulls/{number}/reviews?per_page=100").json()
    assert served[1] == bad and served[0] == reviews[0]
    assert dataset.pull_requests("demo", "web")[number - 1]["updated_at"] == pr["updated_at"]
    after = dataset.expected("demo")
    assert after["pull_request_reviews"] == expected["pull_request_reviews"] - {bad["id"]}
    assert after["pull_requests"] == expected["pull_requests"]
    assert after["pull_request_files"] == expected["pull_request_files"]
    with pytest.raises(MalformedItem, match=rf"malformed review {bad['id']} in demo/web#{number}: submitted_at"):
        review_row("demo", "web", pull_request_row("demo", "web", pr), served[1])
    with pytest.raises(IndexError, match="no index 99"):
        dataset.corrupt_review("demo", "web", number, 99, "id", None)
