"""The deployment as shipped, end to end: a real `prefect server start`, the process work pool,
`prefect --no-prompt deploy --all` from prefect.yaml unchanged, a worker
whose environment holds the token, and one run of `github-analytics/hourly` against the emulator.

Every process is started in its own process group and killed with it, pass or fail.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from emulator import Dataset, GitHubEmulator
from sources.github.auth import TokenPool

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECRET = "worker-env-token"
ORG = "acme"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A background process in its own group; the whole group is killed on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            yield proc
        finally:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                if proc.poll() is not None:
                    break
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(wait)
                except subprocess.TimeoutExpired:
                    continue
            try:  # flow-run children the worker left in the group
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _prefect(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _wait_healthy(api: str, server: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server did not start in {timeout} s:\n{log.read_text()[-3000:]}")


def _wait_exited(infrastructure_pid: str | None, timeout: float = 60) -> None:
    """Until the flow-run process (the worker records its pid as `infrastructure_pid`) has exited."""
    if not infrastructure_pid:
        return
    pid = int(infrastructure_pid.rsplit(":", 1)[-1])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    pytest.fail(f"the flow-run process {pid} did not exit within {timeout} s of the run's final state")


def _prefect_env(tmp_path: Path, api: str) -> dict[str, str]:
    """The environment of a test's Prefect server, CLI and workers: its own PREFECT_HOME and API,
    nothing of the developer's settings, token or Google account."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_API_LOG_RETRYABLE_ERRORS": "true",  # the server says why it answered 503
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "DO_NOT_TRACK": "1",
    }
    for name in list(env):
        if name.startswith(("GITHUB_", "PR_ANALYTICS_", "SOURCES__GITHUB__", "GOOGLE_")):
            del env[name]
    return env


def _flow_run(api: str, flow_run_id: str) -> dict[str, Any]:
    return httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()


def _logs(api: str, flow_run_id: str) -> list[str]:
    body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
    messages: list[str] = []
    while True:
        page = httpx.post(f"{api}/logs/filter", json={**body, "offset": len(messages)}, timeout=10).json()
        messages += [entry["message"] for entry in page]
        if len(page) < 200:
            return messages


@dataclass
class HourlyRun:
    api: str
    flow_run_id: str
    state: dict[str, Any]
    data_dir: Path
    dataset: Dataset
    worker_log: str
    seconds: float  # from `prefect deployment run` to a final state


@pytest.fixture(scope="module")
def hourly_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HourlyRun]:
    """A Prefect server with the work pool and prefect.yaml deployed as shipped; a worker whose environment holds the token; one run of the hourly deployment."""
    tmp_path = tmp_path_factory.mktemp("deployment")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _prefect_env(tmp_path, api)
    worker_env = {
        **env,
        "GITHUB_TOKEN": SECRET,  # the worker's environment: prefect.yaml names no secret block
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    }
    dataset = Dataset.generate(orgs={ORG: 2}, prs_per_repo=[5, 3], seed=11, edge_cases=False)
    data_dir = tmp_path / "data"
    server_log = tmp_path / "server.log"
    with _process([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                  env, server_log) as server:
        _wait_healthy(api, server, server_log)
        # The commands of docs/deployment.md, "In short".
        _prefect("work-pool", "create", "github-analytics", "--type", "process", env=env)
        _prefect("--no-prompt", "deploy", "--all", env=env)
        with GitHubEmulator(dataset, tokens={SECRET}) as emulator, _process(
            [str(BIN / "prefect"), "worker", "start", "--pool", "github-analytics"],
            worker_env, tmp_path / "worker.log",
        ):
            started = time.monotonic()
            out = _prefect(
                "deployment", "run", "github-analytics/hourly", "-p", f'orgs=["{ORG}"]',
                "-p", f"github_url={emulator.url}", "-p", f"data_dir={data_dir}", env=env,
            )
            flow_run_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)
            state: dict[str, Any] = {}
            while time.monotonic() - started < 240:
                state = _flow_run(api, flow_run_id)["state"] or {}
                if state.get("type") in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    break
                time.sleep(1)
            seconds = time.monotonic() - started
            # The flow-run process ships its last logs as it exits, after its state is final:
            # stopping the worker before then would kill it and lose them.
            _wait_exited(_flow_run(api, flow_run_id).get("infrastructure_pid"))
        worker_log = (tmp_path / "worker.log").read_text(errors="replace")
        yield HourlyRun(api, flow_run_id, state, data_dir, dataset, worker_log, seconds)


def test_hourly_deployment_completes_with_the_token_from_the_worker_environment(hourly_run):
    run = hourly_run
    assert run.state.get("type") == "COMPLETED", f"{run.state}\n{run.worker_log[-4000:]}"

    con = duckdb.connect(str(run.data_dir / "warehouse.duckdb"), read_only=True)
    expected = run.dataset.expected(ORG)
    for table in ("pull_requests", "pull_request_reviews"):
        rows = con.execute(f"SELECT id FROM github.{table} WHERE org = ?", [ORG]).fetchall()
        assert sorted(r[0] for r in rows) == sorted(expected[table]), table
    files = con.execute(
        "SELECT pull_request_id, filename FROM github.pull_request_files WHERE org = ?", [ORG]
    ).fetchall()
    assert sorted(files) == sorted(expected["pull_request_files"])
    assert SECRET not in run.worker_log
    assert not any(SECRET in line for line in _logs(run.api, run.flow_run_id))


def test_the_extract_took_a_slot_of_its_tokens_own_limit_which_it_created(hourly_run):
    limits = {limit["name"]: limit for limit in httpx.post(f"{hourly_run.api}/v2/concurrency_limits/filter",
                                                              json={}, timeout=10).json()}
    name = f"github-api-{TokenPool([SECRET]).budget_name()}"  # a fingerprint, never the token
    assert {n for n in limits if n.startswith("github-api")} == {name}, limits
    assert limits[name]["limit"] == 4 and limits[name]["active_slots"] == 0
    logs = _logs(hourly_run.api, hourly_run.flow_run_id)
    assert f"created the concurrency limit {name} (4 slots) for 1 token(s) from GITHUB_TOKEN" in logs, logs
    assert "do not exist" not in hourly_run.worker_log


def test_hourly_run_logs_hold_the_source_info_lines_formatted_once(hourly_run):
    logs = _logs(hourly_run.api, hourly_run.flow_run_id)
    source_lines = [line for line in logs if line.startswith(f"{ORG}: ") and "repositories" in line]
    assert any(line == f"{ORG}: 2 repositories" for line in logs), logs  # sources.github.source
    assert any(line.startswith(f"{ORG}: landed ") for line in logs), logs  # the flow's own
    for line in source_lines:  # no second formatter's prefix (time, level, logger) in a message
        assert logs.count(line) == 1 and "|INFO|" not in line and " INFO " not in line, line
