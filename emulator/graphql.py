"""GitHub's GraphQL API (`POST /graphql`) over the emulator's Dataset, with graphql-core.

A subset of GitHub's schema (`SDL`: names, types, arguments and nullability as in GitHub's public
schema) for fetching a batch of pull requests' children: `nodes(ids:)` / `node(id:)` on pull
requests and reviews, their `reviews`, `files` and `timelineItems` connections, a review's inline
`comments`, and `rateLimit`.

GitHub's resource limits are applied from the parsed query before it runs (`analyze`): every
connection needs `first` or `last` in 1..100, at most 100 ids in `nodes`, at most 500,000 nodes;
the cost in points is the number of requests the connections need (each assumed full: a nested
connection is asked once per possible parent), divided by 100, rounded, at least 1. Each token has
its own points budget per window (`x-ratelimit-resource: graphql`), separate from REST's.

Answers follow GitHub's shapes: HTTP 200 with `errors` (each with GitHub's `type`) for limits and
unknown ids, `data` and `errors` together for a partial result, a 502 for a query over the
configured "too heavy" node count.
"""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    build_schema,
    execute,
    get_named_type,
    parse,
    validate,
)
from graphql.execution.values import get_argument_values, get_variable_values
from graphql.utilities import get_operation_ast

from emulator.data import MAX_SERVED_FILES, Dataset, iso

DOCS = "https://docs.github.com/graphql"
MAX_IDS = 100
MAX_PAGE = 100
MAX_NODES = 500_000
RATE_LIMITED_MESSAGE = "API rate limit exceeded for user ID 1."
SCOPES_MESSAGE = ("Your token has not been granted the required scopes to execute this query. The '{}' "
                  "field requires one of the following scopes: ['read:org', 'read:discussion'], but your "
                  "token has only been granted the: ['repo'] scopes. Please modify your token's scopes at: "
                  "https://github.com/settings/tokens.")
HEAVY_MESSAGE = ("Something went wrong while executing your query. This may be the result of a "
                 "timeout, or it could be a GitHub bug. Please include `{}` when reporting this issue.")
FORBIDDEN_MESSAGE = "Resource not accessible by integration"
BROKEN_MESSAGE = ("Something went wrong while executing your query. Please include `0C1A:B0B0` when "
                  "reporting this issue.")

SDL = '''
scalar BigInt
scalar DateTime
scalar GitObjectID
scalar URI

interface Node {
  id: ID!
}

interface Actor {
  avatarUrl(size: Int): URI!
  login: String!
  resourcePath: URI!
  url: URI!
}

type Query {
  node(id: ID!): Node
  nodes(ids: [ID!]!): [Node]!
  rateLimit: RateLimit
}

type RateLimit {
  cost: Int!
  limit: Int!
  nodeCount: Int!
  remaining: Int!
  resetAt: DateTime!
  used: Int!
}

type PageInfo {
  endCursor: String
  hasNextPage: Boolean!
  hasPreviousPage: Boolean!
  startCursor: String
}

type User implements Actor & Node {
  avatarUrl(size: Int): URI!
  databaseId: Int
  id: ID!
  login: String!
  resourcePath: URI!
  url: URI!
}

type Bot implements Actor & Node {
  avatarUrl(size: Int): URI!
  databaseId: Int
  id: ID!
  login: String!
  resourcePath: URI!
  url: URI!
}

type Mannequin implements Actor & Node {
  avatarUrl(size: Int): URI!
  databaseId: Int
  id: ID!
  login: String!
  resourcePath: URI!
  url: URI!
}

type Organization implements Actor & Node {
  avatarUrl(size: Int): URI!
  databaseId: Int
  id: ID!
  login: String!
  resourcePath: URI!
  url: URI!
}

type Team implements Node {
  databaseId: Int
  id: ID!
  name: String!
  slug: String!
}

union RequestedReviewer = Bot | Mannequin | Team | User

union Closer = Commit | PullRequest

type Commit implements Node {
  authoredDate: DateTime!
  committedDate: DateTime!
  id: ID!
  oid: GitObjectID!
}

enum PullRequestState {
  CLOSED
  MERGED
  OPEN
}

enum PullRequestReviewState {
  APPROVED
  CHANGES_REQUESTED
  COMMENTED
  DISMISSED
  PENDING
}

enum CommentAuthorAssociation {
  COLLABORATOR
  CONTRIBUTOR
  FIRST_TIMER
  FIRST_TIME_CONTRIBUTOR
  MANNEQUIN
  MEMBER
  NONE
  OWNER
}

enum PatchStatus {
  ADDED
  CHANGED
  COPIED
  DELETED
  MODIFIED
  RENAMED
}

type PullRequest implements Node {
  author: Actor
  authorAssociation: CommentAuthorAssociation!
  changedFiles: Int!
  closedAt: DateTime
  createdAt: DateTime!
  databaseId: Int
  files(after: String, before: String, first: Int, last: Int): PullRequestChangedFileConnection
  fullDatabaseId: BigInt
  id: ID!
  isDraft: Boolean!
  mergedAt: DateTime
  number: Int!
  reviews(after: String, author: String, before: String, first: Int, last: Int, states: [PullRequestReviewState!]): PullRequestReviewConnection
  state: PullRequestState!
  timelineItems(after: String, before: String, first: Int, itemTypes: [PullRequestTimelineItemsItemType!], last: Int, since: DateTime, skip: Int): PullRequestTimelineItemsConnection!
  title: String!
  updatedAt: DateTime!
  url: URI!
}

type PullRequestReview implements Node {
  author: Actor
  authorAssociation: CommentAuthorAssociation!
  body: String!
  comments(after: String, before: String, first: Int, last: Int): PullRequestReviewCommentConnection!
  commit: Commit
  createdAt: DateTime!
  databaseId: Int
  fullDatabaseId: BigInt
  id: ID!
  lastEditedAt: DateTime
  publishedAt: DateTime
  state: PullRequestReviewState!
  submittedAt: DateTime
  updatedAt: DateTime!
  url: URI!
}

type PullRequestReviewComment implements Node {
  author: Actor
  authorAssociation: CommentAuthorAssociation!
  body: String!
  createdAt: DateTime!
  databaseId: Int
  fullDatabaseId: BigInt
  id: ID!
  path: String!
  updatedAt: DateTime!
  url: URI!
}

type PullRequestReviewCommentConnection {
  edges: [PullRequestReviewCommentEdge]
  nodes: [PullRequestReviewComment]
  pageInfo: PageInfo!
  totalCount: Int!
}

type PullRequestReviewCommentEdge {
  cursor: String!
  node: PullRequestReviewComment
}

type PullRequestReviewConnection {
  edges: [PullRequestReviewEdge]
  nodes: [PullRequestReview]
  pageInfo: PageInfo!
  totalCount: Int!
}

type PullRequestReviewEdge {
  cursor: String!
  node: PullRequestReview
}

type PullRequestChangedFile {
  additions: Int!
  changeType: PatchStatus!
  deletions: Int!
  path: String!
}

type PullRequestChangedFileConnection {
  edges: [PullRequestChangedFileEdge]
  nodes: [PullRequestChangedFile]
  pageInfo: PageInfo!
  totalCount: Int!
}

type PullRequestChangedFileEdge {
  cursor: String!
  node: PullRequestChangedFile
}

type ReviewRequestedEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
  requestedReviewer: RequestedReviewer
}

type ReviewRequestRemovedEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
  requestedReviewer: RequestedReviewer
}

type ReadyForReviewEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
  url: URI!
}

type ConvertToDraftEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
  url: URI!
}

type ClosedEvent implements Node {
  actor: Actor
  closer: Closer
  createdAt: DateTime!
  id: ID!
  url: URI!
}

type ReopenedEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
}

type MergedEvent implements Node {
  actor: Actor
  commit: Commit
  createdAt: DateTime!
  id: ID!
  mergeRefName: String!
  url: URI!
}

type PullRequestCommit implements Node {
  commit: Commit!
  id: ID!
  url: URI!
}

type IssueComment implements Node {
  author: Actor
  authorAssociation: CommentAuthorAssociation!
  body: String!
  createdAt: DateTime!
  databaseId: Int
  fullDatabaseId: BigInt
  id: ID!
  url: URI!
}

type LabeledEvent implements Node {
  actor: Actor
  createdAt: DateTime!
  id: ID!
}

union PullRequestTimelineItems = ClosedEvent | ConvertToDraftEvent | IssueComment | LabeledEvent | MergedEvent | PullRequestCommit | PullRequestReview | ReadyForReviewEvent | ReopenedEvent | ReviewRequestRemovedEvent | ReviewRequestedEvent

type PullRequestTimelineItemsConnection {
  edges: [PullRequestTimelineItemsEdge]
  nodes: [PullRequestTimelineItems]
  pageInfo: PageInfo!
  totalCount: Int!
}

type PullRequestTimelineItemsEdge {
  cursor: String!
  node: PullRequestTimelineItems
}

enum PullRequestTimelineItemsItemType {
  ADDED_TO_MERGE_QUEUE_EVENT
  ADDED_TO_PROJECT_EVENT
  ASSIGNED_EVENT
  AUTOMATIC_BASE_CHANGE_FAILED_EVENT
  AUTOMATIC_BASE_CHANGE_SUCCEEDED_EVENT
  AUTO_MERGE_DISABLED_EVENT
  AUTO_MERGE_ENABLED_EVENT
  AUTO_REBASE_ENABLED_EVENT
  AUTO_SQUASH_ENABLED_EVENT
  BASE_REF_CHANGED_EVENT
  BASE_REF_DELETED_EVENT
  BASE_REF_FORCE_PUSHED_EVENT
  CLOSED_EVENT
  COMMENT_DELETED_EVENT
  CONNECTED_EVENT
  CONVERTED_NOTE_TO_ISSUE_EVENT
  CONVERTED_TO_DISCUSSION_EVENT
  CONVERT_TO_DRAFT_EVENT
  CROSS_REFERENCED_EVENT
  DEMILESTONED_EVENT
  DEPLOYED_EVENT
  DEPLOYMENT_ENVIRONMENT_CHANGED_EVENT
  DISCONNECTED_EVENT
  HEAD_REF_DELETED_EVENT
  HEAD_REF_FORCE_PUSHED_EVENT
  HEAD_REF_RESTORED_EVENT
  ISSUE_COMMENT
  LABELED_EVENT
  LOCKED_EVENT
  MARKED_AS_DUPLICATE_EVENT
  MENTIONED_EVENT
  MERGED_EVENT
  MILESTONED_EVENT
  MOVED_COLUMNS_IN_PROJECT_EVENT
  PARENT_ISSUE_ADDED_EVENT
  PARENT_ISSUE_REMOVED_EVENT
  PINNED_EVENT
  PULL_REQUEST_COMMIT
  PULL_REQUEST_COMMIT_COMMENT_THREAD
  PULL_REQUEST_REVIEW
  PULL_REQUEST_REVIEW_THREAD
  PULL_REQUEST_REVISION_MARKER
  READY_FOR_REVIEW_EVENT
  REFERENCED_EVENT
  REMOVED_FROM_MERGE_QUEUE_EVENT
  REMOVED_FROM_PROJECT_EVENT
  RENAMED_TITLE_EVENT
  REOPENED_EVENT
  REVIEW_DISMISSED_EVENT
  REVIEW_REQUESTED_EVENT
  REVIEW_REQUEST_REMOVED_EVENT
  SUBSCRIBED_EVENT
  SUB_ISSUE_ADDED_EVENT
  SUB_ISSUE_REMOVED_EVENT
  TRANSFERRED_EVENT
  UNASSIGNED_EVENT
  UNLABELED_EVENT
  UNLOCKED_EVENT
  UNMARKED_AS_DUPLICATE_EVENT
  UNPINNED_EVENT
  UNSUBSCRIBED_EVENT
  USER_BLOCKED_EVENT
}
'''

SCHEMA: GraphQLSchema = build_schema(SDL)


def _ghes_3_9(sdl: str) -> str:
    """GitHub Enterprise Server 3.9's schema, as far as the pipeline's queries reach: no
    `PullRequestReview.fullDatabaseId` (github.com since February 2024) and no `Bot` among the
    `RequestedReviewer`s."""
    start = sdl.index("type PullRequestReview implements Node {")
    end = sdl.index("}", start)
    sdl = sdl[:start] + sdl[start:end].replace("  fullDatabaseId: BigInt\n", "") + sdl[end:]
    return sdl.replace("union RequestedReviewer = Bot | Mannequin | Team | User",
                       "union RequestedReviewer = Mannequin | Team | User")


# The schemas the emulator can serve: github.com's (the default) and an older GHES's.
SCHEMAS: dict[str, GraphQLSchema] = {"github.com": SCHEMA, "ghes-3.9": build_schema(_ghes_3_9(SDL))}

# REST timeline `event` -> (GraphQL type, PullRequestTimelineItemsItemType)
_TIMELINE_TYPES = {
    "review_requested": ("ReviewRequestedEvent", "REVIEW_REQUESTED_EVENT"),
    "review_request_removed": ("ReviewRequestRemovedEvent", "REVIEW_REQUEST_REMOVED_EVENT"),
    "ready_for_review": ("ReadyForReviewEvent", "READY_FOR_REVIEW_EVENT"),
    "convert_to_draft": ("ConvertToDraftEvent", "CONVERT_TO_DRAFT_EVENT"),
    "closed": ("ClosedEvent", "CLOSED_EVENT"),
    "reopened": ("ReopenedEvent", "REOPENED_EVENT"),
    "merged": ("MergedEvent", "MERGED_EVENT"),
    "committed": ("PullRequestCommit", "PULL_REQUEST_COMMIT"),
    "commented": ("IssueComment", "ISSUE_COMMENT"),
    "labeled": ("LabeledEvent", "LABELED_EVENT"),
    "reviewed": ("PullRequestReview", "PULL_REQUEST_REVIEW"),
}
# REST file `status` -> PatchStatus
_CHANGE_TYPES = {"added": "ADDED", "removed": "DELETED", "modified": "MODIFIED", "renamed": "RENAMED",
                 "copied": "COPIED", "changed": "CHANGED", "unchanged": "MODIFIED"}


class GitHubGraphQLError(Exception):
    """An error GitHub reports with a `type` (NOT_FOUND, MAX_NODE_LIMIT_EXCEEDED, ...)."""

    def __init__(self, gh_type: str, message: str) -> None:
        super().__init__(message)
        self.gh_type = gh_type
        self.message = message


class _LimitError(GitHubGraphQLError):
    """Refused before execution; `node` locates it in the query."""

    def __init__(self, gh_type: str, message: str, node: FieldNode | None = None,
                 path: list[str] | None = None) -> None:
        super().__init__(gh_type, message)
        self.node = node
        self.path = path


@dataclass
class Analysis:
    """What a query asks for, from its text alone (GitHub's static resource accounting)."""

    requests: int = 0   # requests its connections need, each assumed full
    nodes: int = 0      # nodes it can return at most
    org_fields: list[FieldNode] = field(default_factory=list)  # Team fields: they need read:org
    heaviest: tuple[int, str] = (0, "")  # (nodes up to a connection, its name): the node-limit message

    @property
    def cost(self) -> int:
        """Points: requests / 100, rounded (halves up), at least 1."""
        return max(1, math.floor(self.requests / 100 + 0.5))


def analyze(document: DocumentNode, operation: OperationDefinitionNode,
            variables: dict[str, Any], schema: GraphQLSchema = SCHEMA) -> Analysis:
    """Cost and node count of `operation`; raises _LimitError for a limit it breaks.

    A connection is a field whose type's name ends in `Connection`, plus `Query.nodes` (a list of
    up to 100 nodes, counted like a connection of `len(ids)`). A connection inside another one is
    needed once per parent node: its requests are the product of its ancestors' page sizes, its
    nodes that product times its own page size. `first` or `last` is required (1..100) when the
    connection's `nodes` or `edges` are selected; one asked only for `totalCount`/`pageInfo` needs
    one request and returns no nodes.
    """
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    out = Analysis()
    root = schema.query_type
    assert root is not None

    def selects_items(selection_set: SelectionSetNode | None, seen: frozenset[str] = frozenset()) -> bool:
        for sel in selection_set.selections if selection_set else ():
            if isinstance(sel, FieldNode) and sel.name.value in ("nodes", "edges"):
                return True
            if isinstance(sel, InlineFragmentNode) and selects_items(sel.selection_set, seen):
                return True
            if isinstance(sel, FragmentSpreadNode) and sel.name.value not in seen:
                frag = fragments.get(sel.name.value)
                if frag and selects_items(frag.selection_set, seen | {sel.name.value}):
                    return True
        return False

    def walk(selection_set: SelectionSetNode, parent: Any, multiplier: int, path: list[str]) -> None:
        for sel in selection_set.selections:
            if isinstance(sel, InlineFragmentNode):
                cond = schema.get_type(sel.type_condition.name.value) if sel.type_condition else parent
                walk(sel.selection_set, cond, multiplier, path)
                continue
            if isinstance(sel, FragmentSpreadNode):
                frag = fragments[sel.name.value]
                walk(frag.selection_set, schema.get_type(frag.type_condition.name.value), multiplier, path)
                continue
            if not isinstance(sel, FieldNode):
                continue
            name = sel.name.value
            field_def = getattr(parent, "fields", {}).get(name)
            if field_def is None:  # __typename and friends
                continue
            if getattr(parent, "name", None) == "Team":
                out.org_fields.append(sel)
            key = sel.alias.value if sel.alias else name
            here = [*path, key]
            child_multiplier = multiplier
            named = get_named_type(field_def.type)
            if parent is root and name == "nodes":
                ids = get_argument_values(field_def, sel, variables)["ids"]
                if len(ids) > MAX_IDS:
                    raise _LimitError("ARGUMENT_LIMIT", f"You may not provide more than {MAX_IDS} node ids; "
                                      f"you provided {len(ids)}.", sel, here)
                child_multiplier = count(name, multiplier, len(ids))
            elif named.name.endswith("Connection"):
                args = get_argument_values(field_def, sel, variables)
                first, last = args.get("first"), args.get("last")
                for arg, value in (("first", first), ("last", last)):
                    if value is not None and value > MAX_PAGE:
                        raise _LimitError("EXCESSIVE_PAGINATION", f"Requesting {value} records on the "
                                          f"`{name}` connection exceeds the `{arg}` limit of {MAX_PAGE} records.",
                                          sel, here)
                    if value is not None and value < 1:
                        raise _LimitError("EXCESSIVE_PAGINATION", f"`{arg}` on the `{name}` connection must be "
                                          f"between 1 and {MAX_PAGE}; it was {value}.", sel, here)
                size = first if first is not None else last
                if size is None and selects_items(sel.selection_set):
                    raise _LimitError("MISSING_PAGINATION_BOUNDARIES", "You must provide a `first` or `last` "
                                      f"value to properly paginate the `{name}` connection.", sel, here)
                child_multiplier = count(name, multiplier, size or 0)
            if sel.selection_set is not None:
                walk(sel.selection_set, named, child_multiplier, here)

    def count(name: str, multiplier: int, size: int) -> int:
        out.requests += multiplier
        out.nodes += multiplier * size
        if multiplier * size > out.heaviest[0]:
            out.heaviest = (multiplier * size, name)
        return multiplier * size

    walk(operation.selection_set, root, 1, [])
    if out.nodes > MAX_NODES:
        if out.heaviest[0] > MAX_NODES:
            message = (f"By the time this query traverses to the {out.heaviest[1]} connection, it is requesting "
                       f"up to {out.heaviest[0]:,} possible nodes which exceeds the maximum limit of {MAX_NODES:,}.")
        else:
            message = (f"This query requests up to {out.nodes:,} possible nodes which exceeds the maximum "
                       f"limit of {MAX_NODES:,}.")
        raise _LimitError("MAX_NODE_LIMIT_EXCEEDED", message)
    return out


# ---------------------------------------------------------------------------------------- data
def _node_id(prefix: str, ident: int) -> str:
    return prefix + base64.b64encode(int(ident).to_bytes(8, "big")).decode().rstrip("=")


def _actor(user: dict | None) -> dict | None:
    """A REST `user` as GitHub's GraphQL Actor: a bot's login has no `[bot]` suffix there."""
    if user is None:
        return None
    is_bot = user.get("type") == "Bot"
    login = user["login"].removesuffix("[bot]") if is_bot else user["login"]
    path = f"/apps/{login}" if is_bot else f"/{login}"
    typename = "Bot" if is_bot else "Organization" if user.get("type") == "Organization" else "User"
    return {"__typename": typename,
            "id": _node_id({"Bot": "BOT_kgDO", "User": "U_kgDO"}.get(typename, "O_kgDO"), user["id"]),
            "databaseId": user["id"], "login": login, "resourcePath": path,
            "url": f"https://github.com{path}",
            "avatarUrl": lambda info, size=None, _id=user["id"]:
                f"https://avatars.githubusercontent.com/u/{_id}?v=4" + (f"&s={size}" if size else "")}


def _team(team: dict) -> dict:
    return {"__typename": "Team", "id": _node_id("T_kwDO", team["id"]), "databaseId": team["id"],
            "name": team["name"], "slug": team["slug"]}


def _commit(oid: str | None, authored: str | None = None, committed: str | None = None) -> dict | None:
    if oid is None:
        return None
    return {"__typename": "Commit", "id": _node_id("C_kwDO", int(oid[:12], 16)), "oid": oid,
            "authoredDate": authored or committed, "committedDate": committed or authored}


def _review(r: dict, comments: Callable[[], list[dict]] = list) -> dict:
    """A REST review as a PullRequestReview; `comments` gives its inline comments when asked."""
    submitted = r.get("submitted_at")

    def review_comments(info: Any, first: int | None = None, after: str | None = None, last: int | None = None,
                        before: str | None = None) -> dict:
        rows = comments()
        return _connection(rows, [int(c["id"]) for c in rows], _review_comment, first=first, after=after,
                           last=last, before=before)

    return {"__typename": "PullRequestReview", "id": r.get("node_id"), "databaseId": r.get("id"),
            "fullDatabaseId": str(r["id"]) if r.get("id") is not None else None,
            "author": _actor(r.get("user")), "authorAssociation": r.get("author_association"),
            "state": r.get("state"), "body": r.get("body"), "commit": _commit(r.get("commit_id")),
            "url": r.get("html_url"), "submittedAt": submitted, "publishedAt": submitted,
            "createdAt": submitted, "updatedAt": submitted, "lastEditedAt": None,
            "comments": review_comments}


def _review_comment(c: dict) -> dict:
    return {"__typename": "PullRequestReviewComment", "id": c["node_id"], "databaseId": c["id"],
            "fullDatabaseId": str(c["id"]), "author": _actor(c.get("user")),
            "authorAssociation": c.get("author_association"), "body": c.get("body"), "path": c.get("path"),
            "createdAt": c.get("created_at"), "updatedAt": c.get("updated_at"), "url": c.get("html_url")}


def _file(f: dict) -> dict:
    return {"__typename": "PullRequestChangedFile", "path": f.get("filename"), "additions": f.get("additions"),
            "deletions": f.get("deletions"), "changeType": _CHANGE_TYPES.get(f.get("status") or "")}


def _event_time(e: dict) -> str | None:
    if e.get("event") == "committed":
        return (e.get("committer") or {}).get("date")
    if e.get("event") == "reviewed":
        return e.get("submitted_at")
    return e.get("created_at")


def _timeline_item(e: dict, pr_url: str, reviews: dict[int, dict]) -> dict:
    kind = e.get("event")
    typename = _TIMELINE_TYPES[kind][0]
    if kind == "reviewed":
        review = reviews.get(e.get("id"))
        return _review(review if review is not None else {**e, "state": str(e.get("state")).upper()})
    if kind == "committed":
        # The item's own id is not the commit's (REST's committed item carries the commit's).
        commit = _commit(e.get("sha"), (e.get("author") or {}).get("date"), (e.get("committer") or {}).get("date"))
        return {"__typename": typename, "id": "PURC_" + str(e.get("node_id")), "commit": commit,
                "url": f"{pr_url}/commits/{e.get('sha')}"}
    if kind == "commented":
        return {"__typename": typename, "id": e.get("node_id"), "databaseId": e.get("id"),
                "fullDatabaseId": str(e["id"]) if e.get("id") is not None else None,
                "author": _actor(e.get("user")), "authorAssociation": e.get("author_association"),
                "body": e.get("body"), "createdAt": e.get("created_at"),
                "url": f"{pr_url}#issuecomment-{e.get('id')}"}
    item = {"__typename": typename, "id": e.get("node_id"), "actor": _actor(e.get("actor")),
            "createdAt": e.get("created_at"), "url": f"{pr_url}#event-{e.get('id')}"}
    if kind in ("review_requested", "review_request_removed"):
        if e.get("requested_reviewer") is not None:
            item["requestedReviewer"] = _served_reviewer(_actor(e["requested_reviewer"]))
        elif e.get("requested_team") is not None:
            item["requestedReviewer"] = _team(e["requested_team"])
        else:
            item["requestedReviewer"] = None
    elif kind == "merged":
        item["commit"] = _commit(e.get("commit_id"))
        item["mergeRefName"] = "main"
    elif kind == "closed":
        item["closer"] = _commit(e.get("commit_id"))  # closed by a commit: REST's commit_id
    return item


def _served_reviewer(reviewer: dict | None) -> Callable[[Any], dict | None]:
    """A requested reviewer as the served schema has it: null where its union lacks the type (no
    bot can be requested as a reviewer on a GHES whose RequestedReviewer has no Bot)."""
    def resolve(info: Any) -> dict | None:
        union = get_named_type(info.return_type)
        possible = {t.name for t in info.schema.get_possible_types(union)}
        return reviewer if reviewer is None or reviewer.get("__typename") in possible else None
    return resolve


def _cursor(key: object) -> str:
    return base64.b64encode(f"cursor:v2:{key}".encode()).decode()


def _cursor_key(cursor: str) -> int:
    try:
        text = base64.b64decode(cursor.encode(), validate=True).decode()
        if not text.startswith("cursor:v2:"):
            raise ValueError(text)
        return int(text.removeprefix("cursor:v2:"))
    except ValueError:
        raise GitHubGraphQLError("INVALID_CURSOR_ARGUMENTS",
                                 f"`{cursor}` does not appear to be a valid cursor.") from None


def _connection(items: list[Any], keys: list[int], make: Callable[[Any], dict], *, first: int | None,
                after: str | None, last: int | None, before: str | None) -> dict:
    """A page of `items` (in order, `keys` ascending) as a GitHub connection. A cursor carries its
    item's key, so a page boundary stays put when items are added after it."""
    start, end = 0, len(items)
    if after is not None:
        k = _cursor_key(after)
        start = sum(1 for key in keys if key <= k)
    if before is not None:
        k = _cursor_key(before)
        end = max(start, sum(1 for key in keys if key < k))
    if first is not None:
        end = min(end, start + first)
    if last is not None:
        start = max(start, end - last)
    page = [(keys[i], make(items[i])) for i in range(start, end)]
    cursors = [_cursor(k) for k, _ in page]
    return {
        "totalCount": len(items),
        "nodes": [node for _, node in page],
        "edges": [{"cursor": c, "node": node} for c, (_, node) in zip(cursors, page)],
        "pageInfo": {"hasNextPage": end < len(items), "hasPreviousPage": start > 0,
                     "startCursor": cursors[0] if cursors else None,
                     "endCursor": cursors[-1] if cursors else None},
    }


def _pull_state(pr: dict) -> str | None:
    if pr.get("merged_at"):
        return "MERGED"
    return {"open": "OPEN", "closed": "CLOSED"}.get(pr.get("state") or "")


class _Resolver:
    """Turns Dataset rows into GitHub-shaped objects; connections are callables the default
    resolver calls with the field's arguments."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        # Pull requests (node ids) whose reviews fail to resolve: a partial answer, the error's
        # `path` into that pull request, the other nodes whole (a malformed row on GitHub's side).
        self.broken: set[str] = set()
        # PullRequest connections ("reviews", "files", "timelineItems") the caller may not read:
        # each resolves to FORBIDDEN "Resource not accessible by integration", field by field, in
        # an otherwise whole answer (a GitHub App without the permission, say).
        self.forbidden: set[str] = set()

    def node(self, node_id: str) -> dict:
        found = self.dataset.locate_pull(node_id)
        if found is not None:
            return self._pull(*found)
        review = self.dataset.locate_review(node_id)
        if review is not None:
            org, repo, number, row = review
            return _review(row, lambda: self.dataset.inline_comments(org, repo, number, row))
        raise GitHubGraphQLError("NOT_FOUND", f"Could not resolve to a node with the global id of '{node_id}'")

    def nodes(self, ids: Iterable[str]) -> list[dict | Exception]:
        out: list[dict | Exception] = []
        for node_id in ids:
            try:
                out.append(self.node(node_id))
            except GitHubGraphQLError as exc:  # null at its index, an error with its path
                out.append(exc)
        return out

    def _pull(self, org: str, repo: str, number: int, pr: dict) -> dict:
        ds = self.dataset
        url = pr.get("html_url") or f"https://github.com/{org}/{repo}/pull/{number}"

        def reviews(info: Any, first: int | None = None, after: str | None = None, last: int | None = None,
                    before: str | None = None, states: list[str] | None = None,
                    author: str | None = None) -> dict:
            if pr.get("node_id") in self.broken:
                raise RuntimeError(BROKEN_MESSAGE)
            rows = list(ds.reviews(org, repo, number))
            if states is not None:
                rows = [r for r in rows if r.get("state") in states]
            if author is not None:
                rows = [r for r in rows if (_actor(r.get("user")) or {}).get("login") == author]
            keys = [int(r.get("id") or 0) for r in rows]  # REST order: by id, i.e. by submission
            return _connection(rows, keys, lambda r: _review(r, lambda: ds.inline_comments(org, repo, number, r)),
                               first=first, after=after, last=last, before=before)

        def files(info: Any, first: int | None = None, after: str | None = None, last: int | None = None,
                  before: str | None = None) -> dict:
            rows = ds.files(org, repo, number)[:MAX_SERVED_FILES]  # as REST serves them
            return _connection(rows, list(range(len(rows))), _file, first=first, after=after, last=last,
                               before=before)

        def timeline_items(info: Any, first: int | None = None, after: str | None = None,
                           last: int | None = None, before: str | None = None,
                           itemTypes: list[str] | None = None, since: str | None = None,  # noqa: N803
                           skip: int | None = None) -> dict:
            events = ds.timeline(org, repo, number)
            rows = [(i, e) for i, e in enumerate(events) if e.get("event") in _TIMELINE_TYPES]
            if itemTypes is not None:
                wanted = set(itemTypes)
                rows = [(i, e) for i, e in rows if _TIMELINE_TYPES[e["event"]][1] in wanted]
            if since is not None:
                rows = [(i, e) for i, e in rows if (_event_time(e) or "") >= since]
            if skip:
                rows = rows[skip:]
            by_id = {r.get("id"): r for r in ds.reviews(org, repo, number)}
            return _connection([e for _, e in rows], [i for i, _ in rows],
                               lambda e: _timeline_item(e, url, by_id),
                               first=first, after=after, last=last, before=before)

        def changed_files(info: Any) -> int:
            return len(ds.files(org, repo, number))

        pr_id = pr.get("id")
        return {
            "__typename": "PullRequest", "id": pr.get("node_id"), "databaseId": pr_id,
            "fullDatabaseId": str(pr_id) if pr_id is not None else None, "number": pr.get("number"),
            "title": pr.get("title"), "state": _pull_state(pr), "isDraft": bool(pr.get("draft")),
            "author": _actor(pr.get("user")), "authorAssociation": pr.get("author_association"),
            "createdAt": pr.get("created_at"), "updatedAt": pr.get("updated_at"),
            "closedAt": pr.get("closed_at"), "mergedAt": pr.get("merged_at"), "url": url,
            "changedFiles": changed_files, **{name: self._guarded(name, resolve) for name, resolve in (
                ("reviews", reviews), ("files", files), ("timelineItems", timeline_items))},
        }

    def _guarded(self, name: str, resolve: Callable[..., dict]) -> Callable[..., dict]:
        def guarded(info: Any, **arguments: Any) -> dict:
            if name in self.forbidden:
                raise GitHubGraphQLError("FORBIDDEN", FORBIDDEN_MESSAGE)
            return resolve(info, **arguments)
        return guarded


# ---------------------------------------------------------------------------------------- service
@dataclass
class _Bucket:
    reset_at: float
    used: int = 0


@dataclass
class Answer:
    status: int
    body: dict
    headers: dict[str, str] = field(default_factory=dict)
    points: int = 0  # charged against the caller's GraphQL budget


class GraphQLService:
    """The `/graphql` endpoint's logic, independent of HTTP: budgets per caller, limits, execution."""

    def __init__(self, dataset: Dataset, *, points: int = 5000, window: float = 3600,
                 clock: Callable[[], float] = time.time, heavy_nodes: int | None = None,
                 schema: str = "github.com") -> None:
        self.schema = SCHEMAS[schema]  # a key of SCHEMAS; settable later by name with use_schema
        self.points = points
        self.window = window
        self.clock = clock
        self.heavy_nodes = heavy_nodes
        # Callers whose token has the read:org scope; everyone else is a `repo`-only token, which
        # GitHub refuses any Team field (INSUFFICIENT_SCOPES).
        self.org_readers: set[str] = set()
        self._resolver = _Resolver(dataset)
        self.broken = self._resolver.broken  # see _Resolver
        self.forbidden = self._resolver.forbidden
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    # budgets
    def _bucket(self, caller: str) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.get(caller)
        if bucket is None or now >= bucket.reset_at:
            bucket = self._buckets[caller] = _Bucket(now + self.window)
        return bucket

    def headers(self, caller: str) -> dict[str, str]:
        with self._lock:
            b = self._bucket(caller)
            return {"x-ratelimit-limit": str(self.points),
                    "x-ratelimit-remaining": str(max(0, self.points - b.used)),
                    "x-ratelimit-used": str(b.used),
                    "x-ratelimit-reset": str(math.ceil(b.reset_at)),
                    "x-ratelimit-resource": "graphql"}

    def resource(self, caller: str) -> dict:
        """The `graphql` entry of REST's `/rate_limit`."""
        h = self.headers(caller)
        return {"limit": int(h["x-ratelimit-limit"]), "remaining": int(h["x-ratelimit-remaining"]),
                "reset": int(h["x-ratelimit-reset"]), "used": int(h["x-ratelimit-used"]),
                "resource": "graphql"}

    def exhaust(self, caller: str, seconds: float | None = None) -> None:
        with self._lock:
            b = self._bucket(caller)
            b.used = max(b.used, self.points)
            if seconds is not None:
                b.reset_at = self.clock() + seconds

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()

    def use_schema(self, name: str) -> None:
        """Serve one of SCHEMAS from now on (an older GitHub Enterprise Server's, say)."""
        if name not in SCHEMAS:
            raise ValueError(f"unknown schema {name!r}; expected one of {sorted(SCHEMAS)}")
        self.schema = SCHEMAS[name]

    def rate_limited(self, caller: str, error_type: str = "RATE_LIMITED") -> Answer:
        return Answer(200, {"errors": [{"type": error_type, "message": RATE_LIMITED_MESSAGE}]},
                      self.headers(caller))

    # requests
    def answer(self, caller: str, raw_body: bytes) -> Answer:
        try:
            request = json.loads(raw_body or b"null")
        except ValueError:
            return Answer(400, {"message": "Problems parsing JSON", "documentation_url": DOCS}, self.headers(caller))
        query = request.get("query") if isinstance(request, dict) else None
        if not isinstance(query, str):
            return self._errors(caller, [{"message": "A query attribute must be specified and must be a string."}])
        variables = request.get("variables") or {}
        operation_name = request.get("operationName")
        if not isinstance(variables, dict):
            return self._errors(caller, [{"message": "Variables are invalid JSON."}])

        with self._lock:
            exhausted = self._bucket(caller).used >= self.points
        if exhausted:
            return self.rate_limited(caller)
        try:
            document = parse(query)
        except GraphQLError as exc:
            return self._errors(caller, [_format(exc)])
        schema = self.schema
        errors = validate(schema, document)
        if errors:
            return self._errors(caller, [_validation_error(e) for e in errors])
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            return self._errors(caller, [{"message": "An operation name is required" if operation_name is None
                                          else f"No operation named \"{operation_name}\""}])
        if operation.operation != OperationType.QUERY:  # the emulator serves reads only
            return self._errors(caller, [{"locations": [_location(operation)], "message":
                                          f"The emulator does not serve {operation.operation.value}s."}])
        coerced = get_variable_values(schema, operation.variable_definitions or (), variables)
        if isinstance(coerced, list):
            return self._errors(caller, [_format(e) for e in coerced])
        try:
            analysis = analyze(document, operation, coerced, schema)
        except _LimitError as exc:
            error: dict[str, Any] = {"type": exc.gh_type}
            if exc.path:
                error["path"] = exc.path
            if exc.node is not None and exc.node.loc is not None:
                error["locations"] = [_location(exc.node)]
            error["message"] = exc.message
            return self._errors(caller, [error], data_null=exc.gh_type == "ARGUMENT_LIMIT")
        if analysis.org_fields and caller not in self.org_readers:
            # GitHub refuses the whole query, before running it, for a field the token's scopes
            # do not cover, whether or not any node would have had it.
            return self._errors(caller, [
                {"type": "INSUFFICIENT_SCOPES", "locations": [_location(node)], "message": SCOPES_MESSAGE.format(
                    node.name.value)} for node in analysis.org_fields])
        if self.heavy_nodes is not None and analysis.nodes > self.heavy_nodes:
            ref = f"{int(self.clock()) % 65536:04X}:{analysis.nodes % 65536:04X}"
            return Answer(502, {"data": None, "errors": [{"message": HEAVY_MESSAGE.format(ref)}]},
                          self.headers(caller))

        with self._lock:  # GitHub charges a query whole, even past the budget's end
            bucket = self._bucket(caller)
            bucket.used += analysis.cost
            used, reset_at = bucket.used, bucket.reset_at
        rate_limit = {"cost": analysis.cost, "limit": self.points, "nodeCount": analysis.nodes,
                      "remaining": max(0, self.points - used), "used": used, "resetAt": iso(reset_at)}
        root = {"node": lambda info, id: self._resolver.node(id),  # noqa: A006
                "nodes": lambda info, ids: self._resolver.nodes(ids),
                "rateLimit": lambda info: rate_limit}
        result = execute(schema, document, root_value=root, variable_values=variables,
                         operation_name=operation_name)
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [_format(e) for e in result.errors]
        return Answer(200, body, self.headers(caller), analysis.cost)

    def _errors(self, caller: str, errors: list[dict], data_null: bool = False) -> Answer:
        body: dict[str, Any] = {"data": None, "errors": errors} if data_null else {"errors": errors}
        return Answer(200, body, self.headers(caller))


def _location(node: Any) -> dict[str, int]:
    loc = node.loc
    line = loc.source.body.count("\n", 0, loc.start) + 1
    column = loc.start - (loc.source.body.rfind("\n", 0, loc.start) + 1) + 1
    return {"line": line, "column": column}


_UNDEFINED_FIELD = re.compile(r"Cannot query field '(\w+)' on type '(\w+)'")
_SPREAD_MISMATCH = re.compile(r"objects of type '(\w+)' can never be of type '(\w+)'")


def _validation_error(error: GraphQLError) -> dict:
    """A validation error as GitHub (graphql-ruby) words it: its message, `extensions.code` and
    a `path` into the query document, for the two kinds an older schema gives the pipeline."""
    out = _format(error)
    out["path"] = ["query"]
    if match := _UNDEFINED_FIELD.search(error.message):
        field_name, type_name = match.groups()
        out["extensions"] = {"code": "undefinedField", "typeName": type_name, "fieldName": field_name}
        out["message"] = f"Field '{field_name}' doesn't exist on type '{type_name}'"
    elif match := _SPREAD_MISMATCH.search(error.message):
        parent, fragment = match.groups()
        out["extensions"] = {"code": "fragmentSpreadTypeMismatch", "typeName": parent, "fragmentName": fragment}
        out["message"] = f"Fragment on {fragment} can't be spread inside {parent}"
    return out


def _format(error: GraphQLError) -> dict:
    """GitHub's error shape: `type` (when GitHub gives one), `path`, `locations`, `message`."""
    out: dict[str, Any] = {}
    original = error.original_error
    if isinstance(original, GitHubGraphQLError):
        out["type"] = original.gh_type
    if error.path is not None:
        out["path"] = list(error.path)
    if error.locations:
        out["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    out["message"] = original.message if isinstance(original, GitHubGraphQLError) else error.message
    return out
