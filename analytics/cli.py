"""`./dev report [--org X] [--weeks 26] [--out FILE] [--data-dir DIR]`: write the HTML report.

Reads the warehouse the merge writes (DuckDB by default, Snowflake with the same settings:
`PR_ANALYTICS_WAREHOUSE`, `PR_ANALYTICS_SNOWFLAKE__*`). Exit codes: 0 written, 1 nothing to
report (no warehouse, no views, no data for an organisation), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--org", dest="orgs", action="append", default=[], help="organisation (repeatable; default: PR_ANALYTICS_ORGS, else every organisation in the warehouse)")
    parser.add_argument("--weeks", type=int, default=26, help="weeks in the period (default 26), compared with the same length before")
    parser.add_argument("--out", type=Path, help="HTML file to write (default DATA_DIR/report.html)")
    parser.add_argument("--data-dir", type=Path, help="where the DuckDB warehouse is (default ./data)")
    args = parser.parse_args(argv)
    if args.weeks < 1:
        parser.error("--weeks must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from analytics.build import write_report
    from analytics.queries import ReportError
    from settings import Settings, one_line

    try:
        settings = Settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
        orgs = args.orgs or settings.orgs
        out = args.out or settings.data_dir / "report.html"
        written = write_report(settings.warehouse_config, out, orgs, args.weeks)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # settings, an organisation that is no login
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a person gets one line, not a traceback
        logging.getLogger("analytics.cli").debug("report failed", exc_info=True)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for report in written.reports:
        if report.empty:
            print(f"note: {report.empty}", file=sys.stderr)
    print(written.path.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
