"""The warehouse step: merge the loads dlt landed as Parquet into the target tables, exactly once.

A ledger row per (pipeline_name, load_id), written in the same transaction as the load's MERGEs,
is what makes the step idempotent: a crash before commit leaves nothing behind and the next call
merges the load again; a second call after success finds nothing to do.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import fsspec

from destinations import sql
from destinations.landing import Landing, LandedFile
from destinations.warehouse import Warehouse
from sources.github.schema import TABLES, TableSpec

logger = logging.getLogger("destinations.merge")

LEDGER = "MERGED_LOADS"


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


def bootstrap(warehouse: Warehouse, pipeline_names: Iterable[str] = ()) -> list[str]:
    """Create schema, file format/stage (Snowflake), targets, ledger and the pipelines' stage tables.

    Idempotent; every statement is `IF NOT EXISTS`. Returns what it ensured, one line per object.
    """
    pipeline_names = [sql.check_pipeline_name(name) for name in pipeline_names]
    schema = warehouse.q(warehouse.schema_name)
    warehouse.execute(sql.create_schema(schema))
    ensured = [f"schema {schema}", *warehouse.bootstrap_extras()]
    for spec in TABLES.values():
        columns = [(warehouse.q(f.name), sql.column_type(f.type, warehouse.dialect)) for f in spec.schema]
        warehouse.execute(sql.create_table(warehouse.table(spec.name), columns))
        ensured.append(f"table {warehouse.table(spec.name)}")
        for pipeline_name in pipeline_names:
            stage = warehouse.table(stage_table_name(pipeline_name, spec.name), pipeline_name=True)
            warehouse.execute(sql.create_stage_table(stage, columns, warehouse.dialect))
            ensured.append(f"stage table {stage}")
    warehouse.execute(sql.create_ledger(warehouse.table(LEDGER)))
    ensured.append(f"ledger {warehouse.table(LEDGER)}")
    return ensured


def merge_landed_loads(
    warehouse: Warehouse,
    bucket_url: str,
    org: str,
    pipeline_name: str,
    *,
    fs: fsspec.AbstractFileSystem | None = None,
) -> MergeReport:
    """Merge every completed, not yet merged load of `pipeline_name`, oldest first, one transaction each."""
    org = sql.check_org(org)
    sql.check_pipeline_name(pipeline_name)
    landing = Landing(bucket_url, fs)
    warehouse.attach_landing(landing)
    bootstrap(warehouse, [pipeline_name])

    report = MergeReport(warehouse.location(), pipeline_name, org)
    ledger = warehouse.table(LEDGER)
    merged = {str(row[0]) for row in warehouse.execute(sql.merged_load_ids(ledger), [pipeline_name])}
    set_aside = landing.set_aside_loads(pipeline_name)
    pending = landing.completed_loads(pipeline_name, exclude=merged | set(set_aside))
    if not pending:
        logger.info("%s: no new loads to merge into %s", pipeline_name, report.warehouse)
        return report
    for load_id in pending:
        try:
            load_files, expected = _files_of(landing, org, pipeline_name, load_id)
            _merge_load(warehouse, landing, pipeline_name, load_id, load_files, report, expected)
        except DamagedLoad as damage:
            # Never ledgered, never blocking the loads after it: set aside, and the landing step
            # fetches again what it held (see flows/landing.py).
            logger.error("%s: load %s set aside, its rows are fetched again: %s", pipeline_name, load_id, damage)
            landing.set_aside(pipeline_name, load_id, str(damage))
            report.loads_set_aside[load_id] = str(damage)
    return report


class DamagedLoad(Exception):
    """A landed load whose files are missing, unreadable or not what its manifest says."""


def _files_of(
    landing: Landing, org: str, pipeline_name: str, load_id: str
) -> tuple[dict[str, list[LandedFile]], dict[str, int] | None]:
    """The load's files per table, and the row counts its manifest promises (None: unknown)."""
    manifest = landing.manifest(pipeline_name, load_id)
    if manifest is None:
        # Landed before manifests existed (or the landing died before writing it): take what is
        # near its date; nothing there is damage, never an empty load.
        files = {name: landing.files_by_load(name, org, [load_id], near_load_dates=True).get(load_id, [])
                 for name in TABLES}
        files = {name: found for name, found in files.items() if found}
        if not files:
            raise DamagedLoad(f"load {load_id} has no manifest and no files near its date")
        logger.warning("%s: load %s has no manifest; merging the files found next to its date", pipeline_name, load_id)
        return files, None
    if manifest.org != org:
        raise DamagedLoad(f"load {load_id} belongs to organisation {manifest.org!r}, not {org!r}")
    problems = landing.problems(manifest)
    if problems:
        raise DamagedLoad("; ".join(problems))
    return landing.landed_files(manifest, TABLES), {name: manifest.rows(name) for name in TABLES}


def _merge_load(
    warehouse: Warehouse,
    landing: Landing,
    pipeline_name: str,
    load_id: str,
    load_files: dict[str, list[LandedFile]],
    report: MergeReport,
    expected: dict[str, int] | None = None,
) -> None:
    # Schema changes first: DDL commits implicitly in Snowflake, so it must not sit inside the load's
    # transaction. An added column is harmless if the load then fails.
    columns = {
        name: _sync_columns(warehouse, landing, TABLES[name], pipeline_name, files)
        for name, files in load_files.items()
    }
    counts: dict[str, dict[str, int]] = {}
    with warehouse.transaction():
        for name, files in load_files.items():
            counts[name] = _merge_table(warehouse, TABLES[name], pipeline_name, files, columns[name])
            if expected is not None and counts[name]["staged"] != expected[name]:
                raise DamagedLoad(
                    f"load {load_id}: {counts[name]['staged']} rows of {name} staged, its manifest says {expected[name]}"
                )
        warehouse.execute(
            sql.insert_ledger_row(warehouse.table(LEDGER)),
            [pipeline_name, load_id, json.dumps(counts, sort_keys=True)],
        )
    for name, table_counts in counts.items():
        report.rows_staged[name] = report.rows_staged.get(name, 0) + table_counts["staged"]
        report.rows_merged[name] = report.rows_merged.get(name, 0) + table_counts["merged"]
        report.rows_deleted[name] = report.rows_deleted.get(name, 0) + table_counts["deleted"]
    report.loads_merged.append(load_id)
    logger.info("%s: merged load %s into %s: %s", pipeline_name, load_id, report.warehouse, counts)


def _merge_table(
    warehouse: Warehouse, spec: TableSpec, pipeline_name: str, files: list[LandedFile], columns: list[str]
) -> dict[str, int]:
    """Stage one table's files of the load, merge, replace child sets, empty the stage."""
    stage = warehouse.table(stage_table_name(pipeline_name, spec.name), pipeline_name=True)
    target = warehouse.table(spec.name)
    key, version = warehouse.q(spec.key), warehouse.q(spec.version)
    quoted = [warehouse.q(c) for c in columns]

    warehouse.execute(sql.truncate(stage))  # leftovers of anything interrupted never leak in
    staged = warehouse.load_stage(stage, files, quoted)
    merged = _affected(warehouse.execute(sql.merge_from_stage(target, stage, quoted, key, version)))
    deleted = 0
    if spec.replace_scope is not None:
        scope = warehouse.q(spec.replace_scope)
        deleted = _affected(warehouse.execute(sql.delete_replaced_children(target, stage, key, scope, version)))
    warehouse.execute(sql.truncate(stage))
    return {"staged": staged, "merged": merged, "deleted": deleted}


def _affected(rows: list[tuple]) -> int:
    """Rows a DML statement touched (Snowflake's MERGE reports inserted and updated separately)."""
    return sum(int(v) for v in rows[0] if isinstance(v, int)) if rows else 0


def _sync_columns(
    warehouse: Warehouse, landing: Landing, spec: TableSpec, pipeline_name: str, files: list[LandedFile]
) -> list[str]:
    """Add landed columns the target or stage lacks; refuse a type change. Return the columns to merge."""
    target_name = spec.name
    stage_name = stage_table_name(pipeline_name, spec.name)
    target_columns = {n: sql.warehouse_family(t) for n, t in warehouse.columns(target_name).items()}
    stage_columns = warehouse.columns(stage_name, pipeline_name=True)

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
                continue  # an all-null column of unknown type: nothing to add or merge yet
            else:
                type_ = sql.column_type(arrow_field.type, warehouse.dialect)
                logger.info("%s: new column %s.%s %s", pipeline_name, spec.name, name, type_)
                warehouse.execute(sql.add_column(warehouse.table(target_name), warehouse.q(name), type_))
                target_columns[name] = sql.warehouse_family(type_)
            landed.setdefault(name, arrow_field.type)

    for name in target_columns:
        if name not in stage_columns:
            type_ = _declared_type(warehouse, target_name, name)
            warehouse.execute(
                sql.add_column(warehouse.table(stage_name, pipeline_name=True), warehouse.q(name), type_)
            )
    for required in (spec.key, spec.version):
        if required not in landed:
            raise ValueError(f"landed files of {spec.name} lack the {required!r} column: {[f.path for f in files]}")
    return list(landed)


def _declared_type(warehouse: Warehouse, table: str, column: str) -> str:
    """The target column's type, re-declared for the stage table."""
    data_type = warehouse.columns(table)[column]
    family = sql.warehouse_family(data_type)
    if family == "array" or family == "variant":
        return "ARRAY" if warehouse.dialect == sql.SNOWFLAKE else "VARCHAR[]"
    if family == "timestamp":
        with_zone = data_type.upper() in ("TIMESTAMP_TZ", "TIMESTAMP_LTZ", "TIMESTAMP WITH TIME ZONE")
        return "TIMESTAMP_TZ" if with_zone else "TIMESTAMP_NTZ"
    return {"text": "VARCHAR", "number": "BIGINT", "float": "DOUBLE", "boolean": "BOOLEAN", "date": "DATE"}.get(
        family, data_type
    )
