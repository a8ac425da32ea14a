"""GitHub's rate limits as the client sees them: reading them from an answer, and the gate that
makes every thread using a credential wait when one answer says so.

All waiting goes through a `Clock` so tests run on virtual time without sleeping.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

import httpx

from .errors import RateLimitExhausted

logger = logging.getLogger("sources.github.client")


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
class RateLimit:
    """A 403/429 that is a rate limit: the primary budget is gone until `reset`, or a secondary
    limit asks to wait `retry_after` seconds (None: GitHub's documented minute-long backoff)."""

    primary: bool
    retry_after: float | None = None
    reset: float | None = None


def rate_limit_of(response: httpx.Response) -> RateLimit | None:
    """The rate limit a response announces, or None (a 403 without one is a permission denial).

    A spent budget is a primary limit even when its reset already passed by our clock: the
    answer is stale (another thread waited it out) or the clocks disagree; either way it is
    no secondary limit, and the gate pauses only briefly (see Credential.record)."""
    if response.status_code not in (403, 429):
        return None
    retry_after = int_header(response, "retry-after")
    remaining = int_header(response, "x-ratelimit-remaining")
    reset = int_header(response, "x-ratelimit-reset")
    if retry_after is None and remaining == 0 and reset is not None:
        return RateLimit(primary=True, reset=float(reset))
    if (
        response.status_code == 429
        or retry_after is not None
        or remaining == 0
        or "secondary rate limit" in github_message(response).lower()
        or graphql_rate_limited(response)  # GraphQL's error body on a 403: a limit, never a refusal
    ):
        return RateLimit(primary=False, retry_after=None if retry_after is None else float(retry_after))
    return None


class RateLimitGate:
    """The pause every request with one credential passes before it is sent.

    GitHub counts rate limits per credential, not per thread: once one answer says "wait" (a
    secondary limit, or a budget spent until its reset), every thread using that credential has
    to wait too, or the others keep sending into the limit and GitHub lengthens the penalty.
    One waiting thread sleeps on the clock for all of them (the others wait for it), so a
    virtual clock moves once per pause, and the wait is always computed from the clock.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._reopens_at = 0.0
        self._reset_at = 0.0  # what GitHub announced (reported in RateLimitExhausted)
        self._sleeping = False
        self._changed = threading.Condition()

    def __repr__(self) -> str:
        return f"RateLimitGate({self.name!r}, reopens_at={self._reopens_at})"

    def close_until(self, reopens_at: float, *, reset_at: float | None = None) -> None:
        """Hold every request until `reopens_at`; a pause is only ever lengthened."""
        with self._changed:
            if reopens_at > self._reopens_at:
                self._reopens_at = reopens_at
                self._reset_at = reopens_at if reset_at is None else reset_at

    def reopens_at(self) -> float:
        with self._changed:
            return self._reopens_at

    def is_open(self, now: float) -> bool:
        with self._changed:
            return self._reopens_at <= now

    def wait(self, clock: Clock, max_wait: float, url: str, method: str = "GET") -> float:
        """Return once the gate is open: the seconds this thread slept (0 when another slept).

        Raises RateLimitExhausted, without sleeping, when it reopens more than `max_wait` away.
        """
        slept = 0.0
        while True:
            with self._changed:
                while self._sleeping:
                    self._changed.wait()
                reopens_at, reset_at = self._reopens_at, self._reset_at
                delay = reopens_at - clock.now()
                if delay <= 0:
                    return slept
                if delay > max_wait:
                    raise RateLimitExhausted(
                        reset_at,
                        f"GitHub rate limit: {self.name} is paused until {iso(reopens_at)}, more than "
                        f"max_rate_limit_wait={max_wait:.0f} s away ({method} {url})",
                        url=url,
                    )
                self._sleeping = True
            logger.warning("GitHub rate limit: %s paused; resuming at %s (%s %s)", self.name, iso(reopens_at), method, url)
            try:
                clock.sleep(delay)
            finally:
                with self._changed:
                    self._sleeping = False
                    self._changed.notify_all()
            slept += delay


def is_graphql(request: httpx.Request) -> bool:
    """A GraphQL query (POST to `/graphql`): it spends the GraphQL points budget, not REST's."""
    return request.method == "POST" and request.url.path.rstrip("/").endswith("/graphql")


# GraphQL error types of a rate limit: GitHub documents RATE_LIMITED; RATE_LIMIT is seen too.
GRAPHQL_RATE_LIMIT_TYPES = frozenset({"RATE_LIMITED", "RATE_LIMIT"})


def graphql_errors_limited(body: object) -> bool:
    """A GraphQL answer's body whose errors include a rate limit (either type, or a message that
    says so, as a secondary limit may)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    return isinstance(errors, list) and any(
        isinstance(error, dict) and (error.get("type") in GRAPHQL_RATE_LIMIT_TYPES
                                     or "rate limit" in str(error.get("message", "")).lower())
        for error in errors
    )


def graphql_rate_limited(response: httpx.Response) -> bool:
    """A GraphQL answer whose errors say it is rate limited (GitHub answers that with 200 or 403)."""
    try:
        body = response.json()
    except ValueError:
        return False
    return graphql_errors_limited(body)


def github_message(response: httpx.Response) -> str:
    """GitHub's own explanation from an error body (REST's `message`, or a GraphQL answer's
    errors), or the start of the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        return "; ".join(
            f"{e.get('type')}: {e.get('message')}" if e.get("type") else str(e.get("message"))
            for e in errors[:3] if isinstance(e, dict)
        ) or response.reason_phrase
    return response.reason_phrase


def int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")
