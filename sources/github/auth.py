"""Credentials for the GitHub client: a pool of tokens, or a GitHub App installation.

Both implement `Auth`: the client asks for a `Lease` before each request and reports the
rate-limit headers of each answer back through `observe`, so the credential knows its budget.
Tokens only ever leave these objects inside `Lease.authorization`, which is masked in reprs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import httpx
import jwt

from .errors import AuthenticationError, GitHubServerError

logger = logging.getLogger("sources.github.client")

API_VERSION = "2022-11-28"
RENEW_BEFORE_EXPIRY = 300.0  # renew an installation token 5 minutes before it expires
JWT_BACKDATE = 60  # GitHub recommends an `iat` 60 s in the past against clock drift
JWT_LIFETIME = 540  # 9 minutes; GitHub accepts at most 10


@dataclass(frozen=True)
class Lease:
    """The credential to use for one request."""

    key: str  # opaque, loggable name of the credential ("token-1", "anonymous", ...)
    authorization: str | None = field(default=None, repr=False)  # `Authorization` header value
    blocked_until: float | None = None  # set when the budget is gone: epoch seconds of its reset


class Auth(Protocol):
    def acquire(self, now: float) -> Lease: ...
    def observe(self, key: str, remaining: int, reset: float) -> None: ...
    def remaining(self) -> int | None: ...
    def close(self) -> None: ...


@dataclass
class _Budget:
    """Last known primary rate-limit state of one credential."""

    key: str
    remaining: int | None = None
    reset: float | None = None

    def exhausted(self, now: float) -> bool:
        return self.remaining == 0 and self.reset is not None and self.reset > now

    def score(self, now: float) -> float:
        """Higher is better; unknown or already reset budgets rank first (fresh credential)."""
        if self.exhausted(now):
            return -1.0
        if self.remaining is None or (self.reset is not None and self.reset <= now):
            return float("inf")
        return float(self.remaining)

    def spend(self) -> None:
        # Optimistic estimate so concurrent threads spread over tokens before answers arrive.
        if self.remaining:
            self.remaining -= 1


class TokenPool:
    """Several personal access tokens; each request goes to the one with most budget left.

    Ties are broken round-robin. An exhausted token is skipped until its reset; a lease is
    blocked only when every token is exhausted. An empty pool means anonymous access.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        cleaned = [t.strip() for t in tokens if t and t.strip()]
        self._headers = [f"Bearer {t}" for t in cleaned] or [None]
        names = [f"token-{i + 1}" for i in range(len(cleaned))] or ["anonymous"]
        self._budgets = [_Budget(name) for name in names]
        self._index = {name: i for i, name in enumerate(names)}
        self._cursor = 0
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, value: str | None) -> TokenPool:
        """Build from a comma-separated value such as `GITHUB_TOKENS=a,b,c`."""
        return cls((value or "").split(","))

    def __len__(self) -> int:
        return sum(1 for h in self._headers if h is not None)

    def __repr__(self) -> str:
        return f"TokenPool({len(self)} tokens)" if len(self) else "TokenPool(anonymous)"

    def acquire(self, now: float) -> Lease:
        with self._lock:
            n = len(self._budgets)
            order = [(self._cursor + k) % n for k in range(n)]
            best = max(order, key=lambda i: self._budgets[i].score(now))  # first max wins: round-robin
            if self._budgets[best].exhausted(now):
                soonest = min(order, key=lambda i: self._budgets[i].reset or 0.0)
                budget = self._budgets[soonest]
                return Lease(budget.key, self._headers[soonest], blocked_until=budget.reset)
            self._cursor = (best + 1) % n
            self._budgets[best].spend()
            return Lease(self._budgets[best].key, self._headers[best])

    def observe(self, key: str, remaining: int, reset: float) -> None:
        with self._lock:
            budget = self._budgets[self._index[key]]
            budget.remaining, budget.reset = remaining, reset

    def remaining(self) -> int | None:
        with self._lock:
            known = [b.remaining for b in self._budgets if b.remaining is not None]
        return sum(known) if known else None

    def close(self) -> None:
        pass


class GitHubAppAuth:
    """A GitHub App installation: mints installation tokens and renews them before expiry.

    The JWT (RS256, `iss` = app id) is only used to POST `/app/installations/{id}/access_tokens`;
    the resulting token is cached and shared by all threads.
    """

    def __init__(
        self,
        app_id: str,
        private_key: str,
        installation_id: int | str,
        base_url: str = "https://api.github.com",
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.app_id = str(app_id)
        self.installation_id = str(installation_id)
        self._private_key = private_key
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION},
        )
        self._token: str | None = None
        self._expires_at = 0.0
        self._budget = _Budget(f"app-installation-{self.installation_id}")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GitHubAppAuth(app_id={self.app_id!r}, installation_id={self.installation_id!r})"

    def acquire(self, now: float) -> Lease:
        with self._lock:
            if self._token is None or now >= self._expires_at - RENEW_BEFORE_EXPIRY:
                self._token, self._expires_at = self._fetch_token(now)
            blocked = self._budget.reset if self._budget.exhausted(now) else None
            if blocked is None:
                self._budget.spend()
            return Lease(self._budget.key, f"Bearer {self._token}", blocked_until=blocked)

    def observe(self, key: str, remaining: int, reset: float) -> None:
        with self._lock:
            self._budget.remaining, self._budget.reset = remaining, reset

    def remaining(self) -> int | None:
        with self._lock:
            return self._budget.remaining

    def close(self) -> None:
        self._http.close()

    def app_jwt(self, now: float) -> str:
        """The short-lived app JWT GitHub requires to mint installation tokens."""
        claims = {"iat": int(now) - JWT_BACKDATE, "exp": int(now) + JWT_LIFETIME, "iss": self.app_id}
        return jwt.encode(claims, self._private_key, algorithm="RS256")

    def _fetch_token(self, now: float) -> tuple[str, float]:
        path = f"/app/installations/{self.installation_id}/access_tokens"
        headers = {"Authorization": f"Bearer {self.app_jwt(now)}"}
        try:
            response = self._http.post(path, headers=headers)
        except httpx.TransportError as exc:
            raise GitHubServerError(f"installation token request to {path} failed: {type(exc).__name__}: {exc}", url=path) from exc
        url = str(response.request.url)
        if response.status_code >= 500:
            raise GitHubServerError(f"{response.status_code} from POST {url}", status=response.status_code, url=url)
        if response.status_code != 201:
            raise AuthenticationError(
                f"{response.status_code} from POST {url}: {_message(response)}", status=response.status_code, url=url
            )
        try:
            body = response.json()
            token, expires_at = body["token"], datetime.fromisoformat(body["expires_at"]).timestamp()
        except (ValueError, KeyError, TypeError) as exc:
            raise GitHubServerError(f"unreadable installation token answer from POST {url}", url=url) from exc
        logger.info("GitHub App %s: new installation token, expires %s", self.app_id, body["expires_at"])
        return token, expires_at


def _message(response: httpx.Response) -> str:
    """GitHub's own explanation from an error body, or the start of the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return response.reason_phrase
