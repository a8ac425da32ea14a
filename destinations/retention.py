"""Landing retention: the Parquet files of merged loads older than a number of days are deleted,
so that the landing does not grow forever (`PR_ANALYTICS_LANDING_RETENTION_DAYS`).

Only loads the warehouse's ledger holds as merged are touched: a load that is landed and not
merged yet, set aside, or merged into another warehouse than this one keeps every file. A load's
age is its load id's (the moment dlt created it, UTC). Its manifest and dlt's record of it stay
(a few hundred bytes each): the merge knows it as merged from the ledger, and a marker
`{load_id}.pruned.json` next to the manifest says its files are gone, so a later prune skips it.

Kill-safe: the files go first, then the marker is written whole. A kill between leaves files
already deleted and no marker; the next prune deletes what is left (a missing file is no error)
and writes it.

Works on any landing fsspec reaches (a local folder, gs://). What retention costs: the
warehouse can no longer be rebuilt from the landing for loads older than the retention; a new
warehouse would set them aside and fetch their rows again from GitHub (destinations/handoff.py).
"""

from __future__ import annotations

import logging
import posixpath
import time
from dataclasses import dataclass, field

import fsspec

from destinations import sql
from destinations.handoff import Handoff, UnreadableHandoff
from destinations.landing import Landing
from destinations.merge import LEDGER
from destinations.warehouse import Warehouse

logger = logging.getLogger("destinations.retention")

DAY = 86400.0


@dataclass
class PruneReport:
    pipeline_name: str
    loads_pruned: list[str] = field(default_factory=list)
    files_deleted: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # load id -> why its files could not all go


def prune_merged_loads(
    warehouse: Warehouse,
    bucket_url: str,
    pipeline_name: str,
    keep_days: int,
    *,
    fs: fsspec.AbstractFileSystem | None = None,
    now: float | None = None,
) -> PruneReport:
    """Delete the landed files of this pipeline's loads that the ledger holds as merged and that
    are more than `keep_days` days old. A file that cannot be deleted (no permission, a storage
    fault) leaves its load for the next prune, with a warning; it never fails the caller."""
    if keep_days < 1:
        raise ValueError(f"keep_days must be at least 1, got {keep_days}")
    handoff = Handoff(Landing(bucket_url, fs), pipeline_name)
    report = PruneReport(handoff.pipeline_name)
    cutoff = (time.time() if now is None else now) - keep_days * DAY
    merged = {str(load_id) for load_id, _ in warehouse.execute(sql.ledger_rows(warehouse.table(LEDGER)),
                                                             [handoff.pipeline_name])}
    done = handoff.pruned_loads()
    for load_id in sorted((load_id for load_id in merged - done if float(load_id) < cutoff), key=float):
        try:
            manifest = handoff.manifest(load_id)
            if manifest is None:
                continue  # landed before manifests existed: its files are not known for sure, kept
            for landed in manifest.files:
                path = posixpath.join(handoff.landing.root, landed.path)
                try:
                    handoff.landing.fs.rm(path)
                    report.files_deleted += 1
                except FileNotFoundError:
                    pass  # deleted by a prune a kill cut short
            handoff.mark_pruned(load_id, len(manifest.files))
            if handoff.landing.is_local:
                _remove_empty_folders(handoff.landing.fs, {posixpath.dirname(posixpath.join(
                    handoff.landing.root, landed.path)) for landed in manifest.files})
        except (OSError, UnreadableHandoff) as error:  # this load waits; the others go on
            report.failed[load_id] = f"{type(error).__name__}: {error}"
            logger.warning("%s: could not delete the files of merged load %s (%s); tried again next time",
                           handoff.pipeline_name, load_id, report.failed[load_id])
            continue
        report.loads_pruned.append(load_id)
    if report.loads_pruned:
        logger.info("%s: deleted the %d landed file(s) of %d merged load(s) older than %d days",
                    handoff.pipeline_name, report.files_deleted, len(report.loads_pruned), keep_days)
    return report


def _remove_empty_folders(fs: fsspec.AbstractFileSystem, folders: set[str]) -> None:
    """The `date=...` folders a prune emptied, on a local landing (object stores have none)."""
    for folder in folders:
        try:
            if not fs.ls(folder):
                fs.rmdir(folder)
        except OSError:
            pass  # not empty after all (a load of the same day), or gone already
