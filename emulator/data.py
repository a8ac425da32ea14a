"""Deterministic, GitHub-shaped test data for the emulator.

Objects handed out are never mutated afterwards: a mutation replaces the PR dict or the
review list (copy-on-write), so server threads can serialize what they got without a lock.
The same holds for corruptions (`corrupt_pull_request`, `corrupt_review`), which serve a
malformed value the way a mangled recorded payload had it.
Files are not stored; they are regenerated from (seed, pr id, index) so 20,000 PRs stay cheap.
A PR's issue timeline is generated with it, from its own generator, consistent with its fields and
reviews; mutations append to it (copy-on-write, like reviews).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

logger = logging.getLogger(__name__)

MAX_SERVED_FILES = 3000
"""GitHub serves at most this many files of a PR (30 pages of 100)."""

UNICODE_TITLE = "修复: naïve café ☕ émoji 🚀"
UNICODE_FILENAMES = (
    "docs/naïve café/résumé ☕.md",
    "src/données utilisateur.py",
    "文档/说明 文件.txt",
    "assets/émoji 🚀 icon.svg",
)
EDGE_CASE_PRS = 5
_CACHE_FILES_ABOVE = 300
"""Regenerating a few files per request is cheap; a 3,050-file PR is cached instead."""

_START = calendar.timegm((2024, 1, 1, 0, 0, 0))
_LAST_CREATED = calendar.timegm((2025, 11, 30, 0, 0, 0))
_END = calendar.timegm((2025, 12, 31, 0, 0, 0))
MUTATION_EPOCH = calendar.timegm((2026, 1, 1, 0, 0, 0))
"""Mutations happen after every generated timestamp, like a later day on GitHub."""

_REPO_NAMES = ("api", "web", "infra", "docs", "sdk", "cli", "data-pipeline", "mobile",
               "auth-service", "billing", "search", "design-system", "terraform", "ml-models")
_WORDS = ("fix", "add", "refactor", "update", "remove", "improve", "bump", "support",
          "handle", "cache", "retry", "pagination", "logging", "config", "timeout", "parser",
          "metrics", "docs", "tests", "migration", "schema", "endpoint", "client", "auth")
_DIRS = ("src", "src/core", "src/api", "tests", "docs", "lib/utils", "scripts", ".github/workflows")
_EXTS = ("py", "ts", "go", "md", "yaml", "sql", "json", "rs")
_LABELS = (("bug", "d73a4a"), ("enhancement", "a2eeef"), ("documentation", "0075ca"),
           ("dependencies", "0366d6"), ("good first issue", "7057ff"), ("breaking", "b60205"))
_ASSOCIATIONS = ("MEMBER", "MEMBER", "COLLABORATOR", "CONTRIBUTOR", "NONE")
_REVIEW_STATES = ("APPROVED", "APPROVED", "COMMENTED", "CHANGES_REQUESTED", "DISMISSED")
_FILE_STATUSES = ("modified", "modified", "modified", "added", "removed", "renamed")
_TEAMS = ("backend", "frontend", "platform", "security")
_MERGE_METHODS = ("merge", "squash", "rebase")
_COMMENTS = ("Thanks!", "Rebased on main.", "CI is green now.", "Could you take another look?")
LONG_DISCUSSION = 0.02
"""Share of PRs whose timeline holds 100-180 comments: more than one page."""
TIMELINE_KEPT = frozenset({"review_requested", "review_request_removed", "ready_for_review",
                           "convert_to_draft", "closed", "reopened", "merged", "committed", "commented"})
"""The timeline items the pipeline lands (sources.github.schema.TIMELINE_EVENTS); the others
(labeled, reviewed) are noise to it."""
REBASED = 0.2
"""Share of PRs rebased once: their commits have new shas and committer dates, the author dates
they had."""
OLDER_PAYLOAD_KEYS = ("draft", "locked")
"""Keys older GitHub payloads (and GitHub Enterprise versions) do not send."""


class _Drop:
    def __repr__(self) -> str:
        return "DROP_KEY"


DROP_KEY = _Drop()
"""As the value of a corruption: remove the key from the served JSON instead of replacing it."""


def iso(ts: float) -> str:
    """GitHub's timestamp format: UTC, second resolution."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


def _epoch(timestamp: str) -> int:
    return calendar.timegm(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ"))


def _sha(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()


def _with(data: dict, field: str, value: object) -> dict:
    """A copy of `data` with `field` replaced, or removed when `value` is DROP_KEY."""
    if value is DROP_KEY:
        return {k: v for k, v in data.items() if k != field}
    return {**data, field: value}


def _node_id(prefix: str, ident: int) -> str:
    return prefix + base64.b64encode(ident.to_bytes(8, "big")).decode().rstrip("=")


@dataclass
class _Pull:
    data: dict                      # LIST-shape JSON; replaced, never mutated
    reviews: list[dict]             # replaced, never appended to
    file_count: int                 # generated files: index 0..file_count-1
    removed_files: frozenset[str] = frozenset()
    extra_files: tuple[dict, ...] = ()
    unicode_files: bool = False
    commits: int = 1
    files_cache: list[dict] | None = None  # only for big PRs; cleared when files change

    corrupted: bool = False         # served malformed: neither it nor its children are expected
    clean: dict | None = None       # `data` before corruption: what the emulator itself reads
    corrupted_reviews: frozenset[int] = frozenset()  # indexes into `reviews` served malformed
    events: list[dict] = field(default_factory=list)  # the issue timeline; replaced, never appended to
    corrupted_events: frozenset[int] = frozenset()  # indexes into `events` served malformed

    @property
    def own(self) -> dict:
        """The uncorrupted PR: files, mutations and ordering never trip over a corrupted value."""
        return self.clean if self.clean is not None else self.data


@dataclass
class _Repo:
    data: dict
    labels: list[dict]              # shared, read-only label objects
    ref_repo: dict                  # shared {"id", "full_name", "fork"} used by head/base
    pulls: dict[int, _Pull] = field(default_factory=dict)
    deleted: bool = False

    @property
    def full_name(self) -> str:
        return self.data["full_name"]


@dataclass
class _Org:
    login: str
    data: dict
    repos: dict[str, _Repo] = field(default_factory=dict)  # key: lower-case name
    teams: dict[str, list[int]] = field(default_factory=dict)  # slug -> member user ids, in order


class Dataset:
    """All orgs, repos, PRs, reviews, files and timelines the emulator serves."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._lock = threading.RLock()
        self._orgs: dict[str, _Org] = {}
        self._rng = random.Random(seed)
        self._clock = MUTATION_EPOCH
        self._next_repo_id = 700_000_000 + self._rng.randrange(100_000)
        self._next_pr_id = 1_800_000_000 + self._rng.randrange(100_000)
        self._next_review_id = 2_100_000_000 + self._rng.randrange(100_000)
        self._users = [
            {"login": f"dev-{name}", "id": 1_000_000 + 7919 * i, "type": "User"}
            for i, name in enumerate(("ada", "linus", "grace", "ken", "barbara", "guido", "yukihiro",
                                      "margaret", "dennis", "frances", "james", "anders", "rob",
                                      "radia", "bjarne", "sophie", "tim", "hedy", "alan", "katherine"))
        ]
        self._humans = list(self._users)
        self._node_index: dict[str, tuple[_Org, _Repo, _Pull]] = {}  # PR node_id -> where it lives
        self._review_index: dict[str, tuple[_Org, _Repo, _Pull]] = {}  # review node_id -> its PR
        self._bot = {"login": "dependabot[bot]", "id": 49699333, "type": "Bot"}
        self._users.append(self._bot)

    # ------------------------------------------------------------------ generation
    @classmethod
    def generate(cls, orgs: dict[str, int], prs_per_repo: int | Sequence[int], seed: int = 0,
                 edge_cases: bool = True) -> Dataset:
        """Build a dataset; same arguments give the same data.

        `prs_per_repo` is one count for every repo or a list cycled over the repos in order.
        With `edge_cases`, the first repo of the first org holds max(n, 5) PRs whose first five
        are: deleted author (+ a review by a deleted account, and the head fork gone), unicode
        title and file names, 3,050 files, 130 reviews (at least one by a bot), and no reviews,
        served as an older payload (no `draft` or `locked` key).
        """
        ds = cls(seed)
        counts = [prs_per_repo] if isinstance(prs_per_repo, int) else list(prs_per_repo) or [0]
        repo_index = 0
        for org_index, (login, n_repos) in enumerate(orgs.items()):
            org = _Org(login, {"login": login, "id": 9_000_000 + 104_729 * org_index,
                               "type": "Organization"})
            ds._orgs[login.lower()] = org
            ds._generate_teams(org)
            for i in range(n_repos):
                repo = ds._new_repo(org, i)
                n_prs = counts[repo_index % len(counts)]
                edge = edge_cases and org_index == 0 and i == 0
                if edge:
                    n_prs = max(n_prs, EDGE_CASE_PRS)
                for number in range(1, n_prs + 1):
                    ds._generate_pull(repo, number, edge_case=number if edge else 0)
                repo_index += 1
        logger.debug("generated dataset seed=%s orgs=%s", seed, orgs)
        return ds

    def _generate_teams(self, org: _Org) -> None:
        """Each person in one team, some in a second; from the org's own generator."""
        rng = random.Random(f"{self.seed}/{org.login}/teams")
        org.teams = {slug: [] for slug in _TEAMS}
        for index, user in enumerate(self._humans):
            org.teams[_TEAMS[index % len(_TEAMS)]].append(user["id"])
            if rng.random() < 0.2:
                second = rng.choice([s for s in _TEAMS if s != _TEAMS[index % len(_TEAMS)]])
                org.teams[second].append(user["id"])

    def _team_dict(self, org: _Org, slug: str) -> dict:
        """A team as `GET /orgs/{org}/teams` serves it; ids unique across organisations."""
        index = list(self._orgs.values()).index(org)
        team_id = 5_000_000 + 1_000 * index + _TEAMS.index(slug)
        parent = "platform" if slug == "security" else None
        return {"id": team_id, "node_id": _node_id("T_kwDO", team_id), "slug": slug, "name": slug.capitalize(),
                "description": None, "privacy": "closed", "permission": "pull",
                "url": f"https://api.github.com/organizations/{org.data['id']}/team/{team_id}",
                "parent": self._team_dict(org, parent) if parent else None}

    def teams(self, org: str) -> list[dict]:
        with self._lock:
            o = self._org(org)
            return [self._team_dict(o, slug) for slug in o.teams]

    def team_members(self, org: str, slug: str) -> list[dict]:
        with self._lock:
            o = self._org(org)
            if slug not in o.teams:
                raise KeyError(f"unknown team {slug!r}")
            by_id = {u["id"]: u for u in self._humans}
            return [dict(by_id[i]) for i in o.teams[slug]]

    def move_team_member(self, org: str, login: str, to_slug: str) -> None:
        """`login` leaves every team of `org` and joins `to_slug`: a team change."""
        with self._lock:
            o = self._org(org)
            user = next(u for u in self._humans if u["login"] == login)
            for members in o.teams.values():
                if user["id"] in members:
                    members.remove(user["id"])
            o.teams[to_slug].append(user["id"])

    def _new_repo(self, org: _Org, index: int) -> _Repo:
        rng = self._rng
        base = _REPO_NAMES[index % len(_REPO_NAMES)]
        name = base if index < len(_REPO_NAMES) else f"{base}-{index // len(_REPO_NAMES)}"
        self._next_repo_id += rng.randint(1, 50_000)
        created = rng.randint(_START - 86400 * 700, _START)
        full_name = f"{org.login}/{name}"
        data = {
            "id": self._next_repo_id,
            "node_id": _node_id("R_kgDO", self._next_repo_id),
            "name": name,
            "full_name": full_name,
            "owner": org.data,
            "private": rng.random() < 0.3,
            "html_url": f"https://github.com/{full_name}",
            "description": f"The {name} of {org.login}",
            "fork": False,
            "created_at": iso(created),
            "updated_at": iso(rng.randint(_START, _END)),
            "pushed_at": iso(rng.randint(_START, _END)),
            "default_branch": "main",
            "archived": False,
        }
        labels = [{"id": self._next_repo_id * 10 + j, "name": lname, "color": color}
                  for j, (lname, color) in enumerate(_LABELS)]
        repo = _Repo(data, labels, {"id": data["id"], "full_name": full_name, "fork": False})
        org.repos[name.lower()] = repo
        return repo

    def _generate_pull(self, repo: _Repo, number: int, edge_case: int = 0) -> None:
        rng = self._rng
        created = rng.randint(_START, _LAST_CREATED)
        roll = rng.random()
        state, merged, draft = "closed", roll >= 0.45, False
        if roll < 0.30:
            state, merged, draft = "open", False, rng.random() < 0.3
        n_reviews = rng.choice((0, 1, 1, 2, 2, 2, 3, 4))
        if edge_case == 4:
            n_reviews = 130
        elif edge_case == 5:
            n_reviews = 0
        elif edge_case == 1:
            n_reviews = max(n_reviews, 2)
        times = sorted(created + rng.randint(60, 86400 * 10) for _ in range(n_reviews))
        last = max([created, *times])
        closed_at = last + rng.randint(60, 86400 * 5) if state == "closed" else None
        updated = max(last, closed_at or 0) + rng.randint(0, 3600)
        user = None if edge_case == 1 else rng.choice(self._users)
        pr = self._pull_dict(repo, number, user, created, updated, state, draft,
                             closed_at, merged, rng)
        if edge_case == 2:
            pr["title"] = UNICODE_TITLE
        pull = _Pull(pr, [], file_count=rng.randint(1, 9), commits=rng.randint(1, 12),
                     unicode_files=edge_case == 2)
        if edge_case == 2:
            pull.file_count = max(pull.file_count, len(UNICODE_FILENAMES))
        elif edge_case == 3:
            pull.file_count = 3050
        pull.reviews = [self._review_dict(repo, pr, t, rng) for t in times]
        if edge_case == 1:
            pull.reviews[0] = {**pull.reviews[0], "user": None, "author_association": "NONE"}
        elif edge_case == 4:
            pull.reviews[1] = {**pull.reviews[1], "user": self._bot}
        elif edge_case == 5:
            pull.data = {k: v for k, v in pr.items() if k not in OLDER_PAYLOAD_KEYS}
        pull.events = self._timeline(repo, pull)
        repo.pulls[number] = pull

    def _pull_dict(self, repo: _Repo, number: int, user: dict | None, created: int, updated: int,
                   state: str, draft: bool, closed_at: int | None, merged: bool,
                   rng: random.Random) -> dict:
        self._next_pr_id += rng.randint(1, 3000)
        pr_id = self._next_pr_id
        words = rng.sample(_WORDS, 3)
        ref = f"{words[0]}/{words[1]}-{words[2]}-{number}"
        org_login = repo.data["owner"]["login"]
        head_sha = _sha(self.seed, pr_id, "head")
        # The fields below draw from their own generator: the main one (and so every count and
        # every other value of a seed) stays what it was before they existed.
        extra = random.Random(f"{self.seed}/{pr_id}/extras")
        head_repo, head_owner = self._head_repo(repo, user, extra)
        is_open = state == "open"
        return {
            "id": pr_id,
            "node_id": _node_id("PR_kwDO", pr_id),
            "number": number,
            "html_url": f"https://github.com/{repo.full_name}/pull/{number}",
            "state": state,
            "locked": False,
            "title": f"{words[0].capitalize()} {words[1]} {words[2]}",
            "body": None if rng.random() < 0.2 else f"This PR will {words[0]} the {words[1]}.",
            "user": user,
            "author_association": rng.choice(_ASSOCIATIONS) if user else "NONE",
            "labels": rng.sample(repo.labels, rng.choice((0, 0, 1, 1, 2))),
            "requested_reviewers": rng.sample(self._users, rng.randint(0, 2)) if state == "open" else [],
            "requested_teams": ([self._team(name) for name in extra.sample(_TEAMS, extra.choice((0, 0, 1)))]
                                if is_open else []),
            "assignees": extra.sample(self._humans, extra.choice((0, 0, 1, 1, 2))),
            "milestone": self._milestone(repo, extra) if extra.random() < 0.25 else None,
            "auto_merge": self._auto_merge(extra) if is_open and extra.random() < 0.25 else None,
            "draft": draft,
            "head": {"ref": ref, "sha": head_sha, "label": f"{head_owner}:{ref}",
                     "repo": head_repo},
            "base": {"ref": "main", "sha": _sha(self.seed, pr_id, "base"), "label": f"{org_login}:main",
                     "repo": repo.ref_repo},
            "created_at": iso(created),
            "updated_at": iso(updated),
            "closed_at": iso(closed_at) if closed_at else None,
            "merged_at": iso(closed_at) if merged and closed_at else None,
            "merge_commit_sha": None if state == "closed" and not merged else _sha(self.seed, pr_id, "merge"),
        }

    def _head_repo(self, repo: _Repo, user: dict | None, extra: random.Random) -> tuple[dict | None, str]:
        """(head.repo, head owner): the repo itself, an author's fork, or null for a deleted fork."""
        org_login = repo.data["owner"]["login"]
        roll = extra.random()
        if user is None or roll < 0.04:  # a deleted account takes its fork with it
            return None, "unknown"
        if roll < 0.2:
            fork_id = 800_000_000 + extra.randrange(10_000_000)
            name = repo.data["name"]
            return {"id": fork_id, "full_name": f"{user['login']}/{name}", "fork": True}, user["login"]
        return repo.ref_repo, org_login

    @staticmethod
    def _team(slug: str) -> dict:
        return {"id": 5_000_000 + _TEAMS.index(slug), "slug": slug, "name": slug.capitalize()}

    @staticmethod
    def _milestone(repo: _Repo, extra: random.Random) -> dict:
        number = extra.randint(1, 3)
        return {"id": repo.data["id"] * 10 + number, "number": number, "title": f"v1.{number}",
                "state": "open"}

    def _auto_merge(self, extra: random.Random) -> dict:
        return {"enabled_by": extra.choice(self._humans), "merge_method": extra.choice(_MERGE_METHODS),
                "commit_title": None, "commit_message": None}

    def _review_dict(self, repo: _Repo, pr: dict, submitted: int, rng: random.Random) -> dict:
        self._next_review_id += rng.randint(1, 5000)
        rid = self._next_review_id
        user = rng.choice(self._users)
        state = rng.choice(_REVIEW_STATES)
        return {
            "id": rid,
            "node_id": _node_id("PRR_kwDO", rid),
            "user": user,
            "body": "" if state == "APPROVED" else rng.choice(("Looks good, one nit.", "Please add a test.",
                                                               "Why not reuse the helper?", "")),
            "state": state,
            "submitted_at": iso(submitted),
            "commit_id": pr["head"]["sha"],
            "author_association": rng.choice(_ASSOCIATIONS),
            "html_url": f"{pr['html_url']}#pullrequestreview-{rid}",
        }

    def _file(self, pull: _Pull, index: int) -> dict:
        """File `index` of a PR, derived only from (seed, pr id, index)."""
        pr = pull.own
        rng = random.Random(f"{self.seed}/{pr['id']}/{index}")
        if pull.unicode_files and index < len(UNICODE_FILENAMES):
            name = UNICODE_FILENAMES[index]
        else:
            name = f"{rng.choice(_DIRS)}/{rng.choice(_WORDS)}_{index}.{rng.choice(_EXTS)}"
        status = rng.choice(_FILE_STATUSES)
        additions = 0 if status == "removed" else rng.randint(1, 120)
        deletions = rng.randint(1, 80) if status in ("removed", "modified") else rng.randint(0, 10)
        extra = {"previous_filename": f"old/{name}"} if status == "renamed" else {}
        return self._file_dict(pr, name, status, additions, deletions, extra)

    @staticmethod
    def _file_dict(pr: dict, name: str, status: str, additions: int, deletions: int,
                   extra: dict) -> dict:
        full_name = pr["base"]["repo"]["full_name"]
        return {
            "sha": _sha(pr["id"], name, status),
            "filename": name,
            "status": status,
            "additions": additions,
            "deletions": deletions,
            "changes": additions + deletions,
            **extra,
            "blob_url": f"https://github.com/{full_name}/blob/{pr['head']['sha']}/{quote(name)}",
            "patch": f"@@ -1,{deletions} +1,{additions} @@\n-old line\n+new line",
        }

    def _timeline(self, repo: _Repo, pull: _Pull) -> list[dict]:
        """The PR's issue timeline as its fields and reviews imply, oldest first.

        Review requests come before the requested users' first review, and a currently requested
        reviewer (or team) was requested after their last review; draft changes end in the PR's
        `draft` flag (opening as a draft has no event); close/reopen cycles come before the final
        close; a merged PR has `merged` and `closed` at `closed_at`. Noise GitHub also serves:
        commits (no `id`), comments, labels, reviews. Every event lies between `created_at` and
        `updated_at`. Drawn from its own generator: the main one, and every other value of a seed,
        stays what it was before timelines existed.
        """
        pr = pull.own
        rng = random.Random(f"{self.seed}/{pr['id']}/timeline")
        created, updated = _epoch(pr["created_at"]), _epoch(pr["updated_at"])
        closed = _epoch(pr["closed_at"]) if pr["closed_at"] else None
        end = closed or updated  # lifecycle events come before the final close
        author = pr["user"]
        timed: list[tuple[int, int, dict]] = []

        def add(at: int, kind: str, actor: dict | None, **extra: object) -> None:
            seq = len(timed)
            timed.append((at, seq, self._event_dict(repo, pr, seq, kind, actor, at, **extra)))

        first_review: dict[int, tuple[dict, int]] = {}
        last_review: dict[int, int] = {}
        for review in pull.reviews:
            user, at = review["user"], _epoch(review["submitted_at"])
            if user is not None:
                first_review.setdefault(user["id"], (user, at))
                last_review[user["id"]] = at
        for user, at in first_review.values():
            if rng.random() < 0.8:
                add(rng.randint(created, at), "review_requested", author, requested_reviewer=user)
        for user in pr["requested_reviewers"]:
            add(rng.randint(last_review.get(user["id"], created), updated), "review_requested", author,
                requested_reviewer=user)
        for team in pr["requested_teams"]:
            add(rng.randint(created, updated), "review_requested", author, requested_team=team)
        taken = {u["id"] for u in pr["requested_reviewers"]} | set(first_review)
        candidates = [u for u in self._humans if u["id"] not in taken and u != author]
        if rng.random() < 0.15 and candidates:
            user = rng.choice(candidates)
            asked, removed = sorted(rng.randint(created, end) for _ in range(2))
            add(asked, "review_requested", author, requested_reviewer=user)
            add(removed, "review_request_removed", author, requested_reviewer=user)

        if pr.get("draft"):
            if rng.random() < 0.5:  # was ready for review once, then converted back
                ready, back = sorted(rng.randint(created, updated) for _ in range(2))
                add(ready, "ready_for_review", author)
                add(back, "convert_to_draft", author)
        elif rng.random() < 0.25:  # opened as a draft, ready later (sometimes back and forth)
            changes = 3 if rng.random() < 0.3 else 1
            kinds = ("ready_for_review", "convert_to_draft", "ready_for_review")
            for at, kind in zip(sorted(rng.randint(created, end) for _ in range(changes)), kinds):
                add(at, kind, author)
        if rng.random() < 0.1:
            shut, reopened = sorted(rng.randint(created, end) for _ in range(2))
            add(shut, "closed", author)
            add(reopened, "reopened", author)

        # Commit dates from their own generator (the main one draws as it always did): the first
        # commit was written up to three days before the PR was opened; some PRs were rebased.
        commit_rng = random.Random(f"{self.seed}/{pr['id']}/commits")
        rebased_at = commit_rng.randint(created, end) if commit_rng.random() < REBASED else None
        for index in range(pull.commits):
            at = rng.randint(created, end)
            if index == 0:
                at = created - commit_rng.randint(0, 3 * 86400)
            add(at, "committed", None, index=index,
                committed_at=max(at, rebased_at) if rebased_at is not None and at < rebased_at else at)
        comments = rng.randint(100, 180) if rng.random() < LONG_DISCUSSION else rng.choice((0, 0, 1, 2, 3, 5))
        for _ in range(comments):
            add(rng.randint(created, end), "commented", rng.choice(self._humans), body=rng.choice(_COMMENTS))
        for label in pr["labels"]:
            add(rng.randint(created, end), "labeled", author, label=label)
        for review in pull.reviews:
            add(_epoch(review["submitted_at"]), "reviewed", review["user"], review=review)

        if closed is not None:
            closer = rng.choice(self._humans)
            if pr["merged_at"]:
                add(closed, "merged", closer, commit_id=pr["merge_commit_sha"])
            add(closed, "closed", closer)
        return [event for _, _, event in sorted(timed, key=lambda t: (t[0], t[1]))]

    def _event_dict(self, repo: _Repo, pr: dict, seq: int, kind: str, actor: dict | None, at: int,
                    **extra: object) -> dict:
        """One timeline item of `kind`, shaped as GitHub serves it; `seq` makes its id unique."""
        event_id = pr["id"] * 1000 + seq
        if kind == "committed":  # a commit, not an event: no id, no actor, no created_at
            committed = extra.get("committed_at", at)
            assert isinstance(committed, int)
            # A rebased commit is a new commit (new sha) with the author date it had.
            sha = _sha(self.seed, pr["id"], "commit", extra["index"], *(["rebased"] if committed != at else []))
            person = {"name": "A Developer", "email": "dev@example.com"}
            return {"sha": sha, "node_id": _node_id("C_kwDO", int(sha[:12], 16)),
                    "url": f"https://api.github.com/repos/{repo.full_name}/git/commits/{sha}",
                    "author": {**person, "date": iso(at)}, "committer": {**person, "date": iso(committed)},
                    "message": f"Commit {extra['index'] + 1}", "parents": [], "event": "committed"}
        if kind == "reviewed":
            review = extra["review"]
            assert isinstance(review, dict)
            return {"id": review["id"], "node_id": review["node_id"], "user": review["user"],
                    "state": review["state"].lower(), "submitted_at": review["submitted_at"],
                    "event": "reviewed"}
        if kind == "commented":
            return {"id": event_id, "node_id": _node_id("IC_kwDO", event_id), "user": actor,
                    "actor": actor, "body": extra["body"], "created_at": iso(at), "updated_at": iso(at),
                    "author_association": "MEMBER", "event": "commented"}
        event: dict = {
            "id": event_id,
            "node_id": _node_id("TE_kwDO", event_id),
            "url": f"https://api.github.com/repos/{repo.full_name}/issues/events/{event_id}",
            "actor": actor,
            "event": kind,
            "commit_id": extra.get("commit_id"),
            "commit_url": None,
            "created_at": iso(at),
        }
        if kind == "labeled":
            label = extra["label"]
            assert isinstance(label, dict)
            event["label"] = {"name": label["name"], "color": label["color"]}
        if kind in ("review_requested", "review_request_removed"):
            event["review_requester"] = actor
            if "requested_reviewer" in extra:
                event["requested_reviewer"] = extra["requested_reviewer"]
            else:
                event["requested_team"] = extra["requested_team"]
        return event

    def _append_event(self, repo: _Repo, pull: _Pull, kind: str, actor: dict | None, at: int,
                      **extra: object) -> dict:
        event = self._event_dict(repo, pull.own, len(pull.events), kind, actor, at, **extra)
        pull.events = [*pull.events, event]
        return event

    # ------------------------------------------------------------------ lookup
    def _org(self, org: str) -> _Org:
        try:
            return self._orgs[org.lower()]
        except KeyError:
            raise KeyError(f"unknown org {org!r}") from None

    def _repo(self, org: str, repo: str) -> _Repo:
        r = self._org(org).repos.get(repo.lower())
        if r is None or r.deleted:
            raise KeyError(f"unknown repo {org}/{repo}")
        return r

    def _pull(self, org: str, repo: str, number: int) -> _Pull:
        p = self._repo(org, repo).pulls.get(int(number))
        if p is None:
            raise KeyError(f"unknown pull request {org}/{repo}#{number}")
        return p

    # ------------------------------------------------------------------ read API
    def orgs(self) -> list[str]:
        with self._lock:
            return [o.login for o in self._orgs.values()]

    def repositories(self, org: str) -> list[dict]:
        """Live (not deleted) repos of an org, by id. Raises KeyError for an unknown org."""
        with self._lock:
            repos = [r.data for r in self._org(org).repos.values() if not r.deleted]
        return sorted(repos, key=lambda r: r["id"])

    def repository(self, org: str, repo: str) -> dict:
        with self._lock:
            return self._repo(org, repo).data

    def pull_requests(self, org: str, repo: str) -> list[dict]:
        """LIST-shape PRs of a repo, by number."""
        with self._lock:
            pulls = list(self._repo(org, repo).pulls.values())
        return [p.data for p in sorted(pulls, key=lambda p: p.own["number"])]

    def pull_request(self, org: str, repo: str, number: int) -> dict:
        """Single-PR shape: the list shape plus additions/deletions/changed_files/commits."""
        with self._lock:
            pull = self._pull(org, repo, number)
            data, commits = pull.data, pull.commits
        files = self._files_of(pull)
        return {**data, "additions": sum(f["additions"] for f in files),
                "deletions": sum(f["deletions"] for f in files),
                "changed_files": len(files), "commits": commits}

    def reviews(self, org: str, repo: str, number: int) -> list[dict]:
        """Reviews by id (chronological)."""
        with self._lock:
            return self._pull(org, repo, number).reviews

    def review_comments(self, org: str, repo: str, number: int) -> list[dict]:
        """The PR's inline review comments (`GET /pulls/{n}/comments`), by id: each review's."""
        with self._lock:
            pull = self._pull(org, repo, number)
            reviews = pull.reviews
        return [comment for review in reviews for comment in self._inline_comments(pull, review)]

    def inline_comments(self, org: str, repo: str, number: int, review: dict) -> list[dict]:
        """One review's inline comments (GraphQL's PullRequestReview.comments)."""
        with self._lock:
            pull = self._pull(org, repo, number)
        return self._inline_comments(pull, review)

    def _inline_comments(self, pull: _Pull, review: dict) -> list[dict]:
        """Derived from (seed, review id) alone, so that they change nothing else of the dataset
        and stay what they were when the review is edited or dismissed (GitHub deletes no comment
        then). A third of reviews have none, a few have many."""
        rid = review.get("id")
        if not isinstance(rid, int):
            return []
        rng = random.Random(f"{self.seed}/inline/{rid}")
        count = rng.choice((0, 0, 0, 1, 1, 2, 2, 3, 5, 9))
        pr = pull.own
        out = []
        for k in range(count):
            cid = rid * 16 + k
            name = self._file(pull, k % max(1, pull.file_count))["filename"]
            out.append({
                "id": cid,
                "node_id": _node_id("PRRC_kwDO", cid),
                "pull_request_review_id": rid,
                "user": review.get("user"),
                "author_association": review.get("author_association"),
                "body": rng.choice(("nit: naming", "Could this be a constant?", "Needs a test.", "Why?")),
                "path": name,
                "line": rng.randint(1, 200),
                "side": "RIGHT",
                "commit_id": review.get("commit_id"),
                "original_commit_id": review.get("commit_id"),
                "diff_hunk": "@@ -1,3 +1,4 @@",
                "created_at": review.get("submitted_at"),
                "updated_at": review.get("submitted_at"),
                "html_url": f"{pr['html_url']}#discussion_r{cid}",
                "pull_request_url": pr["html_url"].replace("https://github.com/", "https://api.github.com/repos/")
                                                  .replace("/pull/", "/pulls/"),
            })
        return out

    def locate_review(self, node_id: str) -> tuple[str, str, int, dict] | None:
        """(org login, repo name, PR number, review) of the review whose `node_id` this is, or
        None: GraphQL's `nodes(ids:)` on PullRequestReview ids."""
        with self._lock:
            found = self._review_index.get(node_id)
            if found is None:  # a review added since the index was built: rebuild once
                self._review_index = {rv["node_id"]: (o, r, p) for o in self._orgs.values()
                                      for r in o.repos.values() for p in r.pulls.values()
                                      for rv in p.reviews if rv.get("node_id")}
                found = self._review_index.get(node_id)
            if found is None:
                return None
            org, repo, pull = found
            if repo.deleted:
                return None
            review = next((rv for rv in pull.reviews if rv.get("node_id") == node_id), None)
            if review is None:
                return None
            return org.login, repo.data["name"], pull.own["number"], review

    def files(self, org: str, repo: str, number: int) -> list[dict]:
        """Every file of the PR (not capped)."""
        with self._lock:
            pull = self._pull(org, repo, number)
        return self._files_of(pull)

    def timeline(self, org: str, repo: str, number: int) -> list[dict]:
        """The PR's issue timeline, oldest first: every kind, as served."""
        with self._lock:
            return self._pull(org, repo, number).events

    def events(self, org: str, repo: str, number: int) -> list[dict]:
        """The timeline events the pipeline lands (TIMELINE_KEPT), corrupted ones left out."""
        with self._lock:
            pull = self._pull(org, repo, number)
            return [e for i, e in enumerate(pull.events)
                    if e["event"] in TIMELINE_KEPT and i not in pull.corrupted_events]

    def locate_pull(self, node_id: str) -> tuple[str, str, int, dict] | None:
        """(org login, repo name, number, served LIST-shape dict) of the PR whose `node_id` this is,
        or None (unknown id, or its repository was deleted). The GraphQL endpoint's `nodes(ids:)`."""
        with self._lock:
            found = self._node_index.get(node_id)
            if found is None:  # a PR added since the index was built: rebuild once
                self._node_index = {p.own["node_id"]: (o, r, p) for o in self._orgs.values()
                                    for r in o.repos.values() for p in r.pulls.values()}
                found = self._node_index.get(node_id)
            if found is None or found[1].deleted:
                return None
            org, repo, pull = found
            return org.login, repo.data["name"], pull.own["number"], pull.data

    def served_files(self, org: str, repo: str, number: int) -> list[dict]:
        """What GitHub serves: the first 3,000 files."""
        return self.files(org, repo, number)[:MAX_SERVED_FILES]

    def _files_of(self, pull: _Pull) -> list[dict]:
        with self._lock:
            if pull.files_cache is not None:
                return pull.files_cache
            count, removed, extra = pull.file_count, pull.removed_files, pull.extra_files
        generated = (self._file(pull, i) for i in range(count))
        files = [f for f in generated if f["filename"] not in removed] + list(extra)
        if count > _CACHE_FILES_ABOVE:
            with self._lock:
                if (pull.removed_files, pull.extra_files) == (removed, extra):
                    pull.files_cache = files
        return files

    def expected(self, org: str | None = None) -> dict[str, set]:
        """Natural keys a correct warehouse holds for `org` (all orgs if None).

        Deleted repositories are left out: GitHub no longer serves them. So are corrupted items: a
        corrupted PR with its reviews, files and events, a corrupted review or event alone. Events
        are the timeline's TIMELINE_KEPT kinds, by id.
        """
        with self._lock:
            orgs = [self._org(org)] if org is not None else list(self._orgs.values())
            pulls = [p for o in orgs for r in o.repos.values() if not r.deleted
                     for p in r.pulls.values()]
        out: dict[str, set] = {"pull_requests": set(), "pull_request_reviews": set(),
                               "pull_request_files": set(), "pull_request_events": set()}
        for p in pulls:
            if p.corrupted:
                continue
            pr_id = p.data["id"]
            out["pull_requests"].add(pr_id)
            out["pull_request_reviews"].update(
                r["id"] for i, r in enumerate(p.reviews) if i not in p.corrupted_reviews)
            out["pull_request_files"].update(
                (pr_id, f["filename"]) for f in self._files_of(p)[:MAX_SERVED_FILES])
            out["pull_request_events"].update(
                e["node_id"] for i, e in enumerate(p.events)
                if e["event"] in TIMELINE_KEPT and i not in p.corrupted_events)
        return out

    # ------------------------------------------------------------------ mutations
    def _tick(self) -> int:
        """Dataset clock: strictly increasing, later than every generated timestamp."""
        self._clock += 60
        return self._clock

    def _touch(self, pull: _Pull, now: int, **changes: object) -> None:
        pull.data = {**pull.data, **changes, "updated_at": iso(now)}
        if pull.clean is not None:
            pull.clean = {**pull.clean, **changes, "updated_at": iso(now)}

    def add_review(self, org: str, repo: str, number: int, state: str = "APPROVED") -> dict:
        with self._lock:
            r = self._repo(org, repo)
            pull = self._pull(org, repo, number)
            now = self._tick()
            review = {**self._review_dict(r, pull.own, now, self._rng), "state": state}
            pull.reviews = [*pull.reviews, review]
            self._append_event(r, pull, "reviewed", review["user"], now, review=review)
            self._touch(pull, now)
            return review

    def remove_file(self, org: str, repo: str, number: int, filename: str | None = None) -> str:
        """Remove `filename` (default: the first file). Returns the removed name."""
        with self._lock:
            pull = self._pull(org, repo, number)
            files = self._files_of(pull)
            if not files:
                raise ValueError(f"{org}/{repo}#{number} has no files")
            name = filename if filename is not None else files[0]["filename"]
            if name not in {f["filename"] for f in files}:
                raise KeyError(f"no file {name!r} in {org}/{repo}#{number}")
            pull.extra_files = tuple(f for f in pull.extra_files if f["filename"] != name)
            pull.removed_files = pull.removed_files | {name}
            pull.files_cache = None
            self._touch(pull, self._tick())
            return name

    def add_file(self, org: str, repo: str, number: int, filename: str | None = None,
                 additions: int = 10, deletions: int = 0) -> dict:
        """Add (or replace) a file; it is served last. Returns the file."""
        with self._lock:
            pull = self._pull(org, repo, number)
            now = self._tick()
            name = filename or f"src/added_{now}.py"
            status = "added" if deletions == 0 else "modified"
            new = self._file_dict(pull.own, name, status, additions, deletions, {})
            pull.extra_files = (*(f for f in pull.extra_files if f["filename"] != name), new)
            pull.removed_files = pull.removed_files | {name}  # hide a generated file of that name
            pull.files_cache = None
            self._touch(pull, now)
            return new

    def edit_title(self, org: str, repo: str, number: int, title: str, *, same_second: bool = False) -> None:
        """`same_second`: the edit keeps the second of the dataset's last change (GitHub's
        `updated_at` has one-second resolution)."""
        with self._lock:
            pull = self._pull(org, repo, number)
            self._touch(pull, self._clock if same_second else self._tick(), title=title)

    def edit_review(self, org: str, repo: str, number: int, index: int = 0, **changes: object) -> dict:
        """Change a review (e.g. state="DISMISSED", body=...) without moving the PR's `updated_at`:
        whether GitHub moves it is not settled, so the pipeline must not rely on it."""
        with self._lock:
            pull = self._pull(org, repo, number)
            reviews = list(pull.reviews)
            reviews[index] = {**reviews[index], **changes}
            pull.reviews = reviews
            return reviews[index]

    def request_review(self, org: str, repo: str, number: int, login: str | None = None,
                       team: str | None = None) -> dict:
        """The author asks `login` (default: the first human not yet requested) or `team` for a
        review: a `review_requested` event, the PR's requested reviewers or teams, a new
        `updated_at`. Returns the event."""
        with self._lock:
            r, pull = self._repo(org, repo), self._pull(org, repo, number)
            author = pull.own["user"]
            if team is not None:
                if team not in _TEAMS:
                    raise KeyError(f"unknown team {team!r}: request_review takes one of {list(_TEAMS)}")
                requested, now = self._team(team), self._tick()
                event = self._append_event(r, pull, "review_requested", author, now, requested_team=requested)
                self._touch(pull, now, requested_teams=[*pull.own["requested_teams"], requested])
                return event
            taken = {u["login"] for u in pull.own["requested_reviewers"]}
            user = next((u for u in self._humans if (u["login"] == login if login else
                                                      u["login"] not in taken and u != author)), None)
            if user is None and login:
                raise KeyError(f"unknown user {login!r}: request_review takes one of "
                               f"{sorted(u['login'] for u in self._humans)}")
            if user is None:
                raise ValueError(f"{org}/{repo}#{number}: every user is requested already")
            now = self._tick()
            event = self._append_event(r, pull, "review_requested", author, now, requested_reviewer=user)
            self._touch(pull, now, requested_reviewers=[*pull.own["requested_reviewers"], user])
            return event

    def corrupt_event(self, org: str, repo: str, number: int, index: int, field: str,
                      value: object = DROP_KEY) -> dict:
        """Serve kept event `index` (counting only TIMELINE_KEPT kinds, in timeline order) with
        `field` set to `value` (or removed, with DROP_KEY). Not an update of the PR. Only this
        event leaves `expected()`. Returns the corrupted event."""
        with self._lock:
            pull = self._pull(org, repo, number)
            kept = [i for i, e in enumerate(pull.events) if e["event"] in TIMELINE_KEPT]
            if not 0 <= index < len(kept):
                raise IndexError(f"{org}/{repo}#{number} has {len(kept)} kept events, no index {index}")
            events = list(pull.events)
            events[kept[index]] = _with(events[kept[index]], field, value)
            pull.events = events
            pull.corrupted_events = pull.corrupted_events | {kept[index]}
            return events[kept[index]]

    def rename_repository(self, org: str, repo: str, new_name: str) -> None:
        """GitHub keeps the id and the pull requests' `updated_at`; every URL and name changes."""
        with self._lock:
            o, r = self._org(org), self._repo(org, repo)
            full_name = f"{o.login}/{new_name}"
            r.data = {**r.data, "name": new_name, "full_name": full_name,
                      "html_url": f"https://github.com/{full_name}"}
            r.ref_repo = {**r.ref_repo, "full_name": full_name}
            for pull in r.pulls.values():
                data = pull.data
                pull.data = {**data, "html_url": f"https://github.com/{full_name}/pull/{data['number']}",
                             "head": {**data["head"], "repo": r.ref_repo},
                             "base": {**data["base"], "repo": r.ref_repo}}
            del o.repos[repo.lower()]
            o.repos[new_name.lower()] = r

    def add_pull_request(self, org: str, repo: str) -> int:
        """Open a new PR (1-3 files, no reviews). Returns its number."""
        with self._lock:
            r = self._repo(org, repo)
            number = max(r.pulls, default=0) + 1
            now = self._tick()
            rng = self._rng
            data = self._pull_dict(r, number, rng.choice(self._users), now, now, "open", False,
                                   None, False, rng)
            pull = r.pulls[number] = _Pull(data, [], file_count=rng.randint(1, 3), commits=1)
            self._append_event(r, pull, "committed", None, now, index=0)
            return number

    def close_pull_request(self, org: str, repo: str, number: int) -> None:
        with self._lock:
            pull = self._pull(org, repo, number)
            if pull.own["state"] != "open":
                raise ValueError(f"{org}/{repo}#{number} is not open")
            now = self._tick()
            self._append_event(self._repo(org, repo), pull, "closed", pull.own["user"], now)
            self._touch(pull, now, state="closed", closed_at=iso(now), merge_commit_sha=None,
                        requested_reviewers=[], requested_teams=[], auto_merge=None, draft=False)

    def merge_pull_request(self, org: str, repo: str, number: int) -> None:
        with self._lock:
            pull = self._pull(org, repo, number)
            if pull.own["state"] != "open":
                raise ValueError(f"{org}/{repo}#{number} is not open")
            now = self._tick()
            sha = _sha(self.seed, pull.own["id"], "merged", now)
            r, merger = self._repo(org, repo), pull.own["user"]
            self._append_event(r, pull, "merged", merger, now, commit_id=sha)
            self._append_event(r, pull, "closed", merger, now)
            self._touch(pull, now, state="closed", closed_at=iso(now), merged_at=iso(now),
                        merge_commit_sha=sha,
                        requested_reviewers=[], requested_teams=[], auto_merge=None, draft=False)

    def serve_older_payload(self, org: str, repo: str, number: int) -> None:
        """Serve the PR without the keys older payloads lack (`draft`, `locked`); not an update."""
        with self._lock:
            pull = self._pull(org, repo, number)
            pull.data = {k: v for k, v in pull.data.items() if k not in OLDER_PAYLOAD_KEYS}

    def corrupt_pull_request(self, org: str, repo: str, number: int, field: str,
                             value: object = DROP_KEY) -> None:
        """Serve the PR with `field` set to `value` (or removed, with DROP_KEY), as a mangled
        recorded payload had it. Not an update: `updated_at` moves only if it is the field.

        The PR, its reviews, files and events leave `expected()`. A later mutation keeps the corruption
        unless it sets the same field (every mutation sets `updated_at`).
        """
        with self._lock:
            pull = self._pull(org, repo, number)
            pull.clean = pull.own
            pull.data = _with(pull.data, field, value)
            pull.corrupted = True

    def corrupt_review(self, org: str, repo: str, number: int, index: int, field: str,
                       value: object = DROP_KEY) -> dict:
        """Serve review `index` of the PR with `field` set to `value` (or removed, with DROP_KEY).

        Not an update of the PR. Only this review leaves `expected()`. Returns the corrupted review.
        """
        with self._lock:
            pull = self._pull(org, repo, number)
            reviews = list(pull.reviews)
            if not 0 <= index < len(reviews):
                raise IndexError(f"{org}/{repo}#{number} has {len(reviews)} reviews, no index {index}")
            reviews[index] = _with(reviews[index], field, value)
            pull.reviews = reviews
            pull.corrupted_reviews = pull.corrupted_reviews | {index}
            return reviews[index]

    def delete_repository(self, org: str, repo: str) -> None:
        """The repo and everything in it answer 404 from now on."""
        with self._lock:
            self._repo(org, repo).deleted = True

    def mutate_random(self, count: int, seed: int = 0) -> list[str]:
        """Apply `count` random mutations (never deletes a repo); returns one line per change."""
        rng = random.Random(seed)
        done: list[str] = []
        kinds = ("review", "review", "review", "title", "title", "add_file", "remove_file",
                 "new_pr", "new_pr", "close", "merge")
        with self._lock:
            repos = sorted(((o.login, r.data["name"]) for o in self._orgs.values()
                            for r in o.repos.values() if not r.deleted))
            if not repos:
                return done
            for _ in range(count):
                org, repo = rng.choice(repos)
                numbers = sorted(self._repo(org, repo).pulls)
                kind = rng.choice(kinds) if numbers else "new_pr"
                if kind == "new_pr":
                    done.append(f"add_pull_request {org}/{repo}#{self.add_pull_request(org, repo)}")
                    continue
                n = rng.choice(numbers)
                ref = f"{org}/{repo}#{n}"
                is_open = self._pull(org, repo, n).own["state"] == "open"
                if kind in ("close", "merge") and not is_open:
                    kind = "title"
                if kind == "remove_file" and not self._pull(org, repo, n).file_count:
                    kind = "add_file"
                if kind == "review":
                    done.append(f"add_review {ref} id={self.add_review(org, repo, n)['id']}")
                elif kind == "title":
                    self.edit_title(org, repo, n, f"Edited title {rng.randrange(10**6)}")
                    done.append(f"edit_title {ref}")
                elif kind == "add_file":
                    done.append(f"add_file {ref} {self.add_file(org, repo, n)['filename']}")
                elif kind == "remove_file":
                    try:
                        done.append(f"remove_file {ref} {self.remove_file(org, repo, n)}")
                    except ValueError:
                        done.append(f"add_file {ref} {self.add_file(org, repo, n)['filename']}")
                elif kind == "close":
                    self.close_pull_request(org, repo, n)
                    done.append(f"close_pull_request {ref}")
                else:
                    self.merge_pull_request(org, repo, n)
                    done.append(f"merge_pull_request {ref}")
        return done
