"""The Prefect flow: per organisation, extract-and-land then merge, as retried tasks.

Organisations run concurrently and fail independently; the flow fails at the end naming the
organisations that failed and why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from prefect import allow_failure, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from destinations.merge import MergeReport, merge_landed_loads
from flows.landing import LandingReport, github_client, land, landing_filesystem
from flows.settings import ConfigurationError, Settings, pipeline_name
from flows.warehouse import open_warehouse
from sources.github.errors import AuthenticationError
from sources.github.source import SyncProgress

logger = logging.getLogger(__name__)

GITHUB_TAG = "github-api"


def _retryable(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O faults; not a bad token or bad configuration, which fail the same way again."""
    try:
        state.result()
    except (AuthenticationError, ConfigurationError, ValueError):
        return False
    except Exception:
        return True
    return False


_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=10),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _retryable,
    "cache_policy": NO_CACHE,
}


@dataclass
class OrgResult:
    org: str
    landing: LandingReport | None = None
    merge: MergeReport | None = None
    error: str | None = None


@dataclass
class RunSummary:
    results: list[OrgResult] = field(default_factory=list)

    @property
    def failed(self) -> list[OrgResult]:
        return [result for result in self.results if result.error]


class OrganisationsFailed(RuntimeError):
    """Raised at the end of a run in which some organisations failed; carries the whole summary."""

    def __init__(self, summary: RunSummary) -> None:
        self.summary = summary
        names = "; ".join(f"{r.org}: {r.error}" for r in summary.failed)
        super().__init__(f"{len(summary.failed)} organisation(s) failed: {names}")


def read_github_token(settings: Settings) -> str | None:
    """The token from a prefect-gcp GcpSecret block, when one is named in the settings."""
    if not settings.github_token_secret_block:
        return None
    from prefect_gcp.secret_manager import GcpSecret

    secret = GcpSecret.load(settings.github_token_secret_block)
    return secret.read_secret().decode("utf-8").strip()


@task(name="extract-and-land", tags=[GITHUB_TAG], **_RETRIES)
def extract_and_land(settings: Settings, org: str, full_refresh: bool = False) -> LandingReport:
    log = get_run_logger()
    progress = SyncProgress(
        on_repository_done=lambda p: log.info(
            "%s: %d/%d repositories done (%d unchanged)",
            org, p.repositories_done, p.repositories_total, p.repositories_unchanged,
        )
    )
    with github_client(settings, token=read_github_token(settings)) as client:
        report = land(settings, org, client, progress, full_refresh=full_refresh)
    log.info(
        "%s: landed %s with %d requests (%d answered 304)",
        org, report.rows, report.requests.requests, report.requests.not_modified,
    )
    return report


@task(name="merge", **_RETRIES)
def merge(settings: Settings, org: str, pipeline_name: str) -> MergeReport:
    with open_warehouse(settings) as warehouse:
        report = merge_landed_loads(
            warehouse, settings.landing, org, pipeline_name, fs=landing_filesystem(settings)
        )
    get_run_logger().info("%s: merged %s", org, report)
    return report


@flow(name="github-analytics", log_prints=False)
def github_analytics(
    orgs: list[str],
    since: date | None = None,
    full_refresh: bool = False,
    github_url: str | None = None,
    data_dir: Path | None = None,
) -> RunSummary:
    """Land and merge each organisation's pull requests, reviews and files."""
    overrides: dict[str, Any] = {"orgs": orgs}
    if since:
        overrides["since"] = since
    if github_url:
        overrides["github_url"] = github_url
    if data_dir:
        overrides["data_dir"] = data_dir
    settings = Settings(**overrides)
    if not settings.orgs:
        raise ConfigurationError("no organisation given")

    summary = RunSummary()
    landings = {org: extract_and_land.submit(settings, org, full_refresh) for org in settings.orgs}
    merges = {
        org: merge.submit(settings, org, pipeline_name(org), wait_for=[allow_failure(landed)])
        for org, landed in landings.items()
    }
    for org in settings.orgs:
        result = OrgResult(org)
        try:
            result.landing = landings[org].result()
        except Exception as exc:  # one organisation failing does not stop the others
            result.error = f"extract-and-land failed: {exc}"
        # Merge even after a failed landing: earlier loads that landed are still merged.
        try:
            result.merge = merges[org].result()
        except Exception as exc:
            result.error = result.error or f"merge failed: {exc}"
        summary.results.append(result)
    if summary.failed:
        raise OrganisationsFailed(summary)
    return summary
