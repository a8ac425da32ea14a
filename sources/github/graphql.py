"""Reviews, changed files and timeline events of pull requests over GitHub's GraphQL API, in
batched queries.

One `nodes(ids: [...])` query asks for the first 100 reviews, files and timeline events (of the
kinds landed) of up to `BatchSize.size` pull requests (by `node_id`); a connection with more gets
follow-up queries on its `endCursor`, batched across pull requests (one alias per connection).
Each GraphQL object is mapped into the dict the REST API serves for it, so the REST row builders
(schema.py) make the same rows.

What GraphQL cannot give: a changed file's `sha`, `blob_url` and `previous_filename`, a
timeline event's REST `id` (events are keyed by `node_id`, which both APIs serve), and, without
the read:org scope, a requested team's slug (not asked for, see ServerSchema.reviewer); null, see
docs/rest-and-graphql.md, "What each mode lands".

Reviews also carry their inline comment count (`inline_comments`), asked once all the batches of a
`batches` call are in, by review node id, 100 reviews a query (one point): asked in the reviews'
page, it would be a connection per possible review, 100 per pull request (50 points a query).

Every query reads `rateLimit { cost }`: the points it spent are reported to `on_points`. A query
that may be too heavy (502/504, a read timeout, RESOURCE_LIMITS_EXCEEDED, a node limit) is sent
again with half the pull requests, and the halves are retried; the batch grows back after
successes in a row. GitHub answers 502 to plain blips too: a query of one pull request, which
cannot be split, is retried by the client like any REST request before its lists fail.

A query the server rejects as a document (validation errors, no data: its schema is older than
github.com's, as a GitHub Enterprise Server's may be) makes GraphQLChildren read the server's
schema once (ServerSchema, one introspection query) and ask only for what it has. An error whose
`path` points into one pull request fails only that pull request (a partial answer).

A query the endpoint refuses for a reason REST would not give (no GraphQL API there, the
credential refused for GraphQL only, a document the server rejects even in its own schema's
terms) raises GraphQLRefused, the one place that tells those apart: `auto` mode fetches over REST
from then on (source.py), explicit `graphql` mode handles the underlying error (a rejected
document fails the organisation at once, naming the setting to change).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .client import GitHubClient, GraphQLTooHeavy
from .errors import AuthenticationError, GitHubClientError, GitHubError, GitHubServerError, RateLimitExhausted
from .schema import CHILD_KINDS, FILES_CAP, TIMELINE_EVENTS

logger = logging.getLogger(__name__)

PAGE = 100  # `first:` of every connection (GitHub's maximum)
MAX_IDS = 100  # GitHub's most ids in one `nodes(ids:)`
# Each review's inline comment count. A connection asked only for its totalCount needs no `first`.
INLINE_COMMENTS_QUERY = ("query($ids: [ID!]!) {\n  rateLimit { cost remaining resetAt }\n"
                         "  nodes(ids: $ids) { ... on PullRequestReview { id comments { totalCount } } }\n}\n")
KINDS = CHILD_KINDS  # every child list comes over GraphQL
_HEAVY_ERRORS = frozenset({"RESOURCE_LIMITS_EXCEEDED", "MAX_NODE_LIMIT_EXCEEDED"})
# GraphQL error types that refuse the credential for what REST serves it (see GraphQLRefused).
_REFUSED_ERRORS = frozenset({"FORBIDDEN", "INSUFFICIENT_SCOPES"})


def _refuses_credential(graphql_type: str | None, message: str) -> bool:
    """A GraphQL error that refuses the credential for what REST serves it."""
    return graphql_type in _REFUSED_ERRORS or "resource not accessible" in message.lower()

# The actors that author reviews (an Organization does not).
_ACTOR = "__typename login ... on User { databaseId } ... on Bot { databaseId } ... on Mannequin { databaseId }"
# The actors of timeline events: an organisation can close a pull request, say.
_EVENT_ACTOR = _ACTOR + " ... on Organization { databaseId }"
# The fields of a timeline event: its id, time and actor.
_EVENT = f"id createdAt actor {{ {_EVENT_ACTOR} }}"
# REST's timeline `event` of each GraphQL timeline item type landed (schema.TIMELINE_EVENTS), its
# PullRequestTimelineItemsItemType, and what is asked of it ("{reviewer}": the requested reviewer,
# see ServerSchema.reviewer). A commit is asked for its author date and committer date; a comment
# for its author and time, never its text.
_EVENT_TYPES = {
    "ReviewRequestedEvent": ("review_requested", "REVIEW_REQUESTED_EVENT", _EVENT + " {reviewer}"),
    "ReviewRequestRemovedEvent": ("review_request_removed", "REVIEW_REQUEST_REMOVED_EVENT", _EVENT + " {reviewer}"),
    "ReadyForReviewEvent": ("ready_for_review", "READY_FOR_REVIEW_EVENT", _EVENT),
    "ConvertToDraftEvent": ("convert_to_draft", "CONVERT_TO_DRAFT_EVENT", _EVENT),
    "ClosedEvent": ("closed", "CLOSED_EVENT", _EVENT + " closer { ... on Commit { oid } }"),
    "ReopenedEvent": ("reopened", "REOPENED_EVENT", _EVENT),
    "MergedEvent": ("merged", "MERGED_EVENT", _EVENT + " commit { oid }"),
    # `gitCommit:` - PullRequestCommit.commit is a Commit! where MergedEvent's is a Commit, and
    # GraphQL refuses one response key with two types.
    "PullRequestCommit": ("committed", "PULL_REQUEST_COMMIT", "id gitCommit: commit { id oid authoredDate committedDate }"),
    "IssueComment": ("commented", "ISSUE_COMMENT", f"id createdAt author {{ {_EVENT_ACTOR} }}"),
}
assert {event for event, _, _ in _EVENT_TYPES.values()} == TIMELINE_EVENTS
# Each kind's connection on PullRequest and its arguments besides paging: of the timeline, only
# the kinds landed (REST's other kinds are dropped after the fact).
_CONNECTION = {
    "reviews": ("reviews", ""),
    "files": ("files", ""),
    "events": ("timelineItems", f"itemTypes: [{', '.join(t for _, t, _ in _EVENT_TYPES.values())}], "),
}
_FRAGMENT_OF = {"reviews": "reviewPage", "files": "filePage", "events": "eventPage"}


@dataclass(frozen=True)
class ServerSchema:
    """What the server's GraphQL schema offers of what the queries ask: github.com's by default.
    An older GitHub Enterprise Server lacks some of it; GraphQLChildren asks the server's schema
    (introspection) when it rejects a query, and asks for what the server has."""

    review_id: str = "fullDatabaseId"  # PullRequestReview's numeric id (github.com since 2024-02); else databaseId
    reviewer_types: tuple[str, ...] = ("User", "Bot", "Mannequin")  # RequestedReviewer members with a login
    team_slug: bool = False  # every credential reads the organisation (read:org): ask a team's slug

    @property
    def reviewer(self) -> str:
        """A requested reviewer. A Team's fields (slug, name...) need the read:org scope, and
        GitHub refuses a whole query that asks for a field the token's scopes do not cover, even
        when no team is requested: a `repo` token could not use GraphQL. `__typename` needs none,
        so a team request lands, without its slug, unless `team_slug` (the scopes allow it)."""
        members = " ".join(f"... on {kind} {{ login databaseId }}" for kind in self.reviewer_types)
        team = " ... on Team { slug }" if self.team_slug else ""
        return f"requestedReviewer {{ __typename {members}{team} }}"

    def fragment(self, kind: str) -> str:
        """The fragment that reads one page of `kind`."""
        if kind == "reviews":
            return ("fragment reviewPage on PullRequestReviewConnection {\n"
                    "  pageInfo { hasNextPage endCursor }\n"
                    f"  nodes {{ id {self.review_id} author {{ {_ACTOR} }} authorAssociation state body "
                    "commit { oid } url submittedAt }\n}\n")
        if kind == "files":
            return ("fragment filePage on PullRequestChangedFileConnection {\n"
                    "  pageInfo { hasNextPage endCursor }\n"
                    "  nodes { path additions deletions changeType }\n}\n")
        events = "".join(
            f"    ... on {typename} {{ {fields.replace('{reviewer}', self.reviewer)} }}\n"
            for typename, (_, _, fields) in _EVENT_TYPES.items()
        )
        return ("fragment eventPage on PullRequestTimelineItemsConnection {\n"
                "  pageInfo { hasNextPage endCursor }\n"
                f"  nodes {{\n    __typename\n{events}  }}\n}}\n")


GITHUB_COM = ServerSchema()
# What the queries need to know of the server's schema, in one introspection query.
SCHEMA_QUERY = ('query { rateLimit { cost } review: __type(name: "PullRequestReview") { fields { name } } '
                'reviewer: __type(name: "RequestedReviewer") { possibleTypes { name } } }')


def _connection(kind: str, first: int, after: str | None = None) -> str:
    """The PullRequest field that reads a page of `kind`, e.g. `files(first: 100, after: $after0)`."""
    name, arguments = _CONNECTION[kind]
    return f"{name}({arguments}first: {first}" + (f", after: {after}" if after else "") + ")"


def first_query(kinds: tuple[str, ...] = KINDS, schema: ServerSchema = GITHUB_COM) -> str:
    """The first page of each of `kinds` (an alias per kind) of the pull requests `$ids`.
    (GraphQL refuses a document with an unused fragment: a query carries only those it spreads.)"""
    connections = "".join(f"      {kind}: {_connection(kind, PAGE)} {{ ...{_FRAGMENT_OF[kind]} }}\n" for kind in kinds)
    return (f"query($ids: [ID!]!) {{\n  rateLimit {{ cost remaining resetAt }}\n  nodes(ids: $ids) {{\n"
            f"    ... on PullRequest {{\n      id\n{connections}    }}\n  }}\n}}\n"
            + "".join(schema.fragment(kind) for kind in kinds))


# REST's `status` of a changed file for GraphQL's `changeType` (PatchStatus).
_FILE_STATUS = {"ADDED": "added", "DELETED": "removed", "MODIFIED": "modified", "RENAMED": "renamed",
                "COPIED": "copied", "CHANGED": "changed"}


def graphql_url(base_url: str) -> str:
    """The GraphQL endpoint of a REST base URL: api.github.com/graphql, GHES's /api/graphql for
    /api/v3, else `<base>/graphql` (the bundled emulator)."""
    parts = urlsplit(base_url.rstrip("/"))
    path = parts.path
    if path.endswith("/api/v3"):
        path = path[: -len("/v3")] + "/graphql"
    else:
        path += "/graphql"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


# -- GraphQL objects as the REST API serves them -----------------------------------------------


def _actor(actor: Any) -> dict[str, Any] | None:
    if not isinstance(actor, dict):
        return None  # a deleted account: null, as REST's "user": null
    login, kind = actor.get("login"), actor.get("__typename")
    if kind == "Bot" and isinstance(login, str) and not login.endswith("[bot]"):
        login += "[bot]"  # GraphQL's Bot.login is "dependabot" where REST says "dependabot[bot]"
    return {"login": login, "id": actor.get("databaseId"), "type": kind}


def _big_int(value: Any) -> Any:
    """GraphQL's BigInt is a string; anything else is passed on for the row builder to refuse."""
    return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else value


def review_as_rest(review: Any) -> Any:
    """A PullRequestReview as `GET /pulls/{n}/reviews` serves it (non-objects passed on)."""
    if not isinstance(review, dict):
        return review
    commit = review.get("commit")
    return {
        "id": _big_int(review.get("fullDatabaseId", review.get("databaseId"))),
        "node_id": review.get("id"),
        "user": _actor(review.get("author")),
        "author_association": review.get("authorAssociation"),
        "state": review.get("state"),
        "body": review.get("body"),
        "commit_id": commit.get("oid") if isinstance(commit, dict) else None,
        "html_url": review.get("url"),
        "submitted_at": review.get("submittedAt"),
    }


def file_as_rest(file: Any) -> Any:
    """A PullRequestChangedFile as `GET /pulls/{n}/files` serves it, without what GraphQL lacks
    (`sha`, `blob_url`, `previous_filename`, `patch`)."""
    if not isinstance(file, dict):
        return file
    additions, deletions = file.get("additions"), file.get("deletions")
    both = isinstance(additions, int) and isinstance(deletions, int)
    return {
        "filename": file.get("path"),
        "status": _FILE_STATUS.get(file.get("changeType"), file.get("changeType")),
        "additions": additions,
        "deletions": deletions,
        "changes": additions + deletions if both else None,
    }


def event_as_rest(event: Any) -> Any:
    """A timeline event as `GET /issues/{n}/timeline` serves it, without REST's numeric `id`
    (GraphQL has none). A type not landed keeps its GraphQL name as `event`: the row builder's
    caller drops it, as REST's other kinds."""
    if not isinstance(event, dict) or "__typename" not in event:
        return event
    landed = _EVENT_TYPES.get(event["__typename"])
    if landed is None:
        return {"event": event["__typename"]}
    if landed[0] == "committed":  # REST's committed item: the commit's node id, sha and dates
        commit = event.get("gitCommit")
        if not isinstance(commit, dict):
            return {"node_id": event.get("id"), "event": "committed", "author": None}
        return {"node_id": commit.get("id"), "event": "committed", "sha": commit.get("oid"),
                "author": {"date": commit.get("authoredDate")}, "committer": {"date": commit.get("committedDate")}}
    if landed[0] == "commented":
        return {"node_id": event.get("id"), "event": "commented",
                "actor": _actor(event.get("author")), "created_at": event.get("createdAt")}
    reviewer = event.get("requestedReviewer")
    is_team = isinstance(reviewer, dict) and reviewer.get("__typename") == "Team"
    commit = event.get("commit") or event.get("closer")
    return {
        "node_id": event.get("id"),
        "event": landed[0],
        "actor": _actor(event.get("actor")),
        "created_at": event.get("createdAt"),
        "requested_reviewer": None if is_team else _actor(reviewer),
        "requested_team": {"slug": reviewer.get("slug")} if is_team else None,  # see ServerSchema.reviewer
        "commit_id": commit.get("oid") if isinstance(commit, dict) else None,
    }


_AS_REST: dict[str, Callable[[Any], Any]] = {"reviews": review_as_rest, "files": file_as_rest,
                                              "events": event_as_rest}


# -- batching ----------------------------------------------------------------------------------


@dataclass
class BatchSize:
    """How many pull requests (or follow-up connections) one query asks for, shared by threads.

    A query that may be too heavy (502/504, a timeout, a resource limit) is sent again in halves.
    GitHub answers 502 to plain blips too, so one such answer halves only that query; the shared
    size halves at the second since it last changed (the queries are heavy, not unlucky). It
    grows by a quarter after `grow_after` successes in a row."""

    size: int = 34  # a page of 100 pull requests in 3 queries of one point each
    # The most that still costs one point: 1 + 3 x 49 = 148 connection requests round to 1 point,
    # 50 pull requests (151) to 2. Well inside GitHub's 100 ids and 500,000 nodes.
    ceiling: int = 49
    grow_after: int = 3
    _successes: int = 0
    _heavy: int = 0  # heavy answers since the size last changed
    _heavy_sent: int = 0  # the largest query of those: a blip on a small one does not drag the size to 1
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def current(self) -> int:
        with self._lock:
            return self.size

    def too_heavy(self, sent: int) -> int:
        """A query of `sent` was answered as too heavy: how many to send next (half of `sent`),
        or 0 when it asked for one (it cannot be made smaller)."""
        with self._lock:
            self._successes = 0
            self._heavy += 1
            self._heavy_sent = max(self._heavy_sent, sent)
            if self._heavy >= 2:
                self.size = max(1, min(self.size, self._heavy_sent) // 2)
                self._heavy = self._heavy_sent = 0
            return sent // 2

    def succeeded(self) -> None:
        with self._lock:
            self._successes += 1
            if self._successes >= self.grow_after and self.size < self.ceiling:
                self.size = min(self.ceiling, self.size + max(1, self.size // 4))
            if self._successes >= self.grow_after:  # at the ceiling too: old heavy answers are forgotten
                self._successes = self._heavy = self._heavy_sent = 0


class TooHeavy(GitHubError):
    """GitHub refused a query as too large (RESOURCE_LIMITS_EXCEEDED, a node limit)."""


class GraphQLDocumentRejected(GitHubClientError):
    """The server rejected the query as a document (HTTP 200, validation errors, no data): its
    GraphQL schema lacks a field, type or argument the query names, as an older GitHub
    Enterprise Server's does. The same query fails the same way every time."""


# GraphQL validation errors: GitHub gives them an `extensions.code` (undefinedField,
# undefinedType, argumentNotAccepted...) and no `type`; these messages tell them apart otherwise.
_INVALID_DOCUMENT = re.compile(
    r"doesn't exist on type|no such type|can't be a fragment condition|can't be spread inside|"
    r"doesn't accept argument|cannot query field|unknown type|unknown argument|parse error", re.IGNORECASE)


def _document_rejection(answer: dict[str, Any]) -> str | None:
    """What the server found wrong with the query document (code and message of each error), or
    None when the answer is no validation failure."""
    errors = answer.get("errors")
    if answer.get("data") is not None or not isinstance(errors, list):
        return None
    found = []
    for error in errors:
        if not isinstance(error, dict) or error.get("type"):
            continue
        code = (error.get("extensions") or {}).get("code") if isinstance(error.get("extensions"), dict) else None
        message = str(error.get("message", ""))
        if code or _INVALID_DOCUMENT.search(message):
            found.append(f"{code}: {message}" if code else message)
    return "; ".join(dict.fromkeys(found)) or None


class GraphQLRefused(GitHubError):
    """The GraphQL endpoint refused a query for a reason REST would not: 404/410 (no GraphQL API
    at that URL: an old GHES, a proxy), 401/403 that is no rate limit, or a FORBIDDEN /
    INSUFFICIENT_SCOPES / "Resource not accessible" error (the token's type or scopes refused for
    GraphQL; REST listed the same pull requests with it). Rate limits, 5xx, timeouts and
    NOT_FOUND nodes are not refusals. `error` is the error itself, `reason` a short why."""

    def __init__(self, reason: str, error: GitHubError) -> None:
        super().__init__(f"{reason}: {error}", status=error.status, url=error.url)
        self.reason = reason
        self.error = error


def refusal(error: GitHubError, graphql_type: str | None = None) -> GraphQLRefused | None:
    """`error`, from the GraphQL endpoint (an HTTP answer, or a GraphQL error of `graphql_type`),
    as a GraphQLRefused when it is one; else None."""
    if error.status in (404, 410):
        return GraphQLRefused("no GraphQL API at this URL", error)
    if isinstance(error, AuthenticationError) and error.status in (401, 403):  # never a rate limit
        return GraphQLRefused("the credential is refused for GraphQL", error)
    if _refuses_credential(graphql_type, str(error)):
        return GraphQLRefused("the credential is refused for GraphQL", error)
    if isinstance(error, GraphQLDocumentRejected):
        return GraphQLRefused("the server's GraphQL schema lacks what the query asks for", error)
    return None


def _concerns_the_run(error: GitHubError) -> bool:
    """An error that no single pull request is to blame for: a rate limit, a refusal of GraphQL,
    a rejected document, no credential left (401)."""
    return isinstance(error, (RateLimitExhausted, GraphQLRefused, GraphQLDocumentRejected)) or (
        isinstance(error, AuthenticationError) and error.status == 401)


@dataclass
class Children:
    """One pull request's child lists (the kinds asked for, but the reviews when their inline
    comments could not be counted for the rate limit), REST-shaped, complete."""

    node_id: str
    items: dict[str, list[Any]] = field(default_factory=dict)
    pages: int = 1  # queries that carried this pull request's children


@dataclass
class BatchResult:
    """What one batch of pull requests came to: the children of each, the ones GitHub no longer
    has (NOT_FOUND, or null), and the ones whose part of the answer was an error (a partial
    answer: GitHub's error `path` points into that pull request, the others are whole)."""

    children: dict[str, Children] = field(default_factory=dict)
    gone: dict[str, str] = field(default_factory=dict)  # node id -> GitHub's message
    failed: dict[str, str] = field(default_factory=dict)  # node id -> what went wrong

    def fail(self, node_id: str, why: str) -> None:
        self.children.pop(node_id, None)
        self.failed.setdefault(node_id, why)


@dataclass
class _Pending:
    node_id: str
    kind: str
    cursor: str


class GraphQLChildren:
    """Fetches reviews, files and timeline events of pull requests by node id, in adaptive batches."""

    def __init__(self, client: GitHubClient, url: str, batch: BatchSize | None = None,
                 on_points: Callable[[int], None] | None = None, team_slugs: bool = False) -> None:
        self.client = client
        self.url = url
        self.batch = batch or BatchSize()
        self.on_points = on_points
        # What the server offers; learnt when it rejects a query (_adapt). Team slugs only when
        # every credential is known to have read:org (X-OAuth-Scopes of the REST answers so far).
        self.schema = replace(GITHUB_COM, team_slug=team_slugs)
        self._schema_asked = False
        self._schema_lock = threading.Lock()

    def batches(self, node_ids: list[str], kinds: tuple[str, ...] = KINDS
                ) -> Iterator[tuple[list[str], BatchResult | GitHubError]]:
        """Each batch of `node_ids` with its result (their `kinds` lists), or the error that failed
        it (the caller decides per pull request). RateLimitExhausted propagates: the caller stops.

        The reviews' inline comments are counted once every batch is in, all the batches' reviews
        together (a page of 100 pull requests holds about 2 queries of them, where counting each
        batch's apart takes 3): the results come then."""
        done: list[tuple[list[str], BatchResult | GitHubError]] = []
        failure: GitHubError | None = None
        try:
            done.extend(self._batches(node_ids, kinds))
            failure = next((r for _, r in done if isinstance(r, GraphQLRefused)), None)
            if "reviews" in kinds and failure is None:
                self._count_inline_comments([r for _, r in done if isinstance(r, BatchResult)])
        except RateLimitExhausted:
            # The batches fetched are whole but for their reviews' counts: their files and events
            # land, their reviews wait on the retry list (`Children.items` without "reviews").
            for _, result in done:
                for children in result.children.values() if isinstance(result, BatchResult) else ():
                    children.items.pop("reviews", None)
            yield from done
            raise
        except GitHubError as exc:  # counting, no pull request to blame (a refusal, say): every batch has it
            failure = refusal(exc) or exc
        if failure is not None:  # the batches fetched go with it (a refusal: `auto` fetches them over REST)
            done = [(ids, failure if isinstance(r, BatchResult) else r) for ids, r in done]
        yield from done

    def _batches(self, node_ids: list[str], kinds: tuple[str, ...]
                 ) -> Iterator[tuple[list[str], BatchResult | GitHubError]]:
        start = 0
        half: int | None = None  # after a heavy answer: the size of its halves
        while start < len(node_ids):
            # As few queries as the batch size allows, of equal size: a page of 100 at 49 is
            # 34 + 33 + 33, not 49 + 49 + 2 (the same 3 points, lighter queries).
            left = len(node_ids) - start
            queries = -(-left // self.batch.current())
            ids = node_ids[start : start + min(half or left, -(-left // queries))]
            try:
                result = self.fetch(ids, kinds)
            except (GraphQLTooHeavy, TooHeavy) as exc:
                half = self.batch.too_heavy(len(ids))
                if half:
                    logger.warning("GraphQL query of %d pull requests too heavy or failed (%s); sent again in "
                                   "smaller queries, %d of them first", len(ids), exc, half)
                    continue
                yield ids, exc
            except RateLimitExhausted:
                raise
            except GraphQLRefused as exc:
                yield node_ids[start:], exc  # the rest would be refused alike: not asked
                return
            except GitHubError as exc:
                yield ids, exc
                start += len(ids)
                continue
            else:
                self.batch.succeeded()
                yield ids, result
            half = None
            start += len(ids)

    def fetch(self, node_ids: list[str], kinds: tuple[str, ...] = KINDS) -> BatchResult:
        """The complete `kinds` lists of `node_ids`: one query, then follow-up queries. A query
        the server rejects as a document is asked again in what its schema offers, once; then
        it is a GraphQLRefused."""
        while True:
            schema = self.schema
            try:
                return self._fetch(node_ids, kinds, schema)
            except GraphQLRefused as exc:
                if not schema.team_slug:
                    raise
                # The scopes said read:org, yet the query was refused (an organisation's SSO the
                # token is not authorised for, say): without team slugs from now on.
                with self._schema_lock:
                    if self.schema == schema:
                        self.schema = replace(schema, team_slug=False)
                        logger.info("GraphQL at %s refused the query asking for team slugs (%s); requested "
                                    "teams land without their slug", self.url, exc.error)
            except GraphQLDocumentRejected as exc:
                if not self._adapt(schema):
                    raise refusal(exc) or exc from None

    def _adapt(self, rejected: ServerSchema) -> bool:
        """Ask the server's schema (one introspection query, once per run) after it rejected a
        query built for `rejected`; True when there is a query it may accept."""
        with self._schema_lock:
            if self.schema != rejected:
                return True  # another thread learnt it meanwhile
            if self._schema_asked:
                return False
            self._schema_asked = True
            try:
                answer = self.client.post_graphql(self.url, SCHEMA_QUERY, {}, splittable=False)
            except (RateLimitExhausted, GitHubServerError):
                self._schema_asked = False  # no answer about the schema: asked again later
                raise
            except GitHubError as exc:
                logger.warning("GraphQL at %s: cannot read its schema (%s)", self.url, exc)
                return False
            data = answer.get("data") if isinstance(answer.get("data"), dict) else {}
            cost = (data.get("rateLimit") or {}).get("cost")
            if isinstance(cost, int) and self.on_points:
                self.on_points(cost)
            review = {f.get("name") for f in ((data.get("review") or {}).get("fields") or []) if isinstance(f, dict)}
            members = {t.get("name") for t in ((data.get("reviewer") or {}).get("possibleTypes") or [])
                       if isinstance(t, dict)}
            review_id = next((name for name in ("fullDatabaseId", "databaseId") if name in review), None)
            if review_id is None:
                return False
            learnt = ServerSchema(review_id, tuple(t for t in GITHUB_COM.reviewer_types if t in members),
                                  rejected.team_slug)
            if learnt == rejected:
                return False
            missing = [f"PullRequestReview.{rejected.review_id}"] if review_id != rejected.review_id else []
            missing += [f"{t} among RequestedReviewer's types" for t in rejected.reviewer_types
                        if t not in learnt.reviewer_types]
            logger.warning("GraphQL at %s: the server's schema has no %s (an older GitHub Enterprise Server); "
                           "the queries ask for what it has (reviews' id from %s)",
                           self.url, ", ".join(missing), review_id)
            self.schema = learnt
            return True

    def _fetch(self, node_ids: list[str], kinds: tuple[str, ...], schema: ServerSchema) -> BatchResult:
        data, errors = self._query(first_query(kinds, schema), {"ids": node_ids}, splittable=len(node_ids) > 1)
        nodes = data.get("nodes")
        if not isinstance(nodes, list) or len(nodes) != len(node_ids):
            raise GitHubClientError(f"POST {self.url}: `nodes` is not a list of {len(node_ids)}", url=self.url)
        result = BatchResult()
        pending: list[_Pending] = []
        for node_id, node in zip(node_ids, nodes):
            if not self._usable(result, node_id, node, errors.get(node_id)):
                continue
            if not isinstance(node, dict) or kinds[0] not in node:
                result.fail(node_id, f"POST {self.url}: {node_id} is not a pull request")
                continue
            children = result.children[node_id] = Children(node_id, {kind: [] for kind in kinds})
            try:
                pending.extend(p for kind in kinds for p in self._take(children, kind, node.get(kind)))
            except GitHubClientError as exc:
                result.fail(node_id, str(exc))
        half: int | None = None  # after a heavy answer: the size of its halves
        while pending:
            size = min(half or len(pending), self.batch.current())
            asked, rest = pending[:size], pending[size:]
            try:
                left = self._follow(result, asked)
            except (GraphQLTooHeavy, TooHeavy) as exc:
                half = self.batch.too_heavy(size)
                if half:
                    continue
                failure: GitHubError = exc
            except GitHubError as exc:
                if _concerns_the_run(exc):
                    raise
                failure = exc
            else:
                half = None
                pending = left + rest
                continue
            # A follow-up page that cannot be had fails only the pull requests it was for: the
            # others of the batch are complete, or still have pages to come.
            for p in asked:
                result.fail(p.node_id, str(failure))
            half = None
            pending = [p for p in rest if p.node_id in result.children]
        return result

    def _count_inline_comments(self, results: list[BatchResult]) -> None:
        """Set each review's `inline_comments`: the results' reviews in queries of up to 100 (of
        equal size). A review gone meanwhile (a pending one deleted) keeps None; a query or a
        review that fails fails its pull requests, retried as any list. An error no pull request
        is to blame for (a rate limit, a refusal) is raised."""
        owner: dict[str, tuple[BatchResult, str]] = {
            review["node_id"]: (result, node_id) for result in results
            for node_id, children in result.children.items() for review in children.items["reviews"]
            if isinstance(review, dict) and isinstance(review.get("node_id"), str)}
        ids = list(owner)
        queries = -(-len(ids) // MAX_IDS)
        counts: dict[str, int] = {}
        for q in range(queries):
            asked = ids[q * len(ids) // queries : (q + 1) * len(ids) // queries]
            try:
                data, errors = self._query(INLINE_COMMENTS_QUERY, {"ids": asked}, splittable=False)
                nodes = data.get("nodes")
                if not isinstance(nodes, list) or len(nodes) != len(asked):
                    raise GitHubClientError(f"POST {self.url}: `nodes` is not a list of {len(asked)}", url=self.url)
            except GitHubError as exc:
                if _concerns_the_run(exc):
                    raise
                for review_id in asked:
                    result, node_id = owner[review_id]
                    result.fail(node_id, f"inline comments of its reviews: {exc}")
                continue
            for review_id, node in zip(asked, nodes):
                error = errors.get(review_id)
                if node is None and (error is None or error[0] == "NOT_FOUND"):
                    continue
                comments = node.get("comments") if isinstance(node, dict) else None
                total = comments.get("totalCount") if isinstance(comments, dict) else None
                if error is not None or not isinstance(total, int) or isinstance(total, bool):
                    why = f"GraphQL error {error[0] or '(no type)'}: {error[1]}" if error else "no comment count"
                    result, node_id = owner[review_id]
                    result.fail(node_id, f"POST {self.url}: inline comments of review {review_id}: {why}")
                    continue
                counts[review_id] = total
        for result in results:
            for children in result.children.values():
                children.items["reviews"] = [
                    {**review, "inline_comments": counts.get(review["node_id"])}
                    if isinstance(review, dict) and isinstance(review.get("node_id"), str) else review
                    for review in children.items["reviews"]]

    def _usable(self, result: BatchResult, node_id: str, node: Any, error: tuple[str | None, str] | None) -> bool:
        """False when the node is gone (null, NOT_FOUND) or its part of the answer is an error."""
        if node is None and (error is None or error[0] == "NOT_FOUND"):
            result.children.pop(node_id, None)
            result.gone[node_id] = error[1] if error else "null node"
            return False
        if error is not None:
            kind, message = error
            result.fail(node_id, f"POST {self.url}: GraphQL error {kind or '(no type)'} for {node_id}: {message}")
            return False
        return True

    # -- one query ---------------------------------------------------------------------------

    def _query(self, query: str, variables: dict[str, Any], splittable: bool
               ) -> tuple[dict[str, Any], dict[str, tuple[str | None, str]]]:
        """The answer's data, and the first error (GitHub's type and message) of each node id an
        error's path points into: a partial answer, whose other nodes are whole. Raises on an
        error about the whole query."""
        try:
            answer = self.client.post_graphql(self.url, query, variables, splittable=splittable)
        except GitHubError as exc:
            raise refusal(exc) or exc
        rejected = _document_rejection(answer)
        if rejected is not None:
            raise GraphQLDocumentRejected(f"POST {self.url}: the server rejects the query: {rejected}", url=self.url)
        data = answer.get("data")
        errors = answer.get("errors") or []
        by_node: dict[str, tuple[str | None, str]] = {}
        if isinstance(data, dict):
            cost = (data.get("rateLimit") or {}).get("cost")
            if isinstance(cost, int) and self.on_points:
                self.on_points(cost)
        for error in errors if isinstance(errors, list) else [errors]:
            kind = error.get("type") if isinstance(error, dict) else None
            message = str(error.get("message") if isinstance(error, dict) else error)
            if kind in _HEAVY_ERRORS or "node limit" in message.lower():
                raise TooHeavy(f"POST {self.url}: {kind}: {message}", url=self.url)
            # A refusal of the credential is one, wherever its path points (GitHub refuses it
            # field by field in an otherwise partial answer).
            node_id = self._node_of(error, variables) if isinstance(data, dict) and isinstance(error, dict) else ""
            if node_id and not _refuses_credential(kind, message):
                by_node.setdefault(node_id, (kind, message))
                continue
            if kind == "NOT_FOUND" and isinstance(data, dict):
                continue
            code = kind or (error.get("extensions") or {}).get("code") if isinstance(error, dict) else None
            failure = GitHubClientError(f"POST {self.url}: GraphQL error {code or '(no type)'}: {message}", url=self.url)
            raise refusal(failure, kind) or failure
        if not isinstance(data, dict):
            raise GitHubClientError(f"POST {self.url}: an answer without data", url=self.url)
        return data, by_node

    @staticmethod
    def _node_of(error: dict[str, Any], variables: dict[str, Any]) -> str:
        """The node id an error's `path` points into (["nodes", i, ...] or [alias, ...]), or ""
        (a path into the query document, as validation errors have, or none)."""
        path = error.get("path") or []
        if len(path) >= 2 and path[0] == "nodes" and isinstance(path[1], int):
            ids = variables.get("ids") or []
            return str(ids[path[1]]) if 0 <= path[1] < len(ids) else ""
        if path and isinstance(path[0], str) and re.fullmatch(r"c\d+", path[0]):
            return str(variables.get(f"id{path[0][1:]}", ""))
        return ""

    def _take(self, children: Children, kind: str, connection: Any) -> list[_Pending]:
        """Add a connection page's items; what is left to fetch of it."""
        if not isinstance(connection, dict) or not isinstance(connection.get("nodes"), list):
            raise GitHubClientError(f"POST {self.url}: {kind} of {children.node_id} has no nodes", url=self.url)
        items = children.items[kind]
        items.extend(_AS_REST[kind](node) for node in connection["nodes"])
        info = connection.get("pageInfo") or {}
        if kind == "files" and len(items) >= FILES_CAP:
            del items[FILES_CAP:]  # as REST: the first 3,000 files, flagged truncated by the row builder
            return []
        if info.get("hasNextPage") and info.get("endCursor"):
            return [_Pending(children.node_id, kind, str(info["endCursor"]))]
        return []

    def _follow(self, result: BatchResult, pending: list[_Pending]) -> list[_Pending]:
        """One follow-up query for the next page of each pending connection; what is left."""
        params = ", ".join(f"$id{i}: ID!, $after{i}: String!" for i in range(len(pending)))
        fields = "\n".join(
            f"  c{i}: node(id: $id{i}) {{ ... on PullRequest {{ {p.kind}: {_connection(p.kind, PAGE, f'$after{i}')} "
            f"{{ ...{_FRAGMENT_OF[p.kind]} }} }} }}"
            for i, p in enumerate(pending)
        )
        fragments = "".join(self.schema.fragment(kind) for kind in KINDS if any(p.kind == kind for p in pending))
        query = f"query({params}) {{\n  rateLimit {{ cost remaining resetAt }}\n{fields}\n}}\n{fragments}"
        variables: dict[str, Any] = {}
        for i, p in enumerate(pending):
            variables[f"id{i}"], variables[f"after{i}"] = p.node_id, p.cursor
        data, errors = self._query(query, variables, splittable=len(pending) > 1)
        left: list[_Pending] = []
        for i, p in enumerate(pending):
            children = result.children.get(p.node_id)
            if children is None:
                continue  # gone or failed in an earlier follow-up, or another alias of this one
            node = data.get(f"c{i}")
            if not self._usable(result, p.node_id, node, errors.get(p.node_id)):
                continue
            children.pages += 1
            try:
                left.extend(self._take(children, p.kind, node.get(p.kind) if isinstance(node, dict) else None))
            except GitHubClientError as exc:
                result.fail(p.node_id, str(exc))
        return [p for p in left if p.node_id in result.children]
