"""The Prefect flow: per organisation, extract-and-land then merge, as retried tasks.

Organisations run concurrently and fail independently; the flow fails at the end naming the
organisations that failed and why. Every run leaves a Markdown artifact
(`github-analytics-summary`) with rows per table, requests spent, 304s and the rate limit left,
and, after the merges, writes the HTML report (`analytics/`) to DATA_DIR/report.html and publishes
each organisation's headline numbers as a table artifact (`github-analytics-headline`).

The GitHub token comes from a prefect-gcp `GcpSecret` block named by the setting
`github_token_secret_block` (`PR_ANALYTICS_GITHUB_TOKEN_SECRET_BLOCK`), else from the environment
or `.dlt/secrets.toml` (see `flows.credentials.github_auth`). It is read inside the task: it is never a
flow or task parameter, so it reaches neither the Prefect API nor the logs.

Each extract holds one slot of the Prefect global concurrency limit of the credential it spends
(`github-api-token-{fingerprint}`, `github-api-installation-{id}`; see `credential_limit`), so
runs in any process that share a token or an App installation stay within GitHub's limits
together. Local runs and the demo set the setting empty: no limit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import date
from pathlib import Path
from typing import Any

from prefect import allow_failure, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.states import Completed
from prefect.tasks import exponential_backoff

from destinations.merge import MergeReport, bootstrap, merge_landed_loads
from destinations.retention import prune_merged_loads
from destinations.warehouse import open_warehouse
from flows.credentials import github_client, landing_filesystem, with_gcs_blocks
from flows.extract import PERMANENT_ERRNOS, LandingReport, exception_chain, land
from flows.summary import OrgResult, RunSummary
from settings import ConfigurationError, Settings, pipeline_name, unwritable
from sources.github.auth import GitHubAppAuth, GitHubAuth, TokenPool, token_problem
from sources.github.client import GitHubUnreachable
from sources.github.errors import AuthenticationError, GitHubClientError, NotFoundError
from sources.github.source import SyncProgress

logger = logging.getLogger(__name__)

GITHUB_TAG = "github-api"
PARTIAL = "Partial"  # name of the Completed state of a run that left items on the retry list
SUMMARY_ARTIFACT_KEY = "github-analytics-summary"
HEADLINE_ARTIFACT_KEY = "github-analytics-headline"
REPORT_FILE = "report.html"  # in the data dir, rewritten after each run's merges
PROGRESS_EVERY_SECONDS = 10.0
DEFAULT_SLOTS_PER_TOKEN = 4  # GitHub allows 100 concurrent requests; an extract sends up to 16


def _permanent_errors() -> tuple[type[BaseException], ...]:
    """Failures that fail the same way again: a rejected token, a missing organisation, a wrong
    request, bad settings or configuration (ours, pydantic's, dlt's)."""
    from dlt.common.configuration.exceptions import ConfigurationException
    from google.auth.exceptions import DefaultCredentialsError
    from pydantic import ValidationError

    return (
        AuthenticationError,
        NotFoundError,
        GitHubClientError,
        GitHubUnreachable,  # the client already spent its connection budget (docs/deployment.md)
        ConfigurationError,
        ValidationError,
        ConfigurationException,
        DefaultCredentialsError,  # no Google credentials on the worker
        PermissionError,  # no retry grants a permission
        NotADirectoryError,
    )


# A local file a retry cannot make writable (DuckDB's IOException is no OSError).
_NO_WRITE_ACCESS = ("Permission denied", "Read-only file system", "Operation not permitted",
                    "Not a directory", "No space left on device", "Disk quota exceeded")


def _exception_of(state: Any) -> BaseException | None:
    """The exception a failed task state carries (Prefect 3 passes `Failed(data=exc)`)."""
    if isinstance(getattr(state, "data", None), BaseException):
        return state.data
    try:
        outcome = state.result(raise_on_failure=False)
    except BaseException as exc:  # noqa: BLE001 - a result that cannot be read is itself the error
        return exc
    return outcome if isinstance(outcome, BaseException) else None


def is_permanent(exc: BaseException) -> bool:
    """True when `exc`, or anything in its cause/context chain, cannot succeed on a retry."""
    import duckdb

    permanent = _permanent_errors()
    return any(
        isinstance(link, permanent)
        or (isinstance(link, OSError) and link.errno in PERMANENT_ERRNOS)
        or (isinstance(link, duckdb.IOException) and any(text in str(link) for text in _NO_WRITE_ACCESS))
        for link in exception_chain(exc)
    )


def _retryable(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn(task, task_run, state)`: retry I/O faults only."""
    exc = _exception_of(state)
    if exc is None:
        return True
    if is_permanent(exc):
        try:
            log: Any = get_run_logger()
        except Exception:  # noqa: BLE001 - outside a run context
            log = logger
        log.warning("Not retrying %s: %s cannot succeed on a retry", task.name, type(exc).__name__)
        return False
    return True


_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=10),  # 10 s, 20 s, 40 s
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _retryable,
    "cache_policy": NO_CACHE,
}


class OrganisationsFailed(RuntimeError):
    """Raised at the end of a run in which some organisations failed; carries the whole summary."""

    def __init__(self, summary: RunSummary) -> None:
        self.summary = summary
        names = "; ".join(f"{r.org}: {r.error}" for r in summary.failed)
        super().__init__(f"{len(summary.failed)} organisation(s) failed: {names}")


def _credentials_problem(block: str, exc: BaseException) -> ConfigurationError | None:
    """A ConfigurationError naming the block and what the worker lacks, when `exc` is a Google
    credentials error: no retry can make credentials appear on the worker."""
    from google.api_core.exceptions import PermissionDenied, Unauthenticated
    from google.auth.exceptions import DefaultCredentialsError, RefreshError

    if isinstance(exc, DefaultCredentialsError):
        return ConfigurationError(
            f"GcpSecret block {block!r}: its GcpCredentials have no service account and the worker "
            "has no Google application default credentials: give the block a service account "
            "(service_account_info), or set GOOGLE_APPLICATION_CREDENTIALS for the worker "
            "(docs/deployment.md, \"The GitHub token\")"
        )
    if isinstance(exc, (RefreshError, Unauthenticated, PermissionDenied)):
        return ConfigurationError(
            f"GcpSecret block {block!r}: Google refused the credentials ({type(exc).__name__}): the "
            "account needs roles/secretmanager.secretAccessor on the secret"
        )
    return None


def read_github_token(settings: Settings) -> str | None:
    """The token from a prefect-gcp GcpSecret block, when one is named in the settings."""
    block = settings.github_token_secret_block
    if not block:
        return None
    from prefect_gcp.secret_manager import GcpSecret

    failure: ConfigurationError | None = None
    try:
        raw = GcpSecret.load(block).read_secret()
    except ValueError as exc:  # no such block: a configuration error, not worth a retry
        failure = ConfigurationError(f"GcpSecret block {block!r} cannot be loaded: {exc}")
    except Exception as exc:  # noqa: BLE001 - credentials errors are permanent, others retried
        failure = _credentials_problem(block, exc)
        if failure is None:
            raise
    if failure is not None:
        raise failure  # outside `except`: one line, without Google's traceback
    token = raw.decode("utf-8", "replace").strip()
    problem = token_problem(token)
    if problem == "is empty":
        raise ConfigurationError(
            f"GcpSecret block {settings.github_token_secret_block!r} holds an empty secret"
        )
    if problem:
        raise ConfigurationError(f"GcpSecret block {settings.github_token_secret_block!r}: the token {problem}")
    return token


def _progress_logger(org: str, log: Any, client_stats: Any) -> Any:
    """Log repositories done / total, rows and requests: the first, the last, and every 10 s."""
    last = [0.0]

    def report(p: SyncProgress) -> None:
        now = time.monotonic()
        finished = p.repositories_total and p.repositories_done >= p.repositories_total
        if not finished and p.repositories_done > 1 and now - last[0] < PROGRESS_EVERY_SECONDS:
            return
        last[0] = now
        rows_text = f", {sum(p.rows.values())} rows" if p.rows else ""
        log.info(
            "%s: %d/%d repositories done (%d unchanged)%s, %d requests",
            org, p.repositories_done, p.repositories_total, p.repositories_unchanged,
            rows_text, client_stats().requests,
        )

    return report


def _described(auth: GitHubAuth) -> str:
    if isinstance(auth, GitHubAppAuth):
        return f"the GitHub App {auth.app_id}'s installation {auth.installation_id}" + (f" on {auth.org}" if auth.org else "")
    assert isinstance(auth, TokenPool)
    return f"{len(auth)} token(s) from {auth.source}" if len(auth) else "anonymous requests"


def credential_limit(shared: str, auth: GitHubAuth) -> str:
    """The global concurrency limit of the credential an extract spends, by name (never a
    secret's value): `{shared}-{budget}`, e.g. `github-api-token-1f2e3d4c5b6a` or
    `github-api-installation-42`. Every run and process spending that budget takes slots of the
    same limit, and runs with other credentials never queue for them. Created when missing with
    the `shared` limit's slots (4 without one) per token."""
    name = f"{shared}-{auth.budget_name()}"
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    slots = client.read_global_concurrency_limit_by_name(shared).limit
                except ObjectNotFound:
                    slots = DEFAULT_SLOTS_PER_TOKEN
                slots *= max(1, len(auth.credentials()))
                client.upsert_global_concurrency_limit_by_name(name, slots)
                get_run_logger().info("created the concurrency limit %s (%d slots) for %s", name, slots,
                                      _described(auth))
    except Exception as exc:  # noqa: BLE001 - the limit is a courtesy: the run goes on without it
        get_run_logger().warning("could not read or create the concurrency limit %s: %s", name, exc)
    return name


@task(name="extract-and-land", task_run_name="extract-and-land-{org}", tags=[GITHUB_TAG], **_RETRIES)
def extract_and_land(settings: Settings, org: str, full_refresh: bool = False, retry_now: bool = False) -> LandingReport:
    log = get_run_logger()
    token = read_github_token(settings)
    with github_client(settings, token=token, org=org) as client:
        progress = SyncProgress(on_repository_done=_progress_logger(org, log, lambda: client.stats))
        # One slot of its credential's limit per extract, across all runs and processes.
        limit = settings.github_concurrency_limit
        if limit:
            limit = credential_limit(limit, client.auth)
        with concurrency(limit, occupy=1, strict=False) if limit else nullcontext():
            report = land(settings, org, client, progress, full_refresh=full_refresh, retry_now=retry_now)
    log.info(
        "%s: landed %s with %d requests (%d answered 304, %s left in the rate limit)",
        org, report.rows, report.requests.requests, report.requests.not_modified,
        report.rate_limit_remaining,
    )
    return report


@task(name="bootstrap-warehouse", task_run_name="bootstrap-warehouse", **_RETRIES)
def bootstrap_warehouse(settings: Settings, pipeline_names: list[str]) -> list[str]:
    """Create the warehouse objects of every organisation once, before the merges fan out:
    concurrent CREATE ... IF NOT EXISTS of the same objects conflict on DuckDB."""
    with open_warehouse(settings.warehouse_config) as warehouse:
        return bootstrap(warehouse, pipeline_names, settings.working_calendars)


@task(name="merge", task_run_name="merge-{org}", **_RETRIES)
def merge(settings: Settings, org: str, pipeline_name: str) -> MergeReport:
    with open_warehouse(settings.warehouse_config) as warehouse:
        report = merge_landed_loads(
            warehouse, settings.landing, org, pipeline_name, fs=landing_filesystem(settings),
            bootstrap_first=False,  # bootstrap_warehouse did, once for the run
        )
        if settings.landing_retention_days is not None:
            try:
                prune_merged_loads(warehouse, settings.landing, pipeline_name, settings.landing_retention_days,
                                   fs=landing_filesystem(settings))
            except Exception as exc:  # noqa: BLE001 - housekeeping after a committed merge
                get_run_logger().warning("%s: retention did not run (%s: %s); the next merge tries again",
                                         org, type(exc).__name__, exc)
    get_run_logger().info(
        "%s: merged %d load(s) into %s: %s",
        org, len(report.loads_merged), report.warehouse, report.rows_merged,
    )
    return report


OUR_LOGGERS = ("sources", "destinations", "flows")


class _ToThisFlowRun(logging.Filter):
    """Gives a record logged outside any Prefect run context (a thread of dlt's extract pool) the
    id of the flow run: Prefect's API handler drops such records, the console alone showed them."""

    def __init__(self, flow_run_id: Any) -> None:
        super().__init__()
        self.flow_run_id = flow_run_id

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.context import FlowRunContext, TaskRunContext

        if getattr(record, "flow_run_id", None) is None and not (FlowRunContext.get() or TaskRunContext.get()):
            record.flow_run_id = self.flow_run_id
        return True


@contextmanager
def logs_reach_the_flow_run() -> Iterator[None]:
    """While the flow runs, our INFO lines and those of dlt's threads reach its Prefect logs.

    Under a worker the root logger is at WARNING, which silenced the INFO lines of `sources` and
    `destinations` ("acme: 3 repositories", "merged load ..."): they get INFO unless configured
    otherwise (the CLI's root logger is already at INFO, or DEBUG with -v)."""
    from prefect.context import FlowRunContext
    from prefect.logging.handlers import APILogHandler

    for name in OUR_LOGGERS:
        named = logging.getLogger(name)
        if named.level == logging.NOTSET and named.getEffectiveLevel() > logging.INFO:
            named.setLevel(logging.INFO)
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        yield
        return
    route = _ToThisFlowRun(context.flow_run.id)
    handlers = {
        handler
        for name in ("prefect.extra", "dlt", *OUR_LOGGERS)
        for handler in logging.getLogger(name).handlers
        if isinstance(handler, APILogHandler)
    }
    for handler in handlers:
        handler.addFilter(route)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(route)


def publish_summary(summary: RunSummary) -> None:
    """The run's Markdown artifact; a failure to publish it never fails the run."""
    from prefect.artifacts import create_markdown_artifact

    from flows.summary import render_summary

    try:
        create_markdown_artifact(
            markdown=render_summary(summary),
            key=SUMMARY_ARTIFACT_KEY,
            description="Rows landed and merged per organisation and table, GitHub requests spent",
        )
    except Exception:  # noqa: BLE001
        get_run_logger().warning("Could not publish the run summary artifact", exc_info=True)


def publish_report(settings: Settings, summary: RunSummary) -> Path | None:
    """Write the HTML report of the organisations this run synced into the data dir, and
    publish their headline numbers as a table artifact; its path, or None. An organisation that
    failed gets no section (a missing one would show an empty page); when none synced, the last
    report stays as it was. Never fails the run."""
    orgs = [result.org for result in summary.results if result.merge is not None and result.error is None]
    if not orgs:
        return None
    log = get_run_logger()
    try:
        from analytics.build import headline_rows, write_report

        written = write_report(settings.warehouse_config, settings.data_dir / REPORT_FILE, orgs)
    except Exception as exc:  # noqa: BLE001 - the data is merged; a report is a bonus
        log.warning("The report was not written: %s: %s", type(exc).__name__, exc)
        return None
    try:
        from prefect.artifacts import create_table_artifact

        create_table_artifact(
            table=headline_rows(written.reports),
            key=HEADLINE_ARTIFACT_KEY,
            description=f"Headline pull-request metrics per organisation; the report: {written.path.resolve()}",
        )
    except Exception:  # noqa: BLE001
        log.warning("Could not publish the headline metrics artifact", exc_info=True)
    return written.path


@flow(name="github-analytics", log_prints=False)
def github_analytics(
    orgs: list[str] | None = None,
    since: date | None = None,
    full_refresh: bool = False,
    github_url: str | None = None,
    data_dir: Path | None = None,
    retry_now: bool = False,
) -> Any:
    """Land and merge each organisation's pull requests, reviews, files and timeline events.

    orgs: organisation logins (default: the setting `orgs`, env PR_ANALYTICS_ORGS or .env).
    since: the first backfill reaches back only to this date.
    full_refresh: ignore saved cursors and ETags and read everything again.
    retry_now: every repository and pull request on the retry list is due in this run, whatever
    its backoff (after fixing what made it fail).
    github_url: API base URL (GitHub Enterprise: https://HOST/api/v3). data_dir: landing,
    warehouse and dlt pipelines (default ./data). Credentials are never parameters.

    Returns the RunSummary; a run that left a repository or pull request on the retry list ends
    in a Completed state named "Partial" whose message names them.
    """
    with logs_reach_the_flow_run():
        return _run(orgs, since, full_refresh, github_url, data_dir, retry_now)


def _run(
    orgs: list[str] | None,
    since: date | None,
    full_refresh: bool,
    github_url: str | None,
    data_dir: Path | None,
    retry_now: bool = False,
) -> Any:
    """The body of `github_analytics`."""
    overrides: dict[str, Any] = {}
    if orgs:
        overrides["orgs"] = orgs
    if since:
        overrides["since"] = since
    if github_url:
        overrides["github_url"] = github_url
    if data_dir:
        overrides["data_dir"] = data_dir
    settings = with_gcs_blocks(Settings(**overrides))
    if not settings.orgs:
        raise ConfigurationError("no organisation given: pass `orgs` or set PR_ANALYTICS_ORGS")
    problem = unwritable(settings)  # on a worker too: one line, before any task
    if problem:
        raise ConfigurationError(problem)

    summary = RunSummary()
    landings = {org: extract_and_land.submit(settings, org, full_refresh, retry_now) for org in settings.orgs}
    bootstrapped = bootstrap_warehouse.submit(settings, [pipeline_name(org) for org in settings.orgs])
    merges = {
        org: merge.submit(settings, org, pipeline_name(org), wait_for=[allow_failure(landed), bootstrapped])
        for org, landed in landings.items()
    }
    try:
        bootstrapped.result()
        not_bootstrapped = None
    except Exception as exc:  # the merges did not run: say why, not that they never finished
        not_bootstrapped = f"merge not run, the warehouse bootstrap failed: {type(exc).__name__}: {exc}"
    for org in settings.orgs:
        result = OrgResult(org)
        try:
            result.landing = landings[org].result()
        except Exception as exc:  # one organisation failing does not stop the others
            result.error = f"extract-and-land failed: {type(exc).__name__}: {exc}"
        # Merge even after a failed landing: earlier loads that landed are still merged.
        try:
            result.merge = merges[org].result()
        except Exception as exc:
            result.error = result.error or not_bootstrapped or f"merge failed: {type(exc).__name__}: {exc}"
        summary.results.append(result)
    summary.report_path = publish_report(settings, summary)
    publish_summary(summary)
    if summary.failed:
        raise OrganisationsFailed(summary)
    if summary.partial:
        message = summary.partial_message()
        get_run_logger().warning(message)
        return Completed(name=PARTIAL, message=message, data=summary)
    return summary
