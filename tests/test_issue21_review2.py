"""Second adversarial review of issue 21 (commits 7f1c6b6^..21069d4): the fleet's guard against
two runs of one organisation, and a run lost between dlt's state file and its load record. Each
test failed on the reviewed code for the reason its docstring gives. (The third finding, the
automation crashing other flows' live runs, is checked in tests/test_fleet.py's lost-worker test.)

One real `prefect server start` for the module, with automations.yaml created on it as
docs/deployment.md says."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import flows.fleet as fleet
from landing_runs import (  # noqa: F401 - dataset, emu and fake are shared fixtures
    ORG,
    dataset,
    emu,
    fake,
    make_client,
    merge_only,
    warehouse_keys,
)
from flows.extract import land
from settings import Settings
from test_deployment import BIN, _free_port, _prefect, _prefect_env, _process, _wait_healthy

ORGANISATION = fleet.ORGANISATION_DEPLOYMENT  # "github-analytics/organisation"


@dataclass
class Server:
    api: str
    env: dict[str, str]
    tmp_path: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp_path = tmp_path_factory.mktemp("review2")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _prefect_env(tmp_path, api)
    with _process([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                  env, tmp_path / "server.log") as process:
        _wait_healthy(api, process, tmp_path / "server.log")
        _prefect("automation", "create", "--from-file", "automations.yaml", env=env)
        yield Server(api, env, tmp_path)


@pytest.fixture(scope="module")
def organisation_deployment(server: Server) -> str:
    """The `organisation` deployment of the `github-analytics` flow, as `prefect deploy` names it
    (no worker: its runs stay Scheduled, i.e. unfinished)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api}), get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("github-analytics")
        return str(client.create_deployment(flow_id=flow_id, name="organisation"))


def _scheduled_runs(server: Server, deployment_id: str, runs: list[tuple[str | None, str]]) -> None:
    """Runs of the deployment, Scheduled: (flow-run name or None for Prefect's random one, org)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api}), get_client(sync_client=True) as client:
        for name, org in runs:
            client.create_flow_run_from_deployment(deployment_id, parameters={"orgs": [org]}, name=name)


def _unfinished(server: Server, orgs: list[str]) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api}):
        return fleet._unfinished_runs(ORGANISATION, orgs)


def test_a_run_of_the_organisation_deployment_started_by_hand_keeps_the_fleet_from_starting_a_second(
        server, organisation_deployment):
    """prefect.yaml tells users to run `organisation` by hand for one organisation
    (`prefect deployment run github-analytics/organisation -p 'orgs=["my-org"]'`): Prefect names
    that run at random. `_unfinished_runs` (flows/fleet.py:125, 131) matches runs by the name the
    fleet gives its own (`organisation-{org}`), never by the `orgs` they run, so the fleet misses
    the hand-started run and starts a second run of the same organisation beside it: two runs
    racing on one dlt pipeline's state and landing."""
    _scheduled_runs(server, organisation_deployment, [(None, "handrun")])
    assert "handrun" in _unfinished(server, ["handrun", "other"])


def test_the_fleet_sees_every_unfinished_organisation_run_not_only_the_apis_first_200(
        server, organisation_deployment):
    """The fleet is meant for hundreds of organisations (issue 21 models 1,000). `_unfinished_runs`
    reads the matching runs with one `read_flow_runs` call and no limit or offset (flows/fleet.py:122), so
    the server answers its default page of 200: with 205 organisations whose earlier runs are
    still Scheduled (every worker busy), 5 are not seen and the fleet starts each of them a
    second time."""
    orgs = [f"big{i:03d}" for i in range(205)]
    _scheduled_runs(server, organisation_deployment, [(fleet.run_name(org), org) for org in orgs])
    unfinished = _unfinished(server, orgs)
    assert sorted(set(orgs) - set(unfinished)) == []


def test_a_run_lost_between_dlts_state_file_and_its_load_record_loses_nothing_on_another_worker(
        emu, dataset, fake, tmp_path, monkeypatch):
    """docs/deployment.md (Scaling out): "a worker whose data/pipelines lacks the organisation's
    newest state takes it from the landing ... nothing is lost or landed twice". dlt's filesystem
    destination writes a load's state file (the advanced cursors and ETags) before its
    `_dlt_loads` record (FilesystemClient.complete_load), and `get_stored_state` restores the
    newest state file whether or not its load was ever recorded. A worker lost between the two
    (the lost-worker case of automations.yaml) leaves the Parquet files of that load on the
    landing, no manifest and no load record; the next run, on another worker, restores the
    state that says those rows were landed, `Handoff.recover` (destinations/handoff.py:166) sees
    only local packages, so no manifest is ever written and the merge never sees the load: its
    pull requests are missing from the warehouse for good."""
    from dlt.destinations.impl.filesystem.filesystem import FilesystemClient

    landing = str(tmp_path / "shared-landing")
    worker_a = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path / "a", landing_url=landing)
    worker_b = Settings(orgs=[ORG], github_url=emu.url, data_dir=tmp_path / "b", landing_url=landing)

    def lost(self, load_id):  # the machine dies after the state file, before the load record
        raise SystemExit("worker lost")

    monkeypatch.setattr(FilesystemClient, "_store_load", lost)
    with pytest.raises(BaseException), make_client(emu, fake) as client:
        land(worker_a, ORG, client)
    monkeypatch.undo()
    assert list(Path(landing).glob("github/_dlt_pipeline_state/*")), "dlt wrote the state file"

    with make_client(emu, fake) as client:  # the next run, on another worker
        land(worker_b, ORG, client)
    merge_only(worker_b)
    held = warehouse_keys(worker_b)["pull_requests"]
    expected = set(dataset.expected(ORG)["pull_requests"])
    assert sorted(expected - held) == [], f"{len(expected - held)} of {len(expected)} pull requests never merged"
