"""The warehouse step: merge the loads dlt landed as Parquet into the target tables, exactly once.

A ledger row per (pipeline_name, load_id), written in the same transaction as the load's MERGEs,
is what makes the step idempotent: a crash before commit leaves nothing behind and the next call
merges the load again; a second call after success finds nothing to do. Two calls at once (two
runs of one pipeline) merge each load once: see `_claim_load`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from dataclasses import dataclass, field

import fsspec

from destinations import sql
from destinations.handoff import DamagedLoad, Handoff
from destinations.landing import Landing, LandedFile
from destinations.warehouse import Warehouse
from destinations.working_calendar import DEFAULT, WorkingCalendar
from sources.github.schema import CHILD_FETCHES, TABLES, TableSpec

logger = logging.getLogger("destinations.merge")

LEDGER = "MERGED_LOADS"
MERGE_LOCKS = "MERGE_LOCKS"
WORKING_CALENDARS = "working_calendars"
WORKING_HOLIDAYS = "working_holidays"


# A claim whose snapshot turns out stale is read again; reads that keep missing the newest merge
# (a session that does not see another's commit yet) are waited for, doubling from CLAIM_BACKOFF.
CLAIM_STALE_READS = 6
CLAIM_BACKOFF = 0.1


class _MergedElsewhere(Exception):
    """Another transaction claimed the load first: roll this one back and skip the load."""


class _ClaimRaced(Exception):
    """The merge count moved on since the claim's snapshot: roll back and read again."""

    def __init__(self, seen: int) -> None:
        super().__init__(seen)
        self.seen = seen


@dataclass
class MergeReport:
    """What one call merged, and where."""

    warehouse: str
    pipeline_name: str
    org: str
    loads_merged: list[str] = field(default_factory=list)
    rows_staged: dict[str, int] = field(default_factory=dict)
    rows_merged: dict[str, int] = field(default_factory=dict)
    rows_deleted: dict[str, int] = field(default_factory=dict)
    loads_set_aside: dict[str, str] = field(default_factory=dict)  # load id -> why


def stage_table_name(pipeline_name: str, table: str) -> str:
    """One stage table per pipeline and table: organisations merging at once never share rows."""
    sql.check_pipeline_name(pipeline_name)
    return f"STG_{pipeline_name}_{table}"


def bootstrap(
    warehouse: Warehouse,
    pipeline_names: Iterable[str] = (),
    calendars: Mapping[str, WorkingCalendar] | None = None,
) -> list[str]:
    """Create schema, file format/stage (Snowflake), targets, ledger, the pipelines' stage tables,
    their rows in the merge-lock table, the working calendars and the metric views.

    Idempotent: every object is `IF NOT EXISTS` (a declared column an existing table lacks is added),
    the metric views `CREATE OR REPLACE`. `calendars` (organisation -> calendar, "*" for the
    default) replace the stored ones when they differ; None keeps the stored ones (a merge has no
    settings). Returns what it ensured, one line per object.
    The flow runs it once before its merges fan out: concurrent DDL conflicts on DuckDB.
    """
    pipeline_names = [sql.check_pipeline_name(name) for name in pipeline_names]
    with warehouse.exclusive():
        return _bootstrap(warehouse, pipeline_names, calendars)


def _bootstrap(warehouse: Warehouse, pipeline_names: list[str],
               calendars: Mapping[str, WorkingCalendar] | None = None) -> list[str]:
    schema = warehouse.q(warehouse.schema_name)
    warehouse.execute(sql.create_schema(schema))
    ensured = [f"schema {schema}", *warehouse.bootstrap_extras()]
    for spec in TABLES.values():
        columns = [(warehouse.q(f.name), sql.column_type(f.type, warehouse.dialect)) for f in spec.schema]
        warehouse.execute(sql.create_table(warehouse.table(spec.name), columns))
        # A table an earlier version created lacks the columns declared since: the views need them.
        existing = warehouse.columns(spec.name)
        for field_, (name, type_) in zip(spec.schema, columns):
            if field_.name not in existing:
                warehouse.execute(sql.add_column(warehouse.table(spec.name), name, type_))
        ensured.append(f"table {warehouse.table(spec.name)}")
        for pipeline_name in pipeline_names:
            name = stage_table_name(pipeline_name, spec.name)
            stage = warehouse.table(name, pipeline_name=True)
            warehouse.execute(sql.create_stage_table(stage, columns, warehouse.dialect))
            existing = warehouse.columns(name, pipeline_name=True)
            for field_, (column, type_) in zip(spec.schema, columns):
                if field_.name not in existing:
                    warehouse.execute(sql.add_column(stage, column, type_))
            warehouse.keep_no_history(stage)
            ensured.append(f"stage table {stage}")
    warehouse.execute(sql.create_ledger(warehouse.table(LEDGER)))
    ensured.append(f"ledger {warehouse.table(LEDGER)}")
    locks = warehouse.table(MERGE_LOCKS)
    warehouse.execute(sql.create_merge_locks(locks))
    if "merge_count" not in warehouse.columns(MERGE_LOCKS):  # created by an earlier version
        warehouse.execute(sql.add_column(locks, "merge_count", "BIGINT"))
    with warehouse.transaction():
        for pipeline_name in pipeline_names:
            warehouse.execute(sql.ensure_merge_lock_row(locks), [pipeline_name, pipeline_name])
    ensured.append(f"merge locks {locks}" + (f" for {', '.join(pipeline_names)}" if pipeline_names else ""))
    ensured += write_calendars(warehouse, calendars)
    ensured += create_metric_views(warehouse)
    return ensured


def write_calendars(warehouse: Warehouse, calendars: Mapping[str, WorkingCalendar] | None) -> list[str]:
    """The working calendars as two small tables the views read: one row per calendar, one per
    holiday. Written (in one transaction) only when they differ from what is stored; without
    `calendars`, only the default is ensured."""
    table, holidays_table = warehouse.table(WORKING_CALENDARS), warehouse.table(WORKING_HOLIDAYS)
    warehouse.execute(sql.create_working_calendars(table))
    warehouse.execute(sql.create_working_holidays(holidays_table))
    stored = sorted(tuple(row) for row in warehouse.execute(sql.working_calendar_rows(table)))
    stored_holidays = sorted((str(org), _date(day)) for org, day in warehouse.execute(sql.working_holiday_rows(holidays_table)))
    if calendars is None:  # a merge's bootstrap: the default, unless there is one
        if any(row[0] == DEFAULT for row in stored):
            return [f"working calendars {table}: {len(stored)} kept"]
        rows, holidays, replace = [WorkingCalendar().row(DEFAULT)], [], False
    else:
        wanted = {DEFAULT: WorkingCalendar(), **calendars}
        rows = sorted(calendar.row(org) for org, calendar in wanted.items())
        holidays = sorted((org, day) for org, calendar in wanted.items() for day in calendar.holidays)
        if (rows, holidays) == (stored, stored_holidays):
            return [f"working calendars {table}: {len(rows)} unchanged"]
        replace = True
    with warehouse.transaction():
        if replace:
            warehouse.execute(sql.delete_all(table))
            warehouse.execute(sql.delete_all(holidays_table))
        warehouse.execute(sql.insert_working_calendars(table, len(rows)), [v for row in rows for v in row])
        if holidays:
            warehouse.execute(sql.insert_working_holidays(holidays_table, len(holidays)), [v for h in holidays for v in h])
    return [f"working calendars {table}: {', '.join(org for org, *_ in rows)}"]


def _date(value: object) -> date:
    return value.date() if isinstance(value, datetime) else value  # type: ignore[return-value]


def create_metric_views(warehouse: Warehouse) -> list[str]:
    """(Re)create the metric views of `destinations/metrics.sql`: CREATE OR REPLACE, so a bootstrap
    also brings their definitions up to date. Names what it created, one line per view."""
    for statement in sql.metric_views(warehouse.qualified_schema()):
        warehouse.execute(statement)
    return [f"view {warehouse.table(name)}" for name in sql.METRIC_VIEWS]


def ensure_metric_views(warehouse: Warehouse) -> list[str]:
    """Create the metric views if any is missing (a warehouse bootstrapped by an earlier version);
    leave existing ones alone. Names what it created."""
    rows = warehouse.execute(sql.view_names(), [sql.fold(warehouse.schema_name, warehouse.dialect)])
    present = {str(name).lower() for (name,) in rows}
    if present >= set(sql.METRIC_VIEWS):
        return []
    with warehouse.exclusive():
        return create_metric_views(warehouse)


def merge_landed_loads(
    warehouse: Warehouse,
    bucket_url: str,
    org: str,
    pipeline_name: str,
    *,
    fs: fsspec.AbstractFileSystem | None = None,
    bootstrap_first: bool = True,
) -> MergeReport:
    """Merge every completed, not yet merged load of `pipeline_name`, oldest first, one transaction each.

    `bootstrap_first=False` when the caller bootstrapped for this pipeline already (the flow does,
    once per run). A load another call merged meanwhile is skipped.
    """
    org = sql.check_org(org)
    sql.check_pipeline_name(pipeline_name)
    landing = Landing(bucket_url, fs)
    warehouse.attach_landing(landing)
    if bootstrap_first:
        bootstrap(warehouse, [pipeline_name])

    report = MergeReport(warehouse.location(), pipeline_name, org)
    ledger = warehouse.table(LEDGER)
    ledgered = {str(load_id): int(rows) for load_id, rows in warehouse.execute(sql.ledger_rows(ledger), [pipeline_name])}
    for load_id in sorted(load_id for load_id, rows in ledgered.items() if rows > 1):
        logger.warning("%s: load %s has %d rows in %s: two runs merged it (its rows are merged once, "
                       "MERGE keeps one copy of each); report it, the claim should prevent this",
                       pipeline_name, load_id, ledgered[load_id], ledger)
    merged = set(ledgered)
    handoff = Handoff(landing, pipeline_name)
    pending = handoff.ready(merged)
    if not pending:
        logger.info("%s: no new loads to merge into %s", pipeline_name, report.warehouse)
    for load_id in pending:
        try:
            load_files, expected = handoff.take(load_id, org, TABLES)
            _merge_load(warehouse, landing, pipeline_name, load_id, load_files, report, expected)
        except DamagedLoad as damage:
            # Never ledgered, never blocking the loads after it: set aside, and the landing step
            # fetches again what it held (see destinations/handoff.py).
            logger.error("%s: load %s set aside, its rows are fetched again: %s", pipeline_name, load_id, damage)
            handoff.set_aside(load_id, str(damage))
            report.loads_set_aside[load_id] = str(damage)
    created = ensure_metric_views(warehouse)
    if created:
        logger.info("%s: created the missing metric views: %s", pipeline_name, ", ".join(created))
    return report


def _merge_load(
    warehouse: Warehouse,
    landing: Landing,
    pipeline_name: str,
    load_id: str,
    load_files: dict[str, list[LandedFile]],
    report: MergeReport,
    expected: dict[str, int] | None = None,
) -> None:
    with warehouse.exclusive():
        # No DDL here: it would commit implicitly in Snowflake and race with other runs'
        # transactions. Tables get their columns from the bootstrap, which runs first.
        columns = {name: _columns(warehouse, landing, TABLES[name], files) for name, files in load_files.items()}
        ledger = warehouse.table(LEDGER)
        seen: int | None = None
        stale = 0
        while True:
            try:
                with warehouse.transaction():
                    _claim_load(warehouse, pipeline_name, load_id)
                    counts = _merge_tables(warehouse, pipeline_name, load_id, load_files, columns, expected)
                    warehouse.execute(
                        sql.set_ledger_row_counts(ledger),
                        [json.dumps(counts, sort_keys=True), pipeline_name, load_id],
                    )
                break
            except _MergedElsewhere:
                logger.info("%s: load %s was merged into %s by another run meanwhile: skipped",
                            pipeline_name, load_id, report.warehouse)
                return
            except _ClaimRaced as raced:
                # Moved on since the snapshot: another run merged (read again at once), or the
                # same count again: this session's reads lag behind a commit (wait, read again).
                if raced.seen == seen:
                    stale += 1
                    if stale > CLAIM_STALE_READS:
                        raise RuntimeError(
                            f"{pipeline_name}: load {load_id} not claimed: {CLAIM_STALE_READS + 1} reads of "
                            f"{warehouse.table(MERGE_LOCKS)} missed the newest merge (set the account's "
                            "READ_CONSISTENCY_MODE to 'GLOBAL'); the merge is retried on the next run"
                        ) from None
                    time.sleep(CLAIM_BACKOFF * 2 ** (stale - 1))
                seen = raced.seen
    for name, table_counts in counts.items():
        report.rows_staged[name] = report.rows_staged.get(name, 0) + table_counts["staged"]
        report.rows_merged[name] = report.rows_merged.get(name, 0) + table_counts["merged"]
        report.rows_deleted[name] = report.rows_deleted.get(name, 0) + table_counts["deleted"]
    report.loads_merged.append(load_id)
    logger.info("%s: merged load %s into %s: %s", pipeline_name, load_id, report.warehouse, counts)


def _claim_load(warehouse: Warehouse, pipeline_name: str, load_id: str) -> None:
    """Decide, by a write, whether this transaction merges the load; the first statements of the
    load's transaction. Raises _MergedElsewhere if the ledger holds it, _ClaimRaced if the
    snapshot it read is no longer the newest.

    Why this holds on Snowflake, which enforces no PRIMARY KEY (so the ledger cannot refuse a
    second row) and whose reads may miss a row another session committed a moment earlier (the
    account's default READ_CONSISTENCY_MODE = 'SESSION'; Transactions, "Read consistency across
    sessions"): a read alone never decides. Every merge of a pipeline adds its ledger row and
    moves the pipeline's `merge_count` in MERGE_LOCKS on by one, in one transaction. The claim
    reads the count and the load's ledger rows in one statement, so from one snapshot, then
    UPDATEs the lock row only where the count is still the one it read. UPDATE locks the table
    until the transaction ends; a rival's UPDATE waits for it, then finds the count moved on and
    updates nothing (if two could both update the row, one update would be lost: no engine allows
    that). So one updated row proves the snapshot held every merge committed so far, and its
    ledger did not hold the load. A ledger row the snapshot shows is committed: skip. No load
    order and no clock is assumed: a load landed late merges like any other.
    Every load takes this lock first and no other, so no deadlock; loads of all pipelines
    serialise on MERGE_LOCKS, as their MERGEs into the shared targets would anyway.
    On DuckDB one process writes a file and `Warehouse.exclusive` serialises its loads; a rival's
    UPDATE of the lock row (DuckDB, or fakesnow with DuckDB inside) fails at once instead of waiting.
    """
    locks, ledger = warehouse.table(MERGE_LOCKS), warehouse.table(LEDGER)
    rows = warehouse.execute(sql.claim_snapshot(locks, ledger), [pipeline_name, load_id, pipeline_name])
    if not rows:
        raise RuntimeError(
            f"{pipeline_name} has no row in {locks}: bootstrap the warehouse "
            "for it first (merge_landed_loads does unless bootstrap_first=False)"
        )
    [(count, ledgered)] = rows
    if int(ledgered) > 0:
        raise _MergedElsewhere(load_id)
    if _affected(warehouse.execute(sql.claim_load(locks), [pipeline_name, int(count)])) != 1:
        raise _ClaimRaced(int(count))
    warehouse.execute(sql.record_load(ledger), [pipeline_name, load_id])


def _merge_tables(
    warehouse: Warehouse,
    pipeline_name: str,
    load_id: str,
    load_files: dict[str, list[LandedFile]],
    columns: dict[str, list[str]],
    expected: dict[str, int] | None,
) -> dict[str, dict[str, int]]:
    """Stage and merge each table of the load, replace the child sets it fetched, empty the stages.

    Child sets are replaced after every table is staged: the scope is the load's
    pull_request_child_fetches rows (a list that came back empty replaces the old rows with none);
    a load landed before those records existed is scoped by the child rows it carries.
    """
    stages = {name: warehouse.table(stage_table_name(pipeline_name, name), pipeline_name=True) for name in TABLES}
    for stage in stages.values():
        warehouse.execute(sql.truncate(stage))  # leftovers of anything interrupted never leak in
    counts: dict[str, dict[str, int]] = {}
    for name in TABLES:  # the declared order, whatever the manifest's
        if name not in load_files:
            continue
        spec, stage = TABLES[name], stages[name]
        quoted = [warehouse.q(c) for c in columns[name]]
        staged = warehouse.load_stage(stage, load_files[name], quoted)
        if expected is not None and staged != expected[name]:
            raise DamagedLoad(f"load {load_id}: {staged} rows of {name} staged, its manifest says {expected[name]}")
        q = warehouse.q
        newer_fetch = None
        if spec.child_kind is not None:  # never bring back a row a newer fetch of the list dropped
            newer_fetch = (warehouse.table(CHILD_FETCHES.name), q(spec.replace_scope or "pull_request_id"),
                           q("kind"), q(CHILD_FETCHES.version), spec.child_kind)
        merge = sql.merge_from_stage(warehouse.table(name), stage, quoted, q(spec.key), q(spec.version), newer_fetch)
        counts[name] = {"staged": staged, "merged": _affected(warehouse.execute(merge)), "deleted": 0}
    for spec in TABLES.values():
        if spec.replace_scope is None:
            continue
        fetches = spec.child_kind is not None and CHILD_FETCHES.name in load_files
        deleted = _replace_children(warehouse, spec, stages, fetches, spec.name in load_files)
        if deleted is not None:
            counts.setdefault(spec.name, {"staged": 0, "merged": 0, "deleted": 0})["deleted"] = deleted
    for stage in stages.values():
        warehouse.execute(sql.truncate(stage))
    return counts


def _replace_children(
    warehouse: Warehouse, spec: TableSpec, stages: dict[str, str], fetches_landed: bool, rows_landed: bool
) -> int | None:
    """Delete the rows a landed whole list no longer holds: a pull request's child list (its fetch
    records say which, an empty one too), or a set a table's replace scope names (an organisation's
    teams, a team's members); None when the load held none."""
    q = warehouse.q
    target, key, version = warehouse.table(spec.name), q(spec.key), q(spec.version)
    if fetches_landed:
        statement = sql.delete_children_not_fetched(
            target, stages[spec.name], stages[CHILD_FETCHES.name], key, version,
            q(spec.replace_scope or "pull_request_id"), q("kind"), q(CHILD_FETCHES.version), spec.child_kind or "",
        )
    elif rows_landed and spec.replace_scope is not None:
        statement = sql.delete_replaced_children(target, stages[spec.name], key, q(spec.replace_scope), version)
    else:
        return None
    return _affected(warehouse.execute(statement))


def _affected(rows: list[tuple]) -> int:
    """Rows a DML statement touched (Snowflake's MERGE reports inserted and updated separately)."""
    return sum(int(v) for v in rows[0] if isinstance(v, int)) if rows else 0


def _columns(warehouse: Warehouse, landing: Landing, spec: TableSpec, files: list[LandedFile]) -> list[str]:
    """The landed columns to merge; refuses a type change, and a column the table lacks (the
    bootstrap adds every declared column before any merge: a load never runs DDL)."""
    target_columns = {n: sql.warehouse_family(t) for n, t in warehouse.columns(spec.name).items()}
    landed: dict[str, object] = {}
    for landed_file in files:
        for arrow_field in landing.read_schema(landed_file):
            name = sql.check_identifier(arrow_field.name, f"column of {landed_file.path}").lower()
            family = sql.arrow_family(arrow_field.type)
            if name in target_columns:
                if not sql.compatible(family, target_columns[name]):
                    raise ValueError(
                        f"column {spec.name}.{name} changed type: landed {arrow_field.type} in "
                        f"{landed_file.path}, warehouse has {target_columns[name]}"
                    )
            elif family == "null":
                continue  # an all-null column of unknown type: nothing to merge
            else:
                raise ValueError(
                    f"landed column {spec.name}.{name} ({arrow_field.type}, in {landed_file.path}) is not in "
                    f"{warehouse.table(spec.name)}: run the bootstrap of the version that landed it "
                    "(./dev bootstrap) before merging"
                )
            landed.setdefault(name, arrow_field.type)
    for required in (spec.key, spec.version):
        if required not in landed:
            raise ValueError(f"landed files of {spec.name} lack the {required!r} column: {[f.path for f in files]}")
    return list(landed)
