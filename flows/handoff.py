"""The handoff from the landing to the merge: a manifest for each landed load, and re-fetching
what a load the merge had to set aside held.

A manifest is built from dlt's own record of the load package (its completed jobs, the files it
wrote and their row counts), never from a listing of the landing, so the merge can tell an empty
load from files that went missing (see destinations/landing.py).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Collection
from pathlib import Path

import dlt
import pyarrow.parquet as pq
from dlt.destinations import path_utils

from destinations.landing import Landing, Manifest, ManifestFile, UnreadableHandoff

logger = logging.getLogger(__name__)

# The landing layout (dlt's filesystem destination); the warehouse step reads it back.
LAYOUT = "{table_name}/org={org}/date={YYYY}-{MM}-{DD}/{load_id}.{file_id}.{ext}"


def write_manifests(
    pipeline: dlt.Pipeline,
    landing: Landing,
    org: str,
    covered: dict[int, str] | None = None,
    fresh: Collection[str] | None = None,
) -> list[str]:
    """A manifest for each load in `fresh` (the loads a chunk just landed), or, without `fresh`,
    for every load this pipeline completed that has none yet (a landing that died before writing
    it, or an empty manifest an earlier version's crashed write left); return their ids.

    `covered` (repository id -> oldest `updated_at` landed) belongs to the loads in `fresh`; for
    a package an earlier, interrupted run left behind it is read from the package's files.
    """
    if fresh is None:
        have = landing.manifested_loads(pipeline.pipeline_name)
        todo = [load_id for load_id in pipeline.list_completed_load_packages() if load_id not in have]
    else:
        todo = list(fresh)
    written = []
    for load_id in todo:
        created_at = pipeline.get_load_package_state(load_id)["created_at"]
        files = []
        jobs = _jobs(pipeline, load_id)
        for table, local_path in jobs:
            path = path_utils.create_path(
                LAYOUT, Path(local_path).name, pipeline.default_schema_name, load_id,
                load_package_timestamp=created_at, extra_placeholders={"org": org},
            )
            files.append(ManifestFile(table, path, _rows(local_path, landing, path)))
        load_covered = covered if fresh is not None else _covered_by(pipeline, jobs)
        repositories = {str(k): v for k, v in (load_covered or {}).items()}
        landing.write_manifest(Manifest(pipeline.pipeline_name, org, load_id, tuple(files), repositories))
        written.append(load_id)
    return written


def _jobs(pipeline: dlt.Pipeline, load_id: str) -> list[tuple[str, str]]:
    """(table, dlt's local copy of the file) of each data file the load package wrote."""
    return [(job.job_file_info.table_name, job.file_path)
            for job in pipeline.get_load_package_info(load_id).jobs["completed_jobs"]
            if not job.job_file_info.table_name.startswith("_dlt")]


def _covered_by(pipeline: dlt.Pipeline, jobs: list[tuple[str, str]]) -> dict[str, str]:
    """Repository id -> the oldest `updated_at` of the load's rows, read from dlt's local copies
    of its files (what a manifest records, when the chunk that landed it could not say)."""
    repos = pipeline.state.get("sources", {}).get(pipeline.pipeline_name, {}).get("repos", {})
    id_of = {entry.get("name"): repo_id for repo_id, entry in repos.items()}
    oldest: dict[str, str] = {}
    for table, path in jobs:
        try:
            if table == "pull_requests":
                rows = pq.read_table(path, columns=["repo_id", "updated_at"]).to_pylist()
                pairs = [(str(r["repo_id"]), r["updated_at"]) for r in rows]
            else:
                rows = pq.read_table(path, columns=["repo", "pull_request_updated_at"]).to_pylist()
                pairs = [(id_of.get(r["repo"]), r["pull_request_updated_at"]) for r in rows]
        except (OSError, KeyError, ValueError):
            continue  # a table without those columns (rejected_items) or a file gone
        for repo_id, updated in pairs:
            if repo_id and updated is not None:
                text = updated.strftime("%Y-%m-%dT%H:%M:%SZ")
                oldest[repo_id] = min(oldest.get(repo_id, text), text)
    return oldest


def _rows(local_path: str, landing: Landing, path: str) -> int:
    """Rows of a landed file: from dlt's local copy of the job, else from the landed file."""
    try:
        return pq.read_metadata(local_path).num_rows
    except OSError:
        with landing.fs.open(posixpath.join(landing.root, path), "rb") as handle:
            return pq.ParquetFile(handle).metadata.num_rows


def rewind_set_aside_loads(pipeline: dlt.Pipeline, landing: Landing) -> list[str]:
    """Rewind the cursors of the repositories that loads set aside by the merge covered, so this
    run fetches their rows again; return the ids of the loads handled."""
    name = pipeline.pipeline_name
    todo = [load_id for load_id, marker in landing.set_aside_loads(name).items() if not marker.get("rewound")]
    if not todo:
        return []
    with pipeline.managed_state() as state:
        repos = state.setdefault("sources", {}).setdefault(name, {}).setdefault("repos", {})
        for load_id in todo:
            try:
                manifest = landing.manifest(name, load_id)
            except UnreadableHandoff as error:
                logger.error("%s: %s", name, error)
                manifest = None
            covered = manifest.repositories if manifest else {}
            if not covered:
                logger.error(
                    "%s: load %s was set aside and its repositories are unknown; run once with "
                    "--full-refresh to fetch everything again", name, load_id,
                )
            for repo_id, oldest in covered.items():
                entry = repos.get(repo_id)
                if entry is not None:
                    _rewind(entry, oldest)
            logger.warning("%s: load %s was set aside by the merge; fetching its %d repositories again",
                           name, load_id, len(covered))
    for load_id in todo:
        landing.mark_rewound(name, load_id)
    return todo


def _rewind(entry: dict, oldest: str) -> None:
    """Everything updated at or after `oldest` is listed again, from page 1 (no ETag, no listing
    in progress: its frontier may lie above what is to be fetched again). A repository still in
    its first backfill (no cursor yet) keeps none: its listing starts over and goes down to where
    the backfill was to end, so the rest of it is fetched too, not cut off at `oldest`."""
    backfilling = entry.get("cursor") is None and entry.get("listing") is not None
    if not backfilling and (entry.get("cursor") is None or oldest <= entry["cursor"]):
        entry["cursor"], entry["at_cursor"] = oldest, {}
    entry.pop("etag", None)
    entry.pop("listing", None)
