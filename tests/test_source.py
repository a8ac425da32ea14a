"""The dlt source and the Parquet landing, end to end against the GitHub emulator over HTTP."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from emulator import Dataset, GitHubEmulator
from flows.credentials import github_client
from flows.extract import land
from settings import Settings

ORG = "acme"


@pytest.fixture
def dataset() -> Dataset:
    # 120 PRs in the first repository: two pull-request pages; edge cases live there too.
    return Dataset.generate(orgs={ORG: 3}, prs_per_repo=[120, 7, 0], seed=3)


@pytest.fixture
def emulator(dataset: Dataset):
    with GitHubEmulator(dataset) as emu:
        yield emu


@pytest.fixture
def settings(emulator: GitHubEmulator, tmp_path: Path) -> Settings:
    return Settings(orgs=[ORG], github_url=emulator.url, data_dir=tmp_path, github_token="t0k3n-secret")


def run(settings: Settings):
    with github_client(settings) as client:
        return land(settings, ORG, client)


def landed(settings: Settings, table: str) -> list[dict]:
    pattern = f"{settings.landing}/github/{table}/org={ORG}/date=*/*.parquet"
    if not list(Path(settings.landing).glob(f"github/{table}/org={ORG}/date=*/*.parquet")):
        return []
    con = duckdb.connect()
    return con.sql(f"SELECT * FROM read_parquet('{pattern}')").to_arrow_table().to_pylist()


@pytest.mark.parametrize("mode", ["rest", "auto"])
def test_cold_sync_lands_everything_once(mode, settings, dataset, emulator):
    settings = settings.model_copy(update={"github_api_mode": mode})
    report = run(settings)
    expected = dataset.expected(ORG)

    prs = landed(settings, "pull_requests")
    reviews = landed(settings, "pull_request_reviews")
    files = landed(settings, "pull_request_files")
    events = landed(settings, "pull_request_events")
    assert sorted(r["id"] for r in prs) == sorted(expected["pull_requests"])
    assert sorted(r["id"] for r in reviews) == sorted(expected["pull_request_reviews"])
    assert sorted((r["pull_request_id"], r["filename"]) for r in files) == sorted(
        expected["pull_request_files"]
    )
    assert sorted(r["node_id"] for r in events) == sorted(expected["pull_request_events"])
    assert report.rows == {
        "pull_requests": len(prs),
        "pull_request_reviews": len(reviews),
        "pull_request_files": len(files),
        "pull_request_events": len(events),
        "teams": 0,  # the token's scopes lack read:org: no team asked for
        "team_members": 0,
    }
    # Every row key is unique and deterministic.
    every = prs + reviews + files + events
    assert len({r["row_key"] for r in every}) == len(every)
    # Link pagination was followed: 120 PRs need two pull-request pages in the first repository,
    # and a timeline of more than 100 items two timeline pages.
    assert emulator.stats["by_endpoint"]["pulls"] == 2 + 1 + 1
    if mode == "auto":  # the default, with a token: every child list over GraphQL
        assert not {"reviews", "files", "timeline"} & set(emulator.stats["by_endpoint"])
        assert report.progress.graphql_pull_requests == len(prs)
        return
    timeline_pages = sum(max(1, -(-len(dataset.timeline(ORG, repo["name"], pr["number"])) // 100))
                         for repo in dataset.repositories(ORG)
                         for pr in dataset.pull_requests(ORG, repo["name"]))
    assert timeline_pages > len(prs), "some timeline is longer than a page"
    assert emulator.stats["by_endpoint"]["timeline"] == timeline_pages


def test_rerun_without_changes_costs_nothing(settings, emulator):
    run(settings)
    emulator.reset_stats()
    report = run(settings)
    stats = emulator.stats
    assert report.rows == {"pull_requests": 0, "pull_request_reviews": 0, "pull_request_files": 0,
                           "pull_request_events": 0, "teams": 0, "team_members": 0}
    assert stats["cost"] == 0
    assert stats["not_modified"] == stats["requests"] == 1 + 3  # repository list + one per repo
    assert not {"reviews", "files", "timeline", "review_comments"} & set(stats["by_endpoint"])


@pytest.mark.parametrize("mode", ["rest", "auto"])
def test_changed_pull_request_refetches_only_its_children(mode, settings, dataset, emulator):
    settings = settings.model_copy(update={"github_api_mode": mode})
    run(settings)
    repo = dataset.repositories(ORG)[1]["name"]
    dataset.add_review(ORG, repo, 2)
    dataset.edit_title(ORG, repo, 3, "renamed ✨")
    emulator.reset_stats()

    report = run(settings)

    assert report.rows["pull_requests"] == 2
    stats = emulator.stats
    if mode == "rest":
        assert stats["by_endpoint"]["reviews"] == 2 and stats["by_endpoint"]["files"] == 2
        # The reviews' inline comments: a page each (none for a pull request without a review).
        assert stats["by_endpoint"]["review_comments"] == sum(1 for n in (2, 3) if dataset.reviews(ORG, repo, n))
        assert stats["by_endpoint"]["timeline"] == 2  # short timelines: one page each
    else:  # the default, with a token: both pull requests' child lists in one GraphQL query, their
        # reviews' inline comment counts in another
        assert not {"reviews", "files", "timeline", "review_comments"} & set(stats["by_endpoint"])
        assert stats["by_endpoint"]["graphql"] == 2 and report.progress.graphql_pull_requests == 2
    # Unchanged repositories answered 304; the changed one one page.
    assert stats["not_modified"] == 1 + 2
    titles = {r["number"]: r["title"] for r in landed(settings, "pull_requests") if r["repo"] == repo}
    assert titles[3] == "renamed ✨"


def test_edge_cases(settings, dataset):
    run(settings)
    prs = {r["number"]: r for r in landed(settings, "pull_requests") if r["repo"] == dataset.repositories(ORG)[0]["name"]}
    deleted = [r for r in prs.values() if r["author_login"] is None]
    assert deleted, "a pull request by a deleted account lands with a null author"
    assert any(not r["author_login"] for r in landed(settings, "pull_request_reviews"))
    assert any("☕" in (r["title"] or "") for r in prs.values())

    files = landed(settings, "pull_request_files")
    by_pr: dict[int, list[dict]] = {}
    for row in files:
        by_pr.setdefault(row["pull_request_id"], []).append(row)
    truncated = [rows for rows in by_pr.values() if len(rows) == 3000]
    assert len(truncated) == 1 and all(r["file_list_truncated"] for r in truncated[0])
    assert not any(r["file_list_truncated"] for rows in by_pr.values() if len(rows) < 3000 for r in rows)
    assert any(not r["filename"].isascii() for r in files)

    merged = [r for r in prs.values() if r["is_merged"]]
    assert merged and all(r["time_to_merge_seconds"] >= 0 for r in merged)
    assert all(r["time_to_merge_seconds"] is None for r in prs.values() if not r["is_merged"])


def test_since_bounds_the_first_backfill(settings, dataset):
    all_prs = [pr for repo in dataset.repositories(ORG) for pr in dataset.pull_requests(ORG, repo["name"])]
    cutoff = sorted(pr["updated_at"] for pr in all_prs)[len(all_prs) // 2]
    settings.since = cutoff[:10]
    run(settings)
    landed_ids = {r["id"] for r in landed(settings, "pull_requests")}
    assert landed_ids == {pr["id"] for pr in all_prs if pr["updated_at"] >= cutoff[:10]}


def test_token_never_lands_in_files_or_state(settings):
    run(settings)
    for path in settings.data_dir.rglob("*"):
        if path.is_file():
            assert b"t0k3n-secret" not in path.read_bytes(), path


def test_github_app_installation_auth_end_to_end(dataset, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    # Only tokens the emulator issued itself are accepted: the run must go through the App flow.
    with GitHubEmulator(dataset, tokens=set()) as emu:
        settings = Settings(
            orgs=[ORG],
            github_url=emu.url,
            data_dir=tmp_path,
            github_app_id="12345",
            github_app_private_key=pem,
            github_app_installation_id="678",
        )
        report = run(settings)
        assert emu.stats["by_endpoint"]["app_token"] == 1
    assert report.rows["pull_requests"] == len(dataset.expected(ORG)["pull_requests"])


def test_state_survives_losing_the_local_pipeline_folder(settings, emulator):
    """A fresh worker (no local dlt folder) restores cursors and ETags from the landing."""
    import shutil

    run(settings)
    shutil.rmtree(settings.pipelines_dir)
    emulator.reset_stats()

    report = run(settings)

    assert sum(report.rows.values()) == 0
    assert emulator.stats["cost"] == 0 and emulator.stats["requests"] == 1 + 3


def test_pull_request_updated_while_paging_lands_once_and_is_caught_next_run(tmp_path):
    """Rows shift between pages while paging: a PR updated after page 1 was read moves to the
    front. This run must not land anything twice, and the next run must pick the moved PR up."""
    import httpx

    from sources.github.auth import TokenPool
    from sources.github.client import GitHubClient

    dataset = Dataset.generate(orgs={ORG: 1}, prs_per_repo=[250], seed=9, edge_cases=False)
    repo = dataset.repositories(ORG)[0]["name"]
    oldest = min(dataset.pull_requests(ORG, repo), key=lambda pr: pr["updated_at"])["number"]

    class MutateAfterFirstPage(httpx.HTTPTransport):
        mutated = False

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = super().handle_request(request)
            if request.url.path.endswith("/pulls") and "page" not in request.url.params and not self.mutated:
                type(self).mutated = True
                dataset.edit_title(ORG, repo, oldest, "edited while the run was paging")
            return response

    with GitHubEmulator(dataset) as emu:
        settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, github_token="t")
        with GitHubClient(emu.url, TokenPool(["t"]), transport=MutateAfterFirstPage()) as client:
            land(settings, ORG, client)
        first = landed(settings, "pull_requests")
        assert MutateAfterFirstPage.mutated
        assert len(first) == len({r["id"] for r in first}), "nothing twice"
        # The moved PR left the pages not yet read: this run cannot see it ...
        assert {r["number"] for r in first} == set(range(1, 251)) - {oldest}

        run(settings)  # ... the next run does: its updated_at is newer than the cursor

    titles = [r["title"] for r in landed(settings, "pull_requests") if r["number"] == oldest]
    assert titles[-1] == "edited while the run was paging"


def test_new_columns_land_as_github_serves_them(settings, dataset):
    """Milestone, assignees, team requests, auto-merge, fork and repository id from the list
    payload; null where GitHub did not say (an older payload's draft/locked, a deleted fork)."""
    run(settings)
    served = {pr["id"]: pr for repo in dataset.repositories(ORG) for pr in dataset.pull_requests(ORG, repo["name"])}
    prs = landed(settings, "pull_requests")
    assert len(prs) == len(served)
    for row in prs:
        pr = served[row["id"]]
        assert row["milestone_title"] == (pr["milestone"]["title"] if pr["milestone"] else None)
        assert row["assignees"] == [user["login"] for user in pr["assignees"]]
        assert row["requested_teams"] == [team["slug"] for team in pr["requested_teams"]]
        assert row["auto_merge_enabled"] is (pr["auto_merge"] is not None)
        assert row["head_is_fork"] is (pr["head"]["repo"]["fork"] if pr["head"]["repo"] else None)
        assert row["repo_id"] == pr["base"]["repo"]["id"]
        assert row["is_draft"] is pr.get("draft") and row["is_locked"] is pr.get("locked")
    # Each case is exercised by the generated data.
    assert {r["is_draft"] for r in prs} == {True, False, None}
    assert {r["head_is_fork"] for r in prs} == {True, False, None}
    assert {r["auto_merge_enabled"] for r in prs} == {True, False}
    assert any(r["milestone_title"] for r in prs) and any(r["milestone_title"] is None for r in prs)
    assert any(r["requested_teams"] for r in prs) and any(len(r["assignees"]) == 2 for r in prs)

    reviews = landed(settings, "pull_request_reviews")
    bots = [r for r in reviews if r["author_type"] == "Bot"]
    assert bots and all(r["author_login"] == "dependabot[bot]" for r in bots)
    assert all(r["author_type"] == "User" for r in reviews if r["author_login"] and r not in bots)
    assert all(r["author_type"] is None for r in reviews if r["author_login"] is None)
