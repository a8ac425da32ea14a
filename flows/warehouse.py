"""Opening the configured warehouse for the merge step.

Snowflake reads the landing through an external stage, whose URL is derived here from the landing
URL (unless `PR_ANALYTICS_SNOWFLAKE__STAGE_URL` overrides it), so the two agree by construction:
dlt lands `{landing}/github/{table}/org=.../date=.../file.parquet` and the stage root is
`{landing}/github/`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from destinations.config import GCS_STORAGE_INTEGRATION, SnowflakeConfig
from destinations.landing import DATASET
from destinations.warehouse import DuckDBWarehouse, SnowflakeWarehouse, Warehouse
from flows.settings import ConfigurationError, Settings


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


def snowflake_config(settings: Settings) -> SnowflakeConfig:
    """The Snowflake settings with the stage URL (and, for GCS, the storage integration) filled in."""
    config = settings.snowflake
    if config is None:
        raise ConfigurationError(
            "warehouse is snowflake but the PR_ANALYTICS_SNOWFLAKE__* settings are missing "
            "(ACCOUNT, USER, PASSWORD or PRIVATE_KEY_PATH, DATABASE)"
        )
    if config.stage_url:
        return config
    url = stage_url(settings.landing)
    if url.startswith("file://") and config.host is None:
        # Snowflake itself cannot read a local folder; only a stand-in at an explicit host can.
        raise ConfigurationError(
            f"Snowflake cannot read the local landing folder {settings.landing}: land on GCS "
            "(PR_ANALYTICS_LANDING_URL=gs://bucket/prefix) or set PR_ANALYTICS_SNOWFLAKE__STAGE_URL"
        )
    update: dict[str, str] = {"stage_url": url}
    if url.startswith("gcs://") and config.storage_integration is None:
        update["storage_integration"] = GCS_STORAGE_INTEGRATION  # a GCS stage needs one
    return config.model_copy(update=update)


@contextmanager
def open_warehouse(settings: Settings) -> Iterator[Warehouse]:
    """The configured warehouse: the embedded DuckDB file, or Snowflake."""
    if settings.warehouse == "snowflake":
        warehouse: Warehouse = SnowflakeWarehouse(snowflake_config(settings))
    else:
        warehouse = DuckDBWarehouse(settings.duckdb_config)
    try:
        yield warehouse
    finally:
        warehouse.close()
