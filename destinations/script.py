"""Every statement the Snowflake path runs, as one script a DBA can read before granting anything.

Built from the same `sql.py` builders the merge uses, without a connection: `./dev bootstrap
--print-sql [--org X]`. Names come from the Snowflake settings; what only a run knows is a
placeholder: `<load id>.<file id>.parquet`, `<YYYY-MM-DD>`, `"<NEW_COLUMN>"`, and `?` for values the
connector binds.
"""

from __future__ import annotations

from destinations import sql
from destinations.config import SnowflakeConfig
from destinations.merge import LEDGER, MERGE_LOCKS, stage_table_name
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
        for pipeline_name in pipelines.values():
            stage_table = table(stage_table_name(pipeline_name, spec.name), pipeline_name=True)
            bootstrap.append(sql.create_stage_table(stage_table, columns, _DIALECT))
    bootstrap.append(sql.create_ledger(ledger))
    locks = table(MERGE_LOCKS)
    bootstrap.append(sql.create_merge_locks(locks))
    bootstrap += [sql.ensure_merge_lock_row(locks) for _ in pipelines]
    sections.append((
        "Bootstrap (`./dev bootstrap`, and each merge first): all IF NOT EXISTS. After each target table,\n"
        "-- its columns: a declared column a table created by an earlier version lacks is added (ALTER TABLE\n"
        "-- ... ADD COLUMN IF NOT EXISTS, as below). SHOW STAGES checks that\n"
        "-- an existing stage points at the landing. An existing file format keeps its options: every COPY\n"
        "-- below names its Parquet options itself.",
        bootstrap,
    ))

    sections.append((
        "Metric views (destinations/metrics.sql; see README \"Metrics\"): CREATE OR REPLACE by the bootstrap,\n"
        "-- so a bootstrap brings their definitions up to date; after each merge, created if any is missing\n"
        "-- (information_schema.views).",
        [*sql.metric_views(f"{database}.{q(schema)}"), sql.view_names()],
    ))

    for org, pipeline_name in pipelines.items():
        spec = TABLES["pull_requests"]
        target = table(spec.name)
        stage_table = table(stage_table_name(pipeline_name, spec.name), pipeline_name=True)
        sections.append((
            f"[{org}] Before each load's transaction: columns of target and stage table, then, for a column\n"
            "-- new in the landed Parquet, one ADD COLUMN per table (DDL commits implicitly in Snowflake, so\n"
            "-- it never sits inside the load's transaction). The type follows the landed column: VARCHAR,\n"
            "-- BIGINT, DOUBLE, BOOLEAN, TIMESTAMP_TZ, TIMESTAMP_NTZ, DATE or ARRAY.",
            [
                sql.merged_load_ids(ledger),
                sql.table_columns(),
                sql.add_column(target, q(_NEW_COLUMN), "VARCHAR"),
                sql.add_column(stage_table, q(_NEW_COLUMN), "VARCHAR"),
            ],
        ))
        stages = {name: table(stage_table_name(pipeline_name, name), pipeline_name=True) for name in TABLES}
        load: list[str] = [sql.lock_pipeline(locks), sql.claim_load(ledger)]
        load += [sql.truncate(stages[name]) for name in TABLES]
        for spec in TABLES.values():
            fields = [(q(f.name), f.name, sql.column_type(f.type, _DIALECT)) for f in spec.schema]
            folder = f"{spec.name}/org={org}/date={_EXAMPLE_DATE}"
            load += [
                sql.table_columns(),
                sql.copy_into_stage(stages[spec.name], stage, folder, list(_EXAMPLE_FILES), fields),
                sql.merge_from_stage(table(spec.name), stages[spec.name], [c for c, _, _ in fields],
                                     q(spec.key), q(spec.version)),
            ]
        for spec in TABLES.values():
            if spec.child_kind is not None:
                load.append(sql.delete_children_not_fetched(
                    table(spec.name), stages[spec.name], stages[CHILD_FETCHES.name], q(spec.key),
                    q(spec.version), q(spec.replace_scope or "pull_request_id"), q("kind"),
                    q(CHILD_FETCHES.version), spec.child_kind,
                ))
        load += [sql.truncate(stages[name]) for name in TABLES]
        load += [sql.set_ledger_row_counts(ledger), "COMMIT"]
        sections.append((
            f"[{org}] The merge of one load, in one transaction (autocommit off): lock the pipeline's row\n"
            "-- (a rival run of the pipeline waits here), claim the load in the ledger (no row inserted: it\n"
            "-- was merged already, ROLLBACK), empty the stage tables; per table: read its column types,\n"
            "-- COPY each date folder's files (at most 1,000 names per COPY; more files, more COPY\n"
            "-- statements), MERGE; then replace the child sets the load fetched (a list that came back\n"
            "-- empty deletes the old rows), empty the stage tables, the ledger row counts and COMMIT.",
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
