"""GitHub REST client for the dlt source: frugal with the rate limit, robust to faults.

- conditional requests (If-None-Match -> 304, which costs no budget);
- the rate-limit headers of every answer feed the credential pool, which moves off an exhausted
  token; the client only waits when every token is exhausted, and gives up with
  RateLimitExhausted when the reset is too far away;
- secondary limits honour `retry-after`, else back off from one minute;
- 5xx, network faults and truncated bodies are retried with jittered exponential backoff.
All waiting goes through a `Clock` so tests run without sleeping.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Protocol

import httpx

from .auth import API_VERSION, Auth, GitHubAppAuth, Lease, TokenPool, _message
from .errors import (
    AuthenticationError,
    GitHubClientError,
    GitHubError,
    GitHubServerError,
    NotFoundError,
    RateLimitExhausted,
)

logger = logging.getLogger("sources.github.client")

USER_AGENT = "github-pr-analytics/0.1 (dlt source; httpx)"
MAX_CONCURRENCY = 100  # GitHub's secondary-limit guidance: at most 100 concurrent requests
MAX_FAULT_BACKOFF = 60.0

__all__ = [
    "Clock", "SystemClock", "Page", "RequestStats", "GitHubClient", "TokenPool", "GitHubAppAuth",
    "GitHubError", "AuthenticationError", "NotFoundError", "RateLimitExhausted",
    "GitHubServerError", "GitHubClientError",
]


class Clock(Protocol):
    def now(self) -> float: ...  # epoch seconds
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


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
    cost: int = 0  # answers that counted against the primary limit (non-304)
    retries: int = 0  # requests re-sent after a fault or a secondary limit
    rate_limit_waits: int = 0  # sleeps caused by a primary or secondary rate limit
    waited_seconds: float = 0.0  # all sleeping: rate limits and fault backoff
    by_status: dict[int, int] = field(default_factory=dict)


class _Retry(Exception):
    """Internal: this attempt failed in a way worth retrying."""

    def __init__(self, cause: str, retry_after: float | None = None, rate_limited: bool = False) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after
        self.rate_limited = rate_limited  # secondary limit: back off from `secondary_backoff`


class _PrimaryLimit(Exception):
    """Internal: the credential's budget is gone; the next acquire will move or wait."""


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
        self.auth: Auth = auth if auth is not None else TokenPool([])
        self.max_retries = max_retries
        self.max_rate_limit_wait = max_rate_limit_wait
        self.backoff_base = backoff_base
        self.secondary_backoff = secondary_backoff
        self.clock: Clock = clock or SystemClock()
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": USER_AGENT,
            },
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
            follow_redirects=True,  # renamed/transferred repositories answer 301/307
            transport=transport,
        )
        self._stats = RequestStats()
        self._stats_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GitHubClient({self.base_url!r}, auth={self.auth!r})"

    # -- public API ---------------------------------------------------------------------------

    def get_page(self, url: str, params: dict | None = None, etag: str | None = None) -> Page:
        """GET one page: `url` is a path under base_url or an absolute `next_url`."""
        faults = limited = 0
        while True:
            try:
                lease = self._acquire(url)
                response = self._send(url, params, etag, lease)
                return self._to_page(response, etag)
            except _PrimaryLimit:
                continue  # budget recorded; the next acquire moves to another token or waits
            except _Retry as retry:
                if retry.rate_limited:
                    limited += 1
                    delay = self._secondary_delay(url, limited, retry)
                else:
                    faults += 1
                    delay = self._fault_delay(url, faults, retry)
                logger.warning(
                    "GET %s: %s; retry %d/%d in %.1f s",
                    url, retry.cause, max(faults, limited), self.max_retries, delay,
                )
                self._sleep(delay, rate_limited=retry.rate_limited)
                self._count(retries=1)

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

    # -- one attempt --------------------------------------------------------------------------

    def _acquire(self, url: str) -> Lease:
        """A credential with budget, waiting for a reset if every credential is exhausted."""
        while True:
            now = self.clock.now()
            try:
                lease = self.auth.acquire(now)
            except GitHubServerError as exc:  # App token endpoint failed: retry like any fault
                raise _Retry(str(exc)) from exc
            if lease.blocked_until is None or lease.blocked_until <= now:
                return lease
            resume_at = lease.blocked_until + 1.0
            if resume_at - now > self.max_rate_limit_wait:
                raise RateLimitExhausted(
                    lease.blocked_until,
                    f"GitHub rate limit exhausted for all credentials until {_iso(lease.blocked_until)} "
                    f"(more than max_rate_limit_wait={self.max_rate_limit_wait:.0f} s away) at GET {url}",
                    url=url,
                )
            logger.warning("GitHub rate limit exhausted for all credentials; resuming at %s (GET %s)", _iso(resume_at), url)
            self._sleep(resume_at - now, rate_limited=True)

    def _send(self, url: str, params: dict | None, etag: str | None, lease: Lease) -> httpx.Response:
        headers = {}
        if lease.authorization:
            headers["Authorization"] = lease.authorization
        if etag:
            headers["If-None-Match"] = etag
        self._count(requests=1)
        try:
            with self._slots:
                response = self._http.get(url, params=params, headers=headers)
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        self._observe(lease, response)
        status = response.status_code
        self._count(status=status, cost=int(status != 304), not_modified=int(status == 304))
        logger.debug(
            "GET %s -> %d (%s, remaining %s)",
            response.request.url, status, lease.key, response.headers.get("x-ratelimit-remaining"),
        )
        return response

    def _observe(self, lease: Lease, response: httpx.Response) -> None:
        remaining = _int_header(response, "x-ratelimit-remaining")
        reset = _int_header(response, "x-ratelimit-reset")
        if remaining is not None and reset is not None:
            self.auth.observe(lease.key, remaining, float(reset))

    def _to_page(self, response: httpx.Response, etag: str | None) -> Page:
        url = str(response.request.url)
        if response.status_code == 304:
            return Page(items=[], url=url, next_url=None, etag=etag, not_modified=True)
        if not response.is_success:
            self._raise_for_status(response)
        if response.status_code == 204:
            return Page(items=[], url=url, next_url=None, etag=None, not_modified=False)
        try:
            body: Any = response.json()
        except ValueError as exc:
            raise _Retry(f"invalid JSON in {response.status_code} answer ({exc})") from exc
        items = body if isinstance(body, list) else [body]
        next_url = response.links.get("next", {}).get("url")
        return Page(items=items, url=url, next_url=next_url, etag=response.headers.get("etag"), not_modified=False)

    def _raise_for_status(self, response: httpx.Response) -> None:
        status, url, message = response.status_code, str(response.request.url), _message(response)
        cause = f"{status} from GET {url}: {message}"
        if status in (403, 429):
            retry_after = _int_header(response, "retry-after")
            remaining = _int_header(response, "x-ratelimit-remaining")
            reset = _int_header(response, "x-ratelimit-reset")
            if retry_after is None and remaining == 0 and reset is not None and reset > self.clock.now():
                logger.warning("GET %s: primary rate limit reached (resets at %s)", url, _iso(reset))
                raise _PrimaryLimit(cause)
            if status == 429 or retry_after is not None or remaining == 0 or "secondary rate limit" in message.lower():
                raise _Retry(f"secondary rate limit ({cause})", retry_after=retry_after, rate_limited=True)
            raise AuthenticationError(cause, status=status, url=url)
        if status == 401:
            raise AuthenticationError(cause, status=status, url=url)
        if status in (404, 410):
            raise NotFoundError(cause, status=status, url=url)
        if status >= 500:
            raise _Retry(cause)
        raise GitHubClientError(cause, status=status, url=url)

    # -- waiting ------------------------------------------------------------------------------

    def _fault_delay(self, url: str, faults: int, retry: _Retry) -> float:
        if faults > self.max_retries:
            raise GitHubServerError(
                f"GET {url} failed after {self.max_retries} retries; last cause: {retry.cause}", url=url
            ) from retry
        ceiling = min(MAX_FAULT_BACKOFF, self.backoff_base * 2 ** (faults - 1))
        return random.uniform(0, ceiling)  # full jitter

    def _secondary_delay(self, url: str, limited: int, retry: _Retry) -> float:
        if retry.retry_after is not None:
            delay = float(retry.retry_after)
        else:
            delay = self.secondary_backoff * 2 ** (limited - 1) * random.uniform(1.0, 1.25)
        if limited > self.max_retries or delay > self.max_rate_limit_wait:
            raise RateLimitExhausted(
                self.clock.now() + delay,
                f"GET {url}: secondary rate limit persists after {limited - 1} retries "
                f"(next wait {delay:.0f} s); last cause: {retry.cause}",
                url=url,
            ) from retry
        return delay

    def _sleep(self, seconds: float, *, rate_limited: bool) -> None:
        self._count(waited=seconds, rate_limit_waits=int(rate_limited))
        self.clock.sleep(seconds)

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


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")
