"""Landing retention (destinations/retention.py): the files of merged loads older than the
retention are deleted, and nothing else; a kill midway, a file that cannot go and a later run
change nothing that was merged."""

from __future__ import annotations

import posixpath
import shutil
from pathlib import Path

import pytest

from destinations.handoff import Handoff
from destinations.landing import Landing
from destinations.retention import DAY, prune_merged_loads
from destinations.warehouse import open_warehouse
from flows.extract import STATE_FILES_KEPT
from landing_runs import (  # noqa: F401 - dataset, emu, fake and settings are shared fixtures
    ORG,
    assert_warehouse_matches,
    dataset,
    emu,
    fake,
    merge_only,
    repo_names,
    run,
    settings,
    warehouse_rows,
)
from settings import Settings, pipeline_name

PIPELINE = pipeline_name(ORG)


def parquet_files(settings: Settings) -> set[str]:
    return {str(p.relative_to(settings.landing)) for p in Path(settings.landing).rglob("*.parquet")}


def load_files(settings: Settings, load_id: str) -> set[str]:
    manifest = Handoff(Landing(settings.landing), PIPELINE).manifest(load_id)
    assert manifest is not None
    return {posixpath.join("github", f.path) for f in manifest.files}


def prune(settings: Settings, keep_days: int, now: float, **kwargs):
    with open_warehouse(settings.warehouse_config) as warehouse:
        return prune_merged_loads(warehouse, settings.landing, PIPELINE, keep_days, now=now, **kwargs)


def two_loads(settings, dataset, emu, fake) -> tuple[str, str]:
    """A cold sync, merged, then a change landed and not merged: (merged load, unmerged load)."""
    first = run(settings, emu, fake).load_ids
    merge_only(settings)
    dataset.edit_title(ORG, repo_names(dataset)[0], 2, "changed")
    second = run(settings, emu, fake).load_ids
    assert len(first) == len(second) == 1
    return first[0], second[0]


def test_only_merged_loads_older_than_the_retention_lose_their_files(settings, dataset, emu, fake):
    merged, unmerged = two_loads(settings, dataset, emu, fake)
    merged_files, unmerged_files = load_files(settings, merged), load_files(settings, unmerged)
    assert merged_files and unmerged_files and merged_files <= parquet_files(settings)
    now = float(unmerged) + 3 * DAY

    assert prune(settings, 4, now).loads_pruned == []  # neither is 4 days old
    report = prune(settings, 2, now)

    assert report.loads_pruned == [merged] and report.files_deleted == len(merged_files) and not report.failed
    assert parquet_files(settings) == unmerged_files  # the unmerged load keeps every file
    handoff = Handoff(Landing(settings.landing), PIPELINE)
    assert handoff.pruned_loads() == {merged} and handoff.manifest(merged) is not None
    assert prune(settings, 2, now + DAY).loads_pruned == []  # done once
    # The merge goes on: the unmerged load merges, the pruned one is never taken again.
    merge_report = merge_only(settings)
    assert merge_report.loads_merged == [unmerged] and not merge_report.loads_set_aside
    assert_warehouse_matches(settings, dataset)
    titles = [row for row in warehouse_rows(settings, "pull_requests") if "changed" in row]
    assert len(titles) == 1  # the unmerged load's change, merged
    # ... and so do later runs: nothing fetched again, nothing set aside.
    run(settings, emu, fake)
    assert not merge_only(settings).loads_set_aside
    assert_warehouse_matches(settings, dataset)


def test_a_prune_killed_midway_is_finished_by_the_next(settings, dataset, emu, fake):
    """The files go first, the marker last: a kill between leaves some files deleted and no
    marker; the next prune deletes the rest (a missing file is no error) and marks the load."""
    merged, _ = two_loads(settings, dataset, emu, fake)
    files = sorted(load_files(settings, merged))
    (Path(settings.landing) / files[0]).unlink()  # what the killed prune managed

    report = prune(settings, 1, float(merged) + 2 * DAY)

    assert report.loads_pruned == [merged] and report.files_deleted == len(files) - 1
    assert not set(files) & parquet_files(settings)


def test_a_file_that_cannot_be_deleted_leaves_its_load_for_the_next_prune(settings, dataset, emu, fake,
                                                                          monkeypatch, caplog):
    merged, _ = two_loads(settings, dataset, emu, fake)
    landing = Landing(settings.landing)
    real_rm = landing.fs.rm

    def refused(path, *args, **kwargs):
        raise PermissionError(f"[Errno 13] Permission denied: '{path}'")

    monkeypatch.setattr(type(landing.fs), "rm", lambda self, path, *a, **k: refused(path))
    report = prune(settings, 1, float(merged) + 2 * DAY)
    assert report.loads_pruned == [] and "PermissionError" in report.failed[merged]
    assert "could not delete the files of merged load" in caplog.text
    monkeypatch.setattr(type(landing.fs), "rm", lambda self, path, *a, **k: real_rm(path, *a, **k))
    assert prune(settings, 1, float(merged) + 2 * DAY).loads_pruned == [merged]


def test_retention_is_at_least_a_day(settings, emu, tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        prune(settings, 0, 0.0)
    with pytest.raises(ValueError):
        Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, landing_retention_days=0)


def test_a_gcs_landing_is_pruned_the_same_way(gcs_bucket, dataset, emu, fake, tmp_path):
    settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, landing_url=gcs_bucket.url(),
                        gcs_endpoint_url=gcs_bucket.endpoint_url, gcs_project="test")
    first = run(settings, emu, fake).load_ids
    with open_warehouse(settings.warehouse_config) as warehouse:
        from destinations.merge import merge_landed_loads

        merge_landed_loads(warehouse, settings.landing, ORG, PIPELINE, fs=gcs_bucket.fs)
        report = prune_merged_loads(warehouse, settings.landing, PIPELINE, 1, fs=gcs_bucket.fs,
                                    now=float(first[0]) + 2 * DAY)
    assert report.loads_pruned == first and report.files_deleted > 0
    stored = {p.name for p in gcs_bucket.stored.rglob("*.parquet")}
    assert not stored, stored


def test_a_merge_lists_only_its_pipelines_load_records_on_gcs(gcs_bucket, monkeypatch):
    """Every organisation's pipeline records its loads in one shared folder (`_dlt_loads`): on
    GCS a merge lists only its own pipeline's records, a prefix listing, so its cost does not
    grow with the other organisations' loads (docs/performance.md, "A fleet on paper")."""
    landing = Landing(gcs_bucket.url(), gcs_bucket.fs)
    folder = posixpath.join(landing.root, "_dlt_loads")
    for pipeline, load_id in [("github_acme", "1796600000.1"), ("github_acme", "1796600001.2"),
                              ("github_acme_labs", "1796600002.3"), ("github_globex", "1796600003.4")]:
        record = f'{{"load_id": "{load_id}", "schema_name": "{pipeline}", "status": 0}}\n'
        gcs_bucket.fs.pipe(posixpath.join(folder, f"{pipeline}__{load_id}.jsonl"), record.encode())
    listed: list[str] = []
    real = type(gcs_bucket.fs)._do_list_objects

    async def recording(self, path, *args, prefix="", **kwargs):
        listed.append(f"{path}|{prefix}")
        return await real(self, path, *args, prefix=prefix, **kwargs)

    monkeypatch.setattr(type(gcs_bucket.fs), "_do_list_objects", recording)
    assert landing.completed_loads("github_acme") == ["1796600000.1", "1796600001.2"]  # not github_acme_labs'
    assert landing.completed_loads("github_globex") == ["1796600003.4"]
    folder_listings = [entry for entry in listed if entry.split("|")[0] == folder]
    assert folder_listings == [f"{folder}|github_acme__", f"{folder}|github_globex__"]  # never the whole folder


def test_the_landing_keeps_only_a_pipelines_newest_state_files(settings, dataset, emu, fake):
    """dlt lists the state folder every organisation shares at the start of each run: it holds
    a pipeline's 3 newest state files, however many loads, and the newest restores a lost state."""
    for n in range(5):
        dataset.edit_title(ORG, repo_names(dataset)[0], 1 + n % 3, f"change {n}")
        assert run(settings, emu, fake).load_ids
    states = sorted(Path(settings.landing, "github", "_dlt_pipeline_state").glob(f"{PIPELINE}__*"))
    assert len(states) == STATE_FILES_KEPT == 3

    shutil.rmtree(settings.pipelines_dir / PIPELINE)  # a worker that never ran this organisation
    emu.reset_stats()
    report = run(settings, emu, fake)
    assert report.rows["pull_requests"] == 0 and report.requests.cost == 0  # the state came back whole


def test_a_local_landing_loses_the_folders_a_prune_empties(settings, dataset, emu, fake):
    load_id = run(settings, emu, fake).load_ids[0]
    merge_only(settings)
    folders = {Path(settings.landing, f).parent for f in load_files(settings, load_id)}
    assert folders and all(folder.name.startswith("date=") for folder in folders)

    assert prune(settings, 1, float(load_id) + 2 * DAY).loads_pruned == [load_id]
    assert not any(folder.exists() for folder in folders)
    assert all(folder.parent.exists() for folder in folders)  # the table and org folders stay
