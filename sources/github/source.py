"""The dlt source: an organisation's pull requests, their reviews, changed files and timeline events.

Incremental by design: each repository keeps its own cursor in source state (see state.py), never
a shared `dlt.sources.incremental` on a fan-out transformer, whose one cursor for all parents
loses later parents' rows (dlt issue 2838). A repository whose first pull-request page is unchanged costs one conditional
request that GitHub answers 304 (free); reviews, files and events are fetched only for pull requests
that are new or changed.

Failures stay where they happen: a repository or pull request that keeps failing goes on a retry
list (with a backoff) and the rest of the organisation lands; a malformed item is set aside in
`rejected_items`. A listing that stops (rate limit, end of a chunk, a fault) resumes where it
stopped, so any backfill converges.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import dlt
import pyarrow as pa

from sources.github.client import GitHubClient
from sources.github.errors import (
    AuthenticationError,
    GitHubClientError,
    GitHubError,
    NotFoundError,
    RateLimitExhausted,
)
from sources.github.graphql import KINDS as GRAPHQL_KINDS
from sources.github.graphql import GraphQLChildren, GraphQLDocumentRejected, GraphQLRefused
from sources.github.progress import FailedItem, SyncProgress
from sources.github.schema import (
    CHILD_FETCHES,
    CHILD_KINDS,
    FILES_CAP,
    PULL_REQUEST_EVENTS,
    PULL_REQUEST_FILES,
    PULL_REQUEST_REVIEWS,
    PULL_REQUESTS,
    REJECTED_ITEMS,
    TIMELINE_EVENTS,
    MalformedItem,
    TableSpec,
    child_fetch_row,
    event_row,
    file_row,
    parse_time,
    pull_request_row,
    rejected_row,
    review_row,
    to_table,
)
from sources.github.state import DAY, iso, repo_state, retry_delay, row_hash
from sources.github.teams import fetch_teams

__all__ = ["SyncContext", "SyncProgress", "FailedItem", "github_source"]

logger = logging.getLogger(__name__)

PER_PAGE = 100
# Where each kind's lists are, under /repos/{org}/{repo}/: a review's inline comments are only
# counted, from the pull request's list of them (a request more than the reviews alone, skipped
# when there is no review to count them for).
_CHILD_PATHS = {"reviews": ("pulls/{number}/reviews", "pulls/{number}/comments"),
                "files": ("pulls/{number}/files",), "events": ("issues/{number}/timeline",)}
# The most requests one pull request's child lists take over REST, a page each.
REST_LISTS_PER_PULL = sum(len(paths) for paths in _CHILD_PATHS.values())
_Rows = tuple[list[dict[str, Any]], list[dict[str, Any]]]  # rows to land, rejected rows
_Fetched = tuple[list[dict[str, Any]], list[dict[str, Any]], "dict[str, Any] | None"]  # ... and the fetch record
_PULLS_PARAMS = {"state": "all", "sort": "updated", "direction": "desc", "per_page": PER_PAGE}


@dataclass
class SyncContext:
    """One organisation's sync across the chunks of a run: the client, one thread pool for the
    child lists, the options and the progress."""

    org: str
    client: GitHubClient
    progress: SyncProgress = field(default_factory=SyncProgress)
    since: str | None = None
    full_refresh: bool = False
    chunk_requests: int | None = None  # end a chunk once its listings committed it to this many requests
    reconcile_days: int = 7  # re-read reviews of pull requests updated this recently, daily
    repositories: list[dict[str, Any]] | None = None  # listed once per run
    finished: set[int] = field(default_factory=set)  # repositories done in an earlier chunk
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    # Repository id -> the oldest `updated_at` this chunk lands rows of (see Manifest.repositories).
    covered: dict[int, str] = field(default_factory=dict)
    listed: set[int] = field(default_factory=set)  # pull requests this run landed with every child list
    failed_this_run: set[tuple[str, str]] = field(default_factory=set)  # (repo id, PR id): backoff grown once
    seen: set[int] = field(default_factory=set)  # repositories whose saved state this run has looked at
    due_now: set[int] = field(default_factory=set)  # repositories retried ahead of their backoff this run
    retry_now: bool = False  # every item on the retry list is due in this run, whatever its backoff
    # GraphQL mode: the endpoint that fetches listed pull requests' child lists (None: REST).
    graphql_url: str | None = None
    # `auto` mode: once GraphQL refuses for a reason REST would not, REST for the rest of the run.
    graphql_fallback: bool = False
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)
    _graphql: GraphQLChildren | None = field(default=None, repr=False)
    _charged: int = 0

    def graphql_children(self) -> GraphQLChildren:
        """The run's GraphQL fetcher: one adaptive batch size across the chunks of a run."""
        with self.lock:
            if self._graphql is None:
                assert self.graphql_url is not None
                team_slugs = self.client.auth.reads_org()
                if not team_slugs:
                    logger.info("GraphQL: the credentials are not known to have read:org (X-OAuth-Scopes), so a "
                                "requested team lands without its slug; REST mode lands it")
                self._graphql = GraphQLChildren(self.client, self.graphql_url, on_points=self.progress.add_graphql_points,
                                                team_slugs=team_slugs)
            return self._graphql

    @property
    def pool(self) -> ThreadPoolExecutor:
        with self.lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.client.max_concurrency, thread_name_prefix="github-children")
            return self._pool

    def start_chunk(self) -> None:
        self._charged = 0
        self.covered = {}
        self.progress.more_to_do = False
        self.progress.chunks += 1

    def cover(self, repo_id: int, updated_at: str | None) -> None:
        """This chunk lands rows of a pull request of `repo_id` updated at `updated_at`."""
        with self.lock:
            if updated_at is not None and (repo_id not in self.covered or updated_at < self.covered[repo_id]):
                self.covered[repo_id] = updated_at

    def charge(self, requests: int) -> None:
        """Count requests this chunk has committed to: a page, and the child lists of its rows."""
        with self.lock:
            self._charged += requests

    def affordable(self, rows: int, per_row: int) -> int:
        """How many of a page's `rows` (costing `per_row` requests each) this chunk takes.

        The whole page when it overshoots the budget by at most half (cutting a page costs the
        next chunk a second read of it), else what fits (at least one row, so a chunk progresses).
        A page of at most half the budget is always whole: its listing found the chunk not full
        before reading it, and only other repositories' pages, charged concurrently since, could
        make it look too big (they did, in 1 of 6 runs, and cut a page to one row).
        In GraphQL mode a page is never cut: its child lists cost a few points, and a cut would
        cost a second read of the page and smaller, dearer batches (the bench measured 1.65x the
        least points with cuts).
        """
        with self.lock:
            if self.chunk_requests is None or self.graphql_url is not None:
                return rows
            cost = rows * per_row
            if cost <= 0.5 * self.chunk_requests or self._charged + cost <= 1.5 * self.chunk_requests:
                return rows
            return min(rows, max(1, (self.chunk_requests - self._charged) // per_row))

    def chunk_full(self) -> bool:
        """Listings check this before each page (and take only the rows that fit, see `affordable`)."""
        with self.lock:
            return self.chunk_requests is not None and self._charged >= self.chunk_requests

    def now(self) -> float:
        return self.client.clock.now()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _is_repository_failure(exc: GitHubError) -> bool:
    """Errors scoped to one repository or pull request. A 401 means no credential is left, and a
    rate limit is a stop: those concern the whole organisation."""
    if isinstance(exc, (NotFoundError, RateLimitExhausted)):
        return False
    return not (isinstance(exc, AuthenticationError) and exc.status == 401)


def _local_time(epoch: float | None) -> str:
    return "the next run" if epoch is None else str(iso(datetime.fromtimestamp(epoch).astimezone()))


def _label(ctx: SyncContext, repo: str, number: int | None = None) -> str:
    return f"{ctx.org}/{repo}" + (f"#{number}" if number is not None else "")


# -- repositories ------------------------------------------------------------------------------


@dlt.resource(name="repositories", selected=False)
def repositories(ctx: SyncContext) -> Iterator[dict[str, Any]]:
    """The organisation's repositories (id and name); each listing page is revalidated with its
    ETag. Listed once per run: later chunks reuse the list."""
    if ctx.repositories is None:
        ctx.repositories = _list_repositories(ctx)
        if ctx.full_refresh and ctx.repositories is not None:
            _start_listings_over(ctx, ctx.repositories)
    if ctx.repositories is None:
        return
    ctx.progress.repositories_total = len(ctx.repositories)
    yield from (repo for repo in ctx.repositories if repo["id"] not in ctx.finished)


def _start_listings_over(ctx: SyncContext, listed: list[dict[str, Any]]) -> None:
    """A full refresh: every repository's pull-request listing starts over, once a run, in the
    state its first chunk commits; later chunks, and the next run if this one stops or dies
    halfway, resume the new listings like any backfill."""
    state = dlt.current.source_state()
    with ctx.lock:
        for repo in listed:
            saved = repo_state(state, int(repo["id"]), repo["name"])
            for key in ("cursor", "at_cursor", "etag", "since", "listing"):
                saved.pop(key, None)


def _list_repositories(ctx: SyncContext) -> list[dict[str, Any]] | None:
    state = dlt.current.resource_state()
    old_pages: list[dict[str, Any]] = [] if ctx.full_refresh else state.get("pages", [])
    new_pages: list[dict[str, Any]] = []
    url: str | None = f"/orgs/{ctx.org}/repos"
    params: dict[str, Any] | None = {"per_page": PER_PAGE, "type": "all"}
    try:
        while url:
            cached = old_pages[len(new_pages)] if len(new_pages) < len(old_pages) else None
            usable = cached is not None and _under_base(ctx, cached["url"]) == url and "repositories" in cached
            page = ctx.client.get_page(url, params=params, etag=cached["etag"] if usable else None)
            if page.not_modified:
                assert cached is not None
                new_pages.append(cached)
            else:
                listed = [{"id": repo["id"], "name": repo["name"]} for repo in page.items]
                next_url = _under_base(ctx, page.next_url) if page.next_url else None  # see _under_base
                new_pages.append({"url": url, "etag": page.etag, "next_url": next_url, "repositories": listed})
            url, params = new_pages[-1]["next_url"], None
            url = _under_base(ctx, url) if url else None  # pages saved by older versions: absolute
    except RateLimitExhausted as exc:
        ctx.progress.stop(f"rate limit exhausted while listing repositories: {exc}")
        return None
    state["pages"] = new_pages
    listed = [repo for page in new_pages for repo in page["repositories"]]
    logger.info("%s: %d repositories", ctx.org, len(listed))
    return listed


# -- pull requests -----------------------------------------------------------------------------


@dlt.transformer(name="pull_requests", write_disposition="append", parallelized=True)
def pull_requests(repository: dict[str, Any], ctx: SyncContext) -> Iterator[pa.Table]:
    """A repository's new and changed pull requests, newest-updated first.

    Repositories are listed concurrently (one repository's pages stay in order).
    """
    repo_id, repo = int(repository["id"]), repository["name"]
    if ctx.progress.stopped_early:
        return
    state = dlt.current.source_state()
    with ctx.lock:
        saved = repo_state(state, repo_id, repo)
        first_sight = repo_id not in ctx.seen
        ctx.seen.add(repo_id)
    label = _label(ctx, repo)
    synced_before = saved.get("cursor") is not None or saved.get("listing") is not None
    if not synced_before:
        saved["child_kinds"] = list(LANDED_LISTS)  # every pull request it lands gets every child list
    failure = saved.get("failure")
    # Due in every chunk of this run once taken ahead of its backoff; a failure of this run waits.
    due_now = repo_id in ctx.due_now or (first_sight and (ctx.full_refresh or ctx.retry_now))
    if failure and failure["retry_at"] > ctx.now():
        if not due_now:
            ctx.progress.add_failed(FailedItem("repository", label, failure["reason"], failure["retry_at"]))
            return
        if first_sight:
            ctx.progress.add_retried_now(1)
            ctx.due_now.add(repo_id)
    try:
        unchanged = yield from _list_pull_requests(ctx, state, repo_id, repo, saved)
        if unchanged is None:
            ctx.progress.more_to_do = True  # the chunk ended inside this listing
            return
        # Listed again once after an upgrade (child lists due): its failures are the repository's.
        _backfill_child_kinds(ctx, state, repo_id, repo, saved)
    except NotFoundError as exc:
        logger.warning("%s: skipped, the repository is gone: %s", label, exc)
        ctx.progress.repositories_skipped.append(repo)
        return
    except RateLimitExhausted as exc:
        ctx.progress.stop(f"rate limit exhausted in {label}: {exc}")
        return
    except GitHubError as exc:
        if not _is_repository_failure(exc):
            raise
        ctx.due_now.discard(repo_id)  # a failure of this run waits
        failures = (failure or {}).get("failures", 0) + 1
        retry_at = ctx.now() + retry_delay(failures)
        saved["failure"] = {"reason": str(exc), "failures": failures, "retry_at": retry_at}
        logger.warning("%s: failed (%s); the rest of the organisation goes on, retried after %s",
                       label, exc, _local_time(retry_at))
        ctx.progress.add_failed(FailedItem("repository", label, str(exc), retry_at))
        return
    saved.pop("failure", None)
    ctx.finished.add(repo_id)
    ctx.progress.repository_done(unchanged)


def _list_pull_requests(
    ctx: SyncContext, state: dict[str, Any], repo_id: int, repo: str, saved: dict[str, Any]
) -> Iterator[pa.Table]:
    """Page from where the last listing stopped (or from page 1) down to the cursor.

    Returns True when page 1 was unchanged (304), False when the listing completed, None when the
    chunk ended first (the listing's frontier is saved and the next chunk resumes from it).
    Pages only ever shift down while we read (updated pull requests move to the top), so resuming
    at the saved page can re-see a pull request, never skip one; the frontier filters those. A
    chunk can end inside a page: the next chunk reads that page again (one request) and goes on
    after the frontier.
    """
    cursor = saved.get("cursor")
    at_cursor: dict[str, str | None] = saved.get("at_cursor", {})
    floor = cursor or ctx.since  # the first pull request older than this ends the listing
    listing: dict[str, Any] | None = saved.get("listing")
    if listing is not None:
        url, params, etag = _under_base(ctx, listing["next_url"]), None, None
    else:
        url, params = f"/repos/{ctx.org}/{repo}/pulls", dict(_PULLS_PARAMS)
        etag = None if saved.get("since") != ctx.since and cursor is None else saved.get("etag")
    while url:
        if ctx.chunk_full():
            return None
        page = ctx.client.get_page(url, params=params, etag=etag)
        ctx.charge(1)
        if page.not_modified:
            return True
        if listing is None:
            listing = {"etag": page.etag, "top": None, "top_hashes": {}, "frontier": None, "frontier_ids": []}
        candidates, rejected, reached = _page_rows(ctx, repo, page.items, listing, floor, cursor, at_cursor)
        rows = candidates[: ctx.affordable(len(candidates), REST_LISTS_PER_PULL)]
        if rejected:
            yield _rejected_table(rejected)  # the child transformers pass over it
        if rows:
            ctx.charge(REST_LISTS_PER_PULL * len(rows))
            with ctx.lock:
                ctx.listed.update(row["id"] for row in rows)
            _advance_frontier(listing, rows)
            _remember_recent(ctx, state, repo_id, rows)
            ctx.cover(repo_id, iso(rows[-1]["updated_at"]))
            ctx.progress.add_rows(PULL_REQUESTS.name, len(rows))
            yield to_table(PULL_REQUESTS, rows)
        if len(rows) < len(candidates):  # the chunk is full: the next one reads this page again
            listing["next_url"] = _under_base(ctx, page.url)
            saved["listing"] = listing
            return None
        url, params, etag = page.next_url, None, None
        if reached or not url:
            break
        listing["next_url"] = _under_base(ctx, url)
        saved["listing"] = listing
    _complete_listing(saved, listing, cursor, at_cursor, ctx.since)
    return False


def _under_base(ctx: SyncContext, url: str) -> str:
    """`url` (a Link header's, absolute) relative to the client's base URL, as saved in state: a
    listing resumed against another address of the same API (a new `github_url`, the demo's
    emulator on a new port) goes on there, not to the old one. Also rebases a saved absolute URL."""
    parts, base = urlsplit(url), urlsplit(ctx.client.base_url)
    if not parts.scheme:
        return url
    path = parts.path
    if base.path and (path == base.path or path.startswith(base.path.rstrip("/") + "/")):
        path = path[len(base.path.rstrip("/")):]
    return path + (f"?{parts.query}" if parts.query else "")


# What a repository's pull requests are landed with: every child kind, and a marker for each
# kind whose lists came to hold more: events since commits and conversation comments joined them,
# reviews since they carry their inline comment counts. A repository whose state lacks a marker has
# that kind's lists fetched again, once, as a kind it never fetched.
TIMELINE_WITH_COMMITS = "events with commits and comments"
REVIEWS_WITH_INLINE_COMMENTS = "reviews with inline comment counts"
_MARKERS = {"events": TIMELINE_WITH_COMMITS, "reviews": REVIEWS_WITH_INLINE_COMMENTS}
LANDED_LISTS = (*CHILD_KINDS, *_MARKERS.values())


def _backfill_child_kinds(
    ctx: SyncContext, state: dict[str, Any], repo_id: int, repo: str, saved: dict[str, Any]
) -> None:
    """Pull requests landed by a version that fetched fewer child lists (no events), or lists that
    held less (_MARKERS): list them all once and put the missing lists on the retry list, which
    fetches them without the others.

    Costs the repository's pull-request pages (down to `since`) once, then the missing lists of
    each pull request (reviews over REST: two, the reviews and their inline comments). Stopped by the rate limit while listing, it lists again on the next run (a pull
    request whose events were fetched in between is fetched once more).
    """
    landed = saved.get("child_kinds", ("reviews", "files"))
    missing = [kind for kind in CHILD_KINDS
               if kind not in landed or (kind in _MARKERS and _MARKERS[kind] not in landed)]
    if not missing:
        return
    url: str | None = f"/repos/{ctx.org}/{repo}/pulls"
    params: dict[str, Any] | None = dict(_PULLS_PARAMS)
    due = 0
    while url:
        page = ctx.client.get_page(url, params=params)
        ctx.charge(1)
        for pr in page.items:
            try:
                row = pull_request_row(ctx.org, repo, pr)
            except MalformedItem:
                continue  # set aside when it was listed
            if ctx.since is not None and iso(row["updated_at"]) < ctx.since:
                url = None  # newest first: the rest was never synced
                break
            if row["id"] not in ctx.listed:
                for kind in missing:
                    _add_retry(ctx, state, {**row, "repo_id": repo_id}, kind, None, failed=False)
                due += 1
        else:
            url = page.next_url
        params = None
    logger.info("%s: %s of %d pull requests synced by an earlier version are due",
                _label(ctx, repo), " and ".join(missing), due)
    saved["child_kinds"] = list(LANDED_LISTS)
    if due:
        ctx.progress.more_to_do = True  # the retry list may have been read before they joined it


def _page_rows(
    ctx: SyncContext,
    repo: str,
    items: list[dict[str, Any]],
    listing: dict[str, Any],
    floor: str | None,
    cursor: str | None,
    at_cursor: dict[str, str | None],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """The page's rows to land, its rejected items, and whether it reached the floor (cursor or
    `since`)."""
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for pr in items:
        try:
            row = pull_request_row(ctx.org, repo, pr)
        except MalformedItem as exc:
            rejected.append(_reject(ctx, repo, "pull_request", pr, exc, pr.get("number") if isinstance(pr, dict) else None))
            continue
        pr_id, updated, digest = str(row["id"]), iso(row["updated_at"]), row_hash(row)
        if listing["top"] is None or updated > listing["top"]:
            listing["top"], listing["top_hashes"] = updated, {pr_id: digest}
        elif updated == listing["top"]:
            listing["top_hashes"][pr_id] = digest
        frontier = listing["frontier"]
        if frontier is not None and (updated > frontier or (updated == frontier and pr_id in listing["frontier_ids"])):
            continue  # emitted earlier in this listing: rows shift down between pages
        if floor is not None and updated < floor:
            return rows, rejected, True  # newest first: everything after this is older still
        if updated == cursor and pr_id in at_cursor and at_cursor[pr_id] in (None, digest):
            continue  # landed by the last listing and unchanged since
        rows.append(row)
    return rows, rejected, False


def _advance_frontier(listing: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Rows are newest first: the frontier is the oldest emitted second and its pull requests."""
    for row in rows:
        updated, pr_id = iso(row["updated_at"]), str(row["id"])
        if listing["frontier"] is None or updated < listing["frontier"]:
            listing["frontier"], listing["frontier_ids"] = updated, [pr_id]
        elif updated == listing["frontier"]:
            listing["frontier_ids"].append(pr_id)


def _complete_listing(
    saved: dict[str, Any], listing: dict[str, Any] | None, cursor: str | None,
    at_cursor: dict[str, str | None], since: str | None,
) -> None:
    """Move the cursor to the newest pull request this listing saw (never past it)."""
    if listing is None:
        return
    top = listing["top"]
    if top is not None and (cursor is None or top > cursor):
        saved["cursor"], saved["at_cursor"] = top, listing["top_hashes"]
    elif top is not None and top == cursor:
        saved["at_cursor"] = {**at_cursor, **listing["top_hashes"]}
    saved["etag"], saved["since"] = listing["etag"], since
    saved.pop("listing", None)


def _remember_recent(ctx: SyncContext, state: dict[str, Any], repo_id: int, rows: list[dict[str, Any]]) -> None:
    """Pull requests updated within `reconcile_days`, for the reconciliation pass."""
    if ctx.reconcile_days <= 0:
        return
    now = ctx.now()
    horizon = now - ctx.reconcile_days * DAY
    with ctx.lock:
        recent = state.setdefault("recent", {}).setdefault(str(repo_id), {})
        for row in rows:
            if row["updated_at"].timestamp() >= horizon:
                recent[str(row["id"])] = [row["number"], iso(row["updated_at"]), now, row.get("node_id")]


def _reject(ctx: SyncContext, repo: str, kind: str, item: Any, exc: Exception, number: Any = None) -> dict[str, Any]:
    """Set a malformed item aside: logged with its key, and a `rejected_items` row with its payload."""
    number = number if isinstance(number, int) else None
    row = rejected_row(ctx.org, repo, kind, item if isinstance(item, dict) else {"value": item}, exc,
                       pull_request_number=number)
    logger.warning("%s: %s %s set aside: %s", _label(ctx, repo, number), kind, row["item_key"], exc)
    ctx.progress.add_rejected(f"{_label(ctx, repo, number)} {kind} {row['item_key']}: {exc}")
    return row


def _rejected_table(rows: list[dict[str, Any]]) -> Any:
    return dlt.mark.with_table_name(to_table(REJECTED_ITEMS, rows), REJECTED_ITEMS.name)


# -- pull requests whose children are still due ------------------------------------------------


@dlt.resource(name="retry_pull_requests", selected=False)
def retry_pull_requests(ctx: SyncContext) -> Iterator[list[dict[str, Any]]]:
    """Pull requests whose reviews, files or events an earlier run could not fetch (stopped by the rate
    limit, or failing): due ones go straight to the child transformers, costing no request of
    their own. Each kind leaves the list as soon as it is fetched, so a backlog larger than one
    rate-limit window still shrinks in every run; a chunk takes only what its budget allows."""
    state = dlt.current.source_state()
    now = ctx.now()
    names = {repo_id: entry.get("name") for repo_id, entry in state.get("repos", {}).items()}
    due: list[dict[str, Any]] = []
    with ctx.lock:
        _adopt_pending_children(state)
        for repo_id, prs in state.get("retry", {}).items():
            for pr_id, entry in list(prs.items()):
                repo = names.get(repo_id) or (repo_id[5:] if repo_id.startswith("name:") else None)
                if repo is None:
                    continue
                if entry.get("retry_at") and entry["retry_at"] > now:
                    if not ctx.retry_now or (repo_id, pr_id) in ctx.failed_this_run:
                        label = _label(ctx, repo, entry["number"])
                        for kind in entry["kinds"]:
                            ctx.progress.add_failed(FailedItem(kind, label, entry.get("reason") or "", entry["retry_at"]))
                        continue
                if ctx.chunk_full():
                    ctx.progress.more_to_do = True  # the rest goes to the next chunk
                    break
                if entry.get("retry_at") and entry["retry_at"] > now:
                    ctx.progress.add_retried_now(1)  # taken ahead of its backoff
                ctx.charge(sum(len(_CHILD_PATHS[kind]) for kind in entry["kinds"]))
                del prs[pr_id]
                due.append({
                    "repo": repo, "repo_id": repo_id if repo_id.isdigit() else None, "id": int(pr_id),
                    "number": entry["number"], "node_id": entry.get("node_id"),
                    "updated_at": parse_time(entry["updated_at"]), "kinds": entry["kinds"],
                    "failures": entry.get("failures", 0),
                })
    for start in range(0, len(due), PER_PAGE):
        yield due[start : start + PER_PAGE]


def _adopt_pending_children(state: dict[str, Any]) -> None:
    """Earlier versions kept `pending_children` by repository name: carry them over."""
    for repo, prs in state.pop("pending_children", {}).items():
        target = state.setdefault("retry", {}).setdefault(f"name:{repo}", {})
        for pr_id, entry in prs.items():
            target[pr_id] = {**entry, "failures": 0, "reason": None, "retry_at": None}


def _add_retry(ctx: SyncContext, state: dict[str, Any], pr: dict[str, Any], kind: str,
               reason: str | None, failed: bool) -> float | None:
    """Put (pull request, kind) on the retry list: at once when stopped, with a backoff when
    failing; the time of its next attempt (None: the next run)."""
    repo_id = pr.get("repo_id") or _repo_key(ctx, state, pr["repo"])
    with ctx.lock:
        entry = state.setdefault("retry", {}).setdefault(str(repo_id), {}).setdefault(
            str(pr["id"]),
            {"number": pr["number"], "updated_at": iso(pr["updated_at"]), "kinds": [],
             "failures": pr.get("failures", 0), "reason": None, "retry_at": None},
        )
        if pr.get("node_id"):
            entry["node_id"] = pr["node_id"]  # GraphQL mode fetches the entry by it
        if kind not in entry["kinds"]:
            entry["kinds"].append(kind)
        if failed:
            if (str(repo_id), str(pr["id"])) not in ctx.failed_this_run:  # once a run, whatever kinds fail
                ctx.failed_this_run.add((str(repo_id), str(pr["id"])))
                entry["failures"] = max(entry["failures"], pr.get("failures", 0)) + 1
            entry["reason"], entry["retry_at"] = reason, ctx.now() + retry_delay(entry["failures"])
        return entry["retry_at"]


def _clear_retry(ctx: SyncContext, state: dict[str, Any], pr: dict[str, Any], kind: str) -> None:
    repo_id = pr.get("repo_id") or _repo_key(ctx, state, pr["repo"])
    with ctx.lock:
        prs = state.get("retry", {}).get(str(repo_id), {})
        entry = prs.get(str(pr["id"]))
        if entry and kind in entry["kinds"]:
            entry["kinds"].remove(kind)
            if not entry["kinds"]:
                del prs[str(pr["id"])]


def _repo_key(ctx: SyncContext, state: dict[str, Any], repo: str) -> str:
    """The retry list's key of a repository known by name: its id, or `name:<repo>` for entries
    carried over from state written by earlier versions before the repository was seen again."""
    for repo_id, entry in state.get("repos", {}).items():
        if entry.get("name") == repo:
            return repo_id
    for listed in ctx.repositories or []:
        if listed["name"] == repo:
            return str(listed["id"])
    return f"name:{repo}"


# -- reconciliation ----------------------------------------------------------------------------


@dlt.resource(name="reconcile_pull_requests", selected=False)
def reconcile_pull_requests(ctx: SyncContext) -> Iterator[list[dict[str, Any]]]:
    """A safety net for review edits and dismissals that may not move a PR's `updated_at`: the
    reviews of pull requests updated within `reconcile_days` are re-read, each at most once a day."""
    if ctx.reconcile_days <= 0 or ctx.progress.chunks > 1:
        return
    state = dlt.current.source_state()
    now = ctx.now()
    horizon = iso(datetime.fromtimestamp(now - ctx.reconcile_days * DAY).astimezone())
    names = {repo_id: entry.get("name") for repo_id, entry in state.get("repos", {}).items()}
    due: list[dict[str, Any]] = []
    with ctx.lock:
        for repo_id, prs in state.get("recent", {}).items():
            for pr_id, (number, updated_at, read_at, *node_id) in list(prs.items()):
                if updated_at < horizon or names.get(repo_id) is None:
                    del prs[pr_id]  # too old to watch
                elif now - read_at >= DAY:
                    prs[pr_id] = [number, updated_at, now, *node_id]
                    due.append({
                        "repo": names[repo_id], "repo_id": int(repo_id), "id": int(pr_id), "number": number,
                        "node_id": node_id[0] if node_id else None,
                        "updated_at": parse_time(updated_at), "kinds": ["reviews"], "reconcile": True,
                    })
    for start in range(0, len(due), PER_PAGE):
        yield due[start : start + PER_PAGE]


# -- children ----------------------------------------------------------------------------------


# No `table_name=` hint on the child transformers: every item names its table (dlt 1.31 computes
# a resource's static table hint even for items marked for another table, and then fails).
@dlt.transformer(name="pull_request_reviews", write_disposition="append", parallelized=True)
def pull_request_reviews(pulls: pa.Table | list[dict[str, Any]], ctx: SyncContext) -> Iterator[Any]:
    yield from _children(ctx, pulls, "reviews")


@dlt.transformer(name="pull_request_files", write_disposition="append", parallelized=True)
def pull_request_files(pulls: pa.Table | list[dict[str, Any]], ctx: SyncContext) -> Iterator[Any]:
    yield from _children(ctx, pulls, "files")


@dlt.transformer(name="pull_request_events", write_disposition="append", parallelized=True)
def pull_request_events(pulls: pa.Table | list[dict[str, Any]], ctx: SyncContext) -> Iterator[Any]:
    yield from _children(ctx, pulls, "events")


def _children(ctx: SyncContext, pulls: pa.Table | list[dict[str, Any]], kind: str) -> Iterator[Any]:
    """Fetch one kind of child for every pull request of a page, on the run's thread pool.

    The client bounds requests in flight across all threads.
    """
    if isinstance(pulls, pa.Table):
        if pulls.schema.equals(REJECTED_ITEMS.schema):
            return  # rejected pull requests, on their way to `rejected_items`
        prs = pulls.to_pylist()
    else:  # the retry list or the reconciliation pass: only the kinds they ask for
        prs = [pr for pr in pulls if kind in pr["kinds"]]
    state = dlt.current.source_state()  # resolved here: the pool's threads have no dlt context
    yield from _child_tables(ctx, list(ctx.pool.map(lambda pr: _fetch_children(ctx, state, pr, kind), prs)))


def _fetch_children(ctx: SyncContext, state: dict[str, Any], pr: dict[str, Any], kind: str) -> _Fetched:
    """One pull request's child list: rows, rejected rows and the record that the whole list was
    fetched; nothing when it cannot be had now."""
    label = _label(ctx, pr["repo"], pr["number"])
    if ctx.progress.stopped_early:
        if not pr.get("reconcile"):
            _add_retry(ctx, state, pr, kind, None, failed=False)
        return [], [], None
    pages = 0
    lists: list[list[Any]] = []
    try:
        for path in _CHILD_PATHS[kind]:
            if lists and not lists[0]:
                lists.append([])  # no review: no inline comment to count
                continue
            lists.append([])
            url = f"/repos/{ctx.org}/{pr['repo']}/{path.format(number=pr['number'])}"
            for page in ctx.client.iter_pages(url, params={"per_page": PER_PAGE}):
                pages += 1
                lists[-1].extend(page.items)
    except NotFoundError as exc:
        if len(lists) > 1:  # the pull request answered a moment ago: a failure, not a gone pull request
            return _fetch_failed(ctx, state, pr, kind, exc)
        logger.warning("%s: %s skipped, the pull request is gone: %s", label, kind, exc)
        ctx.progress.pull_requests_skipped.append(label)
        return [], [], None
    except RateLimitExhausted as exc:
        if not pr.get("reconcile"):
            _add_retry(ctx, state, pr, kind, None, failed=False)
        ctx.progress.stop(f"rate limit exhausted fetching {kind} of {label}: {exc}")
        return [], [], None
    except GitHubError as exc:
        if not _is_repository_failure(exc):
            raise
        return _fetch_failed(ctx, state, pr, kind, exc)
    items = with_inline_comments(*lists) if kind == "reviews" else lists[0]
    return _fetched(ctx, state, pr, kind, items, pages)


def _fetch_failed(ctx: SyncContext, state: dict[str, Any], pr: dict[str, Any], kind: str, exc: GitHubError) -> _Fetched:
    """A child list that failed after the client's retries: on the retry list, with its backoff."""
    label = _label(ctx, pr["repo"], pr["number"])
    retry_at = _add_retry(ctx, state, pr, kind, str(exc), failed=True)
    logger.warning("%s: %s failed (%s); retried after %s", label, kind, exc, _local_time(retry_at))
    ctx.progress.add_failed(FailedItem(kind, label, str(exc), retry_at))
    return [], [], None


def with_inline_comments(reviews: list[Any], comments: list[Any]) -> list[Any]:
    """Each review with the number of the pull request's inline comments that belong to it
    (`pull_request_review_id`), as `inline_comments`."""
    counts = Counter(c["pull_request_review_id"] for c in comments
                     if isinstance(c, dict) and isinstance(c.get("pull_request_review_id"), int))
    return [{**review, "inline_comments": counts.get(review["id"], 0)}
            if isinstance(review, dict) and isinstance(review.get("id"), int) else review
            for review in reviews]


def _fetched(
    ctx: SyncContext,
    state: dict[str, Any],
    pr: dict[str, Any],
    kind: str,
    items: list[dict],
    pages: int,
) -> _Fetched:
    """A whole child list was fetched (over REST or GraphQL): its rows, rejected rows and record."""
    label = _label(ctx, pr["repo"], pr["number"])
    if pr.get("reconcile"):
        ctx.progress.add_reconciled(1, pages)
    repo_key = str(pr.get("repo_id") or _repo_key(ctx, state, pr["repo"]))
    if repo_key.isdigit():
        ctx.cover(int(repo_key), iso(pr["updated_at"]))
    _clear_retry(ctx, state, pr, kind)
    ctx.progress.clear_failed(kind, label)
    rows, rejected = _TO_ROWS[kind][1](ctx, pr, items)
    fetched_at = datetime.fromtimestamp(ctx.now(), tz=timezone.utc)
    # The items the table scopes (a timeline's other kinds are not counted).
    return rows, rejected, child_fetch_row(ctx.org, pr["repo"], pr, kind, len(rows) + len(rejected), fetched_at)


@dlt.transformer(name="pull_request_children", write_disposition="append", parallelized=True)
def pull_request_children(pulls: pa.Table | list[dict[str, Any]], ctx: SyncContext) -> Iterator[Any]:
    """GraphQL mode: the reviews, files and timeline events of a page's pull requests (or the
    lists the retry list or the reconciliation pass has due), in batched queries by node id
    (sources/github/graphql.py); the same rows, fetch records, retry list and rejected items as the
    REST transformers. A pull request without a node id (an entry written by an earlier version)
    gets its lists over REST."""
    if isinstance(pulls, pa.Table):
        if pulls.schema.equals(REJECTED_ITEMS.schema):
            return  # rejected pull requests, on their way to `rejected_items`
        prs = [{**pr, "kinds": list(GRAPHQL_KINDS)} for pr in pulls.to_pylist()]
    else:
        prs = pulls
    state = dlt.current.source_state()
    over_rest = [(pr, kind) for pr in prs if not pr.get("node_id") for kind in pr["kinds"]]
    fetched = list(ctx.pool.map(lambda due: _fetch_children(ctx, state, *due), over_rest))
    groups: dict[tuple[str, ...], dict[str, dict[str, Any]]] = {}
    for pr in prs:
        if pr.get("node_id"):
            kinds = tuple(kind for kind in GRAPHQL_KINDS if kind in pr["kinds"])
            groups.setdefault(kinds, {})[pr["node_id"]] = pr
    for kinds, by_node in groups.items():
        fetched += _graphql_children(ctx, state, by_node, kinds)
    yield from _child_tables(ctx, fetched)


def _graphql_children(ctx: SyncContext, state: dict[str, Any], by_node: dict[str, dict[str, Any]],
                      kinds: tuple[str, ...]) -> list[_Fetched]:
    """The `kinds` lists of the pull requests `by_node` (node id -> row), batch by batch."""
    if ctx.progress.stopped_early:
        for pr in by_node.values():
            for kind in kinds if not pr.get("reconcile") else ():  # as in REST: tomorrow's pass
                _add_retry(ctx, state, pr, kind, None, failed=False)
        return []
    fetched: list[_Fetched] = []
    done: set[str] = set()
    # A pull request whose lists keep failing (twice or more: once may have been its whole batch's
    # fault) is asked for on its own, so that it holds no healthy neighbour back.
    alone = [node_id for node_id, pr in by_node.items() if pr.get("failures", 0) >= 2]
    groups = [[node_id for node_id in by_node if node_id not in alone]] + [[node_id] for node_id in alone]
    try:
        for ids, result in (batch for group in groups if group and ctx.graphql_url
                            for batch in ctx.graphql_children().batches(group, kinds)):
            if _fell_back_to_rest(ctx, result):
                break  # this batch and the rest over REST, below
            done.update(ids)
            if isinstance(result, GitHubError):
                _graphql_failed(ctx, state, [by_node[i] for i in ids], result)
                continue
            for node_id, why in result.failed.items():  # a partial answer: only these are retried
                _graphql_failed(ctx, state, [by_node[node_id]], GitHubClientError(why))
            for node_id, message in result.gone.items():
                pr = by_node[node_id]
                for kind in kinds:  # as REST, which finds each list gone
                    logger.warning("%s: %s skipped, the pull request is gone: %s",
                                   _label(ctx, pr["repo"], pr["number"]), kind, message)
                    ctx.progress.pull_requests_skipped.append(_label(ctx, pr["repo"], pr["number"]))
            for node_id, children in result.children.items():
                pr = by_node[node_id]
                ctx.progress.add_graphql_pull_requests(1)
                for kind in kinds:
                    if kind in children.items:
                        fetched.append(_fetched(ctx, state, pr, kind, children.items[kind], children.pages))
                    elif not pr.get("reconcile"):  # left for the rate limit (GraphQLChildren.batches)
                        _add_retry(ctx, state, pr, kind, None, failed=False)
    except RateLimitExhausted as exc:
        for node_id, pr in by_node.items():
            if node_id not in done and not pr.get("reconcile"):
                for kind in kinds:
                    _add_retry(ctx, state, pr, kind, None, failed=False)
        ctx.progress.stop(f"rate limit exhausted fetching child lists over GraphQL: {exc}")
    if ctx.graphql_url is None:  # `auto` fell back to REST, here or on another page
        left = [(pr, kind) for node_id, pr in by_node.items() if node_id not in done for kind in kinds]
        fetched.extend(ctx.pool.map(lambda job: _fetch_children(ctx, state, *job), left))
    return fetched


def _fell_back_to_rest(ctx: SyncContext, result: Any) -> bool:
    """`auto` mode and GraphQL refused for a reason REST would not (GraphQLRefused): the run's
    child lists go over REST from now on, said once in a warning naming why and where."""
    if not (ctx.graphql_fallback and isinstance(result, GraphQLRefused)):
        return False
    with ctx.lock:
        if ctx.graphql_url is not None:
            logger.warning("%s: GraphQL refused (%s); child lists over REST for the rest of the run",
                           ctx.org, result)
            ctx.progress.graphql_fallback = str(result)
            ctx.graphql_url = None
    return True


def _graphql_failed(ctx: SyncContext, state: dict[str, Any], prs: list[dict[str, Any]], exc: GitHubError) -> None:
    """A batch that failed after the client's retries: its lists go on the retry list, as in REST."""
    if isinstance(exc, GraphQLRefused):  # explicit `graphql` mode: no fallback, the error as it is
        exc = exc.error
    if isinstance(exc, GraphQLDocumentRejected):  # every query would fail alike: a configuration error
        raise GraphQLDocumentRejected(
            f"{exc}. This GitHub's GraphQL schema lacks what the pipeline asks for, even in the queries "
            "made for its schema: set PR_ANALYTICS_GITHUB_API_MODE=rest (or auto, which then uses REST)",
            url=exc.url)
    if not _is_repository_failure(exc):
        raise exc
    for pr in prs:
        label = _label(ctx, pr["repo"], pr["number"])
        for kind in pr["kinds"]:
            retry_at = _add_retry(ctx, state, pr, kind, str(exc), failed=True)
            ctx.progress.add_failed(FailedItem(kind, label, str(exc), retry_at))
        logger.warning("%s: %s failed over GraphQL (%s); retried after %s", label, " and ".join(pr["kinds"]), exc,
                       _local_time(retry_at))


def _child_tables(ctx: SyncContext, fetched: list[_Fetched]) -> Iterator[Any]:
    """Each kind's rows, the fetch records and the rejected rows, one table each."""
    rows: dict[str, list[dict[str, Any]]] = {}
    fetches: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for kind_rows, set_aside, fetch in fetched:
        if fetch:
            rows.setdefault(fetch["kind"], []).extend(kind_rows)
            fetches.append(fetch)
        rejected.extend(set_aside)
    for kind, kind_rows in rows.items():
        spec = _TO_ROWS[kind][0]
        if kind_rows:
            ctx.progress.add_rows(spec.name, len(kind_rows))
            yield dlt.mark.with_table_name(to_table(spec, kind_rows), spec.name)
    if fetches:
        yield dlt.mark.with_table_name(to_table(CHILD_FETCHES, fetches), CHILD_FETCHES.name)
    if rejected:
        yield _rejected_table(rejected)


def _review_rows(ctx: SyncContext, pr: dict[str, Any], reviews: list[dict]) -> _Rows:
    rows, rejected = [], []
    for review in reviews:
        try:
            rows.append(review_row(ctx.org, pr["repo"], pr, review))
        except MalformedItem as exc:
            rejected.append(_reject(ctx, pr["repo"], "review", review, exc, pr["number"]))
    return rows, rejected


def _file_rows(ctx: SyncContext, pr: dict[str, Any], files: list[dict]) -> _Rows:
    truncated = len(files) >= FILES_CAP
    if truncated:
        # GitHub's documented cap, nothing anyone can fix: the rows say so (`truncated`).
        logger.info("%s: GitHub serves only the first %d files; flagged as truncated",
                    _label(ctx, pr["repo"], pr["number"]), FILES_CAP)
    rows, rejected = [], []
    for file in files:
        try:
            rows.append(file_row(ctx.org, pr["repo"], pr, file, truncated=truncated))
        except MalformedItem as exc:
            rejected.append(_reject(ctx, pr["repo"], "file", file, exc, pr["number"]))
    return rows, rejected


def _event_rows(ctx: SyncContext, pr: dict[str, Any], timeline: list[dict]) -> _Rows:
    """The timeline's TIMELINE_EVENTS; its other kinds (labels, reviews, mentions...) are dropped
    here, never rejected. An item that is not even an object is rejected."""
    rows, rejected = [], []
    kept = [event for event in timeline if not isinstance(event, dict) or event.get("event") in TIMELINE_EVENTS]
    for position, event in enumerate(kept):
        try:
            rows.append(event_row(ctx.org, pr["repo"], pr, event, position))
        except MalformedItem as exc:
            rejected.append(_reject(ctx, pr["repo"], "event", event, exc, pr["number"]))
    return rows, rejected


# Each child kind's table and row builder (GraphQL mode fetches several kinds per transformer).
_TO_ROWS: dict[str, tuple[TableSpec, Callable[[SyncContext, dict[str, Any], list[dict]], _Rows]]] = {
    "reviews": (PULL_REQUEST_REVIEWS, _review_rows),
    "files": (PULL_REQUEST_FILES, _file_rows),
    "events": (PULL_REQUEST_EVENTS, _event_rows),
}


@dlt.resource(name="teams", write_disposition="append")
def teams(ctx: SyncContext) -> Iterator[Any]:
    """The organisation's teams and their members (sources/github/teams.py), once per run: in
    its first chunk. A failure leaves them as they were, for the next run."""
    if ctx.progress.chunks != 1 or ctx.progress.stopped_early:
        return
    state = dlt.current.source_state()
    try:
        yield from fetch_teams(ctx.client, ctx.org, state, ctx.full_refresh)
    except RateLimitExhausted as exc:
        ctx.progress.stop(f"rate limit exhausted reading the teams: {exc}")
    except GitHubError as exc:
        logger.warning("%s: teams not refreshed (%s); read again next run", ctx.org, exc)


# -- the source --------------------------------------------------------------------------------


@dlt.source(section="github", max_table_nesting=0)
def github_source(
    org: str,
    client: GitHubClient,
    since: date | datetime | str | None = None,
    progress: SyncProgress | None = None,
    full_refresh: bool = False,
    sync: SyncContext | None = None,
    graphql_url: str | None = None,
) -> Any:
    """Pull requests of one organisation, with reviews, files and timeline events.

    `client` carries the base URL, credentials and concurrency; `since` bounds the first backfill;
    `full_refresh` ignores saved cursors and ETags and reads everything again (the warehouse merge
    keeps one copy of each row). `graphql_url` fetches listed pull requests' reviews, files and
    events over GraphQL (None: REST). `sync` carries a run's context across chunks (see flows/extract.py).
    """
    ctx = sync or SyncContext(org, client, progress or SyncProgress(), since=iso(since), full_refresh=full_refresh,
                              graphql_url=graphql_url)
    if sync is None:
        ctx.start_chunk()
    repos = repositories(ctx)
    prs = repos | pull_requests(ctx)
    retry = retry_pull_requests(ctx)
    reconcile = reconcile_pull_requests(ctx)
    if ctx.graphql_url:  # every child list over GraphQL
        children = [
            prs | pull_request_children(ctx),
            retry | pull_request_children(ctx).with_name("retry_pull_request_children"),
            reconcile | pull_request_children(ctx).with_name("reconcile_pull_request_children"),
        ]
    else:
        children = [
            prs | pull_request_reviews(ctx), prs | pull_request_files(ctx), prs | pull_request_events(ctx),
            retry | pull_request_reviews(ctx).with_name("retry_pull_request_reviews"),
            retry | pull_request_files(ctx).with_name("retry_pull_request_files"),
            retry | pull_request_events(ctx).with_name("retry_pull_request_events"),
            reconcile | pull_request_reviews(ctx).with_name("reconcile_pull_request_reviews"),
        ]
    return (repos, prs, retry, reconcile, *children, teams(ctx))
