"""The warehouse step on DuckDB (the product's default): merge landed loads exactly once."""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa
import pytest
from fsspec.implementations.local import LocalFileSystem

from destinations import DuckDBConfig, DuckDBWarehouse, bootstrap, merge_landed_loads
from destinations import sql
from destinations.warehouse import DuckDBWarehouse as _DuckDB
from sources.github.schema import TABLES, to_table
from sources.github.schema import child_fetch_row
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
    org_base,
    pr,
    reviews,
    rows_by,
    snapshot,
)

# --- DuckDB -------------------------------------------------------------------------------------


@pytest.fixture
def duck(tmp_path: Path):
    warehouse = DuckDBWarehouse(DuckDBConfig(path=tmp_path / "wh" / "warehouse.duckdb"))
    yield warehouse
    warehouse.close()


def test_two_loads_merge_newest_wins_and_removed_child_disappears(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    land_two_loads(tmp_path / "landing")
    report = merge_landed_loads(duck, str(tmp_path / "landing"), "demo", "github_demo")

    assert report.loads_merged == ["999.5", "1000.25"]  # float order, not string order
    assert report.rows_staged == {"pull_requests": 6, "pull_request_files": 4, "pull_request_reviews": 1}
    assert report.rows_deleted == {"pull_requests": 0, "pull_request_files": 1, "pull_request_reviews": 0}
    assert report.warehouse.startswith("duckdb:")
    check_two_loads_merged(duck)
    labels = duck.execute('SELECT labels FROM github.pull_requests WHERE number = 1')
    assert labels == [([],)]  # the newest copy carries no labels
    assert ledger(duck) == [("github_demo", "1000.25"), ("github_demo", "999.5")]


def test_unicode_and_lists_round_trip(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    pull = pr("demo", 5, T0, "Ünïcödé — 日本語 🚀", ("bug", "défaut", "🐛"))
    land(tmp_path, "demo", "1.0", {"pull_requests": [pull]})
    merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    assert duck.execute("SELECT title, labels, updated_at FROM github.pull_requests") == [
        ("Ünïcödé — 日本語 🚀", ["bug", "défaut", "🐛"], T0)
    ]


def test_second_run_merges_nothing(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    land_two_loads(tmp_path)
    merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    before = snapshot(duck)
    report = merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    assert report.loads_merged == [] and report.rows_staged == {}
    assert snapshot(duck) == before


def test_repeating_everything_gives_identical_tables(tmp_path: Path) -> None:
    land_two_loads(tmp_path / "landing")
    one = DuckDBWarehouse(DuckDBConfig(path=tmp_path / "one.duckdb"))
    merge_landed_loads(one, str(tmp_path / "landing"), "demo", "github_demo")
    # Replaying every load into the same warehouse (ledger emptied) changes nothing.
    first = snapshot(one)
    one.execute(f"DELETE FROM {one.table('MERGED_LOADS')}")
    assert merge_landed_loads(one, str(tmp_path / "landing"), "demo", "github_demo").loads_merged == ["999.5", "1000.25"]
    assert snapshot(one) == first
    # A fresh warehouse ends up the same.
    two = DuckDBWarehouse(DuckDBConfig(path=tmp_path / "two.duckdb"))
    merge_landed_loads(two, str(tmp_path / "landing"), "demo", "github_demo")
    assert snapshot(two) == first
    one.close()
    two.close()


def test_crash_between_copy_and_merge_rolls_back(tmp_path: Path, duck: DuckDBWarehouse, monkeypatch) -> None:
    land_two_loads(tmp_path)
    original = _DuckDB.load_stage

    def load_then_crash(self, stage_table, landed, columns):
        original(self, stage_table, landed, columns)
        raise RuntimeError("injected crash after COPY")

    monkeypatch.setattr(_DuckDB, "load_stage", load_then_crash)
    with pytest.raises(RuntimeError, match="injected crash"):
        merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    monkeypatch.undo()

    assert ledger(duck) == []
    assert all(rows == [] for rows in snapshot(duck).values())
    assert duck.execute('SELECT count(*) FROM github."stg_github_demo_pull_requests"') == [(0,)]

    report = merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    assert report.loads_merged == ["999.5", "1000.25"]
    check_two_loads_merged(duck)


def test_crash_on_a_later_table_undoes_the_earlier_tables(tmp_path: Path, duck: DuckDBWarehouse, monkeypatch) -> None:
    land_two_loads(tmp_path)
    merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    before = snapshot(duck)
    pull = pr("demo", 1, T0 + timedelta(days=1), "after crash")
    land(tmp_path, "demo", "2000.0", {"pull_requests": [pull], "pull_request_files": files("demo", pull, "z.py")})

    original = type(duck).load_stage

    def crash_on_files(warehouse, stage_table, *args):
        if "pull_request_files" in stage_table.lower():
            raise RuntimeError("injected crash in the second table")
        return original(warehouse, stage_table, *args)

    monkeypatch.setattr(type(duck), "load_stage", crash_on_files)
    with pytest.raises(RuntimeError, match="second table"):
        merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    monkeypatch.undo()
    assert snapshot(duck) == before

    assert merge_landed_loads(duck, str(tmp_path), "demo", "github_demo").loads_merged == ["2000.0"]
    assert rows_by(duck, "pull_request_files", "pull_request_number", "filename") == [(1, "z.py"), (2, "x.py")]


def test_unledgered_completed_loads_are_merged_oldest_first(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    # Two loads landed by earlier runs whose warehouse step never ran (or crashed).
    older, newer = pr("demo", 1, T0, "older"), pr("demo", 1, T0 + timedelta(hours=2), "newer")
    land(tmp_path, "demo", "1000.9", {"pull_requests": [newer]})
    land(tmp_path, "demo", "999.99", {"pull_requests": [older]})
    land(tmp_path, "demo", "1001.0", {})  # a load that changed nothing: no data files
    report = merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    assert report.loads_merged == ["999.99", "1000.9", "1001.0"]
    assert rows_by(duck, "pull_requests", "title") == [("newer",)]


def test_partially_landed_load_is_ignored_until_complete(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    land(tmp_path, "demo", "5.0", {"pull_requests": [pr("demo", 1, T0, "crashed landing")]}, complete=False)
    report = merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    assert report.loads_merged == [] and rows_by(duck, "pull_requests", "title") == []

    mark_complete(tmp_path, "5.0", "github_demo")  # dlt re-landed it and wrote the record
    assert merge_landed_loads(duck, str(tmp_path), "demo", "github_demo").loads_merged == ["5.0"]
    assert rows_by(duck, "pull_requests", "title") == [("crashed landing",)]


def test_other_pipelines_and_orgs_are_not_merged(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    land(tmp_path, "other", "7.0", {"pull_requests": [pr("other", 1, T0)]})
    assert merge_landed_loads(duck, str(tmp_path), "demo", "github_demo").loads_merged == []
    assert rows_by(duck, "pull_requests", "org") == []


def test_two_organisations_merge_concurrently(tmp_path: Path) -> None:
    orgs = ["alpha", "beta"]
    for org in orgs:
        land_two_loads(tmp_path / "landing", org)
    path = tmp_path / "warehouse.duckdb"
    setup = DuckDBWarehouse(DuckDBConfig(path=path))
    bootstrap(setup, [f"github_{org}" for org in orgs])

    errors: list[BaseException] = []
    reports: dict[str, Any] = {}

    def run(org: str) -> None:
        warehouse = DuckDBWarehouse(DuckDBConfig(path=path))
        try:
            reports[org] = merge_landed_loads(warehouse, str(tmp_path / "landing"), org, f"github_{org}")
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
    for org in orgs:
        assert reports[org].loads_merged == ["999.5", "1000.25"]
        assert rows_by(setup, "pull_requests", "org", "number", "title") == [
            ("alpha", 1, "renamed 🚀"), ("alpha", 2, "second"), ("beta", 1, "renamed 🚀"), ("beta", 2, "second")
        ]
    assert rows_by(setup, "pull_request_files", "org", "filename") == [
        ("alpha", "a.py"), ("alpha", "x.py"), ("beta", "a.py"), ("beta", "x.py")
    ]
    assert ledger(setup) == [
        ("github_alpha", "1000.25"), ("github_alpha", "999.5"), ("github_beta", "1000.25"), ("github_beta", "999.5")
    ]
    setup.close()


def test_a_declared_column_is_added_by_the_bootstrap_and_a_merge_runs_no_ddl(
    tmp_path: Path, duck: DuckDBWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18.6: ALTER TABLE in the merge path raced other runs' transactions (and committed
    an open one on Snowflake). A column declared since the tables were made is added by the
    bootstrap, to target and stage table; the merge itself runs no DDL at all."""
    land(tmp_path, "demo", "1.0", {"pull_requests": [pr("demo", 1, T0, "old")]})
    merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")

    spec = TABLES["pull_requests"]
    monkeypatch.setitem(TABLES, "pull_requests", dataclasses.replace(
        spec, schema=spec.schema.append(pa.field("mergeable_state", pa.string()))))
    newer = to_table(TABLES["pull_requests"], [{**pr("demo", 2, T0, "new"), "mergeable_state": "clean"}])
    land(tmp_path, "demo", "2.0", {"pull_requests": newer})
    bootstrap(duck, ["github_demo"])
    assert "mergeable_state" in duck.columns("stg_github_demo_pull_requests", pipeline_name=True)

    executed: list[str] = []
    run = duck._run
    monkeypatch.setattr(duck, "_run", lambda statement, params=(): executed.append(statement) or run(statement, params))
    merge_landed_loads(duck, str(tmp_path), "demo", "github_demo", bootstrap_first=False)
    assert executed and not [s for s in executed if s.lstrip().upper().startswith(("ALTER", "CREATE", "DROP"))]
    assert rows_by(duck, "pull_requests", "number", "mergeable_state") == [(1, None), (2, "clean")]


def test_a_landed_column_the_table_lacks_stops_the_merge_naming_it(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    """A column no declared schema has (landed by another version): named, nothing merged, never
    added behind the bootstrap's back."""
    land(tmp_path, "demo", "1.0", {"pull_requests": [pr("demo", 1, T0, "old")]})
    merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    newer = to_table(TABLES["pull_requests"], [pr("demo", 2, T0, "new")])
    newer = newer.append_column("mergeable_state", pa.array(["clean"], pa.string()))
    land(tmp_path, "demo", "2.0", {"pull_requests": newer})
    with pytest.raises(ValueError, match=r"landed column pull_requests\.mergeable_state .* run the bootstrap"):
        merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    assert "mergeable_state" not in duck.columns("pull_requests")
    assert ledger(duck) == [("github_demo", "1.0")]


def test_an_older_fetch_merged_later_never_brings_back_a_child_the_newer_fetch_dropped(
    tmp_path: Path, duck: DuckDBWarehouse
) -> None:
    """Issue 18.7: load 2.0 carries the pull request as it was before load 1.0's fetch (two runs
    fetched it at once; the slower one landed later). Its reviews 11 and 12 are older than load
    1.0's list, which held 11 only: review 12 must not come back (the insert had no guard)."""
    newer, older = pr("demo", 1, T0 + timedelta(hours=1), "newer"), pr("demo", 1, T0, "older")
    land(tmp_path, "demo", "1.0", {
        "pull_requests": [newer],
        "pull_request_child_fetches": [child_fetch_row("demo", "repo", newer, "reviews", 1, T0)],
        "pull_request_reviews": reviews("demo", newer, 11),
    })
    land(tmp_path, "demo", "2.0", {
        "pull_requests": [older],
        "pull_request_child_fetches": [child_fetch_row("demo", "repo", older, "reviews", 2, T0)],
        "pull_request_reviews": reviews("demo", older, 11, 12),
    })
    report = merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    assert report.loads_merged == ["1.0", "2.0"]
    assert rows_by(duck, "pull_requests", "number", "title") == [(1, "newer")]
    assert rows_by(duck, "pull_request_reviews", "id") == [(org_base("demo") + 11,)]


def test_a_load_landed_after_a_newer_one_was_merged_is_merged_like_any_other(
    tmp_path: Path, duck: DuckDBWarehouse
) -> None:
    """Issue 18.5 (review): the claim assumes no load order and no clock. A load with an older id
    that completes after a newer one was merged (two runs landing one organisation at once, a
    clock that stepped back) is merged, once."""
    land(tmp_path, "demo", "2.0", {"pull_requests": [pr("demo", 2, T0, "two")]})
    merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    land(tmp_path, "demo", "1.0", {"pull_requests": [pr("demo", 1, T0, "one")]})
    report = merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    assert report.loads_merged == ["1.0"] and report.loads_set_aside == {}
    assert ledger(duck) == [("github_demo", "1.0"), ("github_demo", "2.0")]
    assert merge_landed_loads(duck, str(tmp_path), "demo", "github_demo").loads_merged == []


def test_two_ledger_rows_for_one_load_are_warned_about(
    tmp_path: Path, duck: DuckDBWarehouse, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    land(tmp_path, "demo", "1.0", {"pull_requests": [pr("demo", 1, T0)]})
    merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    # Snowflake enforces no PRIMARY KEY, so it can hold two rows of a load; DuckDB refuses them:
    # the count is doubled instead, as Snowflake would report it.
    counted = sql.ledger_rows
    monkeypatch.setattr(sql, "ledger_rows", lambda ledger: counted(ledger).replace("COUNT(*)", "COUNT(*) * 2"))
    with caplog.at_level("WARNING", logger="destinations.merge"):
        report = merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    assert report.loads_merged == []
    assert "load 1.0 has 2 rows in" in caplog.text


def test_new_list_bool_and_int_columns_reach_an_older_warehouse(
    tmp_path: Path, duck: DuckDBWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    land_new_columns_onto_an_older_warehouse(tmp_path, duck, monkeypatch)
    check_new_columns(duck, lambda value: value)
    types = duck.columns("pull_requests")
    assert (types["assignees"], types["auto_merge_enabled"], types["repo_id"]) == ("VARCHAR[]", "BOOLEAN", "BIGINT")
    assert "head_is_fork" in duck.columns("stg_github_demo_pull_requests", pipeline_name=True)


def test_incompatible_type_change_names_the_column(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    land(tmp_path, "demo", "1.0", {"pull_requests": [pr("demo", 1, T0)]})
    merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    changed = to_table(TABLES["pull_requests"], [pr("demo", 2, T0)])
    changed = changed.set_column(changed.schema.get_field_index("number"), "number", pa.array(["two"]))
    land(tmp_path, "demo", "2.0", {"pull_requests": changed})
    with pytest.raises(ValueError, match=r"pull_requests\.number changed type"):
        merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")
    assert ledger(duck) == [("github_demo", "1.0")]


@pytest.mark.parametrize(
    ("org", "pipeline_name"),
    [
        ("demo'; DROP TABLE github.pull_requests; --", "github_demo"),
        ("demo", 'github_demo"; DROP TABLE github.pull_requests; --'),
        ("../etc", "github_demo"),
        ("demo", "x" * 101),
    ],
)
def test_injection_in_names_is_rejected(tmp_path: Path, duck: DuckDBWarehouse, org: str, pipeline_name: str) -> None:
    with pytest.raises(ValueError, match="invalid (organisation|pipeline name)"):
        merge_landed_loads(duck, str(tmp_path), org, pipeline_name)


def test_injection_in_schema_name_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid schema name"):
        DuckDBWarehouse(DuckDBConfig(path=tmp_path / "w.duckdb", schema_name='github"; DROP'))


def test_loads_landed_by_dlt_filesystem_destination(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    """The real layout and _dlt_loads records, as dlt 1.31 writes them."""
    landing = tmp_path / "landing"

    def run(prs: list[dict], pr_files: list[dict]) -> None:
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
                bucket_url=str(landing),
                layout="{table_name}/org={org}/date={YYYY}-{MM}-{DD}/{load_id}.{file_id}.{ext}",
                extra_placeholders={"org": "demo"},
            ),
            dataset_name="github",
        )
        pipeline.run([pull_requests(), pull_request_files()], loader_file_format="parquet")

    first = pr("demo", 1, T0, "first")
    run([first], files("demo", first, "a.py", "b.py"))
    second = pr("demo", 1, T0 + timedelta(hours=1), "second")
    run([second], files("demo", second, "b.py"))

    report = merge_landed_loads(duck, str(landing), "demo", "github_demo")
    assert len(report.loads_merged) == 2
    assert rows_by(duck, "pull_requests", "title") == [("second",)]
    assert rows_by(duck, "pull_request_files", "filename") == [("b.py",)]
    assert merge_landed_loads(duck, str(landing), "demo", "github_demo").loads_merged == []


class _CountingFileSystem(LocalFileSystem):
    """A local filesystem that records what the merge lists and opens."""

    cachable = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.globs: list[str] = []
        self.opened: list[str] = []
        self.listed: list[str] = []

    def ls(self, path: str, *args: Any, **kwargs: Any) -> Any:
        self.listed.append(str(path))
        return super().ls(path, *args, **kwargs)

    def glob(self, path: str, **kwargs: Any) -> Any:
        self.globs.append(path)
        return super().glob(path, **kwargs)

    def _open(self, path: str, *args: Any, **kwargs: Any) -> Any:
        self.opened.append(path)
        return super()._open(path, *args, **kwargs)


def test_merge_cost_does_not_grow_with_the_landing_history(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    """A year of loads already merged: the next merge opens one load record and one manifest,
    and lists no partition at all."""
    day = 86_400.0
    start = datetime(2026, 1, 1, 12, tzinfo=timezone.utc).timestamp()
    for index in range(10):  # earlier loads, days apart
        load_id = f"{start + index * 20 * day:.4f}"
        date = datetime.fromtimestamp(float(load_id), tz=timezone.utc).date().isoformat()
        land(tmp_path, "demo", load_id, {"pull_requests": [pr("demo", index + 1, T0)]}, date=date)
    merge_landed_loads(duck, str(tmp_path), "demo", "github_demo")

    newest = f"{start + 250 * day:.4f}"
    newest_date = datetime.fromtimestamp(float(newest), tz=timezone.utc).date().isoformat()
    land(tmp_path, "demo", newest, {"pull_requests": [pr("demo", 99, T0)]}, date=newest_date)
    fs = _CountingFileSystem()
    report = merge_landed_loads(duck, str(tmp_path), "demo", "github_demo", fs=fs)

    assert report.loads_merged == [newest]
    assert [p for p in fs.opened if "_dlt_loads" in p] == [
        str(tmp_path / "github" / "_dlt_loads" / f"github_demo__{newest}.jsonl")
    ]
    assert [p for p in fs.opened if "_manifests" in p] == [
        str(tmp_path / "github" / "_manifests" / "github_demo" / f"{newest}.json")
    ]
    assert fs.globs == [] and not [p for p in fs.listed if "date=" in p]
    assert rows_by(duck, "pull_requests", "number")[-1] == (99,)


def test_a_merge_waits_for_another_process_saying_so_and_warns_only_when_it_is_long(tmp_path, caplog, monkeypatch):
    import destinations.warehouse as warehouse_module
    from test_merge_concurrency import hold_file

    path = tmp_path / "locked.duckdb"
    holder = hold_file(path, 1.5)
    with caplog.at_level("INFO", logger="destinations.warehouse"):
        warehouse_module._connect_waiting(path, timeout=30).close()
    holder.wait()
    waits = [r for r in caplog.records if "locked by another process" in r.getMessage()]
    assert [r.levelname for r in waits] == ["INFO"]  # a routine turn: no warning on a healthy run

    caplog.clear()
    monkeypatch.setattr(warehouse_module, "LOCK_WARN_SECONDS", 0.5)
    holder = hold_file(path, 1.5)
    with caplog.at_level("INFO", logger="destinations.warehouse"):
        warehouse_module._connect_waiting(path, timeout=30).close()
    holder.wait()
    waits = [r for r in caplog.records if "locked by another process" in r.getMessage()]
    assert [r.levelname for r in waits] == ["INFO", "WARNING"]
    assert "is still locked by another process after" in waits[1].getMessage()

    holder = hold_file(path, 5)
    with pytest.raises(warehouse_module.WarehouseLocked, match="still locked by another process after waiting 1 s"):
        warehouse_module._connect_waiting(path, timeout=1)
    holder.kill()
