"""The handoff from the landing to the merge: a manifest per load, damaged loads set aside and
fetched again, paths that are data and never patterns (emulator -> landing -> DuckDB)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from fsspec.implementations.local import LocalFileSystem

from destinations.handoff import Handoff
from destinations.landing import Landing
from emulator import Dataset, GitHubEmulator
from settings import Settings, pipeline_name
from landing_runs import ORG, TABLES, assert_warehouse_matches, land_only, merge_only, warehouse_keys


@pytest.fixture
def dataset() -> Dataset:
    return Dataset.generate(orgs={ORG: 2}, prs_per_repo=[8, 6], seed=11)


@pytest.fixture
def emulator(dataset: Dataset):
    with GitHubEmulator(dataset) as emu:
        yield emu


def make_settings(emulator: GitHubEmulator, data_dir: Path) -> Settings:
    return Settings(orgs=[ORG], github_url=emulator.url, data_dir=data_dir, github_token="x")


@pytest.fixture
def settings(emulator: GitHubEmulator, tmp_path: Path) -> Settings:
    return make_settings(emulator, tmp_path)


def handoff(settings: Settings) -> Handoff:
    return Handoff(Landing(settings.landing), pipeline_name(ORG))


def parquet_rows(path: Path) -> int:
    return duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0]


def test_each_load_has_a_manifest_of_its_files_and_rows(settings, dataset):
    report = land_only(settings)
    [load_id] = report.load_ids
    manifest = handoff(settings).manifest(load_id)
    assert manifest is not None and manifest.org == ORG and manifest.load_id == load_id
    root = Path(settings.landing, "github")
    on_disk = {str(p.relative_to(root)) for t in TABLES for p in (root / t).rglob(f"{load_id}.*.parquet")}
    assert {f.path for f in manifest.files if f.table in TABLES} == on_disk
    for entry in manifest.files:
        assert parquet_rows(root / entry.path) == entry.rows
    for table in TABLES:
        assert manifest.rows(table) == report.rows[table] == len(dataset.expected(ORG)[table])
    # Every repository it carries rows of, with the oldest `updated_at`: what to fetch again.
    assert len(manifest.repositories) == 2


def test_a_load_whose_file_was_deleted_is_set_aside_and_fetched_again(settings, dataset):
    first = land_only(settings)
    repo = dataset.repositories(ORG)[0]["name"]
    dataset.add_review(ORG, repo, 2)
    second = land_only(settings)  # a later load, which must not be blocked
    manifest = handoff(settings).manifest(first.load_ids[0])
    lost = next(f for f in manifest.files if f.table == "pull_request_files")
    Path(settings.landing, "github", lost.path).unlink()

    report = merge_only(settings)

    [(load_id, reason)] = report.loads_set_aside.items()
    assert load_id == first.load_ids[0] and lost.path in reason and "missing" in reason
    assert report.loads_merged == second.load_ids, "the load after it is merged"
    ledger = duckdb.connect(str(settings.duckdb_config.path), read_only=True).sql(
        "SELECT load_id FROM github.merged_loads").fetchall()
    assert (first.load_ids[0],) not in ledger, "never ledgered without its rows"

    # The next run fetches again what the set-aside load held, and the warehouse is exact.
    again = land_only(settings)
    assert again.loads_refetched == [first.load_ids[0]]
    assert sum(again.rows.values()) > 0
    merge_only(settings)
    assert_warehouse_matches(settings, dataset)
    # ... and only once: the run after that is a no-change run.
    assert sum(land_only(settings).rows.values()) == 0


def test_a_truncated_file_sets_its_load_aside_instead_of_blocking_the_others(settings, dataset):
    first = land_only(settings)
    manifest = handoff(settings).manifest(first.load_ids[0])
    cut = Path(settings.landing, "github", next(f for f in manifest.files if f.table == "pull_requests").path)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])

    report = merge_only(settings)
    assert list(report.loads_set_aside) == first.load_ids and "unreadable" in report.loads_set_aside[first.load_ids[0]]
    assert merge_only(settings).loads_set_aside == {}, "set aside once, not retried as a failure"

    land_only(settings)
    merge_only(settings)
    assert_warehouse_matches(settings, dataset)


def test_row_counts_are_checked_against_the_manifest(settings, dataset):
    first = land_only(settings)
    folder = Path(settings.landing, "github", "_manifests", pipeline_name(ORG))
    path = folder / f"{first.load_ids[0]}.json"
    raw = json.loads(path.read_text())
    raw["files"][0]["rows"] += 1  # the file holds one row fewer than the load landed
    path.write_text(json.dumps(raw))

    report = merge_only(settings)

    assert list(report.loads_set_aside) == first.load_ids
    assert "manifest says" in report.loads_set_aside[first.load_ids[0]]
    assert all(not keys for keys in warehouse_keys(settings).values())


@pytest.mark.parametrize("folder", ["runs/e[9]", "d[1]", "star*"])
def test_a_data_dir_holding_glob_characters_is_a_path_not_a_pattern(folder, emulator, dataset, tmp_path):
    # A sibling that the pattern `d[1]` would match: it must stay untouched and unread.
    (tmp_path / "d1" / "landing" / "github" / "_dlt_loads").mkdir(parents=True)
    settings = make_settings(emulator, tmp_path / folder)

    land_only(settings)
    report = merge_only(settings)

    assert len(report.loads_merged) == 1
    assert_warehouse_matches(settings, dataset)
    assert not (tmp_path / "d1" / "warehouse.duckdb").exists()


def test_a_child_list_that_drops_to_zero_replaces_the_old_rows_with_none(settings, dataset):
    land_only(settings)
    merge_only(settings)
    repo = dataset.repositories(ORG)[0]["name"]
    pr = next(p for p in dataset.pull_requests(ORG, repo) if dataset.files(ORG, repo, p["number"]))
    for _ in dataset.files(ORG, repo, pr["number"]):
        dataset.remove_file(ORG, repo, pr["number"])  # every file of the PR is gone
    assert dataset.files(ORG, repo, pr["number"]) == []

    land_only(settings)
    report = merge_only(settings)

    assert report.rows_deleted["pull_request_files"] > 0
    assert_warehouse_matches(settings, dataset)
    assert not [k for k in warehouse_keys(settings)["pull_request_files"] if k[0] == pr["id"]]
    # Each load records the child lists it fetched: the replacement's scope.
    con = duckdb.connect(str(settings.duckdb_config.path), read_only=True)
    fetched = con.sql(
        "SELECT kind, items FROM github.pull_request_child_fetches WHERE pull_request_id = ? ORDER BY kind",
        params=[pr["id"]],
    ).fetchall()
    con.close()
    events = len(dataset.events(ORG, repo, pr["number"]))  # the timeline's kept kinds only
    assert fetched == [("events", events), ("files", 0), ("reviews", len(dataset.reviews(ORG, repo, pr["number"])))]


# -- issue 18.1: handoff files appear whole or not at all; an unreadable one never blocks -------


_WRITER = """
import sys
from destinations.handoff import Handoff, Manifest, ManifestFile
from destinations.landing import Landing
handoff = Handoff(Landing(sys.argv[1]), "github_acme")
files = tuple(ManifestFile("pull_requests", f"pull_requests/org=acme/date=2026-01-01/{i}.parquet", i)
              for i in range(20000))  # about 2 MB: a write takes a while
print("ready", flush=True)
i = 0
while True:
    handoff.write_manifest(Manifest("github_acme", "acme", "1700000000.5", files, {"1": f"x{i}"}))
    i += 1
"""


def test_a_manifest_killed_while_written_is_whole_or_absent(tmp_path):
    """SIGKILL a process that writes a 2 MB manifest over and over, at 8 moments: the file is
    always the old or the new one, never a part (open + write left an empty or cut file)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[1]
    path = tmp_path / "github" / "_manifests" / "github_acme" / "1700000000.5.json"
    for kill in range(8):
        child = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], cwd=root,
                                 stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(root)})
        assert child.stdout.readline().strip() == b"ready"
        time.sleep(0.05 + 0.037 * kill)
        child.send_signal(signal.SIGKILL)
        child.wait()
        if path.exists():
            manifest = Handoff(Landing(str(tmp_path)), "github_acme").manifest("1700000000.5")
            assert manifest is not None and len(manifest.files) == 20000


def test_an_empty_manifest_left_by_a_crash_is_rebuilt_and_never_blocks(settings, dataset):
    """A manifest an earlier version's crashed write left empty: the merge sets that load aside,
    naming the file, and merges the loads behind it; the next landing rebuilds the manifest from
    the load's landed files (with the repositories it covers) and fetches again what it held."""
    first = land_only(settings)
    repo = dataset.repositories(ORG)[0]["name"]
    dataset.add_review(ORG, repo, 2)
    second = land_only(settings)
    folder = Path(settings.landing, "github", "_manifests", pipeline_name(ORG))
    (folder / f"{first.load_ids[0]}.json").write_text("")

    report = merge_only(settings)
    [(load_id, reason)] = report.loads_set_aside.items()
    assert load_id == first.load_ids[0] and f"{first.load_ids[0]}.json" in reason and "unreadable" in reason
    assert report.loads_merged == second.load_ids

    again = land_only(settings)
    manifest = handoff(settings).manifest(first.load_ids[0])
    assert manifest is not None and len(manifest.repositories) == 2  # rebuilt, with what it covers
    assert again.loads_refetched == first.load_ids and sum(again.rows.values()) > 0
    merge_only(settings)
    assert_warehouse_matches(settings, dataset)


def test_an_empty_set_aside_marker_never_fails_a_run(settings, dataset):
    """A set-aside marker left empty by a crashed write: the load stays set aside, its rows are
    fetched again, and every later run works (it used to fail on JSONDecodeError)."""
    first = land_only(settings)
    folder = Path(settings.landing, "github", "_manifests", pipeline_name(ORG))
    (folder / f"{first.load_ids[0]}.set_aside.json").write_text("")

    report = merge_only(settings)
    assert report.loads_merged == [] and first.load_ids[0] not in report.loads_set_aside  # already aside
    again = land_only(settings)
    assert again.loads_refetched == first.load_ids
    merge_only(settings)
    assert_warehouse_matches(settings, dataset)
    marker = json.loads((folder / f"{first.load_ids[0]}.set_aside.json").read_text())
    assert marker["rewound"] is True


# -- issue 18.2: a storage fault is retried, never taken for damage ------------------------------


class FlakyFileSystem(LocalFileSystem):
    """A local file system whose first `failures` opens of a landed Parquet file time out."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def open(self, path, mode="rb", **kwargs):  # noqa: A003 - fsspec's name
        if str(path).endswith(".parquet") and "r" in mode and self.failures > 0:
            self.failures -= 1
            raise TimeoutError("The read operation timed out")
        return super().open(path, mode, **kwargs)


@pytest.fixture
def no_backoff(monkeypatch):
    import destinations.handoff as handoff_module

    monkeypatch.setattr(handoff_module, "READ_BACKOFF", 0.0)


def merge_with(settings: Settings, fs: LocalFileSystem):
    from destinations.merge import merge_landed_loads
    from destinations.warehouse import open_warehouse

    with open_warehouse(settings.warehouse_config) as warehouse:
        return merge_landed_loads(warehouse, settings.landing, ORG, pipeline_name(ORG), fs=fs)


def test_a_storage_blip_while_footers_are_read_is_retried(settings, dataset, no_backoff):
    land_only(settings)
    report = merge_with(settings, FlakyFileSystem(failures=3))
    assert report.loads_set_aside == {} and len(report.loads_merged) == 1
    assert_warehouse_matches(settings, dataset)


def test_a_storage_outage_stops_the_merge_and_never_sets_an_intact_load_aside(settings, dataset, no_backoff):
    from destinations.handoff import StorageUnavailable

    first = land_only(settings)
    with pytest.raises(StorageUnavailable, match="after 4 attempts"):
        merge_with(settings, FlakyFileSystem(failures=1000))
    assert handoff(settings).set_aside_loads() == {}
    report = merge_only(settings)  # storage healthy again
    assert report.loads_merged == first.load_ids
    assert_warehouse_matches(settings, dataset)


# -- issue 18.3: a rewind keeps an unfinished backfill's place ------------------------------------


def test_a_load_set_aside_during_a_first_backfill_loses_nothing(tmp_path):
    """A repository of 250 pull requests, its first backfill stopped by the rate limit after the
    first page; that load is set aside (a file lost). The rewind fetches what the load held and
    the rest of the backfill: later runs converge to the exact warehouse (the rewind used to set
    the cursor to the load's oldest row and drop the listing: 100 of 250 ever landed)."""
    from emulator.faults import Fault

    dataset = Dataset.generate(orgs={ORG: 1}, prs_per_repo=[250], seed=11)
    with GitHubEmulator(dataset) as emu:
        settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, github_token="x",
                            github_api_mode="rest", max_rate_limit_wait=0)
        emu.faults.add(Fault("primary", path_regex=r"/pulls\?.*page=2", seconds=1))
        first = land_only(settings)
        assert first.progress.stopped_early and first.rows["pull_requests"] == 100
        manifest = handoff(settings).manifest(first.load_ids[0])
        lost = next(f for f in manifest.files if f.table == "pull_requests")
        Path(settings.landing, "github", lost.path).unlink()
        assert list(merge_only(settings).loads_set_aside) == first.load_ids
        import time

        time.sleep(1.5)  # the emulator's rate-limit window reopens
        for _ in range(3):
            land_only(settings)
            merge_only(settings)
    assert_warehouse_matches(settings, dataset)


# -- issue 18.4: no second copy of what landed ----------------------------------------------------


def test_no_local_copy_of_landed_files_is_kept_and_dlt_info_still_works(settings, dataset):
    """dlt kept each completed package's job files under the pipelines folder: a second copy of
    everything ever landed. Once a load is landed and its manifest written, only the landing
    holds its files; the state and `dlt pipeline info` are intact."""
    import subprocess
    import sys

    first = land_only(settings)
    dataset.add_review(ORG, dataset.repositories(ORG)[0]["name"], 2)
    second = land_only(settings)
    kept = [p for p in Path(settings.pipelines_dir).rglob("*") if p.suffix in (".parquet", ".gz", ".jsonl")]
    assert kept == []
    landed_files = list(Path(settings.landing, "github").rglob("*.parquet"))
    assert landed_files and all(f.stat().st_size for f in landed_files)
    for load_id in first.load_ids + second.load_ids:  # the manifests came from dlt's record
        manifest = handoff(settings).manifest(load_id)
        assert manifest is not None and manifest.files and len(manifest.repositories) >= 1
    info = subprocess.run(
        [sys.executable, "-m", "dlt", "pipeline", "--pipelines-dir", str(settings.pipelines_dir),
         pipeline_name(ORG), "info"], capture_output=True, text=True, check=True).stdout
    assert "Has 2 completed load packages" in info and "github_acme" in info
    merge_only(settings)
    assert_warehouse_matches(settings, dataset)


def kill_before_the_first_manifest(settings, monkeypatch) -> str:
    """A landing killed after dlt landed its load but before the manifest was written."""
    calls = []

    def dies(self, manifest):
        calls.append(manifest.load_id)
        raise KeyboardInterrupt  # what a kill at this moment leaves: the load landed, no manifest

    monkeypatch.setattr(Handoff, "write_manifest", dies)
    with pytest.raises(KeyboardInterrupt):
        land_only(settings)
    monkeypatch.undo()
    [load_id] = calls
    assert handoff(settings).manifest(load_id) is None
    return load_id


def test_a_run_killed_before_its_manifest_is_recovered_from_dlts_record(settings, dataset, monkeypatch):
    """The next landing writes the manifest from dlt's record of the package (kept until the
    manifest holds it), with the repositories its rows cover; then the local copies go."""
    load_id = kill_before_the_first_manifest(settings, monkeypatch)
    assert list(Path(settings.pipelines_dir).rglob("*.parquet"))  # dlt's record, still there

    again = land_only(settings)
    manifest = handoff(settings).manifest(load_id)
    assert manifest is not None and len(manifest.repositories) == 2
    root = Path(settings.landing, "github")
    for entry in manifest.files:
        assert parquet_rows(root / entry.path) == entry.rows
    assert {t: manifest.rows(t) for t in TABLES} == {t: len(dataset.expected(ORG)[t]) for t in TABLES}
    assert sum(again.rows.values()) == 0  # nothing fetched twice
    assert not list(Path(settings.pipelines_dir).rglob("*.parquet"))
    merge_only(settings)
    assert_warehouse_matches(settings, dataset)


def test_a_file_lost_before_the_manifest_is_recovered_is_noticed(settings, dataset, monkeypatch):
    """Found by the crash-loop bench: with dlt's own delete_completed_jobs the package's file list
    went with the load, so a manifest rebuilt from the landing left out a file lost meanwhile and
    the merge took the rest as the whole load. The manifest comes from dlt's record: the loss sets
    the load aside and its rows are fetched again."""
    load_id = kill_before_the_first_manifest(settings, monkeypatch)
    lost = next(Path(settings.landing, "github", "pull_request_reviews").rglob(f"{load_id}.*.parquet"))
    lost.unlink()
    land_only(settings)
    report = merge_only(settings)
    assert list(report.loads_set_aside) == [load_id] and "is missing" in report.loads_set_aside[load_id]
    land_only(settings)
    merge_only(settings)
    assert_warehouse_matches(settings, dataset)


def test_temporaries_of_writes_a_kill_cut_short_are_swept_once_an_hour_old(settings, dataset):
    import os
    import time

    land_only(settings)
    folder = Path(settings.landing, "github", "_manifests", pipeline_name(ORG))
    old, fresh = folder / ".1.json.aaa.tmp", folder / ".2.json.bbb.tmp"
    old.write_text("{")
    fresh.write_text("{")  # perhaps another process's write in flight: never touched
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    land_only(settings)
    assert not old.exists() and fresh.exists()


def test_a_user_who_sets_dlts_delete_completed_jobs_still_gets_whole_manifests(settings, dataset, monkeypatch):
    """dlt deletes the files as the load completes: the rows come from the landed files."""
    monkeypatch.setenv("LOAD__DELETE_COMPLETED_JOBS", "true")
    report = land_only(settings)
    manifest = handoff(settings).manifest(report.load_ids[0])
    assert {t: manifest.rows(t) for t in TABLES} == {t: len(dataset.expected(ORG)[t]) for t in TABLES}
    merge_only(settings)
    assert_warehouse_matches(settings, dataset)
