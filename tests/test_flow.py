"""The Prefect flow end to end: emulator -> flow (tasks, retries, concurrency limit, GcpSecret
token, artifact) -> Parquet landing -> DuckDB; and the deployments of `prefect.yaml`.

One `prefect_test_harness` (a temporary API server, ~12 s) serves the whole test session.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from uuid import UUID

import dlt
import duckdb
import pytest

import flows.github_analytics as flow_module
from emulator import Dataset, GitHubEmulator
from flows.github_analytics import SUMMARY_ARTIFACT_KEY, OrganisationsFailed, github_analytics
from flows.summary import RunSummary
from settings import ConfigurationError, Settings, pipeline_name
from sources.github.auth import TokenPool
from sources.github.errors import GitHubServerError

GITHUB_LIMIT = Settings.model_fields["github_concurrency_limit"].default

ROOT = Path(__file__).resolve().parents[1]
SECRET = "the-secret"
ORGS = {"acme": 2, "acme-labs": 1}
TABLES = ("pull_requests", "pull_request_reviews", "pull_request_files", "pull_request_events")


# prefect_api: tests/conftest.py (one test server for the session)


@pytest.fixture
def dataset() -> Dataset:
    return Dataset.generate(orgs=ORGS, prs_per_repo=[6, 4], seed=5)


@pytest.fixture
def emulator(dataset: Dataset):
    # Only the token held in the secret block is accepted.
    with GitHubEmulator(dataset, tokens={SECRET}) as emu:
        yield emu


@pytest.fixture(autouse=True)
def environment(prefect_api: str, monkeypatch: pytest.MonkeyPatch):
    """No credentials from the developer's shell; Prefect retries without waiting."""
    for name in (
        "GITHUB_TOKEN",
        "GITHUB_TOKENS",
        "PR_ANALYTICS_GITHUB_TOKEN_SECRET_BLOCK",
        "PR_ANALYTICS_ORGS",
        "SOURCES__GITHUB__ACCESS_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    for name in ("extract_and_land", "merge"):
        fast = getattr(flow_module, name).with_options(retry_delay_seconds=0)
        monkeypatch.setattr(flow_module, name, fast)


@pytest.fixture
def count_land(monkeypatch: pytest.MonkeyPatch):
    """Counts calls of `land` per organisation; `fail_first[org]` faults that many calls first."""
    calls: dict[str, int] = {}
    fail_first: dict[str, int] = {}
    real_land = flow_module.land

    def land(settings, org, *args, **kwargs):
        calls[org] = calls.get(org, 0) + 1
        if calls[org] <= fail_first.get(org, 0):
            raise GitHubServerError(f"GET /orgs/{org}/repos failed after 6 retries; last cause: 502")
        return real_land(settings, org, *args, **kwargs)

    monkeypatch.setattr(flow_module, "land", land)
    return SimpleNamespace(calls=calls, fail_first=fail_first)


@pytest.fixture
def secret_block(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> SimpleNamespace:
    """A GcpSecret block whose Secret Manager client is a fake: no network, no Google account."""
    from prefect_gcp import GcpCredentials
    from prefect_gcp.secret_manager import GcpSecret

    # GcpCredentials resolves application default credentials when built: a fake ADC file
    # (never used to call Google: the client below is replaced).
    adc = tmp_path_factory.mktemp("gcp") / "adc.json"
    adc.write_text(json.dumps({
        "type": "authorized_user", "client_id": "fake", "client_secret": "fake",
        "refresh_token": "fake",
    }))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    accessed: list[str] = []

    class FakeSecretManager:
        def access_secret_version(self, request):
            accessed.append(request.name)
            return SimpleNamespace(payload=SimpleNamespace(data=f"{SECRET}\n".encode()))

    monkeypatch.setattr(GcpCredentials, "get_secret_manager_client", lambda self: FakeSecretManager())
    GcpSecret(
        gcp_credentials=GcpCredentials(project="analytics-test"), secret_name="github-token"
    ).save("github-token-test", overwrite=True)
    monkeypatch.setenv("PR_ANALYTICS_GITHUB_TOKEN_SECRET_BLOCK", "github-token-test")
    return SimpleNamespace(accessed=accessed)


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured_logs():
    handler = Captured()
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    loggers = [logging.getLogger(), logging.getLogger("prefect")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.lines
    for logger in loggers:
        logger.removeHandler(handler)


# ------------------------------------------------------------------ helpers


def run(orgs: list[str], emulator: GitHubEmulator, data_dir: Path):
    return github_analytics(
        orgs=orgs, github_url=emulator.url, data_dir=data_dir, return_state=True
    )


def flow_run_id(state) -> UUID:
    return state.state_details.flow_run_id


def task_runs(state) -> dict[str, object]:
    """Task runs of the flow run, by name (`extract-and-land-<org>`, `merge-<org>`)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id(state)]))
        )
    return {run.name: run for run in runs}


def api_logs(state) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id(state)]))
        )
    return [log.message for log in logs]


def summary_artifact(state):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[SUMMARY_ARTIFACT_KEY]))
        )
    mine = [a for a in artifacts if a.flow_run_id == flow_run_id(state)]
    assert len(mine) == 1, artifacts
    assert mine[0].type == "markdown"
    return mine[0].data


def warehouse_keys(data_dir: Path, org: str | None = None) -> dict[str, set]:
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    where = f"WHERE org = '{org}'" if org else ""
    try:
        return {
            "pull_requests": {
                r[0] for r in con.sql(f"SELECT id FROM github.pull_requests {where}").fetchall()
            },
            "pull_request_reviews": {
                r[0] for r in con.sql(f"SELECT id FROM github.pull_request_reviews {where}").fetchall()
            },
            "pull_request_files": set(
                con.sql(
                    f"SELECT pull_request_id, filename FROM github.pull_request_files {where}"
                ).fetchall()
            ),
            "pull_request_events": {
                r[0] for r in con.sql(f"SELECT node_id FROM github.pull_request_events {where}").fetchall()
            },
        }
    finally:
        con.close()


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


# ------------------------------------------------------------------ tests


def test_flow_lands_and_merges_with_the_token_from_a_gcp_secret_block(
    emulator, dataset, secret_block, tmp_path, captured_logs, capfd
):
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    # The shared limit exists here (one extract at a time); elsewhere it does not. The run takes
    # slots of its token's own limit, created with the shared limit's slots and named after a
    # fingerprint of the token, never the token.
    token_limit = f"{GITHUB_LIMIT}-{TokenPool([SECRET]).budget_name()}"
    assert SECRET not in token_limit and SECRET[-12:] not in token_limit
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=GITHUB_LIMIT, limit=1)
        )
    try:
        state = run(list(ORGS), emulator, tmp_path)
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(token_limit)
    finally:
        with get_client(sync_client=True) as client:
            for name in (GITHUB_LIMIT, token_limit):
                with contextlib.suppress(Exception):
                    client.delete_global_concurrency_limit_by_name(name)

    assert state.is_completed(), state
    summary = state.result()
    assert isinstance(summary, RunSummary) and not summary.failed
    assert limit.limit == 1 and limit.active_slots == 0  # one extract at a time; taken and given back

    # The secret was read through the block, and it is what GitHub accepted.
    assert secret_block.accessed == [
        "projects/analytics-test/secrets/github-token/versions/latest"
    ] * len(ORGS)
    assert 401 not in emulator.stats["by_status"]

    # The warehouse holds exactly what the server serves, per organisation.
    for org in ORGS:
        assert warehouse_keys(tmp_path, org) == dataset.expected(org), org

    # The run's artifact: rows per table, requests, 304s, remaining rate limit.
    markdown = summary_artifact(state)
    for result in summary.results:
        expected = dataset.expected(result.org)
        for table in TABLES:
            count = len(expected[table])
            assert result.landing.rows[table] == count
            assert f"| {result.org} | {table} | {count} | {count} |" in markdown
        requests = result.landing.requests
        assert (
            f"**{result.org}**: {requests.requests} GitHub requests, {requests.cost} counted "
            f"against the rate limit, {requests.not_modified} answered 304 (free)"
        ) in markdown
        assert result.landing.rate_limit_remaining is not None
        assert f"{result.landing.rate_limit_remaining} left in the rate limit" in markdown

    # dlt's state is where `dlt pipeline --pipelines-dir DIR github_<org> info` looks.
    for org in ORGS:
        pipeline = dlt.attach(pipeline_name(org), pipelines_dir=str(tmp_path / "pipelines"))
        assert pipeline.state["sources"][pipeline_name(org)]["repos"]

    # The token is in no log line, console output, or file of the data folder.
    logs = api_logs(state)
    assert any("repositories done" in line for line in logs)
    assert any("landed" in line for line in logs)
    assert not any("do not exist" in line for line in logs)
    out, err = capfd.readouterr()
    for text in (*logs, *captured_logs, out, err):
        assert SECRET not in text
    assert files_containing(tmp_path, SECRET.encode()) == []

    # The flow run's parameters carry no secret either.
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id(state))
    assert SECRET not in repr(flow_run.parameters)
    assert set(flow_run.parameters) <= {"orgs", "since", "full_refresh", "github_url", "data_dir", "retry_now"}


def test_transient_failure_is_retried_by_prefect(emulator, dataset, count_land, tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)
    count_land.fail_first["acme"] = 1

    state = run(["acme"], emulator, tmp_path)

    assert state.is_completed(), state
    assert count_land.calls == {"acme": 2}
    runs = task_runs(state)
    assert runs["extract-and-land-acme"].run_count == 2
    assert runs["extract-and-land-acme"].state.is_completed()
    assert runs["merge-acme"].run_count == 1
    assert warehouse_keys(tmp_path, "acme") == dataset.expected("acme")


def test_bad_token_is_not_retried(emulator, count_land, tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "not-the-secret")

    state = run(["acme"], emulator, tmp_path)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, OrganisationsFailed)
    assert "acme: extract-and-land failed: AuthenticationError" in str(error)
    assert "not-the-secret" not in str(error)
    assert count_land.calls == {"acme": 1}
    runs = task_runs(state)
    assert runs["extract-and-land-acme"].run_count == 1
    assert runs["extract-and-land-acme"].state.is_failed()
    assert any("Not retrying extract-and-land" in line for line in api_logs(state))


def test_one_organisation_failing_does_not_stop_the_others(
    emulator, dataset, count_land, tmp_path, monkeypatch
):
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)

    state = run(["acme", "no-such-org"], emulator, tmp_path)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, OrganisationsFailed)
    assert str(error).startswith("1 organisation(s) failed: no-such-org: extract-and-land failed: NotFoundError")
    by_org = {result.org: result for result in error.summary.results}
    assert by_org["acme"].error is None
    assert by_org["acme"].merge.rows_merged["pull_requests"] == len(dataset.expected("acme")["pull_requests"])
    assert warehouse_keys(tmp_path, "acme") == dataset.expected("acme")
    # A missing organisation cannot appear on a retry.
    assert count_land.calls == {"acme": 1, "no-such-org": 1}
    assert task_runs(state)["extract-and-land-no-such-org"].run_count == 1
    # The artifact is written for a failed run too, naming the failure.
    markdown = summary_artifact(state)
    assert "**no-such-org** FAILED: extract-and-land failed: NotFoundError" in markdown
    assert "| acme | pull_requests |" in markdown


def test_deployments_from_prefect_yaml(prefect_api):
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name="github-analytics", type="process"))
        except ObjectAlreadyExists:
            pass

    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    prefect = Path(sys.executable).parent / "prefect"
    done = subprocess.run(
        [str(prefect), "--no-prompt", "deploy", "--all"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    with get_client(sync_client=True) as client:
        hourly = client.read_deployment_by_name("github-analytics/hourly")
        backfill = client.read_deployment_by_name("github-analytics/backfill")

    for deployment in (hourly, backfill):
        assert deployment.entrypoint == "flows/github_analytics.py:github_analytics"
        assert deployment.work_pool_name == "github-analytics"
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
        ]
        env_vars = deployment.job_variables["env"]
        assert env_vars["PREFECT_LOGGING_EXTRA_LOGGERS"].split(",")[0] == "dlt"
        assert env_vars["PR_ANALYTICS_GITHUB_TOKEN_SECRET_BLOCK"] == ""  # none: the worker's environment
        assert set(deployment.parameter_openapi_schema["properties"]) == {
            "orgs", "since", "full_refresh", "github_url", "data_dir", "retry_now"
        }
    assert hourly.parameters == {"full_refresh": False}
    assert [s.schedule.cron for s in hourly.schedules] == ["5 * * * *"]
    assert hourly.schedules[0].active
    assert hourly.global_concurrency_limit.limit == 1
    assert backfill.parameters == {"full_refresh": True, "since": None}
    assert backfill.schedules == []


def test_gcs_landing_and_credentials_from_a_gcs_bucket_block(prefect_api):
    """A GcsBucket block gives the landing URL and the service account dlt and gcsfs use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from prefect_gcp import GcpCredentials
    from prefect_gcp.cloud_storage import GcsBucket

    from flows.credentials import landing_filesystem, with_gcs_blocks
    from flows.extract import filesystem_destination

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info = {
        "type": "service_account",
        "project_id": "analytics-prj",
        "private_key_id": "k1",
        "private_key": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        "client_email": "loader@analytics-prj.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    credentials = GcpCredentials(service_account_info=info, project="analytics-prj")
    GcsBucket(bucket="pr-landing", bucket_folder="github-prs/", gcp_credentials=credentials).save(
        "pr-landing", overwrite=True
    )

    settings = with_gcs_blocks(Settings(orgs=["acme"], gcs_bucket_block="pr-landing"))

    assert settings.landing == "gs://pr-landing/github-prs"
    assert settings.gcs_project == "analytics-prj"
    assert "BEGIN PRIVATE KEY" not in repr(settings)
    destination = filesystem_destination(settings, "acme")
    assert destination.config_params["credentials"].client_email == info["client_email"]
    fs = landing_filesystem(settings)
    assert fs.project == "analytics-prj"


def test_a_blocked_repository_makes_a_partial_success_naming_it(emulator, dataset, tmp_path, monkeypatch):
    from emulator import Fault

    monkeypatch.setenv("GITHUB_TOKEN", SECRET)
    blocked = dataset.repositories("acme")[0]["name"]
    emulator.faults.add(Fault("451", rf"/repos/acme/{blocked}/pulls\?", times=10**6))

    state = run(["acme"], emulator, tmp_path)

    assert state.is_completed() and state.name == "Partial", state
    assert f"acme: repository acme/{blocked}: 451" in state.message
    summary = state.result()
    assert isinstance(summary, RunSummary) and [r.org for r in summary.partial] == ["acme"]
    healthy = {pr for pr in dataset.expected("acme")["pull_requests"]} - {
        pr["id"] for pr in dataset.pull_requests("acme", blocked)
    }
    assert warehouse_keys(tmp_path, "acme")["pull_requests"] == healthy
    markdown = summary_artifact(state)
    assert f"NOT SYNCED repository `acme/{blocked}`" in markdown and "451" in markdown


def test_run_py_exits_3_on_a_partial_success(emulator, dataset, tmp_path, monkeypatch, capsys):
    from emulator import Fault
    from flows.run import EXIT_PARTIAL, main

    for name in ("PREFECT_LOGGING_EXTRA_LOGGERS", "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)
    # The fault is on one pull request's REST file list: REST mode (the default fetches files over
    # GraphQL with a token, where a failure takes a batch of pull requests, not one list).
    monkeypatch.setenv("PR_ANALYTICS_GITHUB_API_MODE", "rest")
    repo = dataset.repositories("acme")[0]["name"]
    emulator.faults.add(Fault("451", rf"/repos/acme/{repo}/pulls/1/files", times=10**6))

    code = main(["--org", "acme", "--github-url", emulator.url, "--data-dir", str(tmp_path)])

    out, err = capsys.readouterr()
    assert code == EXIT_PARTIAL == 3
    assert "PARTIAL: partial success, 1 item(s) not synced" in err and f"files acme/{repo}#1" in err
    assert f"NOT SYNCED files `acme/{repo}#1`" in out


def test_four_organisations_merge_into_a_fresh_duckdb_file_at_the_first_attempt(tmp_path, monkeypatch):
    """The warehouse is bootstrapped once, before the merges fan out; no merge needs a retry."""
    orgs = {"org-a": 1, "org-b": 1, "org-c": 1, "org-d": 1}
    four = Dataset.generate(orgs=orgs, prs_per_repo=[3], seed=9, edge_cases=False)
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)
    with GitHubEmulator(four, tokens={SECRET}) as emulator:
        state = run(list(orgs), emulator, tmp_path)

    assert state.is_completed(), state
    runs = task_runs(state)
    assert runs["bootstrap-warehouse"].run_count == 1
    for org in orgs:
        assert runs[f"merge-{org}"].run_count == 1, org
        assert runs[f"merge-{org}"].state.is_completed()
        assert warehouse_keys(tmp_path, org) == four.expected(org)


def test_a_failed_warehouse_bootstrap_is_named_and_the_landing_is_kept(emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)

    def broken(warehouse, pipeline_names, calendars):
        raise ConfigurationError("injected: warehouse unreachable")

    monkeypatch.setattr(flow_module, "bootstrap", broken)
    state = run(["acme"], emulator, tmp_path)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, OrganisationsFailed)
    assert "acme: merge not run, the warehouse bootstrap failed: ConfigurationError: injected" in str(error)
    assert error.summary.results[0].landing is not None
    assert "merge-acme" not in task_runs(state) or not task_runs(state)["merge-acme"].state.is_completed()


def test_a_report_that_cannot_be_written_never_fails_the_run(emulator, dataset, secret_block, tmp_path, monkeypatch):
    import analytics.build

    def broken(*args, **kwargs):
        raise RuntimeError("the report's disk is full")

    monkeypatch.setattr(analytics.build, "write_report", broken)
    state = run(["acme"], emulator, tmp_path)

    assert state.is_completed(), state
    summary = state.result()
    assert summary.report_path is None and not summary.failed
    assert warehouse_keys(tmp_path, "acme") == dataset.expected("acme")
    assert any("The report was not written: RuntimeError: the report's disk is full" in line for line in api_logs(state))
    assert "report:" not in summary_artifact(state)


def test_flow_writes_the_report_and_publishes_the_headline_per_organisation(emulator, secret_block, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from analytics.build import headline_rows, write_report

    state = run(list(ORGS), emulator, tmp_path)

    assert state.is_completed(), state
    summary = state.result()
    report = tmp_path / flow_module.REPORT_FILE
    assert summary.report_path == report and report.stat().st_size > 1_000_000
    assert f"- report: `{report.resolve()}`" in summary_artifact(state)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[flow_module.HEADLINE_ARTIFACT_KEY]))
        )
    (artifact,) = [a for a in artifacts if a.flow_run_id == flow_run_id(state)]
    assert artifact.type == "table" and str(report.resolve()) in artifact.description
    table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    # The same numbers as a report built now from the same warehouse: six per organisation.
    again = write_report(Settings(data_dir=tmp_path).warehouse_config, tmp_path / "again.html", list(ORGS))
    assert table == headline_rows(again.reports)
    assert sorted({row["organisation"] for row in table}) == sorted(ORGS)
    assert len(table) == 6 * len(ORGS) and all(row["value"] for row in table)
