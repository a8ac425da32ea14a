"""The Snowflake SQL as text: what `./dev bootstrap --print-sql` prints, checked against Snowflake's
documented semantics that fakesnow (DuckDB underneath) does not reproduce: session time zone,
Parquet logical types, empty strings under MATCH_BY_COLUMN_NAME, FILES limit, TRANSIENT, NULL order,
special characters in a stage location. Each statement must parse in sqlglot's Snowflake dialect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from destinations import DuckDBConfig, DuckDBWarehouse, SnowflakeConfig, SnowflakeWarehouse, sql
from destinations.landing import LandedFile
from destinations.script import snowflake_script, statements
from destinations.warehouse import snowflake_connect_args
from flows import bootstrap as bootstrap_cli
from sources.github.schema import TABLES


@pytest.fixture
def printed(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setenv("PR_ANALYTICS_LANDING_URL", "gs://lake/github-prs")
    assert bootstrap_cli.main(["--print-sql", "--org", "acme"]) == 0
    return capsys.readouterr().out


def parsed(text: str) -> list[tuple[str, exp.Expr]]:
    """Each statement with its Snowflake parse; a parse error or a fallback to an opaque Command fails."""
    result = []
    for statement in statements(text):
        tree = sqlglot.parse_one(statement, read="snowflake", error_level=sqlglot.ErrorLevel.RAISE)
        assert not isinstance(tree, exp.Command), f"sqlglot cannot parse, only pass through: {statement[:80]}"
        result.append((statement, tree))
    return result


def test_print_sql_needs_no_connection_and_every_statement_parses(printed: str) -> None:
    trees = parsed(printed)
    kinds = {type(tree).__name__ for _, tree in trees}
    assert {"Alter", "Create", "Show", "Copy", "Merge", "Delete", "TruncateTable", "Insert", "Commit"} <= kinds
    assert "STORAGE_INTEGRATION = \"GITHUB_GCS\"" in printed and "URL = 'gcs://lake/github-prs/github/'" in printed


def test_session_is_utc_in_the_script_and_at_login(printed: str) -> None:
    assert statements(printed)[0] == "ALTER SESSION SET TIMEZONE = 'UTC'"
    config = SnowflakeConfig(account="a", user="u", password="p", database="D")
    assert snowflake_connect_args(config)["session_parameters"] == {"TIMEZONE": "UTC"}


def test_parquet_is_read_with_logical_types_and_a_pinned_scanner(printed: str) -> None:
    readers = [s for s in statements(printed) if s.startswith(("COPY INTO", "CREATE FILE FORMAT"))]
    assert len(readers) == 1 + len(TABLES)  # the file format and one COPY per table
    for statement in readers:
        assert "TYPE = PARQUET USE_LOGICAL_TYPE = TRUE USE_VECTORIZED_SCANNER = FALSE" in statement
    # The COPY does not rely on the named format, which IF NOT EXISTS never updates.
    assert all("FORMAT_NAME" not in s for s in readers if s.startswith("COPY"))


def test_copy_never_matches_by_name_and_pins_every_column_type(printed: str) -> None:
    assert "MATCH_BY_COLUMN_NAME" not in printed
    copies = [(s, tree) for s, tree in parsed(printed) if isinstance(tree, exp.Copy)]
    assert len(copies) == len(TABLES)
    for statement, tree in copies:
        source = tree.args["files"][0]
        assert isinstance(source, exp.Subquery), statement[:80]
        targets = tree.this.expressions  # COPY INTO t (cols)
        selected = source.this.expressions
        assert targets and len(targets) == len(selected)
        assert all(isinstance(column, exp.Cast) for column in selected), "every column cast to its type"
    reviews = next(s for s, _ in copies if "PULL_REQUEST_REVIEWS" in s)
    assert '$1:"body"::VARCHAR' in reviews and '$1:"submitted_at"::TIMESTAMP_TZ' in reviews


def test_copy_location_with_equals_signs_is_quoted(printed: str) -> None:
    for statement, tree in parsed(printed):
        if isinstance(tree, exp.Copy):
            location = tree.args["files"][0].this.args["from_"].this.this
            assert isinstance(location, exp.Literal) and location.is_string, statement[:80]
            assert location.this.startswith('@"GITHUB"."GITHUB_LANDING"/') and "/org=acme/date=" in location.this


def test_added_columns_say_if_not_exists_and_only_the_bootstrap_alters(printed: str) -> None:
    """Issue 18.6: DDL commits an open transaction implicitly in Snowflake and races other runs'
    loads: columns are added by the bootstrap only; nothing after it alters or creates a table."""
    cut = printed.index("-- [acme] Before its loads")
    bootstrap_part, merge_part = printed[:cut], printed[cut:]
    alters = [tree for _, tree in parsed(bootstrap_part)
              if isinstance(tree, exp.Alter) and any(isinstance(a, exp.ColumnDef) for a in tree.args["actions"])]
    assert len(alters) == 3  # a target table, its stage table, the lock table's merge count
    for tree in alters:
        assert all(isinstance(a, exp.ColumnDef) and a.args.get("exists") for a in tree.args["actions"])
    assert not [s for s in statements(merge_part) if s.startswith(("ALTER", "CREATE", "DROP"))]


def test_stage_tables_are_transient_and_the_rest_are_not(printed: str) -> None:
    creates = [s for s in statements(printed) if s.startswith("CREATE") and "TABLE" in s.split("(")[0]]
    stage_tables = [s for s in creates if '"STG_' in s.split("(")[0]]
    assert len(stage_tables) == len(TABLES) and all(s.startswith("CREATE TRANSIENT TABLE IF NOT EXISTS") for s in stage_tables)
    assert all(s.startswith("CREATE TABLE IF NOT EXISTS") for s in creates if s not in stage_tables)


def test_stage_tables_keep_no_time_travel(printed: str) -> None:
    """Issue 18.8: every TRUNCATE of a stage table would keep a day of Time Travel copies."""
    stage_tables = [s for s in statements(printed) if s.startswith("CREATE TRANSIENT TABLE")]
    assert stage_tables and all(s.endswith(") DATA_RETENTION_TIME_IN_DAYS = 0") for s in stage_tables)
    retention = [s for s in statements(printed) if s.endswith("SET DATA_RETENTION_TIME_IN_DAYS = 0")]
    assert len(retention) == len(TABLES) and all('"STG_' in s for s in retention)  # those made earlier


def test_deduplication_puts_nulls_last_and_breaks_ties_the_same_way_every_time(printed: str) -> None:
    merges = [s for s in statements(printed) if s.startswith("MERGE")]
    assert len(merges) == len(TABLES) and all(" DESC NULLS LAST, HASH(" in s for s in merges)


def test_the_claim_is_a_write_and_child_rows_of_a_newer_fetch_stay_out(printed: str) -> None:
    """Issues 18.5 and 18.7, in the printed load: the claim reads the merge count and the ledger in
    one statement, then decides by a compare-and-set UPDATE of the lock row; the ledger INSERT reads
    nothing; each child MERGE leaves out rows of a list a newer load fetched."""
    load = statements(printed[printed.index("-- [acme] The merge of one load"):])
    assert load[0].startswith("SELECT COALESCE(l.merge_count, 0)") and '"MERGED_LOADS"' in load[0]
    assert load[1].startswith('UPDATE "GITHUB"."MERGE_LOCKS" SET') and "COALESCE(merge_count, 0) = ?" in load[1]
    assert load[2].startswith('INSERT INTO "GITHUB"."MERGED_LOADS"') and "NOT EXISTS" not in load[2]
    children = [s for s in load if s.startswith("MERGE") and "PULL_REQUEST_CHILD_FETCHES\" AS f" in s]
    assert len(children) == 3  # reviews, files, events


def test_copy_files_stay_within_the_limit(printed: str) -> None:
    for _, tree in parsed(printed):
        if isinstance(tree, exp.Copy):
            [files] = [p for p in tree.args["params"] if p.this.name.upper() == "FILES"]
            assert 1 <= len(list(files.find_all(exp.Literal))) <= sql.MAX_FILES_PER_COPY
    fields = [('"ID"', "id", "NUMBER")]
    with pytest.raises(ValueError, match="1 to 1000 files, not 1001"):
        sql.copy_into_stage('"S"."T"', '"S"."STAGE"', "t/org=a/date=2026-01-05", [f"1.{i}.parquet" for i in range(1001)], fields)


class _Cursor:
    """Records statements; answers a COPY with one LOADED row per named file."""

    def __init__(self, log: list[str]) -> None:
        self.log, self.description, self._rows = log, None, []

    def execute(self, text: str, params: Any = None) -> None:
        self.log.append(text)
        if text.startswith("COPY INTO"):
            names = [n for n in text.split("FILES = (", 1)[1].split(")", 1)[0].replace("'", "").split(", ")]
            self.description = [type("D", (), {"name": n})() for n in ("file", "status", "rows_loaded")]
            self._rows = [(f"x/{name}", "LOADED", 1) for name in names]
        elif "information_schema.columns" in text:
            self.description = [type("D", (), {"name": n})() for n in ("column_name", "data_type")]
            self._rows = [("ID", "NUMBER")]

    def fetchall(self) -> list[tuple]:
        return self._rows


def test_a_folder_of_2345_files_takes_three_copies_in_the_same_transaction() -> None:
    log: list[str] = []
    warehouse = object.__new__(SnowflakeWarehouse)  # no connection: statements are only recorded
    warehouse.config = SnowflakeConfig(account="a", user="u", password="p", database="D")
    warehouse.schema_name, warehouse._quote_location = "GITHUB", True
    warehouse._conn = type("Conn", (), {"cursor": lambda self: _Cursor(log)})()
    files = [
        LandedFile("pull_requests", "acme", "2026-01-05", "1.0", f"1.0.f{i}.parquet", f"p/1.0.f{i}.parquet", "u")
        for i in range(2345)
    ]
    assert warehouse.load_stage('"GITHUB"."STG_GITHUB_ACME_PULL_REQUESTS"', files, ['"ID"']) == 2345
    copies = [s for s in log if s.startswith("COPY INTO")]
    assert [s.count(".parquet'") for s in copies] == [1000, 1000, 345]
    assert all("FROM '@\"GITHUB\".\"GITHUB_LANDING\"/pull_requests/org=acme/date=2026-01-05/'" in s for s in copies)
    assert not any(s.startswith(("COMMIT", "BEGIN")) for s in log)


def test_script_without_an_org_is_refused() -> None:
    with pytest.raises(ValueError, match="--org"):
        snowflake_script(SnowflakeConfig(account="a", user="u", database="D"), {})


def test_adding_the_same_column_twice_is_harmless_on_duckdb(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(DuckDBConfig(path=tmp_path / "w.duckdb"))
    warehouse.execute(sql.create_schema(warehouse.q(warehouse.schema_name)))
    warehouse.execute(sql.create_table(warehouse.table("t"), [(warehouse.q("id"), "BIGINT")]))
    for _ in range(2):
        warehouse.execute(sql.add_column(warehouse.table("t"), warehouse.q("extra"), "VARCHAR"))
    assert warehouse.columns("t") == {"id": "BIGINT", "extra": "VARCHAR"}
    warehouse.close()
