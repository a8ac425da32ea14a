"""Run the pipeline locally: `python flows/run.py --org ORG [--org ORG2] ...`.

`--demo` starts the bundled GitHub emulator on a free localhost port and runs the whole pipeline
against it: no account, no token, no internet.

Exit codes: 0 success, 1 failure, 2 bad arguments, 3 partial success (some repository or pull
request could not be synced and is retried on later runs; the summary names them).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from datetime import date, datetime, timezone
from pathlib import Path

DEMO_ORGS = {"demo": 3, "demo-labs": 2}
EXIT_PARTIAL = 3  # landed, but some repository or pull request is on the retry list


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--org", dest="orgs", action="append", default=[], help="organisation login (repeatable; default PR_ANALYTICS_ORGS)")
    parser.add_argument("--github-url", help="API base URL (GitHub Enterprise: https://HOST/api/v3); env GITHUB_API_URL")
    parser.add_argument("--data-dir", type=Path, help="landing folder, warehouse and dlt pipelines (default ./data)")
    parser.add_argument("--since", type=date.fromisoformat, help="first backfill only reaches back to this date (YYYY-MM-DD)")
    parser.add_argument("--full-refresh", action="store_true",
                        help="ignore saved cursors and ETags: re-read everything (in chunks; a refresh stopped "
                             "halfway is finished by the next run)")
    parser.add_argument("--retry-now", action="store_true",
                        help="retry every repository and pull request on the retry list in this run, whatever its backoff")
    parser.add_argument("--demo", action="store_true", help="run against the bundled GitHub emulator")
    parser.add_argument("--demo-latency", type=float, default=0.0, help="emulator latency per request, seconds")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every request, and print a failure's traceback here too (it is always in "
                             "DATA_DIR/logs/)")
    return parser.parse_args(argv)


def check_arguments(args: argparse.Namespace) -> str | None:
    """The problem with the arguments and settings, as one line, or None: found before Prefect
    starts (seconds), not by a flow run that fails after its retries."""
    from sources.github.names import normalise_org  # cheap: a bad login is refused at once

    for org in args.orgs:
        try:
            normalise_org(org)
        except ValueError as exc:
            return str(exc)
    from settings import Settings, one_line, unwritable

    overrides: dict[str, object] = {"orgs": args.orgs} if args.orgs else {}
    for name in ("github_url", "data_dir", "since"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    try:
        settings = Settings(**overrides)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        return one_line(exc)
    if not (settings.orgs or args.demo):
        return "give at least one --org (or --demo, or PR_ANALYTICS_ORGS)"
    unknown = [org for org in args.orgs if args.demo and normalise_org(org) not in DEMO_ORGS]
    if unknown:
        return f"the demo serves {' and '.join(DEMO_ORGS)}, not {', '.join(unknown)}"
    return unwritable(settings)


def start_prefect() -> Callable[[], None]:
    """Find or start the Prefect API this run reports to; returns `wait()`, to call before the flow.

    With PREFECT_API_URL (environment or profile) nothing changes: that server is used. Without
    it, Prefect would start a temporary server for this run alone (10-18 s on 2 cores). Instead
    a local server kept for PR_ANALYTICS_PREFECT_SERVER_IDLE_MINUTES (default 30; 0 keeps
    Prefect's temporary server) is reused, or started now, so that it comes up while this process
    imports the pipeline; `wait()` then points Prefect at it, as PREFECT_API_URL would.
    """
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    idle_minutes = float(os.environ.get("PR_ANALYTICS_PREFECT_SERVER_IDLE_MINUTES") or 30)
    if settings.api.url or not settings.server.ephemeral.enabled or idle_minutes <= 0:
        return lambda: None
    # A local run is one process: its extracts take no slot of their credential's global
    # concurrency limit (deployments do, see docs/deployment.md), and no limit is created.
    os.environ.setdefault("PR_ANALYTICS_GITHUB_CONCURRENCY_LIMIT", "")
    from flows.prefect_server import running_server, start_server, wait_until_healthy

    log = logging.getLogger("flows.run")
    api_url = running_server(settings.home)
    process = None
    if api_url is None:
        api_url, process = start_server(settings.home, idle_seconds=int(idle_minutes * 60))
        log.info("Starting a local Prefect server at %s (stops after %g idle minutes)", api_url, idle_minutes)
    else:
        log.info("Using the local Prefect server at %s", api_url)
    # Measured up to 25 s on 2 busy cores: more than Prefect's default of 20 s.
    timeout = max(settings.server.ephemeral.startup_timeout_seconds, 60)

    def wait() -> None:
        if process is not None:
            wait_until_healthy(api_url, process, timeout)
        os.environ["PREFECT_API_URL"] = api_url
        os.environ["PREFECT_UI_URL"] = ""  # it serves no UI: Prefect's "View at" link would be dead
        refresh_global_settings_context()

    return wait


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOGS_KEPT = 20  # run logs kept in DATA_DIR/logs, newest first


class OneLine(logging.Formatter):
    """A log line without the traceback that may come with it (it goes to the log file)."""

    def format(self, record: logging.LogRecord) -> str:
        bare = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None})
        return super().format(bare)


def configure_logging(data_dir: Path, verbose: bool) -> Path | None:
    """Log lines to the terminal, one line each (tracebacks too with -v), and everything, with
    tracebacks, to DATA_DIR/logs/run-<UTC time>.log; the oldest logs beyond LOGS_KEPT go.
    Returns the log file (None when it cannot be written: the terminal still gets every line)."""
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter(LOG_FORMAT) if verbose else OneLine(LOG_FORMAT))
    handlers: list[logging.Handler] = [console]
    folder = data_dir / "logs"
    path: Path | None = folder / f"run-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(path, encoding="utf-8")
        to_file.setFormatter(logging.Formatter(LOG_FORMAT))
        handlers.append(to_file)
        for old in sorted(folder.glob("run-*.log"), reverse=True)[LOGS_KEPT:]:
            old.unlink(missing_ok=True)
    except OSError:
        path = None
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=handlers, force=True)
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = check_arguments(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from settings import Settings

    data_dir = args.data_dir if args.data_dir is not None else Settings().data_dir
    log_file = configure_logging(data_dir, args.verbose)
    details = f"\ndetails: {log_file}" if log_file and not args.verbose else ""
    # Our loggers and dlt's in Prefect's run logs; request-by-request chatter only with -v.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "dlt,sources,destinations,flows")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    if not args.verbose:
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ.setdefault("RUNTIME__LOG_FORMAT", "{message}")  # one format per line: Prefect's
    wait_for_prefect = start_prefect()  # before the pipeline's imports: a new server starts meanwhile

    from flows.github_analytics import PARTIAL, OrganisationsFailed, github_analytics
    from flows.summary import RunSummary, render_summary

    with ExitStack() as stack:
        github_url = args.github_url
        orgs = args.orgs
        if args.demo:
            from emulator import Dataset, GitHubEmulator

            dataset = Dataset.generate(orgs=DEMO_ORGS, prs_per_repo=[120, 30, 45], seed=7)
            emulator = stack.enter_context(GitHubEmulator(dataset, latency=args.demo_latency))
            emulator.graphql.org_readers = {"demo-token"}  # a token with read:org: teams, team slugs
            github_url = emulator.url
            orgs = orgs or list(DEMO_ORGS)
            # The emulator accepts any token; never send it a real one, and no shared
            # concurrency limit is needed for a local run.
            os.environ.pop("GITHUB_TOKENS", None)
            os.environ["GITHUB_TOKEN"] = "demo-token"
            os.environ["PR_ANALYTICS_GITHUB_CONCURRENCY_LIMIT"] = ""
            logging.getLogger("flows.run").info("GitHub emulator serving %s at %s", ", ".join(DEMO_ORGS), github_url)
        if not orgs:
            from settings import Settings

            orgs = Settings().orgs  # PR_ANALYTICS_ORGS or .env, checked above
        wait_for_prefect()
        state = github_analytics(
            orgs=orgs,
            since=args.since,
            full_refresh=args.full_refresh,
            retry_now=args.retry_now,
            github_url=github_url,
            data_dir=args.data_dir,
            return_state=True,
        )
        outcome = state.result(raise_on_failure=False)
    summary = outcome.summary if isinstance(outcome, OrganisationsFailed) else outcome
    report_line = ""
    if os.environ.get("PREFECT_UI_URL") == "" and state.state_details.flow_run_id:
        # The local server has no UI: the command that shows this run instead of a dead link.
        report_line += (f"\nPrefect run: PREFECT_API_URL={os.environ['PREFECT_API_URL']} .venv/bin/prefect "
                        f"flow-run inspect {state.state_details.flow_run_id}")
    if isinstance(summary, RunSummary) and summary.report_path is not None:
        # Last on the screen: what a person opens next.
        report_line += f"\nReport: {summary.report_path.resolve()}"
    if state.name == PARTIAL:
        print(render_summary(outcome) + report_line)
        print(f"\nPARTIAL: {state.message}{details}", file=sys.stderr)
        return EXIT_PARTIAL
    if isinstance(outcome, OrganisationsFailed):
        print(render_summary(outcome.summary) + report_line)
        print(f"\nFAILED: {outcome}{details}", file=sys.stderr)
        return 1
    if isinstance(outcome, BaseException):
        print(f"\nFAILED: {type(outcome).__name__}: {outcome}{details}", file=sys.stderr)
        return 1
    print(render_summary(outcome) + report_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
