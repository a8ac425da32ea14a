"""GitHubClient against respx-mocked GitHub, with a fake clock (no real sleeping)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fakes import FakeClock
from sources.github.auth import GitHubAppAuth, TokenPool
from sources.github.client import GitHubClient, Page
from sources.github.errors import (
    AuthenticationError,
    GitHubClientError,
    GitHubServerError,
    NotFoundError,
    RateLimitExhausted,
)

API = "https://api.github.com"
T0 = 1_700_000_000.0
SECRET = "ghp_SECRETsecretSECRET123"
SECRET2 = "ghp_OTHERotherOTHER456"


def limits(remaining: int, reset: float = T0 + 600) -> dict[str, str]:
    return {"x-ratelimit-remaining": str(remaining), "x-ratelimit-reset": str(int(reset))}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def mock():
    with respx.mock(base_url=API, assert_all_called=False) as router:
        yield router


def make(clock: FakeClock, tokens=(SECRET,), **kwargs) -> GitHubClient:
    return GitHubClient(auth=TokenPool(list(tokens)), clock=clock, **kwargs)


# -- pagination and conditional requests ------------------------------------------------------


def test_follows_link_next_to_the_end(mock, clock):
    mock.get("/repos/o/r/pulls", params={"page": "2"}).respond(
        200, json=[{"n": 3}], headers={"Link": f'<{API}/repos/o/r/pulls?page=3>; rel="next"'}
    )
    mock.get("/repos/o/r/pulls", params={"page": "3"}).respond(200, json=[{"n": 4}])
    first = mock.get("/repos/o/r/pulls", params={"per_page": "100"}).respond(
        200,
        json=[{"n": 1}, {"n": 2}],
        headers={"Link": f'<{API}/repos/o/r/pulls?page=2>; rel="next", <{API}/repos/o/r/pulls?page=3>; rel="last"',
                 "ETag": 'W/"abc"'},
    )
    with make(clock) as client:
        pages = list(client.iter_pages("/repos/o/r/pulls", {"per_page": 100}))
        assert [len(p.items) for p in pages] == [2, 1, 1]
        assert pages[0].etag == 'W/"abc"' and pages[0].next_url == f"{API}/repos/o/r/pulls?page=2"
        assert pages[-1].next_url is None
        assert client.get_all("/repos/o/r/pulls", {"per_page": 100}) == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
        assert client.stats.requests == 6 and client.stats.cost == 6
    assert first.calls.last.request.headers["Authorization"] == f"Bearer {SECRET}"
    assert first.calls.last.request.headers["X-GitHub-Api-Version"] == "2022-11-28"


def test_not_modified_returns_empty_page_and_costs_nothing(mock, clock):
    route = mock.get("/repos/o/r/pulls").respond(304, headers=limits(4999))
    with make(clock) as client:
        pages = list(client.iter_pages("/repos/o/r/pulls", etag='W/"abc"'))
        assert pages == [Page(items=[], url=f"{API}/repos/o/r/pulls", next_url=None, etag='W/"abc"', not_modified=True)]
        stats = client.stats
    assert route.calls.last.request.headers["If-None-Match"] == 'W/"abc"'
    assert (stats.requests, stats.not_modified, stats.cost, stats.by_status) == (1, 1, 0, {304: 1})


def test_single_object_becomes_one_item(mock, clock):
    mock.get("/repos/o/r/pulls/1").respond(200, json={"number": 1, "additions": 3})
    with make(clock) as client:
        assert client.get_page("/repos/o/r/pulls/1").items == [{"number": 1, "additions": 3}]


def test_base_url_with_path_prefix(clock):
    with respx.mock() as router:
        route = router.get("https://ghe.example.com/api/v3/orgs/x/repos").respond(200, json=[])
        with GitHubClient("https://ghe.example.com/api/v3/", clock=clock) as client:
            client.get_page("/orgs/x/repos")
        assert route.called and "Authorization" not in route.calls.last.request.headers


# -- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        httpx.Response(502, text="Bad Gateway"),
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectError("connection refused"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx.Response(200, text='[{"n": 1}, {"n"'),  # truncated JSON
    ],
    ids=["502", "timeout", "connect", "dropped", "truncated-json"],
)
def test_transient_fault_then_success(mock, clock, fault):
    route = mock.get("/x").mock(side_effect=[fault, httpx.Response(200, json=[{"n": 1}])])
    with make(clock) as client:
        assert client.get_page("/x").items == [{"n": 1}]
        assert client.stats.retries == 1
    assert route.call_count == 2
    assert len(clock.sleeps) == 1 and 0 <= clock.sleeps[0] <= 1.0  # backoff_base * 2**0, full jitter


def test_retries_exhausted_raises_server_error(mock, clock):
    route = mock.get("/x").respond(503, json={"message": "Service Unavailable"})
    with make(clock, max_retries=3, backoff_base=10) as client:
        with pytest.raises(GitHubServerError, match=r"/x.*503.*Service Unavailable"):
            client.get_page("/x")
    assert route.call_count == 4
    assert len(clock.sleeps) == 3
    assert all(0 <= s <= cap for s, cap in zip(clock.sleeps, [10, 20, 40]))


def test_backoff_is_capped_at_60_seconds(mock, clock):
    mock.get("/x").mock(side_effect=httpx.ConnectError("down"))
    with make(clock, max_retries=4, backoff_base=100) as client:
        with pytest.raises(GitHubServerError, match="ConnectError: down"):
            client.get_page("/x")
    assert max(clock.sleeps) <= 60


def test_401_is_authentication_error_without_retry(mock, clock):
    route = mock.get("/x").respond(401, json={"message": "Bad credentials"})
    with make(clock) as client, pytest.raises(AuthenticationError, match="401.*Bad credentials"):
        client.get_page("/x")
    assert route.call_count == 1 and clock.sleeps == []


def test_403_permission_is_authentication_error(mock, clock):
    mock.get("/x").respond(403, json={"message": "Resource not accessible by integration"}, headers=limits(4000))
    with make(clock) as client, pytest.raises(AuthenticationError, match="Resource not accessible"):
        client.get_page("/x")
    assert clock.sleeps == []


@pytest.mark.parametrize("status,error", [(404, NotFoundError), (410, NotFoundError), (422, GitHubClientError)])
def test_client_errors(mock, clock, status, error):
    route = mock.get("/repos/o/gone").respond(status, json={"message": "Not Found"})
    with make(clock) as client, pytest.raises(error, match=f"{status}.*/repos/o/gone.*Not Found") as info:
        client.get_page("/repos/o/gone")
    assert info.value.status == status and route.call_count == 1


# -- rate limits ------------------------------------------------------------------------------


def test_429_with_retry_after_waits_exactly_that(mock, clock):
    mock.get("/x").mock(
        side_effect=[httpx.Response(429, headers={"retry-after": "17"}), httpx.Response(200, json=[])]
    )
    with make(clock) as client:
        client.get_page("/x")
        assert client.stats.rate_limit_waits == 1
    assert clock.sleeps == [17.0]


def test_secondary_403_without_retry_after_backs_off_at_least_a_minute(mock, clock):
    secondary = {"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}
    mock.get("/x").mock(
        side_effect=[
            httpx.Response(403, json=secondary, headers=limits(4000)),
            httpx.Response(403, json=secondary, headers=limits(3999)),
            httpx.Response(200, json=[]),
        ]
    )
    with make(clock) as client:
        client.get_page("/x")
    assert len(clock.sleeps) == 2
    assert 60 <= clock.sleeps[0] <= 75 and 120 <= clock.sleeps[1] <= 150


def test_secondary_limit_bounded_by_max_retries(mock, clock):
    mock.get("/x").respond(429, json={"message": "secondary rate limit"})
    with make(clock, max_retries=2) as client, pytest.raises(RateLimitExhausted):
        client.get_page("/x")
    assert len(clock.sleeps) == 2


def test_primary_limit_waits_until_reset_then_succeeds(mock, clock, caplog):
    reset = T0 + 120
    route = mock.get("/x").mock(
        side_effect=[
            httpx.Response(403, json={"message": "API rate limit exceeded"}, headers=limits(0, reset)),
            httpx.Response(200, json=[{"ok": 1}], headers=limits(4999, reset + 3600)),
        ]
    )
    with make(clock, max_retries=0) as client, caplog.at_level(logging.WARNING, "sources.github.client"):
        assert client.get_page("/x").items == [{"ok": 1}]  # max_retries=0: a primary wait is not a retry
        assert client.rate_limit_remaining == 4999
        assert client.stats.rate_limit_waits == 1
    assert clock.sleeps == [121.0] and route.call_count == 2
    assert "resuming at 2023-11-14T22:15:21+00:00" in caplog.text


def test_exhausted_budget_seen_on_a_200_waits_before_the_next_request(mock, clock):
    mock.get("/a").respond(200, json=[], headers=limits(0, T0 + 30))
    mock.get("/b").respond(200, json=[], headers=limits(4999))
    with make(clock) as client:
        client.get_page("/a")
        client.get_page("/b")
    assert clock.sleeps == [31.0]


def test_reset_beyond_max_wait_raises_without_sleeping(mock, clock):
    reset = T0 + 3000
    mock.get("/x").respond(429, headers=limits(0, reset))
    with make(clock, max_rate_limit_wait=600) as client:
        with pytest.raises(RateLimitExhausted) as info:
            client.get_page("/x")
    assert info.value.reset_at == reset and clock.sleeps == []


def test_two_tokens_exhausted_one_is_skipped_without_waiting(mock, clock):
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == f"Bearer {SECRET}":
            return httpx.Response(403, json={"message": "API rate limit exceeded"}, headers=limits(0))
        return httpx.Response(200, json=[], headers=limits(4000))

    route = mock.get("/x").mock(side_effect=answer)
    with make(clock, tokens=(SECRET, SECRET2)) as client:
        for _ in range(4):
            client.get_page("/x")
        assert client.rate_limit_remaining == 4000
    used = [c.request.headers["Authorization"] for c in route.calls]
    assert used == [f"Bearer {SECRET}"] + [f"Bearer {SECRET2}"] * 4
    assert clock.sleeps == []


def test_pool_round_robins_and_prefers_most_budget():
    pool = TokenPool(["a", "b", "c"])
    assert [pool.choose(T0).name for _ in range(3)] == ["token-1", "token-2", "token-3"]
    one, two, three = (pool.choose(T0) for _ in range(3))
    one.record(10, T0 + 60, T0)
    two.record(500, T0 + 60, T0)
    three.record(0, T0 + 60, T0)
    assert pool.choose(T0).name == "token-2"
    two.record(0, T0 + 90, T0)
    one.record(0, T0 + 45, T0)
    paused = pool.choose(T0)
    assert paused.name == "token-1" and paused.gate.reopens_at() == T0 + 46  # all spent: the soonest reset
    assert pool.choose(T0 + 46).name == "token-1" and pool.choose(T0 + 46).gate.is_open(T0 + 46)
    assert pool.remaining() is not None


def test_tokens_never_logged_nor_in_errors(mock, clock, caplog):
    mock.get("/fault").mock(side_effect=httpx.ConnectError("down"))
    mock.get("/denied").respond(401, json={"message": "Bad credentials"})
    mock.get("/limited").respond(429, headers=limits(0, T0 + 99_999))
    mock.get("/ok").respond(200, json=[])
    errors = []
    with caplog.at_level(logging.DEBUG), make(clock, tokens=(SECRET, SECRET2), max_retries=1) as client:
        client.get_page("/ok")
        for path in ("/fault", "/denied", "/limited"):
            with pytest.raises(Exception) as info:
                client.get_page(path)
            errors.append(info.value)
        texts = [r.getMessage() for r in caplog.records] + [str(e) + repr(e) for e in errors]
        texts += [repr(client), repr(client.auth), repr(client.auth.choose(T0))]
    assert any("/ok" in r.getMessage() for r in caplog.records)  # DEBUG per request
    for text in texts:
        assert SECRET not in text and SECRET2 not in text


# -- GitHub App -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private, public


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_app_auth_signs_jwt_and_caches_installation_token(mock, clock, rsa_key):
    private, public = rsa_key
    minted = iter(["ghs_first", "ghs_second"])

    def mint(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"token": next(minted), "expires_at": _iso(clock.now() + 3600)})

    token_route = mock.post("/app/installations/42/access_tokens").mock(side_effect=mint)
    api = mock.get("/x").respond(200, json=[], headers=limits(14000))
    app = GitHubAppAuth("12345", private, 42, API)
    with GitHubClient(auth=app, clock=clock) as client:
        client.get_page("/x")
        client.get_page("/x")
        assert token_route.call_count == 1
        clock.sleep(3600 - 301)  # not yet within 5 minutes of expiry
        client.get_page("/x")
        assert token_route.call_count == 1
        clock.sleep(2)  # now inside the renewal window
        client.get_page("/x")
        assert token_route.call_count == 2
        assert client.rate_limit_remaining == 14000

    assert [c.request.headers["Authorization"] for c in api.calls] == ["Bearer ghs_first"] * 3 + ["Bearer ghs_second"]
    sent = token_route.calls[0].request.headers["Authorization"].removeprefix("Bearer ")
    assert jwt.get_unverified_header(sent)["alg"] == "RS256"
    claims = jwt.decode(sent, public, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
    assert claims["iss"] == "12345"
    assert claims["iat"] == int(T0) - 60 and claims["exp"] == int(T0) + 540
    assert "ghs_" not in repr(app) and "PRIVATE" not in repr(app)


def test_app_auth_rejected_is_authentication_error(mock, clock, rsa_key):
    mock.post("/app/installations/42/access_tokens").respond(401, json={"message": "A JSON web token could not be decoded"})
    with GitHubClient(auth=GitHubAppAuth("1", rsa_key[0], "42", API), clock=clock) as client:
        with pytest.raises(AuthenticationError, match="JSON web token"):
            client.get_page("/x")


def test_app_auth_thread_safe_single_fetch(mock, clock, rsa_key):
    def slow_mint(request: httpx.Request) -> httpx.Response:
        time.sleep(0.05)
        return httpx.Response(201, json={"token": "ghs_t", "expires_at": _iso(T0 + 3600)})

    route = mock.post("/app/installations/7/access_tokens").mock(side_effect=slow_mint)
    app = GitHubAppAuth("1", rsa_key[0], 7, API)
    threads = [threading.Thread(target=app.choose, args=(T0,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert route.call_count == 1
    app.close()


# -- concurrency ------------------------------------------------------------------------------


def test_concurrency_bound_is_respected(mock, clock):
    in_flight = peak = 0
    lock = threading.Lock()

    def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.02)
        with lock:
            in_flight -= 1
        return httpx.Response(200, json=[])

    mock.get("/x").mock(side_effect=slow)
    with make(clock, max_concurrency=3) as client:
        threads = [threading.Thread(target=client.get_page, args=("/x",)) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert client.stats.requests == 12
    assert peak == 3


@pytest.mark.parametrize("bad", [0, 101])
def test_concurrency_validated(bad):
    with pytest.raises(ValueError, match="max_concurrency"):
        GitHubClient(max_concurrency=bad)


def test_retry_after_beyond_max_wait_raises_without_sleeping(mock, clock):
    mock.get("/x").respond(403, headers={"retry-after": "7200"}, json={"message": "secondary rate limit"})
    with make(clock, max_rate_limit_wait=600) as client, pytest.raises(RateLimitExhausted) as info:
        client.get_page("/x")
    assert clock.sleeps == [] and info.value.reset_at == T0 + 7200


def test_app_token_endpoint_fault_is_retried(mock, clock, rsa_key):
    mock.post("/app/installations/42/access_tokens").mock(
        side_effect=[httpx.Response(502), httpx.Response(201, json={"token": "ghs_t", "expires_at": _iso(T0 + 3600)})]
    )
    mock.get("/x").respond(204)
    with GitHubClient(auth=GitHubAppAuth("1", rsa_key[0], 42, API), clock=clock) as client:
        assert client.get_page("/x").items == []
        assert client.stats.retries == 1
