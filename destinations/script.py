"""Every statement the Snowflake path runs, as one script a DBA can read before granting anything.

Built from the same `sql.py` builders the merge uses, without a connection: `./dev bootstrap
--print-sql [--org X]`. Names come from the Snowflake settings; what only a run knows is a
placeholder: `<load id>.<file id>.parquet`, `<YYYY-MM-DD>`, `"<NEW_COLUMN>"`, and `?` for values the
connector binds.
"""

from __future__ import annotations

from destinations import sql
from destinations.config import SnowflakeConfig
from destinations.merge import LEDGER, stage_table_name
from sources.github.schema import TABLES

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
        bootstrap.append(sql.create_table(table(spec.name), columns))
        for pipeline_name in pipelines.values():
            stage_table = table(stage_table_name(pipeline_name, spec.name), pipeline_name=True)
            bootstrap.append(sql.create_stage_table(stage_table, columns, _DIALECT))
    bootstrap.append(sql.create_ledger(ledger))
    sections.append((
        "Bootstrap (`./dev bootstrap`, and each merge first): all IF NOT EXISTS. SHOW STAGES checks that\n"
        "-- an existing stage points at the landing. An existing file format keeps its options: every COPY\n"
        "-- below names its Parquet options itself.",
        bootstrap,
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
        load: list[str] = []
        for spec in TABLES.values():
            target = table(spec.name)
            stage_table = table(stage_table_name(pipeline_name, spec.name), pipeline_name=True)
            key, version = q(spec.key), q(spec.version)
            fields = [(q(f.name), f.name, sql.column_type(f.type, _DIALECT)) for f in spec.schema]
            folder = f"{spec.name}/org={org}/date={_EXAMPLE_DATE}"
            load += [
                sql.truncate(stage_table),
                sql.table_columns(),
                sql.copy_into_stage(stage_table, stage, folder, list(_EXAMPLE_FILES), fields),
                sql.merge_from_stage(target, stage_table, [c for c, _, _ in fields], key, version),
            ]
            if spec.replace_scope is not None:
                load.append(sql.delete_replaced_children(target, stage_table, key, q(spec.replace_scope), version))
            load.append(sql.truncate(stage_table))
        load += [sql.insert_ledger_row(ledger), "COMMIT"]
        sections.append((
            f"[{org}] The merge of one load, in one transaction (autocommit off), per table: empty the stage\n"
            "-- table, read its column types, COPY each date folder's files (at most 1,000 names per COPY;\n"
            "-- more files, more COPY statements), MERGE, replace child sets, empty the stage table; then\n"
            "-- the ledger row and COMMIT.",
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
