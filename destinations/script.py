"""Every statement the Snowflake path runs, as one script a DBA can read before granting anything.

Built from the same `sql.py` builders the merge uses, without a connection: `./dev bootstrap
--print-sql [--org X]`. Names come from the Snowflake settings; what only a run knows is a
placeholder: `<load id>.<file id>.parquet`, `<YYYY-MM-DD>`, `"<NEW_COLUMN>"`, and `?` for values the
connector binds.
"""

from __future__ import annotations

from destinations import sql
from destinations.config import SnowflakeConfig
from destinations.merge import LEDGER, MERGE_LOCKS, WORKING_CALENDARS, WORKING_HOLIDAYS, stage_table_name
from sources.github.schema import CHILD_FETCHES, TABLES

_DIALECT = sql.SNOWFLAKE
# Valid stand-ins the builders accept, replaced by placeholders once the text is built.
_EXAMPLE_FILES = ("0.0.file-1.parquet", "0.0.file-2.parquet")
_FILE_PLACEHOLDERS = ("<load id>.<file id>.parquet", "<load id>.<file id 2>.parquet")
_EXAMPLE_DATE = "0000-00-00"
_DATE_PLACEHOLDER = "<YYYY-MM-DD>"
_NEW_COLUMN = "NEW_COLUMN"


def snowflake_script(config: SnowflakeConfig, pipelines: dict[str, str]) -> str:
    """The script for `pipelines` (organisation -> pipeline name); statements end with `;`."""
    if not pipelines:
        raise ValueError("the script needs at least one organisation (--org)")
    schema = sql.check_identifier(config.schema_name, "schema name")

    def q(name: str, *, pipeline_name: bool = False) -> str:
        return sql.quote(name, _DIALECT, pipeline_name=pipeline_name)

    def table(name: str, *, pipeline_name: bool = False) -> str:
        return f"{q(schema)}.{q(name, pipeline_name=pipeline_name)}"

    stage = table(config.stage)
    ledger = table(LEDGER)
    # The views name their tables with the database (see SnowflakeWarehouse.qualified_schema).
    placeholder = config.database.startswith("<") and config.database.endswith(">")
    database = f'"{config.database.upper()}"' if placeholder else q(config.database)
    file_format = table(config.file_format)
    format_name = sql.literal(f"{sql.fold(schema, _DIALECT)}.{sql.fold(config.file_format, _DIALECT)}")
    sections: list[tuple[str, list[str]]] = []

    sections.append((
        "Session: the connector sets these at login (session_parameters), for every statement.",
        sql.session_settings(),
    ))

    bootstrap = [sql.create_schema(q(schema)), sql.create_file_format(file_format)]
    if config.stage_url:
        integration = q(config.storage_integration) if config.storage_integration else None
        bootstrap.append(sql.create_stage(stage, config.stage_url, format_name, integration))
    bootstrap.append(sql.show_stages(q(schema)))
    for spec in TABLES.values():
        columns = [(q(f.name), sql.column_type(f.type, _DIALECT)) for f in spec.schema]
        bootstrap += [sql.create_table(table(spec.name), columns), sql.table_columns()]
        if spec.name == "pull_requests":
            bootstrap.append(sql.add_column(table(spec.name), q(_NEW_COLUMN), "VARCHAR"))
        for pipeline_name in pipelines.values():
            stage_table = table(stage_table_name(pipeline_name, spec.name), pipeline_name=True)
            bootstrap += [sql.create_stage_table(stage_table, columns, _DIALECT), sql.table_columns()]
            if spec.name == "pull_requests":
                bootstrap.append(sql.add_column(stage_table, q(_NEW_COLUMN), "VARCHAR"))
            bootstrap.append(sql.keep_no_history(stage_table))
    bootstrap.append(sql.create_ledger(ledger))
    locks = table(MERGE_LOCKS)
    bootstrap += [sql.create_merge_locks(locks), sql.table_columns(),
                  sql.add_column(locks, "merge_count", "BIGINT")]
    bootstrap += [sql.ensure_merge_lock_row(locks) for _ in pipelines]
    sections.append((
        "Bootstrap (`./dev bootstrap`, and each run once before its merges): all IF NOT EXISTS. After\n"
        "-- each table, its columns: a declared column that a table created by an earlier version lacks\n"
        "-- is added (ALTER TABLE ... ADD COLUMN IF NOT EXISTS, as for \"<NEW_COLUMN>\" below); this is the\n"
        "-- only DDL: a merge never alters a table. Stage tables keep no Time Travel (also set on those an\n"
        "-- earlier version created). SHOW STAGES checks that an existing stage points at the landing. An\n"
        "-- existing file format keeps its options: every COPY below names its Parquet options itself.",
        bootstrap,
    ))

    calendars, holidays = table(WORKING_CALENDARS), table(WORKING_HOLIDAYS)
    sections.append((
        "Working calendars (docs/metrics.md, \"Working time\"): by the bootstrap, only when the settings'\n"
        "-- calendars differ from the rows read here; one transaction replaces them (one row per calendar,\n"
        "-- \"*\" the default, and one per holiday).",
        [sql.create_working_calendars(calendars), sql.create_working_holidays(holidays),
         sql.working_calendar_rows(calendars), sql.working_holiday_rows(holidays), sql.delete_all(calendars),
         sql.delete_all(holidays), sql.insert_working_calendars(calendars, 1), sql.insert_working_holidays(holidays, 1),
         "COMMIT"],
    ))

    sections.append((
        "Metric views (destinations/metrics.sql; see docs/metrics.md): CREATE OR REPLACE by the bootstrap,\n"
        "-- so a bootstrap brings their definitions up to date; after each merge, created if any is missing\n"
        "-- (information_schema.views).",
        [*sql.metric_views(f"{database}.{q(schema)}"), sql.view_names()],
    ))

    for org, pipeline_name in pipelines.items():
        sections.append((
            f"[{org}] Before its loads: the loads the ledger holds (a load with two rows is warned about),\n"
            "-- then per table of a load the target's columns (a landed column the table lacks stops the merge:\n"
            "-- run the bootstrap).",
            [sql.ledger_rows(ledger), sql.table_columns()],
        ))
        stages = {name: table(stage_table_name(pipeline_name, name), pipeline_name=True) for name in TABLES}
        load: list[str] = [sql.claim_snapshot(locks, ledger), sql.claim_load(locks), sql.record_load(ledger)]
        load += [sql.truncate(stages[name]) for name in TABLES]
        for spec in TABLES.values():
            fields = [(q(f.name), f.name, sql.column_type(f.type, _DIALECT)) for f in spec.schema]
            folder = f"{spec.name}/org={org}/date={_EXAMPLE_DATE}"
            newer_fetch = None
            if spec.child_kind is not None:
                newer_fetch = (table(CHILD_FETCHES.name), q(spec.replace_scope or "pull_request_id"), q("kind"),
                               q(CHILD_FETCHES.version), spec.child_kind)
            load += [
                sql.table_columns(),
                sql.copy_into_stage(stages[spec.name], stage, folder, list(_EXAMPLE_FILES), fields),
                sql.merge_from_stage(table(spec.name), stages[spec.name], [c for c, _, _ in fields],
                                     q(spec.key), q(spec.version), newer_fetch),
            ]
        for spec in TABLES.values():
            if spec.child_kind is not None:
                load.append(sql.delete_children_not_fetched(
                    table(spec.name), stages[spec.name], stages[CHILD_FETCHES.name], q(spec.key),
                    q(spec.version), q(spec.replace_scope or "pull_request_id"), q("kind"),
                    q(CHILD_FETCHES.version), spec.child_kind,
                ))
            elif spec.replace_scope is not None:  # a whole list replaces its set (teams, members)
                load.append(sql.delete_replaced_children(
                    table(spec.name), stages[spec.name], q(spec.key), q(spec.replace_scope), q(spec.version)))
        load += [sql.truncate(stages[name]) for name in TABLES]
        load += [sql.set_ledger_row_counts(ledger), "COMMIT"]
        sections.append((
            f"[{org}] The merge of one load, in one transaction (autocommit off). The claim: read the\n"
            "-- pipeline's merge count and the load's ledger rows in one statement (the ledger holds it:\n"
            "-- ROLLBACK, skipped), then move the count on only if it is still the one read (a rival run\n"
            "-- waits for this row; no row updated: ROLLBACK and read again). Then the ledger row, empty\n"
            "-- the stage tables; per table: read its column types, COPY each date folder's files (at most\n"
            "-- 1,000 names per COPY; more files, more COPY statements), MERGE (a child row of a list a newer\n"
            "-- load fetched is left out); then replace the child sets the load fetched (a list that came\n"
            "-- back empty deletes the old rows), empty the stage tables, the ledger row counts and COMMIT.",
            load,
        ))

    text = "\n\n".join(
        f"-- {title}\n" + "\n".join(f"{statement};" for statement in statements) for title, statements in sections
    )
    for example, placeholder in zip(_EXAMPLE_FILES, _FILE_PLACEHOLDERS):
        text = text.replace(example, placeholder)
    text = text.replace(_EXAMPLE_DATE, _DATE_PLACEHOLDER).replace(f'"{_NEW_COLUMN}"', '"<NEW_COLUMN>"')
    header = (
        "-- Every statement the Snowflake warehouse step runs, printed without connecting.\n"
        "-- Placeholders: <load id>.<file id>.parquet (landed files), <YYYY-MM-DD> (landing date),\n"
        '-- "<NEW_COLUMN>" (a column new in the source); ? is a value the connector binds.\n\n'
    )
    return header + text + "\n"


def statements(script: str) -> list[str]:
    """The statements of a printed script, without comments (for checks)."""
    body = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("--"))
    return [part.strip().removesuffix(";") for part in body.split(";\n") if part.strip()]
