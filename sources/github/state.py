"""The source's saved progress, kept in dlt's source state and committed with each landed chunk.

    state["repos"][repo_id]          one repository, keyed by its id (a rename keeps its progress)
        name                         its current name
        cursor                       every pull request updated before this second has landed
        at_cursor {pr_id: hash}      the pull requests of the cursor's second, with a content hash:
                                     a second change within that second is still seen
        etag                         page 1's ETag when the last complete listing started
        listing                      an unfinished listing, resumed where its last chunk stopped:
                                     next_url, etag, top/top_hashes (newest seen), frontier/
                                     frontier_ids (oldest emitted: anything newer is done)
        failure                      reason, failures, retry_at: skipped until retry_at
        child_kinds                  the child lists its pull requests are landed with; absent
                                     (written before events existed): reviews and files, and the
                                     next run puts the events of its pull requests on the retry
                                     list; so it does when "events with commits and comments" is
                                     missing (events landed before they held commits)
    state["retry"][repo_id][pr_id]   child lists still to fetch: number, updated_at, kinds,
                                     failures, reason, retry_at (None: as soon as possible),
                                     node_id (GraphQL mode fetches by it; absent in older state)
    state["recent"][repo_id][pr_id]  [number, updated_at, reviews_read_at, node_id] of recently
                                     updated pull requests, for the reconciliation pass (older
                                     state has no node_id: those go over REST)

Timestamps are GitHub's ISO strings ("2025-01-02T03:04:05Z"), which order correctly as text.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, timezone
from typing import Any

HOUR = 3600.0
DAY = 24 * HOUR


def iso(value: date | datetime | str | None) -> str | None:
    """GitHub's timestamp format, which also orders correctly as a string."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def row_hash(row: dict[str, Any]) -> str:
    """Content hash of a pull_requests row: tells a second change within the cursor's second.

    The row, not the raw payload: the payload embeds whole repository objects (`pushed_at`,
    star counts) that change without the pull request changing; and without the repository's
    name, which a rename changes without changing the pull request.
    """
    own = {name: value for name, value in row.items() if name not in _NAMED_AFTER_REPOSITORY}
    text = json.dumps(own, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


_NAMED_AFTER_REPOSITORY = frozenset({"row_key", "org", "repo", "repo_full_name", "html_url", "head_repo_full_name"})


def retry_delay(failures: int) -> float:
    """Backoff of a failing repository or pull request: 1 h, 2 h, 4 h, ... at most a day."""
    return min(DAY, HOUR * 2 ** max(0, failures - 1))


def repo_state(state: dict[str, Any], repo_id: int, name: str) -> dict[str, Any]:
    """The repository's entry, created on first sight; adopts state saved under its name by
    earlier versions (which keyed repositories by name)."""
    repos = state.setdefault("repos", {})
    entry = repos.get(str(repo_id))
    if entry is None:
        entry = repos[str(repo_id)] = _adopt_name_keyed(state, name)
    entry["name"] = name
    return entry


def _adopt_name_keyed(state: dict[str, Any], name: str) -> dict[str, Any]:
    old = state.get("resources", {}).get("pull_requests", {}).get("repos", {})
    saved = old.pop(name, None)
    if not saved:
        return {}
    return {
        "cursor": saved.get("cursor"),
        "at_cursor": {str(pr_id): None for pr_id in saved.get("at_cursor", [])},  # hash unknown
        "etag": saved.get("etag"),
    }


def rewind_repository(entry: dict[str, Any], oldest: str) -> None:
    """Make a repository list again everything updated at or after `oldest` (the rows of a
    landing that was lost), from page 1: no ETag, no listing in progress, whose frontier may lie
    above what is to be fetched again. A repository still in its first backfill (no cursor yet)
    keeps none: its listing starts over and goes down to where the backfill was to end, so the
    rest of it is fetched too, not cut off at `oldest`."""
    backfilling = entry.get("cursor") is None and entry.get("listing") is not None
    if not backfilling and (entry.get("cursor") is None or oldest <= entry["cursor"]):
        entry["cursor"], entry["at_cursor"] = oldest, {}
    entry.pop("etag", None)
    entry.pop("listing", None)
