"""The row builders: what GitHub did not send stays null, and a malformed item raises MalformedItem."""

from __future__ import annotations

import json
import pickle
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pytest

from sources.github.schema import (
    PULL_REQUEST_REVIEWS,
    PULL_REQUESTS,
    REJECTED_ITEMS,
    TABLES,
    MalformedItem,
    file_row,
    pull_request_row,
    rejected_row,
    review_row,
    to_table,
)

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


def payload(**changes: Any) -> dict[str, Any]:
    """A LIST-shape pull request as GitHub serves it today; `changes` replace keys."""
    pr = {
        "id": 1001,
        "number": 7,
        "state": "open",
        "title": "Add a thing",
        "user": {"login": "octo", "id": 1, "type": "User"},
        "draft": False,
        "locked": False,
        "labels": [{"name": "bug"}],
        "requested_reviewers": [{"login": "rev"}],
        "requested_teams": [{"id": 1, "slug": "backend", "name": "Backend"}],
        "assignees": [{"login": "ada"}, {"login": "linus"}],
        "milestone": {"id": 3, "number": 1, "title": "v1.1", "state": "open"},
        "auto_merge": {"enabled_by": {"login": "ada"}, "merge_method": "squash"},
        "head": {"ref": "feature", "sha": "h", "repo": {"id": 9, "full_name": "octo/api", "fork": True}},
        "base": {"ref": "main", "sha": "b", "repo": {"id": 42, "full_name": "acme/api", "fork": False}},
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-02T00:00:00Z",
    }
    return {**pr, **changes}


def without(pr: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in pr.items() if k not in keys}


def row(pr: dict[str, Any]) -> dict[str, Any]:
    return pull_request_row("acme", "api", pr)


# --- Missing is not false ------------------------------------------------------------------------


def test_draft_and_locked_absent_are_null_not_false() -> None:
    old = row(without(payload(), "draft", "locked"))
    assert old["is_draft"] is None and old["is_locked"] is None
    assert row(payload(draft=False, locked=False))["is_draft"] is False
    assert row(payload(draft=False, locked=False))["is_locked"] is False
    assert row(payload(draft=True, locked=True))["is_draft"] is True
    assert row(payload(draft=True, locked=True))["is_locked"] is True


def test_new_pull_request_columns() -> None:
    r = row(payload())
    assert r["milestone_title"] == "v1.1"
    assert r["assignees"] == ["ada", "linus"]
    assert r["requested_teams"] == ["backend"]
    assert r["auto_merge_enabled"] is True
    assert r["head_is_fork"] is True
    assert r["repo_id"] == 42
    same_repo = payload(head={"ref": "x", "sha": "h", "repo": {"id": 42, "full_name": "acme/api", "fork": False}})
    assert row(same_repo)["head_is_fork"] is False


def test_new_pull_request_columns_when_null_or_empty() -> None:
    r = row(payload(milestone=None, assignees=[], requested_teams=[], auto_merge=None,
                    head={"ref": "x", "sha": "h", "repo": None}))
    assert r["milestone_title"] is None
    assert r["assignees"] == [] and r["requested_teams"] == []
    assert r["auto_merge_enabled"] is False  # key present and null: not enabled
    assert r["head_is_fork"] is None  # the fork was deleted: unknown
    assert r["head_repo_full_name"] is None


def test_new_pull_request_columns_when_absent() -> None:
    keys = ("milestone", "assignees", "requested_teams", "auto_merge", "head", "base")
    r = row(without(payload(), *keys))
    assert r["milestone_title"] is None
    assert r["auto_merge_enabled"] is None  # an older payload: unknown, not false
    assert r["head_is_fork"] is None and r["repo_id"] is None
    assert r["assignees"] == [] and r["requested_teams"] == []
    assert row(payload(base={"ref": "main", "repo": {"full_name": "acme/api"}}))["repo_id"] is None
    assert row(payload(head={"ref": "x", "repo": {"full_name": "acme/api"}}))["head_is_fork"] is None


def test_rows_fit_the_explicit_schemas() -> None:
    rows = [row(payload()), row(without(payload(), "draft", "locked", "auto_merge", "head", "base"))]
    table = to_table(PULL_REQUESTS, rows)
    assert table.schema == PULL_REQUESTS.schema
    assert table.schema.field("assignees").type == pa.list_(pa.string())
    assert table.schema.field("requested_teams").type == pa.list_(pa.string())
    assert table.schema.field("auto_merge_enabled").type == pa.bool_()
    assert table.schema.field("head_is_fork").type == pa.bool_()
    assert table.schema.field("repo_id").type == pa.int64()
    assert table.column("is_draft").to_pylist() == [False, None]
    assert table.column("auto_merge_enabled").to_pylist() == [True, None]


def test_review_author_type() -> None:
    pr = row(payload())
    bot = review_row("acme", "api", pr, {"id": 5, "user": {"login": "dependabot[bot]", "id": 2, "type": "Bot"}})
    human = review_row("acme", "api", pr, {"id": 6, "user": {"login": "ada", "id": 3, "type": "User"}})
    deleted = review_row("acme", "api", pr, {"id": 7, "user": None})
    assert (bot["author_type"], human["author_type"], deleted["author_type"]) == ("Bot", "User", None)
    assert to_table(PULL_REQUEST_REVIEWS, [bot, human, deleted]).column("author_type").to_pylist() == [
        "Bot", "User", None
    ]


# --- Malformed items -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pr", "field", "reason"),
    [
        (payload(updated_at="not-a-date"), "updated_at", "'not-a-date' is not an ISO 8601 timestamp"),
        (payload(created_at="2026-13-45T00:00:00Z"), "created_at", "is not an ISO 8601 timestamp"),
        (payload(closed_at=17), "closed_at", "expected string, got integer 17"),
        (without(payload(), "updated_at"), "updated_at", "missing"),
        (without(payload(), "number"), "number", "missing"),
        (payload(number="7"), "number", 'expected integer, got string "7"'),
        (payload(number=True), "number", "expected integer, got boolean true"),
        (payload(labels="bug"), "labels", 'expected array, got string "bug"'),
        (payload(labels=[{"color": "red"}]), "labels[0].name", "missing"),
        (payload(user="octo"), "user", 'expected object, got string "octo"'),
        (payload(draft="yes"), "draft", 'expected boolean, got string "yes"'),
        (payload(title=["a"]), "title", 'expected string, got array ["a"]'),
        (payload(body={"text": "x" * 100}), "body", 'expected string, got object {"text": "xxx'),
        (payload(assignees=[{"id": 1}]), "assignees[0].login", "missing"),
        (payload(requested_teams=[{"name": "Backend"}]), "requested_teams[0].slug", "missing"),
        (payload(head={"repo": {"fork": "no"}}), "head.repo.fork", "expected boolean"),
        (payload(base={"repo": {"id": "42"}}), "base.repo.id", "expected integer"),
    ],
)
def test_malformed_pull_request(pr: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(MalformedItem) as caught:
        row(pr)
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.kind, error.key, error.field) == ("pull_request", "1001", field)
    assert reason in error.reason
    assert str(error).startswith("malformed pull_request 1001 in acme/api")
    assert f": {field}: " in str(error)
    assert len(str(error)) < 160, "a long value is cut short"


def test_malformed_pull_request_message_is_readable() -> None:
    with pytest.raises(MalformedItem) as caught:
        row(payload(updated_at="not-a-date"))
    assert str(caught.value) == (
        "malformed pull_request 1001 in acme/api#7: updated_at: 'not-a-date' is not an ISO 8601 timestamp"
    )


def test_malformed_pull_request_without_readable_key() -> None:
    with pytest.raises(MalformedItem, match=r"malformed pull_request \(key unreadable\) in acme/api: id: missing"):
        row(without(payload(), "id"))
    with pytest.raises(MalformedItem, match=r'id: expected integer, got string "x"'):
        row(payload(id="x"))
    with pytest.raises(MalformedItem, match=r"\(item\): expected an object, got null$"):
        row(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("review", "key", "field", "reason"),
    [
        ({"id": 5, "submitted_at": "yesterday"}, "5", "submitted_at", "'yesterday' is not an ISO 8601 timestamp"),
        ({"state": "APPROVED"}, None, "id", "missing"),
        ({"id": "5"}, None, "id", 'expected integer, got string "5"'),
        ({"id": 5, "user": {"login": 3}}, "5", "user.login", "expected string, got integer 3"),
        ({"id": 5, "body": 12}, "5", "body", "expected string, got integer 12"),
    ],
)
def test_malformed_review(review: dict[str, Any], key: str | None, field: str, reason: str) -> None:
    with pytest.raises(MalformedItem) as caught:
        review_row("acme", "api", row(payload()), review)
    error = caught.value
    assert (error.kind, error.key, error.field, error.pull_request_number) == ("review", key, field, 7)
    assert reason in error.reason
    assert f"in acme/api#7: {field}: {reason}" in str(error)


@pytest.mark.parametrize(
    ("file", "key", "field", "reason"),
    [
        ({"status": "added"}, None, "filename", "missing"),
        ({"filename": None}, None, "filename", "is null"),
        ({"filename": 3}, None, "filename", "expected string, got integer 3"),
        ({"filename": "a.py", "additions": "12"}, "a.py", "additions", 'expected integer, got string "12"'),
        ("a.py", None, "(item)", 'expected an object, got string "a.py"'),
    ],
)
def test_malformed_file(file: Any, key: str | None, field: str, reason: str) -> None:
    with pytest.raises(MalformedItem) as caught:
        file_row("acme", "api", row(payload()), file, truncated=False)
    error = caught.value
    assert (error.kind, error.key, error.field, error.pull_request_number) == ("file", key, field, 7)
    assert reason in error.reason


def test_malformed_item_survives_pickling() -> None:
    """Errors cross thread-pool, process and Prefect task boundaries."""
    with pytest.raises(MalformedItem) as caught:
        review_row("acme", "api", row(payload()), {"id": 5, "submitted_at": "yesterday"})
    copy = pickle.loads(pickle.dumps(caught.value))
    assert str(copy) == str(caught.value)
    assert (copy.kind, copy.key, copy.field, copy.pull_request_number) == ("review", "5", "submitted_at", 7)


# --- Rejected items ------------------------------------------------------------------------------


def test_rejected_items_is_not_merged() -> None:
    assert REJECTED_ITEMS.name == "rejected_items" and "rejected_items" not in TABLES
    assert REJECTED_ITEMS.schema.names == [
        "row_key", "org", "repo", "kind", "item_key", "pull_request_number", "reason", "payload", "rejected_at"
    ]
    assert REJECTED_ITEMS.schema.field("rejected_at").type == pa.timestamp("us", tz="UTC")


def test_rejected_row_for_a_pull_request() -> None:
    bad = payload(updated_at="not-a-date", title="naïve ☕")
    with pytest.raises(MalformedItem) as caught:
        row(bad)
    rejected = rejected_row("acme", "api", "pull_request", bad, caught.value, now=NOW)
    assert rejected["item_key"] == "1001" and rejected["pull_request_number"] == 7
    assert rejected["reason"] == str(caught.value)
    assert json.loads(rejected["payload"]) == bad
    assert rejected["payload"] == json.dumps(bad, sort_keys=True, ensure_ascii=False)
    assert rejected["rejected_at"] == NOW
    # Deterministic: the same item rejected again (another run) gets the same row_key.
    again = rejected_row("acme", "api", "pull_request", bad, caught.value, now=datetime.now(timezone.utc))
    assert again["row_key"] == rejected["row_key"]
    table = to_table(REJECTED_ITEMS, [rejected])
    assert table.schema == REJECTED_ITEMS.schema and table.num_rows == 1


def test_rejected_row_for_children_and_unreadable_keys() -> None:
    pr = row(payload())
    with pytest.raises(MalformedItem) as review_error:
        review_row("acme", "api", pr, {"id": 5, "submitted_at": "yesterday"})
    review = rejected_row("acme", "api", "review", {"id": 5, "submitted_at": "yesterday"}, review_error.value)
    assert (review["item_key"], review["pull_request_number"]) == ("5", 7)
    assert review["rejected_at"].tzinfo is not None

    rows = []
    for item in ({"status": "added"}, {"status": "removed"}):
        with pytest.raises(MalformedItem) as file_error:
            file_row("acme", "api", pr, item, truncated=False)
        rows.append(rejected_row("acme", "api", "file", item, file_error.value, now=NOW))
    assert [r["item_key"] for r in rows] == [None, None]
    assert rows[0]["row_key"] != rows[1]["row_key"], "two keyless items stay two rows"

    other = rejected_row("acme", "api", "file", "not an object", ValueError("boom"), pull_request_number=3, now=NOW)
    assert (other["item_key"], other["pull_request_number"], other["reason"]) == (None, 3, "boom")
    assert to_table(REJECTED_ITEMS, [review, *rows, other]).num_rows == 4
