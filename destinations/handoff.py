"""The handoff from the landing step to the merge, in one place: its files, and what a crash or
a storage fault at any moment leaves behind.

Files, next to the landed data: `{landing}/github/_manifests/{pipeline_name}/`
    {load_id}.json              the manifest: organisation, files and their row counts, and the
                                repositories it covers (with the oldest `updated_at` of each)
    {load_id}.set_aside.json    the merge could not take the load: why, and whether the landing
                                step has rewound the cursors to fetch its rows again
    {load_id}.pruned.json       the load was merged and its files deleted since, for retention
                                (destinations/retention.py)

The API: the landing step `record`s the manifests of what `pipeline.run` just landed,
`forget_unrecorded_states` a lost run left, `recover`s manifests a crash left unwritten and
`rewind`s what loads set aside held; the merge asks what is
`ready`, `take`s a load's checked files and `set_aside`s one it cannot take.

Crash behaviour:
- Every file is written whole or not at all (`_write_whole`): a kill leaves the old file or none.
- dlt writes a load's state file, then its record in `_dlt_loads`. A machine lost between leaves
  a state no record backs: `forget_unrecorded_states` deletes it before another machine would
  restore it, and the load's rows are fetched again.
- dlt writes a load's record in `_dlt_loads` after all its files, and the manifest follows. A kill
  between leaves a load without a manifest; `recover` writes it from the landed files (the record
  says they are all there), and so does `take` if the merge comes first.
- A manifest that cannot be read sets its load aside, naming the file, and never blocks the loads
  behind it; a marker that cannot be read keeps its load aside, and its rows are fetched again.
- A storage fault while a landed file is read is retried with backoff (`_footer_rows`), then stops
  the merge (`StorageUnavailable`): an intact load is never set aside for a blip.
- A rewind is saved in the pipeline's state before its marker says so: a kill between rewinds
  again, which changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import shutil
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa
import pyarrow.parquet as pq
from dlt.common.storages import LoadStorage
from dlt.common.storages.load_package import PackageStorage
from dlt.destinations import path_utils

from destinations import sql
from destinations.landing import LAYOUT, LOADS_FOLDER, STATE_FOLDER, Landing, LandedFile
from sources.github.schema import TABLES
from sources.github.state import rewind_repository

logger = logging.getLogger("destinations.handoff")

# Tables whose rows carry their pull request's repository and version (`repo`, `pull_request_updated_at`).
CHILD_TABLES = frozenset(name for name, spec in TABLES.items() if name != "pull_requests")

MANIFESTS_FOLDER = "_manifests"
MANIFEST_FORMAT = 1
SET_ASIDE_SUFFIX = ".set_aside.json"
PRUNED_SUFFIX = ".pruned.json"
# Reading a landed file's footer: attempts and the first backoff (doubled), against a storage
# fault (a timeout, a dropped connection; gcsfs raises OSError after its own retries).
READ_ATTEMPTS = 4
READ_BACKOFF = 1.0
# A temporary file of a handoff write older than this was left by a killed process.
TEMPORARY_MAX_AGE = 3600.0
PARQUET_MAGIC = b"PAR1"


class StorageUnavailable(OSError):
    """The landing could not be read, after retries: a fault of the storage, not damage of the
    load. The merge stops (and is retried) instead of setting the load aside."""


class UnreadableHandoff(ValueError):
    """A handoff file (a manifest) that exists but cannot be read; the message names it."""


class DamagedFile(ValueError):
    """A landed file whose bytes are not a readable Parquet footer; the message names it."""


class DamagedLoad(Exception):
    """A landed load whose files are missing, unreadable or not what its manifest says."""


@dataclass(frozen=True)
class ManifestFile:
    table: str
    path: str  # relative to the dataset folder: {table}/org={org}/date={date}/{load_id}.{file_id}.parquet
    rows: int


@dataclass(frozen=True)
class Manifest:
    """What one load landed: the merge takes exactly these files and checks their row counts."""

    pipeline_name: str
    org: str
    load_id: str
    files: tuple[ManifestFile, ...]
    # Repository id -> the oldest `updated_at` of a pull request whose rows the load carries:
    # where to rewind each repository's cursor if the load is lost.
    repositories: dict[str, str] = field(default_factory=dict)

    def rows(self, table: str) -> int:
        return sum(f.rows for f in self.files if f.table == table)

    def to_json(self) -> str:
        return json.dumps({
            "format": MANIFEST_FORMAT,
            "pipeline_name": self.pipeline_name,
            "org": self.org,
            "load_id": self.load_id,
            "files": [{"table": f.table, "path": f.path, "rows": f.rows} for f in self.files],
            "repositories": self.repositories,
        }, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        if raw.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {raw.get('format')!r}")
        return cls(
            pipeline_name=sql.check_pipeline_name(raw["pipeline_name"]),
            org=sql.check_org(raw["org"]),
            load_id=sql.check_load_id(raw["load_id"]),
            files=tuple(ManifestFile(f["table"], f["path"], int(f["rows"])) for f in raw["files"]),
            repositories={str(k): str(v) for k, v in raw.get("repositories", {}).items()},
        )


class Handoff:
    """The handoff files of one pipeline on one landing."""

    def __init__(self, landing: Landing, pipeline_name: str) -> None:
        self.landing = landing
        self.pipeline_name = sql.check_pipeline_name(pipeline_name)
        self.folder = posixpath.join(landing.root, MANIFESTS_FOLDER, self.pipeline_name)

    # -- the landing step ---------------------------------------------------------------------

    def record(self, pipeline: dlt.Pipeline, info: Any, org: str, covered: dict[int, str] | None) -> list[str]:
        """Write the manifest of each load `info` (what `pipeline.run` returned) landed, then drop
        dlt's local copy of its files. `covered` is what the chunk covered (repository id ->
        oldest `updated_at`); None reads it from the files."""
        written = []
        for package in info.load_packages:
            self._record(pipeline, package.load_id, org, package.jobs["completed_jobs"], covered)
            written.append(package.load_id)
        return written

    def _rows(self, local_path: str, path: str) -> int:
        """Rows of a landed file: from dlt's local copy, else (deleted by a user's own
        `delete_completed_jobs`) from the landed file."""
        try:
            return pq.read_metadata(local_path).num_rows
        except FileNotFoundError:
            return self._footer_rows(posixpath.join(self.landing.root, path))

    def forget_unrecorded_states(self, pipeline: dlt.Pipeline) -> list[str]:
        """Delete the landing's newest state files of this pipeline whose loads have no record.

        dlt writes a load's state file before its record in `_dlt_loads`: a run killed in between
        leaves a state that says the load landed, and no record, so the merge never takes it. On
        the machine of that run, dlt finishes the package (it is pending there); any other machine
        would restore the state and never fetch the load's rows again. Without the file, dlt
        restores the state before it, and the rows are fetched again (the late package, if its
        machine ever finishes it, merges like any other: MERGE keeps one copy of each row)."""
        folder = posixpath.join(self.landing.root, STATE_FOLDER)
        prefix = f"{self.pipeline_name}__"
        states: list[tuple[float, str, str]] = []
        for path in self.landing.ls(folder, prefix):
            parts = posixpath.basename(path).removesuffix(".jsonl").split("__")
            if len(parts) == 3 and parts[0] == self.pipeline_name:
                with contextlib.suppress(ValueError):
                    states.append((float(sql.check_load_id(parts[1])), parts[1], path))
        local = set(pipeline.list_normalized_load_packages()) | set(pipeline.list_completed_load_packages())
        forgotten: list[str] = []
        for _, load_id, path in sorted(states, reverse=True):
            record = posixpath.join(self.landing.root, LOADS_FOLDER, f"{self.pipeline_name}__{load_id}.jsonl")
            if load_id in local or self.landing.fs.exists(record):
                break
            self.landing.fs.rm(path)
            logger.warning("%s: load %s has dlt's state but no record (its run was stopped in between, on another "
                           "machine): that state is dropped, so its rows are fetched again", self.pipeline_name, load_id)
            forgotten.append(load_id)
        return forgotten

    def recover(self, pipeline: dlt.Pipeline, org: str) -> list[str]:
        """Write the manifests that crashed runs left unwritten (or empty, by an earlier version's
        plain write), from dlt's record of each package; drop the local copies of loads that have
        their manifest (a run killed in between, or an earlier version that kept them all)."""
        have = self._manifested()
        self._sweep_temporaries()
        written = []
        for load_id in pipeline.list_completed_load_packages():
            copies = _local_copies(pipeline, load_id)
            if load_id in have and not copies.is_dir():
                continue
            if load_id in have and self._readable(load_id):
                shutil.rmtree(copies, ignore_errors=True)
                continue
            jobs = pipeline.get_load_package_info(load_id).jobs["completed_jobs"]
            if self._record(pipeline, load_id, org, jobs, None):
                logger.info("%s: wrote the manifest of load %s, which a stopped run left without one",
                            self.pipeline_name, load_id)
                written.append(load_id)
        return written

    def _record(self, pipeline: dlt.Pipeline, load_id: str, org: str, jobs: list[Any],
                covered: dict[int, str] | None) -> bool:
        """The manifest of one completed package from its jobs (dlt's record of the files it
        wrote, so a landed file lost since is noticed), then the local copies go. A package whose
        record is gone (deleted by dlt's own `delete_completed_jobs`) gets one from its landed
        files. False when the load never landed here."""
        created_at = pipeline.get_load_package_state(load_id)["created_at"]
        files, local = [], {}
        for job in jobs:
            table = job.job_file_info.table_name
            if table.startswith("_dlt"):
                continue
            path = path_utils.create_path(
                LAYOUT, Path(job.file_path).name, pipeline.default_schema_name, load_id,
                load_package_timestamp=created_at, extra_placeholders={"org": org},
            )
            files.append(ManifestFile(table, path, self._rows(job.file_path, path)))
            local[path] = job.file_path
        manifest: Manifest | None = Manifest(self.pipeline_name, org, load_id, tuple(files))
        if not jobs:
            logger.warning("%s: load %s has no record of its files; its manifest is written from the "
                           "files found on the landing", self.pipeline_name, load_id)
            manifest = self._from_landed_files(load_id, org, pipeline.default_schema.data_table_names())
            if manifest is None:
                return False
        assert manifest is not None
        repositories = covered if covered is not None else self._covered_by(pipeline, manifest, local)
        self.write_manifest(_with_repositories(manifest, repositories))
        shutil.rmtree(_local_copies(pipeline, load_id), ignore_errors=True)
        return True

    def rewind(self, pipeline: dlt.Pipeline, org: str, full_refresh: bool = False) -> list[str]:
        """Rewind the cursors of the repositories that loads set aside by the merge covered, so
        this run fetches their rows again; return the ids of the loads handled. A load whose
        repositories cannot be told (manifest and files unreadable) stays not rewound, and says
        so every run, until a full refresh fetches everything again."""
        todo = [load_id for load_id, marker in self.set_aside_loads().items() if not marker.get("rewound")]
        if not todo:
            return []
        name = self.pipeline_name
        handled = []
        with pipeline.managed_state() as state:
            repos = state.setdefault("sources", {}).setdefault(name, {}).setdefault("repos", {})
            for load_id in todo:
                if full_refresh:
                    handled.append(load_id)  # everything is fetched again anyway
                    continue
                covered = self._repositories_of(pipeline, load_id, org)
                if covered is None:
                    logger.error(
                        "%s: load %s was set aside and which repositories it held cannot be told (its manifest "
                        "and its files are unreadable); run once with --full-refresh to fetch everything again",
                        name, load_id,
                    )
                    continue
                for repo_id, oldest in covered.items():
                    entry = repos.get(repo_id)
                    if entry is not None:
                        rewind_repository(entry, oldest)
                logger.warning("%s: load %s was set aside by the merge; fetching its %d repositories again",
                               name, load_id, len(covered))
                handled.append(load_id)
            if handled:  # the teams' ETags may describe rows of a set-aside load: read them again
                state["sources"][name].pop("teams", None)
        for load_id in handled:
            self._mark_rewound(load_id)
        return handled

    def _repositories_of(self, pipeline: dlt.Pipeline, load_id: str, org: str) -> dict[str, str] | None:
        """What a set-aside load covered: from its manifest, else from its landed files; None
        when neither can say (a file of it unreadable or lost)."""
        try:
            manifest = self.manifest(load_id)
        except UnreadableHandoff as error:
            logger.error("%s: %s; reading its landed files instead", self.pipeline_name, error)
            manifest = None
        if manifest is not None and manifest.repositories:
            return manifest.repositories
        try:
            landed = self._from_landed_files(load_id, org, pipeline.default_schema.data_table_names())
            if landed is None or (manifest is not None and len(landed.files) != len(manifest.files)):
                return None
            return self._covered_by(pipeline, landed)
        except (FileNotFoundError, DamagedFile, pa.ArrowException):
            return None

    # -- the merge ----------------------------------------------------------------------------

    def ready(self, merged: Collection[str]) -> list[str]:
        """Loads fully landed, neither merged nor set aside, oldest first."""
        return self.landing.completed_loads(self.pipeline_name, exclude=set(merged) | set(self.set_aside_loads()))

    def take(self, load_id: str, org: str, tables: Collection[str]) -> tuple[dict[str, list[LandedFile]], dict[str, int]]:
        """The load's files of `tables`, and the rows each table must stage. Raises DamagedLoad
        when the files are missing or not what the manifest says, StorageUnavailable when the
        landing cannot be read."""
        try:
            manifest = self.manifest(load_id)
        except UnreadableHandoff as error:  # set aside, never blocking the loads behind it
            raise DamagedLoad(str(error)) from None
        if manifest is None:
            # Landed before manifests existed, or the landing died before writing it.
            try:
                manifest = self._from_landed_files(load_id, org, tables)
            except DamagedFile as damage:
                raise DamagedLoad(f"load {load_id} has no manifest and {damage}") from None
            if manifest is None:
                raise DamagedLoad(f"load {load_id} has no manifest and no files near its date")
            logger.warning("%s: load %s has no manifest; merging the files found next to its date",
                           self.pipeline_name, load_id)
        if manifest.org != org:
            raise DamagedLoad(f"load {load_id} belongs to organisation {manifest.org!r}, not {org!r}")
        problems = self._problems(manifest)
        if problems:
            raise DamagedLoad("; ".join(problems))
        return self._landed_files(manifest, tables), {name: manifest.rows(name) for name in tables}

    def set_aside(self, load_id: str, reason: str) -> None:
        """Mark a load the merge could not take; the landing step re-fetches what it held."""
        marker = {"load_id": sql.check_load_id(load_id), "reason": reason, "rewound": False,
                  "set_aside_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._write_whole(self._marker_path(load_id), json.dumps(marker, indent=1))

    # -- the files ----------------------------------------------------------------------------

    def write_manifest(self, manifest: Manifest) -> None:
        self._write_whole(posixpath.join(self.folder, f"{manifest.load_id}.json"), manifest.to_json())

    def manifest(self, load_id: str) -> Manifest | None:
        """The load's manifest; None when it has none. Raises UnreadableHandoff, naming the file,
        when it cannot be read (an empty file an earlier version's crashed write left)."""
        path = posixpath.join(self.folder, f"{sql.check_load_id(load_id)}.json")
        try:
            with self.landing.fs.open(path, "r", encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return None
        try:
            return Manifest.from_json(text)
        except (ValueError, KeyError, TypeError) as error:
            raise UnreadableHandoff(f"manifest {path} is unreadable ({type(error).__name__}: {error})") from None

    def set_aside_loads(self) -> dict[str, dict]:
        """Load id -> its marker (reason, rewound) for every load set aside."""
        markers: dict[str, dict] = {}
        for path in self.landing.ls(self.folder):
            if path.endswith(SET_ASIDE_SUFFIX):
                load_id = sql.check_load_id(posixpath.basename(path).removesuffix(SET_ASIDE_SUFFIX))
                markers[load_id] = self._marker(load_id)
        return markers

    def pruned_loads(self) -> set[str]:
        """Loads whose files retention deleted (one listing, no file read)."""
        return {sql.check_load_id(posixpath.basename(path).removesuffix(PRUNED_SUFFIX))
                for path in self.landing.ls(self.folder) if path.endswith(PRUNED_SUFFIX)}

    def mark_pruned(self, load_id: str, files: int) -> None:
        marker = {"load_id": sql.check_load_id(load_id), "files_deleted": files,
                  "pruned_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._write_whole(posixpath.join(self.folder, f"{load_id}{PRUNED_SUFFIX}"), json.dumps(marker, indent=1))

    def _readable(self, load_id: str) -> bool:
        try:
            return self.manifest(load_id) is not None
        except UnreadableHandoff as error:
            logger.warning("%s: %s; writing it again from dlt's record", self.pipeline_name, error)
            return False

    def _manifested(self) -> set[str]:
        """Loads with a manifest. An empty one (an earlier version's write, killed between open
        and write) counts as none, so `recover` writes it again; the sizes come with the one
        listing, no manifest is read."""
        fs = self.landing.fs
        fs.invalidate_cache(self.folder)
        try:
            entries = fs.ls(self.folder, detail=True)
        except FileNotFoundError:
            return set()
        names = (posixpath.basename(str(e["name"])) for e in entries if e.get("size"))
        return {n.removesuffix(".json") for n in names
                if n.endswith(".json") and not n.endswith((SET_ASIDE_SUFFIX, PRUNED_SUFFIX))}

    def _sweep_temporaries(self) -> None:
        """Remove the temporary files of writes a kill cut short (local landing only; an hour
        old, so a write in flight in another process is never touched)."""
        if not self.landing.is_local or not os.path.isdir(self.folder):
            return
        cutoff = time.time() - TEMPORARY_MAX_AGE
        for entry in os.scandir(self.folder):
            if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.stat().st_mtime < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)

    def _marker_path(self, load_id: str) -> str:
        return posixpath.join(self.folder, sql.check_load_id(load_id) + SET_ASIDE_SUFFIX)

    def _marker(self, load_id: str) -> dict:
        """A set-aside marker. One that cannot be read (an empty file an earlier version's
        crashed write left) still sets its load aside, not yet rewound: its name says which
        load, and the landing step fetches it again."""
        path = self._marker_path(load_id)
        try:
            with self.landing.fs.open(path, "r", encoding="utf-8") as handle:
                marker = json.loads(handle.read())
            if not isinstance(marker, dict) or marker.get("load_id") != load_id:
                raise ValueError("not a set-aside marker of this load")
            return marker
        except (FileNotFoundError, ValueError) as error:
            logger.warning("%s: set-aside marker %s is unreadable (%s); load %s stays set aside",
                           self.pipeline_name, path, error, load_id)
            return {"load_id": load_id, "reason": f"set aside (marker unreadable: {error})", "rewound": False}

    def _mark_rewound(self, load_id: str) -> None:
        self._write_whole(self._marker_path(load_id), json.dumps({**self._marker(load_id), "rewound": True}, indent=1))

    def _write_whole(self, path: str, text: str) -> None:
        """Write a handoff file whole or not at all: a process killed halfway leaves the old
        file (or none), never a part. Locally: a temporary name in the same folder, fsync, then
        an atomic rename; on object storage one object write is atomic already."""
        data = text.encode("utf-8")
        if not self.landing.is_local:
            self.landing.fs.pipe_file(path, data)
            return
        folder = posixpath.dirname(path)
        self.landing.fs.makedirs(folder, exist_ok=True)
        temporary = posixpath.join(folder, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)

    # -- landed files -------------------------------------------------------------------------

    def _from_landed_files(self, load_id: str, org: str, tables: Collection[str]) -> Manifest | None:
        """A manifest of what the load landed, from a listing near its date and the footers;
        None when nothing of it is there."""
        files = []
        for table in sorted(tables):
            for landed in self.landing.files_by_load(table, org, [load_id], near_load_dates=True).get(load_id, []):
                files.append(ManifestFile(table, f"{landed.folder}/{landed.name}", self._footer_rows(landed.path)))
        return Manifest(self.pipeline_name, org, load_id, tuple(files)) if files else None

    def _landed_files(self, manifest: Manifest, tables: Collection[str]) -> dict[str, list[LandedFile]]:
        """The manifest's files of `tables`, validated like any name that reaches SQL."""
        files: dict[str, list[LandedFile]] = {}
        for entry in manifest.files:
            if entry.table not in tables:
                continue
            table, org_part, date_part, name = entry.path.split("/")
            if (table, org_part) != (entry.table, f"org={manifest.org}") or not date_part.startswith("date="):
                raise DamagedLoad(f"manifest of load {manifest.load_id} names a file outside its table/org: {entry.path}")
            date = sql.check_date(date_part.removeprefix("date="))
            files.setdefault(table, []).append(self.landing.landed(table, manifest.org, date, sql.check_file_name(name)))
        return files

    def _problems(self, manifest: Manifest) -> list[str]:
        """What is wrong with the landed files of a manifest: missing, unreadable, or holding
        another number of rows than the manifest says (a file cut short). Reads only footers."""
        found: list[str] = []
        for entry in manifest.files:
            path = posixpath.join(self.landing.root, entry.path)
            try:
                rows = self._footer_rows(path)
            except FileNotFoundError:
                found.append(f"{path} is missing")
                continue
            except DamagedFile as damage:
                found.append(str(damage))
                continue
            if rows != entry.rows:
                found.append(f"{path} holds {rows} rows, the manifest says {entry.rows}")
        return found

    def _footer_rows(self, path: str) -> int:
        """The row count in a landed file's footer. Reading is retried: a storage fault (any
        OSError but a missing file) READ_ATTEMPTS times with backoff, then StorageUnavailable.
        Parsing is not: bytes that are not a Parquet footer raise DamagedFile."""
        tail = self._read(path, -8)
        if len(tail) < 8 or tail[4:] != PARQUET_MAGIC:
            raise DamagedFile(f"{path} is unreadable (no Parquet footer at its end)")
        length = int.from_bytes(tail[:4], "little")
        footer = self._read(path, -(8 + length))
        if len(footer) != 8 + length:
            raise DamagedFile(f"{path} is unreadable (its footer claims {length} bytes; the file is shorter)")
        try:  # the footer alone, framed as a file pyarrow can read
            return pq.read_metadata(pa.BufferReader(PARQUET_MAGIC + footer)).num_rows
        except (OSError, ValueError, pa.ArrowException) as error:
            raise DamagedFile(f"{path} is unreadable ({error})") from None

    def _read(self, path: str, start: int) -> bytes:
        """Bytes of a landed file from `start` (negative: from its end), retried against storage
        faults; FileNotFoundError passes."""
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return bytes(self.landing.fs.cat_file(path, start=start))
            except FileNotFoundError:
                raise
            except OSError as error:
                if attempt == READ_ATTEMPTS:
                    raise StorageUnavailable(
                        f"cannot read {path} after {attempt} attempts ({type(error).__name__}: {error}); "
                        "the load is merged on a later run") from None
                delay = READ_BACKOFF * 2 ** (attempt - 1)
                logger.warning("reading %s failed (%s: %s); retry %d/%d in %.0f s",
                               path, type(error).__name__, error, attempt, READ_ATTEMPTS - 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _covered_by(self, pipeline: dlt.Pipeline, manifest: Manifest, local: dict[str, str] | None = None) -> dict[str, str]:
        """Repository id -> the oldest `updated_at` of the load's rows (what a manifest records,
        when the chunk that landed it could not say), read from dlt's local copies of its files
        (`local`: landing path -> local path), else from the landed files. A file that cannot be
        read raises: a repository left out would never be fetched again."""
        repos = pipeline.state.get("sources", {}).get(self.pipeline_name, {}).get("repos", {})
        id_of = {entry.get("name"): repo_id for repo_id, entry in repos.items()}
        oldest: dict[str, str] = {}
        for entry in manifest.files:
            if entry.table == "pull_requests":
                columns = ["repo_id", "updated_at"]
            elif entry.table in CHILD_TABLES:
                columns = ["repo", "pull_request_updated_at"]
            else:
                continue  # rejected_items: evidence, not rows of a pull request
            source = (local or {}).get(entry.path)
            if source is not None and os.path.exists(source):
                rows = pq.read_table(source, columns=columns).to_pylist()
            else:
                with self.landing.fs.open(posixpath.join(self.landing.root, entry.path), "rb") as handle:
                    rows = pq.read_table(handle, columns=columns).to_pylist()
            for row in rows:
                repo_id = str(row["repo_id"]) if "repo_id" in row else id_of.get(row["repo"])
                updated = row.get("updated_at", row.get("pull_request_updated_at"))
                if repo_id and updated is not None:
                    text = updated.strftime("%Y-%m-%dT%H:%M:%SZ")
                    oldest[repo_id] = min(oldest.get(repo_id, text), text)
        return oldest


def _with_repositories(manifest: Manifest, repositories: dict) -> Manifest:
    return Manifest(manifest.pipeline_name, manifest.org, manifest.load_id, manifest.files,
                    {str(k): v for k, v in repositories.items()})


def _local_copies(pipeline: dlt.Pipeline, load_id: str) -> Path:
    """The folder where dlt keeps a completed package's job files: the second copy of what the
    load landed. (dlt's `[load] delete_completed_jobs` deletes it as the load completes, before
    the manifest is written: a run killed in between would leave a load whose file list is gone,
    and a landed file lost before its manifest is rebuilt would go unnoticed. So the handoff
    deletes it, once the manifest holds that list.) `load` is where dlt puts its load storage."""
    return Path(pipeline.working_dir, "load", LoadStorage.LOADED_FOLDER, load_id, PackageStorage.COMPLETED_JOBS_FOLDER)
