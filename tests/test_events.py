"""The `pull_request_events` child table end to end against the emulator over real connections:
the timeline's kept events land and merge as the dataset implies, only new or changed pull
requests fetch their timeline, a failing timeline goes on the retry list, a malformed event is set
aside, and state written before events existed gets them once."""

from __future__ import annotations

import logging
import re
from collections import Counter
from datetime import timezone

import dlt
import duckdb
import pytest

from emulator import Dataset, Fault, GitHubEmulator
from emulator.data import TIMELINE_KEPT
from settings import Settings, pipeline_name
from landing_runs import (  # noqa: F401 - dataset, emu, fake and settings are shared fixtures
    ORG,
    TOKEN,
    assert_landed_exactly_once,
    assert_rerun_is_free,
    assert_warehouse_matches,
    dataset,
    emu,
    fake,
    inline_comment_pages,
    landed,
    merge_only,
    repo_names,
    rest_mode,
    run,
    pages,
    settings,
    timeline_pages,
)
from sources.github.schema import PULL_REQUEST_EVENTS, TIMELINE_EVENTS, row_key

HOUR = 3600.0
_TIMELINE_PATH = re.compile(r"^/repos/[^/]+/([^/]+)/issues/(\d+)/timeline\?")


def timeline_requests(emu: GitHubEmulator) -> Counter[tuple[str, int]]:
    """Timeline requests the emulator received since its stats were reset, per (repo, number)."""
    found = (_TIMELINE_PATH.match(r.path) for r in emu.received())
    return Counter((m.group(1), int(m.group(2))) for m in found if m)


def all_prs(dataset: Dataset) -> list[tuple[str, int]]:
    return [(repo, pr["number"]) for repo in repo_names(dataset) for pr in dataset.pull_requests(ORG, repo)]


def dataset_events(dataset: Dataset, team_slugs: bool = True) -> set[tuple]:
    """What the warehouse should hold: each kept event of each pull request, as a row. Over
    GraphQL (`team_slugs` False) a requested team's slug is null: its fields need read:org. A
    commit has no actor, its author date as `created_at`, its sha and its committer date."""
    rows = set()
    for repo, number in all_prs(dataset):
        pr_id = next(pr["id"] for pr in dataset.pull_requests(ORG, repo) if pr["number"] == number)
        for e in dataset.events(ORG, repo, number):
            if e["event"] == "committed":
                rows.add((pr_id, e["node_id"], "committed", None, e["author"]["date"], None, None, e["sha"],
                          e["committer"]["date"]))
                continue
            reviewer, team = e.get("requested_reviewer"), e.get("requested_team")
            rows.add((pr_id, e["node_id"], e["event"], (e["actor"] or {}).get("login"), e["created_at"],
                      reviewer["login"] if reviewer else None, team["slug"] if team and team_slugs else None,
                      e.get("commit_id"), None))
    return rows


def warehouse_events(settings: Settings) -> list[tuple]:
    con = duckdb.connect(str(settings.duckdb_config.path), read_only=True)
    try:
        rows = con.sql(
            "SELECT pull_request_id, node_id, event, actor_login, created_at, requested_reviewer_login, "
            "requested_team_slug, commit_id, committed_at FROM github.pull_request_events"
        ).fetchall()
    finally:
        con.close()

    def utc(moment: datetime | None) -> str | None:
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None

    return [(*r[:4], utc(r[4]), *r[5:8], utc(r[8])) for r in rows]


def test_events_land_and_merge_as_the_dataset_implies(settings, dataset, emu, fake):
    served = Counter(e["event"] for repo, n in all_prs(dataset) for e in dataset.timeline(ORG, repo, n))
    assert {"labeled", "reviewed"} <= set(served), "the timelines hold kinds that are not kept"
    assert {"committed", "commented"} <= set(served)

    report = run(settings, emu, fake)
    merge_only(settings)

    got = warehouse_events(settings)
    assert len(got) == len(set(got)) and set(got) == dataset_events(dataset, team_slugs=False)  # default: GraphQL
    kept = sum(n for kind, n in served.items() if kind in TIMELINE_KEPT)
    assert report.rows["pull_request_events"] == len(got) == kept
    landed_kinds = {row["event"] for row in landed(settings, "pull_request_events")}
    assert landed_kinds <= TIMELINE_EVENTS and {"review_requested", "closed"} <= landed_kinds
    assert not landed(settings, "rejected_items"), "other kinds are dropped, never rejected"

    # A review request, a merge and a new pull request: their events replace the old sets.
    repo = repo_names(dataset)[0]
    open_prs = [pr["number"] for pr in dataset.pull_requests(ORG, repo) if pr["state"] == "open"]
    requested = dataset.request_review(ORG, repo, open_prs[0])
    dataset.merge_pull_request(ORG, repo, open_prs[1])
    dataset.add_pull_request(ORG, repo)
    run(settings, emu, fake)
    merge_only(settings)

    assert set(warehouse_events(settings)) == dataset_events(dataset, team_slugs=False)
    assert requested["node_id"] in {row[1] for row in warehouse_events(settings)}
    assert_warehouse_matches(settings, dataset)


def test_only_new_or_changed_pull_requests_fetch_their_timeline(rest_mode, settings, dataset, emu, fake):
    run(settings, emu, fake)
    assert timeline_requests(emu) == {pr: timeline_pages(dataset, *pr) for pr in all_prs(dataset)}

    assert_rerun_is_free(settings, emu, fake)  # not one timeline request, cost 0
    assert not timeline_requests(emu)

    repo, other = repo_names(dataset)
    dataset.request_review(ORG, repo, 2, team="backend")
    dataset.add_review(ORG, repo, 5)
    dataset.edit_title(ORG, other, 1, "retitled")
    new = dataset.add_pull_request(ORG, other)
    emu.reset_stats()
    report = run(settings, emu, fake)
    changed = [(repo, 2), (repo, 5), (other, 1), (other, new)]
    assert timeline_requests(emu) == {pr: timeline_pages(dataset, *pr) for pr in changed}
    assert report.rows["pull_requests"] == 4
    merge_only(settings)
    assert set(warehouse_events(settings)) == dataset_events(dataset)


@pytest.mark.parametrize("status", ["502", "403"])
def test_a_timeline_that_keeps_failing_goes_on_the_retry_list(status, rest_mode, settings, dataset, emu, fake):
    repo = repo_names(dataset)[0]
    label = f"{ORG}/{repo}#3"
    fault = emu.faults.add(Fault(status, rf"/repos/{ORG}/{repo}/issues/3/timeline", times=10**6))

    first = run(settings, emu, fake, max_retries=2)
    assert first.progress.stopped_early is None and first.progress.partial
    assert [(f.kind, f.name) for f in first.progress.failed] == [("events", label)]
    assert status in first.progress.failed[0].reason
    pr3 = next(pr["id"] for pr in dataset.pull_requests(ORG, repo) if pr["number"] == 3)
    assert pr3 in {r["pull_request_id"] for r in landed(settings, "pull_request_reviews") + landed(settings, "pull_request_files")}
    assert pr3 not in {r["pull_request_id"] for r in landed(settings, "pull_request_events")}

    # Within the backoff the timeline is not asked for again, and the run stays partial.
    matched = fault.matched
    fake.advance(HOUR / 2)
    second = run(settings, emu, fake)
    assert fault.matched == matched and [f.kind for f in second.progress.failed] == ["events"]

    emu.faults.clear()
    fake.advance(HOUR)
    emu.reset_stats()
    third = run(settings, emu, fake)
    assert not third.progress.failed and not third.progress.partial
    # Only that timeline (plus the free revalidations) was fetched again.
    assert timeline_requests(emu) == {(repo, 3): timeline_pages(dataset, repo, 3)}
    assert not {"reviews", "files"} & set(emu.stats["by_endpoint"])
    assert_landed_exactly_once(settings, dataset)


@pytest.mark.parametrize(("mode", "kind", "field", "value", "named"), [
    ("auto", "review_requested", "created_at", "soon", "created_at"),
    ("rest", "committed", "author", {"name": "A Developer", "date": "soon"}, "author.date"),
])
def test_a_malformed_event_is_set_aside_and_the_rest_lands(mode, kind, field, value, named, settings, dataset,
                                                           emu, fake):
    settings = settings.model_copy(update={"github_api_mode": mode})
    repo = repo_names(dataset)[1]
    number, index = next((n, i) for r, n in all_prs(dataset) if r == repo
                         for i, e in enumerate(dataset.events(ORG, repo, n)) if e["event"] == kind)
    bad = dataset.corrupt_event(ORG, repo, number, index, field, value)

    report = run(settings, emu, fake)

    assert report.progress.partial and len(report.progress.rejected) == 1
    [rejected] = landed(settings, "rejected_items")
    assert (rejected["kind"], rejected["item_key"], rejected["pull_request_number"]) == ("event", bad["node_id"], number)
    assert named in rejected["reason"] and '"soon"' in rejected["payload"]
    assert_landed_exactly_once(settings, dataset)  # expected() leaves the event out


@pytest.mark.parametrize("mode", ["rest", "auto"])
@pytest.mark.parametrize("landed_with", [None, ["reviews", "files", "events"],
                                         ["reviews", "files", "events", "events with commits and comments"]],
                         ids=["before events", "before commits and comments", "before inline comment counts"])
def test_state_from_before_events_fetches_them_once(mode, landed_with, settings, dataset, emu, fake):
    """Repositories synced by an earlier version (state without `child_kinds`: no events; events
    without commits and comments; reviews without their inline comment counts) get what they lack
    from the retry list, once: no file list is read again, nor an events list that was whole."""
    settings = settings.model_copy(update={"github_api_mode": mode})
    run(settings, emu, fake)
    merge_only(settings)
    pipeline = dlt.attach(pipeline_name(ORG), pipelines_dir=str(settings.pipelines_dir))
    with pipeline.managed_state() as managed:
        for entry in managed["sources"][pipeline_name(ORG)]["repos"].values():
            if landed_with is None:
                del entry["child_kinds"]
            else:
                entry["child_kinds"] = landed_with
    con = duckdb.connect(str(settings.duckdb_config.path))
    try:  # no version before this one counted inline comments
        con.execute("UPDATE github.pull_request_reviews SET inline_comments = NULL")
    finally:
        con.close()
    repo = repo_names(dataset)[0]
    dataset.add_review(ORG, repo, 4)  # changed meanwhile: fetched in full, its timeline once
    emu.reset_stats()

    report = run(settings, emu, fake)

    assert report.progress.stopped_early is None and not report.progress.partial
    events_due = landed_with is None or "events with commits and comments" not in landed_with
    if mode == "rest":
        timelines = {pr: timeline_pages(dataset, *pr) for pr in all_prs(dataset)}
        assert timeline_requests(emu) == (timelines if events_due else {(repo, 4): timelines[repo, 4]})
        assert emu.stats["by_endpoint"]["reviews"] == sum(pages(len(dataset.reviews(ORG, *pr)))
                                                         for pr in all_prs(dataset))
        assert emu.stats["by_endpoint"]["review_comments"] == sum(inline_comment_pages(dataset, *pr)
                                                                 for pr in all_prs(dataset))
        assert emu.stats["by_endpoint"]["files"] == 1
    else:  # the default, with a token: the changed pull request's lists and the others' due lists
        assert not {"reviews", "files", "timeline", "review_comments"} & set(emu.stats["by_endpoint"])
        assert report.progress.graphql_pull_requests == len(all_prs(dataset))
    assert report.rows["pull_requests"] == 1
    merge_only(settings)
    assert set(warehouse_events(settings)) == dataset_events(dataset, team_slugs=mode == "rest")
    assert_warehouse_matches(settings, dataset)
    assert_rerun_is_free(settings, emu, fake)


def test_events_keyed_by_rest_id_before_are_replaced_never_held_twice(settings, dataset, emu, fake):
    """A warehouse written before events were keyed by node_id holds REST-id row keys and no
    timeline_position. A pull request whose events are fetched again (here over GraphQL) has its
    old rows replaced, as every child list is (the replace scope): no event is held twice, and
    the pull requests not fetched again keep their rows as they were."""
    run(settings, emu, fake)
    merge_only(settings)
    con = duckdb.connect(str(settings.duckdb_config.path))
    try:  # that version landed neither commits nor comments
        con.execute("DELETE FROM github.pull_request_events WHERE event IN ('committed', 'commented')")
        for key, event_id in con.sql("SELECT row_key, id FROM github.pull_request_events").fetchall():
            con.execute("UPDATE github.pull_request_events SET row_key = ?, timeline_position = NULL "
                        "WHERE row_key = ?", [row_key(PULL_REQUEST_EVENTS.name, event_id), key])
    finally:
        con.close()
    repo = repo_names(dataset)[0]
    number = next(pr["number"] for pr in dataset.pull_requests(ORG, repo) if pr["state"] == "open")
    dataset.request_review(ORG, repo, number)
    changed_id = next(pr["id"] for pr in dataset.pull_requests(ORG, repo) if pr["number"] == number)

    report = run(settings.model_copy(update={"github_api_mode": "graphql"}), emu, fake)
    merge_only(settings)

    assert report.progress.graphql_pull_requests == 1 and not report.progress.partial
    con = duckdb.connect(str(settings.duckdb_config.path), read_only=True)
    try:
        rows = con.sql("SELECT pull_request_id, node_id, row_key, timeline_position, event "
                       "FROM github.pull_request_events").fetchall()
    finally:
        con.close()
    expected = {(pr["id"], e["node_id"]) for repo_name in repo_names(dataset)
                for pr in dataset.pull_requests(ORG, repo_name) for e in dataset.events(ORG, repo_name, pr["number"])
                if pr["id"] == changed_id or e["event"] not in ("committed", "commented")}
    assert len(rows) == len(expected) and {(pr_id, node) for pr_id, node, *_ in rows} == expected
    for pr_id, node_id, key, position, event in rows:
        if pr_id == changed_id:  # fetched again: keyed by node_id (a commit with its PR), in timeline order
            natural = (pr_id, node_id) if event == "committed" else (node_id,)
            assert key == row_key(PULL_REQUEST_EVENTS.name, *natural) and position is not None
        else:
            assert position is None and key != row_key(PULL_REQUEST_EVENTS.name, node_id)
    changed = sorted(position for pr_id, _, _, position, _ in rows if pr_id == changed_id)
    assert changed == list(range(len(changed)))


@pytest.mark.parametrize("reads_org", [True, False], ids=["read:org", "repo only"])
def test_graphql_lands_team_slugs_when_every_token_reads_the_organisation(reads_org, settings, dataset, emu, fake,
                                                                           caplog):
    """The X-OAuth-Scopes header of the REST answers tells a token's scopes at no cost: with
    read:org, the GraphQL query asks for a requested team's slug (REST's rows exactly); without,
    it names no Team field (GitHub would refuse the whole query) and one info line says so."""
    if reads_org:
        emu.graphql.org_readers = {TOKEN}
    caplog.set_level(logging.INFO, logger="sources.github.source")
    report = run(settings, emu, fake)  # the default mode: GraphQL with a token
    merge_only(settings)

    assert report.progress.graphql_pull_requests and not report.progress.partial
    assert set(warehouse_events(settings)) == dataset_events(dataset, team_slugs=reads_org)
    assert any(e.get("requested_team") for repo, n in all_prs(dataset) for e in dataset.events(ORG, repo, n))
    said = [r.getMessage() for r in caplog.records if "read:org" in r.getMessage()]
    assert len(said) == (0 if reads_org else 1)


def test_a_server_error_in_the_one_time_relisting_fails_only_that_repository(rest_mode, settings, dataset, emu, fake):
    """Upgrading lists every repository's pull requests once more (their events are due again).
    A repository whose listing keeps failing then is one failed repository, retried later, never
    the end of the organisation's run; the others get their events, and so does it next time."""
    run(settings, emu, fake)
    merge_only(settings)
    pipeline = dlt.attach(pipeline_name(ORG), pipelines_dir=str(settings.pipelines_dir))
    with pipeline.managed_state() as managed:
        for entry in managed["sources"][pipeline_name(ORG)]["repos"].values():
            entry["child_kinds"] = ["reviews", "files", "events"]
    broken, fine = repo_names(dataset)[:2]
    # The normal listing's page 1 (a 304) passes; the one-time relisting's pages fail, retries too.
    emu.faults.add(Fault("502", path_regex=rf"/repos/{ORG}/{broken}/pulls\?", times=50, after=1))
    emu.reset_stats()

    report = run(settings, emu, fake)

    assert [item.kind for item in report.progress.failed] == ["repository"]
    assert report.progress.failed[0].name == f"{ORG}/{broken}"
    relisted = {repo for repo, _ in timeline_requests(emu)}
    assert fine in relisted and broken not in relisted
    emu.faults.clear()
    fake.advance(2 * 86400)  # past the repository's retry time
    run(settings, emu, fake)
    assert broken in {repo for repo, _ in timeline_requests(emu)}
