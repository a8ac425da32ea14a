"""Exactly once under concurrency: merges at once into one DuckDB file (threads of one process, or
a second process holding it), two runs of one pipeline on DuckDB and on Snowflake (fakesnow), and a
gs:// landing read by two merges of one process."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from destinations import DuckDBConfig, DuckDBWarehouse, SnowflakeConfig, SnowflakeWarehouse, Warehouse, bootstrap
from destinations import merge, merge_landed_loads, sql
from destinations.landing import Landing
from destinations.merge import MergeReport
from destinations.warehouse import WarehouseLocked
from warehouse_loads import T0, land, land_two_loads, ledger, pr, rows_by

ORGS = ["alpha", "beta", "gamma", "delta"]


def run_in_threads(calls: dict[str, Callable[[], MergeReport]]) -> tuple[dict[str, MergeReport], dict[str, BaseException]]:
    """Start every call at the same moment, each in its own thread (as the flow's task runner does)."""
    start = threading.Barrier(len(calls))
    reports: dict[str, MergeReport] = {}
    errors: dict[str, BaseException] = {}

    def run(name: str, call: Callable[[], MergeReport]) -> None:
        start.wait()
        try:
            reports[name] = call()
        except BaseException as error:  # surfaced by the caller
            errors[name] = error

    threads = [threading.Thread(target=run, args=item, name=item[0]) for item in calls.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return reports, errors


def duckdb_merge(path: Path, bucket_url: str, org: str, **kwargs: Any) -> Callable[[], MergeReport]:
    """What the flow's merge task does: open the warehouse, merge, close."""

    def call() -> MergeReport:
        warehouse = DuckDBWarehouse(DuckDBConfig(path=path))
        try:
            return merge_landed_loads(warehouse, bucket_url, org, f"github_{org}", **kwargs)
        finally:
            warehouse.close()

    return call


def test_four_organisations_merge_at_once_into_a_fresh_duckdb_file(tmp_path: Path) -> None:
    """No retry: every merge succeeds at its first attempt, each bootstrapping the fresh file."""
    landing, path = tmp_path / "landing", tmp_path / "fresh.duckdb"
    for org in ORGS:
        land_two_loads(landing, org)

    reports, errors = run_in_threads({org: duckdb_merge(path, str(landing), org) for org in ORGS})

    assert errors == {}
    assert {org: report.loads_merged for org, report in reports.items()} == {org: ["999.5", "1000.25"] for org in ORGS}
    check = DuckDBWarehouse(DuckDBConfig(path=path))
    assert rows_by(check, "pull_requests", "org", "number", "title") == [
        (org, number, title) for org in sorted(ORGS) for number, title in ((1, "renamed 🚀"), (2, "second"))
    ]
    assert len(ledger(check)) == 2 * len(ORGS)
    check.close()


# --- A second process holding the DuckDB file ---------------------------------------------------

HOLD_FILE = """
import sys, time, duckdb
connection = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(60)
"""


def hold_file(path: Path, seconds: float = 60) -> subprocess.Popen[str]:
    """A real second process: python opens the DuckDB file (taking its lock) and sleeps."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_FILE.replace("60", repr(seconds)), str(path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "holding"
    return process


def test_merge_waits_for_another_process_then_fails_clearly_with_nothing_merged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    landing, path = tmp_path / "landing", tmp_path / "warehouse.duckdb"
    land(landing, "demo", "1.0", {"pull_requests": [pr("demo", 1, T0, "first")]})
    duckdb_merge(path, str(landing), "demo")()
    land(landing, "demo", "2.0", {"pull_requests": [pr("demo", 2, T0, "second")]})

    holder = hold_file(path)
    try:
        with caplog.at_level(logging.INFO, logger="destinations.warehouse"):
            with pytest.raises(WarehouseLocked) as failure:
                warehouse = DuckDBWarehouse(DuckDBConfig(path=path, lock_timeout_seconds=1.5))
                merge_landed_loads(warehouse, str(landing), "demo", "github_demo")
    finally:
        holder.kill()
        holder.wait()
    message = str(failure.value)
    assert f"DuckDB file {path.resolve()} is still locked by another process after waiting 1.5 s" in message
    assert "lock_timeout_seconds" in message
    waiting = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert len(waiting) == 1 and str(path.resolve()) in waiting[0] and "up to 1.5 s" in waiting[0]

    # Nothing of load 2 reached the warehouse; the next attempt merges it.
    check = DuckDBWarehouse(DuckDBConfig(path=path))
    assert ledger(check) == [("github_demo", "1.0")]
    assert rows_by(check, "pull_requests", "title") == [("first",)]
    assert merge_landed_loads(check, str(landing), "demo", "github_demo").loads_merged == ["2.0"]
    check.close()


def test_merge_goes_on_once_the_other_process_lets_go(tmp_path: Path) -> None:
    landing, path = tmp_path / "landing", tmp_path / "warehouse.duckdb"
    land(landing, "demo", "1.0", {"pull_requests": [pr("demo", 1, T0, "first")]})
    holder = hold_file(path, seconds=1.5)
    try:
        warehouse = DuckDBWarehouse(DuckDBConfig(path=path, lock_timeout_seconds=30))
        assert merge_landed_loads(warehouse, str(landing), "demo", "github_demo").loads_merged == ["1.0"]
        warehouse.close()
    finally:
        holder.kill()
        holder.wait()


# --- Two runs of one pipeline merging at once -----------------------------------------------------


def race_after_reading_the_ledger(monkeypatch: pytest.MonkeyPatch, *, one_after_the_other: bool) -> None:
    """Both runs read the ledger (both see the loads pending) before either merges.

    `one_after_the_other`: run "second" then waits until run "first" has committed, as a Snowflake
    transaction waits for another's lock; otherwise both go on at once.
    """
    read = threading.Barrier(2)
    first_done = threading.Event()
    completed_loads = Landing.completed_loads

    def racing(self: Landing, *args: Any, **kwargs: Any) -> list[str]:
        pending = completed_loads(self, *args, **kwargs)
        read.wait(timeout=60)
        if one_after_the_other and threading.current_thread().name == "second":
            assert first_done.wait(timeout=60)
        return pending

    monkeypatch.setattr(Landing, "completed_loads", racing)
    monkeypatch.setattr(
        "test_merge_concurrency._done", lambda name: first_done.set() if name == "first" else None
    )


def _done(name: str) -> None:
    """Replaced by `race_after_reading_the_ledger`."""


def two_runs(make: Callable[[], Warehouse], landing: Path) -> dict[str, Callable[[], MergeReport]]:
    def run(name: str) -> Callable[[], MergeReport]:
        def call() -> MergeReport:
            warehouse = make()
            try:
                return merge_landed_loads(warehouse, str(landing), "demo", "github_demo")
            finally:
                warehouse.close()
                _done(name)

        return call

    return {"first": run("first"), "second": run("second")}


def check_each_load_merged_once(check: Warehouse, reports: dict[str, MergeReport] | None = None) -> None:
    assert ledger(check) == [("github_demo", "1000.25"), ("github_demo", "999.5")]
    assert rows_by(check, "pull_requests", "number", "title") == [(1, "renamed 🚀"), (2, "second")]
    assert rows_by(check, "pull_request_files", "pull_request_number", "filename") == [(1, "a.py"), (2, "x.py")]
    if reports is not None:
        merged = sorted(load for report in reports.values() for load in report.loads_merged)
        assert merged == ["1000.25", "999.5"]  # each load merged by one run only


@pytest.mark.parametrize("one_after_the_other", [True, False], ids=["waiting", "at-once"])
def test_two_runs_of_one_pipeline_merge_each_load_once_on_duckdb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_after_the_other: bool
) -> None:
    landing, path = tmp_path / "landing", tmp_path / "warehouse.duckdb"
    land_two_loads(landing)
    setup = DuckDBWarehouse(DuckDBConfig(path=path))
    bootstrap(setup, ["github_demo"])
    race_after_reading_the_ledger(monkeypatch, one_after_the_other=one_after_the_other)

    reports, errors = run_in_threads(two_runs(lambda: DuckDBWarehouse(DuckDBConfig(path=path)), landing))

    assert errors == {}
    check_each_load_merged_once(setup, reports)
    setup.close()


def snowflake(snowflake_config: Callable[..., SnowflakeConfig], landing: Path, **fields: Any) -> SnowflakeWarehouse:
    return SnowflakeWarehouse(snowflake_config(f"file://{landing.resolve()}/github/", **fields))


def test_two_runs_of_one_pipeline_merge_each_load_once_on_snowflake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snowflake_config: Callable[..., SnowflakeConfig]
) -> None:
    """The second run's transaction starts after the first committed (on Snowflake it waits for the
    lock): it finds the loads claimed and skips them, with no error."""
    land_two_loads(tmp_path)
    setup = snowflake(snowflake_config, tmp_path)
    bootstrap(setup, ["github_demo"])
    race_after_reading_the_ledger(monkeypatch, one_after_the_other=True)

    reports, errors = run_in_threads(two_runs(lambda: snowflake(snowflake_config, tmp_path), tmp_path))

    assert errors == {}
    assert reports["second"].loads_merged == []
    check_each_load_merged_once(setup, reports)
    setup.close()


def test_two_runs_of_one_pipeline_at_once_on_fakesnow_leave_one_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snowflake_config: Callable[..., SnowflakeConfig]
) -> None:
    """Truly at once. Snowflake would make one wait for the lock (the test above); fakesnow, DuckDB
    inside, fails the rival's lock UPDATE at once instead: it rolls back, having written nothing."""
    land_two_loads(tmp_path)
    setup = snowflake(snowflake_config, tmp_path)
    bootstrap(setup, ["github_demo"])
    race_after_reading_the_ledger(monkeypatch, one_after_the_other=False)

    # A short network timeout: the connector retries fakesnow's HTTP 500 until it runs out.
    reports, errors = run_in_threads(
        two_runs(lambda: snowflake(snowflake_config, tmp_path, network_timeout=4), tmp_path)
    )

    # fakesnow answers the failed statement with a bare HTTP 500: its text does not say "conflict".
    assert len(errors) <= 1, errors
    if errors:  # the loser rolled back; what the winner committed is whole, and a next run completes it
        monkeypatch.undo()
        merge_landed_loads(setup, str(tmp_path), "demo", "github_demo")
        check_each_load_merged_once(setup)
    else:
        check_each_load_merged_once(setup, reports)
    setup.close()


def test_the_claim_is_a_compare_and_set_on_the_pipelines_lock_row() -> None:
    """Issue 18.5: the decision is the row count of an UPDATE of the lock row, never a read of the
    ledger alone, which under Snowflake's default READ_CONSISTENCY_MODE may miss a fresh commit."""
    snapshot = sql.claim_snapshot('"S"."MERGE_LOCKS"', '"S"."MERGED_LOADS"')
    assert snapshot.startswith("SELECT COALESCE(l.merge_count, 0)") and '"S"."MERGED_LOADS"' in snapshot
    claim = sql.claim_load('"S"."MERGE_LOCKS"')
    assert claim.startswith('UPDATE "S"."MERGE_LOCKS" SET') and "COALESCE(merge_count, 0) = ?" in claim
    assert "NOT EXISTS" not in sql.record_load('"S"."MERGED_LOADS"')


def stale_snapshots_for(monkeypatch: pytest.MonkeyPatch, thread: str, times: int) -> None:
    """The first `times` claim snapshots of `thread` show the warehouse as it was before any merge
    (merge count 0, an empty ledger): a session that misses what another committed a moment ago."""
    fresh, served = sql.claim_snapshot, [0]

    def snapshot(table: str, ledger: str) -> str:
        if threading.current_thread().name == thread and served[0] < times:
            served[0] += 1
            return "SELECT 0, 0 WHERE ? IS NOT NULL AND ? IS NOT NULL AND ? IS NOT NULL"
        return fresh(table, ledger)

    monkeypatch.setattr(sql, "claim_snapshot", snapshot)


def test_a_run_whose_reads_miss_fresh_commits_never_merges_a_load_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second run starts its merges after the first committed them, but its first reads still
    show the warehouse before them: its compare-and-set updates nothing, it reads again (waiting
    while the reads lag) and skips both loads. Each load is merged once, with one ledger row."""
    landing, path = tmp_path / "landing", tmp_path / "warehouse.duckdb"
    land_two_loads(landing)
    setup = DuckDBWarehouse(DuckDBConfig(path=path))
    bootstrap(setup, ["github_demo"])
    setup.close()
    monkeypatch.setattr(merge, "CLAIM_BACKOFF", 0.0)
    stale_snapshots_for(monkeypatch, "second", times=3)
    race_after_reading_the_ledger(monkeypatch, one_after_the_other=True)
    reports, errors = run_in_threads(two_runs(lambda: DuckDBWarehouse(DuckDBConfig(path=path)), landing))
    assert errors == {}
    assert reports["second"].loads_merged == [] and reports["second"].loads_set_aside == {}
    check = DuckDBWarehouse(DuckDBConfig(path=path))
    check_each_load_merged_once(check, reports)
    check.close()


def test_reads_that_never_catch_up_stop_the_merge_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landing, path = tmp_path / "landing", tmp_path / "warehouse.duckdb"
    land_two_loads(landing)
    warehouse = DuckDBWarehouse(DuckDBConfig(path=path))
    merge_landed_loads(warehouse, str(landing), "demo", "github_demo")
    warehouse.execute(f"DELETE FROM {warehouse.table('MERGED_LOADS')} WHERE load_id = '1000.25'")
    monkeypatch.setattr(merge, "CLAIM_BACKOFF", 0.0)
    stale_snapshots_for(monkeypatch, threading.current_thread().name, times=100)
    with pytest.raises(RuntimeError, match="missed the newest merge .*READ_CONSISTENCY_MODE"):
        merge_landed_loads(warehouse, str(landing), "demo", "github_demo")
    warehouse.close()


# --- A gs:// landing read by two merges of one process --------------------------------------------


def test_two_merges_in_one_process_read_a_gcs_landing(tmp_path: Path, gcs_bucket: Any) -> None:
    local = tmp_path / "landing"
    for org in ORGS[:2]:
        land_two_loads(local, org)
    bucket_url = gcs_bucket.url()
    gcs_bucket.fs.put(str(local / "github"), f"{gcs_bucket.name}/landing/", recursive=True)
    gcs_bucket.fs.invalidate_cache()
    path = tmp_path / "warehouse.duckdb"

    calls = {org: duckdb_merge(path, bucket_url, org, fs=gcs_bucket.fs) for org in ORGS[:2]}
    reports, errors = run_in_threads(calls)

    assert errors == {}
    assert {org: report.loads_merged for org, report in reports.items()} == {
        org: ["999.5", "1000.25"] for org in ORGS[:2]
    }
    check = DuckDBWarehouse(DuckDBConfig(path=path))
    assert len(ledger(check)) == 4
    check.close()


def test_the_lock_wait_setting_keeps_the_data_directorys_file(tmp_path, monkeypatch):
    from settings import Settings

    monkeypatch.setenv("PR_ANALYTICS_DUCKDB__LOCK_TIMEOUT_SECONDS", "5")
    config = Settings(data_dir=tmp_path).duckdb_config
    assert config.path == tmp_path / "warehouse.duckdb" and config.lock_timeout_seconds == 5


MERGE_IN_A_PROCESS = """
import json, sys
from destinations import DuckDBConfig, DuckDBWarehouse, merge_landed_loads
spec = json.loads(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # the go: both processes open the warehouse and merge at the same moment
warehouse = DuckDBWarehouse(DuckDBConfig(path=spec["path"]))
try:
    report = merge_landed_loads(warehouse, spec["landing"], "demo", "github_demo")
    print(json.dumps({"merged": report.loads_merged}), flush=True)
except Exception as error:
    print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
finally:
    warehouse.close()
"""


def test_two_processes_merging_one_pipeline_at_once_into_duckdb_merge_each_load_once(tmp_path: Path) -> None:
    """Two workers' merge tasks of one organisation on one machine, as real processes started at
    the same moment: one takes the DuckDB file, the other waits for it and finds the loads
    claimed. (On Snowflake, rival sessions are tested above, on fakesnow's server.)"""
    import json

    landing, path = tmp_path / "landing", tmp_path / "warehouse.duckdb"
    land_two_loads(landing)
    setup = DuckDBWarehouse(DuckDBConfig(path=path))
    bootstrap(setup, ["github_demo"])
    setup.close()  # the file is the processes' now
    spec = json.dumps({"path": str(path), "landing": str(landing)})

    processes = [subprocess.Popen([sys.executable, "-c", MERGE_IN_A_PROCESS, spec], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for process in processes:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    outcomes = [json.loads(process.communicate(timeout=120)[0].strip().splitlines()[-1]) for process in processes]

    assert sorted(load for o in outcomes for load in o.get("merged", [])) == ["1000.25", "999.5"], outcomes
    assert [o for o in outcomes if "error" in o] == [], outcomes
    check = DuckDBWarehouse(DuckDBConfig(path=path))
    check_each_load_merged_once(check)
    check.close()
