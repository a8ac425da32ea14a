"""Explicit Arrow schemas of the three tables and the functions that turn GitHub JSON into rows.

Explicit schemas keep every load's Parquet identical in shape, whatever the data: a page of pull
requests where every `closed_at` is null still lands a timestamp column, never a null-typed one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

# GitHub serves at most this many files of one pull request; a list this long is truncated.
FILES_CAP = 3000

_TS = pa.timestamp("us", tz="UTC")
_STRINGS = pa.list_(pa.string())


@dataclass(frozen=True)
class TableSpec:
    """What the warehouse step needs to know to merge a table.

    `key` identifies a row; `version` orders two copies of it (newest wins); `replace_scope`, when
    set, names the parent column whose whole child set a reload replaces (a file dropped from a pull
    request disappears from the target).
    """

    name: str
    schema: pa.Schema
    key: str
    version: str
    replace_scope: str | None = None


PULL_REQUESTS = TableSpec(
    name="pull_requests",
    key="row_key",
    version="updated_at",
    schema=pa.schema(
        [
            ("row_key", pa.string()),
            ("org", pa.string()),
            ("repo", pa.string()),
            ("repo_full_name", pa.string()),
            ("id", pa.int64()),
            ("node_id", pa.string()),
            ("number", pa.int64()),
            ("title", pa.string()),
            ("body", pa.string()),
            ("state", pa.string()),
            ("is_draft", pa.bool_()),
            ("is_locked", pa.bool_()),
            ("author_login", pa.string()),
            ("author_id", pa.int64()),
            ("author_type", pa.string()),
            ("author_association", pa.string()),
            ("head_ref", pa.string()),
            ("head_sha", pa.string()),
            ("head_repo_full_name", pa.string()),
            ("base_ref", pa.string()),
            ("base_sha", pa.string()),
            ("labels", _STRINGS),
            ("requested_reviewers", _STRINGS),
            ("merge_commit_sha", pa.string()),
            ("html_url", pa.string()),
            ("created_at", _TS),
            ("updated_at", _TS),
            ("closed_at", _TS),
            ("merged_at", _TS),
            ("is_merged", pa.bool_()),
            ("time_to_merge_seconds", pa.int64()),
            ("time_to_close_seconds", pa.int64()),
        ]
    ),
)

# A child row carries its pull request's identity, and the PR's `updated_at` as its version.
_CHILD_IDENTITY = [
    ("row_key", pa.string()),
    ("org", pa.string()),
    ("repo", pa.string()),
    ("pull_request_id", pa.int64()),
    ("pull_request_number", pa.int64()),
    ("pull_request_updated_at", _TS),
]

PULL_REQUEST_REVIEWS = TableSpec(
    name="pull_request_reviews",
    key="row_key",
    version="pull_request_updated_at",
    replace_scope="pull_request_id",
    schema=pa.schema(
        [
            *_CHILD_IDENTITY,
            ("id", pa.int64()),
            ("node_id", pa.string()),
            ("author_login", pa.string()),
            ("author_id", pa.int64()),
            ("author_association", pa.string()),
            ("state", pa.string()),
            ("body", pa.string()),
            ("commit_id", pa.string()),
            ("html_url", pa.string()),
            ("submitted_at", _TS),
        ]
    ),
)

PULL_REQUEST_FILES = TableSpec(
    name="pull_request_files",
    key="row_key",
    version="pull_request_updated_at",
    replace_scope="pull_request_id",
    schema=pa.schema(
        [
            *_CHILD_IDENTITY,
            ("filename", pa.string()),
            ("previous_filename", pa.string()),
            ("status", pa.string()),
            ("additions", pa.int64()),
            ("deletions", pa.int64()),
            ("changes", pa.int64()),
            ("sha", pa.string()),
            ("blob_url", pa.string()),
            ("file_list_truncated", pa.bool_()),
        ]
    ),
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec for spec in (PULL_REQUESTS, PULL_REQUEST_REVIEWS, PULL_REQUEST_FILES)
}


def row_key(table: str, *natural_key: Any) -> str:
    """A deterministic key: the same natural key gives the same row_key in every run and warehouse."""
    raw = "\x1f".join([table, *(str(part) for part in natural_key)])
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _seconds_between(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return int((end - start).total_seconds())


def _login(user: dict | None) -> tuple[str | None, int | None, str | None]:
    # A deleted account comes back as "user": null.
    if not user:
        return None, None, None
    return user.get("login"), user.get("id"), user.get("type")


def pull_request_row(org: str, repo: str, pr: dict) -> dict[str, Any]:
    login, user_id, user_type = _login(pr.get("user"))
    head = pr.get("head") or {}
    base = pr.get("base") or {}
    created_at = parse_time(pr.get("created_at"))
    closed_at = parse_time(pr.get("closed_at"))
    merged_at = parse_time(pr.get("merged_at"))
    return {
        "row_key": row_key(PULL_REQUESTS.name, pr["id"]),
        "org": org,
        "repo": repo,
        "repo_full_name": f"{org}/{repo}",
        "id": pr["id"],
        "node_id": pr.get("node_id"),
        "number": pr["number"],
        "title": pr.get("title"),
        "body": pr.get("body"),
        "state": pr.get("state"),
        "is_draft": bool(pr.get("draft")),
        "is_locked": bool(pr.get("locked")),
        "author_login": login,
        "author_id": user_id,
        "author_type": user_type,
        "author_association": pr.get("author_association"),
        "head_ref": head.get("ref"),
        "head_sha": head.get("sha"),
        "head_repo_full_name": (head.get("repo") or {}).get("full_name"),
        "base_ref": base.get("ref"),
        "base_sha": base.get("sha"),
        "labels": [label["name"] for label in pr.get("labels") or []],
        "requested_reviewers": [
            user["login"] for user in pr.get("requested_reviewers") or [] if user
        ],
        "merge_commit_sha": pr.get("merge_commit_sha"),
        "html_url": pr.get("html_url"),
        "created_at": created_at,
        "updated_at": parse_time(pr.get("updated_at")),
        "closed_at": closed_at,
        "merged_at": merged_at,
        "is_merged": merged_at is not None,
        "time_to_merge_seconds": _seconds_between(created_at, merged_at),
        "time_to_close_seconds": _seconds_between(created_at, closed_at),
    }


def _child_identity(
    spec: TableSpec, org: str, repo: str, pr: dict[str, Any], *natural_key: Any
) -> dict[str, Any]:
    return {
        "row_key": row_key(spec.name, *natural_key),
        "org": org,
        "repo": repo,
        "pull_request_id": pr["id"],
        "pull_request_number": pr["number"],
        "pull_request_updated_at": pr["updated_at"],
    }


def review_row(org: str, repo: str, pr: dict[str, Any], review: dict) -> dict[str, Any]:
    """`pr` is a pull_requests row: the review inherits the PR's identity and version."""
    login, user_id, _ = _login(review.get("user"))
    return {
        **_child_identity(PULL_REQUEST_REVIEWS, org, repo, pr, review["id"]),
        "id": review["id"],
        "node_id": review.get("node_id"),
        "author_login": login,
        "author_id": user_id,
        "author_association": review.get("author_association"),
        "state": review.get("state"),
        "body": review.get("body"),
        "commit_id": review.get("commit_id"),
        "html_url": review.get("html_url"),
        "submitted_at": parse_time(review.get("submitted_at")),
    }


def file_row(
    org: str, repo: str, pr: dict[str, Any], file: dict, *, truncated: bool
) -> dict[str, Any]:
    return {
        **_child_identity(PULL_REQUEST_FILES, org, repo, pr, pr["id"], file["filename"]),
        "filename": file["filename"],
        "previous_filename": file.get("previous_filename"),
        "status": file.get("status"),
        "additions": file.get("additions"),
        "deletions": file.get("deletions"),
        "changes": file.get("changes"),
        "sha": file.get("sha"),
        "blob_url": file.get("blob_url"),
        "file_list_truncated": truncated,
    }


def to_table(spec: TableSpec, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows to an Arrow table of exactly the spec's schema (a missing key is an error, not a null)."""
    columns = {name: [row[name] for row in rows] for name in spec.schema.names}
    return pa.Table.from_pydict(columns, schema=spec.schema)


# TEMPORARY STUB (replaced by the schema branch)
class MalformedItem(ValueError):
    pass


REJECTED_ITEMS = pa.schema(
    [
        ("row_key", pa.string()), ("org", pa.string()), ("repo", pa.string()), ("kind", pa.string()),
        ("item_key", pa.string()), ("pull_request_number", pa.int64()), ("reason", pa.string()),
        ("payload", pa.string()), ("rejected_at", _TS),
    ]
)


def rejected_row(org, repo, kind, item, error, *, pull_request_number=None, now=None):
    import json
    from datetime import timezone as _tz
    key = str(item.get("id") or item.get("filename")) if isinstance(item, dict) else None
    return {
        "row_key": row_key("rejected_items", org, kind, key, str(error)), "org": org, "repo": repo,
        "kind": kind, "item_key": key, "pull_request_number": pull_request_number, "reason": str(error),
        "payload": json.dumps(item, sort_keys=True, default=str), "rejected_at": now or datetime.now(_tz.utc),
    }
