"""The warehouse step on Snowflake, through the real connector talking to fakesnow's server.

fakesnow cannot reach gcs:// URLs, so the external stage points at the landing folder with a
file:// URL; the GCS leg lands through a local GCS emulator whose objects are plain files.
"""

from __future__ import annotations

import dataclasses

import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import SecretStr

from destinations import SnowflakeConfig, SnowflakeWarehouse, merge_landed_loads, sql
from destinations.landing import LandedFile
from destinations.warehouse import _check_copy_results
from sources.github.schema import TABLES, review_row, to_table
from warehouse_loads import (
    T0,
    check_new_columns,
    check_two_loads_merged,
    files,
    land,
    land_new_columns_onto_an_older_warehouse,
    land_two_loads,
    ledger,
    mark_complete,
    pr,
    rows_by,
    snapshot,
)


# fakesnow_server, database, snowflake_config, gcs_emulator, gcs_bucket: tests/conftest.py


def connect(snowflake_config: Callable[..., SnowflakeConfig], landing: Path) -> SnowflakeWarehouse:
    return SnowflakeWarehouse(snowflake_config(f"file://{landing.resolve()}/github/"))


@pytest.fixture
def snow(snowflake_config: Callable[..., SnowflakeConfig], tmp_path: Path) -> Iterator[SnowflakeWarehouse]:
    warehouse = connect(snowflake_config, tmp_path)
    yield warehouse
    warehouse.close()


def test_two_loads_merge_then_second_run_is_a_no_op(tmp_path: Path, snow: SnowflakeWarehouse) -> None:
    land_two_loads(tmp_path)
    report = merge_landed_loads(snow, str(tmp_path), "demo", "github_demo")
    assert report.loads_merged == ["999.5", "1000.25"]
    assert report.rows_staged == {"pull_requests": 6, "pull_request_files": 4, "pull_request_reviews": 1}
    assert report.rows_deleted["pull_request_files"] == 1
    assert report.warehouse.startswith("snowflake:")
    check_two_loads_merged(snow)
    first = snapshot(snow)

    # Second run: nothing to merge, and COPY's load history is never asked to decide that.
    assert merge_landed_loads(snow, str(tmp_path), "demo", "github_demo").loads_merged == []
    # Replaying every load (ledger emptied) gives identical tables: FORCE reloads the files.
    snow.execute(f"DELETE FROM {snow.table('MERGED_LOADS')}")
    snow._commit()
    assert merge_landed_loads(snow, str(tmp_path), "demo", "github_demo").loads_merged == ["999.5", "1000.25"]
    assert snapshot(snow) == first


def test_unicode_and_arrays_round_trip(tmp_path: Path, snow: SnowflakeWarehouse) -> None:
    land(tmp_path, "demo", "1.0", {"pull_requests": [pr("demo", 5, T0, "Ünïcödé — 日本語 🚀", ("bug", "🐛"))]})
    merge_landed_loads(snow, str(tmp_path), "demo", "github_demo")
    [(title, labels, updated_at)] = rows_by(snow, "pull_requests", "title", "labels", "updated_at")
    assert title == "Ünïcödé — 日本語 🚀"
    assert labels.replace(" ", "").replace("\n", "") == '["bug","🐛"]'  # ARRAY comes back as JSON text
    assert updated_at == T0


def test_empty_strings_and_instants_survive_the_copy_transformation(tmp_path: Path, snow: SnowflakeWarehouse) -> None:
    """An approval without a comment has `body: ""`: loaded as "", not NULL, and no load error."""
    pull = pr("demo", 1, T0)
    approval = [review_row("demo", "repo", pull, {"id": 1, "state": "APPROVED", "body": "", "submitted_at": "2026-01-05T12:00:00Z"})]
    land(tmp_path, "demo", "1.0", {"pull_requests": [pull], "pull_request_reviews": approval})
    merge_landed_loads(snow, str(tmp_path), "demo", "github_demo")
    assert rows_by(snow, "pull_request_reviews", "body", "submitted_at") == [("", T0)]
    assert rows_by(snow, "pull_requests", "updated_at") == [(T0,)]


def test_adding_the_same_column_twice_is_harmless(snow: SnowflakeWarehouse) -> None:
    """Two organisations may add the same new column at once."""
    snow.execute(sql.create_schema(snow.q(snow.schema_name)))
    snow.execute(sql.create_table(snow.table("t"), [(snow.q("id"), "BIGINT")]))
    for _ in range(2):
        snow.execute(sql.add_column(snow.table("t"), snow.q("extra"), "VARCHAR"))
    assert list(snow.columns("t")) == ["id", "extra"]


def test_crash_between_copy_and_merge_rolls_back_copy_and_its_load_history(
    tmp_path: Path, snow: SnowflakeWarehouse, monkeypatch: pytest.MonkeyPatch, fail_after_stage_load
) -> None:
    land_two_loads(tmp_path)
    fail_after_stage_load(SnowflakeWarehouse)
    with pytest.raises(RuntimeError, match="injected failure after COPY"):
        merge_landed_loads(snow, str(tmp_path), "demo", "github_demo")
    monkeypatch.undo()

    assert ledger(snow) == []
    assert all(rows == [] for rows in snapshot(snow).values())
    assert snow.execute(f"SELECT count(*) FROM {snow.table('STG_github_demo_pull_requests', pipeline_name=True)}") == [(0,)]

    report = merge_landed_loads(snow, str(tmp_path), "demo", "github_demo")
    assert report.loads_merged == ["999.5", "1000.25"]
    check_two_loads_merged(snow)


def test_copy_load_history_rolls_back_and_force_loads_skipped_files(tmp_path: Path, snow: SnowflakeWarehouse) -> None:
    """The facts behind FORCE = TRUE, measured on fakesnow."""
    land(tmp_path, "demo", "1.0", {"pull_requests": [pr("demo", 1, T0)]})
    merge_landed_loads(snow, str(tmp_path), "demo", "github_demo")  # bootstrap + one COPY, committed
    [name] = [p.name for p in (tmp_path / "github/pull_requests/org=demo/date=2026-01-05").iterdir()]
    stage = snow.table("STG_github_demo_pull_requests", pipeline_name=True)
    copy = (
        f"COPY INTO {stage} FROM @{snow.table('GITHUB_LANDING')}/pull_requests/org=demo/date=2026-01-05/"
        f" FILES = ('{name}') FILE_FORMAT = (TYPE = PARQUET) MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE"
    )
    # Loaded by a committed COPY (and the stage truncated since): a plain COPY now skips the file.
    assert snow.execute(copy)[0][1] == "LOAD_SKIPPED"
    assert snow.execute(copy + " FORCE = TRUE")[0][1] == "LOADED"
    snow._rollback()
    # A rolled-back COPY leaves no load history behind.
    land(tmp_path, "demo", "2.0", {"pull_requests": [pr("demo", 2, T0)]})
    [new_name] = [p.name for p in (tmp_path / "github/pull_requests/org=demo/date=2026-01-05").iterdir() if p.name.startswith("2.0.")]
    new_copy = copy.replace(name, new_name)
    assert snow.execute(new_copy)[0][1] == "LOADED"
    snow._rollback()
    assert snow.execute(new_copy)[0][1] == "LOADED"
    snow._rollback()


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"status": "LOAD_SKIPPED", "first_error": "File was loaded before."}, "status LOAD_SKIPPED"),
        ({"status": "PARTIALLY_LOADED", "first_error": "bad row"}, "status PARTIALLY_LOADED"),
        ({"status": "LOAD_FAILED", "first_error": "corrupt"}, "status LOAD_FAILED"),
    ],
)
def test_copy_result_other_than_loaded_fails_naming_the_file(result: dict, message: str) -> None:
    landed = LandedFile("pull_requests", "demo", "2026-01-05", "1.0", "1.0.abc.parquet", "x/1.0.abc.parquet", "x")
    row = {"file": "gcs://b/github/pull_requests/org=demo/date=2026-01-05/1.0.abc.parquet", "rows_loaded": 0,
           "rows_parsed": 3, "errors_seen": 1, **result}
    with pytest.raises(RuntimeError, match=rf"1\.0\.abc\.parquet: {message}"):
        _check_copy_results("pull_requests/org=demo/date=2026-01-05", [landed], [row])
    with pytest.raises(RuntimeError, match="did not report landed file"):
        _check_copy_results("pull_requests/org=demo/date=2026-01-05", [landed], [])


def test_partial_and_unledgered_loads(tmp_path: Path, snow: SnowflakeWarehouse) -> None:
    land(tmp_path, "demo", "1000.9", {"pull_requests": [pr("demo", 1, T0 + timedelta(hours=2), "newer")]})
    land(tmp_path, "demo", "999.99", {"pull_requests": [pr("demo", 1, T0, "older")]})
    land(tmp_path, "demo", "1001.5", {"pull_requests": [pr("demo", 9, T0, "half landed")]}, complete=False)
    assert merge_landed_loads(snow, str(tmp_path), "demo", "github_demo").loads_merged == ["999.99", "1000.9"]
    assert rows_by(snow, "pull_requests", "title") == [("newer",)]

    mark_complete(tmp_path, "1001.5", "github_demo")
    assert merge_landed_loads(snow, str(tmp_path), "demo", "github_demo").loads_merged == ["1001.5"]
    assert rows_by(snow, "pull_requests", "title") == [("half landed",), ("newer",)]


def test_two_organisations_merge_concurrently(
    tmp_path: Path, snowflake_config: Callable[..., SnowflakeConfig]
) -> None:
    orgs = ["alpha", "beta"]
    for org in orgs:
        land_two_loads(tmp_path, org)
    errors: list[BaseException] = []

    def run(org: str) -> None:
        warehouse = connect(snowflake_config, tmp_path)
        try:
            merge_landed_loads(warehouse, str(tmp_path), org, f"github_{org}")
        except BaseException as error:  # surfaced below
            errors.append(error)
        finally:
            warehouse.close()

    threads = [threading.Thread(target=run, args=(org,)) for org in orgs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    check = connect(snowflake_config, tmp_path)
    assert rows_by(check, "pull_requests", "org", "number", "title") == [
        ("alpha", 1, "renamed 🚀"), ("alpha", 2, "second"), ("beta", 1, "renamed 🚀"), ("beta", 2, "second")
    ]
    assert rows_by(check, "pull_request_files", "org", "filename") == [
        ("alpha", "a.py"), ("alpha", "x.py"), ("beta", "a.py"), ("beta", "x.py")
    ]
    assert len(ledger(check)) == 4
    check.close()


def test_a_declared_column_is_added_by_the_bootstrap_only(
    tmp_path: Path, snow: SnowflakeWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    land(tmp_path, "demo", "1.0", {"pull_requests": [pr("demo", 1, T0, "old")]})
    merge_landed_loads(snow, str(tmp_path), "demo", "github_demo")
    spec = TABLES["pull_requests"]
    monkeypatch.setitem(TABLES, "pull_requests", dataclasses.replace(
        spec, schema=spec.schema.append(pa.field("mergeable_state", pa.string()))))
    newer = to_table(TABLES["pull_requests"], [{**pr("demo", 2, T0, "new"), "mergeable_state": "clean"}])
    land(tmp_path, "demo", "2.0", {"pull_requests": newer})
    with pytest.raises(ValueError, match=r"mergeable_state .* run the bootstrap"):
        merge_landed_loads(snow, str(tmp_path), "demo", "github_demo", bootstrap_first=False)
    merge_landed_loads(snow, str(tmp_path), "demo", "github_demo")  # bootstraps first
    assert rows_by(snow, "pull_requests", "number", "mergeable_state") == [(1, None), (2, "clean")]


def test_new_list_bool_and_int_columns_reach_an_older_warehouse(
    tmp_path: Path, snow: SnowflakeWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    land_new_columns_onto_an_older_warehouse(tmp_path, snow, monkeypatch)
    # An ARRAY comes back as JSON text.
    check_new_columns(snow, lambda value: None if value is None else json.loads(value))


def test_injection_in_org_or_pipeline_is_rejected(tmp_path: Path, snow: SnowflakeWarehouse) -> None:
    with pytest.raises(ValueError, match="invalid organisation"):
        merge_landed_loads(snow, str(tmp_path), "x'); DROP TABLE GITHUB.PULL_REQUESTS; --", "github_demo")
    with pytest.raises(ValueError, match="invalid pipeline name"):
        merge_landed_loads(snow, str(tmp_path), "demo", 'github_demo"; DROP TABLE x; --')


def test_injection_in_config_names_is_rejected() -> None:
    config = SnowflakeConfig(
        account="a", user="u", password=SecretStr("p"), database="D", stage="LANDING'; DROP"
    )
    with pytest.raises(ValueError, match="invalid stage name"):
        SnowflakeWarehouse(config)


# --- GCS leg: dlt lands into a GCS emulator; fakesnow's stage and DuckDB read what it stored ----


def land_with_dlt_to_gcs(tmp_path: Path, url: str, bucket_url: str, prs: list[dict], pr_files: list[dict]) -> None:
    import dlt

    @dlt.resource(name="pull_requests")
    def pull_requests():
        yield to_table(TABLES["pull_requests"], prs)

    @dlt.resource(name="pull_request_files")
    def pull_request_files():
        yield to_table(TABLES["pull_request_files"], pr_files)

    pipeline = dlt.pipeline(
        "github_demo",
        pipelines_dir=str(tmp_path / "dlt"),
        destination=dlt.destinations.filesystem(
            bucket_url=bucket_url,
            # Only to pass dlt's credential resolution (no ADC here); the dispatch patched in
            # `gcs_landing` drops them so gcsfs uses the anonymous emulator kwargs.
            credentials={"project_id": "test", "private_key": "unused", "client_email": "anon@test.iam.gserviceaccount.com"},
            kwargs={"token": "anon", "endpoint_url": url, "project": "test"},
            layout="{table_name}/org={org}/date={YYYY}-{MM}-{DD}/{load_id}.{file_id}.{ext}",
            extra_placeholders={"org": "demo"},
        ),
        dataset_name="github",
    )
    pipeline.run([pull_requests(), pull_request_files()], loader_file_format="parquet")


@pytest.fixture
def gcs_landing(tmp_path: Path, gcs_bucket: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any, Path]:
    """Two loads landed by dlt in gs://<bucket>/landing; returns (bucket_url, gcsfs, stored folder).

    dlt 1.31 insists on resolving GCP credentials even when `kwargs` carry `token="anon"`, and its
    resolved credentials override those kwargs: the test drops them for gs:// instead.
    """
    import importlib

    fsspec_filesystem = importlib.import_module("dlt.common.storages.fsspec_filesystem")
    monkeypatch.setitem(fsspec_filesystem.CREDENTIALS_DISPATCH, "gs", lambda config: {})

    url, fs, bucket_url = gcs_bucket.endpoint_url, gcs_bucket.fs, gcs_bucket.url()
    first = pr("demo", 1, T0, "first ✨")
    land_with_dlt_to_gcs(tmp_path, url, bucket_url, [first], files("demo", first, "a.py", "b.py"))
    second = pr("demo", 1, T0 + timedelta(hours=1), "second ✨")
    land_with_dlt_to_gcs(tmp_path, url, bucket_url, [second], files("demo", second, "b.py"))
    fs.invalidate_cache()
    return bucket_url, fs, gcs_bucket.stored / "landing"


def test_gcs_landing_into_snowflake(
    gcs_landing: tuple[str, Any, Path], snowflake_config: Callable[..., SnowflakeConfig]
) -> None:
    bucket_url, fs, stored = gcs_landing
    # The emulator stores objects as plain files: the stage reads them where a gcs:// stage would.
    warehouse = connect(snowflake_config, stored)
    report = merge_landed_loads(warehouse, bucket_url, "demo", "github_demo", fs=fs)
    assert len(report.loads_merged) == 2
    assert rows_by(warehouse, "pull_requests", "title") == [("second ✨",)]
    assert rows_by(warehouse, "pull_request_files", "filename") == [("b.py",)]
    assert merge_landed_loads(warehouse, bucket_url, "demo", "github_demo", fs=fs).loads_merged == []
    warehouse.close()


def test_gcs_landing_into_duckdb_through_fsspec(gcs_landing: tuple[str, Any, Path], tmp_path: Path) -> None:
    from destinations import DuckDBConfig, DuckDBWarehouse

    bucket_url, fs, _ = gcs_landing
    warehouse = DuckDBWarehouse(DuckDBConfig(path=tmp_path / "gcs.duckdb"))
    report = merge_landed_loads(warehouse, bucket_url, "demo", "github_demo", fs=fs)
    assert len(report.loads_merged) == 2
    assert rows_by(warehouse, "pull_requests", "title") == [("second ✨",)]
    assert rows_by(warehouse, "pull_request_files", "filename") == [("b.py",)]
    warehouse.close()


def test_key_pair_auth_arguments(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from destinations.warehouse import snowflake_connect_args

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    (tmp_path / "key.p8").write_bytes(pem)
    config = SnowflakeConfig(
        account="acct", user="u", database="D", private_key_path=tmp_path / "key.p8",
        private_key_passphrase=SecretStr("s3cret"),
    )
    args = snowflake_connect_args(config)
    assert isinstance(args["private_key"], bytes) and "password" not in args
    assert args["autocommit"] is False and "protocol" not in args
    assert "s3cret" not in repr(config)
    with pytest.raises(ValueError, match="private_key_path or password"):
        snowflake_connect_args(SnowflakeConfig(account="a", user="u", database="D"))
