"""Connection settings of the two warehouses, and the Snowflake stage derived from the landing.

Plain pydantic models: the application's settings class nests them, so they carry no env prefix.
Snowflake reads the landing through an external stage whose URL is derived from the landing URL
(unless `PR_ANALYTICS_SNOWFLAKE__STAGE_URL` overrides it), so the two agree by construction: dlt
lands `{landing}/github/{table}/org=.../date=.../file.parquet` and the stage root is
`{landing}/github/`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

# The storage integration the one-time admin SQL creates; a gcs:// stage uses it unless told otherwise.
GCS_STORAGE_INTEGRATION = "GITHUB_GCS"
DATASET = "github"  # the landing's dataset folder: the stage root


class ConfigurationError(ValueError):
    """Settings that cannot work: retrying will not help."""


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
    (`with_stage`). `host`/`port`/`protocol` point the connector at a
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


def stage_url(landing: str) -> str:
    """The stage URL over the landing's dataset folder.

    `gs://bucket/prefix` -> `gcs://bucket/prefix/github/`; a local folder (or `file://` URL) ->
    `file:///abs/folder/github/`, which only a stand-in such as fakesnow can read.
    """
    if landing.startswith("gs://"):
        return f"gcs://{landing.removeprefix('gs://').strip('/')}/{DATASET}/"
    if "://" in landing and not landing.startswith("file://"):
        raise ConfigurationError(
            f"no Snowflake stage URL for landing {landing!r}: set PR_ANALYTICS_SNOWFLAKE__STAGE_URL"
        )
    folder = Path(landing.removeprefix("file://")).resolve()
    return f"file://{folder.as_posix().rstrip('/')}/{DATASET}/"


def with_stage(config: SnowflakeConfig | None, landing: str) -> SnowflakeConfig:
    """The Snowflake settings with the stage URL (and, for GCS, the storage integration) derived
    from the landing, unless set: the stage reads exactly what the landing writes."""
    if config is None:
        raise ConfigurationError(
            "warehouse is snowflake but the PR_ANALYTICS_SNOWFLAKE__* settings are missing "
            "(ACCOUNT, USER, PASSWORD or PRIVATE_KEY_PATH, DATABASE)"
        )
    if config.stage_url:
        return config
    url = stage_url(landing)
    if url.startswith("file://") and config.host is None:
        # Snowflake itself cannot read a local folder; only a stand-in at an explicit host can.
        raise ConfigurationError(
            f"Snowflake cannot read the local landing folder {landing}: land on GCS "
            "(PR_ANALYTICS_LANDING_URL=gs://bucket/prefix) or set PR_ANALYTICS_SNOWFLAKE__STAGE_URL"
        )
    update: dict[str, str] = {"stage_url": url}
    if url.startswith("gcs://") and config.storage_integration is None:
        update["storage_integration"] = GCS_STORAGE_INTEGRATION  # a GCS stage needs one
    return config.model_copy(update=update)
