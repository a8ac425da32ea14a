"""One GitHub App across organisations (issue 21.1): without an installation id, each
organisation's run finds its own installation (`GET /orgs/{org}/installation`, with the App's
JWT, which the emulator checks), mints that installation's tokens and spends its budget; an
organisation without the App is one clear failure, never the others'."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from emulator import Dataset, GitHubEmulator
from flows.credentials import github_client
from flows.extract import land
from flows.summary import OrgResult, RunSummary, render_summary
from settings import Settings
from sources.github.auth import AppNotInstalled, TokenPool
from sources.github.errors import AuthenticationError

APP_ID = "12345"
INSTALLATIONS = {"acme": 101, "globex": 102}


def key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


PRIVATE, PUBLIC = key_pair()


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return Dataset.generate(orgs={"acme": 2, "globex": 1, "initech": 1}, prs_per_repo=8, seed=5, edge_cases=False)


@pytest.fixture
def emu(dataset: Dataset):
    # Only tokens the emulator minted are accepted: every request goes through the App.
    with GitHubEmulator(dataset, tokens=set(), app_id=APP_ID, app_public_key=PUBLIC,
                        app_installations=INSTALLATIONS) as emulator:
        yield emulator


def app_settings(emu: GitHubEmulator, tmp_path: Path, private_key: str = PRIVATE) -> Settings:
    return Settings(github_url=emu.url, data_dir=tmp_path, github_app_id=APP_ID, github_app_private_key=private_key)


def sync(settings: Settings, org: str):
    with github_client(settings, org=org) as client:
        return land(settings, org, client)


def test_each_organisation_spends_its_own_installations_budget(emu, dataset, tmp_path):
    settings = app_settings(emu, tmp_path)
    reports = {org: sync(settings, org) for org in INSTALLATIONS}

    for org, report in reports.items():
        assert report.rows["pull_requests"] == len(dataset.expected(org)["pull_requests"]) > 0
        assert report.credentials == [f"app-installation-{INSTALLATIONS[org]}"]
    # Each installation's requests under its own caller (its own REST and GraphQL budgets): the
    # repository and pull-request listings of its organisation only.
    by_caller = Counter(r.caller for r in emu.received() if r.path.startswith(("/orgs/", "/repos/", "/graphql")))
    assert set(by_caller) == {"installation:101", "installation:102", f"app:{APP_ID}"}
    listed = {caller: {r.path.split("/")[2] for r in emu.received() if r.caller == caller and r.path.startswith("/repos/")}
              for caller in ("installation:101", "installation:102")}
    assert listed == {"installation:101": {"acme"}, "installation:102": {"globex"}}
    for org, installation in INSTALLATIONS.items():
        body = emu._rate_limit_body(f"installation:{installation}")
        assert body["rate"]["used"] == reports[org].requests.cost  # each its own REST budget
    # The summary names the installation of each organisation.
    text = render_summary(RunSummary([OrgResult(org, landing=report) for org, report in reports.items()]))
    assert "through GitHub App installation 101" in text and "through GitHub App installation 102" in text
    # The installation is found once a process: a second run asks GitHub no more.
    found = emu.stats["by_endpoint"]["app_installation"]
    sync(settings, "acme")
    assert emu.stats["by_endpoint"]["app_installation"] == found


def test_an_organisation_without_the_app_fails_alone_naming_it(emu, dataset, tmp_path):
    settings = app_settings(emu, tmp_path)
    with pytest.raises(AppNotInstalled, match="the GitHub App 12345 is not installed on organisation initech"):
        sync(settings, "initech")
    assert sync(settings, "globex").rows["pull_requests"] == len(dataset.expected("globex")["pull_requests"])


def test_a_jwt_signed_with_another_key_is_refused(emu, tmp_path):
    other, _ = key_pair()
    with pytest.raises(AuthenticationError, match="401 from GET .*/orgs/acme/installation: A JSON web token"):
        sync(app_settings(emu, tmp_path, other), "acme")


def test_a_fixed_installation_id_keeps_working(emu, dataset, tmp_path):
    settings = app_settings(emu, tmp_path).model_copy(update={"github_app_installation_id": "102"})
    report = sync(settings, "globex")
    assert report.credentials == ["app-installation-102"]
    assert "app_installation" not in emu.stats["by_endpoint"]
    assert report.rows["pull_requests"] == len(dataset.expected("globex")["pull_requests"])


def test_a_credential_names_its_budget_never_its_value(emu, tmp_path):
    """The name of the Prefect concurrency limit an extract takes a slot of: runs that share a
    token or an installation share it, in any process; other credentials never."""
    settings = app_settings(emu, tmp_path)
    with github_client(settings, org="globex") as client:
        assert client.auth.budget_name() == "installation-102"  # found with the JWT first
    fixed = settings.model_copy(update={"github_app_installation_id": "101"})
    with github_client(fixed, org="globex") as client:
        assert client.auth.budget_name() == "installation-101"
    with github_client(settings, org="initech") as client, pytest.raises(AppNotInstalled):
        client.auth.budget_name()

    a, b = "ghp_" + "a" * 36, "ghp_" + "b" * 36
    assert TokenPool([a, b]).budget_name() == TokenPool([b, a]).budget_name()  # the same tokens
    assert len({TokenPool([a]).budget_name(), TokenPool([b]).budget_name(), TokenPool([a, b]).budget_name()}) == 3
    name = TokenPool([a]).budget_name()
    assert re.fullmatch(r"token-[0-9a-f]{12}", name) and "a" * 4 not in name.removeprefix("token-")
    assert TokenPool([]).budget_name() == "anonymous"


def test_an_app_uninstalled_since_it_was_found_fails_naming_it(emu, dataset, tmp_path):
    settings = app_settings(emu, tmp_path)
    sync(settings, "globex")  # found: installation 102, cached for the process
    del emu.app_installations["globex"]
    with pytest.raises(AppNotInstalled, match="not installed on organisation globex"):
        sync(settings, "globex")
    emu.app_installations["globex"] = 102


def test_a_fixed_installation_that_does_not_exist_is_named(emu, tmp_path):
    settings = app_settings(emu, tmp_path).model_copy(update={"github_app_installation_id": "999"})
    with pytest.raises(AuthenticationError, match="the GitHub App 12345 has no installation 999 "
                                                  r"\(PR_ANALYTICS_GITHUB_APP_INSTALLATION_ID\): 404 from POST"):
        sync(settings, "globex")
