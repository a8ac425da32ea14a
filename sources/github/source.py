"""The dlt source: an organisation's pull requests, their reviews and their changed files.

Incremental by design (see ../shared/NOTES.md on dlt issue 2838): each repository keeps its own
cursor in resource state, never a shared `dlt.sources.incremental` on a fan-out transformer.
A repository whose first pull-request page is unchanged costs one conditional request that GitHub
answers 304 (free); reviews and files are fetched only for pull requests that are new or whose
`updated_at` moved past the cursor.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import dlt
import pyarrow as pa

from sources.github.client import GitHubClient
from sources.github.errors import NotFoundError, RateLimitExhausted
from sources.github.schema import (
    FILES_CAP,
    PULL_REQUEST_FILES,
    PULL_REQUEST_REVIEWS,
    PULL_REQUESTS,
    file_row,
    parse_time,
    pull_request_row,
    review_row,
    to_table,
)

logger = logging.getLogger(__name__)

PER_PAGE = 100
_PULLS_PARAMS = {"state": "all", "sort": "updated", "direction": "desc", "per_page": PER_PAGE}


@dataclass
class SyncProgress:
    """What one extraction did, shared by the resources and read by the flow for its summary."""

    repositories_total: int = 0
    repositories_done: int = 0
    repositories_unchanged: int = 0
    repositories_skipped: list[str] = field(default_factory=list)
    pull_requests_skipped: list[str] = field(default_factory=list)
    stopped_early: str | None = None
    rows: dict[str, int] = field(default_factory=dict)
    on_repository_done: Callable[[SyncProgress], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def stop(self, reason: str) -> None:
        with self._lock:
            if self.stopped_early is None:
                self.stopped_early = reason
                logger.warning("Stopping early, progress is saved: %s", reason)

    def add_rows(self, table: str, count: int) -> None:
        with self._lock:
            self.rows[table] = self.rows.get(table, 0) + count

    def repository_done(self, unchanged: bool) -> None:
        with self._lock:
            self.repositories_done += 1
            self.repositories_unchanged += int(unchanged)
        if self.on_repository_done:
            self.on_repository_done(self)


def _iso(value: date | datetime | str | None) -> str | None:
    """GitHub's timestamp format, which also orders correctly as a string."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dlt.source(section="github", max_table_nesting=0)
def github_source(
    org: str,
    client: GitHubClient,
    since: Any = None,
    progress: Any = None,
    full_refresh: bool = False,
) -> Any:
    """Pull requests of one organisation, with reviews and files.

    `client` carries the base URL, credentials and concurrency; `since` bounds the first backfill;
    `full_refresh` ignores saved cursors and ETags and reads everything again (the warehouse merge
    keeps one copy of each row).
    """
    progress = progress if progress is not None else SyncProgress()
    since_iso = _iso(since)
    pending_lock = threading.Lock()

    @dlt.resource(name="repositories", selected=False)
    def repositories() -> Iterator[dict[str, Any]]:
        """The organisation's repositories; each listing page is revalidated with its ETag."""
        state = dlt.current.resource_state()
        old_pages: list[dict[str, Any]] = [] if full_refresh else state.get("pages", [])
        new_pages: list[dict[str, Any]] = []
        url: str | None = f"/orgs/{org}/repos"
        params: dict[str, Any] | None = {"per_page": PER_PAGE, "type": "all"}
        names: list[str] = []
        try:
            while url:
                cached = old_pages[len(new_pages)] if len(new_pages) < len(old_pages) else None
                etag = cached["etag"] if cached and cached["url"] == url else None
                page = client.get_page(url, params=params, etag=etag)
                if page.not_modified:
                    assert cached is not None
                    new_pages.append(cached)
                else:
                    new_pages.append(
                        {
                            "url": url,
                            "etag": page.etag,
                            "next_url": page.next_url,
                            "repos": [repo["name"] for repo in page.items],
                        }
                    )
                names.extend(new_pages[-1]["repos"])
                url, params = new_pages[-1]["next_url"], None
        except RateLimitExhausted as exc:
            progress.stop(f"rate limit exhausted while listing repositories: {exc}")
            return
        state["pages"] = new_pages
        progress.repositories_total = len(names)
        logger.info("%s: %d repositories", org, len(names))
        yield from ({"name": name} for name in names)

    def _pending() -> dict[str, dict[str, Any]]:
        return dlt.current.source_state().setdefault("pending_children", {})

    def _mark_pending(pending: dict[str, Any], repo: str, pr: dict[str, Any], kind: str) -> None:
        """Remember a pull request whose `kind` (reviews/files) this run could not fetch."""
        with pending_lock:
            entry = pending.setdefault(repo, {}).setdefault(
                str(pr["id"]),
                {"number": pr["number"], "updated_at": _iso(pr["updated_at"]), "kinds": []},
            )
            if kind not in entry["kinds"]:
                entry["kinds"].append(kind)

    @dlt.resource(name="pending_pull_requests", selected=False)
    def pending_pull_requests() -> Iterator[list[dict[str, Any]]]:
        """Pull requests whose reviews or files a run that stopped early did not fetch.

        They go straight to the child transformers, costing no request of their own, and each kind
        leaves the backlog as soon as it is fetched: a backlog larger than one rate-limit window
        still shrinks in every run.
        """
        with pending_lock:
            pending = _pending()
            backlog = {repo: dict(prs) for repo, prs in pending.items()}
            pending.clear()
        for repo, prs in sorted(backlog.items()):
            items = [
                {
                    "repo": repo,
                    "id": int(pr_id),
                    "number": entry["number"],
                    "updated_at": parse_time(entry["updated_at"]),
                    "kinds": entry["kinds"],
                }
                for pr_id, entry in prs.items()
            ]
            for start in range(0, len(items), PER_PAGE):
                yield items[start : start + PER_PAGE]

    @dlt.transformer(
        name="pull_requests",
        data_from=repositories,
        write_disposition="append",
        # Repositories are listed concurrently (one repository's pages stay in order).
        parallelized=True,
    )
    def pull_requests(repository: dict[str, Any]) -> Iterator[pa.Table]:
        """Newest-updated first, stopping at the first page that reaches the repository's cursor."""
        repo = repository["name"]
        if progress.stopped_early:
            return
        repos_state = dlt.current.resource_state().setdefault("repos", {})
        saved = {} if full_refresh else repos_state.get(repo, {})
        cursor: str | None = saved.get("cursor") or since_iso
        at_cursor = set(saved.get("at_cursor", []))
        seen: set[int] = set()
        newest, newest_ids, first_etag = cursor, set(at_cursor), None
        unchanged = False
        try:
            for page in client.iter_pages(
                f"/repos/{org}/{repo}/pulls", params=dict(_PULLS_PARAMS), etag=saved.get("etag")
            ):
                if page.not_modified:
                    unchanged = True
                    break
                first_etag = first_etag or page.etag
                rows, reached_cursor = [], False
                for pr in page.items:
                    updated = pr["updated_at"]
                    # Rows shift between pages while paging: keep each pull request once.
                    if pr["id"] in seen:
                        continue
                    if cursor and (updated < cursor or (updated == cursor and pr["id"] in at_cursor)):
                        reached_cursor = True
                        continue
                    seen.add(pr["id"])
                    rows.append(pull_request_row(org, repo, pr))
                    if newest is None or updated > newest:
                        newest, newest_ids = updated, {pr["id"]}
                    elif updated == newest:
                        newest_ids.add(pr["id"])
                if rows:
                    progress.add_rows(PULL_REQUESTS.name, len(rows))
                    yield to_table(PULL_REQUESTS, rows)
                if reached_cursor:
                    break
        except NotFoundError as exc:
            logger.warning("%s/%s: skipped, the repository is gone: %s", org, repo, exc)
            progress.repositories_skipped.append(repo)
            return
        except RateLimitExhausted as exc:
            # Rows already yielded land; the cursor stays, so the next run lists them again and
            # the warehouse merge keeps one copy.
            progress.stop(f"rate limit exhausted in {org}/{repo}: {exc}")
            return
        if not unchanged:
            repos_state[repo] = {
                "cursor": newest,
                "at_cursor": sorted(newest_ids) if newest else [],
                "etag": first_etag,
            }
        progress.repository_done(unchanged)

    def _children(
        pulls: pa.Table | list[dict[str, Any]],
        kind: str,
        to_rows: Callable[[str, dict[str, Any], list[dict]], list[dict[str, Any]]],
        spec: Any,
    ) -> pa.Table | None:
        """Fetch one kind of child for every pull request of a page, in parallel.

        The client's semaphore bounds requests in flight across all these threads.
        """
        if isinstance(pulls, pa.Table):
            prs = pulls.to_pylist()
        else:  # the backlog: only the kinds still missing
            prs = [pr for pr in pulls if kind in pr["kinds"]]
        # Resolved here, in dlt's context: the pool's threads do not carry it.
        pending = _pending()

        def fetch(pr: dict[str, Any]) -> list[dict[str, Any]]:
            items = _fetch_child_list(pending, pr["repo"], pr, kind)
            return [] if items is None else to_rows(pr["repo"], pr, items)

        workers = max(1, min(client.max_concurrency, len(prs)))
        with ThreadPoolExecutor(workers, thread_name_prefix=f"github-{kind}") as pool:
            rows = [row for result in pool.map(fetch, prs) for row in result]
        if not rows:
            return None
        progress.add_rows(spec.name, len(rows))
        return to_table(spec, rows)

    def _fetch_child_list(
        pending: dict[str, Any], repo: str, pr: dict[str, Any], kind: str
    ) -> list[dict] | None:
        label = f"{org}/{repo}#{pr['number']}"
        if progress.stopped_early:
            _mark_pending(pending, repo, pr, kind)
            return None
        try:
            return client.get_all(
                f"/repos/{org}/{repo}/pulls/{pr['number']}/{kind}", params={"per_page": PER_PAGE}
            )
        except NotFoundError as exc:
            logger.warning("%s: %s skipped, the pull request is gone: %s", label, kind, exc)
            progress.pull_requests_skipped.append(label)
        except RateLimitExhausted as exc:
            _mark_pending(pending, repo, pr, kind)
            progress.stop(f"rate limit exhausted fetching {kind} of {label}: {exc}")
        return None

    def _review_rows(repo: str, pr: dict[str, Any], reviews: list[dict]) -> list[dict[str, Any]]:
        return [review_row(org, repo, pr, review) for review in reviews]

    def _file_rows(repo: str, pr: dict[str, Any], files: list[dict]) -> list[dict[str, Any]]:
        truncated = len(files) >= FILES_CAP
        if truncated:
            logger.warning(
                "%s/%s#%s: GitHub serves only the first %d files; flagged as truncated",
                org, repo, pr["number"], FILES_CAP,
            )
        return [file_row(org, repo, pr, file, truncated=truncated) for file in files]

    def _reviews_of(pulls: pa.Table | list[dict[str, Any]]) -> pa.Table | None:
        return _children(pulls, "reviews", _review_rows, PULL_REQUEST_REVIEWS)

    def _files_of(pulls: pa.Table | list[dict[str, Any]]) -> pa.Table | None:
        return _children(pulls, "files", _file_rows, PULL_REQUEST_FILES)

    children = []
    for parent, prefix in ((pull_requests, ""), (pending_pull_requests, "pending_")):
        for table, fetch in (("pull_request_reviews", _reviews_of), ("pull_request_files", _files_of)):
            children.append(
                dlt.transformer(
                    fetch,
                    name=prefix + table,
                    table_name=table,
                    data_from=parent,
                    write_disposition="append",
                    parallelized=True,
                )
            )
    return (repositories, pull_requests, pending_pull_requests, *children)
