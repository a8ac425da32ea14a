"""Explicit Arrow schemas of the four tables and the functions that turn GitHub JSON into rows.

Explicit schemas keep every load's Parquet identical in shape, whatever the data: a page of pull
requests where every `closed_at` is null still lands a timestamp column, never a null-typed one.

A row builder either returns a row `to_table` accepts or raises `MalformedItem` naming the item and
the field: one bad item must be set aside (`rejected_row`), not fail a whole page or run. A key
GitHub did not send lands as null, never as a made-up `false`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NoReturn

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
    request disappears from the target); `child_kind` is the kind of child list the table holds, as
    `pull_request_child_fetches` records it ("reviews", "files", "events"): a fetched list replaces the set
    even when it came back empty.
    """

    name: str
    schema: pa.Schema
    key: str
    version: str
    replace_scope: str | None = None
    child_kind: str | None = None


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
            ("requested_teams", _STRINGS),
            ("assignees", _STRINGS),
            ("milestone_title", pa.string()),
            ("auto_merge_enabled", pa.bool_()),
            ("head_is_fork", pa.bool_()),
            ("repo_id", pa.int64()),
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
    child_kind="reviews",
    schema=pa.schema(
        [
            *_CHILD_IDENTITY,
            ("id", pa.int64()),
            ("node_id", pa.string()),
            ("author_login", pa.string()),
            ("author_id", pa.int64()),
            ("author_type", pa.string()),
            ("author_association", pa.string()),
            ("state", pa.string()),
            ("body", pa.string()),
            ("commit_id", pa.string()),
            ("html_url", pa.string()),
            ("submitted_at", _TS),
            # Inline (line) comments in the review; NULL where not counted (landed before
            # they were, or a review gone before its count was asked).
            ("inline_comments", pa.int64()),
        ]
    ),
)

PULL_REQUEST_FILES = TableSpec(
    name="pull_request_files",
    key="row_key",
    version="pull_request_updated_at",
    replace_scope="pull_request_id",
    child_kind="files",
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

# The timeline items the metrics need: review requests, drafts, close/reopen/merge, the pull
# request's commits (`committed`: when its work started) and its conversation comments
# (`commented`: a first response; their time and author, never their text). The timeline holds
# other kinds (labels, reviews, mentions...), which are not landed.
TIMELINE_EVENTS = frozenset(
    {"review_requested", "review_request_removed", "ready_for_review", "convert_to_draft",
     "closed", "reopened", "merged", "committed", "commented"}
)

PULL_REQUEST_EVENTS = TableSpec(
    name="pull_request_events",
    key="row_key",
    version="pull_request_updated_at",
    replace_scope="pull_request_id",
    child_kind="events",
    schema=pa.schema(
        [
            *_CHILD_IDENTITY,
            ("id", pa.int64()),  # REST's event id; GraphQL's timeline events have none (null)
            ("node_id", pa.string()),  # the row key's natural key: both APIs serve it
            ("event", pa.string()),  # one of TIMELINE_EVENTS
            # The event's place among the pull request's TIMELINE_EVENTS, in timeline order (0, 1,
            # ...): orders two events of the same second the same way in both API modes.
            ("timeline_position", pa.int64()),
            ("actor_login", pa.string()),  # a comment's author; null for a commit (see event_row)
            ("actor_id", pa.int64()),
            ("actor_type", pa.string()),
            ("created_at", _TS),  # a commit's author date, which survives a rebase
            # review_requested / review_request_removed: a user or a team is the reviewer.
            ("requested_reviewer_login", pa.string()),
            ("requested_reviewer_type", pa.string()),
            ("requested_team_slug", pa.string()),
            ("commit_id", pa.string()),  # closed / merged: the commit, when GitHub names one; committed: its sha
            ("committed_at", _TS),  # committed: the committer date, which a rebase or amend moves
        ]
    ),
)

# Which child lists a load fetched, one row per (pull request, kind): the scope a merge replaces,
# so a list that dropped to zero replaces the old rows with none.
CHILD_FETCHES = TableSpec(
    name="pull_request_child_fetches",
    key="row_key",
    version="pull_request_updated_at",
    schema=pa.schema(
        [
            *_CHILD_IDENTITY,
            ("kind", pa.string()),  # "reviews", "files" or "events": the child table it scopes
            ("items", pa.int64()),
            ("fetched_at", _TS),
        ]
    ),
)

# The organisation's teams (where the credentials may read them: read:org), each load's list whole:
# a team no longer listed leaves the organisation's set (the replace scope).
TEAMS = TableSpec(
    name="teams",
    key="row_key",
    version="fetched_at",
    replace_scope="org",
    schema=pa.schema(
        [
            ("row_key", pa.string()),
            ("org", pa.string()),
            ("id", pa.int64()),
            ("node_id", pa.string()),
            ("slug", pa.string()),
            ("name", pa.string()),
            ("parent_slug", pa.string()),
            ("fetched_at", _TS),
        ]
    ),
)

# Each team's members as GitHub lists them (child teams' members included), a team's list whole:
# a member who left the team leaves its set.
TEAM_MEMBERS = TableSpec(
    name="team_members",
    key="row_key",
    version="fetched_at",
    replace_scope="team_id",
    schema=pa.schema(
        [
            ("row_key", pa.string()),
            ("org", pa.string()),
            ("team_id", pa.int64()),
            ("team_slug", pa.string()),
            ("user_id", pa.int64()),
            ("login", pa.string()),
            ("fetched_at", _TS),
        ]
    ),
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (PULL_REQUESTS, CHILD_FETCHES, PULL_REQUEST_REVIEWS, PULL_REQUEST_FILES, PULL_REQUEST_EVENTS,
                 TEAMS, TEAM_MEMBERS)
}

# The kinds of child list fetched per pull request, as `pull_request_child_fetches` records them:
# ("reviews", "files", "events"), one list (one request, most of the time) each.
CHILD_KINDS = tuple(spec.child_kind for spec in TABLES.values() if spec.child_kind)

# Items the row builders refused, landed for people to inspect. Deliberately not in TABLES: the
# warehouse merge iterates TABLES, and a rejected item is evidence, not data to merge.
REJECTED_ITEMS = TableSpec(
    name="rejected_items",
    key="row_key",
    version="rejected_at",
    schema=pa.schema(
        [
            ("row_key", pa.string()),
            ("org", pa.string()),
            ("repo", pa.string()),
            ("kind", pa.string()),
            ("item_key", pa.string()),
            ("pull_request_number", pa.int64()),
            ("reason", pa.string()),
            ("payload", pa.string()),
            ("rejected_at", _TS),
        ]
    ),
)

# The `kind` of an item, in MalformedItem and rejected_items.
PULL_REQUEST = "pull_request"
REVIEW = "review"
FILE = "file"
EVENT = "event"
TEAM = "team"
TEAM_MEMBER = "team_member"


class MalformedItem(ValueError):
    """One GitHub item a row builder cannot turn into a row.

    Carries what a person needs to find it (kind, natural key, where) and what is wrong with it
    (field, reason), so the caller can set the item aside instead of failing the run.
    """

    def __init__(
        self,
        kind: str,
        key: str | None,
        field: str,
        reason: str,
        *,
        where: str = "",
        pull_request_number: int | None = None,
    ) -> None:
        self.kind = kind
        self.key = key
        self.field = field
        self.reason = reason
        self.where = where
        self.pull_request_number = pull_request_number
        shown_key = key if key is not None else "(key unreadable)"
        place = f" in {where}" if where else ""
        super().__init__(f"malformed {kind} {shown_key}{place}: {field}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles across process and task boundaries (the default would call __init__(message)).
        state = {"where": self.where, "pull_request_number": self.pull_request_number}
        return (_rebuild_malformed, (self.kind, self.key, self.field, self.reason, state))


def _rebuild_malformed(
    kind: str, key: str | None, field: str, reason: str, state: dict[str, Any]
) -> MalformedItem:
    return MalformedItem(kind, key, field, reason, **state)


# Messages speak JSON, the language of the payload a person will look at.
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "integer", bool: "boolean",
               float: "number", type(None): "null"}


def _type_name(type_: type) -> str:
    return _JSON_TYPES.get(type_, type_.__name__)


def _got(value: Any) -> str:
    """What a message says was found: the JSON type and the value, cut short (payloads are long)."""
    if value is None:
        return "null"
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return f"{_type_name(type(value))} {text if len(text) <= 60 else text[:57] + '...'}"


class _Item:
    """Typed reads of one GitHub JSON object; a wrong or missing value raises MalformedItem."""

    def __init__(
        self,
        kind: str,
        data: Any,
        *,
        key: str | None,
        where: str,
        pull_request_number: int | None = None,
        prefix: str = "",
    ) -> None:
        self.kind, self.key, self.where = kind, key, where
        self.pull_request_number = pull_request_number
        self.prefix = prefix
        if not isinstance(data, dict):
            self.fail("", f"expected an object, got {_got(data)}")
        self.data: dict[str, Any] = data

    def fail(self, field: str, reason: str) -> NoReturn:
        raise MalformedItem(
            self.kind,
            self.key,
            (self.prefix + field).rstrip(".") or "(item)",
            reason,
            where=self.where,
            pull_request_number=self.pull_request_number,
        )

    def _check(self, field: str, value: Any, type_: type) -> Any:
        # bool is an int to Python, never to GitHub.
        if not isinstance(value, type_) or (type_ is int and isinstance(value, bool)):
            self.fail(field, f"expected {_type_name(type_)}, got {_got(value)}")
        return value

    def required(self, field: str, type_: type) -> Any:
        if self.data.get(field) is None:
            self.fail(field, "missing" if field not in self.data else "is null")
        return self._check(field, self.data[field], type_)

    def optional(self, field: str, type_: type) -> Any:
        """The value, or None when the key is absent or null."""
        value = self.data.get(field)
        return None if value is None else self._check(field, value, type_)

    def time(self, field: str, *, required: bool = False) -> datetime | None:
        value = self.required(field, str) if required else self.optional(field, str)
        if not value:
            return None
        try:
            return parse_time(value)
        except ValueError:
            self.fail(field, f"{value!r} is not an ISO 8601 timestamp")

    def child(self, field: str) -> _Item | None:
        """A nested object (None when absent or null)."""
        value = self.optional(field, dict)
        if value is None:
            return None
        return _Item(
            self.kind,
            value,
            key=self.key,
            where=self.where,
            pull_request_number=self.pull_request_number,
            prefix=f"{self.prefix}{field}.",
        )

    def names(self, field: str, name_field: str) -> list[str]:
        """`name_field` of each object in the list `field` (null entries skipped; absent -> [])."""
        names = []
        for index, entry in enumerate(self.optional(field, list) or []):
            if entry is None:
                continue
            element = _Item(
                self.kind,
                entry,
                key=self.key,
                where=self.where,
                pull_request_number=self.pull_request_number,
                prefix=f"{self.prefix}{field}[{index}].",
            )
            names.append(element.required(name_field, str))
        return names


def _int_key(data: Any, field: str) -> str | None:
    """A natural key for the message, if it can be read at all."""
    value = data.get(field) if isinstance(data, dict) else None
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else None


def row_key(table: str, *natural_key: Any) -> str:
    """A deterministic key: the same natural key gives the same row_key in every run and warehouse."""
    raw = "\x1f".join([table, *(str(part) for part in natural_key)])
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def parse_time(value: str | None) -> datetime | None:
    """GitHub's ISO 8601 timestamp; raises ValueError on anything else (row builders wrap it)."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _seconds_between(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return int((end - start).total_seconds())


def _user(item: _Item, field: str) -> tuple[str | None, int | None, str | None]:
    # A deleted account comes back as "user": null.
    user = item.child(field)
    if user is None:
        return None, None, None
    return user.optional("login", str), user.optional("id", int), user.optional("type", str)


def _auto_merge_enabled(item: _Item) -> bool | None:
    """An `auto_merge` object means enabled, null means not; an absent key means unknown."""
    if "auto_merge" not in item.data:
        return None
    return item.child("auto_merge") is not None


def pull_request_row(org: str, repo: str, pr: dict) -> dict[str, Any]:
    """A pull_requests row from a LIST-shape pull request; raises MalformedItem naming the field."""
    item = _Item(PULL_REQUEST, pr, key=_int_key(pr, "id"), where=f"{org}/{repo}")
    pr_id = item.required("id", int)
    number = item.required("number", int)
    item.where = f"{org}/{repo}#{number}"
    login, user_id, user_type = _user(item, "user")
    head = item.child("head")
    base = item.child("base")
    head_repo = head.child("repo") if head else None
    base_repo = base.child("repo") if base else None
    milestone = item.child("milestone")
    created_at = item.time("created_at")
    updated_at = item.time("updated_at", required=True)
    closed_at = item.time("closed_at")
    merged_at = item.time("merged_at")
    return {
        "row_key": row_key(PULL_REQUESTS.name, pr_id),
        "org": org,
        "repo": repo,
        "repo_full_name": f"{org}/{repo}",
        "id": pr_id,
        "node_id": item.optional("node_id", str),
        "number": number,
        "title": item.optional("title", str),
        "body": item.optional("body", str),
        "state": item.optional("state", str),
        # Older payloads lack these keys: unknown, not false.
        "is_draft": item.optional("draft", bool),
        "is_locked": item.optional("locked", bool),
        "author_login": login,
        "author_id": user_id,
        "author_type": user_type,
        "author_association": item.optional("author_association", str),
        "head_ref": head.optional("ref", str) if head else None,
        "head_sha": head.optional("sha", str) if head else None,
        "head_repo_full_name": head_repo.optional("full_name", str) if head_repo else None,
        "base_ref": base.optional("ref", str) if base else None,
        "base_sha": base.optional("sha", str) if base else None,
        "labels": item.names("labels", "name"),
        "requested_reviewers": item.names("requested_reviewers", "login"),
        "requested_teams": item.names("requested_teams", "slug"),
        "assignees": item.names("assignees", "login"),
        "milestone_title": milestone.optional("title", str) if milestone else None,
        "auto_merge_enabled": _auto_merge_enabled(item),
        # head.repo is null when the fork was deleted: whether it was a fork is then unknown.
        "head_is_fork": head_repo.optional("fork", bool) if head_repo else None,
        "repo_id": base_repo.optional("id", int) if base_repo else None,
        "merge_commit_sha": item.optional("merge_commit_sha", str),
        "html_url": item.optional("html_url", str),
        "created_at": created_at,
        "updated_at": updated_at,
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


def child_fetch_row(org: str, repo: str, pr: dict[str, Any], kind: str, items: int, fetched_at: datetime) -> dict[str, Any]:
    """The record that this load fetched `pr`'s whole `kind` list, `items` long."""
    return {
        **_child_identity(CHILD_FETCHES, org, repo, pr, pr["id"], kind),
        "kind": kind,
        "items": items,
        "fetched_at": fetched_at,
    }


def review_row(org: str, repo: str, pr: dict[str, Any], review: dict) -> dict[str, Any]:
    """`pr` is a pull_requests row: the review inherits the PR's identity and version.

    Raises MalformedItem naming the field.
    """
    item = _Item(
        REVIEW,
        review,
        key=_int_key(review, "id"),
        where=f"{org}/{repo}#{pr['number']}",
        pull_request_number=pr["number"],
    )
    review_id = item.required("id", int)
    login, user_id, user_type = _user(item, "user")
    return {
        **_child_identity(PULL_REQUEST_REVIEWS, org, repo, pr, review_id),
        "id": review_id,
        "node_id": item.optional("node_id", str),
        "author_login": login,
        "author_id": user_id,
        "author_type": user_type,
        "author_association": item.optional("author_association", str),
        "state": item.optional("state", str),
        "body": item.optional("body", str),
        "commit_id": item.optional("commit_id", str),
        "html_url": item.optional("html_url", str),
        "submitted_at": item.time("submitted_at"),
        "inline_comments": item.optional("inline_comments", int),
    }


def file_row(
    org: str, repo: str, pr: dict[str, Any], file: dict, *, truncated: bool
) -> dict[str, Any]:
    """`pr` is a pull_requests row, as for review_row; raises MalformedItem naming the field."""
    filename = file.get("filename") if isinstance(file, dict) else None
    item = _Item(
        FILE,
        file,
        key=filename if isinstance(filename, str) else None,
        where=f"{org}/{repo}#{pr['number']}",
        pull_request_number=pr["number"],
    )
    filename = item.required("filename", str)
    return {
        **_child_identity(PULL_REQUEST_FILES, org, repo, pr, pr["id"], filename),
        "filename": filename,
        "previous_filename": item.optional("previous_filename", str),
        "status": item.optional("status", str),
        "additions": item.optional("additions", int),
        "deletions": item.optional("deletions", int),
        "changes": item.optional("changes", int),
        "sha": item.optional("sha", str),
        "blob_url": item.optional("blob_url", str),
        "file_list_truncated": truncated,
    }


def event_row(org: str, repo: str, pr: dict[str, Any], event: dict, position: int) -> dict[str, Any]:
    """`pr` is a pull_requests row, as for review_row; `event` one of TIMELINE_EVENTS from the
    issue timeline, REST-shaped, `position` its place among them. Keyed by `node_id`, which REST
    and GraphQL both serve (REST's numeric `id` has no GraphQL counterpart); a commit's node id is
    the commit's, which two pull requests can share, so a commit is keyed by the pull request too.

    A `committed` item is a git commit, not an event: no actor (its author is a name and an email,
    not landed) and no `created_at`; its author date lands as `created_at` (the moment the work
    was done, kept by a rebase) and its committer date as `committed_at`. Raises MalformedItem
    naming the field."""
    node_id = event.get("node_id") if isinstance(event, dict) else None
    item = _Item(
        EVENT,
        event,
        key=node_id if isinstance(node_id, str) else _int_key(event, "id"),
        where=f"{org}/{repo}#{pr['number']}",
        pull_request_number=pr["number"],
    )
    node_id = item.required("node_id", str)
    kind = item.required("event", str)
    if kind == "committed":
        author, committer = item.child("author"), item.child("committer")
        if author is None:
            item.fail("author", "a commit without its author date")
        return {
            **_child_identity(PULL_REQUEST_EVENTS, org, repo, pr, pr["id"], node_id),
            **dict.fromkeys(("id", "actor_login", "actor_id", "actor_type", "requested_reviewer_login",
                             "requested_reviewer_type", "requested_team_slug")),
            "node_id": node_id,
            "event": kind,
            "timeline_position": position,
            "created_at": author.time("date", required=True),
            "commit_id": item.required("sha", str),
            "committed_at": committer.time("date") if committer else None,
        }
    # A comment names its author as `user` (and as `actor` in the timeline).
    login, user_id, user_type = _user(item, "user" if kind == "commented" and "actor" not in item.data else "actor")
    reviewer_login, _, reviewer_type = _user(item, "requested_reviewer")
    team = item.child("requested_team")
    return {
        **_child_identity(PULL_REQUEST_EVENTS, org, repo, pr, node_id),
        "id": item.optional("id", int),
        "node_id": node_id,
        "event": kind,
        "timeline_position": position,
        "actor_login": login,
        "actor_id": user_id,
        "actor_type": user_type,
        "created_at": item.time("created_at", required=True),
        "requested_reviewer_login": reviewer_login,
        "requested_reviewer_type": reviewer_type,
        "requested_team_slug": team.optional("slug", str) if team else None,
        "commit_id": item.optional("commit_id", str),
        "committed_at": None,
    }


def team_row(org: str, team: dict, fetched_at: datetime) -> dict[str, Any]:
    """A team of `GET /orgs/{org}/teams`; raises MalformedItem naming the field."""
    item = _Item(TEAM, team, key=_int_key(team, "id"), where=org)
    team_id = item.required("id", int)
    parent = item.child("parent")
    return {
        "row_key": row_key(TEAMS.name, org, team_id),
        "org": org,
        "id": team_id,
        "node_id": item.optional("node_id", str),
        "slug": item.required("slug", str),
        "name": item.optional("name", str),
        "parent_slug": parent.optional("slug", str) if parent else None,
        "fetched_at": fetched_at,
    }


def team_member_row(org: str, team: dict[str, Any], member: dict, fetched_at: datetime) -> dict[str, Any]:
    """A member of `GET /orgs/{org}/teams/{slug}/members`; `team` is a teams row."""
    item = _Item(TEAM_MEMBER, member, key=_int_key(member, "id"), where=f"{org} team {team['slug']}")
    user_id = item.required("id", int)
    return {
        "row_key": row_key(TEAM_MEMBERS.name, team["id"], user_id),
        "org": org,
        "team_id": team["id"],
        "team_slug": team["slug"],
        "user_id": user_id,
        "login": item.optional("login", str),
        "fetched_at": fetched_at,
    }


def rejected_row(
    org: str,
    repo: str,
    kind: str,
    item: Any,
    error: Exception,
    *,
    pull_request_number: int | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A rejected_items row: the raw item and why it was refused, for a person to inspect."""
    malformed = error if isinstance(error, MalformedItem) else None
    item_key = malformed.key if malformed else None
    if pull_request_number is None and malformed:
        pull_request_number = malformed.pull_request_number
    if pull_request_number is None and kind == PULL_REQUEST:
        number = _int_key(item, "number")
        pull_request_number = int(number) if number is not None else None
    payload = json.dumps(item, sort_keys=True, ensure_ascii=False, default=repr)
    reason = str(error)
    # Without a readable natural key, the payload itself tells two rejected items apart.
    natural_key = item_key if item_key is not None else hashlib.sha256(payload.encode()).hexdigest()
    return {
        "row_key": row_key(
            REJECTED_ITEMS.name, org, repo, kind, pull_request_number, natural_key, reason
        ),
        "org": org,
        "repo": repo,
        "kind": kind,
        "item_key": item_key,
        "pull_request_number": pull_request_number,
        "reason": reason,
        "payload": payload,
        "rejected_at": now or datetime.now(timezone.utc),
    }


def to_table(spec: TableSpec, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows to an Arrow table of exactly the spec's schema (a missing key is an error, not a null)."""
    columns = {name: [row[name] for row in rows] for name in spec.schema.names}
    return pa.Table.from_pydict(columns, schema=spec.schema)

