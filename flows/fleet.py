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
) -> Any:
    """Run `deployment` once per organisation (default: the setting `orgs`), as subflows on the
    work pool, and wait for them all. The parameters are passed on to each run."""
    with logs_reach_the_flow_run():
        log = get_run_logger()
        settings = settings_for(github_url, data_dir)
        names = orgs or settings.orgs
        if not names:
            return Failed(message="no organisation given: pass `orgs` or set PR_ANALYTICS_ORGS")
        passed = {"since": since, "full_refresh": full_refresh, "github_url": github_url, "data_dir": data_dir}
        shared = {key: value for key, value in passed.items() if value not in (None, False)}
        children = {
            org: run_deployment(name=deployment, parameters={"orgs": [org], **shared}, timeout=0,
                                as_subflow=True, flow_run_name=f"organisation-{org}")
            for org in names
        }
        log.info("started %d organisation runs of %s", len(children), deployment)
        states = _wait_for(children)
        lines = [f"{org}: {_outcome(states[org])}" for org in names]
        for line in lines:
            log.info("%s", line)
        done = [org for org in names if states[org] is not None and states[org].is_completed()
                and states[org].name != PARTIAL]
        _write_report(settings,
                      [org for org in names if states[org] is not None and states[org].is_completed()])
        message = "; ".join(lines)
        if len(done) == len(names):
            return Completed(message=f"{len(names)} organisations completed")
        if not done:
            return Failed(message=f"no organisation completed: {message}")
        not_done = [org for org in names if org not in done]
        return Completed(name=PARTIAL, message=f"{len(not_done)} of {len(names)} did not complete: " +
                         "; ".join(line for org, line in zip(names, lines) if org in not_done))


def settings_for(github_url: str | None, data_dir: Path | None) -> Settings:
    overrides: dict[str, Any] = {"github_url": github_url, "data_dir": data_dir}
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


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


def _wait_for(children: dict[str, Any]) -> dict[str, Any]:
    """Each child run's final state (polled: the parent holds no worker slot while it waits)."""
    states: dict[str, Any] = {}
    with get_client(sync_client=True) as client:
        while len(states) < len(children):
            for org, run in children.items():
                if org not in states:
                    state = client.read_flow_run(run.id).state
                    if state is not None and state.type.value in FINAL:
                        states[org] = state
            if len(states) < len(children):
                time.sleep(POLL_SECONDS)
    return states
