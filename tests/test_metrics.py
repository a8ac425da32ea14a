"""The metric views (destinations/metrics.sql) on a small hand-built history, on DuckDB and on
Snowflake (the real connector against fakesnow's server).

The history is GitHub-shaped JSON turned into rows by the source's row builders, landed in two loads
and merged through the real path, so the views read what the merge produces. Every expected value
below is worked out by hand from the timeline written next to it (docs/metrics.md has the rules).

acme/api #1 (ada)   opened as a draft Mon 2026-01-05 09:00; review requested from bob 09:45 (still a
                    draft); ready 10:00; back to draft 12:00; ready again 14:00; requests for carol
                    14:00 and bob again (a re-request) 01-06 09:00; carol's removed 09:30. Reviews: bob COMMENTED 09:30 (while
                    a draft), dependabot[bot] COMMENTED 10:30 (bot), ada COMMENTED 11:00 (the author),
                    bob CHANGES_REQUESTED 11:30, carol PENDING (no submitted_at), bob APPROVED 01-06
                    10:00, carol APPROVED 01-06 12:00. Merged 01-07 09:00. Files +5/-2 and +20/-0.
acme/api #2 (carol) opened 01-06 08:00; review requested from team backend 09:00; bob COMMENTED
                    10:00; closed 01-07 08:00, reopened 01-08 08:00,
                    closed unmerged 01-13 08:00. One file +600/-500 of a truncated list.
acme/api #3 (ada)   opened as a draft 01-13 09:00 and still one; a review requested from a bot; bob
                    COMMENTED 01-14 09:00. Its only file was dropped: the last file list came back empty.
acme/web #1 (bob)   opened Sun 01-11 23:30 UTC (Mon 08:30 in Tokyo: the week must be the UTC one);
                    review requested from carol at once; carol COMMENTED 01-12 23:30; merged
                    01-15 23:30:01; carol APPROVED 01-16 10:00, after the merge. One file +100/-0.
acme/api #4 (ada)   opened 01-12 10:00; converted to a draft 10:10, ready 10:40; ada APPROVED 10:30 (the
                    author), lint[bot] COMMENTED 10:15 (a bot by its login only), carol's review
                    10:50 (dismissed since: DISMISSED), bob APPROVED 11:00; merged 12:00. Files +5/-4.
acme/api #5         opened by dependabot[bot] 01-06; bob APPROVED it: left out everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from destinations import DuckDBConfig, DuckDBWarehouse, SnowflakeConfig, SnowflakeWarehouse, bootstrap, merge_landed_loads, sql
from destinations.merge import ensure_metric_views
from destinations.script import statements
from destinations.working_calendar import WorkingCalendar, working_seconds
from flows import bootstrap as bootstrap_cli
from sources.github.schema import (
    child_fetch_row, event_row, file_row, pull_request_row, review_row, team_member_row, team_row,
)
from warehouse_loads import land, land_new_columns_onto_an_older_warehouse

ORG = "acme"
UTC = timezone.utc
W1, W2, W3 = date(2026, 1, 5), date(2026, 1, 12), date(2026, 1, 19)  # Mondays

PR_METRICS_COLUMNS = (
    "org", "repo", "id", "number", "title", "html_url", "author_login", "state", "is_draft", "is_merged",
    "created_at", "ready_at", "first_review_requested_at", "first_review_at", "first_approval_at",
    "merged_at", "closed_at", "draft_seconds", "time_to_first_review_seconds",
    "time_from_request_to_first_review_seconds", "time_to_first_approval_seconds", "review_time_seconds",
    "time_to_merge_seconds", "merged_without_approval", "merged_without_review", "reviews", "distinct_reviewers",
    "changes_requested_rounds", "review_comments", "reviews_with_comments", "bare_approvals", "times_reopened", "additions", "deletions", "changed_files",
    "size_bucket", "size_is_lower_bound", "first_commit_at", "first_response_at", "commits",
    "coding_time_seconds", "pickup_time_seconds", "cycle_time_seconds", "coding_time_working_seconds",
    "pickup_time_working_seconds", "review_time_working_seconds", "cycle_time_working_seconds",
    "time_to_first_review_working_seconds", "time_to_merge_working_seconds",
)
PHASES = ("coding_time", "pickup_time", "review_time", "cycle_time")
WEEKLY_COLUMNS = (
    "week_start", "org", "repo", "prs_opened", "prs_merged", "prs_closed_without_merge", "merge_rate",
    "time_to_first_review_p50_seconds", "time_to_first_review_p75_seconds", "time_to_first_review_p90_seconds",
    "time_to_merge_p50_seconds", "time_to_merge_p75_seconds", "time_to_merge_p90_seconds",
    "open_prs_at_week_end", "open_pr_median_age_seconds", "time_to_first_review_samples",
    "time_to_merge_samples", "prs_merged_without_review",
    *(f"{phase}_{stat}" for phase in PHASES for stat in ("p50_seconds", "p75_seconds", "p90_seconds", "samples")),
    "open_ready_prs_at_week_end", "review_comments_per_merged_pr", "review_comments_samples", "reviews_with_comments",
    "bare_approvals",
)
REVIEWER_LOAD_COLUMNS = ("week_start", "org", "repo", "reviewer_login", "reviews", "prs_reviewed", "inline_comments")
TIMESTAMPS = {"created_at", "ready_at", "first_review_requested_at", "first_review_at", "first_approval_at",
              "merged_at", "closed_at", "first_commit_at", "first_response_at"}


def at(text: str) -> datetime:
    """'01-05 09:00[:ss]' in January 2026, UTC."""
    day, clock = text.split(" ")
    return datetime.fromisoformat(f"2026-{day}T{clock}").replace(tzinfo=UTC)


def iso(text: str) -> str:
    return at(text).isoformat().replace("+00:00", "Z")


# --- The history, as GitHub serves it ------------------------------------------------------------

ADA = {"login": "ada", "id": 1, "type": "User"}
BOB = {"login": "bob", "id": 2, "type": "User"}
CAROL = {"login": "carol", "id": 3, "type": "User"}
DEPENDABOT = {"login": "dependabot[bot]", "id": 49699333, "type": "Bot"}
LINT_BOT = {"login": "lint[bot]", "id": 77, "type": "User"}
REVIEW_BOT = {"login": "copilot-pull-request-reviewer[bot]", "id": 175728472, "type": "Bot"}


def pull(repo: str, id_: int, number: int, user: dict, created: str, updated: str, *, title: str,
         draft: bool = False, closed: str | None = None, merged: str | None = None) -> dict:
    return pull_request_row(ORG, repo, {
        "id": id_, "number": number, "title": title, "user": user, "draft": draft,
        "state": "closed" if closed else "open",
        "html_url": f"https://github.com/{ORG}/{repo}/pull/{number}",
        "created_at": iso(created), "updated_at": iso(updated),
        "closed_at": iso(closed) if closed else None, "merged_at": iso(merged) if merged else None,
    })


def review(pr: dict, id_: int, user: dict, state: str, submitted: str | None, inline: int | None = 0,
           body: str = "") -> dict:
    """`inline`: its inline comments (None: landed before they were counted)."""
    payload = {"id": id_, "user": user, "state": state, "body": body, "inline_comments": inline}
    if submitted is not None:  # a PENDING review has no submitted_at
        payload["submitted_at"] = iso(submitted)
    return review_row(ORG, pr["repo"], pr, payload)


def event(pr: dict, id_: int, kind: str, when: str, reviewer: dict | None = None, team: str | None = None) -> dict:
    payload: dict[str, Any] = {"id": id_, "node_id": f"TE_{id_}", "event": kind, "actor": ADA, "created_at": iso(when)}
    if reviewer is not None:
        payload["requested_reviewer"] = reviewer
    if team is not None:
        payload["requested_team"] = {"slug": team}
    # The ids count up in timeline order within each pull request: their last digits are positions.
    return event_row(ORG, pr["repo"], pr, payload, id_ % 100)


def commit(pr: dict, id_: int, authored: str, committed: str | None = None) -> dict:
    """A commit as the timeline serves it; `committed` differs from `authored` after a rebase."""
    sha = f"{id_:040x}"
    payload = {"sha": sha, "node_id": f"C_{id_}", "event": "committed", "author": {"name": "A", "date": iso(authored)},
               "committer": {"name": "A", "date": iso(committed or authored)}}
    return event_row(ORG, pr["repo"], pr, payload, id_ % 100)


def comment(pr: dict, id_: int, user: dict, when: str) -> dict:
    payload = {"id": id_, "node_id": f"IC_{id_}", "event": "commented", "actor": user, "user": user,
               "created_at": iso(when)}
    return event_row(ORG, pr["repo"], pr, payload, id_ % 100)


def changed(pr: dict, name: str, additions: int, deletions: int, *, truncated: bool = False) -> dict:
    return file_row(ORG, pr["repo"], pr, {"filename": name, "status": "modified", "additions": additions,
                                          "deletions": deletions}, truncated=truncated)


def fetched(pr: dict, kind: str, items: list) -> dict:
    return child_fetch_row(ORG, pr["repo"], pr, kind, len(items), at("01-20 00:00"))


def load(prs: list[tuple[dict, list, list, list]]) -> dict[str, list[dict]]:
    """One load: each pull request with its fetched reviews, files and events (whole lists)."""
    tables: dict[str, list[dict]] = {name: [] for name in (
        "pull_requests", "pull_request_child_fetches", "pull_request_reviews", "pull_request_files",
        "pull_request_events")}
    for pr, reviews, files, events in prs:
        tables["pull_requests"].append(pr)
        for kind, table, rows in (("reviews", "pull_request_reviews", reviews), ("files", "pull_request_files", files),
                                  ("events", "pull_request_events", events)):
            tables["pull_request_child_fetches"].append(fetched(pr, kind, rows))
            tables[table] += rows
    return tables


def land_history(root: Path) -> None:
    # Load 1, on 01-13 at 09:30: api#2 closed for the first time, api#3 with a file it later drops.
    pr2_then = pull("api", 1002, 2, CAROL, "01-06 08:00", "01-07 08:00", title="Cache", closed="01-07 08:00")
    pr3_then = pull("api", 1003, 3, ADA, "01-13 09:00", "01-13 09:00", title="WIP", draft=True)
    land(root, ORG, "1000.1", load([
        (pr2_then, [review(pr2_then, 5201, BOB, "COMMENTED", "01-06 10:00")],
         [changed(pr2_then, "x.py", 600, 500, truncated=True)], [event(pr2_then, 9201, "closed", "01-07 08:00")]),
        (pr3_then, [], [changed(pr3_then, "draft.py", 3, 0)], []),
    ]), date="2026-01-13")

    # Load 2, a week later: everything as it is now.
    pr1 = pull("api", 1001, 1, ADA, "01-05 09:00", "01-07 09:00", title="Add retries",
               closed="01-07 09:00", merged="01-07 09:00")
    pr2 = pull("api", 1002, 2, CAROL, "01-06 08:00", "01-13 08:00", title="Cache", closed="01-13 08:00")
    pr3 = pull("api", 1003, 3, ADA, "01-13 09:00", "01-14 09:00", title="WIP", draft=True)
    web = pull("web", 2001, 1, BOB, "01-11 23:30", "01-15 23:30:01", title="Dark mode",
               closed="01-15 23:30:01", merged="01-15 23:30:01")
    pr4 = pull("api", 1004, 4, ADA, "01-12 10:00", "01-12 12:00", title="Fix typo",
               closed="01-12 12:00", merged="01-12 12:00")
    pr5 = pull("api", 1005, 5, DEPENDABOT, "01-06 07:00", "01-06 09:00", title="Bump httpx",
               closed="01-06 09:00", merged="01-06 09:00")
    land(root, ORG, "1000.2", load([
        (pr1, [
            review(pr1, 5101, BOB, "COMMENTED", "01-05 09:30", inline=2),
            review(pr1, 5102, DEPENDABOT, "COMMENTED", "01-05 10:30", inline=4),
            review(pr1, 5103, ADA, "COMMENTED", "01-05 11:00", inline=1),
            review(pr1, 5104, BOB, "CHANGES_REQUESTED", "01-05 11:30", inline=3, body="Please add a test."),
            review(pr1, 5105, CAROL, "PENDING", None, inline=1),
            review(pr1, 5106, BOB, "APPROVED", "01-06 10:00"),
            review(pr1, 5107, CAROL, "APPROVED", "01-06 12:00", body="LGTM"),
        ], [changed(pr1, "a.py", 5, 2), changed(pr1, "b.py", 20, 0)], [
            commit(pr1, 9110, "01-02 15:00"),  # written the Friday before it was opened
            comment(pr1, 9111, BOB, "01-05 09:15"),  # before ready: no response yet
            event(pr1, 9101, "review_requested", "01-05 09:45", BOB),
            event(pr1, 9102, "ready_for_review", "01-05 10:00"),
            event(pr1, 9103, "convert_to_draft", "01-05 12:00"),
            comment(pr1, 9112, ADA, "01-05 10:05"),  # the author's own
            comment(pr1, 9113, DEPENDABOT, "01-05 10:10"),  # a bot's
            comment(pr1, 9114, CAROL, "01-05 10:20"),  # the first response
            commit(pr1, 9115, "01-05 13:00", committed="01-06 08:00"),  # rebased the next morning
            event(pr1, 9104, "ready_for_review", "01-05 14:00"),
            event(pr1, 9105, "review_requested", "01-05 14:00", CAROL),
            event(pr1, 9106, "review_requested", "01-06 09:00", BOB),
            event(pr1, 9109, "review_request_removed", "01-06 09:30", CAROL),
            event(pr1, 9107, "merged", "01-07 09:00"),
            event(pr1, 9108, "closed", "01-07 09:00"),
        ]),
        (pr2, [review(pr2, 5201, BOB, "COMMENTED", "01-06 10:00", inline=1)],
         [changed(pr2, "x.py", 600, 500, truncated=True)], [
            commit(pr2, 9205, "01-06 07:30"),
            event(pr2, 9204, "review_requested", "01-06 09:00", team="backend"),
            comment(pr2, 9206, ADA, "01-06 09:30"),
            event(pr2, 9201, "closed", "01-07 08:00"),
            event(pr2, 9202, "reopened", "01-08 08:00"),
            event(pr2, 9203, "closed", "01-13 08:00"),
        ]),
        (pr3, [review(pr3, 5301, BOB, "COMMENTED", "01-14 09:00", inline=None)], [],
         [commit(pr3, 9302, "01-13 08:00"), event(pr3, 9301, "review_requested", "01-13 10:00", REVIEW_BOT),
          comment(pr3, 9303, BOB, "01-14 08:00")]),
        (web, [review(web, 6101, CAROL, "COMMENTED", "01-12 23:30", inline=1),
               review(web, 6102, CAROL, "APPROVED", "01-16 10:00")],
         [changed(web, "theme.css", 100, 0)], [
            event(web, 9401, "review_requested", "01-11 23:30", CAROL),
            event(web, 9402, "merged", "01-15 23:30:01"),
            event(web, 9403, "closed", "01-15 23:30:01"),
        ]),
        (pr4, [
            review(pr4, 5401, LINT_BOT, "COMMENTED", "01-12 10:15"),
            review(pr4, 5402, ADA, "APPROVED", "01-12 10:30"),
            review(pr4, 5404, CAROL, "DISMISSED", "01-12 10:50"),
            review(pr4, 5403, BOB, "APPROVED", "01-12 11:00"),
        ], [changed(pr4, "README.md", 5, 4)], [
            event(pr4, 9501, "convert_to_draft", "01-12 10:10"),
            commit(pr4, 9505, "01-12 10:30"),  # amended after opening: dated after ready
            event(pr4, 9502, "ready_for_review", "01-12 10:40"),
            event(pr4, 9503, "merged", "01-12 12:00"),
            event(pr4, 9504, "closed", "01-12 12:00"),
        ]),
        (pr5, [review(pr5, 5501, BOB, "APPROVED", "01-06 08:00")], [changed(pr5, "pyproject.toml", 1, 1)],
         [event(pr5, 9601, "merged", "01-06 09:00")]),
    ]), date="2026-01-20")


# --- What the views must say ----------------------------------------------------------------------

# In PR_METRICS_COLUMNS order; api#3's draft_seconds runs until now and is checked apart (DRAFT_NOW).
DRAFT_NOW = None
EXPECTED_PRS = [
    # api#1: ready at the first ready_for_review (10:00). Draft 09:00-10:00 and 12:00-14:00 = 10,800 s.
    # First review by someone else at or after 10:00: bob's CHANGES_REQUESTED 11:30 (5,400 s); his
    # 09:30 comment came before ready (it counts in `reviews`, not as the first review); first request
    # 09:45 -> 11:30 = 6,300 s; first approval 01-06 10:00 (86,400 s); ready -> merge 47 h = 169,200 s.
    # Reviews: bob x3 and carol's approval (not the bot's, the author's or the pending one). 27 lines: S.
    # Phases: first commit 01-02 15:00 (its author date; the second commit's committer date moved in a
    # rebase, its author date did not); the first response carol's comment at 10:20 (bob's 09:15 came
    # before ready, the author's and the bot's do not count): coding 01-02 15:00 -> 01-05 10:00 =
    # 2 d 19 h = 241,200 s, pickup 10:00 -> 10:20 = 1,200 s, review 10:20 -> 01-07 09:00 = 168,000 s,
    # cycle 01-02 15:00 -> 01-07 09:00 = 4 d 18 h = 410,400 s = 241,200 + 1,200 + 168,000.
    # Working time (the default calendar: Monday to Friday, whole days, UTC): coding Friday 15:00-24:00
    # and Monday 00:00-10:00 = 19 h = 68,400 s (the weekend does not count); cycle 9 h + Monday and
    # Tuesday + Wednesday to 09:00 = 66 h = 237,600 s = 68,400 + 1,200 + 168,000; the rest on weekdays.
    ("acme", "api", 1001, 1, "Add retries", "https://github.com/acme/api/pull/1", "ada", "closed", False, True,
     at("01-05 09:00"), at("01-05 10:00"), at("01-05 09:45"), at("01-05 11:30"), at("01-06 10:00"),
     at("01-07 09:00"), at("01-07 09:00"), 10800, 5400, 6300, 86400, 168000, 169200, False, False, 4, 2, 1, 5, 3, 1, 0,
     25, 2, 2, "S", False, at("01-02 15:00"), at("01-05 10:20"), 2, 241200, 1200, 410400,
     68400, 1200, 168000, 237600, 5400, 169200),
    # api#2: never a draft; first review 2 h after opening, 1 h after the team's request; closed
    # unmerged, so no merge times and merged_without_approval is NULL; reopened once; 1,100 lines of a
    # truncated list. First commit 07:30 (coding 1,800 s); first response ada's comment 09:30, before
    # bob's review (pickup 5,400 s); no review or cycle time without a merge.
    ("acme", "api", 1002, 2, "Cache", "https://github.com/acme/api/pull/2", "carol", "closed", False, False,
     at("01-06 08:00"), at("01-06 08:00"), at("01-06 09:00"), at("01-06 10:00"), None,
     None, at("01-13 08:00"), 0, 7200, 3600, None, None, None, None, None, 1, 1, 0, 1, 1, 0, 1,
     600, 500, 1, "XL", True, at("01-06 07:30"), at("01-06 09:30"), 1, 1800, 5400, None,
     1800, 5400, None, None, 7200, None),
    # api#3: still a draft: never ready, so no first review although bob commented; the only request
    # was for a bot. The last file list was empty: known sizes of 0, XS. Never ready: a commit, but
    # no coding time and no response (bob's comment came while it was a draft).
    ("acme", "api", 1003, 3, "WIP", "https://github.com/acme/api/pull/3", "ada", "open", True, False,
     at("01-13 09:00"), None, None, None, None,
     None, None, DRAFT_NOW, None, None, None, None, None, None, None, 1, 1, 0, None, None, None, 0,
     0, 0, 0, "XS", False, at("01-13 08:00"), None, 1, None, None, None,
     None, None, None, None, None, None),
    # api#4: opened ready (its first draft change is convert_to_draft), draft 10:10-10:40 = 1,800 s;
    # the author's approval and lint[bot]'s comment do not count; the first review is carol's, now
    # DISMISSED, at 10:50 (3,000 s; review time 10:50 -> 12:00 = 4,200 s; not a changes-requested round);
    # the first approval bob's at 11:00 (3,600 s); merged 12:00 (7,200 s after ready). 9 lines: XS.
    # Its only commit is dated 10:30, after ready: coding 0, cycle from ready = 0 + 3,000 + 4,200.
    ("acme", "api", 1004, 4, "Fix typo", "https://github.com/acme/api/pull/4", "ada", "closed", False, True,
     at("01-12 10:00"), at("01-12 10:00"), None, at("01-12 10:50"), at("01-12 11:00"),
     at("01-12 12:00"), at("01-12 12:00"), 1800, 3000, None, 3600, 4200, 7200, False, False, 2, 2, 0, 0, 0, 1, 0,
     5, 4, 1, "XS", False, at("01-12 10:30"), at("01-12 10:50"), 1, 0, 3000, 7200,
     0, 3000, 4200, 7200, 3000, 7200),
    # web#1: requested at opening, first review a day later; merged 4 days and 1 s after opening; the
    # only approval came the day after the merge (01-16 10:00, 4 d 10 h 30 min after ready = 383,400 s):
    # merged without approval. 100 lines: M. Its events were landed before commits were: commits,
    # first commit, coding and cycle time unknown (NULL); its first response is carol's review.
    # Ready on a Sunday at 23:30: its 30 minutes of Sunday are no working time: pickup and first
    # review 84,600 s of working time, review 259,201 (weekdays only), ready -> merge 343,801.
    ("acme", "web", 2001, 1, "Dark mode", "https://github.com/acme/web/pull/1", "bob", "closed", False, True,
     at("01-11 23:30"), at("01-11 23:30"), at("01-11 23:30"), at("01-12 23:30"), at("01-16 10:00"),
     at("01-15 23:30:01"), at("01-15 23:30:01"), 0, 86400, 86400, 383400, 259201, 345601, True, False, 2, 1, 0, 1, 1, 1, 0,
     100, 0, 1, "M", False, None, at("01-12 23:30"), None, None, 86400, None,
     None, 84600, 259201, None, 84600, 343801),
]

# (week_start, repo) -> the rest of the row in WEEKLY_COLUMNS order (from prs_opened on).
# First reviews: W1 api#1 5,400 and api#2 7,200; W2 api#4 3,000 and web#1 86,400 (01-12 23:30 UTC).
# Merges: W1 api#1 169,200; W2 api#4 7,200 and web#1 345,601. PERCENTILE_CONT of n sorted values at p
# takes position p * (n - 1), interpolating linearly, then rounds half away from zero:
#   [5400, 7200]:   p50 6300, p75 5400 + 0.75 * 1800 = 6750, p90 5400 + 0.9 * 1800 = 7020
#   [3000, 86400]:  p50 44700, p75 3000 + 0.75 * 83400 = 65550, p90 3000 + 0.9 * 83400 = 78060
#   [7200, 345601]: p50 176400.5 -> 176401, p75 261000.75 -> 261001, p90 311760.9 -> 311761
# Open at the end of W1 (01-12 00:00): api#2 (closed only on 01-13; 5 d 16 h = 489,600 s) and web#1
# (30 min = 1,800 s): organisation median 245,700. End of W2 (01-19 00:00): api#3 (5 d 15 h = 486,000).
# Then the sample sizes of the two, the merged without review (none), and the phases of the pull
# requests merged in the week: W1 api#1; W2 api#4 (coding 0, pickup 3,000, review 4,200, cycle
# 7,200) and web#1 (pickup 86,400, review 259,201; no commits known):
#   review [4200, 259201]: p50 131700.5 -> 131701, p75 195450.75 -> 195451, p90 233700.9 -> 233701
NO_PHASES = (None, None, None, 0) * 4
API_1 = (241200,) * 3 + (1,) + (1200,) * 3 + (1,) + (168000,) * 3 + (1,) + (410400,) * 3 + (1,)
API_4 = (0, 0, 0, 1, 3000, 3000, 3000, 1, 4200, 4200, 4200, 1, 7200, 7200, 7200, 1)
EXPECTED_WEEKS = {
    (W1, "api"): (2, 1, 0, 1.0, 6300, 6750, 7020, 169200, 169200, 169200, 1, 489600, 2, 1, 0, *API_1, 1,
                  5.0, 1, 3, 1),
    (W1, "web"): (1, 0, 0, None, None, None, None, None, None, None, 1, 1800, 0, 0, 0, *NO_PHASES, 1,
                  None, 0, None, None),
    (W1, None): (3, 1, 0, 1.0, 6300, 6750, 7020, 169200, 169200, 169200, 2, 245700, 2, 1, 0, *API_1, 2,
                 5.0, 1, 3, 1),
    (W2, "api"): (2, 1, 1, 0.5, 3000, 3000, 3000, 7200, 7200, 7200, 1, 486000, 1, 1, 0, *API_4, 0,
                  0.0, 1, 0, 1),
    (W2, "web"): (0, 1, 0, 1.0, 86400, 86400, 86400, 345601, 345601, 345601, 0, None, 1, 1, 0,
                  None, None, None, 0, 86400, 86400, 86400, 1, 259201, 259201, 259201, 1, None, None, None, 0, 0,
                  1.0, 1, 1, 1),
    (W2, None): (2, 2, 1, 2 / 3, 44700, 65550, 78060, 176401, 261001, 311761, 1, 486000, 2, 2, 0,
                 0, 0, 0, 1, 44700, 65550, 78060, 2, 131701, 195451, 233701, 2, 7200, 7200, 7200, 1, 0,
                 0.5, 2, 1, 2),
}
# Review depth of the pull requests merged in the week (the counted reviews' inline comments, the
# reviews with a body or an inline comment, the approvals with neither): W1 api#1 5 inline comments
# (bob's 2 and 3; the bot's, the author's and the pending review's do not count), 3 reviews with
# something to say (bob's comment with inline comments, his request for changes with a body,
# carol's "LGTM") and 1 bare approval (bob's); W2 api#4 none, 1 bare approval (bob's; carol's
# dismissed review is no approval) and web#1 1, 1 and 1 (carol's after the merge still counts).
# api#3's review was landed before inline comments were counted: its three are NULL.
# Open and not in draft at each week's end (work in progress): W1 api#2 and web#1 (both opened
# ready); W2 only api#3, which is still the draft it was opened as: none.

EXPECTED_REVIEWER_LOAD = [
    (W1, "acme", "api", "bob", 4, 2, 6),  # api#1 x3 (2 + 3 + 0 inline comments), api#2 (1)
    (W1, "acme", "api", "carol", 1, 1, 0),  # api#1's approval; her PENDING review does not count
    (W2, "acme", "api", "bob", 2, 2, None),  # api#4, api#3 (a review of a draft is still a review; not counted)
    (W2, "acme", "api", "carol", 1, 1, 0),  # api#4's dismissed review
    (W2, "acme", "web", "carol", 2, 1, 1),  # web#1 01-12 23:30 UTC and 01-16 (after the merge)
]


def monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def select(warehouse: Any, view: str, columns: tuple[str, ...], order: str) -> list[tuple]:
    """The view's rows, columns in contract order. fakesnow's server sends a NULL TIMESTAMP_TZ as
    1970-01-01, so timestamps come with an IS NULL flag and NULL is put back here."""
    names = []
    for column in columns:
        names.append(column)
        if column in TIMESTAMPS:
            names.append(f"{column} IS NULL")
    rows = warehouse.execute(f"SELECT {', '.join(names)} FROM {warehouse.table(view)} ORDER BY {order}")
    result = []
    for row in rows:
        values, it = [], iter(row)
        for column in columns:
            value = next(it)
            if column in TIMESTAMPS and next(it):
                value = None
            values.append(value)
        result.append(tuple(values))
    return result


def check_views(warehouse: Any, before: datetime) -> None:
    after = utc_now() + timedelta(seconds=1)

    prs = select(warehouse, "pull_request_metrics", PR_METRICS_COLUMNS, "repo, number")
    draft = PR_METRICS_COLUMNS.index("draft_seconds")
    wip = prs[2]
    # api#3 is a draft since 01-13 09:00: its draft time runs until now.
    assert (before - at("01-13 09:00")).total_seconds() <= wip[draft] <= (after - at("01-13 09:00")).total_seconds()
    assert prs[:2] + [wip[:draft] + (DRAFT_NOW,) + wip[draft + 1:]] + prs[3:] == EXPECTED_PRS

    weekly = select(warehouse, "weekly_pull_request_metrics", WEEKLY_COLUMNS, "week_start, repo NULLS LAST")
    # A row per repository and one for the organisation, every week from W1 to the current week.
    weeks = (monday(after.date()) - W1).days // 7 + 1
    assert len(weekly) == 3 * weeks
    assert [(w, r) for w, _, r, *_ in weekly[:6]] == list(EXPECTED_WEEKS)
    for week_start, org, repo, *values in weekly:
        assert org == ORG
        if (week_start, repo) in EXPECTED_WEEKS:
            assert tuple(values) == EXPECTED_WEEKS[(week_start, repo)], (week_start, repo)
            continue
        # From W3 on nothing happens; api#3 stays open (in the api and organisation rows), its age
        # taken at the week's end, or now for the current week.
        assert values[:10] == [0, 0, 0] + [None] * 7, (week_start, repo)
        # api#3 still a draft; no merge, so no review depth.
        assert tuple(values[12:]) == (0, 0, 0, *NO_PHASES, 0, None, 0, None, None), (week_start, repo)
        open_prs, median_age = values[10:12]
        if repo == "web":
            assert (open_prs, median_age) == (0, None)
            continue
        assert open_prs == 1
        week_end = datetime.combine(week_start + timedelta(days=7), datetime.min.time(), UTC)
        if week_end <= before:
            assert median_age == (week_end - at("01-13 09:00")).total_seconds(), week_start
        else:  # the current week
            assert (before - at("01-13 09:00")).total_seconds() <= median_age <= (after - at("01-13 09:00")).total_seconds()
    assert weekly[6][:3] == (W3, ORG, "api") and weekly[6][13:15] == (1, 486000 + 7 * 86400)

    load = select(warehouse, "reviewer_load", REVIEWER_LOAD_COLUMNS, "week_start, repo, reviewer_login")
    assert load == EXPECTED_REVIEWER_LOAD


def view_columns(warehouse: Any, view: str) -> tuple[str, ...]:
    return tuple(warehouse.columns(view))


def check_contract(warehouse: Any) -> None:
    assert view_columns(warehouse, "pull_request_metrics") == PR_METRICS_COLUMNS
    assert view_columns(warehouse, "weekly_pull_request_metrics") == WEEKLY_COLUMNS
    assert view_columns(warehouse, "reviewer_load") == REVIEWER_LOAD_COLUMNS


def views(warehouse: Any) -> set[str]:
    rows = warehouse.execute(sql.view_names(), [sql.fold(warehouse.schema_name, warehouse.dialect)])
    return {str(name).lower() for (name,) in rows}


# --- DuckDB -------------------------------------------------------------------------------------


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[DuckDBWarehouse]:
    warehouse = DuckDBWarehouse(DuckDBConfig(path=tmp_path / "wh" / "warehouse.duckdb"))
    yield warehouse
    warehouse.close()


def test_metrics_on_duckdb_in_a_session_that_is_not_utc(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    land_history(tmp_path)
    before = utc_now()
    report = merge_landed_loads(duck, str(tmp_path), ORG, "github_acme")
    assert report.loads_merged == ["1000.1", "1000.2"] and report.rows_deleted["pull_request_files"] == 1
    # Weeks and dates must be UTC ones whatever the session's zone: web#1 opened on a Sunday 23:30 UTC,
    # already Monday in Tokyo.
    duck._conn.execute("SET TimeZone = 'Asia/Tokyo'")
    check_contract(duck)
    check_views(duck, before)


def test_bootstrap_twice_is_idempotent_and_views_follow_the_data(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    bootstrap(duck, ["github_acme"])
    bootstrap(duck, ["github_acme"])
    assert views(duck) == set(sql.METRIC_VIEWS)
    assert duck.execute(f"SELECT count(*) FROM {duck.table('pull_request_metrics')}") == [(0,)]
    land_history(tmp_path)
    before = utc_now()
    merge_landed_loads(duck, str(tmp_path), ORG, "github_acme")
    bootstrap(duck, ["github_acme"])
    check_views(duck, before)


def test_views_are_created_after_a_merge_when_missing(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    """A warehouse bootstrapped by the previous version: tables, no views; the merge is told not to
    bootstrap (as the flow does after its own bootstrap), and creates the views once it has merged."""
    bootstrap(duck, ["github_acme"])
    for name in reversed(sql.METRIC_VIEWS):
        duck.execute(f"DROP VIEW {duck.table(name)}")
    assert views(duck) == set()
    land_history(tmp_path)
    before = utc_now()
    merge_landed_loads(duck, str(tmp_path), ORG, "github_acme", bootstrap_first=False)
    assert views(duck) == set(sql.METRIC_VIEWS)
    check_views(duck, before)
    assert ensure_metric_views(duck) == []  # all there: nothing replaced


def test_views_reach_a_warehouse_whose_tables_lack_newer_columns(
    tmp_path: Path, duck: DuckDBWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tables created before author_type and the other newer columns existed, and no views: the next
    merge's bootstrap adds the declared columns and creates the views."""
    land_new_columns_onto_an_older_warehouse(tmp_path, duck, monkeypatch)
    assert views(duck) == set(sql.METRIC_VIEWS)
    # PR 1 was merged without author_type, reviewed by a review without an author: it counts as someone
    # else's, but it has no submitted_at (like a pending one), so no review is counted.
    rows = duck.execute(f"SELECT number, reviews FROM {duck.table('pull_request_metrics')} ORDER BY number")
    assert rows == [(1, 0), (2, 0), (3, 0)]


# --- Snowflake, through fakesnow's server ---------------------------------------------------------


@pytest.fixture
def snow(snowflake_config: Callable[..., SnowflakeConfig], tmp_path: Path) -> Iterator[SnowflakeWarehouse]:
    warehouse = SnowflakeWarehouse(snowflake_config(f"file://{tmp_path.resolve()}/github/"))
    yield warehouse
    warehouse.close()


def test_metrics_on_snowflake(tmp_path: Path, snow: SnowflakeWarehouse) -> None:
    land_history(tmp_path)
    before = utc_now()
    merge_landed_loads(snow, str(tmp_path), ORG, "github_acme")
    check_contract(snow)
    check_views(snow, before)


def test_views_are_created_after_a_merge_when_missing_on_snowflake(tmp_path: Path, snow: SnowflakeWarehouse) -> None:
    bootstrap(snow, ["github_acme"])
    bootstrap(snow, ["github_acme"])
    assert views(snow) == set(sql.METRIC_VIEWS)
    for name in reversed(sql.METRIC_VIEWS):
        snow.execute(f"DROP VIEW {snow.table(name)}")
    land_history(tmp_path)
    before = utc_now()
    merge_landed_loads(snow, str(tmp_path), ORG, "github_acme", bootstrap_first=False)
    assert views(snow) == set(sql.METRIC_VIEWS)
    check_views(snow, before)


# --- The Snowflake text (`./dev bootstrap --print-sql`) ---------------------------------------------


def test_metrics_sql_must_hold_the_views_in_their_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each view reads only the ones before it: a reordered or missing view fails at load, by name."""
    statements_ = sql.METRICS_SQL.read_text(encoding="utf-8").split(";\n")
    swapped = [statements_[1], statements_[0], *statements_[2:]]
    reordered = tmp_path / "metrics.sql"
    reordered.write_text(";\n".join(swapped), encoding="utf-8")
    monkeypatch.setattr(sql, "METRICS_SQL", reordered)
    with pytest.raises(ValueError, match="holds views \\('counted_reviews', 'numbers'"):
        sql.metric_views('"github"')


TIMESTAMP_TZ_COLUMNS = {"created_at", "merged_at", "closed_at", "first_review_at", "submitted_at"}


@pytest.fixture
def printed_views(capsys: pytest.CaptureFixture[str]) -> list[exp.Expr]:
    assert bootstrap_cli.main(["--print-sql", "--org", ORG]) == 0
    found = [s for s in statements(capsys.readouterr().out) if s.startswith("CREATE OR REPLACE VIEW")]
    return [sqlglot.parse_one(s, read="snowflake", error_level=sqlglot.ErrorLevel.RAISE) for s in found]


def test_print_sql_creates_the_views_in_order_and_each_parses(printed_views: list[exp.Expr]) -> None:
    assert [tree.this.sql("snowflake") for tree in printed_views] == [
        f'"<DATABASE>"."GITHUB".{name}' for name in sql.METRIC_VIEWS
    ]
    assert all(isinstance(tree, exp.Create) and tree.args.get("replace") for tree in printed_views)
    # Without COPY GRANTS a replaced view loses the SELECT granted to the report's role at every bootstrap.
    assert all(tree.find(exp.CopyGrantsProperty) for tree in printed_views)


def test_views_depend_on_no_session_parameter(printed_views: list[exp.Expr]) -> None:
    """WEEK_START changes DATE_TRUNC('WEEK'), DAYOFWEEK and WEEK; TIMEZONE changes what a TIMESTAMP_TZ
    or CURRENT_TIMESTAMP() becomes when cast to DATE or TIMESTAMP_NTZ; the current database completes a
    name without one. Views are read in the reader's session, so weeks go through DAYOFWEEKISO, every
    such cast through CONVERT_TIMEZONE('UTC', ...), and every table or view is named with its database."""
    for tree in printed_views:
        ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
        for table in tree.find_all(exp.Table):
            if table.name not in ctes and not isinstance(table.this, exp.Values):
                assert (table.catalog, table.db) == ("<DATABASE>", "GITHUB"), table.sql("snowflake")
        text = tree.sql("snowflake").upper()
        assert "DATE_TRUNC" not in text and "WEEKOFYEAR" not in text and "DAYOFWEEK(" not in text
        for cast in tree.find_all(exp.Cast):
            if cast.to.this in (exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP):
                operand = cast.this
                assert not isinstance(operand, exp.CurrentTimestamp), cast.sql("snowflake")
                assert not (isinstance(operand, exp.Column) and operand.name.lower() in TIMESTAMP_TZ_COLUMNS), cast.sql("snowflake")
        for now in tree.find_all(exp.CurrentTimestamp):  # in the reader's time zone otherwise
            assert isinstance(now.parent, exp.ConvertTimezone), now.parent.sql("snowflake")
        # An instant as UTC wall time; or, for working time, an instant in the calendar's own zone
        # and a local wall time of that zone as UTC: the zone is a column, never the session's.
        for convert in tree.find_all(exp.ConvertTimezone):
            target, source = convert.args["target_tz"], convert.args.get("source_tz")
            if source is None:
                assert target.name == "UTC" or (isinstance(target, exp.Column) and target.name == "time_zone"), convert.sql("snowflake")
            else:
                assert isinstance(source, exp.Column) and source.name == "time_zone" and target.name == "UTC", convert.sql("snowflake")


def test_views_select_listed_columns_and_exact_percentiles(printed_views: list[exp.Expr]) -> None:
    """SELECT * over a table breaks a Snowflake view once the merge adds a column to that table;
    percentiles are PERCENTILE_CONT (linear interpolation), never an approximation."""
    for tree in printed_views:
        ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
        for select in tree.find_all(exp.Select):
            if any(isinstance(e, exp.Star) or e.is_star for e in select.expressions):
                assert select.args["from_"].this.name in ctes, select.sql("snowflake")
        text = tree.sql("snowflake").upper()
        assert "APPROX_PERCENTILE" not in text and "MEDIAN(" not in text and "PERCENTILE_DISC" not in text
    weekly = printed_views[sql.METRIC_VIEWS.index("weekly_pull_request_metrics")]
    # p50/p75/p90 of time to first review, to merge and of the four phases, and the median open age
    assert len(list(weekly.find_all(exp.PercentileCont))) == 3 * 6 + 1


# --- Same-second draft changes (issue 20.6) ----------------------------------------------------------


def test_draft_changes_in_one_second_follow_the_timeline_order(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    """acme/api #7 (ada): opened as a draft 02-02 10:00; ready_for_review and convert_to_draft in
    the same second 11:00 (in that timeline order), ready again 12:00, merged 13:00. Its first
    draft change is the ready_for_review, so it was opened as a draft and ready at 11:00 (the view
    compared timestamps, found no first, and said ready at 10:00). Draft: 10:00-11:00 and
    11:00-12:00 = 7,200 s; time to merge 13:00 - 11:00 = 7,200 s.
    acme/api #8 (ada): opened ready 02-02 10:00; convert_to_draft then ready_for_review, both at
    11:00; merged 12:00: opened ready (ready at 10:00), a draft for 0 s, merged after 7,200 s."""
    pr7 = pull("api", 1007, 7, ADA, "02-02 10:00", "02-02 13:00", title="Same second", draft=True,
               closed="02-02 13:00", merged="02-02 13:00")
    pr8 = pull("api", 1008, 8, ADA, "02-02 10:00", "02-02 12:00", title="Same second, opened ready",
               closed="02-02 12:00", merged="02-02 12:00")
    land(tmp_path, ORG, "1000.7", load([
        (pr7, [], [], [event(pr7, 9701, "ready_for_review", "02-02 11:00"),
                       event(pr7, 9702, "convert_to_draft", "02-02 11:00"),
                       event(pr7, 9703, "ready_for_review", "02-02 12:00"),
                       event(pr7, 9704, "merged", "02-02 13:00")]),
        (pr8, [], [], [event(pr8, 9801, "convert_to_draft", "02-02 11:00"),
                       event(pr8, 9802, "ready_for_review", "02-02 11:00"),
                       event(pr8, 9803, "merged", "02-02 12:00")]),
    ]), date="2026-02-02")
    merge_landed_loads(duck, str(tmp_path), ORG, "github_acme")
    rows = select(duck, "pull_request_metrics",
                  ("number", "ready_at", "draft_seconds", "time_to_merge_seconds", "merged_without_review"), "number")
    # Neither got a review: merged without one (issue 20.3; every merged PR of the history above had one).
    assert rows == [(7, at("02-02 11:00"), 7200, 7200, True), (8, at("02-02 10:00"), 0, 7200, True)]


# --- Working calendars ---------------------------------------------------------------------------

BERLIN_OFFICE = WorkingCalendar(timezone="Europe/Berlin", days="mon-fri", hours="09:00-17:00",
                                holidays=[date(2026, 1, 6), date(2026, 4, 3)])
WORKING_SPANS = {  # working column -> (start, end) columns of the span it measures, in the view
    "pickup_time_working_seconds": ("ready_at", "first_response_at"),
    "review_time_working_seconds": ("first_response_at", "merged_at"),
    "time_to_first_review_working_seconds": ("ready_at", "first_review_at"),
    "time_to_merge_working_seconds": ("ready_at", "merged_at"),
}


def land_dst_history(root: Path) -> None:
    """Organisation `dst`, whose calendar is the default ("*") made Berlin's whole weekdays: a pull
    request ready on Friday 2026-03-27 12:00 UTC and merged on Monday 2026-03-30 12:00 UTC, across
    the night the clocks went forward."""
    pr = pull_request_row("dst", "ops", {
        "id": 3001, "number": 1, "title": "Across DST", "user": ADA, "state": "closed",
        "html_url": "https://github.com/dst/ops/pull/1", "created_at": "2026-03-27T12:00:00Z",
        "updated_at": "2026-03-30T12:00:00Z", "closed_at": "2026-03-30T12:00:00Z", "merged_at": "2026-03-30T12:00:00Z",
    })
    land(root, "dst", "2000.1", {"pull_requests": [pr]}, date="2026-03-30")


def check_working_time(warehouse: Any) -> None:
    # dst/ops#1: Friday 13:00 CET (12:00 UTC) to 24:00 CET (23:00 UTC) is 11 h; Monday starts at
    # 00:00 CEST, Sunday 22:00 UTC: 14 h to 12:00 UTC. 25 h of working time in 72 h of wall time.
    [(merge_working,)] = warehouse.execute(
        f"SELECT time_to_merge_working_seconds FROM {warehouse.table('pull_request_metrics')} WHERE org = 'dst'")
    assert merge_working == 25 * 3600
    # acme in Berlin office hours, 09:00-17:00, with Epiphany (01-06) off. By hand, api#1: ready
    # Monday 01-05 10:00 UTC (11:00 CET), first review 11:30 UTC: 5,400 s; merged Wednesday 01-07
    # 09:00 UTC (10:00 CET): Monday 11:00-17:00 (6 h), Tuesday a holiday, Wednesday 09:00-10:00 (1 h):
    # 7 h = 25,200 s. api#4, merged the same Monday 12:00 UTC after ready at 10:00 UTC: 7,200 s.
    columns = ["repo", "number", "ready_at", "first_commit_at", "first_response_at", "first_review_at",
               "merged_at", "coding_time_seconds", *WORKING_SPANS, "coding_time_working_seconds",
               "cycle_time_working_seconds"]
    rows = warehouse.execute(f"SELECT {', '.join(columns)} FROM {warehouse.table('pull_request_metrics')} "
                             "WHERE org = 'acme' ORDER BY repo, number")
    by_pr = {(r[0], r[1]): dict(zip(columns, r)) for r in rows}
    assert by_pr[("api", 1)]["time_to_first_review_working_seconds"] == 5400
    assert by_pr[("api", 1)]["time_to_merge_working_seconds"] == 25200
    assert by_pr[("api", 4)]["time_to_merge_working_seconds"] == 7200
    for pr in by_pr.values():  # each one as the reference computes it from the view's own instants
        def at_utc(column: str) -> datetime | None:
            value = pr[column]
            return None if value is None else value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        for column, (start, end) in WORKING_SPANS.items():
            if pr[column] is not None:
                assert pr[column] == working_seconds(BERLIN_OFFICE, at_utc(start), at_utc(end)), (pr["number"], column)
        if pr["coding_time_seconds"]:
            assert pr["coding_time_working_seconds"] == working_seconds(
                BERLIN_OFFICE, at_utc("first_commit_at"), at_utc("ready_at"))
    assert sum(pr[column] is not None for pr in by_pr.values() for column in WORKING_SPANS) == 14  # api#1, #4, web#1: 4 each; api#2: 2


CALENDARS = {"acme": BERLIN_OFFICE, "*": WorkingCalendar(timezone="Europe/Berlin")}


def test_working_time_on_duckdb(tmp_path: Path, duck: DuckDBWarehouse) -> None:
    bootstrap(duck, ["github_acme", "github_dst"], CALENDARS)
    land_history(tmp_path)
    land_dst_history(tmp_path)
    merge_landed_loads(duck, str(tmp_path), ORG, "github_acme")
    merge_landed_loads(duck, str(tmp_path), "dst", "github_dst")
    duck._conn.execute("SET TimeZone = 'America/Los_Angeles'")  # the session's zone plays no part
    check_working_time(duck)
    # A bootstrap with the same calendars writes nothing; without calendars (a merge's) keeps them.
    def calendars_line(ensured: list[str]) -> str:
        return next(line for line in ensured if line.startswith("working calendars"))

    assert calendars_line(bootstrap(duck, [], CALENDARS)).endswith("2 unchanged")
    assert calendars_line(bootstrap(duck, [])).endswith("2 kept")
    check_working_time(duck)
    # Back to the default: Monday to Friday, whole days, UTC.
    bootstrap(duck, [], {})
    [(merge_working,)] = duck.execute(
        f"SELECT time_to_merge_working_seconds FROM {duck.table('pull_request_metrics')} WHERE org = 'dst'")
    assert merge_working == 24 * 3600


def test_working_time_on_snowflake(tmp_path: Path, snow: SnowflakeWarehouse) -> None:
    bootstrap(snow, ["github_acme", "github_dst"], CALENDARS)
    land_history(tmp_path)
    land_dst_history(tmp_path)
    merge_landed_loads(snow, str(tmp_path), ORG, "github_acme")
    merge_landed_loads(snow, str(tmp_path), "dst", "github_dst")
    check_working_time(snow)


# --- Teams -----------------------------------------------------------------------------------------

TEAM_COLUMNS = ("week_start", "org", "team_slug", "prs_opened", "prs_merged", "time_to_first_review_p50_seconds",
                "time_to_first_review_p90_seconds", "time_to_first_review_samples", "time_to_merge_p50_seconds",
                "time_to_merge_samples", "cycle_time_p50_seconds", "cycle_time_samples")
TEAM_IDS = {"backend": 71, "frontend": 72, "platform": 73}


def land_teams(root: Path, load_id: str, date_: str, members: dict[str, list[dict]]) -> None:
    """A load of the organisation's teams and each team's whole member list, as the source lands them."""
    fetched = datetime.fromisoformat(f"{date_}T06:00:00+00:00")
    teams = [team_row(ORG, {"id": TEAM_IDS[slug], "slug": slug, "name": slug.title()}, fetched) for slug in members]
    rows = [team_member_row(ORG, team, member, fetched) for team in teams for member in members[team["slug"]]]
    land(root, ORG, load_id, {"teams": teams, "team_members": rows}, date=date_)


# By the teams as they are after the second load: ada in backend and platform, bob and carol in
# frontend (carol moved there from backend: the second load's backend list no longer has her).
# backend and platform, W1: api#1 opened, first reviewed (5,400) and merged (169,200; cycle 410,400);
# W2: api#3 and api#4 opened, api#4 reviewed (3,000) and merged (7,200; cycle 7,200). frontend, W1:
# api#2 (carol) and web#1 (bob, opened on Sunday 01-11) opened, api#2 reviewed (7,200); W2: web#1
# reviewed (86,400) and merged (345,601; its cycle time unknown: no commits landed). dependabot's
# pull request is in no team, and out of the views anyway.
ADA_WEEKS = [(W1, 1, 1, 5400, 5400, 1, 169200, 1, 410400, 1), (W2, 2, 1, 3000, 3000, 1, 7200, 1, 7200, 1)]
EXPECTED_TEAM_WEEKS = sorted(
    [(week, ORG, slug, *rest) for slug in ("backend", "platform") for week, *rest in ADA_WEEKS]
    + [(W1, ORG, "frontend", 2, 0, 7200, 7200, 1, None, 0, None, 0),
       (W2, ORG, "frontend", 0, 1, 86400, 86400, 1, 345601, 1, None, 0)]
)


def check_team_weeks(warehouse: Any) -> None:
    assert view_columns(warehouse, "weekly_team_metrics") == TEAM_COLUMNS
    rows = warehouse.execute(f"SELECT {', '.join(TEAM_COLUMNS)} FROM {warehouse.table('weekly_team_metrics')} "
                             "ORDER BY week_start, team_slug")
    assert sorted(tuple(r) for r in rows) == EXPECTED_TEAM_WEEKS


@pytest.mark.parametrize("kind", ["duckdb", "snowflake"])
def test_weekly_metrics_by_the_authors_team_after_a_team_change(kind: str, tmp_path: Path, request) -> None:
    warehouse = request.getfixturevalue("duck" if kind == "duckdb" else "snow")
    land_history(tmp_path)
    land_teams(tmp_path, "1000.3", "2026-01-13", {"backend": [ADA, CAROL], "frontend": [BOB], "platform": [ADA]})
    land_teams(tmp_path, "1000.4", "2026-01-20", {"backend": [ADA], "frontend": [BOB, CAROL], "platform": [ADA]})
    merge_landed_loads(warehouse, str(tmp_path), ORG, "github_acme")
    members = warehouse.execute(f"SELECT team_slug, login FROM {warehouse.table('team_members')} ORDER BY 1, 2")
    assert [tuple(r) for r in members] == [("backend", "ada"), ("frontend", "bob"), ("frontend", "carol"),
                                           ("platform", "ada")]
    check_team_weeks(warehouse)


def test_work_in_progress_counts_a_pull_request_by_its_draft_state_at_each_week_end(
        tmp_path: Path, duck: DuckDBWarehouse) -> None:
    """Opened ready, converted to draft in W1, ready again in W2 and still open: not in progress
    at the end of W1, in progress at the end of W2. A second one opened as a draft and made ready
    and back to draft in the same second of W1 (timeline order: ready, then draft) stays a draft."""
    back = pull("ops", 4001, 1, ADA, "01-05 09:00", "01-13 10:00", title="Back and forth")
    flip = pull("ops", 4002, 2, BOB, "01-06 09:00", "01-08 12:00", title="Flip", draft=True)
    land(tmp_path, ORG, "1000.1", load([
        (back, [], [], [event(back, 9701, "convert_to_draft", "01-07 10:00"),
                        event(back, 9702, "ready_for_review", "01-13 10:00")]),
        (flip, [], [], [event(flip, 9801, "ready_for_review", "01-08 12:00"),
                        event(flip, 9802, "convert_to_draft", "01-08 12:00")]),
    ]), date="2026-01-13")
    merge_landed_loads(duck, str(tmp_path), ORG, "github_acme")
    rows = duck.execute(f"SELECT week_start, open_prs_at_week_end, open_ready_prs_at_week_end FROM "
                        f"{duck.table('weekly_pull_request_metrics')} WHERE repo = 'ops' ORDER BY week_start")
    assert [tuple(r) for r in rows[:2]] == [(W1, 2, 0), (W2, 2, 1)]
