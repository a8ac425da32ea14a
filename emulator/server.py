"""A GitHub REST API emulator over the stdlib threading HTTP server.

It mimics what the pipeline relies on: Link pagination, weak ETags and free 304s, per-token
primary rate limits, App installation tokens, and scripted faults (see faults.py). `POST /graphql`
serves GitHub's GraphQL API for pull requests' children over the same data (see graphql.py), with
its own points budget per token; the same authentication, latency, faults and request log.
`graphql=False` serves a GitHub without it (`POST /graphql` answers 404, as an old GHES or a
proxy), `graphql_refused={token}` refuses those tokens on GraphQL only (403, as a token type or
scope GitHub's GraphQL API does not take).

A GitHub App (`app_id`, `app_public_key`, `app_installations={org: installation id}`): `GET
/orgs/{org}/installation` and `POST /app/installations/{id}/access_tokens` take the App's JWT,
checked against its public key (signature, `iss`, `exp`); an installation's tokens share one
rate-limit budget, REST's and GraphQL's, apart from every other installation's (their requests
are logged under the caller `installation:{id}`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from emulator.data import MAX_SERVED_FILES, Dataset, iso
from emulator.faults import Fault, FaultMix, FaultSet
from emulator.graphql import GraphQLService

logger = logging.getLogger(__name__)

DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
GRAPHQL_DOCS = "https://docs.github.com/graphql"
RATE_LIMITED = "API rate limit exceeded for user ID 1."
SECONDARY = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."

_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"^/orgs/([^/]+)/repos$"), "repos"),
    ("GET", re.compile(r"^/repos/([^/]+)/([^/]+)$"), "repo"),
    ("GET", re.compile(r"^/repos/([^/]+)/([^/]+)/pulls$"), "pulls"),
    ("GET", re.compile(r"^/repos/([^/]+)/([^/]+)/pulls/(\d+)$"), "pull"),
    ("GET", re.compile(r"^/repos/([^/]+)/([^/]+)/pulls/(\d+)/reviews$"), "reviews"),
    ("GET", re.compile(r"^/repos/([^/]+)/([^/]+)/pulls/(\d+)/files$"), "files"),
    ("GET", re.compile(r"^/repos/([^/]+)/([^/]+)/pulls/(\d+)/comments$"), "review_comments"),
    ("GET", re.compile(r"^/repos/([^/]+)/([^/]+)/issues/(\d+)/timeline$"), "timeline"),
    ("GET", re.compile(r"^/orgs/([^/]+)/teams$"), "teams"),
    ("GET", re.compile(r"^/orgs/([^/]+)/teams/([^/]+)/members$"), "team_members"),
    ("GET", re.compile(r"^/rate_limit$"), "rate_limit"),
    ("POST", re.compile(r"^/app/installations/(\d+)/access_tokens$"), "app_token"),
    ("GET", re.compile(r"^/orgs/([^/]+)/installation$"), "app_installation"),
]
_FREE = {"rate_limit", "app_token", "app_installation"}  # never charged against the primary limit
_APP_ENDPOINTS = {"app_token", "app_installation"}  # authenticated with the App's JWT


class _NotFound(Exception):
    pass


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] | None = None


@dataclass
class ReceivedRequest:
    """One request as the emulator received it: when (its clock), from whom, what, and the
    status it answered (None: the connection was dropped)."""

    received_at: float
    caller: str  # the credential ("anonymous" when none or rejected)
    method: str
    path: str  # relative to the base path, query string included ("/graphql" for GraphQL)
    status: int | None = None
    kind: str = ""  # the endpoint: "pulls", "reviews", ..., "graphql"
    points: int = 0  # GraphQL only: the query's cost, charged to the caller's GraphQL budget


@dataclass
class _Bucket:
    reset_at: float
    used: int = 0


def _json(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _message(status: int, message: str, headers: dict[str, str] | None = None) -> _Answer:
    return _Answer(status, _json({"message": message, "documentation_url": DOCS}), headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # ~100 concurrent clients connect at once
    emulator: GitHubEmulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    received_request: ReceivedRequest | None = None
    timeout = 120  # idle keep-alive connections end eventually
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid 40 ms stalls

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self.server.emulator._handle(self, "GET")

    def do_POST(self) -> None:  # noqa: N802
        self.server.emulator._handle(self, "POST")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        logger.debug("%s " + format, self.address_string(), *args)


class GitHubEmulator:
    """Serve a Dataset like api.github.com (or a GHES `/api/v3`) on 127.0.0.1."""

    def __init__(self, dataset: Dataset, *, latency: float = 0.0, base_path: str = "",
                 rate_limit: int = 5000, rate_limit_window: float = 3600,
                 tokens: set[str] | None = None, port: int = 0,
                 clock: Callable[[], float] = time.time, graphql_points: int = 5000,
                 graphql_heavy_nodes: int | None = None, graphql: bool = True,
                 graphql_refused: set[str] | None = None, graphql_schema: str = "github.com",
                 app_id: str | None = None, app_public_key: str | None = None,
                 app_installations: dict[str, int] | None = None) -> None:
        self.dataset = dataset
        self.latency = latency
        self.base_path = base_path.rstrip("/")
        self.rate_limit = rate_limit
        self.rate_limit_window = rate_limit_window
        self.tokens = set(tokens) if tokens is not None else None
        self.clock = clock
        self.faults = FaultSet()
        # POST /graphql: its own points budget per token (same window), see emulator/graphql.py
        self.graphql = GraphQLService(dataset, points=graphql_points, window=rate_limit_window,
                                      clock=clock, heavy_nodes=graphql_heavy_nodes, schema=graphql_schema)
        self.graphql_enabled = graphql  # False: POST /graphql answers 404
        self.graphql_refused = set(graphql_refused or ())  # tokens GraphQL answers 403, REST serves
        self._port = port
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        # A GitHub App: its id and public key (the JWTs are checked when given) and its
        # installation per organisation (login -> id); without, any installation id is minted for.
        self.app_id = app_id
        self.app_public_key = app_public_key
        self.app_installations = dict(app_installations or {})
        self._app_tokens: dict[str, tuple[float, str]] = {}  # token -> (expiry, installation id)
        self._received: list[ReceivedRequest] = []
        self._stats = self._empty_stats()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> GitHubEmulator:
        self._httpd = _Server(("127.0.0.1", self._port), _Handler)
        self._httpd.emulator = self
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="github-emulator", daemon=True)
        self._thread.start()
        logger.info("GitHub emulator serving at %s", self.url)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> GitHubEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}{self.base_path}"

    @property
    def graphql_path(self) -> str:
        """`/graphql`; on GitHub Enterprise (`/api/v3` for REST) it is `/api/graphql`."""
        return self.base_path.removesuffix("/v3") + "/graphql"

    @property
    def graphql_url(self) -> str:
        return f"http://127.0.0.1:{self._port}{self.graphql_path}"

    # ------------------------------------------------------------------ stats
    @staticmethod
    def _empty_stats() -> dict:
        return {"requests": 0, "by_endpoint": Counter(), "by_status": Counter(),
                "not_modified": 0, "cost": 0, "faults_served": 0, "graphql_points": 0}

    @property
    def stats(self) -> dict:
        """Snapshot: requests, by_endpoint{kind: n}, by_status{int: n}, not_modified, cost,
        faults_served, graphql_points. Dropped connections have no status. `cost` is the REST
        budget's; GraphQL requests count under by_endpoint["graphql"], their points apart."""
        with self._lock:
            s = self._stats
            return {**s, "by_endpoint": dict(s["by_endpoint"]), "by_status": dict(s["by_status"])}

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = self._empty_stats()
            self._received = []

    def received(self) -> list[ReceivedRequest]:
        """Every API request since the start (or `reset_stats`), in the order received."""
        with self._lock:
            return list(self._received)

    def revoke(self, token: str) -> None:
        """From now on `token` is answered 401 Bad credentials (needs `tokens=`)."""
        if self.tokens is None:
            raise ValueError("the emulator accepts any token: start it with tokens={...} to revoke one")
        with self._lock:
            self.tokens.discard(token)

    def _record(self, kind: str, status: int | None, cost: int, fault: bool, points: int = 0) -> None:
        with self._lock:
            s = self._stats
            s["graphql_points"] += points
            s["requests"] += 1
            s["by_endpoint"][kind] += 1
            if status is not None:
                s["by_status"][status] += 1
            s["not_modified"] += status == 304
            s["cost"] += cost
            s["faults_served"] += fault

    # ------------------------------------------------------------------ rate limit
    def _bucket(self, caller: str) -> _Bucket:
        """Caller's window; a new one starts at first use after the previous reset. Lock held."""
        now = self.clock()
        bucket = self._buckets.get(caller)
        if bucket is None or now >= bucket.reset_at:
            bucket = self._buckets[caller] = _Bucket(now + self.rate_limit_window)
        return bucket

    def _rate_headers(self, caller: str) -> dict[str, str]:
        with self._lock:
            b = self._bucket(caller)
            headers = {"x-ratelimit-limit": str(self.rate_limit),
                       "x-ratelimit-remaining": str(max(0, self.rate_limit - b.used)),
                       "x-ratelimit-used": str(b.used),
                       "x-ratelimit-reset": str(math.ceil(b.reset_at)),
                       "x-ratelimit-resource": "core"}
            # A classic token's scopes (an App's installation token has permissions instead).
            if caller != "anonymous" and not caller.startswith(("app:", "installation:")):
                headers["x-oauth-scopes"] = "repo, read:org" if caller in self.graphql.org_readers else "repo"
            return headers

    def _exhausted(self, caller: str) -> bool:
        with self._lock:
            return self._bucket(caller).used >= self.rate_limit

    def _charge(self, caller: str) -> None:
        with self._lock:
            self._bucket(caller).used += 1

    def _exhaust(self, caller: str, seconds: float | None) -> None:
        with self._lock:
            b = self._bucket(caller)
            b.used = self.rate_limit
            if seconds is not None:
                b.reset_at = self.clock() + seconds

    def _rate_limit_body(self, caller: str) -> dict:
        h = self._rate_headers(caller)
        core = {"limit": int(h["x-ratelimit-limit"]), "remaining": int(h["x-ratelimit-remaining"]),
                "reset": int(h["x-ratelimit-reset"]), "used": int(h["x-ratelimit-used"]),
                "resource": "core"}
        return {"resources": {"core": core, "graphql": self.graphql.resource(caller)}, "rate": core}

    # ------------------------------------------------------------------ request handling
    def _handle(self, h: _Handler, method: str) -> None:
        received_at = self.clock()
        h.received_request = None  # the handler serves every request of one keep-alive connection
        length = int(h.headers.get("Content-Length") or 0)
        raw_body = h.rfile.read(length) if length else b""
        split = urlsplit(h.path)
        path = unquote(split.path).rstrip("/") or "/"
        params = parse_qsl(split.query, keep_blank_values=True)

        admin = path.removeprefix(self.base_path) if path.startswith(self.base_path) else path
        if admin.startswith("/_emulator/"):
            self._send(h, self._admin(method, admin, dict(params), raw_body))
            return

        if self.latency:
            time.sleep(self.latency)
        rel = path[len(self.base_path):] if path.startswith(self.base_path) else None
        kind, args = self._route(method, rel)
        if method == "POST" and path == self.graphql_path:
            kind, args, rel = "graphql", (), "/graphql"

        caller, auth_error = self._authenticate(h, kind)
        rel_with_query = (rel or path) + (f"?{split.query}" if split.query else "")
        entry = ReceivedRequest(received_at, caller, method, rel_with_query, kind=kind)
        h.received_request = entry
        with self._lock:
            self._received.append(entry)
        if auth_error is not None:
            auth_error.headers = self._rate_headers("anonymous")
            if kind == "graphql":
                auth_error.body = _json({**json.loads(auth_error.body), "documentation_url": GRAPHQL_DOCS})
                auth_error.headers = self.graphql.headers("anonymous")
            self._record(kind, auth_error.status, 0, False)
            self._send(h, auth_error)
            return

        fault = self.faults.take(rel_with_query)
        if fault is not None and fault.kind != "slow":
            self._serve_fault(h, fault, kind, caller, args, params, split.path, raw_body)
            return
        if fault is not None:
            time.sleep(fault.seconds or 0)

        if kind == "graphql" and (not self.graphql_enabled or caller in self.graphql_refused):
            if self.graphql_enabled:
                answer = _message(403, "Resource not accessible by personal access token")
                answer.headers = self.graphql.headers(caller)
            else:  # no GraphQL here: GitHub's 404 for a path it does not have
                answer = _message(404, "Not Found")
                answer.headers = self._rate_headers(caller)
            self._record(kind, answer.status, 0, fault is not None)
            self._send(h, answer)
            return

        if kind == "graphql":
            gql = self.graphql.answer(caller, raw_body)
            entry.points = gql.points
            self._record(kind, gql.status, 0, fault is not None, gql.points)
            self._send(h, _Answer(gql.status, _json(gql.body), gql.headers))
            return

        if kind not in _FREE and self._exhausted(caller):
            answer = _message(403, RATE_LIMITED)
            answer.headers = self._rate_headers(caller)
            self._record(kind, 403, 0, fault is not None)
            self._send(h, answer)
            return

        answer = self._answer(kind, args, params, caller, split.path)
        cost = 0
        if answer.status == 200 and method == "GET":
            etag = f'W/"{hashlib.sha1(answer.body).hexdigest()}"'
            answer.headers = {**(answer.headers or {}), "ETag": etag}
            if etag in _etags(h.headers.get("If-None-Match")):
                answer = _Answer(304, b"", {"ETag": etag})
        if kind not in _FREE and answer.status != 304:
            self._charge(caller)
            cost = 1
        answer.headers = {**(answer.headers or {}), **self._rate_headers(caller)}
        self._record(kind, answer.status, cost, fault is not None)
        self._send(h, answer)

    def _route(self, method: str, rel: str | None) -> tuple[str, tuple[str, ...]]:
        if rel is not None:
            for verb, pattern, kind in _ROUTES:
                m = pattern.match(rel)
                if m and verb == method:
                    return kind, m.groups()
        return "other", ()

    def _authenticate(self, h: _Handler, kind: str) -> tuple[str, _Answer | None]:
        """Return (caller key, error answer or None)."""
        header = h.headers.get("Authorization") or ""
        scheme, _, credential = header.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() not in ("token", "bearer"):
            credential = ""
        if kind in _APP_ENDPOINTS:
            if scheme.lower() != "bearer" or len(credential.split(".")) != 3:
                return "anonymous", _message(401, "A JSON web token could not be decoded")
            problem = self._jwt_problem(credential)
            if problem:
                return "anonymous", _message(401, problem)
            return f"app:{self.app_id or 'any'}", None
        with self._lock:
            expiry, installation = self._app_tokens.get(credential, (None, ""))
        if expiry is not None and self.clock() < expiry:
            return f"installation:{installation}", None  # an installation's tokens share its budget
        if self.tokens is None:
            if kind == "graphql" and not credential:  # GitHub's GraphQL API has no anonymous access
                return "anonymous", _message(401, "This endpoint requires you to be authenticated.")
            return credential or "anonymous", None
        if not credential:
            return "anonymous", _message(401, "Requires authentication")
        if credential in self.tokens:
            return credential, None
        return "anonymous", _message(401, "Bad credentials")

    def _answer(self, kind: str, args: tuple[str, ...], params: list[tuple[str, str]],
                caller: str, url_path: str) -> _Answer:
        """The normal answer; `url_path` is the request's own path, used in Link URLs."""
        try:
            if kind == "rate_limit":
                return _Answer(200, _json(self._rate_limit_body(caller)))
            if kind == "app_token":
                return self._issue_app_token(args[0])
            if kind == "app_installation":
                installation = self.app_installations.get(args[0].lower())
                if installation is None:
                    return _message(404, "Not Found")
                return _Answer(200, _json({"id": installation, "app_id": int(self.app_id or 1),
                                           "account": {"login": args[0].lower(), "type": "Organization"},
                                           "target_type": "Organization", "repository_selection": "all"}))
            ds = self.dataset
            if kind == "repos":
                return self._page(ds.repositories(args[0]), params, url_path)
            if kind == "repo":
                return _Answer(200, _json(ds.repository(args[0], args[1])))
            if kind == "pulls":
                return self._page(self._sorted_pulls(args, dict(params)), params, url_path)
            if kind == "pull":
                return _Answer(200, _json(ds.pull_request(args[0], args[1], int(args[2]))))
            if kind == "reviews":
                return self._page(ds.reviews(args[0], args[1], int(args[2])), params, url_path)
            if kind == "review_comments":
                return self._page(ds.review_comments(args[0], args[1], int(args[2])), params, url_path)
            if kind == "files":
                files = ds.files(args[0], args[1], int(args[2]))[:MAX_SERVED_FILES]
                return self._page(files, params, url_path)
            if kind == "timeline":
                return self._page(ds.timeline(args[0], args[1], int(args[2])), params, url_path)
            if kind in ("teams", "team_members"):
                # A classic token needs read:org (org_readers); an App's installation token is let in.
                app_token = caller.startswith("installation:")
                if not app_token and caller not in self.graphql.org_readers:
                    return _message(403, "You must have the read:org scope to list teams.")
                if kind == "teams":
                    return self._page(ds.teams(args[0]), params, url_path)
                return self._page(ds.team_members(args[0], args[1]), params, url_path)
        except (KeyError, _NotFound):
            pass
        return _message(404, "Not Found")

    def _sorted_pulls(self, args: tuple[str, ...], q: dict[str, str]) -> list[dict]:
        pulls = self.dataset.pull_requests(args[0], args[1])
        state = q.get("state", "open")
        if state != "all":
            pulls = [p for p in pulls if p.get("state") == state]
        sort = q.get("sort", "created")
        key = "updated_at" if sort == "updated" else "created_at"
        # GitHub: desc by default for sort=created, asc otherwise.
        direction = q.get("direction", "desc" if sort == "created" else "asc")
        # `pulls` come by number; the position stands in for it, so a corrupted PR still sorts.
        ranked = sorted(enumerate(pulls), key=lambda ip: (str(ip[1].get(key) or ""), ip[0]),
                        reverse=direction == "desc")
        return [p for _, p in ranked]

    def _page(self, items: list[dict], params: list[tuple[str, str]], url_path: str) -> _Answer:
        q = dict(params)
        per_page = min(max(_int(q.get("per_page"), 30), 1), 100)
        page = max(_int(q.get("page"), 1), 1)
        body = _json(items[(page - 1) * per_page: page * per_page])
        last = max(1, math.ceil(len(items) / per_page))
        links = []
        if page > 1:
            links.append((min(page - 1, last), "prev"))
        if page < last:
            links += [(page + 1, "next"), (last, "last")]
        if page > 1:
            links.append((1, "first"))
        headers = {}
        if links:
            headers["Link"] = ", ".join(
                f'<{self._page_url(url_path, params, n)}>; rel="{rel}"' for n, rel in links)
        return _Answer(200, body, headers)

    def _page_url(self, path: str, params: list[tuple[str, str]], page: int) -> str:
        query = urlencode([(k, v) for k, v in params if k != "page"] + [("page", str(page))])
        return f"http://127.0.0.1:{self._port}{path}?{query}"

    def _jwt_problem(self, token: str) -> str | None:
        """What is wrong with an App's JWT (GitHub's messages), or None: checked against the App's
        public key and id when the emulator has them."""
        if self.app_public_key is None:
            return None
        import jwt

        try:
            claims = jwt.decode(token, self.app_public_key, algorithms=["RS256"],
                                options={"verify_exp": False, "verify_iat": False})
        except jwt.PyJWTError:
            return "A JSON web token could not be decoded"
        now = self.clock()
        if not isinstance(claims.get("exp"), int) or claims["exp"] < now:
            return "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"
        if claims["exp"] - claims.get("iat", now) > 600:
            return "'Expiration time' claim ('exp') is too far in the future"
        if str(claims.get("iss")) != str(self.app_id):
            return "'Issuer' claim ('iss') must be an Integer"
        return None

    def _issue_app_token(self, installation: str) -> _Answer:
        if self.app_installations and installation not in {str(i) for i in self.app_installations.values()}:
            return _message(404, "Not Found")
        token = "ghs_" + secrets.token_urlsafe(27).replace("-", "a").replace("_", "b")[:36]
        expires = self.clock() + 3600
        with self._lock:
            self._app_tokens[token] = (expires, installation)
        body = {"token": token, "expires_at": iso(expires),
                "permissions": {"metadata": "read", "pull_requests": "read"},
                "repository_selection": "all"}
        return _Answer(201, _json(body))

    def _serve_fault(self, h: _Handler, fault: Fault, kind: str, caller: str,
                     args: tuple[str, ...], params: list[tuple[str, str]], url_path: str,
                     raw_body: bytes = b"") -> None:
        logger.debug("serving fault %s for %s", fault.kind, h.path)
        if fault.kind == "drop":
            self._record(kind, None, 0, True)
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        retry = {"retry-after": str(int(fault.retry_after))} if fault.retry_after is not None else {}
        points = 0
        if kind == "graphql" and fault.kind == "primary":  # GraphQL's budget: 200 with RATE_LIMITED
            self.graphql.exhaust(caller, fault.seconds)
            gql = self.graphql.rate_limited(caller, fault.error_type or "RATE_LIMITED")
            answer = _Answer(fault.status or gql.status, _json(gql.body), retry)
        elif kind == "graphql" and fault.kind == "secondary" and fault.error_type:
            body = {"errors": [{"type": fault.error_type, "message": SECONDARY}]}
            answer = _Answer(fault.status or 403, _json(body), retry)
        elif kind == "graphql" and fault.kind == "truncated":
            gql = self.graphql.answer(caller, raw_body)  # executed and charged, cut in transit
            full, points = _json(gql.body), gql.points
            answer = _Answer(gql.status, full[: len(full) // 2])
        elif fault.kind == "primary":
            self._exhaust(caller, fault.seconds)
            answer = _message(403, RATE_LIMITED)
        elif fault.kind == "secondary":
            answer = _message(403, SECONDARY, retry)
        elif fault.kind == "429":
            answer = _message(429, SECONDARY, retry)
        elif fault.kind == "404":
            answer = _message(404, "Not Found")
        elif fault.kind == "403":  # a permission denial, not a rate limit (e.g. SAML enforcement)
            answer = _message(403, "Resource not accessible by personal access token")
        elif fault.kind == "451":
            answer = _message(451, "Repository access blocked")
        elif fault.kind == "truncated":
            full = self._answer(kind, args, params, caller, url_path).body
            answer = _Answer(200, full[: len(full) // 2])
        else:  # 500 / 502 / 503
            status = int(fault.kind)
            text = {500: "Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}[status]
            answer = _message(status, text, retry)
        headers = self.graphql.headers(caller) if kind == "graphql" else self._rate_headers(caller)
        answer.headers = {**(answer.headers or {}), **headers}
        if h.received_request is not None:
            h.received_request.points = points
        self._record(kind, answer.status, 0, True, points)
        self._send(h, answer)

    # ------------------------------------------------------------------ admin API
    def _admin(self, method: str, path: str, q: dict[str, str], raw_body: bytes) -> _Answer:
        """Control endpoints for a benchmark in another process; never counted in stats."""
        try:
            body = json.loads(raw_body) if raw_body else {}
            if method == "GET" and path == "/_emulator/stats":
                return _Answer(200, _json(self.stats))
            if method == "POST" and path == "/_emulator/reset_stats":
                self.reset_stats()
                return _Answer(200, _json({"ok": True}))
            if method == "POST" and path == "/_emulator/reset_rate_limit":
                # Stands for "an hour later" in a benchmark: every caller's window starts afresh.
                with self._lock:
                    self._buckets.clear()
                self.graphql.reset()
                return _Answer(200, _json({"ok": True}))
            if method == "POST" and path == "/_emulator/graphql":
                # {"points": budget per token, "heavy_nodes": 502 above this many nodes, or null,
                #  "enabled": false for a 404 (no GraphQL), "refused": tokens answered 403,
                #  "schema": "github.com" or "ghes-3.9"}
                unknown = set(body) - {"points", "heavy_nodes", "enabled", "refused", "schema"}
                if unknown:
                    raise ValueError(f"unknown fields {sorted(unknown)}")
                if "points" in body:
                    self.graphql.points = int(body["points"])
                if "heavy_nodes" in body:
                    heavy = body["heavy_nodes"]
                    self.graphql.heavy_nodes = None if heavy is None else int(heavy)
                if "enabled" in body:
                    self.graphql_enabled = bool(body["enabled"])
                if "refused" in body:
                    self.graphql_refused = {str(token) for token in body["refused"]}
                if "schema" in body:
                    self.graphql.use_schema(str(body["schema"]))
                return _Answer(200, _json({"points": self.graphql.points,
                                           "heavy_nodes": self.graphql.heavy_nodes,
                                           "enabled": self.graphql_enabled,
                                           "refused": sorted(self.graphql_refused)}))
            if method == "POST" and path == "/_emulator/mutate":
                done = self.dataset.mutate_random(int(body.get("count", 1)), int(body.get("seed", 0)))
                return _Answer(200, _json({"mutations": done}))
            if method == "POST" and path == "/_emulator/faults":
                fault = self.faults.add(Fault.from_dict(body))
                return _Answer(201, _json(fault.to_dict()))
            if method == "POST" and path == "/_emulator/fault_mix":
                # {"rates": {kind: probability}, "path_regex": ..., "seed": n, "seconds": slow delay}
                mix = FaultMix(**body) if body.get("rates") else None
                self.faults.set_mix(mix)
                return _Answer(200, _json({"rates": mix.rates if mix else {}}))
            if method == "POST" and path == "/_emulator/clear_faults":
                self.faults.clear()
                return _Answer(200, _json({"ok": True}))
            if method == "GET" and path == "/_emulator/callers":
                # Per credential since reset_stats: requests, and its REST and GraphQL budgets'
                # use in the current window (reset_rate_limit starts them afresh).
                requests = Counter(r.caller for r in self.received())
                answer = {}
                for caller, count in sorted(requests.items()):
                    budget = self._rate_limit_body(caller)["resources"]
                    answer[caller] = {"requests": count, "rest_used": budget["core"]["used"],
                                      "graphql_used": budget["graphql"]["used"]}
                return _Answer(200, _json(answer))
            if method == "GET" and path == "/_emulator/expected":
                expected = self.dataset.expected(q.get("org"))
                return _Answer(200, _json({k: len(v) for k, v in expected.items()}))
        except (ValueError, TypeError, KeyError) as exc:
            return _Answer(400, _json({"message": str(exc)}))
        return _message(404, "Not Found")

    # ------------------------------------------------------------------ wire
    def _send(self, h: _Handler, answer: _Answer) -> None:
        entry = getattr(h, "received_request", None)
        if entry is not None:
            entry.status = answer.status
        h.send_response(answer.status)
        if answer.status != 304:
            h.send_header("Content-Type", "application/json; charset=utf-8")
        for name, value in (answer.headers or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(answer.body)))
        h.end_headers()
        if answer.body:
            h.wfile.write(answer.body)


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _etags(header: str | None) -> set[str]:
    """Tags of an If-None-Match header; a strong tag matches its weak twin too."""
    if not header:
        return set()
    tags = {t.strip() for t in header.split(",") if t.strip()}
    return tags | {f"W/{t}" for t in tags if not t.startswith("W/")}
