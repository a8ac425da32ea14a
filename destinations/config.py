"""Connection settings of the two warehouses.

Plain pydantic models: the application's settings class nests them, so they carry no env prefix.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

# The storage integration the one-time admin SQL creates; a gcs:// stage uses it unless told otherwise.
GCS_STORAGE_INTEGRATION = "GITHUB_GCS"


class DuckDBConfig(BaseModel):
    """The embedded default: one local database file.

    DuckDB lets one process write a file at a time: while another process (a second deployment,
    a backfill) holds it, opening waits up to `lock_timeout_seconds`, then fails naming the file.
    """

    path: Path = Path("data/warehouse.duckdb")
    schema_name: str = "github"
    lock_timeout_seconds: float = Field(default=300.0, ge=0)


class SnowflakeConfig(BaseModel):
    """Snowflake with an external stage over the landing bucket.

    `stage_url` (e.g. `gcs://bucket/prefix/github/`) makes `bootstrap` create the stage (and check
    that an existing one points there); the flow derives it from the landing URL when unset
    (`flows.warehouse.snowflake_config`). `host`/`port`/`protocol` point the connector at a
    stand-in such as fakesnow's server; `protocol = "http"`, which Snowflake itself never accepts,
    marks one (see `sql.copy_into_stage`). `network_timeout` (seconds) bounds each request.
    """

    account: str
    user: str
    password: SecretStr | None = None
    private_key_path: Path | None = None
    private_key_passphrase: SecretStr | None = None
    role: str | None = None
    warehouse: str | None = None
    database: str
    schema_name: str = "GITHUB"
    stage: str = "GITHUB_LANDING"
    stage_url: str | None = None
    storage_integration: str | None = None
    file_format: str = "GITHUB_PARQUET"
    host: str | None = None
    port: int | None = None
    protocol: str = "https"
    network_timeout: int | None = None
