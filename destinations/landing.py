"""What dlt's filesystem destination landed: completed loads and their Parquet files.

Layout: `{bucket_url}/github/{table}/org={org}/date={YYYY-MM-DD}/{load_id}.{file_id}.parquet`, and
`{bucket_url}/github/_dlt_loads/{schema_name}__{load_id}.jsonl`, written only once a load package
has fully landed. Files of a load without that record are a crashed landing: never merged.

Each load also has a manifest, which the merge reads instead of a listing (see handoff.py).

Paths are data, never patterns: nothing here globs over a user-supplied path.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from destinations import sql
from destinations.config import DATASET

logger = logging.getLogger("destinations.landing")

LOADS_FOLDER = "_dlt_loads"
STATE_FOLDER = "_dlt_pipeline_state"  # dlt's state files: {pipeline}__{load id}__{hash}.jsonl
# Where dlt's filesystem destination puts each file (see flows/extract.py); read back here.
LAYOUT = "{table_name}/org={org}/date={YYYY}-{MM}-{DD}/{load_id}.{file_id}.{ext}"


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
        are opened: the cost of a merge does not grow with the landing's history. The folder is
        shared by every organisation's pipeline: on GCS only this pipeline's records are listed
        (a prefix listing), so the listing does not grow with the other organisations' either.
        """
        sql.check_pipeline_name(pipeline_name)
        prefix = f"{pipeline_name}__"
        load_ids: list[str] = []
        for path in self.ls(posixpath.join(self.root, LOADS_FOLDER), prefix):
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
                for p in self.ls(org_folder)
                if posixpath.basename(p).startswith("date=")
            )
        for date in dates:
            for path in sorted(self.ls(posixpath.join(org_folder, f"date={date}"))):
                name = posixpath.basename(path)
                if not name.endswith(".parquet"):
                    continue
                sql.check_file_name(name)
                sql.check_date(date)
                load_id = name.removesuffix(".parquet").rsplit(".", 1)[0]
                if load_ids is not None and load_id not in load_ids:
                    continue
                grouped[load_id].append(self.landed(table, org, date, name))
        return dict(grouped)

    # -- plumbing -----------------------------------------------------------------------------

    def landed(self, table: str, org: str, date: str, name: str) -> LandedFile:
        path = posixpath.join(self.root, table, f"org={org}", f"date={date}", name)
        url = path if self.is_local else self.fs.unstrip_protocol(path)
        load_id = name.removesuffix(".parquet").rsplit(".", 1)[0]
        return LandedFile(table, org, date, load_id, name, path, url)

    def ls(self, folder: str, prefix: str = "") -> list[str]:
        """Paths directly in `folder` ([] when it does not exist), those whose names start with
        `prefix` when given: a listing, never a pattern. On GCS a prefix is listed as one (the
        objects under `folder/prefix` only); elsewhere the folder is listed and filtered."""
        self.fs.invalidate_cache(folder)  # gcsfs caches listings; new loads must show
        try:
            if prefix and not self.is_local:
                entries = self.fs.find(folder, prefix=prefix, maxdepth=1)
            else:
                entries = self.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        paths = [str(entry) for entry in entries]
        return [p for p in paths if posixpath.basename(p).startswith(prefix)] if prefix else paths

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
