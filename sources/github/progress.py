"""What one organisation's sync did: shared by the resources, read by the flow for its summary.

One `SyncProgress` lives for a whole `land()` call, across the chunks it commits, so its counts
are the run's totals.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger("sources.github.source")


@dataclass(frozen=True)
class FailedItem:
    """A repository or pull request this run could not sync; it stays on the retry list."""

    kind: str  # "repository", "reviews", "files", "events"
    name: str  # "acme/api" or "acme/api#12"
    reason: str
    retry_at: float | None = None  # epoch seconds of the next attempt (None: next run)


@dataclass
class SyncProgress:
    repositories_total: int = 0
    repositories_done: int = 0
    repositories_unchanged: int = 0
    repositories_skipped: list[str] = field(default_factory=list)  # gone (404/410)
    pull_requests_skipped: list[str] = field(default_factory=list)  # gone (404/410)
    failed: list[FailedItem] = field(default_factory=list)  # on the retry list after this run
    rejected: list[str] = field(default_factory=list)  # malformed items set aside
    reconciled_pull_requests: int = 0  # reviews re-read by the reconciliation pass
    reconcile_requests: int = 0
    stopped_early: str | None = None  # the rate limit ran out: resumes on the next run
    more_to_do: bool = False  # the current chunk ended before the work did
    chunks: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    graphql_points: int = 0  # GraphQL points spent (its budget is apart from REST's requests)
    graphql_pull_requests: int = 0  # pull requests whose child lists came over GraphQL
    graphql_fallback: str | None = None  # `auto` mode: why and where GraphQL was refused (REST since)
    retry_now: bool = False  # the run was asked to retry every item on the retry list at once
    full_refresh: bool = False  # the run started every repository's listing over
    retried_now: int = 0  # items on the retry list that were due only because of retry_now
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

    def add_graphql_points(self, points: int) -> None:
        with self._lock:
            self.graphql_points += points

    def add_retried_now(self, count: int) -> None:
        with self._lock:
            self.retried_now += count

    def add_graphql_pull_requests(self, count: int) -> None:
        with self._lock:
            self.graphql_pull_requests += count

    def add_failed(self, item: FailedItem) -> None:
        with self._lock:
            self.failed = [f for f in self.failed if (f.kind, f.name) != (item.kind, item.name)]
            self.failed.append(item)

    def clear_failed(self, kind: str, name: str) -> None:
        with self._lock:
            self.failed = [f for f in self.failed if (f.kind, f.name) != (kind, name)]

    def add_rejected(self, label: str) -> None:
        with self._lock:
            self.rejected.append(label)

    def add_reconciled(self, pull_requests: int, requests: int) -> None:
        with self._lock:
            self.reconciled_pull_requests += pull_requests
            self.reconcile_requests += requests

    def repository_done(self, unchanged: bool) -> None:
        with self._lock:
            self.repositories_done += 1
            self.repositories_unchanged += int(unchanged)
        if self.on_repository_done:
            self.on_repository_done(self)

    @property
    def partial(self) -> bool:
        """Some repository or pull request is missing or set aside: the run is a partial success."""
        return bool(self.failed or self.rejected)
