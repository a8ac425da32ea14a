"""Every fault the emulator can inject, end to end through the real client, source and landing.

Each test builds its own GitHubClient with a virtual clock (backoffs and rate-limit waits take
no real time; the emulator shares that clock so its rate-limit windows move with it), runs
`land()` and compares the natural keys of the landed Parquet with `Dataset.expected()`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter

import httpx
import pytest

from emulator import Dataset, Fault, GitHubEmulator
from fakes import FakeClock
from flows.extract import land
from settings import Settings
from sources.github.errors import AuthenticationError
from landing_runs import (  # noqa: F401 - dataset, emu, fake and settings are shared fixtures
    FILES,
    ORG,
    PULLS,
    REVIEWS,
    T0,
    TIMELINE,
    TOKEN,
    TOKEN2,
    assert_landed_exactly_once,
    assert_nothing_missing,
    assert_rerun_is_free,
    dataset,
    emu,
    expected_keys,
    fake,
    landed_keys,
    make_client,
    repo_names,
    rest_mode,
    run,
    settings,
)

# The faults here are on REST's endpoints (reviews and files among them) and the counts REST's:
# REST mode (the default, `auto`, fetches reviews and files over GraphQL with a token; GraphQL's
# faults are in tests/test_graphql_emulator.py and tests/test_graphql_auto.py).
pytestmark = pytest.mark.usefixtures("rest_mode")

# -- every fault kind: the run completes and lands everything exactly once --------------------



def _check_502(report, fake, emu):
    assert emu.stats["by_status"].get(502) == 5
    assert report.requests.retries == 5
    assert report.requests.rate_limit_waits == 0
    # Full-jitter backoff from 1 s: no single wait beyond the 4th ceiling.
    assert len(fake.sleeps) == 5 and all(0 <= s <= 8 for s in fake.sleeps)


def _check_429(report, fake, emu):
    assert emu.stats["by_status"].get(429) == 2
    assert sorted(fake.sleeps) == [7.0, 17.0]  # exactly retry-after, nothing else
    assert report.requests.rate_limit_waits == 2


def _check_secondary_retry_after(report, fake, emu):
    assert emu.stats["by_status"].get(403) == 2
    assert sorted(fake.sleeps) == [5.0, 42.0]
    assert report.requests.rate_limit_waits == 2


def _check_secondary_no_retry_after(report, fake, emu):
    assert emu.stats["by_status"].get(403) == 2
    assert len(fake.sleeps) == 2
    # At least a minute (with up to 25 % jitter) when GitHub gives no retry-after.
    assert all(60.0 <= s <= 75.0 for s in fake.sleeps), fake.sleeps
    assert report.requests.rate_limit_waits == 2


def _check_primary_short(report, fake, emu):
    assert emu.stats["by_status"].get(403, 0) >= 1
    assert report.requests.rate_limit_waits >= 1
    # The client waits until the reset (+1 s of margin), virtually; never longer.
    assert any(179.0 <= s <= 182.0 for s in fake.sleeps), fake.sleeps
    assert all(s <= 182.0 for s in fake.sleeps), fake.sleeps
    assert fake.now() >= T0 + 180


def _check_drop(report, fake, emu):
    assert report.requests.retries == 3
    assert report.requests.rate_limit_waits == 0
    assert len(fake.sleeps) == 3


def _check_truncated(report, fake, emu):
    assert report.requests.retries == 4  # one per truncated answer
    assert report.requests.rate_limit_waits == 0


def _check_slow_short(report, fake, emu):
    assert report.requests.retries == 0
    assert fake.sleeps == []


def _check_slow_timeout(report, fake, emu):
    assert report.requests.retries == 1
    assert report.requests.rate_limit_waits == 0
    assert len(fake.sleeps) == 1


FAULT_CASES = {
    "502": (
        lambda: [Fault("502", REVIEWS, times=3), Fault("502", PULLS, times=2)],
        {},
        _check_502,
    ),
    "429-retry-after": (
        lambda: [Fault("429", FILES, retry_after=17), Fault("429", PULLS, retry_after=7)],
        {},
        _check_429,
    ),
    "403-secondary-retry-after": (
        lambda: [Fault("secondary", REVIEWS, retry_after=42), Fault("secondary", PULLS, retry_after=5)],
        {},
        _check_secondary_retry_after,
    ),
    "403-secondary-no-retry-after": (
        lambda: [Fault("secondary", REVIEWS, after=2), Fault("secondary", PULLS)],
        {},
        _check_secondary_no_retry_after,
    ),
    "primary-exhausted-short-reset": (
        lambda: [Fault("primary", FILES, after=4, seconds=180)],
        {},
        _check_primary_short,
    ),
    "primary-exhausted-short-reset-on-pulls": (
        lambda: [Fault("primary", PULLS, after=1, seconds=180)],
        {},
        _check_primary_short,
    ),
    "dropped-connection": (
        lambda: [Fault("drop", REVIEWS, times=2), Fault("drop", PULLS)],
        {},
        _check_drop,
    ),
    "truncated-json": (
        lambda: [Fault("truncated", PULLS), Fault("truncated", FILES, times=2), Fault("truncated", TIMELINE)],
        {},
        _check_truncated,
    ),
    "slow-within-timeout": (
        lambda: [Fault("slow", REVIEWS, seconds=0.3), Fault("slow", PULLS, seconds=0.3)],
        {"timeout": 5.0},
        _check_slow_short,
    ),
    "slow-beyond-timeout": (
        lambda: [Fault("slow", PULLS, seconds=2.5)],
        {"timeout": 1.0},
        _check_slow_timeout,
    ),
}


@pytest.mark.parametrize("case", list(FAULT_CASES))
def test_fault_is_survived_and_everything_lands_once(case, settings, dataset, emu, fake):
    make_faults, client_kwargs, check = FAULT_CASES[case]
    faults = [emu.faults.add(f) for f in make_faults()]

    report = run(settings, emu, fake, **client_kwargs)

    assert report.progress.stopped_early is None
    assert report.progress.repositories_done == len(repo_names(dataset))
    assert not report.progress.repositories_skipped and not report.progress.pull_requests_skipped
    assert emu.faults.pending() == [], "every scripted fault was served"
    assert sum(f.served for f in faults) == sum(f.times for f in faults)
    if not case.startswith("slow"):  # a slow answer is counted only once it is written
        assert emu.stats["faults_served"] == sum(f.times for f in faults)
    assert_landed_exactly_once(settings, dataset)
    check(report, fake, emu)

    assert_rerun_is_free(settings, emu, fake)


# -- primary limit exhausted beyond max_rate_limit_wait: stop cleanly, resume, lose nothing ---

STOP_POINTS = {
    "listing-repositories": (lambda names: Fault("primary", rf"/orgs/{ORG}/repos", seconds=7200), [12, 5]),
    "listing-pulls-first-repo": (lambda names: Fault("primary", PULLS, seconds=7200), [12, 5]),
    "listing-pulls-second-repo": (lambda names: Fault("primary", PULLS, after=1, seconds=7200), [12, 5]),
    "listing-pulls-page-2": (lambda names: Fault("primary", r"/pulls\?.*page=2", seconds=7200), [130, 5]),
    "fetching-reviews": (lambda names: Fault("primary", REVIEWS, after=3, seconds=7200), [12, 5]),
    "fetching-files": (lambda names: Fault("primary", FILES, after=7, seconds=7200), [12, 5]),
    "fetching-timeline": (lambda names: Fault("primary", TIMELINE, after=5, seconds=7200), [12, 5]),
    "fetching-files-second-repo": (
        lambda names: Fault("primary", rf"/repos/{ORG}/{names[1]}/pulls/\d+/files", after=2, seconds=7200),
        [12, 5],
    ),
}


@pytest.mark.parametrize("point", list(STOP_POINTS))
def test_exhaustion_beyond_max_wait_stops_cleanly_and_resumes(point, emu, fake, tmp_path):
    make_fault, prs = STOP_POINTS[point]
    dataset = Dataset.generate(orgs={ORG: 2}, prs_per_repo=prs, seed=1, edge_cases=False)
    emu.dataset = dataset
    settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path)
    emu.faults.add(make_fault(repo_names(dataset)))

    first = run(settings, emu, fake, max_rate_limit_wait=600)  # no exception
    assert first.progress.stopped_early and "rate limit" in first.progress.stopped_early
    assert emu.faults.pending() == []
    assert not any(s > 600 for s in fake.sleeps), "never waits longer than max_rate_limit_wait"
    first_keys = landed_keys(settings)

    fake.advance(7200 + 5)  # past the reset
    second = run(settings, emu, fake, max_rate_limit_wait=600)
    assert second.progress.stopped_early is None
    # Together the two runs landed every expected row (duplicates are the merge's business).
    assert_nothing_missing(settings, dataset)
    assert sum(second.rows.values()) > 0 or sum(len(v) for v in first_keys.values()) > 0

    # And now the organisation is in sync: a third run is free.
    assert_rerun_is_free(settings, emu, fake)


@pytest.mark.parametrize(
    "second_stop",
    [
        pytest.param(Fault("primary", REVIEWS, after=1, seconds=7200), id="replayed-reviews"),
        pytest.param(Fault("primary", FILES, after=1, seconds=7200), id="replayed-files"),
    ],
)
def test_exhaustion_twice_in_a_row_still_loses_nothing(second_stop, settings, dataset, emu, fake):
    """The resumed run is itself cut short while replaying; the third run completes."""
    emu.faults.add(Fault("primary", FILES, after=3, seconds=7200))
    assert run(settings, emu, fake, max_rate_limit_wait=600).progress.stopped_early
    fake.advance(7205)
    emu.faults.add(second_stop)
    second = run(settings, emu, fake, max_rate_limit_wait=600)
    assert second.progress.stopped_early and second_stop.served == 1
    fake.advance(7205)
    assert run(settings, emu, fake, max_rate_limit_wait=600).progress.stopped_early is None
    assert_nothing_missing(settings, dataset)
    assert_rerun_is_free(settings, emu, fake)


def test_backlog_larger_than_one_window_still_converges(settings, dataset, emu, fake):
    # Run 1 stops at its first review request: all 17 pull requests are left pending.
    emu.faults.add(Fault("primary", REVIEWS, seconds=7200))
    first = run(settings, emu, fake, max_rate_limit_wait=600)
    assert first.progress.stopped_early
    # From now on each (virtual) two-hour window allows 16 requests: a token shared with
    # other jobs, or a backlog of thousands of pull requests against 5,000 an hour.
    emu.rate_limit, emu.rate_limit_window = 16, 7200
    # 17 x (reviews + files + timeline) = 51 requests of real work: a few windows are enough.
    for _ in range(8):
        fake.advance(7205)
        report = run(settings, emu, fake, max_rate_limit_wait=600)
        if report.progress.stopped_early is None:
            break
    assert report.progress.stopped_early is None, "no run finished the backlog"
    assert_nothing_missing(settings, dataset)


# -- credentials --------------------------------------------------------------------------------


def test_bad_token_fails_fast_with_a_clear_message(dataset, fake, tmp_path):
    with GitHubEmulator(dataset, clock=fake.now, tokens={"good"}) as emu:
        settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path)
        started = time.monotonic()
        with pytest.raises(Exception) as info:
            run(settings, emu, fake)
        elapsed = time.monotonic() - started
        stats = emu.stats

    chain, exc = [], info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(e, AuthenticationError) for e in chain), [type(e) for e in chain]
    message = str(info.value)
    assert "401" in message and "Bad credentials" in message, message
    assert TOKEN not in message and all(TOKEN not in str(e) for e in chain)
    assert stats["requests"] == 1, "no retry of a 401"
    assert fake.sleeps == []
    assert elapsed < 10


@pytest.mark.parametrize(
    "exhaust",
    [
        pytest.param(lambda: Fault("primary", rf"/orgs/{ORG}/repos", seconds=7200), id="from-the-start"),
        pytest.param(lambda: Fault("primary", REVIEWS, after=3, seconds=7200), id="mid-run"),
    ],
)
def test_second_token_takes_over_without_waiting(exhaust, settings, dataset, emu, fake):
    # One token is exhausted for two hours (from the start: token-1, the first in round-robin).
    fault = emu.faults.add(exhaust())

    # max_rate_limit_wait=0: any wait at all would stop the run instead.
    report = run(settings, emu, fake, tokens=(TOKEN, TOKEN2), max_rate_limit_wait=0)

    assert fault.served == 1
    assert report.progress.stopped_early is None
    assert fake.sleeps == [] and report.requests.rate_limit_waits == 0
    if "repos" in fault.path_regex:
        assert emu.stats["by_status"].get(403) == 1, "token-1 is not tried again while exhausted"
    assert_landed_exactly_once(settings, dataset)


# -- things that disappear mid-run ----------------------------------------------------------------


class _DeleteRepoAfterListing(httpx.BaseTransport):
    """Deletes a repository from the dataset right after the organisation's repository list
    was served, i.e. before the source lists that repository's pull requests."""

    def __init__(self, dataset: Dataset, repo: str) -> None:
        self._inner = httpx.HTTPTransport()
        self._dataset, self._repo = dataset, repo
        self.deleted = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if not self.deleted and request.url.path == f"/orgs/{ORG}/repos":
            self._dataset.delete_repository(ORG, self._repo)
            self.deleted = True
        return response

    def close(self) -> None:
        self._inner.close()


def test_repository_deleted_mid_run_is_skipped(settings, dataset, emu, fake, caplog):
    caplog.set_level(logging.WARNING)
    gone = repo_names(dataset)[1]
    transport = _DeleteRepoAfterListing(dataset, gone)
    with make_client(emu, fake, transport=transport) as client:
        report = land(settings, ORG, client)

    assert transport.deleted
    assert report.progress.stopped_early is None
    assert report.progress.repositories_skipped == [gone]
    assert any(gone in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert_landed_exactly_once(settings, dataset)  # expected() leaves deleted repositories out
    assert landed_keys(settings)["pull_requests"], "the other repository landed"


def test_404_on_one_pull_requests_files_is_skipped(settings, dataset, emu, fake, caplog):
    caplog.set_level(logging.WARNING)
    repo = repo_names(dataset)[0]
    emu.faults.add(Fault("404", rf"/repos/{ORG}/{repo}/pulls/3/files"))

    report = run(settings, emu, fake)

    label = f"{ORG}/{repo}#3"
    assert report.progress.stopped_early is None
    assert report.progress.pull_requests_skipped == [label]
    assert any(label in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    pr3 = next(pr["id"] for pr in dataset.pull_requests(ORG, repo) if pr["number"] == 3)
    want = expected_keys(dataset)
    want["pull_request_files"] = [k for k in want["pull_request_files"] if k[0] != pr3]
    got = landed_keys(settings)
    assert got == want


# -- the token never leaks ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["rest", "auto"])
def test_token_never_in_logs_nor_in_data_dir(mode, settings, dataset, emu, fake, caplog, monkeypatch):
    """In REST mode and in the default mode, whose reviews and files go over GraphQL (its faults
    too: a 502, then a spent points budget that stops the run)."""
    settings = settings.model_copy(update={"github_api_mode": mode})
    monkeypatch.setenv("RUNTIME__LOG_LEVEL", "DEBUG")
    caplog.set_level(logging.DEBUG)
    extra = [logging.getLogger(n) for n in ("dlt", "httpx", "httpcore", "sources", "flows", "emulator")]
    saved = [(lg, lg.level) for lg in extra]
    for lg in extra:
        lg.setLevel(logging.DEBUG)
    dlt_logger = logging.getLogger("dlt")
    dlt_logger.addHandler(caplog.handler)  # dlt's logger does not propagate to the root
    try:
        emu.faults.add(Fault("502", REVIEWS))
        emu.faults.add(Fault("secondary", PULLS))
        emu.faults.add(Fault("truncated", FILES))
        emu.faults.add(Fault("404", r"/pulls/2/files"))
        emu.faults.add(Fault("primary", REVIEWS, after=5, seconds=7200))
        if mode == "auto":
            emu.faults.add(Fault("502", r"^/graphql"))
            emu.faults.add(Fault("primary", r"^/graphql", after=1, seconds=7200))
        first = run(settings, emu, fake, tokens=(TOKEN,), max_rate_limit_wait=600)
        if mode == "auto":
            assert emu.stats["by_endpoint"]["graphql"] >= 2 and "GraphQL" in first.progress.stopped_early
        assert first.progress.stopped_early
        fake.advance(7205)
        run(settings, emu, fake, tokens=(TOKEN,))
    finally:
        dlt_logger.removeHandler(caplog.handler)
        for lg, level in saved:
            lg.setLevel(level)

    records = caplog.records
    assert any(r.levelno == logging.DEBUG and r.name.startswith("httpcore") for r in records)
    assert any(r.name.startswith("sources.github") and r.levelno == logging.DEBUG for r in records)
    assert any(r.name.startswith("dlt") and r.levelno == logging.DEBUG for r in records)
    texts = [caplog.text] + [r.getMessage() for r in records] + [str(r.exc_text or "") for r in records]
    for text in texts:
        assert TOKEN not in text and "SECRET-123" not in text

    files = [p for p in settings.data_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    assert any("pipelines" in p.parts for p in files)
    for path in files:
        data = path.read_bytes()
        assert TOKEN.encode() not in data and b"SECRET-123" not in data, path
    assert not re.search(TOKEN, repr(make_client(emu, fake)))


# -- a revoked token among several ----------------------------------------------------------------

TOKENS3 = ("tok-ONE-111", "tok-TWO-222", "tok-THREE-333")


class _AfterFirstAnswer(httpx.BaseTransport):
    """Calls `action()` once, right after the first answer whose path ends with `path`."""

    def __init__(self, path: str, action) -> None:
        self._inner = httpx.HTTPTransport()
        self._path, self._action = path, action
        self.done = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if not self.done and request.url.path.endswith(self._path):
            self._action()
            self.done = True
        return response

    def close(self) -> None:
        self._inner.close()


@pytest.mark.parametrize("when", ["before-the-run", "after-the-first-pull-list"])
def test_a_revoked_token_leaves_the_pool_and_the_run_lands_everything(when, dataset, fake, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with GitHubEmulator(dataset, clock=fake.now, tokens=set(TOKENS3)) as emu:
        settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path)
        transport = None
        if when == "before-the-run":
            emu.revoke(TOKENS3[1])
        else:
            transport = _AfterFirstAnswer("/pulls", lambda: emu.revoke(TOKENS3[1]))
        report = run(settings, emu, fake, tokens=TOKENS3, transport=transport)
        received = emu.received()

    assert report.progress.stopped_early is None
    assert_landed_exactly_once(settings, dataset)
    rejected = [r.getMessage() for r in caplog.records if "was rejected" in r.getMessage()]
    assert rejected == ["token-2 of 3 was rejected (401 Bad credentials); continuing with 2 token(s)"]
    assert all(r.levelno == logging.WARNING for r in caplog.records if "was rejected" in r.getMessage())
    unauthorized = [i for i, r in enumerate(received) if r.status == 401]
    assert 1 <= len(unauthorized) <= 4, "at most the requests in flight (max_concurrency=4) hear 401"
    later = {r.caller for r in received[unauthorized[-1] + 1:]}
    assert later == {TOKENS3[0], TOKENS3[2]}, "the other two tokens carry on"
    texts = [caplog.text] + [r.getMessage() for r in caplog.records]
    assert not any(token in text for token in TOKENS3 for text in texts)


def test_every_token_revoked_fails_with_authentication_error(dataset, fake, tmp_path):
    with GitHubEmulator(dataset, clock=fake.now, tokens={"someone-else"}) as emu:
        settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path)
        with pytest.raises(AuthenticationError, match="401.*Bad credentials") as info:
            run(settings, emu, fake, tokens=TOKENS3)
        assert emu.stats["requests"] == 3, "each token tried once, then the run ends"
    assert not any(token in str(info.value) for token in TOKENS3)


# -- a secondary limit pauses every thread using the token ----------------------------------------


class _LingeringClock(FakeClock):
    """A FakeClock whose `sleep` spends real time before it moves virtual time. While one thread
    sleeps out a pause, virtual time stands still: a thread that does not wait for the pause
    sends during it, and the emulator receives that request inside the window, on its clock."""

    def __init__(self, now: float) -> None:
        super().__init__(now)
        self.on_sleep = lambda: None

    def sleep(self, seconds: float) -> None:
        self.on_sleep()
        time.sleep(0.6)
        super().sleep(seconds)


class _SendOrder(httpx.BaseTransport):
    """Numbers every request as it is sent and remembers the client thread that sent it.

    When the first rate-limit answer comes back, new sends are held until `release()` (called
    when a thread starts sleeping out the pause, so the client has acted on it; at most 5 s):
    "sent after the client learned of the pause" is then exact: `sent[path]` numbers above
    `limit_seen` were sent after that moment."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self._changed = threading.Condition()
        self._next = 0
        self._holding = False
        self.limit_seen: int | None = None
        self.sent: dict[str, list[tuple[int, int]]] = {}  # path -> [(number, thread)] in send order

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._changed:
            if self._holding:
                self._changed.wait_for(lambda: not self._holding, timeout=5)
            self._next += 1
            self.sent.setdefault(request.url.raw_path.decode(), []).append((self._next, threading.get_ident()))
        response = self._inner.handle_request(request)
        if response.status_code in (403, 429):
            with self._changed:
                if self.limit_seen is None:
                    self._next += 1
                    self.limit_seen, self._holding = self._next, True
        return response

    def release(self) -> None:
        with self._changed:
            self._holding = False
            self._changed.notify_all()

    def close(self) -> None:
        self._inner.close()


@pytest.mark.parametrize("status", ["secondary", "429"])
def test_secondary_limit_pauses_every_thread_using_the_token(status, tmp_path):
    pause = 30
    clock = _LingeringClock(T0)
    dataset = Dataset.generate(orgs={ORG: 1}, prs_per_repo=[80], seed=1, edge_cases=False)
    with GitHubEmulator(dataset, clock=clock.now) as emu:
        settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path)
        fault = emu.faults.add(Fault(status, REVIEWS, after=10, retry_after=pause))
        order = _SendOrder()
        clock.on_sleep = order.release
        report = run(settings, emu, clock, max_concurrency=8, transport=order)
        received = emu.received()

    assert fault.served == 1 and report.progress.stopped_early is None
    assert_landed_exactly_once(settings, dataset)
    assert clock.sleeps == [pause], "one sleep on the clock paused every thread"

    # Pair each request the emulator received with its send (a path is sent again only on retry).
    seen: Counter = Counter()
    sends = []
    for r in received:
        sends.append(order.sent[r.path][seen[r.path]])
        seen[r.path] += 1
    limited_at = next(i for i, r in enumerate(received) if r.status in (403, 429))
    limited = received[limited_at]
    limited_thread = sends[limited_at][1]
    window_end = limited.received_at + pause
    assert order.limit_seen is not None
    inside = [
        (r, thread) for r, (number, thread) in zip(received, sends)
        if number > order.limit_seen and r.received_at < window_end
    ]
    assert all(r.caller == TOKEN for r, _ in inside)
    per_thread = Counter(thread for _, thread in inside)
    # Sent after the client heard of the pause yet received inside it: only a request that had
    # passed the gate before it closed, so at most one per thread, none from the limited thread.
    assert per_thread[limited_thread] == 0, per_thread
    assert all(n <= 1 for n in per_thread.values()), per_thread
    # The test could see a thread that does not wait: many threads still had work after the pause.
    after = [thread for r, (_, thread) in zip(received, sends) if r.received_at >= window_end]
    assert len(set(after)) >= 4 and len(after) >= 40, (len(set(after)), len(after))
