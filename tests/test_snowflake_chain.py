"""The production path end to end against local stand-ins, through the product's functions:

GitHub emulator (HTTP) -> `land()` into gs://<bucket>/landing on fake-gcs-server -> `open_warehouse()`
on Snowflake (the real connector against fakesnow's server) -> `merge_landed_loads`, never
bootstrapped beforehand, as the flow's merge task does it.

fakesnow cannot read gcs:// URLs: its stage is given the emulator's plain-file copy of the same
objects (`file://<storage>/<bucket>/landing/github/`), the folder a gcs:// stage derived from the
landing would cover. The derivation itself is checked separately, and end to end on a local landing.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

import sources.github.schema
import sources.github.source
from destinations import SnowflakeConfig, SnowflakeWarehouse, bootstrap, merge_landed_loads
from destinations.merge import MergeReport
from emulator import Dataset, GitHubEmulator
from flows import bootstrap as bootstrap_cli
from flows.credentials import github_client, landing_filesystem
from flows.extract import LandingReport, land
from settings import ConfigurationError, Settings, pipeline_name
from destinations.config import stage_url, with_stage
from destinations.warehouse import open_warehouse
from sources.github.schema import PULL_REQUESTS
from warehouse_loads import ledger, snapshot

ORG = "acme"
TABLES = ("pull_requests", "pull_request_reviews", "pull_request_files")


def derived_config(settings: Settings) -> SnowflakeConfig:
    """The Snowflake settings as a merge of these settings uses them (stage derived)."""
    return with_stage(settings.snowflake, settings.landing)


def small_dataset(orgs: dict[str, int], edge_cases: bool = False) -> Dataset:
    return Dataset.generate(orgs=orgs, prs_per_repo=[4, 3], seed=5, edge_cases=edge_cases)


@pytest.fixture
def dataset() -> Dataset:
    return small_dataset({ORG: 2})


@pytest.fixture
def emulator(dataset: Dataset):
    with GitHubEmulator(dataset) as emu:
        yield emu


def chain_settings(github_url: str, gcs_bucket: Any, snowflake_config: Callable[..., SnowflakeConfig], tmp_path: Path) -> Settings:
    """One Settings for the whole chain, as the flow has: gs:// landing, Snowflake warehouse."""
    return Settings(
        github_url=github_url,
        github_token="x",
        data_dir=tmp_path,
        landing_url=gcs_bucket.url("landing"),
        gcs_endpoint_url=gcs_bucket.endpoint_url,
        warehouse="snowflake",
        snowflake=snowflake_config(f"file://{gcs_bucket.stored}/landing/github/"),
    )


@pytest.fixture
def settings(emulator: GitHubEmulator, gcs_bucket: Any, snowflake_config: Callable[..., SnowflakeConfig], tmp_path: Path) -> Settings:
    return chain_settings(emulator.url, gcs_bucket, snowflake_config, tmp_path)


def land_org(settings: Settings, org: str = ORG) -> LandingReport:
    with github_client(settings) as client:
        return land(settings, org, client)


def merge_org(settings: Settings, org: str = ORG) -> MergeReport:
    """What the flow's merge task does, without Prefect's run context."""
    with open_warehouse(settings.warehouse_config) as warehouse:
        return merge_landed_loads(
            warehouse, settings.landing, org, pipeline_name(org), fs=landing_filesystem(settings)
        )


def sync(settings: Settings, org: str = ORG) -> tuple[LandingReport, MergeReport]:
    return land_org(settings, org), merge_org(settings, org)


def tables(settings: Settings) -> dict[str, list[tuple]]:
    with open_warehouse(settings.warehouse_config) as warehouse:
        return snapshot(warehouse)


def warehouse_keys(warehouse: SnowflakeWarehouse, org: str) -> dict[str, list]:
    """Natural keys per table, duplicates kept (a list, so a row merged twice shows)."""

    def select(table: str, *columns: str) -> list:
        names = ", ".join(warehouse.q(c) for c in columns)
        rows = warehouse.execute(f"SELECT {names} FROM {warehouse.table(table)} WHERE {warehouse.q('org')} = ?", [org])
        return [row[0] if len(row) == 1 else tuple(row) for row in rows]

    return {
        "pull_requests": select("pull_requests", "id"),
        "pull_request_reviews": select("pull_request_reviews", "id"),
        "pull_request_files": select("pull_request_files", "pull_request_id", "filename"),
    }


def assert_matches(settings: Settings, dataset: Dataset, org: str = ORG) -> None:
    """The warehouse holds exactly what the emulator serves for `org`: every row, once."""
    expected = dataset.expected(org)
    with open_warehouse(settings.warehouse_config) as warehouse:
        keys = warehouse_keys(warehouse, org)
    for table in TABLES:
        assert len(keys[table]) == len(set(keys[table])), f"{table}: a row merged twice"
        assert set(keys[table]) == expected[table], table


def test_chain_holds_exactly_what_github_serves_and_a_rerun_changes_nothing(settings, dataset, gcs_bucket):
    landing, merge = sync(settings)

    assert landing.landing_url.startswith("gs://")
    assert gcs_bucket.fs.glob(f"{gcs_bucket.name}/landing/github/pull_requests/org={ORG}/date=*/*.parquet")
    assert merge.warehouse.startswith("snowflake:") and merge.loads_merged == landing.load_ids
    assert {t: merge.rows_staged[t] for t in TABLES} == {t: landing.rows[t] for t in TABLES}
    assert_matches(settings, dataset)
    before = tables(settings)

    landing, merge = sync(settings)
    assert sum(landing.rows.values()) == 0
    assert tables(settings) == before


def test_changed_pull_request_is_right_after_the_rerun(settings, dataset):
    sync(settings)
    repo = dataset.repositories(ORG)[1]["name"]
    review = dataset.add_review(ORG, repo, 1)
    removed = dataset.remove_file(ORG, repo, 2)
    dataset.edit_title(ORG, repo, 3, "retitled ✏️")

    landing, merge = sync(settings)

    assert landing.rows["pull_requests"] == 3 and merge.rows_deleted["pull_request_files"] == 1
    assert_matches(settings, dataset)
    with open_warehouse(settings.warehouse_config) as wh:
        number, title, repo_of = wh.q("number"), wh.q("title"), wh.q("repo")
        assert wh.execute(f"SELECT count(*) FROM {wh.table('pull_request_reviews')} WHERE {wh.q('id')} = ?", [review["id"]]) == [(1,)]
        assert wh.execute(
            f"SELECT count(*) FROM {wh.table('pull_request_files')}"
            f" WHERE {repo_of} = ? AND {wh.q('pull_request_number')} = 2 AND {wh.q('filename')} = ?",
            [repo, removed],
        ) == [(0,)]
        assert wh.execute(
            f"SELECT {title} FROM {wh.table('pull_requests')} WHERE {repo_of} = ? AND {number} = 3", [repo]
        ) == [("retitled ✏️",)]


def test_failure_between_copy_and_merge_rolls_back_and_the_next_run_is_right(
    settings, dataset, monkeypatch, fail_after_stage_load
):
    landing = land_org(settings)
    fail_after_stage_load(SnowflakeWarehouse)
    with pytest.raises(RuntimeError, match="injected failure"):
        merge_org(settings)
    monkeypatch.undo()
    with open_warehouse(settings.warehouse_config) as warehouse:
        assert ledger(warehouse) == []
        assert all(rows == [] for rows in snapshot(warehouse).values())

    _, merge = sync(settings)  # lands nothing new, merges the load the failed run left

    assert merge.loads_merged[0] == landing.load_ids[0]
    assert_matches(settings, dataset)


def test_two_organisations_merge_concurrently_and_stay_separate(
    gcs_bucket, snowflake_config, tmp_path
):
    orgs = {ORG: 1, "beta-labs": 2}
    dataset = small_dataset(orgs)
    with GitHubEmulator(dataset) as emu:
        settings = chain_settings(emu.url, gcs_bucket, snowflake_config, tmp_path)
        for org in orgs:
            land_org(settings, org)
    reports: dict[str, MergeReport] = {}
    errors: list[BaseException] = []

    def merge(org: str) -> None:
        try:
            reports[org] = merge_org(settings, org)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=merge, args=(org,)) for org in orgs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and sorted(reports) == sorted(orgs)
    for org in orgs:
        assert_matches(settings, dataset, org)
    with open_warehouse(settings.warehouse_config) as warehouse:
        assert {name for name, _ in ledger(warehouse)} == {"github_acme", "github_beta_labs"}


def test_a_column_new_in_the_source_is_added_by_the_bootstrap(settings, dataset, monkeypatch):
    sync(settings)
    # The source starts sending `mergeable_state`: its schema and row builder gain the column, and
    # the flow's bootstrap (before its merges; a merge runs no DDL) adds it to the tables.
    spec = dataclasses.replace(PULL_REQUESTS, schema=PULL_REQUESTS.schema.append(pa.field("mergeable_state", pa.string())))
    row = sources.github.source.pull_request_row
    monkeypatch.setattr(sources.github.source, "PULL_REQUESTS", spec)
    monkeypatch.setitem(sources.github.schema.TABLES, "pull_requests", spec)
    monkeypatch.setattr(sources.github.source, "pull_request_row", lambda *a: row(*a) | {"mergeable_state": "clean"})
    repo = dataset.repositories(ORG)[0]["name"]
    dataset.edit_title(ORG, repo, 1, "with a new column")

    sync(settings)

    with open_warehouse(settings.warehouse_config) as wh:
        rows = wh.execute(
            f"SELECT {wh.q('title')}, {wh.q('mergeable_state')} FROM {wh.table('pull_requests')}"
            f" WHERE {wh.q('mergeable_state')} IS NOT NULL"
        )
    assert rows == [("with a new column", "clean")]
    assert_matches(settings, dataset)


def test_injection_in_an_org_name_is_rejected(settings, capsys):
    bad = "acme'; DROP TABLE GITHUB.PULL_REQUESTS; --"
    with pytest.raises(ValidationError, match="invalid organisation"):
        Settings(orgs=[bad])
    with open_warehouse(settings.warehouse_config) as warehouse:
        with pytest.raises(ValueError, match="invalid organisation"):
            merge_landed_loads(warehouse, settings.landing, bad, "github_acme")
        with pytest.raises(ValueError, match="invalid pipeline name"):
            merge_landed_loads(warehouse, settings.landing, ORG, 'github_acme"; DROP TABLE x; --')
        assert warehouse.columns("pull_requests") == {}  # rejected before any SQL ran: nothing created
    assert bootstrap_cli.main(["--org", bad]) == 2
    assert "invalid organisation" in capsys.readouterr().err


def test_unicode_edge_cases_on_a_local_landing_with_the_derived_stage(snowflake_config, tmp_path):
    """Deleted authors, unicode titles and file names, a 3,050-file PR, 130 reviews; the stage URL
    is derived from the local landing folder (`file:///.../landing/github/`)."""
    dataset = small_dataset({ORG: 1}, edge_cases=True)
    with GitHubEmulator(dataset) as emu:
        settings = Settings(
            github_url=emu.url, github_token="x", data_dir=tmp_path,
            warehouse="snowflake", snowflake=snowflake_config(),
        )
        sync(settings)
    assert derived_config(settings).stage_url == f"file://{(tmp_path / 'landing').resolve()}/github/"
    assert_matches(settings, dataset)
    expected_titles = {pr["title"] for repo in dataset.repositories(ORG) for pr in dataset.pull_requests(ORG, repo["name"])}
    with open_warehouse(settings.warehouse_config) as wh:
        titles = {title for (title,) in wh.execute(f"SELECT {wh.q('title')} FROM {wh.table('pull_requests')}")}
        filenames = {name for (name,) in wh.execute(f"SELECT {wh.q('filename')} FROM {wh.table('pull_request_files')}")}
    assert titles == expected_titles and any(not t.isascii() for t in titles)
    assert any(not name.isascii() for name in filenames)


# --- Stage URL derivation, the bootstrap command ------------------------------------------------


@pytest.mark.parametrize(
    ("landing", "expected"),
    [
        ("gs://bucket/prefix", "gcs://bucket/prefix/github/"),
        ("gs://bucket/prefix/", "gcs://bucket/prefix/github/"),
        ("gs://bucket", "gcs://bucket/github/"),
        ("/srv/landing", "file:///srv/landing/github/"),
        ("file:///srv/landing", "file:///srv/landing/github/"),
    ],
)
def test_stage_url_is_derived_from_the_landing(landing, expected):
    assert stage_url(landing) == expected


def test_snowflake_is_one_setting_plus_the_connection(monkeypatch, tmp_path):
    for name, value in {
        "WAREHOUSE": "snowflake", "LANDING_URL": "gs://lake/github-prs", "DATA_DIR": str(tmp_path),
        "SNOWFLAKE__ACCOUNT": "xy12345.europe-west4.gcp", "SNOWFLAKE__USER": "GITHUB_LOADER_SVC",
        "SNOWFLAKE__PRIVATE_KEY_PATH": str(tmp_path / "key.p8"), "SNOWFLAKE__DATABASE": "ANALYTICS",
    }.items():
        monkeypatch.setenv(f"PR_ANALYTICS_{name}", value)
    config = derived_config(Settings())
    assert (config.stage_url, config.storage_integration) == ("gcs://lake/github-prs/github/", "GITHUB_GCS")
    # An explicit stage URL wins.
    monkeypatch.setenv("PR_ANALYTICS_SNOWFLAKE__STAGE_URL", "gcs://other/place/")
    assert derived_config(Settings()).stage_url == "gcs://other/place/"


def test_settings_snowflake_cannot_work_with_fail_clearly(tmp_path):
    with pytest.raises(ConfigurationError, match="SNOWFLAKE__"):
        derived_config(Settings(warehouse="snowflake", data_dir=tmp_path))
    real = SnowflakeConfig(account="xy12345", user="u", password="p", database="D")
    with pytest.raises(ConfigurationError, match="cannot read the local landing folder"):
        derived_config(Settings(warehouse="snowflake", snowflake=real, data_dir=tmp_path))
    with pytest.raises(ConfigurationError, match="STAGE_URL"):
        stage_url("s3://bucket/prefix")


def test_an_existing_stage_elsewhere_is_reported(snowflake_config, tmp_path):
    first = SnowflakeWarehouse(snowflake_config(f"file://{tmp_path}/a/github/"))
    bootstrap(first)
    first.close()
    elsewhere = SnowflakeWarehouse(snowflake_config(f"file://{tmp_path}/b/github/"))
    with pytest.raises(ValueError, match="points at file://.*/a/github/, but the landing is read at"):
        bootstrap(elsewhere)
    elsewhere.close()


def test_bootstrap_command_is_idempotent_and_prints_the_admin_sql(monkeypatch, capsys, snowflake_config, tmp_path):
    config = snowflake_config()
    for name, value in {
        "WAREHOUSE": "snowflake", "DATA_DIR": str(tmp_path), "SNOWFLAKE__ACCOUNT": config.account,
        "SNOWFLAKE__USER": config.user, "SNOWFLAKE__PASSWORD": config.password.get_secret_value(),
        "SNOWFLAKE__DATABASE": config.database, "SNOWFLAKE__HOST": config.host,
        "SNOWFLAKE__PORT": str(config.port), "SNOWFLAKE__PROTOCOL": config.protocol,
    }.items():
        monkeypatch.setenv(f"PR_ANALYTICS_{name}", value)

    assert bootstrap_cli.main(["--org", ORG, "--org", "beta-labs"]) == 0
    out = capsys.readouterr().out
    assert f"-> file://{(tmp_path / 'landing').resolve()}/github/" in out
    assert "created 25 table(s)" in out and "STG_GITHUB_BETA_LABS_PULL_REQUEST_FILES" in out and "MERGE_LOCKS" in out
    assert "WORKING_CALENDARS, WORKING_HOLIDAYS" in out
    assert bootstrap_cli.main(["--org", ORG]) == 0
    assert "created 0 table(s) (all existed)" in capsys.readouterr().out

    monkeypatch.setenv("PR_ANALYTICS_LANDING_URL", "gs://lake/github-prs")
    assert bootstrap_cli.main(["--print-admin-sql"]) == 0
    admin = capsys.readouterr().out
    assert "STORAGE_ALLOWED_LOCATIONS = ('gcs://lake/github-prs/github/')" in admin
    assert "gs://lake " in admin and f"ON DATABASE {config.database} TO ROLE GITHUB_LOADER" in admin
