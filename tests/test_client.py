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
    REDACTED,
    AuthenticationError,
    GitHubClientError,
    GitHubServerError,
    InvalidCredential,
    NotFoundError,
    RateLimitExhausted,
    redact,
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


# -- a rejected token in a pool ---------------------------------------------------------------

SECRET3 = "ghp_THIRDthirdTHIRD789"


def test_401_for_one_token_of_three_drops_it_and_resends_with_another(mock, clock, caplog):
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == f"Bearer {SECRET2}":
            return httpx.Response(401, json={"message": "Bad credentials"})
        return httpx.Response(200, json=[{"ok": 1}])

    route = mock.get("/x").mock(side_effect=answer)
    with caplog.at_level(logging.DEBUG), make(clock, tokens=(SECRET, SECRET2, SECRET3)) as client:
        for _ in range(6):
            assert client.get_page("/x").items == [{"ok": 1}]
        stats = client.stats
    used = [c.request.headers["Authorization"].removeprefix("Bearer ") for c in route.calls]
    assert used == [SECRET, SECRET2, SECRET3, SECRET, SECRET3, SECRET, SECRET3]
    assert stats.requests == 7 and stats.by_status == {200: 6, 401: 1} and stats.retries == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "token-2 of 3 was rejected (401 Bad credentials); continuing with 2 token(s)"
    ]
    assert not any(s in caplog.text for s in (SECRET, SECRET2, SECRET3))


def test_authentication_error_only_when_no_token_is_left(mock, clock):
    route = mock.get("/x").respond(401, json={"message": "Bad credentials"})
    with make(clock, tokens=(SECRET, SECRET2, SECRET3)) as client:
        with pytest.raises(AuthenticationError, match="401.*Bad credentials"):
            client.get_page("/x")
        assert route.call_count == 3  # token-1, token-2 dropped; token-3 is the last: raise
        with pytest.raises(AuthenticationError):
            client.get_page("/x")
        assert route.call_count == 4  # nothing left to fall back to: at once
    assert clock.sleeps == []


def test_app_installation_401_mints_one_new_token_then_is_authentication_error(mock, clock, rsa_key):
    minted = mock.post("/app/installations/42/access_tokens").respond(
        201, json={"token": "ghs_installationTOKEN", "expires_at": _iso(T0 + 3600)}
    )
    route = mock.get("/x").respond(401, json={"message": "Bad credentials"})
    with GitHubClient(auth=GitHubAppAuth("1", rsa_key[0], 42, API), clock=clock) as client:
        with pytest.raises(AuthenticationError, match="401.*Bad credentials"):
            client.get_page("/x")
    # A refused token may be revoked or expired by GitHub's clock: one new one, then the answer.
    assert minted.call_count == 2 and route.call_count == 2


# -- secondary limits and the gate ------------------------------------------------------------


def test_secondary_limit_on_one_token_lets_the_others_go_on(mock, clock):
    answers = {f"Bearer {SECRET}": [httpx.Response(429, headers={"retry-after": "30"})]}

    def answer(request: httpx.Request) -> httpx.Response:
        queued = answers.get(request.headers["Authorization"])
        return queued.pop(0) if queued else httpx.Response(200, json=[])

    route = mock.get("/x").mock(side_effect=answer)
    with make(clock, tokens=(SECRET, SECRET2)) as client:
        for _ in range(3):
            client.get_page("/x")
        assert client.stats.retries == 1 and client.stats.rate_limit_waits == 0
        used = [c.request.headers["Authorization"].removeprefix("Bearer ") for c in route.calls]
        assert used == [SECRET, SECRET2, SECRET2, SECRET2]  # token-1 paused for 30 s: no wait
        assert clock.sleeps == []
        clock.advance(30)
        client.get_page("/x")
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {SECRET}"


def test_gate_one_sleep_pauses_every_waiting_thread(clock):
    from sources.github.ratelimit import RateLimitGate

    gate = RateLimitGate("token-1")
    gate.close_until(T0 + 45)
    slept: list[float] = []
    threads = [threading.Thread(target=lambda: slept.append(gate.wait(clock, 600, "/x"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock.sleeps == [45.0] and sorted(slept) == [0.0] * 7 + [45.0]
    assert gate.is_open(clock.now())
    gate.close_until(T0 + 10)  # a pause is never shortened, and a past one changes nothing
    assert gate.wait(clock, 600, "/x") == 0.0
    gate.close_until(clock.now() + 700)
    with pytest.raises(RateLimitExhausted, match="token-1 is paused until .* max_rate_limit_wait=600"):
        gate.wait(clock, 600, "/x")
    assert clock.sleeps == [45.0]


def test_451_is_a_client_error_with_its_status(mock, clock):
    mock.get("/repos/o/blocked").respond(451, json={"message": "Repository access blocked"})
    with make(clock) as client, pytest.raises(GitHubClientError, match="451.*Repository access blocked") as info:
        client.get_page("/repos/o/blocked")
    assert info.value.status == 451 and not isinstance(info.value, (AuthenticationError, NotFoundError))


# -- malformed tokens and redaction -----------------------------------------------------------


@pytest.mark.parametrize(
    "bad,problem",
    [
        ("ghp_abc\ndef", "contains a control character (newline)"),
        ("ghp_abc\rdef", "contains a control character (carriage return)"),
        ("ghp_abc\x00def", "contains a control character (NUL)"),
        ("ghp_abc def", "contains whitespace (space)"),
        ("ghp_abc\tdef", "contains whitespace (tab)"),
        ("ghp_abcédef", "contains a non-ASCII character (U+00E9)"),
    ],
)
def test_token_pool_refuses_a_malformed_token_without_quoting_it(bad, problem):
    with pytest.raises(InvalidCredential) as info:
        TokenPool(["ghp_fine", bad])
    assert str(info.value) == f"TokenPool: token 2 {problem}"
    assert isinstance(info.value, AuthenticationError)  # permanent: the flow does not retry it
    assert "abc" not in repr(info.value)


def test_token_pool_strips_surrounding_whitespace(mock, clock):
    route = mock.get("/x").respond(200, json=[])
    with make(clock, tokens=(f"  {SECRET}\n",)) as client:
        client.get_page("/x")
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {SECRET}"
    assert len(TokenPool.from_env(f" {SECRET} , ,{SECRET2}\n")) == 2


def test_redact_replaces_plain_and_escaped_forms():
    secret = "ghp_abc\ndef"
    text = f"Illegal header value b'Bearer {secret!r}' / {secret} / {secret.encode()!r} / ghp_other"
    redacted = redact(text, [secret, "", "ghp_other"])
    assert "abc" not in redacted and "def" not in redacted and "ghp_other" not in redacted
    assert redacted.count(REDACTED) == 4


def test_httpx_error_quoting_the_token_is_redacted_and_not_retried(mock, clock):
    leak = httpx.LocalProtocolError(f"Illegal header value b'Bearer {SECRET}'")
    route = mock.get("/x").mock(side_effect=leak)
    with make(clock) as client, pytest.raises(GitHubClientError, match=r"Illegal header value b'Bearer \*\*\*'") as info:
        client.get_page("/x")
    assert route.call_count == 1 and clock.sleeps == []
    chain = [info.value, info.value.__cause__, info.value.__context__]
    assert not any(SECRET in f"{e} {e!r}" for e in chain if e is not None)


def test_every_error_leaving_the_client_is_redacted(mock, clock):
    mock.get("/fault").mock(side_effect=httpx.ConnectError(f"cannot connect with {SECRET2}"))
    mock.get("/odd").mock(side_effect=RuntimeError(f"unexpected {SECRET}"))
    mock.get("/echo").respond(422, json={"message": f"token {SECRET} is not valid here"})
    with make(clock, tokens=(SECRET, SECRET2), max_retries=1) as client:
        for path, error in (("/fault", GitHubServerError), ("/odd", GitHubClientError), ("/echo", GitHubClientError)):
            with pytest.raises(error) as info:
                client.get_page(path)
            assert "***" in str(info.value)
            chain, link = [], info.value
            while link is not None:
                chain.append(link)
                link = link.__cause__ or link.__context__
            assert not any(s in f"{e} {e!r}" for e in chain for s in (SECRET, SECRET2)), path


def test_app_installation_token_is_redacted_too(mock, clock, rsa_key):
    mock.post("/app/installations/42/access_tokens").respond(
        201, json={"token": "ghs_installationTOKEN", "expires_at": _iso(T0 + 3600)}
    )
    mock.get("/x").respond(422, json={"message": "ghs_installationTOKEN is echoed back"})
    with GitHubClient(auth=GitHubAppAuth("1", rsa_key[0], 42, API), clock=clock) as client:
        with pytest.raises(GitHubClientError) as info:
            client.get_page("/x")
    assert "ghs_installationTOKEN" not in str(info.value) and "*** is echoed back" in str(info.value)


def test_spent_budget_whose_reset_already_passed_pauses_a_second_not_a_minute(mock, clock):
    """A stale 403 (another thread already waited out its reset, or the clocks disagree) is a
    primary limit, not a secondary one: no minute-long backoff, no hot loop either."""
    mock.get("/x").mock(
        side_effect=[
            httpx.Response(403, json={"message": "API rate limit exceeded"}, headers=limits(0, T0 - 5)),
            httpx.Response(403, json={"message": "API rate limit exceeded"}, headers=limits(0, T0 - 5)),
            httpx.Response(200, json=[], headers=limits(4999, T0 + 3600)),
        ]
    )
    with make(clock, max_retries=0) as client:
        client.get_page("/x")
    assert clock.sleeps == [1.0, 1.0]


def test_secondary_limits_heard_during_a_pause_do_not_lengthen_it(clock):
    """Answers to requests that were in flight when the pause began (GitHub refuses them all)
    are one episode: the backoff doubles only when a request sent after the pause is refused."""
    pool = TokenPool([SECRET])
    pool.configure(clock, max_wait=3600, secondary_backoff=60, on_wait=None)
    flow_request = httpx.Request("GET", f"{API}/x")
    refused = {"message": "You have exceeded a secondary rate limit."}
    token = pool.choose(T0)
    for _ in range(4):  # four answers to requests already in flight
        pool._observe(token, httpx.Response(403, json=refused, headers=limits(4000), request=flow_request))
    assert T0 + 60 <= token.gate.reopens_at() <= T0 + 75
    clock.sleep(token.gate.reopens_at() - clock.now())
    pool._observe(token, httpx.Response(403, json=refused, headers=limits(3999), request=flow_request))
    assert 120 <= token.gate.reopens_at() - clock.now() <= 150


def test_app_token_minted_after_a_refusal_and_revoked_much_later_is_minted_again(mock, clock, rsa_key):
    minted = mock.post("/app/installations/42/access_tokens").mock(side_effect=[
        httpx.Response(201, json={"token": f"ghs_installationTOKEN{n}", "expires_at": _iso(T0 + 3600)})
        for n in range(1, 5)])
    answers = iter([401, 200, 401, 200])  # token 1 refused, token 2 works; 20 minutes later token 2 is refused
    route = mock.get("/x").mock(side_effect=lambda request: httpx.Response(next(answers), json=[]))
    with GitHubClient(auth=GitHubAppAuth("1", rsa_key[0], 42, API), clock=clock) as client:
        client.get_page("/x")
        clock.advance(1200)
        client.get_page("/x")
    assert minted.call_count == 3 and route.call_count == 4


def test_a_token_given_twice_is_one_token():
    token = "ghp_" + "c" * 36
    assert len(TokenPool([token, token])) == 1 and TokenPool([token, token]).budget_name() == TokenPool([token]).budget_name()
