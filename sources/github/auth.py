"""Credentials for the GitHub client, as `httpx.Auth` flows: a pool of tokens, or a GitHub App
installation.

`GitHubAuth.auth_flow` is the one place that sees each request and its answer: it picks a
credential, lets the request through that credential's rate-limit gate, sets the Authorization
header, reads the rate-limit headers of the answer into the credential's budget (closing its gate
when the budget is spent or a secondary limit is hit) and, in a pool, drops a token GitHub
rejects and sends the request again with another. Token values never leave these objects except
in the Authorization header; names such as "token-2" stand for them everywhere else.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import jwt

from .errors import AuthenticationError, GitHubServerError, InvalidCredential
from .ratelimit import (
    Clock,
    RateLimit,
    RateLimitGate,
    SystemClock,
    github_message,
    graphql_rate_limited,
    int_header,
    is_graphql,
    iso,
    rate_limit_of,
)

logger = logging.getLogger("sources.github.client")

API_VERSION = "2022-11-28"
RENEW_BEFORE_EXPIRY = 300.0  # renew an installation token 5 minutes before it expires
JWT_BACKDATE = 60  # GitHub recommends an `iat` 60 s in the past against clock drift
JWT_LIFETIME = 540  # 9 minutes; GitHub accepts at most 10
REMINT_WITHIN = 60.0  # a token minted because one was refused, refused too within this: the answer
RESET_MARGIN = 1.0  # resume a second after the announced reset, against clock skew

_CHARACTER_NAMES = {"\n": "newline", "\r": "carriage return", "\x00": "NUL", "\t": "tab", " ": "space"}


def token_problem(token: str) -> str | None:
    """Why `token` (already stripped) cannot be sent in a header, or None; never quotes it."""
    if not token:
        return "is empty"
    for char in token:
        if "!" <= char <= "~":
            continue
        name = _CHARACTER_NAMES.get(char, f"U+{ord(char):04X}")
        if char.isspace() and char not in "\n\r":
            return f"contains whitespace ({name})"
        if char.isprintable():
            return f"contains a non-ASCII character ({name})"
        return f"contains a control character ({name})"
    return None


# OAuth scopes that let a classic token read an organisation's teams (Team fields in GraphQL).
ORG_SCOPES = frozenset({"read:org", "write:org", "admin:org"})

@dataclass(eq=False)
class Credential:
    """One credential's rate-limit state: its last known budget and its gate."""

    name: str  # loggable stand-in: "token-2", "anonymous", "app-installation-42"
    authorization: str | None = field(default=None, repr=False)  # the Authorization header value
    remaining: int | None = None
    reset: float | None = None
    secondary_strikes: int = 0  # secondary limits in a row: the backoff doubles with each
    gate: RateLimitGate = field(init=False, repr=False)
    # The GraphQL points budget: GitHub counts it apart from REST's requests, with its own reset
    # (its `remaining`, `reset` and gate); a secondary limit closes both gates.
    points: Credential | None = field(default=None, init=False, repr=False)
    # A classic token's OAuth scopes, from the X-OAuth-Scopes header of any answer; None until
    # told (fine-grained and App tokens carry permissions instead, and no such header).
    scopes: frozenset[str] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.gate = RateLimitGate(self.name)

    def budget(self, graphql: bool) -> Credential:
        """This credential's REST budget (itself), or its GraphQL points budget."""
        if not graphql:
            return self
        if self.points is None:
            self.points = Credential(f"{self.name} (GraphQL)")
        return self.points

    def score(self, now: float) -> float:
        """Higher is better; an unknown or already reset budget ranks first (fresh credential)."""
        if not self.gate.is_open(now):
            return -1.0
        if self.remaining is None or (self.reset is not None and self.reset <= now):
            return float("inf")
        return float(self.remaining)

    def spend(self) -> None:
        # Optimistic estimate so concurrent threads spread over tokens before answers arrive.
        if self.remaining:
            self.remaining -= 1

    def record(self, remaining: int, reset: float, now: float) -> None:
        """The budget GitHub announced; a spent one closes the gate until its reset (a reset
        already past by our clock still pauses RESET_MARGIN: no hot loop on clock skew)."""
        self.remaining, self.reset = remaining, reset
        if remaining == 0:
            self.gate.close_until(max(reset, now) + RESET_MARGIN, reset_at=reset)


class GitHubAuth(httpx.Auth):
    """What the token pool and the App installation share: the flow around each request."""

    requires_response_body = True  # a secondary limit may be told only in the body

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clock: Clock = SystemClock()
        self._max_wait = 3600.0
        self._secondary_backoff = 60.0
        self._on_wait: Callable[[float], None] | None = None

    def configure(
        self,
        clock: Clock,
        *,
        max_wait: float,
        secondary_backoff: float,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        """The client's clock and limits; `on_wait(seconds)` hears of every rate-limit sleep."""
        self._clock, self._max_wait, self._secondary_backoff = clock, max_wait, secondary_backoff
        self._on_wait = on_wait

    # -- what each kind of credential decides --------------------------------------------------

    def choose(self, now: float, graphql: bool = False) -> Credential:
        """The credential for the next request; `graphql` ranks by the GraphQL points budget."""
        raise NotImplementedError

    def _rejected(self, credential: Credential, response: httpx.Response) -> bool:
        """A 401 with `credential`: True when the request may go out again with another."""
        return False

    def secrets(self) -> list[str]:
        """Every secret value this object knows, for redacting error texts."""
        raise NotImplementedError

    def remaining(self) -> int | None:
        raise NotImplementedError

    def credentials(self) -> list[Credential]:
        """Every credential a request may go out with."""
        raise NotImplementedError

    def reads_org(self) -> bool:
        """Every credential is known to read organisation data (a classic token with read:org,
        write:org or admin:org): a GraphQL query may then name Team fields, which GitHub refuses
        a whole query for otherwise. Unknown (no scopes told) counts as no."""
        credentials = self.credentials()
        return bool(credentials) and all(c.scopes is not None and c.scopes & ORG_SCOPES for c in credentials)

    def budget_name(self) -> str:
        """Whose rate-limit budget these requests spend, as a name safe to show anywhere (never a
        secret's value): runs in other processes that share it share GitHub's limits with us."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- the flow ------------------------------------------------------------------------------

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        url = str(request.url)
        graphql = is_graphql(request)
        while True:
            credential = self.choose(self._clock.now(), graphql)
            slept = credential.budget(graphql).gate.wait(self._clock, self._max_wait, url, request.method)
            if slept and self._on_wait is not None:
                self._on_wait(slept)
            if credential.authorization:
                request.headers["Authorization"] = credential.authorization
            response = yield request
            self._observe(credential, response, graphql)
            logger.debug(
                "%s %s -> %d (%s, remaining %s)",
                request.method, url, response.status_code, credential.name, response.headers.get("x-ratelimit-remaining"),
            )
            if response.status_code != 401 or not self._rejected(credential, response):
                return

    def _observe(self, credential: Credential, response: httpx.Response, graphql: bool = False) -> None:
        now = self._clock.now()
        remaining = int_header(response, "x-ratelimit-remaining")
        reset = int_header(response, "x-ratelimit-reset")
        limit = rate_limit_of(response)
        spent = remaining == 0 and reset is not None  # recorded below: the gate waits for the reset
        if limit is None and graphql and not spent and graphql_rate_limited(response):
            limit = RateLimit(primary=False)  # RATE_LIMITED with budget left: a secondary limit
        budget = credential.budget(graphql)
        scopes = response.headers.get("x-oauth-scopes")
        if scopes is not None and response.status_code < 400:
            credential.scopes = frozenset(s.strip() for s in scopes.split(",") if s.strip())
        with self._lock:
            # A 401's headers describe the unauthenticated budget, not this credential's.
            if remaining is not None and reset is not None and response.status_code != 401:
                budget.record(remaining, float(reset), now)
            # While the gate is closed, answers are to requests sent before the pause began:
            # they neither end a run of secondary limits nor lengthen it.
            paused = not budget.gate.is_open(now)
            if limit is None or limit.primary:
                if response.status_code < 400 and not paused:
                    credential.secondary_strikes = 0
                return
            if not paused or credential.secondary_strikes == 0:
                credential.secondary_strikes += 1
            strikes = credential.secondary_strikes
        if limit.retry_after is not None:
            delay = limit.retry_after
        else:  # GitHub: wait at least a minute, backing off exponentially
            delay = self._secondary_backoff * 2 ** (strikes - 1) * random.uniform(1.0, 1.25)
        credential.gate.close_until(now + delay)  # GitHub's secondary limits span REST and GraphQL
        credential.budget(True).gate.close_until(now + delay)
        logger.warning(
            "GitHub secondary rate limit on %s: every request with it pauses %.0f s, until %s",
            credential.name, delay, iso(now + delay),
        )


class TokenPool(GitHubAuth):
    """Several personal access tokens; each request goes to the one with most budget left.

    Ties are broken round-robin. A token whose gate is closed (budget spent, secondary limit) is
    skipped; a request waits only when every token is paused. A token GitHub rejects (401) leaves
    the pool while others remain. An empty pool means anonymous access.
    """

    def __init__(self, tokens: Sequence[str], *, source: str = "TokenPool") -> None:
        super().__init__()
        cleaned = list(dict.fromkeys(t.strip() for t in tokens if t and t.strip()))  # each token once
        for position, token in enumerate(cleaned, start=1):
            problem = token_problem(token)
            if problem:
                raise InvalidCredential(f"{source}: token {position} {problem}")
        self._tokens = cleaned
        self.source = source
        self._credentials = [
            Credential(f"token-{i}", f"Bearer {token}") for i, token in enumerate(cleaned, start=1)
        ] or [Credential("anonymous")]
        self._live = list(self._credentials)
        self._cursor = 0

    @classmethod
    def from_env(cls, value: str | None, *, source: str = "GITHUB_TOKENS") -> TokenPool:
        """Build from a comma-separated value such as `GITHUB_TOKENS=a,b,c`."""
        return cls((value or "").split(","), source=source)

    def __len__(self) -> int:
        return len(self._tokens)

    def __repr__(self) -> str:
        return f"TokenPool({len(self)} tokens)" if len(self) else "TokenPool(anonymous)"

    def choose(self, now: float, graphql: bool = False) -> Credential:
        with self._lock:
            n = len(self._live)
            order = [self._live[(self._cursor + k) % n] for k in range(n)]
            # The first of equals wins: round-robin.
            best = max(order, key=lambda c: c.budget(graphql).score(now))
            if not best.budget(graphql).gate.is_open(now):  # every token is paused: the one that reopens first
                return min(order, key=lambda c: c.budget(graphql).gate.reopens_at())
            self._cursor = (self._live.index(best) + 1) % n
            if not graphql:  # a query's points are known only from its answer
                best.spend()
            return best

    def _rejected(self, credential: Credential, response: httpx.Response) -> bool:
        with self._lock:
            if credential not in self._live:  # another thread dropped it already
                return True
            if len(self._live) == 1:
                return False
            index = self._live.index(credential)
            del self._live[index]
            if index < self._cursor:  # keep the round-robin on the token that was next
                self._cursor -= 1
            self._cursor %= len(self._live)
            left = len(self._live)
        logger.warning(
            "%s of %d was rejected (%d %s); continuing with %d token(s)",
            credential.name, len(self._credentials), response.status_code, github_message(response), left,
        )
        return True

    def secrets(self) -> list[str]:
        return list(self._tokens)

    def budget_name(self) -> str:
        """`token-` and a fingerprint of the tokens (12 hex digits of their SHA-256, from which no
        token can be recovered): the same tokens give the same name in every process.
        Anonymous requests share the budget of the machine's address."""
        if not self._tokens:
            return "anonymous"
        return "token-" + hashlib.sha256("\n".join(sorted(self._tokens)).encode()).hexdigest()[:12]

    def credentials(self) -> list[Credential]:
        with self._lock:
            return list(self._live)

    def remaining(self) -> int | None:
        with self._lock:
            known = [c.remaining for c in self._live if c.remaining is not None]
        return sum(known) if known else None


class AppNotInstalled(AuthenticationError):
    """The GitHub App has no installation on the organisation."""


# Installations found by organisation, once a process: (API URL, app id, org) -> installation id.
_INSTALLATIONS: dict[tuple[str, str, str], str] = {}
_INSTALLATIONS_LOCK = threading.Lock()


class GitHubAppAuth(GitHubAuth):
    """A GitHub App installation: mints installation tokens and renews them before expiry.

    The JWT (RS256, `iss` = app id) is only used to POST `/app/installations/{id}/access_tokens`
    and, without an installation id, to find the organisation's (`GET /orgs/{org}/installation`,
    once a process): each organisation then spends its own installation's budget. The token is
    cached and shared by all threads.
    """

    def __init__(
        self,
        app_id: str,
        private_key: str,
        installation_id: int | str | None = None,
        base_url: str = "https://api.github.com",
        *,
        org: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__()
        if installation_id is None and not org:
            raise ValueError("GitHubAppAuth needs an installation id or the organisation to find it for")
        self.app_id = str(app_id)
        self.org = org
        self.installation_id = None if installation_id is None else str(installation_id)
        self._private_key = private_key
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION},
        )
        self._fixed_installation = installation_id is not None
        self._minted: list[str] = []
        self._expires_at = 0.0
        self._renewing_after_rejection = False
        # The Authorization minted because one was refused, and when: refused too within a minute,
        # it is the answer; later, it may have been revoked since, and is minted again.
        self._minted_after_rejection: tuple[str, float] | None = None
        self._credential = Credential(f"app-installation-{self.installation_id or '(of ' + str(org) + ')'}")

    def __repr__(self) -> str:
        return f"GitHubAppAuth(app_id={self.app_id!r}, installation_id={self.installation_id!r}, org={self.org!r})"

    def choose(self, now: float, graphql: bool = False) -> Credential:
        with self._lock:
            self._find_installation(now)
            if not self._minted or now >= self._expires_at - RENEW_BEFORE_EXPIRY:
                token, self._expires_at = self._mint(now)
                self._minted.append(token)
                self._credential.authorization = f"Bearer {token}"
                if self._renewing_after_rejection:
                    self._minted_after_rejection, self._renewing_after_rejection = (f"Bearer {token}", now), False
            self._credential.spend()
            return self._credential

    def _rejected(self, credential: Credential, response: httpx.Response) -> bool:
        """A refused installation token (revoked, or expired by GitHub's clock before ours) is
        minted again once and the request sent again; a token minted for that reason and
        refused as well is the answer."""
        sent = response.request.headers.get("Authorization")
        with self._lock:
            if sent != credential.authorization:
                return True  # another thread minted a new token since: send again with it
            after = self._minted_after_rejection
            if after is not None and sent == after[0] and self._clock.now() - after[1] < REMINT_WITHIN:
                return False
            self._expires_at, self._renewing_after_rejection = 0.0, True
        logger.warning("GitHub App %s: installation %s's token was refused (%d %s); minting a new one",
                       self.app_id, self.installation_id, response.status_code, github_message(response))
        return True

    def secrets(self) -> list[str]:
        return [*self._minted, self._private_key]

    def budget_name(self) -> str:
        """`installation-{id}`: GitHub gives each installation its own budget (found first when
        only the organisation is known; AppNotInstalled when there is none)."""
        with self._lock:
            self._find_installation(self._clock.now())
        return f"installation-{self.installation_id}"

    def _find_installation(self, now: float) -> None:
        if self.installation_id is None:
            self.installation_id = self._installation_of_org(now)
            self._credential.name = f"app-installation-{self.installation_id}"

    def credentials(self) -> list[Credential]:
        return [self._credential]

    def remaining(self) -> int | None:
        with self._lock:
            return self._credential.remaining

    def close(self) -> None:
        self._http.close()

    def app_jwt(self, now: float) -> str:
        """The short-lived app JWT GitHub requires to mint installation tokens."""
        claims = {"iat": int(now) - JWT_BACKDATE, "exp": int(now) + JWT_LIFETIME, "iss": self.app_id}
        return jwt.encode(claims, self._private_key, algorithm="RS256")

    def _installation_of_org(self, now: float) -> str:
        """The id of the App's installation on `org`, asked once a process. AppNotInstalled when
        there is none: that organisation fails, naming why, and no other."""
        assert self.org is not None
        key = self._installation_key()
        with _INSTALLATIONS_LOCK:
            if key in _INSTALLATIONS:
                return _INSTALLATIONS[key]
        try:
            response, url = self._app_request("GET", f"/orgs/{self.org}/installation", now, 200)
        except AuthenticationError as error:
            if error.status != 404:
                raise
            raise AppNotInstalled(
                f"the GitHub App {self.app_id} is not installed on organisation {self.org} "
                f"({error}): install it there, or leave the organisation out", status=404, url=error.url) from None
        try:
            installation = str(int(response.json()["id"]))
        except (ValueError, KeyError, TypeError):
            raise GitHubServerError(f"unreadable installation answer from GET {url}", url=url) from None
        logger.info("GitHub App %s: organisation %s is installation %s", self.app_id, self.org, installation)
        with _INSTALLATIONS_LOCK:
            _INSTALLATIONS[key] = installation
        return installation

    def _mint(self, now: float) -> tuple[str, float]:
        """A new installation token. When the installation was found by organisation and GitHub no
        longer knows it (the App was uninstalled, or reinstalled under a new id, since), it is
        looked for once more: the new one, or AppNotInstalled."""
        try:
            return self._fetch_token(now)
        except AuthenticationError as error:
            if error.status != 404:
                raise
            if self._fixed_installation:
                raise AuthenticationError(
                    f"the GitHub App {self.app_id} has no installation {self.installation_id} "
                    f"(PR_ANALYTICS_GITHUB_APP_INSTALLATION_ID): {error}", status=404, url=error.url) from None
        assert self.org is not None
        logger.info("GitHub App %s: installation %s is gone; looking for the one on %s again",
                    self.app_id, self.installation_id, self.org)
        with _INSTALLATIONS_LOCK:
            _INSTALLATIONS.pop(self._installation_key(), None)
        self.installation_id = None
        self._find_installation(now)
        return self._fetch_token(now)

    def _installation_key(self) -> tuple[str, str, str]:
        assert self.org is not None
        return str(self._http.base_url), self.app_id, self.org.lower()

    def _app_request(self, method: str, path: str, now: float, expected: int) -> tuple[httpx.Response, str]:
        """A request authenticated with the App's JWT, and its URL: GitHubServerError when a retry
        may cure it (no answer, a 5xx), AuthenticationError for any other answer than `expected`."""
        try:
            response = self._http.request(method, path, headers={"Authorization": f"Bearer {self.app_jwt(now)}"})
        except httpx.TransportError as exc:
            raise GitHubServerError(f"{method} {path} failed: {type(exc).__name__}: {exc}", url=path) from None
        url = str(response.request.url)
        if response.status_code >= 500:
            raise GitHubServerError(f"{response.status_code} from {method} {url}", status=response.status_code, url=url)
        if response.status_code != expected:
            raise AuthenticationError(f"{response.status_code} from {method} {url}: {github_message(response)}",
                                      status=response.status_code, url=url)
        return response, url

    def _fetch_token(self, now: float) -> tuple[str, float]:
        response, url = self._app_request("POST", f"/app/installations/{self.installation_id}/access_tokens", now, 201)
        try:
            body = response.json()
            token, expires_at = str(body["token"]).strip(), datetime.fromisoformat(body["expires_at"]).timestamp()
        except (ValueError, KeyError, TypeError):
            raise GitHubServerError(f"unreadable installation token answer from POST {url}", url=url) from None
        problem = token_problem(token)
        if problem:
            raise GitHubServerError(f"the installation token from POST {url} {problem}", url=url)
        logger.info("GitHub App %s: new installation token, expires %s", self.app_id, body["expires_at"])
        return token, expires_at
