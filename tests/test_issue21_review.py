"""Adversarial review of issue 21 (a GitHub App across organisations, the fleet, landing
retention). Each test fails on the reviewed code (commits ac6722a..d2e87fd) for the reason its
docstring gives, and passes once that defect is fixed."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from prefect import flow
from prefect.states import Completed

import flows.fleet as fleet
import flows.github_analytics as ga
from destinations.handoff import Handoff
from destinations.landing import Landing
from destinations.retention import DAY
from emulator import Dataset, GitHubEmulator
from fakes import FakeClock
from flows.credentials import github_client
from flows.extract import LandingReport, land
from landing_runs import (  # noqa: F401 - dataset, emu, fake and settings are shared fixtures
    ORG,
    dataset,
    emu,
    fake,
    merge_only,
    repo_names,
    run,
    settings,
)
from settings import Settings, pipeline_name
from sources.github.auth import GitHubAppAuth
from sources.github.client import GitHubClient
from test_app_installations import APP_ID, PRIVATE, PUBLIC
from test_retention import load_files, parquet_files, prune

PIPELINE = pipeline_name(ORG)


# -- 1. the GitHub App ----------------------------------------------------------------------


def test_a_reinstalled_app_is_found_again_instead_of_minting_for_the_stale_cached_installation(tmp_path):
    """The installation id found for an organisation is cached for the life of the process
    (`_INSTALLATIONS`) and never forgotten: after the App is uninstalled and installed again on
    the organisation (GitHub gives the new installation a new id), every later run in that
    process POSTs /app/installations/{old id}/access_tokens, gets 404, and the organisation fails
    with "404 from POST ..." although the App is installed; an uninstalled App likewise fails
    as a bare 404 instead of "not installed on organisation X"."""
    org = f"acme{uuid.uuid4().hex[:6]}"  # a key of its own in the process-wide cache
    dataset = Dataset.generate(orgs={org: 1}, prs_per_repo=3, seed=7, edge_cases=False)
    with GitHubEmulator(dataset, tokens=set(), app_id=APP_ID, app_public_key=PUBLIC,
                        app_installations={org: 301}) as emu:
        settings = Settings(github_url=emu.url, data_dir=tmp_path, github_app_id=APP_ID,
                            github_app_private_key=PRIVATE)
        with github_client(settings, org=org) as client:
            first = land(settings, org, client)
        assert first.credentials == ["app-installation-301"]
        emu.app_installations[org] = 302  # uninstalled, then installed again: a new installation

        with github_client(settings, org=org) as client:
            second = land(settings, org, client)  # raises AuthenticationError: 404 from POST .../301/...
        assert second.credentials == ["app-installation-302"]


def test_a_rejected_installation_token_is_minted_again(tmp_path):
    """An installation token GitHub rejects (401) is never replaced: `GitHubAppAuth` renews only
    by its own clock against the `expires_at` GitHub sent, and `_rejected` is the base class's
    `return False`. With the worker's clock 400 s behind GitHub's (or a token revoked, or a
    fresh token GitHub's replicas do not know yet) the token is used past its expiry and the
    organisation's run fails with 401 Bad credentials, where minting a new one would do."""
    clock = FakeClock(1_800_000_000.0)
    skew = 400.0  # GitHub's clock ahead of the worker's
    org = f"acme{uuid.uuid4().hex[:6]}"
    dataset = Dataset.generate(orgs={org: 1}, prs_per_repo=3, seed=7, edge_cases=False)
    with GitHubEmulator(dataset, tokens=set(), app_id=APP_ID, app_public_key=PUBLIC,
                        app_installations={org: 401}, clock=lambda: clock.now() + skew) as emu:
        settings = Settings(github_url=emu.url, data_dir=tmp_path, github_app_id=APP_ID,
                            github_app_private_key=PRIVATE, github_api_mode="rest")
        auth = GitHubAppAuth(APP_ID, PRIVATE, base_url=emu.url, org=org)
        with GitHubClient(emu.url, auth, clock=clock, max_concurrency=2) as client:
            land(settings, org, client)
            dataset.edit_title(org, dataset.repositories(org)[0]["name"], 1, "changed")
            clock.advance(3650)  # GitHub: the token expired 50 s ago; the worker: 50 s before renewal
            report = land(settings, org, client)  # raises AuthenticationError: 401 Bad credentials
        assert report.rows["pull_requests"] == 1


@pytest.mark.usefixtures("prefect_api")
def test_organisations_sharing_one_fixed_installation_share_one_concurrency_limit(tmp_path, monkeypatch):
    """With a fixed installation id (PR_ANALYTICS_GITHUB_APP_INSTALLATION_ID) every organisation
    spends that one installation's budget, yet `github_auth` passes `org` to GitHubAppAuth anyway
    and `extract_and_land` gives each organisation its own limit `github-api-app-{app}-{org}`
    (flows/github_analytics.py: `client.auth.org` is set whatever the installation id): the
    extracts sharing one credential no longer share one slot count across processes."""
    used: dict[str, str] = {}

    @contextmanager
    def recording(names, occupy=1, strict=False, **kwargs):
        used[current[0]] = names
        yield

    current = [""]

    def landed(settings, org, client, progress, **kwargs):
        return LandingReport(org, pipeline_name(org), [], {}, client.stats, progress, settings.landing,
                             str(settings.pipelines_dir))

    monkeypatch.setattr(ga, "concurrency", recording)
    monkeypatch.setattr(ga, "land", landed)
    settings = Settings(github_url="http://127.0.0.1:9", data_dir=tmp_path, github_app_id=APP_ID,
                        github_app_private_key=PRIVATE, github_app_installation_id="102")

    @flow
    def extracts() -> None:
        for org in ("acme", "globex"):
            current[0] = org
            ga.extract_and_land(settings, org)

    extracts()
    assert used["acme"] == used["globex"], used  # one installation, one budget: one limit


# -- 2. the fleet ---------------------------------------------------------------------------


def _fake_children(monkeypatch, states: dict, raising: dict | None = None) -> list[str]:
    """run_deployment and the wait replaced: each organisation's child ends in `states[org]`;
    run_deployment raises `raising[org]` for those. Returns the organisations started."""
    started: list[str] = []

    def run_deployment(name, parameters, **kwargs):
        org = parameters["orgs"][0]
        if raising and org in raising:
            raise raising[org]
        started.append(org)
        return SimpleNamespace(id=uuid.uuid4(), org=org)

    def wait_for(children, seconds):
        return {org: states[org] for org in children}

    monkeypatch.setattr(fleet, "run_deployment", run_deployment)
    monkeypatch.setattr(fleet, "_wait_for", wait_for)
    return started


@pytest.mark.usefixtures("prefect_api")
def test_a_fleet_whose_organisations_all_end_partial_is_partial_not_failed(tmp_path, monkeypatch):
    """A child that ends Partial (Completed, some items left on the retry list) landed and
    merged its organisation, and the fleet writes its report as completed, but `done` leaves
    Partial children out, so a fleet whose children all ended Partial ends Failed "no
    organisation completed" (flows/fleet.py), where one run of the same organisations would be
    Partial."""
    partial = Completed(name="Partial", message="1 repository on the retry list")
    _fake_children(monkeypatch, {"acme": partial, "globex": partial})

    state = fleet.github_analytics_fleet(orgs=["acme", "globex"], data_dir=tmp_path, return_state=True)

    assert (state.type.value, state.name) == ("COMPLETED", "Partial"), (state.type.value, state.name, state.message)


@pytest.mark.usefixtures("prefect_api")
def test_one_organisation_that_cannot_be_started_does_not_fail_the_fleet(tmp_path, monkeypatch):
    """`run_deployment` is called in a dict comprehension with nothing around it: when it
    raises for one organisation (the API refusing or timing out on that call), the parent flow
    fails on the spot, the children already started are neither waited for nor reported, and
    those after it are never started."""
    started = _fake_children(
        monkeypatch, {"acme": Completed(), "globex": Completed(), "initech": Completed()},
        raising={"globex": RuntimeError("Server error '503 Service Unavailable'")})

    state = fleet.github_analytics_fleet(orgs=["acme", "globex", "initech"], data_dir=tmp_path,
                                         return_state=True)

    assert started == ["acme", "initech"], started
    assert (state.type.value, state.name) == ("COMPLETED", "Partial"), (state.type.value, state.name, state.message)
    assert "globex" in state.message


@pytest.mark.usefixtures("prefect_api")
def test_the_fleet_starts_one_run_per_organisation_whatever_the_case(tmp_path, monkeypatch):
    """GitHub logins are case-insensitive and every run normalises them (Settings' `orgs`,
    `land`), but the fleet takes its `orgs` parameter as given: ["acme", "Acme"] starts two
    concurrent runs of one organisation, one dlt pipeline (github_acme), which docs/deployment.md
    says must not happen ("two runs of one organisation would race on its state")."""
    started = _fake_children(monkeypatch, {"acme": Completed(), "Acme": Completed()})

    fleet.github_analytics_fleet(orgs=["acme", "Acme"], data_dir=tmp_path, return_state=True)

    assert sorted(org.lower() for org in started) == ["acme"], started


# -- 3. retention ---------------------------------------------------------------------------


def test_a_merged_load_with_an_unreadable_manifest_neither_fails_the_prune_nor_blocks_the_others(
        settings, dataset, emu, fake):
    """`handoff.manifest(load_id)` is called outside the prune's try (destinations/retention.py):
    one merged load whose manifest cannot be read (UnreadableHandoff; an OSError from storage
    likewise) raises out of `prune_merged_loads`, so the merge task that calls it fails after
    its merge committed, on every run, and no later load is ever pruned."""
    first = run(settings, emu, fake).load_ids
    merge_only(settings)
    dataset.edit_title(ORG, repo_names(dataset)[0], 2, "changed")
    second = run(settings, emu, fake).load_ids
    merge_only(settings)
    assert len(first) == len(second) == 1
    handoff = Handoff(Landing(settings.landing), PIPELINE)
    Path(handoff.folder, f"{first[0]}.json").write_text("")  # unreadable, as the handoff knows them
    second_files = load_files(settings, second[0])

    report = prune(settings, 1, float(second[0]) + 2 * DAY)  # raises UnreadableHandoff

    assert report.loads_pruned == [second[0]] and first[0] in report.failed
    assert not second_files & parquet_files(settings)
