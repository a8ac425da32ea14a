"""The fleet: one flow run per organisation, spread over the work pool's workers.

`github_analytics_fleet` starts, for each organisation, a run of the `organisation` deployment
(the same `github-analytics` flow, one organisation) with Prefect's `run_deployment`, as subflows:
Prefect hands them to whichever worker of the pool is free, so N workers share the organisations
and a crashed worker costs only the runs it held. The parent waits for them all, reports each
child's final state, writes the report of the organisations, and ends Completed, Partial (some
did not complete) or Failed (none did). Nothing here schedules: Prefect does.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.states import Completed, Failed

from flows.github_analytics import PARTIAL, REPORT_FILE, logs_reach_the_flow_run
from settings import Settings

ORGANISATION_DEPLOYMENT = "github-analytics/organisation"
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
POLL_SECONDS = 2.0
PAGE = 200  # flow runs a read of the API returns at most
# How long the parent waits for its runs: under the hour of the schedule, so that a run a lost
# worker left "Running" ends the parent (Partial, naming it) before the next one is due.
WAIT_MINUTES = 55.0


def _outcome(state: Any) -> str:
    """'Completed', 'Partial', 'Failed', 'Crashed', 'Cancelled', with the state's message."""
    name = state.name if state is not None else "unknown"
    message = (state.message or "").strip() if state is not None else ""
    return f"{name}: {message}" if message and name != "Completed" else name


@flow(name="github-analytics-fleet", log_prints=False)
def github_analytics_fleet(
    orgs: list[str] | None = None,
    since: date | None = None,
    full_refresh: bool = False,
    github_url: str | None = None,
    data_dir: Path | None = None,
    deployment: str = ORGANISATION_DEPLOYMENT,
    wait_minutes: float = WAIT_MINUTES,
) -> Any:
    """Run `deployment` once per organisation (default: the setting `orgs`), as subflows on the
    work pool, and wait for them all, at most `wait_minutes`. The parameters are passed on to
    each run."""
    with logs_reach_the_flow_run():
        log = get_run_logger()
        settings = settings_for(github_url, data_dir, orgs)
        names = settings.orgs  # normalised and each once: two runs of one organisation would race
        if not names:
            return Failed(message="no organisation given: pass `orgs` or set PR_ANALYTICS_ORGS")
        passed = {"since": since, "full_refresh": full_refresh, "github_url": github_url, "data_dir": data_dir}
        shared = {key: value for key, value in passed.items() if value not in (None, False)}
        outcomes: dict[str, str] = {}  # org -> why it did not start
        unfinished = _unfinished_runs(deployment, names)
        children: dict[str, Any] = {}
        for org in names:
            if org in unfinished:
                outcomes[org] = f"not started: its run {unfinished[org]} has not finished"
                continue
            try:
                children[org] = run_deployment(name=deployment, parameters={"orgs": [org], **shared}, timeout=0,
                                               as_subflow=True, flow_run_name=run_name(org))
            except Exception as exc:  # noqa: BLE001 - one organisation that cannot start is its failure alone
                outcomes[org] = f"not started: {type(exc).__name__}: {exc}"
        log.info("started %d organisation runs of %s", len(children), deployment)
        states = _wait_for(children, wait_minutes * 60)
        for org, state in states.items():
            outcomes[org] = _outcome(state)
        for org in children.keys() - states.keys():
            outcomes[org] = (f"not finished after {wait_minutes:g} minutes: not waited for (is a worker "
                             f"free? the fleet's own run holds a worker slot)")
        lines = [f"{org}: {outcomes[org]}" for org in names]
        for line in lines:
            log.info("%s", line)
        completed = [org for org in names if org in states and states[org].is_completed()]
        _write_report(settings, completed)
        not_done = [org for org in names if org not in completed or states[org].name == PARTIAL]
        if not not_done:
            return Completed(message=f"{len(names)} organisations completed")
        if not completed:
            return Failed(message="no organisation completed: " + "; ".join(lines))
        return Completed(name=PARTIAL, message=f"{len(not_done)} of {len(names)} did not complete: " +
                         "; ".join(line for org, line in zip(names, lines) if org in not_done))


def run_name(org: str) -> str:
    return f"organisation-{org}"


def settings_for(github_url: str | None, data_dir: Path | None, orgs: list[str] | None = None) -> Settings:
    overrides: dict[str, Any] = {"github_url": github_url, "data_dir": data_dir, "orgs": orgs or None}
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


def _unfinished_runs(deployment: str, orgs: list[str]) -> dict[str, str]:
    """Organisation -> the name and state of an earlier run of `deployment` for it that has not
    finished (scheduled, pending, running), whoever started it: a second run now would race on
    its state. Matched on the runs' `orgs` parameter, every page of them."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    from sources.github.names import normalise_org

    flow_name, _, deployment_name = deployment.partition("/")
    going = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING]
    wanted = set(orgs)
    unfinished: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=going))),
                limit=PAGE, offset=offset,
            )
            for run in runs:
                for org in run.parameters.get("orgs") or []:
                    try:
                        name = normalise_org(str(org))
                    except ValueError:
                        continue
                    if name in wanted and run.state is not None:
                        unfinished[name] = (f"'{run.name}' ({run.state.name} since "
                                            f"{run.state.timestamp:%Y-%m-%d %H:%M} UTC)")
            if len(runs) < PAGE:
                return unfinished
            offset += PAGE


def _write_report(settings: Settings, orgs: list[str]) -> None:
    """The report of every organisation that completed (each run wrote its own organisation's
    alone, over the others'); a failure is a warning, never the fleet's."""
    if not orgs:
        return
    try:
        from analytics.build import write_report

        written = write_report(settings.warehouse_config, settings.data_dir / REPORT_FILE, orgs)
        get_run_logger().info("report of %d organisations: %s", len(orgs), written.path)
    except Exception as exc:  # noqa: BLE001
        get_run_logger().warning("could not write the report: %s: %s", type(exc).__name__, exc)


def _wait_for(children: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Each child run's final state, for those that end within `seconds`: polled a page of runs
    per read, not a read per run."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    states: dict[str, Any] = {}
    pending = {run.id: org for org, run in children.items()}
    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while pending:
            ids = list(pending)
            for start in range(0, len(ids), PAGE):
                runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids[start:start + PAGE])),
                                             limit=PAGE)
                for run in runs:
                    if run.state is not None and run.state.type.value in FINAL:
                        states[pending.pop(run.id)] = run.state
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
    return states
