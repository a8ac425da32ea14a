"""Extract-and-land: the dlt source written as Parquet by dlt's filesystem destination, in chunks.

One dlt pipeline per organisation, working in `<data_dir>/pipelines`, so its state (cursors,
ETags) is separate per organisation and `dlt pipeline --pipelines-dir data/pipelines github_<org>
info` shows it.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dlt
from dlt.common.configuration.specs import GcpServiceAccountCredentials
from dlt.common.configuration.specs.gcp_credentials import GcpDefaultCredentials
from dlt.pipeline.exceptions import PipelineStepFailed

from destinations.handoff import Handoff
from destinations.landing import DATASET, LAYOUT, Landing
from flows.credentials import gcs_emulator_options, landing_filesystem, service_account_json
from settings import ConfigurationError, Settings, pipeline_name
from sources.github.names import normalise_org
from sources.github.client import GitHubClient, RequestStats
from sources.github.errors import GitHubError
from sources.github.graphql import graphql_url
from sources.github.schema import (
    PULL_REQUEST_EVENTS,
    PULL_REQUEST_FILES,
    PULL_REQUEST_REVIEWS,
    PULL_REQUESTS,
    TEAM_MEMBERS,
    TEAMS,
)
from sources.github.source import SyncContext, SyncProgress, github_source
from sources.github.state import iso

logger = logging.getLogger(__name__)

# The tables reported per run (pull_request_child_fetches is the merge's bookkeeping).
DATA_TABLES = (PULL_REQUESTS.name, PULL_REQUEST_REVIEWS.name, PULL_REQUEST_FILES.name, PULL_REQUEST_EVENTS.name,
               TEAMS.name, TEAM_MEMBERS.name)


@dataclass
class LandingReport:
    org: str
    pipeline_name: str
    load_ids: list[str]
    rows: dict[str, int]
    requests: RequestStats
    progress: SyncProgress
    landing_url: str
    pipelines_dir: str
    rate_limit_remaining: int | None = None  # the client's last known budget after the extract
    credentials: list[str] = field(default_factory=list)  # what spent it: "token-1", "app-installation-42"
    loads_refetched: list[str] = field(default_factory=list)  # set aside by the merge; fetched again


# dlt keeps each pipeline's last 100 state files in one folder all organisations share, and lists
# the whole folder at the start of every run to restore the newest: 3 a pipeline keep that listing
# small in a fleet (only the newest is ever read).
STATE_FILES_KEPT = 3


def filesystem_destination(settings: Settings, org: str) -> Any:
    """dlt's filesystem destination at the landing URL: a local folder or `gs://bucket/prefix`."""
    options: dict[str, Any] = {}
    if settings.landing.startswith("gs://"):
        if settings.gcs_endpoint_url:
            # dlt insists on resolving GCP credentials, and resolved ones override `kwargs`:
            # anonymous "default" credentials resolve and leave the emulator's kwargs in charge.
            from google.auth.credentials import AnonymousCredentials

            credentials = GcpDefaultCredentials()
            credentials.project_id = settings.gcs_project or "test"
            credentials.parse_native_representation(AnonymousCredentials())
            options["credentials"] = credentials
            options["kwargs"] = gcs_emulator_options(settings)
        elif account := service_account_json(settings):
            credentials = GcpServiceAccountCredentials()
            credentials.parse_native_representation(account)
            options["credentials"] = credentials
        # else: application default credentials, resolved by gcsfs.
    return dlt.destinations.filesystem(
        bucket_url=settings.landing,
        layout=LAYOUT,
        extra_placeholders={"org": org},
        max_state_files=STATE_FILES_KEPT,
        **options,
    )


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and its causes/contexts, each once (dlt wraps what a resource raised)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        yield current
        seen.add(id(current))
        current = current.__cause__ or current.__context__


def _github_error(exc: BaseException) -> GitHubError | None:
    return next((link for link in exception_chain(exc) if isinstance(link, GitHubError)), None)


# Local file errors that fail every attempt the same way: a retry grants no permission, makes
# no file system writable, turns no file into a folder and frees no disk.
_LOCAL_PERMANENT = (PermissionError, NotADirectoryError, IsADirectoryError)
PERMANENT_ERRNOS = {errno.EROFS, errno.EPERM, errno.EACCES, errno.ENOTDIR, errno.EISDIR,
                     errno.ENAMETOOLONG, errno.ELOOP, errno.ENOSPC, errno.EDQUOT}


def local_file_problem(exc: BaseException) -> ConfigurationError | None:
    """A ConfigurationError naming the path and the cause when `exc` (or its chain) is a local
    file error no retry can fix: no permission, a read-only file system, a file for a folder,
    a full disk."""
    for link in exception_chain(exc):
        if isinstance(link, _LOCAL_PERMANENT) or (isinstance(link, OSError) and link.errno in PERMANENT_ERRNOS):
            assert isinstance(link, OSError)
            where = link.filename if link.filename is not None else "a local path"
            return ConfigurationError(f"cannot write {where}: {link.strerror or type(link).__name__}")
    return None


def landing_pipeline(settings: Settings, org: str) -> dlt.Pipeline:
    """The organisation's dlt pipeline; a corrupt state file or an unwritable folder raises a
    ConfigurationError naming it (dlt's JSONDecodeError names no file)."""
    folder = settings.pipelines_dir / pipeline_name(org)
    problem: ConfigurationError | None = None
    try:
        settings.pipelines_dir.mkdir(parents=True, exist_ok=True)
        return dlt.pipeline(
            pipeline_name=pipeline_name(org),
            pipelines_dir=str(settings.pipelines_dir),
            destination=filesystem_destination(settings, org),
            dataset_name=DATASET,
        )
    except json.JSONDecodeError as exc:
        problem = ConfigurationError(
            f"dlt state in {folder} is corrupt (state.json or a schema file: {exc}): restore it, "
            f"or move {folder} away to start that organisation over"
        )
    except OSError as exc:
        problem = local_file_problem(exc)
        if problem is None:
            raise
    raise problem  # outside `except`: one line, no chained traceback


def graphql_endpoint(settings: Settings, client: GitHubClient) -> str | None:
    """Where child lists are fetched over GraphQL, or None for REST (`github_api_mode`):
    `auto` takes GraphQL only with a credential, which GitHub's GraphQL API requires, and falls
    back to REST when the endpoint refuses (no probe: the first batch tells, see source.py)."""
    mode = settings.github_api_mode
    if mode == "rest" or (mode == "auto" and not client.auth.secrets()):
        return None
    url = graphql_url(settings.github_url)
    logger.info("reviews, files and events over GraphQL at %s", url)
    return url


def land(
    settings: Settings,
    org: str,
    client: GitHubClient,
    progress: SyncProgress | None = None,
    full_refresh: bool = False,
    retry_now: bool = False,
) -> LandingReport:
    """Extract the organisation's changes since its cursors and land them as Parquet, in chunks.

    Each chunk is one `pipeline.run`: its rows and the source state that says how far it got are
    committed together, so a run that dies loses at most the chunk in flight and the next run
    resumes where the last committed chunk stopped. Packages a crashed earlier run left behind are
    landed first, then the extraction goes on from the state they carry. `full_refresh` starts
    each repository's listing over once (its chunks then resume it); `retry_now` makes every
    item on the retry list due in this run.
    """
    org = normalise_org(org)
    progress = progress or SyncProgress()
    progress.retry_now, progress.full_refresh = retry_now, full_refresh
    pipeline = landing_pipeline(settings, org)
    sync = SyncContext(
        org,
        client,
        progress,
        since=iso(settings.since),
        full_refresh=full_refresh,
        retry_now=retry_now,
        chunk_requests=settings.commit_every_requests,
        reconcile_days=settings.reconcile_days,
        graphql_url=graphql_endpoint(settings, client),
        graphql_fallback=settings.github_api_mode == "auto",
    )
    handoff = Handoff(Landing(settings.landing, landing_filesystem(settings)), pipeline.pipeline_name)
    load_ids: list[str] = []
    rows = {table: 0 for table in DATA_TABLES}

    def landed(info: Any, covered: dict[int, str] | None = None) -> None:
        load_ids.extend(info.loads_ids)
        normalize = pipeline.last_trace.last_normalize_info if pipeline.last_trace else None
        counts = normalize.row_counts if normalize else {}
        for table in DATA_TABLES:
            rows[table] += int(counts.get(table, 0))
        handoff.record(pipeline, info, org, covered)

    if pipeline.has_pending_data:
        # dlt's `run` would load these and extract nothing: land them first, on their own. (dlt
        # discards them, and returns None, when the landing was never initialised.)
        logger.info("%s: landing the packages an interrupted run left behind", org)
        info = _run(pipeline, None)
        if info is not None:
            landed(info)
    handoff.forget_unrecorded_states(pipeline)  # a state whose load another machine never recorded
    handoff.recover(pipeline, org)  # loads whose landing died before their manifest
    rewound = handoff.rewind(pipeline, org, full_refresh)
    try:
        while True:
            sync.start_chunk()
            source = github_source.clone(name=pipeline.pipeline_name)(org, client, sync=sync)
            landed(_run(pipeline, source), sync.covered)
            if progress.stopped_early or not progress.more_to_do:
                break
            logger.info("%s: chunk %d committed (%d requests so far); continuing",
                        org, progress.chunks, client.stats.requests)
    finally:
        sync.close()
    return LandingReport(
        org=org,
        pipeline_name=pipeline.pipeline_name,
        load_ids=load_ids,
        rows=rows,
        requests=client.stats,
        progress=progress,
        landing_url=settings.landing,
        pipelines_dir=str(settings.pipelines_dir),
        rate_limit_remaining=client.rate_limit_remaining,
        loads_refetched=rewound,
        credentials=[credential.name for credential in client.auth.credentials()],
    )


def _run(pipeline: dlt.Pipeline, source: Any) -> Any:
    failure: GitHubError | ConfigurationError | None = None
    try:
        return pipeline.run(source, loader_file_format="parquet")
    except PipelineStepFailed as exc:
        failure = _github_error(exc)
        if failure is None:
            local = local_file_problem(exc)
            if local is None:
                raise
            failure = local
    # Our own error (e.g. a rejected token) or a local file error no retry can fix, raised
    # outside dlt's wrapper so callers can tell it from an I/O fault; raised here, not in
    # `except`, to keep the chain free of cycles.
    raise failure
