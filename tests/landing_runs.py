"""Landing runs against the emulator on a virtual clock, and what they landed: shared by the
fault and resilience tests (its fixtures are imported by name into those modules).

Each run builds its own GitHubClient with a virtual clock (backoffs and rate-limit waits take no
real time; the emulator shares that clock so its rate-limit windows move with it).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import duckdb
import pytest

from emulator import Dataset, GitHubEmulator
from fakes import FakeClock
from destinations.merge import merge_landed_loads
from flows.credentials import github_client
from flows.extract import LandingReport, land
from settings import Settings, pipeline_name
from destinations.warehouse import open_warehouse
from sources.github.auth import TokenPool
from sources.github.client import GitHubClient

ORG = "acme"
TOKEN = "tok-SECRET-123"
TOKEN2 = "tok-OTHER-456"
T0 = 1_800_000_000.0  # virtual epoch seconds
TABLES = ("pull_requests", "pull_request_reviews", "pull_request_files", "pull_request_events")


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def dataset() -> Dataset:
    return Dataset.generate(orgs={ORG: 2}, prs_per_repo=[12, 5], seed=1, edge_cases=False)


@pytest.fixture
def emu(dataset: Dataset, fake: FakeClock):
    with GitHubEmulator(dataset, clock=fake.now) as emulator:
        yield emulator


@pytest.fixture
def rest_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """`github_api_mode=rest` for every Settings of the test (explicit arguments still win): for
    tests whose faults or request counts are on REST's review and file endpoints, which the
    default mode (`auto`, with the token these runs carry) fetches over GraphQL instead."""
    monkeypatch.setenv("PR_ANALYTICS_GITHUB_API_MODE", "rest")


@pytest.fixture
def settings(emu: GitHubEmulator, tmp_path: Path) -> Settings:
    return Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path)


def make_client(emu: GitHubEmulator, fake: FakeClock, tokens=(TOKEN,), **kwargs) -> GitHubClient:
    kwargs.setdefault("max_concurrency", 4)
    return GitHubClient(emu.url, TokenPool(list(tokens)), clock=fake, **kwargs)


def run(settings: Settings, emu: GitHubEmulator, fake: FakeClock, **kwargs) -> LandingReport:
    with make_client(emu, fake, **kwargs) as client:
        return land(settings, ORG, client)


def landed(settings: Settings, table: str) -> list[dict]:
    root = Path(settings.landing)
    if not list(root.glob(f"github/{table}/org={ORG}/date=*/*.parquet")):
        return []
    pattern = f"{settings.landing}/github/{table}/org={ORG}/date=*/*.parquet"
    return duckdb.connect().sql(f"SELECT * FROM read_parquet('{pattern}')").to_arrow_table().to_pylist()


def keys(table: str, row: dict):
    """A row's natural key: (pull request, filename) for a file, `node_id` for an event (REST's
    `id` is null in GraphQL mode), else `id`."""
    if table == "pull_request_files":
        return row["pull_request_id"], row["filename"]
    return row["node_id"] if table == "pull_request_events" else row["id"]


def landed_keys(settings: Settings) -> dict[str, list]:
    """Natural keys of every landed row, duplicates kept, sorted."""
    return {t: sorted(keys(t, r) for r in landed(settings, t)) for t in TABLES}


def expected_keys(dataset: Dataset) -> dict[str, list]:
    return {t: sorted(v) for t, v in dataset.expected(ORG).items()}


def assert_landed_exactly_once(settings: Settings, dataset: Dataset) -> None:
    got, want = landed_keys(settings), expected_keys(dataset)
    for table in TABLES:
        dupes = [k for k, n in Counter(got[table]).items() if n > 1]
        assert not dupes, f"{table}: landed more than once: {dupes[:5]}"
        missing = sorted(set(want[table]) - set(got[table]))
        extra = sorted(set(got[table]) - set(want[table]))
        assert not missing and not extra, f"{table}: missing {missing[:5]}, unexpected {extra[:5]}"
        assert got[table] == want[table]


def assert_nothing_missing(settings: Settings, dataset: Dataset) -> None:
    """Duplicates across runs are allowed (the warehouse merge de-duplicates); gaps are not."""
    got, want = landed_keys(settings), expected_keys(dataset)
    for table in TABLES:
        assert set(got[table]) == set(want[table]), (
            f"{table}: missing {sorted(set(want[table]) - set(got[table]))[:5]}, "
            f"unexpected {sorted(set(got[table]) - set(want[table]))[:5]}"
        )


def assert_rerun_is_free(settings: Settings, emu: GitHubEmulator, fake: FakeClock) -> None:
    """A second run with no changes lands nothing and costs nothing: every answer is a 304."""
    before = landed_keys(settings)
    emu.reset_stats()
    report = run(settings, emu, fake)
    stats = emu.stats
    assert report.progress.stopped_early is None
    assert report.rows == {t: 0 for t in (*TABLES, "teams", "team_members")}
    assert landed_keys(settings) == before
    assert stats["cost"] == 0 and report.requests.cost == 0, (stats["by_status"], report.requests.by_status)
    assert stats["requests"] == stats["not_modified"] == 1 + len(emu.dataset.repositories(ORG))


def repo_names(dataset: Dataset) -> list[str]:
    return [r["name"] for r in dataset.repositories(ORG)]


def pages(items: int) -> int:
    """Requests for a list of `items` at 100 a page (an empty list is one page)."""
    return max(1, -(-items // 100))


def timeline_pages(dataset: Dataset, repo: str, number: int) -> int:
    return pages(len(dataset.timeline(ORG, repo, number)))


def review_pages(dataset: Dataset, repo: str, number: int) -> int:
    """A pull request's reviews over REST: its review pages and, when it has a review, its inline
    comment pages."""
    return pages(len(dataset.reviews(ORG, repo, number))) + inline_comment_pages(dataset, repo, number)


def inline_comment_pages(dataset: Dataset, repo: str, number: int) -> int:
    """The pages of a pull request's inline comments REST reads: none without a review."""
    if not dataset.reviews(ORG, repo, number):
        return 0
    return pages(len(dataset.review_comments(ORG, repo, number)))


def child_requests(dataset: Dataset, repo: str, number: int) -> int:
    """A pull request's child lists: its review (and inline comment), file and timeline pages."""
    return (review_pages(dataset, repo, number) + pages(len(dataset.served_files(ORG, repo, number)))
            + timeline_pages(dataset, repo, number))


# Fault path patterns (searched in the path and query string).
PULLS = r"/pulls\?"  # the pull-request list pages (query string always present)
REVIEWS = r"/reviews"
FILES = r"/files"
TIMELINE = r"/timeline"


# -- the whole chain on embedded defaults: landing, then the DuckDB merge ---------------------


def land_only(settings: Settings):
    with github_client(settings) as client:
        return land(settings, ORG, client)


def merge_only(settings: Settings):
    with open_warehouse(settings.warehouse_config) as warehouse:
        return merge_landed_loads(warehouse, settings.landing, ORG, pipeline_name(ORG))


def sync(settings: Settings):
    return land_only(settings), merge_only(settings)


def warehouse_rows(settings: Settings, table: str) -> list[tuple]:
    con = duckdb.connect(str(settings.duckdb_config.path), read_only=True)
    try:
        return con.sql(f"SELECT * FROM github.{table} ORDER BY row_key").fetchall()
    finally:
        con.close()


def warehouse_keys(settings: Settings) -> dict[str, set]:
    con = duckdb.connect(str(settings.duckdb_config.path), read_only=True)
    try:
        return {
            "pull_requests": {r[0] for r in con.sql("SELECT id FROM github.pull_requests").fetchall()},
            "pull_request_reviews": {
                r[0] for r in con.sql("SELECT id FROM github.pull_request_reviews").fetchall()
            },
            "pull_request_files": set(
                con.sql("SELECT pull_request_id, filename FROM github.pull_request_files").fetchall()
            ),
            "pull_request_events": {
                r[0] for r in con.sql("SELECT node_id FROM github.pull_request_events").fetchall()
            },
        }
    finally:
        con.close()


def inline_comment_counts(dataset: Dataset) -> dict[int, int]:
    """Each review's inline comments, by review id, as the dataset serves them."""
    counts: dict[int, int] = {}
    for repo in dataset.repositories(ORG):
        for pr in dataset.pull_requests(ORG, repo["name"]):
            for review in dataset.reviews(ORG, repo["name"], pr["number"]):
                counts[review["id"]] = 0
            for comment in dataset.review_comments(ORG, repo["name"], pr["number"]):
                counts[comment["pull_request_review_id"]] += 1
    return counts


def assert_warehouse_matches(settings: Settings, dataset: Dataset) -> None:
    expected = dataset.expected(ORG)
    keys = warehouse_keys(settings)
    for table in TABLES:
        assert keys[table] == expected[table], table
        # ... and each exactly once.
        assert len(warehouse_rows(settings, table)) == len(expected[table]), table
    con = duckdb.connect(str(settings.duckdb_config.path), read_only=True)
    try:
        inline = dict(con.sql("SELECT id, inline_comments FROM github.pull_request_reviews").fetchall())
    finally:
        con.close()
    counts = inline_comment_counts(dataset)
    assert inline == {review_id: counts[review_id] for review_id in inline}, "inline comment counts"
