"""Every SQL statement of the warehouse step, written once in Snowflake's dialect.

DuckDB receives the same text through `to_dialect` (sqlglot, cached). Only where a dialect truly
needs another statement (loading the stage: COPY INTO vs INSERT ... read_parquet; the ARRAY column
type; TRANSIENT stage tables) do both versions sit side by side here. The metric views are one
readable file next to this one, `metrics.sql`, which `metric_views` loads. `destinations/script.py`
prints the Snowflake statements as one script (`./dev bootstrap --print-sql`).

Builders take names that `quote` already validated and quoted: nothing from outside reaches the SQL
text unchecked.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import sqlglot
from sqlglot import exp

from destinations.config import GCS_STORAGE_INTEGRATION
from sources.github.names import normalise_org
from sources.github.schema import CHILD_KINDS

SNOWFLAKE = "snowflake"
DUCKDB = "duckdb"

# Schema, table, column, stage and file-format names.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
# Pipeline names also become part of stage-table names (always quoted), so a hyphen is allowed.
_PIPELINE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}")
_LOAD_ID = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_FILE_NAME = re.compile(r"[0-9]+(?:\.[0-9]+)?\.[A-Za-z0-9_-]+\.parquet")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_STAGE_URL = re.compile(r"(?:gcs|s3|azure|file)://[A-Za-z0-9_./=-]+/")


def _check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}: must match {pattern.pattern}")
    return value


def check_identifier(name: str, what: str = "identifier") -> str:
    return _check(_IDENTIFIER, name, what)


def check_pipeline_name(name: str) -> str:
    return _check(_PIPELINE, name, "pipeline name")


def check_org(org: str) -> str:
    """The organisation as landed: GitHub's login rule, lower-cased (sources/github/names.py)."""
    return normalise_org(org)


def check_load_id(load_id: str) -> str:
    return _check(_LOAD_ID, load_id, "load id")


def check_file_name(name: str) -> str:
    return _check(_FILE_NAME, name, "landed file name")


def check_date(date: str) -> str:
    return _check(_DATE, date, "date partition")


def check_stage_url(url: str) -> str:
    return _check(_STAGE_URL, url, "stage URL")


def fold(name: str, dialect: str) -> str:
    """Snowflake folds unquoted names to upper case; DuckDB users expect lower case."""
    return name.upper() if dialect == SNOWFLAKE else name.lower()


def quote(name: str, dialect: str, *, pipeline_name: bool = False) -> str:
    """Validate, case-fold and double-quote one identifier."""
    if pipeline_name:
        check_pipeline_name(name)
    else:
        check_identifier(name)
    return f'"{fold(name, dialect)}"'


def literal(value: str) -> str:
    """A string literal for values already validated to hold no quote or backslash."""
    if "'" in value or "\\" in value:
        raise ValueError(f"refusing to inline {value!r} into SQL: it contains a quote or backslash")
    return f"'{value}'"


@lru_cache(maxsize=512)
def to_dialect(sql: str, dialect: str) -> str:
    """The statement in the target dialect (Snowflake text as is, DuckDB through sqlglot).

    COPY GRANTS (the metric views keep their grants on Snowflake) means nothing to DuckDB, which
    has no grants: it is dropped here, rather than left to sqlglot's "Unsupported property"
    warning on every run."""
    if dialect == SNOWFLAKE:
        return sql
    tree = sqlglot.parse_one(sql, read=SNOWFLAKE)
    for grants in list(tree.find_all(exp.CopyGrantsProperty)):
        grants.pop()
    return tree.sql(dialect=dialect)


# --- Column types -------------------------------------------------------------------------------


def column_type(arrow_type: pa.DataType, dialect: str) -> str:
    """The warehouse type a landed Parquet column of `arrow_type` loads into, round-trip safe."""
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "VARCHAR"
    if pa.types.is_integer(arrow_type):
        return "BIGINT"
    if pa.types.is_floating(arrow_type):
        return "DOUBLE"
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP_TZ" if arrow_type.tz else "TIMESTAMP_NTZ"
    if pa.types.is_date(arrow_type):
        return "DATE"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        item = arrow_type.value_type
        if pa.types.is_string(item) or pa.types.is_large_string(item):
            # Snowflake: semi-structured ARRAY. DuckDB: a typed list, which Parquet fills as is.
            return "ARRAY" if dialect == SNOWFLAKE else "VARCHAR[]"
    raise ValueError(f"unsupported landed column type {arrow_type}")


def arrow_family(arrow_type: pa.DataType) -> str:
    """A coarse type family, to tell a compatible landed column from an incompatible one."""
    if pa.types.is_null(arrow_type):
        return "null"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "text"
    if pa.types.is_integer(arrow_type) or pa.types.is_decimal(arrow_type):
        return "number"
    if pa.types.is_floating(arrow_type):
        return "float"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return "array"
    return str(arrow_type)


def warehouse_family(data_type: str) -> str:
    """The family of a type as information_schema reports it (Snowflake, fakesnow or DuckDB)."""
    t = data_type.upper()
    if t.endswith("[]") or t.startswith("ARRAY"):
        return "array"
    if t in ("VARIANT", "JSON", "OBJECT"):
        return "variant"
    if t.startswith(("TEXT", "VARCHAR", "STRING", "CHAR")):
        return "text"
    if t.startswith(("NUMBER", "DECIMAL", "NUMERIC", "BIGINT", "INT", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER")):
        return "number"
    if t.startswith(("FLOAT", "DOUBLE", "REAL")):
        return "float"
    if t.startswith("BOOL"):
        return "boolean"
    if t.startswith("TIMESTAMP"):
        return "timestamp"
    if t == "DATE":
        return "date"
    return t


def compatible(landed: str, warehouse: str) -> bool:
    """Whether a landed column family can load into a warehouse column family."""
    if landed == warehouse or landed == "null":
        return True
    # fakesnow reports ARRAY columns as VARIANT; a VARIANT takes any semi-structured value.
    return warehouse == "variant" and landed == "array"


# --- Bootstrap ----------------------------------------------------------------------------------


def create_schema(schema: str) -> str:
    return f"CREATE SCHEMA IF NOT EXISTS {schema}"


def create_table(table: str, columns: list[tuple[str, str]], *, transient: bool = False) -> str:
    """`columns` are (quoted name, type) pairs."""
    body = ",\n    ".join(f"{name} {type_}" for name, type_ in columns)
    kind = "TRANSIENT TABLE" if transient else "TABLE"
    return f"CREATE {kind} IF NOT EXISTS {table} (\n    {body}\n)"


def create_ledger(ledger: str) -> str:
    """One row per merged load: the record that makes a second run a no-op.

    Fixed column names stay unquoted so each dialect folds them its own way.
    """
    return f"""CREATE TABLE IF NOT EXISTS {ledger} (
    pipeline_name VARCHAR NOT NULL,
    load_id VARCHAR NOT NULL,
    merged_at TIMESTAMP_TZ NOT NULL,
    row_counts VARCHAR,
    PRIMARY KEY (pipeline_name, load_id)
)"""


def create_stage_table(table: str, columns: list[tuple[str, str]], dialect: str) -> str:
    """Snowflake: TRANSIENT with no Time Travel, since a stage table holds nothing between loads:
    no Fail-safe storage to pay, and no day-long copy of what each TRUNCATE removed.

    DuckDB has neither: there it is a plain table.
    """
    statement = create_table(table, columns, transient=dialect == SNOWFLAKE)
    return f"{statement} DATA_RETENTION_TIME_IN_DAYS = 0" if dialect == SNOWFLAKE else statement


def keep_no_history(table: str) -> str:
    """A stage table an earlier version created kept a day of Time Travel (Snowflake only)."""
    return f"ALTER TABLE {table} SET DATA_RETENTION_TIME_IN_DAYS = 0"


def add_column(table: str, column: str, type_: str) -> str:
    """IF NOT EXISTS: two organisations merging at once may both add the same new column."""
    return f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {type_}"


def create_working_calendars(table: str) -> str:
    """One row per working calendar (destinations/working_calendar.py): org ("*": the default),
    IANA time zone, working ISO weekdays as digits, working hours as seconds from local midnight."""
    return create_table(table, [("org", "VARCHAR"), ("time_zone", "VARCHAR"), ("work_days", "VARCHAR"),
                                ("start_second", "BIGINT"), ("end_second", "BIGINT")])


def create_working_holidays(table: str) -> str:
    return create_table(table, [("org", "VARCHAR"), ("holiday", "DATE")])


def working_calendar_rows(table: str) -> str:
    return f"SELECT org, time_zone, work_days, start_second, end_second FROM {table}"


def working_holiday_rows(table: str) -> str:
    return f"SELECT org, holiday FROM {table}"


def delete_all(table: str) -> str:
    return f"DELETE FROM {table}"


def insert_working_calendars(table: str, rows: int) -> str:
    """`rows` calendars in one statement; the connector binds the values."""
    values = ", ".join(["(?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO {table} (org, time_zone, work_days, start_second, end_second) VALUES {values}"


def insert_working_holidays(table: str, rows: int) -> str:
    return f"INSERT INTO {table} (org, holiday) VALUES {', '.join(['(?, ?)'] * rows)}"


def table_columns() -> str:
    """Column names and types of one table (parameters: schema name, table name, unquoted)."""
    return (
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position"
    )


# --- Metric views (destinations/metrics.sql) ------------------------------------------------------

METRICS_SQL = Path(__file__).with_name("metrics.sql")

# In the order they are created: each view reads only tables and the views before it.
METRIC_VIEWS = ("numbers", "counted_reviews", "pull_request_metrics", "weekly_pull_request_metrics", "reviewer_load",
                "weekly_team_metrics")

_VIEW_NAME = re.compile(r"CREATE OR REPLACE VIEW \{schema\}\.([a-z_]+) COPY GRANTS AS\n")


def metric_views(schema: str) -> list[str]:
    """The `CREATE OR REPLACE VIEW` statements of metrics.sql for a quoted schema, in file order.

    On Snowflake `schema` is database-qualified (`"DB"."GITHUB"`): a view's references must not
    depend on the current database of the session that reads it.

    Lines starting with `--` are comments for the reader of the file and are dropped; a statement
    ends with `;` at the end of a line.
    """
    lines = [line for line in METRICS_SQL.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("--")]
    statements = [part.strip() for part in "\n".join(lines).split(";\n") if part.strip()]
    statements[-1] = statements[-1].removesuffix(";")
    names = tuple(m.group(1) for s in statements if (m := _VIEW_NAME.match(s)))
    if names != METRIC_VIEWS or len(statements) != len(METRIC_VIEWS):
        raise ValueError(f"{METRICS_SQL} holds views {names}, expected {METRIC_VIEWS}")
    return [s.replace("{schema}", schema) for s in statements]


def view_names() -> str:
    """Names of the views in a schema (parameter: schema name, unquoted)."""
    return "SELECT table_name FROM information_schema.views WHERE table_schema = ?"


# --- Snowflake only: DuckDB reads the landing directly --------------------------------------------

# Sent at login (`session_parameters`), so every statement of the connection runs with them.
# TIMEZONE: the session default is America/Los_Angeles; any timestamp without a zone (a Parquet
# timestamp read as TIMESTAMP_NTZ, CURRENT_TIMESTAMP() in the ledger) must be taken as UTC.
SESSION_PARAMETERS: dict[str, str] = {"TIMEZONE": "UTC"}

# How COPY reads the landed Parquet, written into every COPY (and into the named file format, whose
# `CREATE ... IF NOT EXISTS` would never update an existing one). USE_LOGICAL_TYPE = TRUE: pyarrow
# and dlt write TIMESTAMP(isAdjustedToUTC=true), which the default FALSE reads as TIMESTAMP_NTZ.
# USE_VECTORIZED_SCANNER: its default is announced to change; pinned to today's default, the
# scanner under which USE_LOGICAL_TYPE is honoured as written.
PARQUET_OPTIONS = "TYPE = PARQUET USE_LOGICAL_TYPE = TRUE USE_VECTORIZED_SCANNER = FALSE"

# COPY's FILES = (...) takes at most 1,000 names.
MAX_FILES_PER_COPY = 1000

# A type as information_schema reports it (TEXT, NUMBER, TIMESTAMP_TZ, NUMBER(38,0), ...).
_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\([0-9]+(?:, ?[0-9]+)?\))?")


def session_settings() -> list[str]:
    """The session parameters as statements, for the printed script (the connector sets them at login)."""
    return [f"ALTER SESSION SET {name} = {literal(value)}" for name, value in SESSION_PARAMETERS.items()]


def create_file_format(file_format: str) -> str:
    return f"CREATE FILE FORMAT IF NOT EXISTS {file_format} {PARQUET_OPTIONS}"


def create_stage(stage: str, url: str, file_format: str, storage_integration: str | None) -> str:
    integration = f" STORAGE_INTEGRATION = {storage_integration}" if storage_integration else ""
    return (
        f"CREATE STAGE IF NOT EXISTS {stage} URL = {literal(check_stage_url(url))}"
        f"{integration} FILE_FORMAT = (FORMAT_NAME = {file_format})"
    )


def show_stages(schema: str) -> str:
    return f"SHOW STAGES IN SCHEMA {schema}"


# --- One load, inside one transaction -----------------------------------------------------------


def truncate(table: str) -> str:
    return f"TRUNCATE TABLE {table}"


def copy_into_stage(
    stage_table: str,
    stage: str,
    folder: str,
    files: list[str],
    columns: list[tuple[str, str, str]],
    *,
    quote_location: bool = True,
) -> str:
    """Snowflake: load named files of one partition folder into the stage table.

    `columns` are (quoted stage column, landed Parquet field, type) triples. The transformation form
    (`SELECT $1:field::TYPE`) rather than MATCH_BY_COLUMN_NAME: the COPY documentation says an empty
    column value fails a load matched by name, and GitHub sends `body: ""` for every approval
    without a comment. The casts also pin each column's type.

    The location holds `=` (`org=acme/date=...`), so it is quoted, as the documentation prescribes
    for special characters. `quote_location=False` is for fakesnow only, which reads a stage in a
    COPY transformation only unquoted (`fakesnow/copy_into.py: _from_source`).

    FORCE = TRUE: the ledger, not Snowflake's 64-day load history, decides what is merged. The stage
    table is truncated first in the same transaction and the MERGE de-duplicates, so loading a file
    again is harmless, whereas a LOAD_SKIPPED would silently drop rows.
    """
    if not files or len(files) > MAX_FILES_PER_COPY:
        raise ValueError(f"one COPY takes 1 to {MAX_FILES_PER_COPY} files, not {len(files)}: split the load")
    if not columns:
        raise ValueError(f"COPY INTO {stage_table} needs at least one column")
    names = ", ".join(literal(check_file_name(name)) for name in files)
    targets = ", ".join(column for column, _, _ in columns)
    fields = ",\n        ".join(
        f'$1:"{check_identifier(field, "landed column")}"::{_check(_TYPE, type_, "column type")}'
        for _, field, type_ in columns
    )
    location = f"@{stage}/{folder}/"
    if quote_location:
        location = literal(location)
    return f"""COPY INTO {stage_table} ({targets})
FROM (
    SELECT
        {fields}
    FROM {location}
)
FILES = ({names})
FILE_FORMAT = ({PARQUET_OPTIONS})
FORCE = TRUE"""


def insert_parquet_into_stage(stage_table: str, columns: list[str]) -> str:
    """DuckDB: the same by-name load, the file list bound as the one parameter.

    hive_partitioning = false: the `org=`/`date=` folders must not turn into extra columns.
    """
    select = ", ".join(columns)
    return (
        f"INSERT INTO {stage_table} BY NAME SELECT {select}"
        " FROM read_parquet(?, union_by_name = true, hive_partitioning = false)"
    )


def merge_from_stage(
    target: str, stage_table: str, columns: list[str], key: str, version: str,
    newer_fetch: tuple[str, str, str, str, str] | None = None,
) -> str:
    """Newest copy per key wins, within the load (QUALIFY) and against the target (version >=).

    NULLS LAST: Snowflake puts NULLs first in a DESC order, so a copy without a version would win.
    Two copies of one version are told apart by a hash of all their columns, so the same one wins
    every time. `newer_fetch` (fetch table, scope, kind column, fetch version column, kind), for a
    child table: a staged row of a pull request whose list a newer load fetched is left out, so an
    older load merged late never brings back a row the newer fetch no longer had.
    """
    updates = ",\n        ".join(f"{c} = s.{c}" for c in columns if c != key)
    names = ", ".join(columns)
    values = ", ".join(f"s.{c}" for c in columns)
    where = ""
    if newer_fetch is not None:
        fetches, scope, kind_column, fetch_version, kind = newer_fetch
        if kind not in CHILD_KINDS:
            raise ValueError(f"invalid child kind {kind!r}")
        where = f"""
    WHERE NOT EXISTS (
        SELECT 1 FROM {fetches} AS f
        WHERE f.{scope} = c.{scope} AND f.{kind_column} = '{kind}' AND f.{fetch_version} > c.{version}
    )"""
    return f"""MERGE INTO {target} AS t
USING (
    SELECT {names} FROM {stage_table} AS c{where}
    QUALIFY ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY {version} DESC NULLS LAST, HASH({names}) DESC) = 1
) AS s
ON t.{key} = s.{key}
WHEN MATCHED AND (t.{version} IS NULL OR s.{version} >= t.{version}) THEN
    UPDATE SET
        {updates}
WHEN NOT MATCHED THEN
    INSERT ({names}) VALUES ({values})"""


def delete_replaced_children(target: str, stage_table: str, key: str, scope: str, version: str) -> str:
    """A load carrying a parent's children replaces that parent's whole child set.

    The version guard keeps a replayed older load from deleting children of a newer one.
    """
    return f"""DELETE FROM {target} AS t
WHERE t.{scope} IN (SELECT s.{scope} FROM {stage_table} AS s)
  AND t.{key} NOT IN (SELECT s.{key} FROM {stage_table} AS s WHERE s.{key} IS NOT NULL)
  AND t.{version} <= (SELECT MAX(s.{version}) FROM {stage_table} AS s WHERE s.{scope} = t.{scope})"""


def delete_children_not_fetched(
    target: str, child_stage: str, fetch_stage: str, key: str, version: str, scope: str,
    fetch_kind: str, fetch_version: str, kind: str,
) -> str:
    """Each child list a load fetched (`fetch_stage`, rows of pull_request_child_fetches) replaces
    that pull request's whole set: rows not in the list go, all of them when it came back empty.

    Column names come quoted: `scope` (the pull request id, in both tables), `fetch_kind` and
    `fetch_version` (the fetch record's kind and pull-request version). The version guard keeps a
    replayed older load from deleting children of a newer one.
    """
    if kind not in CHILD_KINDS:
        raise ValueError(f"invalid child kind {kind!r}")
    return f"""DELETE FROM {target} AS t
WHERE t.{scope} IN (SELECT f.{scope} FROM {fetch_stage} AS f WHERE f.{fetch_kind} = '{kind}')
  AND t.{key} NOT IN (SELECT s.{key} FROM {child_stage} AS s WHERE s.{key} IS NOT NULL)
  AND t.{version} <= (
    SELECT MAX(f.{fetch_version}) FROM {fetch_stage} AS f
    WHERE f.{scope} = t.{scope} AND f.{fetch_kind} = '{kind}'
  )"""


def ledger_rows(ledger: str) -> str:
    """Each load the ledger holds for a pipeline, with its number of rows (parameter: pipeline):
    more than one means two runs merged it (harmless to the data, but the claim failed)."""
    return f"SELECT load_id, COUNT(*) FROM {ledger} WHERE pipeline_name = ? GROUP BY load_id"


# --- Exactly once under concurrency (see merge._claim_load for why this is safe on Snowflake) ---


def create_merge_locks(table: str) -> str:
    """One row per pipeline, whose `merge_count` each load's transaction moves on by a
    compare-and-set: the write that decides which run merges a load."""
    return f"""CREATE TABLE IF NOT EXISTS {table} (
    pipeline_name VARCHAR NOT NULL,
    locked_at TIMESTAMP_TZ,
    merge_count BIGINT,
    PRIMARY KEY (pipeline_name)
)"""


def ensure_merge_lock_row(table: str) -> str:
    """The pipeline's lock row (parameters: pipeline name, twice); a no-op once it exists."""
    return (
        f"INSERT INTO {table} (pipeline_name, locked_at, merge_count) SELECT ?, CURRENT_TIMESTAMP(), 0"
        f" WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE pipeline_name = ?)"
    )


def claim_snapshot(table: str, ledger: str) -> str:
    """The pipeline's merge count and the load's rows in the ledger, read by one statement, so
    from one snapshot (parameters: pipeline, load id, pipeline). No row: no lock row."""
    return (
        f"SELECT COALESCE(l.merge_count, 0),"
        f" (SELECT COUNT(*) FROM {ledger} AS m WHERE m.pipeline_name = ? AND m.load_id = ?)"
        f" FROM {table} AS l WHERE l.pipeline_name = ?"
    )


def claim_load(table: str) -> str:
    """The claim (parameters: pipeline, the merge count the snapshot read): moves the count on
    only if no merge of the pipeline committed since that snapshot. One row updated: the
    snapshot was the newest, its ledger did not hold the load, and this transaction merges it.
    None: another run merged meanwhile, or the snapshot was stale; read again. A rival's UPDATE
    of the row waits for this transaction to end."""
    return (
        f"UPDATE {table} SET locked_at = CURRENT_TIMESTAMP(), merge_count = COALESCE(merge_count, 0) + 1"
        " WHERE pipeline_name = ? AND COALESCE(merge_count, 0) = ?"
    )


def record_load(ledger: str) -> str:
    """The claimed load's ledger row (parameters: pipeline, load id), in the claim's transaction."""
    return (
        f"INSERT INTO {ledger} (pipeline_name, load_id, merged_at, row_counts)"
        " SELECT ?, ?, CURRENT_TIMESTAMP(), NULL"
    )


def set_ledger_row_counts(ledger: str) -> str:
    """The claimed ledger row gets the load's row counts (parameters: counts, pipeline, load id)."""
    return f"UPDATE {ledger} SET row_counts = ? WHERE pipeline_name = ? AND load_id = ?"


# --- One-time administration (run by an account administrator, quoted by docs/snowflake.md) --------

_ADMIN_SQL = """\
-- Run once as ACCOUNTADMIN (keep the names in line with SnowflakeConfig).
CREATE STORAGE INTEGRATION IF NOT EXISTS {integration}
  TYPE = EXTERNAL_STAGE
  STORAGE_PROVIDER = 'GCS'
  ENABLED = TRUE
  STORAGE_ALLOWED_LOCATIONS = ('{stage_url}');
-- Grant the service account shown as STORAGE_GCP_SERVICE_ACCOUNT read access to the bucket:
--   gcloud storage buckets add-iam-policy-binding gs://{bucket} \\
--     --member=serviceAccount:<STORAGE_GCP_SERVICE_ACCOUNT> --role=roles/storage.objectViewer
DESC STORAGE INTEGRATION {integration};

CREATE ROLE IF NOT EXISTS {role};
GRANT USAGE ON INTEGRATION {integration} TO ROLE {role};
GRANT USAGE ON WAREHOUSE {warehouse} TO ROLE {role};
GRANT USAGE, CREATE SCHEMA ON DATABASE {database} TO ROLE {role};
CREATE USER IF NOT EXISTS {user}
  DEFAULT_ROLE = {role}
  RSA_PUBLIC_KEY = '<public key body>';
GRANT ROLE {role} TO USER {user};
-- bootstrap (python flows/bootstrap.py) then creates, as {role}: the schema, the file format,
-- the stage (URL = '{stage_url}', STORAGE_INTEGRATION = {integration}),
-- the target, stage (TRANSIENT), ledger and merge-lock tables.
"""

_PLACEHOLDER = re.compile(r"<[a-z ]+>")


def snowflake_admin_sql(
    stage_url: str = "gcs://<bucket>/<prefix>/github/",
    *,
    integration: str = GCS_STORAGE_INTEGRATION,
    role: str = "GITHUB_LOADER",
    user: str = "GITHUB_LOADER_SVC",
    warehouse: str = "<warehouse>",
    database: str = "<database>",
) -> str:
    """The one-time admin SQL for a GCS landing; every name checked (placeholders `<...>` pass)."""
    names = {"integration": integration, "role": role, "user": user, "warehouse": warehouse, "database": database}
    for what, name in names.items():
        if not _PLACEHOLDER.fullmatch(name):
            check_identifier(name, what)
    if not stage_url.startswith("gcs://"):
        raise ValueError(f"the admin SQL is for a GCS stage (gcs://bucket/prefix/github/), not {stage_url!r}")
    if not _PLACEHOLDER.search(stage_url):
        check_stage_url(stage_url)
    bucket = stage_url.removeprefix("gcs://").split("/", 1)[0]
    return _ADMIN_SQL.format(stage_url=stage_url, bucket=bucket, **names)


SNOWFLAKE_ADMIN_SQL = snowflake_admin_sql()
