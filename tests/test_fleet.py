"""The fleet as shipped (issue 21.2): a real `prefect server start`, prefect.yaml deployed
unchanged and automations.yaml created, two process workers, and one run of
`github-analytics-fleet/fleet` over six organisations of the emulator, each through its own
installation of one GitHub App; one organisation has no installation. Then a worker lost with the
run it holds, and the fleet run after it. Every process is started in its own process group and
killed with it."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from emulator import Dataset, Fault, GitHubEmulator
from test_app_installations import APP_ID, PRIVATE, PUBLIC
from test_deployment import BIN, _flow_run, _free_port, _prefect, _prefect_env, _process, _wait_healthy

INSTALLED = {"acme": 201, "globex": 202, "initech": 203, "umbrella": 204, "hooli-labs": 205}
ORGS = [*INSTALLED, "hooli"]  # hooli has no installation of the App


@dataclass
class FleetRun:
    api: str
    parent: dict[str, Any]
    children: dict[str, dict[str, Any]]  # org -> its flow run
    data_dir: Path
    dataset: Dataset
    callers: dict[str, set[str]]  # caller -> the organisations whose repositories it read
    seconds: float
    submitted: dict[str, int]  # worker -> the flow runs it ran (the parent and the organisations')
    limits: set[str]  # the global concurrency limits after the run
    worker_logs: dict[str, str]


def _children(api: str, parent_id: str) -> list[dict[str, Any]]:
    """The parent's subflow runs (run_deployment links each to a task run of the parent)."""
    runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 50}, timeout=10).json()
    tasks = httpx.post(f"{api}/task_runs/filter",
                       json={"task_runs": {"flow_run_id": {"any_": [parent_id]}}, "limit": 50}, timeout=10).json()
    task_ids = {task["id"] for task in tasks}
    return [run for run in runs if run.get("parent_task_run_id") in task_ids]


@dataclass
class Server:
    api: str
    env: dict[str, str]
    worker_env: dict[str, str]
    tmp_path: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Prefect server, the work pool, prefect.yaml deployed and automations.yaml created, as
    docs/deployment.md says."""
    tmp_path = tmp_path_factory.mktemp("fleet")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _prefect_env(tmp_path, api)
    worker_env = {
        **env,
        # The worker's environment: one GitHub App, no installation id (each organisation's own).
        "PR_ANALYTICS_GITHUB_APP_ID": APP_ID,
        "PR_ANALYTICS_GITHUB_APP_PRIVATE_KEY": PRIVATE,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    }
    with _process([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                  env, tmp_path / "server.log") as process:
        _wait_healthy(api, process, tmp_path / "server.log")
        _prefect("work-pool", "create", "github-analytics", "--type", "process", env=env)
        _prefect("--no-prompt", "deploy", "--all", env=env)
        _prefect("automation", "create", "--from-file", "automations.yaml", env=env)
        yield Server(api, env, worker_env, tmp_path)


def _worker(server: Server, name: str, limit: int):
    return _process([str(BIN / "prefect"), "worker", "start", "--pool", "github-analytics", "--name", name,
                     "--limit", str(limit)], server.worker_env, server.tmp_path / f"{name}.log")


def _run_fleet(server: Server, orgs: list[str], emulator: GitHubEmulator, data_dir: Path) -> str:
    listed = "[" + ", ".join(f'"{org}"' for org in orgs) + "]"
    out = _prefect("deployment", "run", "github-analytics-fleet/fleet", "-p", f"orgs={listed}",
                   "-p", f"github_url={emulator.url}", "-p", f"data_dir={data_dir}", env=server.env)
    return next(line.split()[-1] for line in out.splitlines() if "UUID" in line)


def _wait_final(api: str, flow_run_id: str, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = _flow_run(api, flow_run_id)
        if (run.get("state") or {}).get("type") in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(2)
    return run


@pytest.fixture(scope="module")
def fleet_run(server: Server) -> Iterator[FleetRun]:
    tmp_path, api = server.tmp_path, server.api
    dataset = Dataset.generate(orgs={org: 1 for org in ORGS}, prs_per_repo=4, seed=12, edge_cases=False)
    data_dir = tmp_path / "data"
    with GitHubEmulator(dataset, tokens=set(), app_id=APP_ID, app_public_key=PUBLIC,
                        app_installations=INSTALLED) as emulator, \
            _worker(server, "worker-a", 3), _worker(server, "worker-b", 3):
        started = time.monotonic()
        parent_id = _run_fleet(server, ORGS, emulator, data_dir)
        parent = _wait_final(api, parent_id, 420)
        seconds = time.monotonic() - started
        children = {run["parameters"]["orgs"][0]: run for run in _children(api, parent_id)}
        limits = {limit["name"] for limit in httpx.post(f"{api}/v2/concurrency_limits/filter", json={},
                                                          timeout=10).json()}
        callers: dict[str, set[str]] = {}
        for request in emulator.received():
            if request.path.startswith("/repos/"):
                callers.setdefault(request.caller, set()).add(request.path.split("/")[2])
    # The runs each worker ran (two may race to submit one: the server aborts the second).
    submitted = {name: len(re.findall(r"Beginning (?:sub)?flow run '", (tmp_path / f"{name}.log").read_text(errors="replace")))
                 for name in ("worker-a", "worker-b")}
    yield FleetRun(api, parent, children, data_dir, dataset, callers, seconds, submitted, limits,
                   {name: (tmp_path / f"{name}.log").read_text(errors="replace") for name in submitted})


def test_the_fleet_runs_each_organisation_on_the_pool_and_ends_partial_naming_the_one_without_the_app(fleet_run):
    parent = fleet_run.parent["state"]
    assert parent["type"] == "COMPLETED" and parent["name"] == "Partial", parent
    assert "hooli: Failed" in parent["message"] and "not installed on organisation hooli" in parent["message"]
    assert set(fleet_run.children) == set(ORGS)
    states = {org: run["state"]["type"] for org, run in fleet_run.children.items()}
    assert states == {**{org: "COMPLETED" for org in INSTALLED}, "hooli": "FAILED"}, states
    # The two workers (3 runs at a time each) shared the 7 runs: the parent and 6 organisations.
    assert sum(fleet_run.submitted.values()) == 7 and min(fleet_run.submitted.values()) >= 1, fleet_run.submitted


def test_each_installation_spent_its_own_budget_on_its_organisation(fleet_run):
    assert fleet_run.callers == {f"installation:{i}": {org} for org, i in INSTALLED.items()}
    # ... under its own concurrency limit, named after the installation, never a credential's
    # value: the organisations do not queue for each other's slots.
    assert {f"github-api-installation-{i}" for i in INSTALLED.values()} <= fleet_run.limits
    assert not any("do not exist" in log for log in fleet_run.worker_logs.values())


def test_the_report_covers_every_organisation_that_completed(fleet_run):
    page = (fleet_run.data_dir / "report.html").read_text(encoding="utf-8")
    assert all(f'id="org-{org}"' in page for org in INSTALLED) and 'id="org-hooli"' not in page


def test_the_warehouse_holds_every_installed_organisation_exactly(fleet_run):
    con = duckdb.connect(str(fleet_run.data_dir / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.sql("SELECT org, id FROM github.pull_requests").fetchall()
    finally:
        con.close()
    assert len(rows) == len(set(rows))
    held = Counter(org for org, _ in rows)
    assert held == {org: len(fleet_run.dataset.expected(org)["pull_requests"]) for org in INSTALLED}


def test_a_lost_worker_costs_only_its_organisations_run_which_the_next_fleet_run_completes(server):
    """A worker killed with the flow run it holds (a lost machine): the run's heartbeats stop,
    the automation of automations.yaml marks it Crashed, the parent names it; the next fleet run
    lands the organisation on another worker, exactly once."""
    api, data_dir = server.api, server.tmp_path / "lost-worker-data"
    dataset = Dataset.generate(orgs={"acme": 2}, prs_per_repo=4, seed=13, edge_cases=False)
    # Another flow on the server, alive all along, with Prefect's default heartbeat (180 s): the
    # automation is not for it.
    with GitHubEmulator(dataset, tokens=set(), app_id=APP_ID, app_public_key=PUBLIC,
                        app_installations={"acme": 201}) as emulator, \
            _process([sys.executable, "-c", ANOTHER_FLOW], server.env, server.tmp_path / "another-flow.log"), \
            _worker(server, "parents", 1):
        # The list of the second repository's pull requests answers after 60 s: the run is
        # mid-way (the first repository landed or landing) when its worker is lost.
        emulator.faults.add(Fault("slow", r"/repos/acme/[^/]+/pulls\?", seconds=60, after=1))
        parent_id = _run_fleet(server, ["acme"], emulator, data_dir)
        child = _wait_for_child(api, parent_id)  # the parent holds the one slot of "parents"
        with _worker(server, "doomed", 1) as doomed:
            while (_flow_run(api, child["id"]).get("state") or {}).get("type") != "RUNNING":
                time.sleep(0.5)
            deadline = time.monotonic() + 60
            while not any("/pulls?" in r.path for r in emulator.received()) and time.monotonic() < deadline:
                time.sleep(0.5)
            # The worker, then the run it holds (Prefect starts each run in a session of its own).
            os.killpg(doomed.pid, signal.SIGKILL)
            os.killpg(int(_flow_run(api, child["id"])["infrastructure_pid"].rsplit(":", 1)[-1]), signal.SIGKILL)
            killed_at = time.monotonic()
        parent = _wait_final(api, parent_id, 240)
        crashed_after = time.monotonic() - killed_at
        lost = _flow_run(api, child["id"])["state"]
        assert lost["type"] == "CRASHED" and "no heartbeat" in lost["message"], lost
        another = httpx.post(f"{api}/flow_runs/filter", json={"flows": {"name": {"any_": ["another-flow"]}}},
                             timeout=10).json()
        assert [run["state"]["type"] for run in another] == ["RUNNING"], another
        state = parent["state"]
        assert state["type"] == "FAILED" and "acme: Crashed: no heartbeat" in state["message"], state
        assert crashed_after < 200, crashed_after

        with _worker(server, "survivor", 3):
            again = _wait_final(api, _run_fleet(server, ["acme"], emulator, data_dir), 240)
        assert again["state"]["type"] == "COMPLETED" and again["state"]["name"] == "Completed", again["state"]

    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    try:
        for table in ("pull_requests", "pull_request_reviews"):
            rows = [row[0] for row in con.execute(f"SELECT id FROM github.{table}").fetchall()]
            assert sorted(rows) == sorted(dataset.expected("acme")[table]), table
    finally:
        con.close()


ANOTHER_FLOW = """
import time
from prefect import flow

@flow(name="another-flow")
def another() -> None:
    time.sleep(600)

another()
"""


def _wait_for_child(api: str, parent_id: str, seconds: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        children = _children(api, parent_id)
        if children:
            return children[0]
        time.sleep(1)
    raise AssertionError(f"the fleet run {parent_id} started no organisation run in {seconds} s")
