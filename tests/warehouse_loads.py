"""Hand-made landings for the warehouse tests: loads written the way the landing step writes them
(dlt's filesystem layout, a manifest, the _dlt_loads record), and what to read back."""

from __future__ import annotations

import dataclasses
import json
import uuid
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from destinations import Warehouse, merge, merge_landed_loads
from destinations.handoff import Handoff, Manifest, ManifestFile
from destinations.landing import Landing
from sources.github.schema import TABLES, file_row, pull_request_row, review_row, to_table

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


def org_base(org: str) -> int:
    """GitHub ids are global: two organisations never share a pull request or review id."""
    return (zlib.crc32(org.encode()) % 100_000) * 1000


def pr(org: str, number: int, updated: datetime, title: str = "title", labels: tuple[str, ...] = ()) -> dict:
    return pull_request_row(
        org,
        "repo",
        {
            "id": org_base(org) + number,
            "number": number,
            "title": title,
            "state": "open",
            "user": {"login": "octo", "id": 7, "type": "User"},
            "labels": [{"name": label} for label in labels],
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": updated.isoformat().replace("+00:00", "Z"),
        },
    )


def files(org: str, pull: dict, *names: str) -> list[dict]:
    return [file_row(org, "repo", pull, {"filename": n, "status": "modified", "additions": 1}, truncated=False) for n in names]


def reviews(org: str, pull: dict, *ids: int) -> list[dict]:
    return [review_row(org, "repo", pull, {"id": org_base(org) + i, "state": "APPROVED", "body": f"ok {i}"}) for i in ids]


def land(
    root: Path,
    org: str,
    load_id: str,
    tables: dict[str, list[dict] | pa.Table],
    *,
    complete: bool = True,
    date: str = "2026-01-05",
    pipeline_name: str | None = None,
) -> None:
    """Write a load the way the landing step does (dlt's filesystem destination, then a manifest);
    `complete` adds the _dlt_loads record."""
    dataset = root / "github"
    entries = []
    for table, rows in tables.items():
        data = rows if isinstance(rows, pa.Table) else to_table(TABLES[table], rows)
        folder = dataset / table / f"org={org}" / f"date={date}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{load_id}.{uuid.uuid4().hex[:10]}.parquet"
        pq.write_table(data, folder / name)
        entries.append(ManifestFile(table, f"{table}/org={org}/date={date}/{name}", data.num_rows))
    pipeline_name = pipeline_name or f"github_{org}"
    handoff = Handoff(Landing(str(root)), pipeline_name)
    earlier = handoff.manifest(load_id)  # another file of the same load
    # (Without the _dlt_loads record the merge never looks at a load, manifest or not.)
    if earlier is not None:
        entries = [*earlier.files, *entries]
    handoff.write_manifest(Manifest(pipeline_name, org, load_id, tuple(entries)))
    if complete:
        mark_complete(root, load_id, pipeline_name)


def mark_complete(root: Path, load_id: str, pipeline_name: str) -> None:
    loads = root / "github" / "_dlt_loads"
    loads.mkdir(parents=True, exist_ok=True)
    record = {"load_id": load_id, "schema_name": pipeline_name, "status": 0, "inserted_at": "2026-01-05T12:00:00+00:00"}
    (loads / f"{pipeline_name}__{load_id}.jsonl").write_text(json.dumps(record) + "\n")


def land_two_loads(root: Path, org: str = "demo") -> None:
    """Load 1: PR1 with files a,b and a review; PR2. Load 2: PR1 updated (file b gone), a stale PR2."""
    pr1, pr2 = pr(org, 1, T0, "première ✨", ("bug", "ünïcode")), pr(org, 2, T0, "second")
    land(root, org, "999.5", {
        "pull_requests": [pr1, pr2],
        "pull_request_files": files(org, pr1, "a.py", "b.py") + files(org, pr2, "x.py"),
        "pull_request_reviews": reviews(org, pr1, 11),
    })
    pr1_new = pr(org, 1, T0 + timedelta(hours=1), "renamed 🚀")
    pr1_mid = pr(org, 1, T0 + timedelta(minutes=30), "middle")
    stale_pr2 = pr(org, 2, T0 - timedelta(days=1), "stale")
    land(root, org, "1000.25", {
        "pull_requests": [pr1_mid, pr1_new, stale_pr2],
        "pull_request_files": files(org, pr1_new, "a.py"),
    })
    land(root, org, "1000.25", {"pull_requests": [pr1_mid]}, complete=False)  # a second file, same load


def snapshot(warehouse: Warehouse) -> dict[str, list[tuple]]:
    result = {}
    for table in TABLES:
        columns = sorted(warehouse.columns(table))
        select = ", ".join(warehouse.q(c) for c in columns)
        result[table] = warehouse.execute(f"SELECT {select} FROM {warehouse.table(table)} ORDER BY {warehouse.q('row_key')}")
    return result


def rows_by(warehouse: Warehouse, table: str, *columns: str) -> list[tuple]:
    select = ", ".join(warehouse.q(c) for c in columns)
    return warehouse.execute(f"SELECT {select} FROM {warehouse.table(table)} ORDER BY {select}")


def ledger(warehouse: Warehouse) -> list[tuple]:
    return warehouse.execute(f"SELECT pipeline_name, load_id FROM {warehouse.table('MERGED_LOADS')} ORDER BY 1, 2")


NEW_PR_COLUMNS = ("requested_teams", "assignees", "milestone_title", "auto_merge_enabled", "head_is_fork", "repo_id")


def land_new_columns_onto_an_older_warehouse(root: Path, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    """A warehouse created before the new columns existed, then a load that carries them: list,
    bool and int columns, with values, empty lists, false and null."""
    old_prs = TABLES["pull_requests"].schema
    old_reviews = TABLES["pull_request_reviews"].schema
    for name, schema in (("pull_requests", old_prs), ("pull_request_reviews", old_reviews)):
        kept = [f for f in schema if f.name not in (*NEW_PR_COLUMNS, "author_type")]
        monkeypatch.setitem(TABLES, name, dataclasses.replace(TABLES[name], schema=pa.schema(kept)))
    # That version had no metric views either (they read the newer columns).
    monkeypatch.setattr(merge, "create_metric_views", lambda warehouse: [])
    monkeypatch.setattr(merge, "ensure_metric_views", lambda warehouse: [])
    before = pr("demo", 1, T0, "before")
    land(root, "demo", "1.0", {
        "pull_requests": to_table(TABLES["pull_requests"], [before]),
        "pull_request_reviews": to_table(TABLES["pull_request_reviews"], reviews("demo", before, 11)),
    })
    merge_landed_loads(warehouse, str(root), "demo", "github_demo")
    monkeypatch.undo()
    assert "assignees" not in warehouse.columns("pull_requests")

    full = {
        "state": "open", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-06T00:00:00Z",
        "draft": True, "locked": False,
        "assignees": [{"login": "ada"}, {"login": "linus"}],
        "requested_teams": [{"slug": "backend"}],
        "milestone": {"title": "v1.1"},
        "auto_merge": {"merge_method": "squash"},
        "head": {"ref": "f", "repo": {"id": 9, "full_name": "octo/repo", "fork": True}},
        "base": {"ref": "main", "repo": {"id": 42, "full_name": "demo/repo", "fork": False}},
    }
    bare = {
        "state": "open", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-06T00:00:00Z",
        "assignees": [], "requested_teams": [], "milestone": None, "auto_merge": None,
        "head": {"ref": "g", "repo": None},
    }
    rows = [
        pull_request_row("demo", "repo", {"id": org_base("demo") + 2, "number": 2, **full}),
        pull_request_row("demo", "repo", {"id": org_base("demo") + 3, "number": 3, **bare}),
    ]
    bot = review_row("demo", "repo", rows[0], {"id": org_base("demo") + 12, "user": {"login": "dependabot[bot]", "type": "Bot"}})
    land(root, "demo", "2.0", {"pull_requests": rows, "pull_request_reviews": [bot]})
    merge_landed_loads(warehouse, str(root), "demo", "github_demo")


def check_new_columns(warehouse: Warehouse, array: Callable[[Any], list[str] | None]) -> None:
    got = rows_by(warehouse, "pull_requests", "number", "is_draft", "is_locked", *NEW_PR_COLUMNS)
    assert [(n, d, lk, array(t), array(a), m, am, f, r) for (n, d, lk, t, a, m, am, f, r) in got] == [
        (1, None, None, None, None, None, None, None, None),  # merged before the columns existed
        (2, True, False, ["backend"], ["ada", "linus"], "v1.1", True, True, 42),
        (3, None, None, [], [], None, False, None, None),
    ]
    assert rows_by(warehouse, "pull_request_reviews", "id", "author_type") == [
        (org_base("demo") + 11, None), (org_base("demo") + 12, "Bot")
    ]


def check_two_loads_merged(warehouse: Warehouse, org: str = "demo") -> None:
    assert rows_by(warehouse, "pull_requests", "number", "title", "org") == [(1, "renamed 🚀", org), (2, "second", org)]
    assert rows_by(warehouse, "pull_request_files", "pull_request_number", "filename") == [(1, "a.py"), (2, "x.py")]
    assert rows_by(warehouse, "pull_request_reviews", "id") == [(org_base(org) + 11,)]
