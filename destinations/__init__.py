"""Warehouse step: merge landed Parquet loads into DuckDB (default) or Snowflake."""

from destinations.config import DuckDBConfig, SnowflakeConfig
from destinations.merge import MergeReport, bootstrap, merge_landed_loads
from destinations.warehouse import DuckDBWarehouse, SnowflakeWarehouse, Warehouse

__all__ = [
    "DuckDBConfig",
    "DuckDBWarehouse",
    "MergeReport",
    "SnowflakeConfig",
    "SnowflakeWarehouse",
    "Warehouse",
    "bootstrap",
    "merge_landed_loads",
]
