"""`python flows/run.py` as a user runs it: a separate process, pointed at a GitHub-compatible server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import httpx

from emulator import Dataset, GitHubEmulator
from flows.prefect_server import stop_server

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "flows/run.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_cli_loads_exactly_what_the_server_serves(tmp_path):
    dataset = Dataset.generate(orgs={"acme": 2, "beta-corp": 1}, prs_per_repo=[6, 3, 4], seed=5, edge_cases=False)
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "GITHUB_TOKEN": "cli-secret-token",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "RUNTIME__DLTHUB_TELEMETRY": "false",
    }
    env.pop("GITHUB_TOKENS", None)
    env.pop("PREFECT_API_URL", None)
    data_dir = tmp_path / "data"
    try:
        with GitHubEmulator(dataset, base_path="/api/v3", tokens={"cli-secret-token"}) as emu:
            args = ("--org", "acme", "--org", "beta-corp", "--github-url", emu.url, "--data-dir", str(data_dir))
            first = run_cli(*args, env=env)
            assert first.returncode == 0, first.stderr[-3000:]
            assert "Starting a local Prefect server" in first.stderr
            # The no-change run reuses that server, and Prefect still records every task's state.
            # `--retry-now` reaches the flow (the retry list is empty: nothing ahead of its backoff).
            second = run_cli(*args, "--retry-now", env=env)
            assert second.returncode == 0, second.stderr[-3000:]
            assert "--retry-now: every item on the retry list was due; 0 retried" in second.stdout
            assert "Using the local Prefect server" in second.stderr
        api_url = second.stderr.split("Using the local Prefect server at ")[1].split()[0]
        task_runs = httpx.post(f"{api_url}/task_runs/filter", json={}).json()
        names = sorted(run["name"] for run in task_runs)
        per_run = ["bootstrap-warehouse", "extract-and-land-acme", "extract-and-land-beta-corp",
                   "merge-acme", "merge-beta-corp"]
        assert names == sorted(per_run * 2)  # two runs, each task a Prefect task run
        assert {run["state_name"] for run in task_runs} == {"Completed"}
    finally:
        stop_server(tmp_path / "prefect")

    assert "cli-secret-token" not in first.stdout + first.stderr
    # Issue 19.4 and 19.5: a healthy run says nothing alarming, and links to nothing dead (the
    # local server serves no UI: the command that shows the run instead, and it works).
    for run in (first, second):
        output = run.stdout + run.stderr
        assert [line for line in output.splitlines() if "WARNING" in line] == []
        assert "View at" not in output and "Prefect run: PREFECT_API_URL=" in run.stdout
    assert "pipeline --pipelines-dir" in first.stdout and "github_beta_corp info" in first.stdout
    # Each run ends with the path of the report of its organisations, written after the merges.
    report = (data_dir / "report.html").resolve()
    assert first.stdout.rstrip().endswith(f"Report: {report}") and second.stdout.rstrip().endswith(f"Report: {report}")
    page = report.read_text(encoding="utf-8")
    assert '<section id="org-acme" class="org">' in page and '<section id="org-beta-corp" class="org">' in page

    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    for org in ("acme", "beta-corp"):
        expected = dataset.expected(org)
        prs = con.execute("SELECT id FROM github.pull_requests WHERE org = ?", [org]).fetchall()
        reviews = con.execute("SELECT id FROM github.pull_request_reviews WHERE org = ?", [org]).fetchall()
        files = con.execute(
            "SELECT pull_request_id, filename FROM github.pull_request_files WHERE org = ?", [org]
        ).fetchall()
        assert sorted(r[0] for r in prs) == sorted(expected["pull_requests"])
        assert sorted(r[0] for r in reviews) == sorted(expected["pull_request_reviews"])
        assert sorted(files) == sorted(expected["pull_request_files"])

    # The state command the summary prints works from the project root.
    dlt = Path(sys.executable).parent / "dlt"
    info = subprocess.run(
        [str(dlt), "pipeline", "--pipelines-dir", str(data_dir / "pipelines"), "github_acme", "info"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert info.returncode == 0, info.stderr
    assert "github_acme" in info.stdout and "cli-secret-token" not in info.stdout


def test_a_failure_is_one_line_here_and_the_traceback_goes_to_the_log_file(tmp_path):
    """Issue 19.2: every failure inside a run printed a 17-46-line Prefect traceback before the
    one-line FAILED. Now the terminal gets one line per failure and where the details are; the
    log file (and the terminal with -v) gets the traceback."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "RUNTIME__DLTHUB_TELEMETRY": "false"}
    env.pop("PREFECT_API_URL", None)
    env["GITHUB_TOKEN"] = "cli-secret-token"
    data_dir = tmp_path / "data"
    dataset = Dataset.generate(orgs={"acme": 1}, prs_per_repo=[2], seed=5, edge_cases=False)
    try:
        with GitHubEmulator(dataset) as emu:
            args = ("--org", "ghost", "--github-url", emu.url, "--data-dir", str(data_dir))
            quiet = run_cli(*args, env=env)
            loud = run_cli(*args, "-v", env=env)
    finally:
        stop_server(tmp_path / "prefect")
    assert quiet.returncode == 1 and loud.returncode == 1
    assert "Traceback" not in quiet.stdout + quiet.stderr
    assert "FAILED: 1 organisation(s) failed: ghost: extract-and-land failed: NotFoundError" in quiet.stderr
    details = quiet.stderr.strip().splitlines()[-1]
    assert details.startswith("details: ") and "Traceback" in Path(details.removeprefix("details: ")).read_text()
    assert "Traceback" in loud.stderr
