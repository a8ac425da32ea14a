"""GitHub REST client for the dlt source: frugal with the rate limit, robust to faults.

- conditional requests (If-None-Match -> 304, which costs no budget);
- credentials are `httpx.Auth` flows (auth.py): the rate-limit headers of every answer feed the
  credential's budget and its gate (ratelimit.py), which every request with that credential
  passes; a pool moves off a spent or paused token and drops a rejected one; the client waits
  only when every credential is paused, and gives up with RateLimitExhausted when the wait would
  be longer than `max_rate_limit_wait`;
- secondary limits honour `retry-after`, else back off from one minute, for every thread;
- 5xx, network faults and truncated bodies are retried with jittered exponential backoff;
- a server that refuses connections is retried for `connect_budget` seconds (20) in all, shared
  by every request of the client, then GitHubUnreachable, which the flow does not retry again;
  one that accepts connections but has never answered this client gets SILENT_ATTEMPTS attempts
  of `timeout` seconds each, then GitHubUnreachable too (a wrong URL, a dead proxy);
- a success that is not JSON and not labelled JSON (an HTML page: the URL is not a GitHub API)
  fails at once with GitHubClientError naming the URL.
Each attempt ends in an `Outcome` (`classify`); one loop in `get_page` decides what follows.
Error texts never hold a credential: every one leaving the client is redacted.
All waiting goes through a `Clock` so tests run without sleeping.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from .auth import API_VERSION, GitHubAppAuth, GitHubAuth, TokenPool
from .errors import (
    AuthenticationError,
    GitHubClientError,
    GitHubError,
    GitHubServerError,
    NotFoundError,
    RateLimitExhausted,
    redact,
)
from .ratelimit import Clock, SystemClock, github_message, graphql_errors_limited, is_graphql, rate_limit_of

logger = logging.getLogger("sources.github.client")

USER_AGENT = "github-pr-analytics/0.1 (dlt source; httpx)"
MAX_CONCURRENCY = 100  # GitHub's secondary-limit guidance: at most 100 concurrent requests
MAX_FAULT_BACKOFF = 60.0
CONNECT_BUDGET = 20.0  # seconds a refused connection is retried, per client, before giving up
SILENT_ATTEMPTS = 2  # read timeouts of a server that never answered this client, before giving up


class GraphQLTooHeavy(GitHubServerError):
    """A GraphQL query answered 502/504 or timed out: GitHub's sign that it is too heavy; the
    caller splits it rather than sending it again as it is."""


def graphql_limited(page: Page) -> bool:
    """A GraphQL answer that is rate limited (RATE_LIMITED or RATE_LIMIT): the credential's gate
    was closed by the auth flow (budget spent until its reset, or a secondary limit); the query
    is sent again after it."""
    return graphql_errors_limited(page.items[0] if page.items else None)


class GitHubUnreachable(GitHubServerError):
    """No connection to the API for `connect_budget` seconds: the client already retried, so a
    second line of retries would only multiply the wait (the flow fails the organisation)."""

__all__ = [
    "Clock", "SystemClock", "Page", "RequestStats", "GitHubClient", "TokenPool", "GitHubAppAuth",
    "GitHubError", "AuthenticationError", "NotFoundError", "RateLimitExhausted",
    "GitHubServerError", "GitHubClientError", "GitHubUnreachable", "GraphQLTooHeavy", "Outcome", "classify",
]


@dataclass(frozen=True)
class Page:
    items: list[dict]  # parsed JSON list ([] for 304); a single object comes back as a one-item list
    url: str  # the URL requested
    next_url: str | None  # Link rel="next"
    etag: str | None  # ETag of a 200, or the one sent for a 304
    not_modified: bool  # GitHub answered 304 to If-None-Match


@dataclass
class RequestStats:
    """Counters of one client; `GitHubClient.stats` returns a copy."""

    requests: int = 0  # requests sent, including ones that failed on the network
    not_modified: int = 0  # 304 answers (free)
    cost: int = 0  # REST answers that counted against its primary limit (non-304; GraphQL spends points)
    retries: int = 0  # requests re-sent after a fault or a secondary limit
    rate_limit_waits: int = 0  # sleeps caused by a primary or secondary rate limit
    waited_seconds: float = 0.0  # all sleeping: rate limits and fault backoff
    by_status: dict[int, int] = field(default_factory=dict)


class Next(enum.Enum):
    """What the retry loop does after one attempt."""

    DONE = "done"  # return the page
    FAIL = "fail"  # raise the error: retrying cannot help
    FAULT = "fault"  # retry after a jittered backoff (this request only)
    SECONDARY_LIMIT = "secondary"  # retry; the credential's gate holds it for the pause
    PRIMARY_LIMIT = "primary"  # retry; the gate holds it until the reset (not counted as a retry)


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended."""

    next: Next
    page: Page | None = None
    error: GitHubError | None = None
    cause: str = ""  # for logs and the final error; may hold GitHub's words, redacted before use
    unreachable: bool = False  # no connection at all (refused, or timed out connecting)
    silent: bool = False  # a read timeout from a server that has never answered this client
    heavy: bool = False  # 502/504 or a read timeout: the query may be too large (GraphQL halves it)


def _is_html(response: httpx.Response) -> bool:
    return "text/html" in response.headers.get("content-type", "").lower()


def _not_github(response: httpx.Response) -> GitHubClientError:
    """An HTML page where GitHub answers JSON: the base URL is a web site, not a GitHub API.
    (GitHub's own 5xx pages are HTML too: those stay faults, retried.)"""
    status, url = response.status_code, str(response.request.url)
    text = (
        f"{response.request.method} {url} answered {status} with text/html, not JSON: is the GitHub URL an API base URL? "
        "(GitHub: https://api.github.com; GitHub Enterprise: https://HOST/api/v3)"
    )
    return GitHubClientError(text, status=status, url=url)


def classify(response: httpx.Response) -> Outcome:
    """The outcome of one answer (the rate-limit pause itself was already set by the auth flow)."""
    status, url = response.status_code, str(response.request.url)
    if status == 304:
        etag = response.request.headers.get("If-None-Match")
        return Outcome(Next.DONE, Page(items=[], url=url, next_url=None, etag=etag, not_modified=True))
    if status == 204:
        return Outcome(Next.DONE, Page(items=[], url=url, next_url=None, etag=None, not_modified=False))
    if response.is_success:
        try:
            body: Any = response.json()
        except ValueError as exc:
            if _is_html(response):  # not GitHub: the same answer every time
                return Outcome(Next.FAIL, error=_not_github(response))
            return Outcome(Next.FAULT, cause=f"invalid JSON in {status} answer ({exc})")
        items = body if isinstance(body, list) else [body]
        next_url = response.links.get("next", {}).get("url")
        page = Page(items=items, url=url, next_url=next_url, etag=response.headers.get("etag"), not_modified=False)
        return Outcome(Next.DONE, page)
    cause = f"{status} from {response.request.method} {url}: {github_message(response)}"
    limit = rate_limit_of(response)
    if limit is not None:
        return Outcome(Next.PRIMARY_LIMIT if limit.primary else Next.SECONDARY_LIMIT, cause=cause)
    if status in (401, 403):
        return Outcome(Next.FAIL, error=AuthenticationError(cause, status=status, url=url))
    if status in (404, 410):
        if _is_html(response):  # GitHub answers a missing resource in JSON; a web server in HTML
            return Outcome(Next.FAIL, error=_not_github(response))
        return Outcome(Next.FAIL, error=NotFoundError(cause, status=status, url=url))
    if status >= 500:
        return Outcome(Next.FAULT, cause=cause, heavy=status in (502, 504))
    return Outcome(Next.FAIL, error=GitHubClientError(cause, status=status, url=url))


class GitHubClient:
    """Thread-safe GET client for the GitHub REST API (one shared connection pool)."""

    def __init__(
        self,
        base_url: str = "https://api.github.com",
        auth: TokenPool | GitHubAppAuth | None = None,
        *,
        max_concurrency: int = 16,
        timeout: float = 30.0,
        max_retries: int = 6,
        connect_budget: float | None = None,  # default CONNECT_BUDGET
        max_rate_limit_wait: float = 3600.0,
        backoff_base: float = 1.0,
        secondary_backoff: float = 60.0,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not 1 <= max_concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"max_concurrency must be between 1 and {MAX_CONCURRENCY}, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.max_concurrency = max_concurrency
        self.auth: GitHubAuth = auth if auth is not None else TokenPool([])
        self.max_retries = max_retries
        self.connect_budget = CONNECT_BUDGET if connect_budget is None else connect_budget
        self._unreachable_since: float | None = None  # first refused connection since an answer
        self._answered_once = False  # any answer at all: a later read timeout is a slow answer
        self.timeout = timeout
        self.max_rate_limit_wait = max_rate_limit_wait
        self.backoff_base = backoff_base
        self.secondary_backoff = secondary_backoff
        self.clock: Clock = clock or SystemClock()
        self.auth.configure(
            self.clock, max_wait=max_rate_limit_wait, secondary_backoff=secondary_backoff, on_wait=self._rate_limit_wait
        )
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=self.auth,
            headers={
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": USER_AGENT,
            },
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
            follow_redirects=True,  # renamed/transferred repositories answer 301/307
            event_hooks={"request": [self._sent], "response": [self._answered]},
            transport=transport,
        )
        self._stats = RequestStats()
        self._stats_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GitHubClient({self.base_url!r}, auth={self.auth!r})"

    # -- public API ---------------------------------------------------------------------------

    def get_page(self, url: str, params: dict | None = None, etag: str | None = None) -> Page:
        """GET one page: `url` is a path under base_url or an absolute `next_url`."""
        try:
            return self._get_page(url, params, etag)
        except GitHubError as exc:
            error: BaseException = self._redacted(exc)
        except Exception as exc:  # noqa: BLE001 - anything unforeseen still leaves without a secret
            error = GitHubClientError(f"GET {url} failed: {type(exc).__name__}: {self._redact(str(exc))}", url=url)
        raise error  # outside `except`: no chained original that could still hold a secret

    def post_graphql(self, url: str, query: str, variables: dict[str, Any], *, splittable: bool = True) -> dict[str, Any]:
        """POST one GraphQL query to `url`; its answer's JSON object (`data`, `errors`).

        Faults are retried as for GET. A 502/504 or a read timeout is GitHub's answer both to a
        query too heavy to finish and to a plain blip: a `splittable` query raises GraphQLTooHeavy
        at once, for the caller to send it again in smaller parts; one that cannot be split (a
        single pull request) is retried with the same budget and backoff as a REST request.
        Rate limits (RATE_LIMITED or RATE_LIMIT, secondary limits, whatever the HTTP status) wait at the credential's gates, as for GET.
        """
        try:
            page = self._request(url, None, None, body={"query": query, "variables": variables}, split_heavy=splittable)
            answer = page.items[0] if page.items else None
            if not isinstance(answer, dict):
                raise GitHubClientError(f"POST {url}: the answer is not a GraphQL JSON object", url=url)
            return answer
        except GitHubError as exc:
            error: BaseException = self._redacted(exc)
        except Exception as exc:  # noqa: BLE001 - anything unforeseen still leaves without a secret
            error = GitHubClientError(f"POST {url} failed: {type(exc).__name__}: {self._redact(str(exc))}", url=url)
        raise error

    def iter_pages(self, path: str, params: dict | None = None, etag: str | None = None) -> Iterator[Page]:
        """Follow Link rel="next" to the end; `etag` applies to the first page only."""
        page = self.get_page(path, params, etag)
        yield page
        while page.next_url and not page.not_modified:
            page = self.get_page(page.next_url)
            yield page

    def get_all(self, path: str, params: dict | None = None) -> list[dict]:
        """All items of all pages (for small child lists such as reviews)."""
        return [item for page in self.iter_pages(path, params) for item in page.items]

    @property
    def stats(self) -> RequestStats:
        with self._stats_lock:
            return replace(self._stats, by_status=dict(self._stats.by_status))

    @property
    def rate_limit_remaining(self) -> int | None:
        return self.auth.remaining()

    def close(self) -> None:
        self._http.close()
        self.auth.close()

    def __enter__(self) -> GitHubClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the retry loop -----------------------------------------------------------------------

    def _get_page(self, url: str, params: dict | None, etag: str | None) -> Page:
        return self._request(url, params, etag)

    def _request(self, url: str, params: dict | None, etag: str | None, body: dict | None = None,
                 split_heavy: bool = False) -> Page:
        """GET `url`, or POST the GraphQL `body` to it, through the retry loop; `split_heavy`
        raises GraphQLTooHeavy on a 502/504 or read timeout instead of retrying."""
        faults = limited = 0
        method = "GET" if body is None else "POST"
        while True:
            outcome = self._attempt(url, params, etag, body)
            if outcome.next is Next.DONE and outcome.page is not None:
                if body is not None and graphql_limited(outcome.page):
                    # The gate holds the next attempt (until the reset, or a secondary pause that
                    # lengthens with each strike) or raises RateLimitExhausted past max wait.
                    outcome = Outcome(Next.PRIMARY_LIMIT, cause=f"POST {url}: GraphQL rate limited")
                else:
                    return outcome.page
            if outcome.error is not None:
                raise outcome.error
            cause = self._redact(outcome.cause)
            if split_heavy and outcome.heavy:
                raise GraphQLTooHeavy(f"POST {url}: {cause}", url=url)
            if outcome.next is Next.PRIMARY_LIMIT:
                continue  # the credential's gate holds the next attempt until the reset, or moves on
            if outcome.next is Next.SECONDARY_LIMIT:
                limited += 1
                if limited > self.max_retries:
                    raise RateLimitExhausted(
                        self.clock.now() + self.secondary_backoff,
                        f"{method} {url}: secondary rate limit persists after {limited - 1} retries; last cause: {cause}",
                        url=url,
                    )
                logger.warning("%s %s: %s; retry %d/%d after the pause", method, url, cause, limited, self.max_retries)
            else:
                faults += 1
                if outcome.silent and faults >= SILENT_ATTEMPTS:
                    raise GitHubUnreachable(
                        f"{method} {url}: {self.base_url} accepted the connection but sent no answer: "
                        f"{faults} attempts of {self.timeout:.0f} s each (is the GitHub URL right and the server up?)",
                        url=url,
                    )
                if outcome.unreachable and (
                    faults > self.max_retries or self._unreachable_for() >= self.connect_budget
                ):
                    raise GitHubUnreachable(
                        f"{method} {url}: no connection to {self.base_url} in {self._unreachable_for():.0f} s, {faults} attempts "
                        f"(is the GitHub URL right and the server up?); last cause: {cause}", url=url
                    )
                if faults > self.max_retries:
                    raise GitHubServerError(
                        f"{method} {url} failed after {self.max_retries} retries; last cause: {cause}", url=url
                    )
                delay = random.uniform(0, min(MAX_FAULT_BACKOFF, self.backoff_base * 2 ** (faults - 1)))  # full jitter
                if outcome.unreachable:  # the next attempt is the last one the budget allows
                    delay = min(delay, max(0.0, self.connect_budget - self._unreachable_for()))
                logger.warning("%s %s: %s; retry %d/%d in %.1f s", method, url, cause, faults, self.max_retries, delay)
                self._count(waited=delay)
                self.clock.sleep(delay)
            self._count(retries=1)

    def _attempt(self, url: str, params: dict | None, etag: str | None, body: dict | None = None) -> Outcome:
        headers = {"If-None-Match": etag} if etag else {}
        try:
            with self._slots:
                if body is None:
                    response = self._http.get(url, params=params, headers=headers)
                else:
                    response = self._http.post(url, json=body)
        except httpx.LocalProtocolError as exc:  # a request HTTP forbids: the same again next time
            text = f"{'GET' if body is None else 'POST'} {url} cannot be sent: {type(exc).__name__}: {self._redact(str(exc))}"
            return Outcome(Next.FAIL, error=GitHubClientError(text, url=url))
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            with self._stats_lock:
                if self._unreachable_since is None:
                    self._unreachable_since = self.clock.now()
            return Outcome(Next.FAULT, cause=f"{type(exc).__name__}: {exc}", unreachable=True)
        except httpx.ReadTimeout as exc:
            with self._stats_lock:
                silent = not self._answered_once
            return Outcome(Next.FAULT, cause=f"{type(exc).__name__}: {exc}", heavy=not silent, silent=silent)
        except (httpx.TransportError, httpx.DecodingError) as exc:
            return Outcome(Next.FAULT, cause=f"{type(exc).__name__}: {exc}")
        except GitHubServerError as exc:  # the App's token endpoint failed: a fault like any other
            return Outcome(Next.FAULT, cause=str(exc))
        with self._stats_lock:
            self._unreachable_since = None  # an answer: the server is reachable again
            self._answered_once = True
        return classify(response)

    def _unreachable_for(self) -> float:
        """Seconds since the first refused connection without an answer in between."""
        with self._stats_lock:
            since = self._unreachable_since
        return 0.0 if since is None else self.clock.now() - since

    # -- secrets ------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return redact(text, self.auth.secrets())

    def _redacted(self, exc: GitHubError) -> GitHubError:
        """`exc` with every credential value in its text replaced by `***`, its chain dropped
        when any link of it still holds one."""
        secrets = self.auth.secrets()
        exc.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in exc.args)
        link: BaseException | None = exc.__cause__ or exc.__context__
        while link is not None:
            if redact(str(link), secrets) != str(link):
                exc.__cause__ = exc.__context__ = None
                exc.__suppress_context__ = True
                break
            link = link.__cause__ or link.__context__
        return exc

    # -- counting -----------------------------------------------------------------------------

    def _sent(self, request: httpx.Request) -> None:
        self._count(requests=1)

    def _answered(self, response: httpx.Response) -> None:
        status = response.status_code
        rest = not is_graphql(response.request)  # a query's points are counted apart (SyncProgress)
        self._count(status=status, cost=int(status != 304 and rest), not_modified=int(status == 304))

    def _rate_limit_wait(self, seconds: float) -> None:
        self._count(waited=seconds, rate_limit_waits=1)

    def _count(self, *, requests: int = 0, not_modified: int = 0, cost: int = 0, retries: int = 0,
               rate_limit_waits: int = 0, waited: float = 0.0, status: int | None = None) -> None:
        with self._stats_lock:
            s = self._stats
            s.requests += requests
            s.not_modified += not_modified
            s.cost += cost
            s.retries += retries
            s.rate_limit_waits += rate_limit_waits
            s.waited_seconds += waited
            if status is not None:
                s.by_status[status] = s.by_status.get(status, 0) + 1
