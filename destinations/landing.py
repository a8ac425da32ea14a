"""What dlt's filesystem destination landed: completed loads and their Parquet files.

Layout: `{bucket_url}/github/{table}/org={org}/date={YYYY-MM-DD}/{load_id}.{file_id}.parquet`, and
`{bucket_url}/github/_dlt_loads/{schema_name}__{load_id}.jsonl`, written only once a load package
has fully landed. Files of a load without that record are a crashed landing: never merged.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections import defaultdict
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from destinations import sql

logger = logging.getLogger("destinations.landing")

DATASET = "github"
LOADS_FOLDER = "_dlt_loads"


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

    def completed_loads(self, pipeline_name: str) -> list[str]:
        """Load ids this pipeline fully landed (status 0), oldest first."""
        sql.check_pipeline_name(pipeline_name)
        pattern = posixpath.join(self.root, LOADS_FOLDER, f"{pipeline_name}__*.jsonl")
        load_ids: list[str] = []
        for path in self.fs.glob(pattern):
            with self.fs.open(path, "rt", encoding="utf-8") as handle:
                for line in handle:
                    if not line.strip():
                        continue
                    record = json.loads(line)
                    if record.get("schema_name") == pipeline_name and record.get("status") == 0:
                        load_ids.append(sql.check_load_id(str(record["load_id"])))
        return sorted(set(load_ids), key=float)

    def files_by_load(self, table: str, org: str) -> dict[str, list[LandedFile]]:
        """This org's Parquet files of one table, grouped by load id."""
        sql.check_identifier(table, "table")
        sql.check_org(org)
        pattern = posixpath.join(self.root, table, f"org={org}", "date=*", "*.parquet")
        grouped: dict[str, list[LandedFile]] = defaultdict(list)
        for path in sorted(self.fs.glob(pattern)):
            name = posixpath.basename(path)
            date = posixpath.basename(posixpath.dirname(path)).removeprefix("date=")
            sql.check_file_name(name)
            sql.check_date(date)
            load_id = name.removesuffix(".parquet").rsplit(".", 1)[0]
            url = path if self.is_local else self.fs.unstrip_protocol(path)
            grouped[load_id].append(LandedFile(table, org, date, load_id, name, path, url))
        return dict(grouped)

    def read_schema(self, landed: LandedFile) -> pa.Schema:
        try:
            with self.fs.open(landed.path, "rb") as handle:
                return pq.read_schema(handle)
        except (OSError, pa.ArrowException) as error:
            raise ValueError(f"cannot read the Parquet schema of landed file {landed.path}: {error}") from error
