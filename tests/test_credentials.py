"""Credentials are checked where they are read: a malformed token fails at once, permanently,
with a message naming its source and position and never its value."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from emulator import Dataset, GitHubEmulator
from fakes import FakeClock
from flows.github_analytics import is_permanent, read_github_token
from flows.credentials import github_auth
from flows.extract import land
from settings import ConfigurationError, Settings
from sources.github.auth import TokenPool
from sources.github.client import GitHubClient
from sources.github.errors import GitHubClientError, InvalidCredential

ORG = "acme"
T0 = 1_800_000_000.0
GOOD = "ghp_GOODgoodGOOD111"
BAD = "ghp_BADbad\nBAD222"  # a copy-paste accident: a newline inside


def _texts(exc: BaseException) -> list[str]:
    texts, link = [], exc
    while link is not None:
        texts += [str(link), repr(link)]
        link = link.__cause__ or link.__context__
    return texts


def _assert_never_quoted(exc: BaseException, *values: str) -> None:
    for text in _texts(exc):
        for value in values:
            for part in value.split("\n"):
                assert part not in text, text


@pytest.mark.parametrize(
    "env,value,message",
    [
        ("GITHUB_TOKENS", f"{GOOD},{BAD}", "GITHUB_TOKENS: token 2 contains a control character (newline)"),
        ("GITHUB_TOKENS", f"{GOOD}, ghp_x\ty ,{GOOD}", "GITHUB_TOKENS: token 2 contains whitespace (tab)"),
        ("GITHUB_TOKEN", "ghp_CR\rBAD", "GITHUB_TOKEN: the token contains a control character (carriage return)"),
        ("GITHUB_TOKEN", "ghp_two words", "GITHUB_TOKEN: the token contains whitespace (space)"),
    ],
)
def test_settings_refuse_a_malformed_token_naming_variable_and_position(monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert message in str(info.value)
    assert is_permanent(info.value)
    _assert_never_quoted(info.value, value.replace(GOOD, "").replace(",", ""))


def test_settings_strip_surrounding_whitespace(monkeypatch):
    monkeypatch.setenv("GITHUB_TOKENS", f"  {GOOD}\n , ,ghp_OTHER\r\n")
    monkeypatch.setenv("GITHUB_TOKEN", f"\t{GOOD} \n")
    settings = Settings()
    assert [t.get_secret_value() for t in settings.github_tokens] == [GOOD, "ghp_OTHER"]
    assert settings.github_token is not None and settings.github_token.get_secret_value() == GOOD
    assert Settings(github_tokens=[f" {GOOD} "]).github_tokens[0].get_secret_value() == GOOD


def test_settings_check_the_app_private_key_and_ids():
    with pytest.raises(ValidationError, match=r"github_app_private_key contains a control character \(U\+0000\)") as info:
        Settings(github_app_private_key="-----BEGIN PRIVATE KEY-----\nMII\x00secret\n-----END PRIVATE KEY-----")
    assert "MII" not in str(info.value)
    with pytest.raises(ValidationError, match="not a PEM private key"):
        Settings(github_app_private_key="ghp_pasted_the_wrong_thing")
    with pytest.raises(ValidationError, match="github_app_installation_id must be letters, digits or dots"):
        Settings(github_app_installation_id="12 34")
    key = "\n-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n\n"
    settings = Settings(github_app_id=" 123 ", github_app_installation_id=678, github_app_private_key=key)
    assert settings.github_app_id == "123" and settings.github_app_installation_id == "678"
    assert settings.github_app_private_key.get_secret_value() == key.strip()


def test_dlt_secrets_token_is_checked_and_named(monkeypatch, tmp_path):
    monkeypatch.setenv("SOURCES__GITHUB__ACCESS_TOKEN", BAD)
    with pytest.raises(InvalidCredential) as info:
        github_auth(Settings(data_dir=tmp_path))
    assert str(info.value) == (
        "sources.github.access_token (.dlt/secrets.toml): token 1 contains a control character (newline)"
    )
    assert is_permanent(info.value)
    _assert_never_quoted(info.value, BAD)


@pytest.mark.parametrize(
    "payload,message",
    [
        (f"{BAD}\n".encode(), "GcpSecret block 'github-token': the token contains a control character (newline)"),
        (b"ghp_\x00nul", "GcpSecret block 'github-token': the token contains a control character (NUL)"),
        (b" \n", "GcpSecret block 'github-token' holds an empty secret"),
    ],
)
def test_gcp_secret_token_is_checked_and_named(monkeypatch, payload, message):
    from prefect_gcp.secret_manager import GcpSecret

    monkeypatch.setattr(GcpSecret, "load", classmethod(lambda cls, name: SimpleNamespace(read_secret=lambda: payload)))
    settings = Settings(github_token_secret_block="github-token")
    with pytest.raises(ConfigurationError) as info:
        read_github_token(settings)
    assert str(info.value) == message
    assert is_permanent(info.value)
    _assert_never_quoted(info.value, payload.decode().strip() or "never")


def test_gcp_secret_token_is_stripped(monkeypatch):
    from prefect_gcp.secret_manager import GcpSecret

    monkeypatch.setattr(GcpSecret, "load", classmethod(lambda cls, name: SimpleNamespace(read_secret=lambda: f" {GOOD}\r\n".encode())))
    assert read_github_token(Settings(github_token_secret_block="github-token")) == GOOD


@pytest.fixture
def emu():
    dataset = Dataset.generate(orgs={ORG: 1}, prs_per_repo=[3], seed=1, edge_cases=False)
    with GitHubEmulator(dataset, clock=FakeClock(T0).now) as emulator:
        yield emulator


def test_land_with_a_malformed_token_in_code_fails_before_any_request(emu, tmp_path: Path):
    settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path)
    with pytest.raises(InvalidCredential) as info:
        with GitHubClient(emu.url, TokenPool([GOOD, BAD]), clock=FakeClock(T0)) as client:
            land(settings, ORG, client)
    assert str(info.value) == "TokenPool: token 2 contains a control character (newline)"
    assert is_permanent(info.value)
    _assert_never_quoted(info.value, BAD)
    assert emu.stats["requests"] == 0


def test_a_token_httpx_refuses_to_send_is_redacted_and_permanent(emu, tmp_path: Path, caplog):
    """Defence in depth: should a malformed value ever reach the wire, httpx's own error (which
    quotes the header) leaves the client redacted, as a permanent error, after no retries."""
    pool = TokenPool([GOOD])
    pool._tokens.append(BAD)  # bypass the check, as a future code path might
    pool.choose(T0).authorization = f"Bearer {BAD}"
    clock = FakeClock(T0)
    settings = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path)
    with GitHubClient(emu.url, pool, clock=clock) as client:
        with pytest.raises(GitHubClientError, match="cannot be sent: LocalProtocolError") as info:
            land(settings, ORG, client)
    assert "***" in str(info.value)
    assert is_permanent(info.value)
    _assert_never_quoted(info.value, BAD)
    assert not any(part in caplog.text for part in BAD.split("\n"))
    assert clock.sleeps == [] and emu.stats["requests"] == 0
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):  # dlt's state and trace included
        data = path.read_bytes()
        assert not any(part.encode() in data for part in BAD.split("\n")), path
