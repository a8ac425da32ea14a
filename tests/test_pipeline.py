"""The whole chain on embedded defaults: emulator -> dlt source -> Parquet landing -> DuckDB merge.

Uses the same functions the Prefect tasks call (`land`, `merge_landed_loads`), without Prefect.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from destinations.warehouse import DuckDBWarehouse
from emulator import Dataset, GitHubEmulator
from flows.credentials import github_client
from flows.extract import landing_pipeline
from settings import Settings
from landing_runs import ORG, TABLES, assert_warehouse_matches, land_only, merge_only, sync, warehouse_rows
from sources.github.source import github_source


@pytest.fixture
def dataset() -> Dataset:
    return Dataset.generate(orgs={ORG: 2}, prs_per_repo=[8, 6], seed=11)


@pytest.fixture
def emulator(dataset: Dataset):
    # A GitHub Enterprise-style base path: the pipeline only knows the URL it is given.
    with GitHubEmulator(dataset, base_path="/api/v3") as emu:
        yield emu


@pytest.fixture
def settings(emulator: GitHubEmulator, tmp_path: Path) -> Settings:
    return Settings(orgs=[ORG], github_url=emulator.url, data_dir=tmp_path, github_token="x")


def test_warehouse_holds_exactly_what_the_server_serves(settings, dataset):
    sync(settings)
    assert_warehouse_matches(settings, dataset)


def test_two_runs_give_identical_tables(settings, dataset):
    sync(settings)
    before = {t: warehouse_rows(settings, t) for t in TABLES}
    landing, merge = sync(settings)
    assert sum(landing.rows.values()) == 0
    assert {t: warehouse_rows(settings, t) for t in TABLES} == before


def test_changed_pull_request_is_right_after_rerun(settings, dataset):
    sync(settings)
    repo = dataset.repositories(ORG)[1]["name"]
    review = dataset.add_review(ORG, repo, 1)
    removed = dataset.remove_file(ORG, repo, 2)
    dataset.edit_title(ORG, repo, 3, "Ünïcode retitled 🚀")

    sync(settings)

    assert_warehouse_matches(settings, dataset)
    con = duckdb.connect(str(settings.duckdb_config.path), read_only=True)
    assert con.execute("SELECT count(*) FROM github.pull_request_reviews WHERE id = ?", [review["id"]]).fetchone()[0] == 1
    gone = con.execute(
        "SELECT count(*) FROM github.pull_request_files WHERE pull_request_number = 2 AND repo = ? AND filename = ?",
        [repo, removed],
    ).fetchone()[0]
    assert gone == 0
    title = con.execute(
        "SELECT title FROM github.pull_requests WHERE repo = ? AND number = 3", [repo]
    ).fetchone()[0]
    assert title == "Ünïcode retitled 🚀"


def test_crash_between_landing_and_merge_is_repaired(settings, dataset):
    land_only(settings)  # the run dies here: landed, never merged
    repo = dataset.repositories(ORG)[0]["name"]
    dataset.add_review(ORG, repo, 4)
    land_only(settings)  # and again, with a change

    report = merge_only(settings)

    assert len(report.loads_merged) == 2
    assert_warehouse_matches(settings, dataset)


def test_crash_inside_the_merge_is_repaired(settings, dataset, monkeypatch):
    land_only(settings)
    real = DuckDBWarehouse.load_stage
    calls = {"n": 0}

    def dies_on_second_table(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("power cut")
        return real(*args, **kwargs)

    monkeypatch.setattr(DuckDBWarehouse, "load_stage", dies_on_second_table)
    with pytest.raises(RuntimeError, match="power cut"):
        merge_only(settings)
    monkeypatch.setattr(DuckDBWarehouse, "load_stage", real)
    # The first table's MERGE was rolled back with the rest.
    assert all(len(warehouse_rows(settings, t)) == 0 for t in TABLES)

    merge_only(settings)
    assert_warehouse_matches(settings, dataset)


def test_run_dying_after_extract_is_finished_by_the_next_run(settings, dataset):
    """A package extracted and normalised but never landed is loaded by the next run first."""
    with github_client(settings) as client:
        pipeline = landing_pipeline(settings, ORG)
        source = github_source.clone(name=pipeline.pipeline_name)(ORG, client)
        pipeline.extract(source, loader_file_format="parquet")
        pipeline.normalize()
    # ... the process dies here. The state with advanced cursors sits in the pending package.

    sync(settings)

    assert_warehouse_matches(settings, dataset)
