"""The source under real-world failure, end to end against the emulator on a virtual clock:
one unhealthy repository or pull request never stops the rest, backfills converge whatever
stops them, and no change is missed (same second, renamed repository, silent review edits)."""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import dlt
import httpx
import pydantic
import pytest

from emulator import Dataset, Fault, GitHubEmulator
from emulator.data import MUTATION_EPOCH
from fakes import FakeClock
from flows.extract import land
from settings import Settings, pipeline_name
from landing_runs import (  # noqa: F401 - dataset, emu, fake and settings are shared fixtures
    ORG,
    REVIEWS,
    TABLES,
    TIMELINE,
    assert_landed_exactly_once,
    assert_rerun_is_free,
    child_requests,
    dataset,
    emu,
    fake,
    landed,
    landed_keys,
    make_client,
    repo_names,
    rest_mode,
    run,
    settings,
    review_pages,
    timeline_pages,
)

# These runs count REST's requests against its minimum (a request per review, file and timeline
# page) and fault REST's child endpoints: REST mode (the default, `auto`, fetches reviews and files
# over GraphQL with a token; tests/test_graphql_emulator.py and test_graphql_auto.py cover it).
pytestmark = pytest.mark.usefixtures("rest_mode")

HOUR, DAY = 3600.0, 86400.0


def source_state(settings: Settings) -> dict:
    pipeline = dlt.attach(pipeline_name(ORG), pipelines_dir=str(settings.pipelines_dir))
    return pipeline.state["sources"][pipeline_name(ORG)]


def minimum_requests(dataset: Dataset) -> int:
    """Cold sync: the repository list, every pull-request page, and each PR's review, file and
    timeline pages (one each, or more for a long timeline)."""
    repos = [r["name"] for r in dataset.repositories(ORG)]
    pages = sum(max(1, -(-len(dataset.pull_requests(ORG, repo)) // 100)) for repo in repos)
    children = sum(child_requests(dataset, repo, pr["number"]) for repo in repos for pr in dataset.pull_requests(ORG, repo))
    return 1 + pages + children


# -- 1. one bad repository or pull request ------------------------------------------------------


@pytest.mark.parametrize("status", ["451", "403"])
def test_blocked_repository_is_isolated_and_retried_with_backoff(status, settings, dataset, emu, fake):
    blocked, healthy = repo_names(dataset)
    fault = emu.faults.add(Fault(status, rf"/repos/{ORG}/{blocked}/pulls\?", times=10**6))

    first = run(settings, emu, fake)
    assert first.progress.stopped_early is None
    [failed] = first.progress.failed
    assert (failed.kind, failed.name) == ("repository", f"{ORG}/{blocked}") and status in failed.reason
    assert first.progress.partial
    landed_repos = {row["repo"] for row in landed(settings, "pull_requests")}
    assert landed_repos == {healthy}, "the healthy repository landed in full"
    assert fault.matched == 1, "a 451/403 is not retried within the run"

    # Within the hour the blocked repository costs nothing, and it stays on the list.
    fake.advance(HOUR / 2)
    second = run(settings, emu, fake)
    assert fault.matched == 1
    assert [f.name for f in second.progress.failed] == [f"{ORG}/{blocked}"]
    # After the backoff one request; the next backoff is longer (2 h, ... up to a day).
    fake.advance(HOUR)
    run(settings, emu, fake)
    assert fault.matched == 2
    fake.advance(1.5 * HOUR)
    run(settings, emu, fake)
    assert fault.matched == 2, "second backoff is two hours"
    assert source_state(settings)["repos"]

    # Once the repository answers again, it lands and the warehouse is exact.
    emu.faults.clear()
    fake.advance(DAY)
    last = run(settings, emu, fake)
    assert not last.progress.failed and not last.progress.partial
    assert_landed_exactly_once(settings, dataset)


def test_backoff_of_a_permanently_blocked_repository_is_one_request_a_day(settings, dataset, emu, fake):
    blocked = repo_names(dataset)[0]
    fault = emu.faults.add(Fault("451", rf"/repos/{ORG}/{blocked}/pulls\?", times=10**6))
    for _ in range(3 * 24):  # hourly runs for three days
        run(settings, emu, fake)
        fake.advance(HOUR)
    # 1 + 1 h + 2 h + 4 h + 8 h + 16 h, then one a day: 7 attempts in 72 hours, not 72.
    assert fault.matched <= 8, fault.matched


def test_persistent_502_on_one_pull_requests_files_is_isolated(settings, dataset, emu, fake):
    repo = repo_names(dataset)[0]
    label = f"{ORG}/{repo}#3"
    emu.faults.add(Fault("502", rf"/repos/{ORG}/{repo}/pulls/3/files", times=10**6))

    first = run(settings, emu, fake, max_retries=2)
    assert first.progress.stopped_early is None
    assert [(f.kind, f.name) for f in first.progress.failed] == [("files", label)]
    assert "502" in first.progress.failed[0].reason
    got = landed_keys(settings)
    pr3 = next(pr["id"] for pr in dataset.pull_requests(ORG, repo) if pr["number"] == 3)
    assert pr3 in got["pull_requests"] and pr3 not in {k[0] for k in got["pull_request_files"]}

    emu.faults.clear()
    fake.advance(HOUR + 1)
    emu.reset_stats()
    second = run(settings, emu, fake)
    assert not second.progress.failed
    # Only the one file list (plus the free revalidations) was fetched again.
    assert emu.stats["by_endpoint"].get("files") == 1 and "reviews" not in emu.stats["by_endpoint"]
    assert_landed_exactly_once(settings, dataset)


# -- 4 and 7. backfills converge, committed in chunks --------------------------------------------


@pytest.fixture
def big() -> Dataset:
    # 260 PRs in one repository: three pull-request pages.
    return Dataset.generate(orgs={ORG: 2}, prs_per_repo=[260, 30], seed=5, edge_cases=False)


def test_backfill_in_chunks_costs_the_minimum_and_lands_each_row_once(big, fake, tmp_path):
    with GitHubEmulator(big, clock=fake.now) as emu:
        settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, commit_every_requests=50)
        report = run(settings, emu, fake)
        assert report.progress.chunks >= 10 and len(report.load_ids) == report.progress.chunks
        # A chunk that ends inside a page costs the next one a second read of that page (per
        # repository being listed).
        minimum = minimum_requests(big)
        assert minimum < emu.stats["requests"] <= minimum + 2 * (report.progress.chunks - 1)
        assert emu.stats["requests"] <= 1.05 * minimum
        assert_landed_exactly_once(settings, big)
        assert_rerun_is_free(settings, emu, fake)


def test_backfill_stopped_by_every_rate_limit_window_converges_at_the_minimum(big, fake, tmp_path):
    with GitHubEmulator(big, clock=fake.now, rate_limit=120, rate_limit_window=HOUR) as emu:
        settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, max_rate_limit_wait=60)
        windows = 0
        while True:
            windows += 1
            report = run(settings, emu, fake)
            if report.progress.stopped_early is None:
                break
            assert windows < 20, "the backfill does not converge"
            fake.advance(HOUR + 5)
        assert windows >= 5
        cost = emu.stats["cost"]
        assert cost <= 1.05 * minimum_requests(big), (cost, minimum_requests(big))
        assert_landed_exactly_once(settings, big)  # no duplicate child (or pull-request) rows


def test_stop_while_paging_fetches_each_child_list_once(big, fake, tmp_path):
    repo = repo_names(big)[0]
    with GitHubEmulator(big, clock=fake.now) as emu:
        settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path)
        # The budget runs out at the second pull-request page of the big repository.
        emu.faults.add(Fault("primary", rf"/repos/{ORG}/{repo}/pulls\?.*page=2", seconds=2 * HOUR))
        first = run(settings, emu, fake, max_rate_limit_wait=600)
        assert first.progress.stopped_early
        fake.advance(2 * HOUR + 5)
        second = run(settings, emu, fake, max_rate_limit_wait=600)
        assert second.progress.stopped_early is None
        stats = emu.stats
        prs = len(big.expected(ORG)["pull_requests"])
        # Each child list once; the only extra child requests are those answered 403 when the
        # budget ran out (other 403s: the pull-request page's own, and another repository's
        # listing in flight at that moment), and a review list whose inline comment list was
        # refused (its reviews land with their counts, so they are asked again).
        refused = sum(
            1 for request in emu.received()
            if request.status == 403 and re.search(r"/(reviews|files|timeline|comments)(\?|$)", request.path)
        )
        timelines = sum(timeline_pages(big, r, pr["number"]) for r in repo_names(big) for pr in big.pull_requests(ORG, r))
        children = stats["by_endpoint"]["reviews"] + stats["by_endpoint"]["files"] + stats["by_endpoint"]["timeline"]
        comments = stats["by_endpoint"]["review_comments"]
        comment_pages = sum(max(1, -(-len(big.review_comments(ORG, r, pr["number"])) // 100))
                            for r in repo_names(big) for pr in big.pull_requests(ORG, r)
                            if big.reviews(ORG, r, pr["number"]))
        refused_comments = sum(1 for request in emu.received()
                               if request.status == 403 and re.search(r"/comments(\?|$)", request.path))
        assert children + comments == 2 * prs + timelines + comment_pages + refused + refused_comments
        assert refused <= 4
        assert_landed_exactly_once(settings, big)


class _KilledAfter(httpx.BaseTransport):
    """The run dies after `limit` requests: nothing of the chunk in flight is committed
    (bench/bench.py does the same with SIGKILL on a separate process)."""

    def __init__(self, limit: int) -> None:
        self._inner = httpx.HTTPTransport()
        self.limit, self.sent = limit, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        if self.sent > self.limit:
            raise SystemExit("killed")
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def test_backfill_killed_repeatedly_resumes_from_the_last_chunk(big, fake, tmp_path):
    with GitHubEmulator(big, clock=fake.now) as emu:
        settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, commit_every_requests=40)
        for kill_after in (37, 90, 61, 150, 23):
            with pytest.raises(Exception, match="killed"), make_client(emu, fake, transport=_KilledAfter(kill_after)) as client:
                land(settings, ORG, client)
        report = run(settings, emu, fake)
        assert report.progress.stopped_early is None
        # Each kill loses at most the chunk in flight (40 requests, plus the page it re-reads).
        assert emu.stats["requests"] <= minimum_requests(big) + 5 * (40 + 1)
        rows = landed_keys(settings)
        for table in TABLES:
            assert set(rows[table]) == big.expected(ORG)[table] or sorted(set(rows[table])) == sorted(
                big.expected(ORG)[table]
            )
        assert_rerun_is_free(settings, emu, fake)


# -- 5. a second change within the cursor's second ------------------------------------------------


def test_second_change_within_the_cursors_second_is_seen(settings, dataset, emu, fake):
    repo = repo_names(dataset)[0]
    dataset.edit_title(ORG, repo, 4, "first edit")
    run(settings, emu, fake)
    dataset.edit_title(ORG, repo, 4, "second edit, same second", same_second=True)
    emu.reset_stats()
    report = run(settings, emu, fake)
    titles = [r["title"] for r in landed(settings, "pull_requests") if r["number"] == 4 and r["repo"] == repo]
    assert titles[-1] == "second edit, same second" or "second edit, same second" in titles
    assert report.rows["pull_requests"] == 1
    # At no extra request: page 1 of that repository changed anyway (a 200), the rest is 304.
    # The changed page, then the PR's reviews, inline review comments, files and timeline (one page each).
    assert child_requests(dataset, repo, 4) == 4 and emu.stats["cost"] == 1 + 4
    assert_rerun_is_free(settings, emu, fake)


# -- 6. a renamed repository ----------------------------------------------------------------------


def test_renamed_repository_keeps_its_progress(settings, dataset, emu, fake):
    old = repo_names(dataset)[0]
    run(settings, emu, fake)
    dataset.rename_repository(ORG, old, "renamed")
    emu.reset_stats()
    report = run(settings, emu, fake)
    # The repository list and the renamed repository's first page changed (URLs in the payload);
    # nothing is re-read beyond them: no pull request and no child list.
    assert emu.stats["cost"] == 2 and report.rows == {t: 0 for t in (*TABLES, "teams", "team_members")}
    state = source_state(settings)
    assert [entry["name"] for entry in state["repos"].values()].count("renamed") == 1
    assert old not in {entry["name"] for entry in state["repos"].values()}
    # Changes after the rename land under the new name.
    dataset.edit_title(ORG, "renamed", 2, "after the rename")
    run(settings, emu, fake)
    edited = [r for r in landed(settings, "pull_requests") if r["title"] == "after the rename"]
    assert [r["repo"] for r in edited] == ["renamed"]
    assert_rerun_is_free(settings, emu, fake)


def test_state_saved_by_name_is_adopted_without_a_resync(settings, dataset, emu, fake):
    """State written by earlier versions (keyed by repository name) keeps its cursors. Those
    versions fetched no events and counted no inline comments: the run lists each repository once
    and fetches only the events and the reviews (with their inline comments)."""
    run(settings, emu, fake)
    pipeline = dlt.attach(pipeline_name(ORG), pipelines_dir=str(settings.pipelines_dir))
    state = pipeline.state["sources"][pipeline_name(ORG)]
    by_name = {
        entry["name"]: {"cursor": entry["cursor"], "at_cursor": [int(i) for i in entry["at_cursor"]],
                        "etag": entry["etag"]}
        for entry in state["repos"].values()
    }
    with pipeline.managed_state() as managed:
        source = managed["sources"][pipeline_name(ORG)]
        del source["repos"]
        source.setdefault("resources", {}).setdefault("pull_requests", {})["repos"] = by_name
    emu.reset_stats()
    report = run(settings, emu, fake)
    expected = dataset.expected(ORG)
    assert {t: n for t, n in report.rows.items() if n} == {
        "pull_request_events": len(expected["pull_request_events"]),
        "pull_request_reviews": len(expected["pull_request_reviews"])}
    assert "files" not in emu.stats["by_endpoint"]
    # Each repository's pull-request pages once more (page 1 revalidated first: a 304), then
    # every pull request's timeline and reviews.
    repos = repo_names(dataset)
    pulls_pages = sum(-(-len(dataset.pull_requests(ORG, r)) // 100) for r in repos)
    timelines = sum(timeline_pages(dataset, r, pr["number"]) for r in repos for pr in dataset.pull_requests(ORG, r))
    reviews = sum(review_pages(dataset, r, pr["number"]) for r in repos for pr in dataset.pull_requests(ORG, r))
    assert emu.stats["cost"] == pulls_pages + timelines + reviews
    assert not source_state(settings)["resources"]["pull_requests"]["repos"]
    assert_rerun_is_free(settings, emu, fake)


# -- 11. a future --since ---------------------------------------------------------------------------


def test_future_since_is_refused(emu, tmp_path):
    tomorrow = date.today() + timedelta(days=2)
    with pytest.raises(pydantic.ValidationError, match="in the future"):
        Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, since=tomorrow)


def test_cursor_is_never_beyond_the_newest_pull_request_seen(dataset, emu, fake, tmp_path):
    # Every generated pull request is older than this `since`: nothing lands.
    settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, since=date(2026, 6, 1))
    assert sum(run(settings, emu, fake).rows.values()) == 0
    for repo in source_state(settings)["repos"].values():
        newest = max(pr["updated_at"] for pr in dataset.pull_requests(ORG, repo["name"]))
        assert repo["cursor"] == newest, "the cursor is what was seen, never `since`"


# -- 12. reconciliation of silent review edits --------------------------------------------------------


@pytest.mark.parametrize("mode", ["rest", "graphql"])
def test_reconciliation_rereads_recent_reviews_once_a_day(dataset, tmp_path, mode):
    fake = FakeClock(MUTATION_EPOCH + HOUR)
    repo = repo_names(dataset)[0]
    dataset.add_review(ORG, repo, 5)  # PR #5 is updated "now": within reconcile_days
    with GitHubEmulator(dataset, clock=fake.now) as emu:
        settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, github_api_mode=mode)
        run(settings, emu, fake)
        dismissed = dataset.edit_review(ORG, repo, 5, 0, state="DISMISSED")

        same_day = run(settings, emu, fake)
        assert same_day.progress.reconciled_pull_requests == 0

        fake.advance(DAY)
        emu.reset_stats()
        next_day = run(settings, emu, fake)
        assert next_day.progress.reconciled_pull_requests == 1
        # One review list: a REST request and one for its inline comments, or a GraphQL query of one
        # point and one of its reviews' inline comment counts.
        assert next_day.progress.reconcile_requests == (2 if mode == "rest" else 1)
        assert (emu.stats["cost"], emu.stats["graphql_points"]) == ((2, 0) if mode == "rest" else (0, 2))
        states = [r["state"] for r in landed(settings, "pull_request_reviews") if r["id"] == dismissed["id"]]
        assert states[-1] == "DISMISSED"

        fake.advance(8 * DAY)
        late = run(settings, emu, fake)
        assert late.progress.reconciled_pull_requests == 0, "older than reconcile_days: no longer watched"
        assert not any(source_state(settings).get("recent", {}).values())


def test_no_duplicate_rows_across_repeated_runs(settings, dataset, emu, fake):
    for _ in range(3):
        run(settings, emu, fake)
    counts = Counter(landed_keys(settings)["pull_requests"])
    assert max(counts.values()) == 1


# -- 8. one malformed item ----------------------------------------------------------------------------


def test_malformed_items_are_set_aside_and_the_rest_lands(settings, dataset, emu, fake):
    repo = repo_names(dataset)[0]
    dataset.corrupt_pull_request(ORG, repo, 3, "updated_at", "2025-13-45T99:99:99Z")
    with_reviews = next(pr["number"] for pr in dataset.pull_requests(ORG, repo) if dataset.reviews(ORG, repo, pr["number"]))
    dataset.corrupt_review(ORG, repo, with_reviews, 0, "submitted_at", "yesterday")

    report = run(settings, emu, fake)

    assert report.progress.stopped_early is None and report.progress.partial
    assert len(report.progress.rejected) == 2
    assert_landed_exactly_once(settings, dataset)  # expected() leaves the two items out
    rejected = sorted(landed(settings, "rejected_items"), key=lambda r: r["kind"])
    assert [r["kind"] for r in rejected] == ["pull_request", "review"]
    assert "updated_at" in rejected[0]["reason"] and "2025-13-45T99:99:99Z" in rejected[0]["payload"]
    assert rejected[0]["pull_request_number"] == 3
    assert "submitted_at" in rejected[1]["reason"] and '"yesterday"' in rejected[1]["payload"]
    assert rejected[1]["pull_request_number"] == with_reviews


# -- an organisation is lower-cased once -----------------------------------------------------------


def test_organisation_case_is_one_pipeline_and_one_landing_path(settings, dataset, emu, fake):
    assert Settings(orgs=["ACME", "acme"], github_url=emu.url).orgs == ["acme"]
    with make_client(emu, fake) as client:
        first = land(settings, "Acme", client)
    assert first.org == "acme" and first.pipeline_name == pipeline_name("ACME") == "github_acme"
    assert {p.name for p in Path(settings.landing, "github", "pull_requests").iterdir()} == {"org=acme"}
    assert_rerun_is_free(settings, emu, fake)


def test_pending_children_saved_by_earlier_versions_are_fetched(settings, dataset, emu, fake):
    """A run stopped by an earlier version left `pending_children` keyed by repository name."""
    emu.faults.add(Fault("primary", REVIEWS, after=3, seconds=7200))
    assert run(settings, emu, fake, max_rate_limit_wait=600).progress.stopped_early
    pipeline = dlt.attach(pipeline_name(ORG), pipelines_dir=str(settings.pipelines_dir))
    with pipeline.managed_state() as managed:
        source = managed["sources"][pipeline_name(ORG)]
        names = {repo_id: entry["name"] for repo_id, entry in source["repos"].items()}
        source["pending_children"] = {
            names[repo_id]: {pr_id: {k: v for k, v in entry.items() if k in ("number", "updated_at", "kinds")}
                             for pr_id, entry in prs.items()}
            for repo_id, prs in source.pop("retry").items()
        }
    fake.advance(7205)
    assert run(settings, emu, fake).progress.stopped_early is None
    assert_landed_exactly_once(settings, dataset)
    assert not any(source_state(settings).get("retry", {}).values())


def test_chunks_end_at_page_boundaries_when_a_page_fits_so_a_cold_sync_costs_the_minimum(fake, tmp_path):
    dataset = Dataset.generate(orgs={ORG: 4}, prs_per_repo=150, seed=0, edge_cases=False)
    with GitHubEmulator(dataset, clock=fake.now) as emu:
        # A page commits a chunk to at most 401 requests (itself and up to four child lists per
        # PR), less than half the budget: no page is cut (and read twice).
        settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, commit_every_requests=1000)
        report = run(settings, emu, fake)
        assert report.progress.chunks >= 2
        assert emu.stats["requests"] == minimum_requests(dataset)
        assert_landed_exactly_once(settings, dataset)


def test_a_run_after_a_crash_between_extract_and_load_lands_the_package_and_goes_on(big, fake, tmp_path, monkeypatch):
    with GitHubEmulator(big, clock=fake.now) as emu:
        settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, commit_every_requests=100)
        real_load, calls = dlt.Pipeline.load, {"n": 0}

        def dies_on_the_third_load(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("killed between extract and load")
            return real_load(self, *args, **kwargs)

        monkeypatch.setattr(dlt.Pipeline, "load", dies_on_the_third_load)
        with pytest.raises(Exception, match="killed between extract and load"):
            run(settings, emu, fake)
        monkeypatch.setattr(dlt.Pipeline, "load", real_load)

        report = run(settings, emu, fake)  # one more run finishes the whole backfill

        assert report.progress.stopped_early is None and report.progress.chunks > 1
        assert_landed_exactly_once(settings, big)
        assert_rerun_is_free(settings, emu, fake)


def test_a_malformed_review_alone_is_set_aside(settings, dataset, emu, fake):
    """The first rejected item of a run can come from a child list (dlt needs the table named on
    the item, see the child transformers)."""
    repo = repo_names(dataset)[1]
    number = next(pr["number"] for pr in dataset.pull_requests(ORG, repo) if dataset.reviews(ORG, repo, pr["number"]))
    dataset.corrupt_review(ORG, repo, number, 0, "id", "not-a-number")

    report = run(settings, emu, fake)

    assert len(report.progress.rejected) == 1
    assert [r["kind"] for r in landed(settings, "rejected_items")] == ["review"]
    assert_landed_exactly_once(settings, dataset)
