"""The handoff under the adversarial review of issue 18: each test showed a defect (a load parked or
blocked for good, rows lost, a crash) and failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator import Dataset, GitHubEmulator
from emulator.faults import Fault
from settings import Settings, pipeline_name
from landing_runs import ORG, assert_warehouse_matches, land_only, merge_only, warehouse_keys
from test_handoff import handoff, kill_before_the_first_manifest


# -- 1. the repositories of a recovered manifest are read from the landing, not dlt's record ----


def test_a_lost_pull_requests_file_is_fetched_again_after_a_kill_before_the_manifest(tmp_path, monkeypatch):
    """The crash-loop bench's scenario (a kill between the load and its manifest, a landed file
    lost), with the lost file being the pull_requests file of a load in which one repository's
    pull requests have no child rows (their lists failed and went on the retry list, as with a
    403 or a rate limit). `recover` rebuilds the file list from dlt's record, so the loss is
    noticed and the load set aside, but `_covered_by` reads the repositories from the *landed*
    files and silently skips the lost one: the manifest does not name that repository, the
    rewind never re-lists it, and its pull requests never reach the warehouse."""
    dataset = Dataset.generate(orgs={ORG: 2}, prs_per_repo=[8, 6], seed=11)
    with GitHubEmulator(dataset) as emu:
        settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, github_token="x",
                            github_api_mode="rest")
        repo_b = dataset.repositories(ORG)[1]["name"]
        emu.faults.add(Fault("403", path_regex=rf"/repos/{ORG}/{repo_b}/(pulls|issues)/\d+/(reviews|files|timeline)",
                             times=10_000))
        load_id = kill_before_the_first_manifest(settings, monkeypatch)
        emu.faults.clear()
        lost = next(Path(settings.landing, "github", "pull_requests").rglob(f"{load_id}.*.parquet"))
        lost.unlink()  # a landed file lost before the manifest was recovered

        land_only(settings)  # recover writes the manifest from dlt's record
        manifest = handoff(settings).manifest(load_id)
        assert manifest is not None and any(f.table == "pull_requests" for f in manifest.files)
        repo_ids = {str(r["id"]) for r in dataset.repositories(ORG)}
        missing = repo_ids - set(manifest.repositories)
        # end to end: set aside, fetched again, converged?
        report = merge_only(settings)
        assert list(report.loads_set_aside) == [load_id]
        for _ in range(2):
            land_only(settings)
            merge_only(settings)
        got = warehouse_keys(settings)["pull_requests"]
        want = dataset.expected(ORG)["pull_requests"]
        assert not missing and got == want, (
            f"manifest names repositories {sorted(manifest.repositories)}, lacks {sorted(missing)}; "
            f"{len(want - got)} of {len(want)} pull requests never reach the warehouse")


# -- 2. a rewind that does not know the load's repositories still marks it rewound -------------


@pytest.fixture
def dataset() -> Dataset:
    return Dataset.generate(orgs={ORG: 2}, prs_per_repo=[8, 6], seed=11)


@pytest.fixture
def settings(dataset: Dataset, tmp_path: Path):
    with GitHubEmulator(dataset) as emu:
        yield Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path, github_token="x")


def test_a_set_aside_load_whose_manifest_is_unreadable_is_fetched_again(settings, dataset):
    """A manifest that exists but cannot be read, and is not empty (cut short: a full disk, a
    write of an earlier version cut mid-way). docs/design.md: "the load is set aside, never blocking the
    others, and the next landing rebuilds its manifest from the load's landed files". It is
    never rebuilt (`_manifested` counts any non-empty file as written, and `recover` deletes
    dlt's record of the load since it 'has' a manifest); `rewind` finds no repositories, logs
    "run once with --full-refresh", marks the load rewound anyway, and the run reports the load
    as fetched again. Its rows never reach the warehouse, though its landed files were intact
    and name every repository."""
    first = land_only(settings)
    dataset.add_review(ORG, dataset.repositories(ORG)[0]["name"], 2)
    land_only(settings)
    path = Path(settings.landing, "github", "_manifests", pipeline_name(ORG), f"{first.load_ids[0]}.json")
    path.write_text(path.read_text()[:40])  # cut short: non-empty, not JSON

    report = merge_only(settings)
    assert list(report.loads_set_aside) == first.load_ids
    again = land_only(settings)
    assert again.loads_refetched == first.load_ids  # the summary says: fetched again
    merge_only(settings)
    marker = json.loads(path.with_name(f"{first.load_ids[0]}.set_aside.json").read_text())
    assert sum(again.rows.values()) > 0, (
        f"marker says rewound={marker['rewound']}, yet nothing was fetched again: "
        f"{again.rows}")
    assert_warehouse_matches(settings, dataset)


# -- 3. a load without a manifest whose landed file is damaged crashes the merge ----------------


def test_a_damaged_file_of_a_load_without_manifest_is_set_aside_not_a_crash(settings, dataset, monkeypatch):
    """A load whose landing was killed before its manifest, merged before the next landing
    recovers the manifest (the flow merges after a failed landing: allow_failure; a merge run on
    its own; a load landed before manifests existed). `take` builds the manifest from the landed
    files, and `_from_landed_files` lets the ArrowInvalid of a damaged footer escape (only
    `_problems` catches ArrowException): the merge raises instead of setting the load aside, and
    every merge fails at that load - the loads behind it are blocked (issue 18.1: a reader that
    meets an unreadable handoff never blocks the loads behind it)."""
    load_id = kill_before_the_first_manifest(settings, monkeypatch)
    cut = next(Path(settings.landing, "github", "pull_request_files").rglob(f"{load_id}.*.parquet"))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])

    report = merge_only(settings)  # raised pyarrow.lib.ArrowInvalid

    assert list(report.loads_set_aside) == [load_id]


# -- 4. a damaged footer is taken for a storage outage: the merge stops at that load for good ----


def test_a_load_with_a_damaged_footer_is_set_aside_and_never_blocks_the_loads_behind_it(
    settings, dataset, monkeypatch
):
    """pyarrow reports a footer it cannot deserialize ("Couldn't deserialize thrift") as an
    OSError, like an I/O fault. `_footer_rows` retries any OSError and then raises
    StorageUnavailable, which stops the merge: a file whose footer bytes are damaged (its tail
    zero-filled after a crash, a bit flip) is never set aside, and every merge stops at that load
    - no later load is ever merged (issue 18.2: "only a definite problem (missing file, footer
    unreadable after retries, row count that differs) sets a load aside")."""
    import struct

    import destinations.handoff as handoff_module

    monkeypatch.setattr(handoff_module, "READ_BACKOFF", 0.0)
    first = land_only(settings)
    dataset.add_review(ORG, dataset.repositories(ORG)[0]["name"], 2)
    second = land_only(settings)
    damaged = next(Path(settings.landing, "github", "pull_request_reviews").rglob(f"{first.load_ids[0]}.*.parquet"))
    data = bytearray(damaged.read_bytes())
    footer = struct.unpack("<I", data[-8:-4])[0]
    data[-8 - footer:-8] = bytes(footer)  # the footer zero-filled; size, length and magic intact
    damaged.write_bytes(bytes(data))

    report = merge_only(settings)  # was: StorageUnavailable "cannot read ... after 4 attempts"

    assert list(report.loads_set_aside) == first.load_ids
    assert report.loads_merged == second.load_ids


# -- 5. a claim that trusted wall-clock load ids (a watermark): one clock step parked every later load


def test_after_the_clock_steps_back_later_loads_are_still_merged(settings, dataset, monkeypatch):
    """dlt's load id is the wall-clock time at extract (monotonic only within a process). A run
    on a clock that was ahead (a VM resumed before NTP corrected it, a worker whose clock was
    wrong) merges a load whose id lies in the future. With a claim that moved a watermark up to
    the load, every load landed after the clock was corrected had a lower id and was set aside,
    run after run. The claim is now a compare-and-set of a merge count: no order assumed."""
    import time

    import dlt.extract.storage as extract_storage

    monkeypatch.setattr(extract_storage, "create_load_id", lambda: str(time.time() + 6 * 3600))
    land_only(settings)  # the clock is 6 hours ahead
    assert merge_only(settings).loads_merged
    monkeypatch.undo()  # NTP corrects the clock

    dataset.add_review(ORG, dataset.repositories(ORG)[0]["name"], 2)
    set_aside = []
    for _ in range(3):
        land_only(settings)
        set_aside += list(merge_only(settings).loads_set_aside)
    assert set_aside == [], f"{len(set_aside)} loads set aside in 3 runs (each one fetched again)"
    assert_warehouse_matches(settings, dataset)
