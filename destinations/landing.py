"""What dlt's filesystem destination landed: completed loads and their Parquet files.

Layout: `{bucket_url}/github/{table}/org={org}/date={YYYY-MM-DD}/{load_id}.{file_id}.parquet`, and
`{bucket_url}/github/_dlt_loads/{schema_name}__{load_id}.jsonl`, written only once a load package
has fully landed. Files of a load without that record are a crashed landing: never merged.

Each load also has a manifest, `{bucket_url}/github/_manifests/{pipeline_name}/{load_id}.json`
(organisation, files with their row counts, the repositories it covers), written by the landing
step: the merge reads manifests, never listings, so a file that went missing is noticed instead
of looking like an empty load. A load the merge cannot take is set aside with a marker next to
its manifest (`{load_id}.set_aside.json`), and the landing step fetches what it held again.

Paths are data, never patterns: nothing here globs over a user-supplied path.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import time
import uuid
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from destinations import sql
from destinations.config import DATASET

logger = logging.getLogger("destinations.landing")

LOADS_FOLDER = "_dlt_loads"
MANIFESTS_FOLDER = "_manifests"
MANIFEST_FORMAT = 1
SET_ASIDE_SUFFIX = ".set_aside.json"
# Reading a landed file's footer: attempts and the first backoff (doubled), against a storage
# fault (a timeout, a dropped connection; gcsfs raises OSError after its own retries).
READ_ATTEMPTS = 4
READ_BACKOFF = 1.0


class StorageUnavailable(OSError):
    """The landing could not be read, after retries: a fault of the storage, not damage of the
    load. The merge stops (and is retried) instead of setting the load aside."""


class UnreadableHandoff(ValueError):
    """A handoff file (a manifest) that exists but cannot be read; the message names it."""


@dataclass(frozen=True)
class LandedFile:
    table: str
    org: str
    date: str
    load_id: str
    name: str
    path: str  # path inside `fs`
    url: str  # what DuckDB opens: a local path, or `gs://...` through the registered fsspec fs

    @property
    def folder(self) -> str:
        """The partition folder relative to the dataset folder (= the Snowflake stage root)."""
        return f"{self.table}/org={self.org}/date={self.date}"


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


class Landing:
    """The dataset folder of one bucket_url, read through fsspec (local folder or gs://)."""

    def __init__(self, bucket_url: str, fs: fsspec.AbstractFileSystem | None = None) -> None:
        if fs is None:
            fs, root = fsspec.core.url_to_fs(bucket_url)
        else:
            root = fs._strip_protocol(bucket_url)
        self.fs = fs
        self.bucket_url = bucket_url
        self.root = posixpath.join(str(root).rstrip("/"), DATASET)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def completed_loads(self, pipeline_name: str, exclude: Collection[str] = ()) -> list[str]:
        """Load ids this pipeline fully landed (status 0) and not in `exclude`, oldest first.

        The load id is in each record's file name, so only the records of loads not yet merged
        are opened: the cost of a merge does not grow with the landing's history.
        """
        sql.check_pipeline_name(pipeline_name)
        prefix = f"{pipeline_name}__"
        load_ids: list[str] = []
        for path in self._ls(posixpath.join(self.root, LOADS_FOLDER)):
            name = posixpath.basename(path)
            if not (name.startswith(prefix) and name.endswith(".jsonl")):
                continue
            named = name.removeprefix(prefix).removesuffix(".jsonl")
            if named in exclude:
                continue
            with self.fs.open(path, "rt", encoding="utf-8") as handle:
                for line in handle:
                    if not line.strip():
                        continue
                    record = json.loads(line)
                    if record.get("schema_name") == pipeline_name and record.get("status") == 0:
                        load_ids.append(sql.check_load_id(str(record["load_id"])))
        return sorted(set(load_ids) - set(exclude), key=float)

    def files_by_load(
        self,
        table: str,
        org: str,
        load_ids: Collection[str] | None = None,
        *,
        near_load_dates: bool = False,
    ) -> dict[str, list[LandedFile]]:
        """This org's Parquet files of one table, grouped by load id (only `load_ids`' if given).

        `near_load_dates` lists only the date partitions those loads can have written: dlt dates
        a load's files by its package's creation, which the load id records (a day either side
        covers clock edges). The cost of a merge then does not grow with the landing's history.
        """
        sql.check_identifier(table, "table")
        org = sql.check_org(org)
        dates: list[str] | None = None
        if near_load_dates and load_ids is not None:
            dates = sorted({day for load_id in load_ids for day in _dates_around(load_id)})
        grouped: dict[str, list[LandedFile]] = defaultdict(list)
        org_folder = posixpath.join(self.root, table, f"org={org}")
        if dates is None:
            dates = sorted(
                posixpath.basename(p).removeprefix("date=")
                for p in self._ls(org_folder)
                if posixpath.basename(p).startswith("date=")
            )
        for date in dates:
            for path in sorted(self._ls(posixpath.join(org_folder, f"date={date}"))):
                name = posixpath.basename(path)
                if not name.endswith(".parquet"):
                    continue
                sql.check_file_name(name)
                sql.check_date(date)
                load_id = name.removesuffix(".parquet").rsplit(".", 1)[0]
                if load_ids is not None and load_id not in load_ids:
                    continue
                grouped[load_id].append(self._landed(table, org, date, name))
        return dict(grouped)

    # -- manifests ----------------------------------------------------------------------------

    def _manifests(self, pipeline_name: str) -> str:
        return posixpath.join(self.root, MANIFESTS_FOLDER, sql.check_pipeline_name(pipeline_name))

    def write_manifest(self, manifest: Manifest) -> None:
        folder = self._manifests(manifest.pipeline_name)
        self._write_whole(posixpath.join(folder, f"{manifest.load_id}.json"), manifest.to_json())

    def manifest(self, pipeline_name: str, load_id: str) -> Manifest | None:
        """The load's manifest; None when it has none. Raises UnreadableHandoff, naming the file,
        when it cannot be read (an empty file an earlier version's crashed write left)."""
        path = posixpath.join(self._manifests(pipeline_name), f"{sql.check_load_id(load_id)}.json")
        try:
            with self.fs.open(path, "r", encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return None
        try:
            return Manifest.from_json(text)
        except (ValueError, KeyError, TypeError) as error:
            raise UnreadableHandoff(f"manifest {path} is unreadable ({type(error).__name__}: {error})") from None

    def manifested_loads(self, pipeline_name: str) -> set[str]:
        """Loads with a manifest. An empty one (what an earlier version's write, killed between
        open and write, left) counts as none, so the landing step writes it again; the sizes come
        with the one listing, no manifest is read."""
        folder = self._manifests(pipeline_name)
        self.fs.invalidate_cache(folder)
        try:
            entries = self.fs.ls(folder, detail=True)
        except FileNotFoundError:
            return set()
        names = (posixpath.basename(str(e["name"])) for e in entries if e.get("size"))
        return {n.removesuffix(".json") for n in names if n.endswith(".json") and not n.endswith(SET_ASIDE_SUFFIX)}

    def landed_files(self, manifest: Manifest, tables: Collection[str]) -> dict[str, list[LandedFile]]:
        """The manifest's files of `tables`, validated like any name that reaches SQL."""
        files: dict[str, list[LandedFile]] = defaultdict(list)
        for entry in manifest.files:
            if entry.table not in tables:
                continue
            table, org_part, date_part, name = entry.path.split("/")
            if (table, org_part) != (entry.table, f"org={manifest.org}") or not date_part.startswith("date="):
                raise ValueError(f"manifest of load {manifest.load_id} names a file outside its table/org: {entry.path}")
            date = sql.check_date(date_part.removeprefix("date="))
            files[table].append(self._landed(table, manifest.org, date, sql.check_file_name(name)))
        return dict(files)

    def problems(self, manifest: Manifest) -> list[str]:
        """What is wrong with the landed files of a manifest: missing, unreadable, or holding
        another number of rows than the manifest says (a file cut short). Reads only footers."""
        found: list[str] = []
        for entry in manifest.files:
            path = posixpath.join(self.root, entry.path)
            try:
                rows = self._footer_rows(path)
            except FileNotFoundError:
                found.append(f"{path} is missing")
                continue
            except pa.ArrowException as error:  # a footer that is not Parquet's: the file is damaged
                found.append(f"{path} is unreadable ({error})")
                continue
            if rows != entry.rows:
                found.append(f"{path} holds {rows} rows, the manifest says {entry.rows}")
        return found

    def _footer_rows(self, path: str) -> int:
        """The row count in a landed file's footer; a storage fault (any OSError but a missing
        file) is retried READ_ATTEMPTS times with backoff, then raises StorageUnavailable."""
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                with self.fs.open(path, "rb") as handle:
                    return pq.ParquetFile(handle).metadata.num_rows
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

    def set_aside(self, pipeline_name: str, load_id: str, reason: str) -> None:
        """Mark a load the merge could not take; the landing step re-fetches what it held."""
        marker = {"load_id": sql.check_load_id(load_id), "reason": reason, "rewound": False,
                  "set_aside_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._write_whole(posixpath.join(self._manifests(pipeline_name), load_id + SET_ASIDE_SUFFIX),
                          json.dumps(marker, indent=1))

    def set_aside_loads(self, pipeline_name: str) -> dict[str, dict]:
        """Load id -> its marker (reason, rewound) for every load set aside."""
        markers: dict[str, dict] = {}
        for path in self._ls(self._manifests(pipeline_name)):
            if path.endswith(SET_ASIDE_SUFFIX):
                load_id = sql.check_load_id(posixpath.basename(path).removesuffix(SET_ASIDE_SUFFIX))
                markers[load_id] = self._marker(pipeline_name, path, load_id)
        return markers

    def mark_rewound(self, pipeline_name: str, load_id: str) -> None:
        path = posixpath.join(self._manifests(pipeline_name), load_id + SET_ASIDE_SUFFIX)
        self._write_whole(path, json.dumps({**self._marker(pipeline_name, path, load_id), "rewound": True}, indent=1))

    def _marker(self, pipeline_name: str, path: str, load_id: str) -> dict:
        """A set-aside marker. One that cannot be read (an empty file an earlier version's
        crashed write left) still sets its load aside, not yet rewound: its name says which
        load, and the landing step fetches it again."""
        try:
            with self.fs.open(path, "r", encoding="utf-8") as handle:
                marker = json.loads(handle.read())
            if not isinstance(marker, dict) or marker.get("load_id") != load_id:
                raise ValueError("not a set-aside marker of this load")
            return marker
        except (FileNotFoundError, ValueError) as error:
            logger.warning("%s: set-aside marker %s is unreadable (%s); load %s stays set aside",
                           pipeline_name, path, error, load_id)
            return {"load_id": load_id, "reason": f"set aside (marker unreadable: {error})", "rewound": False}

    def _write_whole(self, path: str, text: str) -> None:
        """Write a handoff file whole or not at all: a process killed halfway leaves the old
        file (or none), never a part. Locally: a temporary name in the same folder, then an
        atomic rename; on object storage one object write is atomic already."""
        data = text.encode("utf-8")
        if not self.is_local:
            self.fs.pipe_file(path, data)
            return
        folder = posixpath.dirname(path)
        self.fs.makedirs(folder, exist_ok=True)
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

    # -- plumbing -----------------------------------------------------------------------------

    def _landed(self, table: str, org: str, date: str, name: str) -> LandedFile:
        path = posixpath.join(self.root, table, f"org={org}", f"date={date}", name)
        url = path if self.is_local else self.fs.unstrip_protocol(path)
        load_id = name.removesuffix(".parquet").rsplit(".", 1)[0]
        return LandedFile(table, org, date, load_id, name, path, url)

    def _ls(self, folder: str) -> list[str]:
        """Paths directly in `folder` ([] when it does not exist): a listing, never a pattern."""
        self.fs.invalidate_cache(folder)  # gcsfs caches listings; new loads must show
        try:
            entries = self.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        return [str(entry) for entry in entries]

    def read_schema(self, landed: LandedFile) -> pa.Schema:
        try:
            with self.fs.open(landed.path, "rb") as handle:
                return pq.read_schema(handle)
        except (OSError, pa.ArrowException) as error:
            raise ValueError(f"cannot read the Parquet schema of landed file {landed.path}: {error}") from error


def _dates_around(load_id: str) -> list[str]:
    """The UTC dates of the day before, of, and after a load id's timestamp."""
    moment = datetime.fromtimestamp(float(sql.check_load_id(load_id)), tz=timezone.utc)
    return [(moment + timedelta(days=shift)).date().isoformat() for shift in (-1, 0, 1)]
