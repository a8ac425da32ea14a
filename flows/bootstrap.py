"""Create the warehouse objects once: `python flows/bootstrap.py [--org ORG ...] [--print-admin-sql | --print-sql]`.

Settings come from the environment (`PR_ANALYTICS_WAREHOUSE=snowflake`,
`PR_ANALYTICS_SNOWFLAKE__ACCOUNT`, ..., `PR_ANALYTICS_LANDING_URL=gs://bucket/prefix`) or `.env`.
Idempotent: every table and the stage are created `IF NOT EXISTS` (a declared column an existing
table lacks is added), the metric views `CREATE OR REPLACE`d; running it again changes nothing. The merge
step bootstraps by itself too, so this is for checking a setup before the first run.

`--print-admin-sql` prints the one-time SQL an account administrator runs first (storage
integration, role, grants, service user), with the bucket taken from the landing URL. It needs no
connection.

`--print-sql` prints, without connecting, every statement the Snowflake path runs: session
settings, bootstrap, the column added when the source sends a new one, and the merge of one load,
for the given organisations (default PR_ANALYTICS_ORGS, else an example `my-org`).
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from destinations import sql
from destinations.config import GCS_STORAGE_INTEGRATION, SnowflakeConfig, stage_url, with_stage
from destinations.merge import bootstrap
from destinations.script import snowflake_script
from destinations.warehouse import Warehouse, open_warehouse
from settings import ConfigurationError, Settings, pipeline_name

EXAMPLE_ORG = "my-org"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--org", dest="orgs", action="append", default=[], metavar="ORG",
        help="also create this organisation's stage tables (repeatable; default PR_ANALYTICS_ORGS)",
    )
    parser.add_argument(
        "--print-admin-sql", action="store_true",
        help="print the one-time Snowflake admin SQL for this landing and exit (no connection)",
    )
    parser.add_argument(
        "--print-sql", action="store_true",
        help="print every statement the Snowflake path runs, with placeholders, and exit (no connection)",
    )
    return parser.parse_args(argv)


def admin_sql(settings: Settings) -> str:
    """The admin SQL with the stage URL, integration, database, warehouse and user of the settings."""
    if settings.snowflake is None:  # names stay placeholders; the stage URL is the landing's
        return sql.snowflake_admin_sql(stage_url(settings.landing))
    config = with_stage(settings.snowflake, settings.landing)
    names = {"database": config.database, "user": config.user}
    if config.warehouse:
        names["warehouse"] = config.warehouse
    if config.role:
        names["role"] = config.role
    if config.storage_integration:
        names["integration"] = config.storage_integration
    return sql.snowflake_admin_sql(config.stage_url or "", **names)


def warehouse_sql(settings: Settings) -> str:
    """The Snowflake script for the settings' names (placeholders where no Snowflake is configured)."""
    if settings.snowflake is None:
        url = stage_url(settings.landing)
        integration = GCS_STORAGE_INTEGRATION if url.startswith("gcs://") else None
        config = SnowflakeConfig(
            account="<account>", user="<user>", database="<database>", stage_url=url, storage_integration=integration
        )
    else:
        config = with_stage(settings.snowflake, settings.landing)
    orgs = settings.orgs or [EXAMPLE_ORG]
    return snowflake_script(config, {org: pipeline_name(org) for org in orgs})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings(orgs=args.orgs) if args.orgs else Settings()
        if args.print_admin_sql:
            print(admin_sql(settings), end="")
            return 0
        if args.print_sql:
            print(warehouse_sql(settings), end="")
            return 0
        names = [pipeline_name(org) for org in settings.orgs]
        with open_warehouse(settings.warehouse_config) as warehouse:
            before = _tables(warehouse)
            ensured = bootstrap(warehouse, names, settings.working_calendars)
            created = sorted(_tables(warehouse) - before)
            location = warehouse.location()
    except (ConfigurationError, ValidationError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"bootstrap of {location}" + (f" for {', '.join(names)}" if names else ""))
    for line in ensured:
        print(f"  ensured {line}")
    print(f"created {len(created)} table(s)" + (f": {', '.join(created)}" if created else " (all existed)"))
    return 0


def _tables(warehouse: Warehouse) -> set[str]:
    rows = warehouse.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ? AND table_type = 'BASE TABLE'",
        [sql.fold(warehouse.schema_name, warehouse.dialect)],
    )
    return {str(row[0]) for row in rows}


if __name__ == "__main__":
    sys.exit(main())
