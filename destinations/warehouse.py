"""The two warehouses behind one small interface: run SQL, load a stage table, commit or roll back.

Everything that differs between DuckDB and Snowflake lives here or side by side in `sql.py`;
`merge.py` drives both the same way.
"""

from __future__ import annotations

import json
import logging
import posixpath
import threading
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import duckdb
from sqlglot import exp

from destinations import sql
from destinations.config import DuckDBConfig, SnowflakeConfig
from destinations.landing import Landing, LandedFile

logger = logging.getLogger("destinations.warehouse")


class Warehouse(ABC):
    """A connection to one warehouse schema."""

    dialect: ClassVar[str]
    schema_name: str

    def q(self, name: str, *, pipeline_name: bool = False) -> str:
        """A validated, case-folded, quoted identifier."""
        return sql.quote(name, self.dialect, pipeline_name=pipeline_name)

    def table(self, name: str, *, pipeline_name: bool = False) -> str:
        """A schema-qualified, quoted table name."""
        return f"{self.q(self.schema_name)}.{self.q(name, pipeline_name=pipeline_name)}"

    def execute(self, statement: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one statement written in Snowflake's dialect; return its result rows."""
        return self._run(sql.to_dialect(statement, self.dialect), params)

    def columns(self, table: str, *, pipeline_name: bool = False) -> dict[str, str]:
        """Lower-case column name -> data type, as information_schema reports them."""
        self.q(table, pipeline_name=pipeline_name)
        rows = self.execute(
            sql.table_columns(),
            [sql.fold(self.schema_name, self.dialect), sql.fold(table, self.dialect)],
        )
        return {str(name).lower(): str(data_type) for name, data_type in rows}

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: commit at the end, roll back on any error (or interrupt)."""
        self._begin()
        try:
            yield
        except BaseException:
            logger.warning("rolling back the transaction on %s", self.location())
            self._rollback()
            raise
        self._commit()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold off this process's other writers of the same warehouse (DuckDB); Snowflake locks itself."""
        yield

    def attach_landing(self, landing: Landing) -> None:
        """Make the landing readable from inside the warehouse, if it reads files itself."""

    def bootstrap_extras(self) -> list[str]:
        """Create the warehouse-specific objects `bootstrap` needs besides schema and tables; name them."""
        return []

    def keep_no_history(self, stage_table: str) -> None:
        """Make a stage table keep no copies of what it held (Snowflake's Time Travel)."""

    def qualified_schema(self) -> str:
        """The schema as the metric views name it: fully qualified wherever a reader's session could
        resolve a shorter name elsewhere."""
        return self.q(self.schema_name)

    @abstractmethod
    def load_stage(self, stage_table: str, files: list[LandedFile], columns: list[str]) -> int:
        """Load landed files into a (quoted) stage table by column name; return rows loaded."""

    @abstractmethod
    def location(self) -> str:
        """Where the data goes, for reports and logs (never a secret)."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _run(self, text: str, params: Sequence[Any]) -> list[tuple]: ...

    @abstractmethod
    def _begin(self) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _rollback(self) -> None: ...


class WarehouseLocked(RuntimeError):
    """Another process kept the DuckDB file locked for longer than `DuckDBConfig.lock_timeout_seconds`."""


# How often a process waiting for another's DuckDB file lock tries again.
LOCK_POLL_SECONDS = 0.5
LOCK_WARN_SECONDS = 30.0  # a merge of another process takes seconds: longer is worth a warning


@dataclass
class _SharedDuckDB:
    """One open database per file and process, shared by its DuckDBWarehouse objects.

    DuckDB lets one process write a file, and within it concurrent transactions that touch the same
    catalog entries or rows fail ("write-write conflict") instead of waiting: writers take `lock`.
    A filesystem registers once per database, not once per connection.
    """

    connection: duckdb.DuckDBPyConnection
    lock: threading.RLock = field(default_factory=threading.RLock)
    protocols: set[str] = field(default_factory=set)
    users: int = 0


_OPEN: dict[Path, _SharedDuckDB] = {}
_OPEN_LOCK = threading.Lock()


def _connect_waiting(path: Path, timeout: float) -> duckdb.DuckDBPyConnection:
    """Open the file, waiting up to `timeout` seconds while another process holds its lock."""
    started = time.monotonic()
    deadline = started + timeout
    told = 0  # 1: said it waits (info: another merge's turn is routine); 2: warned it waits long
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise
            if time.monotonic() >= deadline:
                raise WarehouseLocked(
                    f"DuckDB file {path} is still locked by another process after waiting {timeout:g} s "
                    f"(DuckDBConfig.lock_timeout_seconds; is another deployment or a backfill merging "
                    f"into it?): {error}"
                ) from error
            waited = time.monotonic() - started
            if told == 0:
                logger.info("DuckDB file %s is locked by another process: waiting up to %g s for it", path, timeout)
                told = 1
            elif told == 1 and waited >= LOCK_WARN_SECONDS:
                logger.warning("DuckDB file %s is still locked by another process after %.0f s: waiting up to "
                               "%g s in all (%s)", path, waited, timeout, error)
                told = 2
            time.sleep(max(0.0, min(LOCK_POLL_SECONDS, deadline - time.monotonic())))


class DuckDBWarehouse(Warehouse):
    """The embedded default: reads the landed Parquet itself (local, or gs:// through fsspec).

    Each object has its own cursor (its own transactions) on the process's one database per file;
    `exclusive()` serialises the writers of this process.
    """

    dialect = sql.DUCKDB

    def __init__(self, config: DuckDBConfig | None = None) -> None:
        self.config = config or DuckDBConfig()
        self.schema_name = sql.check_identifier(self.config.schema_name, "schema name")
        self.config.path.parent.mkdir(parents=True, exist_ok=True)
        self._path = self.config.path.resolve()
        with _OPEN_LOCK:  # one thread opens (and waits for) a file at a time
            shared = _OPEN.get(self._path)
            if shared is None:
                shared = _SharedDuckDB(_connect_waiting(self._path, self.config.lock_timeout_seconds))
                _OPEN[self._path] = shared
            shared.users += 1
        self._shared: _SharedDuckDB | None = shared
        self._conn = shared.connection.cursor()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        assert self._shared is not None, "warehouse is closed"
        with self._shared.lock:
            yield

    def attach_landing(self, landing: Landing) -> None:
        # A registered fsspec filesystem answers gs:// paths: no httpfs download at run time.
        if landing.is_local:
            return
        assert self._shared is not None, "warehouse is closed"
        protocol = landing.fs.protocol if isinstance(landing.fs.protocol, str) else landing.fs.protocol[0]
        with self._shared.lock:
            if protocol not in self._shared.protocols:
                self._shared.connection.register_filesystem(landing.fs)
                self._shared.protocols.add(protocol)

    def load_stage(self, stage_table: str, files: list[LandedFile], columns: list[str]) -> int:
        statement = sql.insert_parquet_into_stage(stage_table, columns)
        rows = self._run(statement, [[landed.url for landed in files]])
        return int(rows[0][0]) if rows else 0

    def location(self) -> str:
        return f"duckdb:{self.config.path}#{self.schema_name}"

    def close(self) -> None:
        """Close this cursor; the last one out closes the database and releases the file lock."""
        if self._shared is None:
            return
        self._conn.close()
        with _OPEN_LOCK:
            self._shared.users -= 1
            if self._shared.users == 0:
                self._shared.connection.close()
                del _OPEN[self._path]
        self._shared = None

    def _run(self, text: str, params: Sequence[Any]) -> list[tuple]:
        return self._conn.execute(text, list(params)).fetchall()

    def _begin(self) -> None:
        self._conn.begin()

    def _commit(self) -> None:
        self._conn.commit()

    def _rollback(self) -> None:
        self._conn.rollback()


def _private_key_der(config: SnowflakeConfig) -> bytes:
    """The key file (PEM, optionally encrypted) as the DER bytes the connector expects."""
    from cryptography.hazmat.primitives import serialization

    assert config.private_key_path is not None
    passphrase = config.private_key_passphrase
    key = serialization.load_pem_private_key(
        config.private_key_path.read_bytes(),
        password=passphrase.get_secret_value().encode() if passphrase else None,
    )
    return key.private_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def snowflake_connect_args(config: SnowflakeConfig) -> dict[str, Any]:
    """Connector arguments: autocommit off (we commit once per load), qmark parameters, UTC session."""
    args: dict[str, Any] = {
        "account": config.account,
        "user": config.user,
        "database": config.database,
        "autocommit": False,
        "paramstyle": "qmark",
        "application": "github_pr_analytics",
        "session_parameters": dict(sql.SESSION_PARAMETERS),
    }
    for name in ("role", "warehouse", "host", "port", "network_timeout"):
        value = getattr(config, name)
        if value is not None:
            args[name] = value
    if config.host is not None:
        args["protocol"] = config.protocol
    if config.private_key_path is not None:
        args["private_key"] = _private_key_der(config)
    elif config.password is not None:
        args["password"] = config.password.get_secret_value()
    else:
        raise ValueError("SnowflakeConfig needs either private_key_path or password")
    return args


class SnowflakeWarehouse(Warehouse):
    """Snowflake (or fakesnow's server): loads the stage tables with COPY INTO from the external stage."""

    dialect = sql.SNOWFLAKE

    def __init__(self, config: SnowflakeConfig, connect_args: dict[str, Any] | None = None) -> None:
        """`connect_args` adds connector arguments; its `session_parameters` join ours, which win."""
        import snowflake.connector

        self.config = config
        self.schema_name = sql.check_identifier(config.schema_name, "schema name")
        sql.check_identifier(config.stage, "stage name")
        sql.check_identifier(config.file_format, "file format name")
        if config.storage_integration is not None:
            sql.check_identifier(config.storage_integration, "storage integration")
        args = snowflake_connect_args(config)
        extra = dict(connect_args or {})
        args["session_parameters"] = {**extra.pop("session_parameters", {}), **args["session_parameters"]}
        self._conn = snowflake.connector.connect(**args, **extra)
        # fakesnow's COPY reads a stage in a transformation only unquoted (see `sql.copy_into_stage`).
        # Snowflake itself is reached over HTTPS only: plain HTTP means the local stand-in.
        self._quote_location = config.protocol != "http"

    @property
    def _file_format_name(self) -> str:
        # FORMAT_NAME takes a string; both parts are strict identifiers, folded like unquoted names.
        return sql.literal(f"{sql.fold(self.schema_name, self.dialect)}.{sql.fold(self.config.file_format, self.dialect)}")

    def keep_no_history(self, stage_table: str) -> None:
        # A stage table an earlier version created kept a day of Time Travel. fakesnow (the
        # local stand-in, reached over plain HTTP) has no ALTER TABLE ... SET.
        if self.config.protocol != "http":
            self.execute(sql.keep_no_history(stage_table))

    def qualified_schema(self) -> str:
        # "GITHUB".T would be looked up in the reader's current database.
        return f"{self.q(self.config.database)}.{self.q(self.schema_name)}"

    def bootstrap_extras(self) -> list[str]:
        file_format = self.table(self.config.file_format)
        self.execute(sql.create_file_format(file_format))
        ensured = [f"file format {file_format}"]
        stage = self.table(self.config.stage)
        if self.config.stage_url:
            integration = self.q(self.config.storage_integration) if self.config.storage_integration else None
            self.execute(sql.create_stage(stage, self.config.stage_url, self._file_format_name, integration))
            self._check_stage_url(self.config.stage_url)
            ensured.append(f"stage {stage} -> {self.config.stage_url}")
        else:
            ensured.append(f"stage {stage} (owned by an administrator, not checked)")
        return ensured

    def _check_stage_url(self, expected: str) -> None:
        """`CREATE STAGE IF NOT EXISTS` keeps an existing stage as it is: it must cover the landing."""
        cursor = self._conn.cursor()
        cursor.execute(sql.show_stages(self.q(self.schema_name)))
        names = [d.name.lower() for d in cursor.description or []]
        # Filtered here: fakesnow ignores SHOW STAGES LIKE.
        stage_name = sql.fold(self.config.stage, self.dialect)
        urls = [row["url"] for row in (dict(zip(names, r)) for r in cursor.fetchall()) if row["name"] == stage_name]
        if urls and _normal_url(urls[0]) != _normal_url(expected):
            raise ValueError(
                f"stage {self.table(self.config.stage)} points at {urls[0]}, but the landing is read at "
                f"{expected}: drop the stage (bootstrap recreates it) or set PR_ANALYTICS_SNOWFLAKE__STAGE"
            )

    def load_stage(self, stage_table: str, files: list[LandedFile], columns: list[str]) -> int:
        """COPY each partition folder's files, at most 1,000 per statement, in the caller's transaction.

        The landed Parquet field of a column is its lower-case name (dlt names columns in snake case;
        `columns` are their quoted, upper-case folds); its type is the stage table's.
        """
        types = self._column_types(stage_table)
        fields: list[tuple[str, str, str]] = []
        for column in columns:
            name = column.strip('"')
            if name not in types:
                raise RuntimeError(f"stage table {stage_table} has no column {column}: add it before loading")
            fields.append((column, name.lower(), types[name]))
        by_folder: dict[str, list[LandedFile]] = defaultdict(list)
        for landed in files:
            by_folder[landed.folder].append(landed)
        loaded = 0
        for folder, group in sorted(by_folder.items()):
            for start in range(0, len(group), sql.MAX_FILES_PER_COPY):
                chunk = group[start : start + sql.MAX_FILES_PER_COPY]
                statement = sql.copy_into_stage(
                    stage_table, self.table(self.config.stage), folder, [f.name for f in chunk], fields,
                    quote_location=self._quote_location,
                )
                cursor = self._conn.cursor()
                cursor.execute(statement)
                names = [d.name.lower() for d in cursor.description or []]
                results = [dict(zip(names, row)) for row in cursor.fetchall()]
                loaded += _check_copy_results(folder, chunk, results)
        return loaded

    def _column_types(self, table: str) -> dict[str, str]:
        """Column name -> type of a quoted, schema-qualified table, as information_schema names them."""
        parsed = exp.to_table(table, dialect=sql.SNOWFLAKE)
        rows = self._run(sql.table_columns(), [parsed.db, parsed.name])
        return {str(name): str(data_type) for name, data_type in rows}

    def location(self) -> str:
        where = self.config.host or f"{self.config.account}.snowflakecomputing.com"
        return f"snowflake:{where}/{self.config.database}.{self.schema_name}"

    def close(self) -> None:
        self._conn.close()

    def _run(self, text: str, params: Sequence[Any]) -> list[tuple]:
        cursor = self._conn.cursor()
        cursor.execute(text, list(params) if params else None)
        return cursor.fetchall() if cursor.description else []

    def _begin(self) -> None:
        # Autocommit is off, so the next DML opens the transaction implicitly (fakesnow rejects an
        # explicit BEGIN before MERGE). Committing first closes any implicit read-only transaction.
        self._conn.commit()

    def _commit(self) -> None:
        self._conn.commit()

    def _rollback(self) -> None:
        self._conn.rollback()


def _normal_url(url: object) -> str:
    """A stage URL as SHOW STAGES may print it (possibly `["gcs://b/p/"]`), with one trailing slash."""
    return str(url).strip('[]"').rstrip("/") + "/"


def _check_copy_results(folder: str, files: list[LandedFile], results: list[dict[str, Any]]) -> int:
    """Every requested file must come back LOADED; anything else names the file and fails the load."""
    if results and "status" not in results[0]:
        raise RuntimeError(f"COPY INTO from {folder}/ processed no files, expected {[f.name for f in files]}: {results}")
    by_name = {posixpath.basename(str(r["file"])): r for r in results}
    loaded = 0
    for landed in files:
        result = by_name.get(landed.name)
        if result is None:
            raise RuntimeError(f"COPY INTO did not report landed file {folder}/{landed.name}")
        if result["status"] != "LOADED":
            raise RuntimeError(
                f"COPY INTO {folder}/{landed.name}: status {result['status']}, "
                f"first error {json.dumps(result.get('first_error'))} "
                f"({result.get('errors_seen')} errors, {result.get('rows_loaded')} of {result.get('rows_parsed')} rows)"
            )
        loaded += int(result["rows_loaded"])
    return loaded


@contextmanager
def open_warehouse(config: DuckDBConfig | SnowflakeConfig) -> Iterator[Warehouse]:
    """The configured warehouse: the embedded DuckDB file, or Snowflake (see
    `destinations.config.with_stage` for the stage its config needs)."""
    warehouse: Warehouse
    if isinstance(config, SnowflakeConfig):
        warehouse = SnowflakeWarehouse(config)
    else:
        warehouse = DuckDBWarehouse(config)
    try:
        yield warehouse
    finally:
        warehouse.close()
