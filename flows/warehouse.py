"""Opening the configured warehouse for the merge step."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from destinations.warehouse import DuckDBWarehouse, SnowflakeWarehouse, Warehouse
from flows.settings import ConfigurationError, Settings


@contextmanager
def open_warehouse(settings: Settings) -> Iterator[Warehouse]:
    """The configured warehouse: the embedded DuckDB file, or Snowflake."""
    if settings.warehouse == "snowflake":
        if settings.snowflake is None:
            raise ConfigurationError(
                "warehouse is snowflake but PR_ANALYTICS_SNOWFLAKE__* settings are missing"
            )
        warehouse: Warehouse = SnowflakeWarehouse(settings.snowflake)
    else:
        warehouse = DuckDBWarehouse(settings.duckdb_config)
    try:
        yield warehouse
    finally:
        warehouse.close()
