"""Logs people can read: what a flow run logs reaches its Prefect logs once, formatted once; the
run summary keeps each organisation's lines together; the test suite runs (and stops) on its own.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from uuid import UUID

import pytest
import yaml

from destinations.merge import MergeReport
from flows.extract import LandingReport
from flows.summary import OrgResult, RunSummary, render_summary
from sources.github.client import RequestStats
from sources.github.progress import SyncProgress

ROOT = Path(__file__).resolve().parents[1]

# A dlt log line nested in a message: `2026-11-26 07:49:35,972|[INFO]|662|...|prefect.task_runs|...`
DLT_FORMAT = re.compile(r"\|\[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\]\|")

WORKER_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from emulator import Dataset, GitHubEmulator
    from flows.github_analytics import github_analytics

    dataset = Dataset.generate(orgs={"acme": 2}, prs_per_repo=[6, 4], seed=5)
    with GitHubEmulator(dataset) as emulator:
        state = github_analytics(
            orgs=["acme"], github_url=emulator.url, data_dir=Path(sys.argv[1]), return_state=True
        )
    print("FLOW_RUN_ID", state.state_details.flow_run_id, state.type.value)
    """
)


def worker_environment(prefect_api: str) -> dict[str, str]:
    """What a process worker gives a flow run: prefect.yaml's env, no logging set up by us."""
    deployment = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("GITHUB_", "PR_ANALYTICS_", "SOURCES__GITHUB__", "PREFECT_", "PYTEST_"))
    }
    env.update(deployment["definitions"]["work_pool"]["job_variables"]["env"])
    env.pop("PR_ANALYTICS_GITHUB_TOKEN_SECRET_BLOCK")
    env |= {
        "PREFECT_API_URL": prefect_api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GITHUB_TOKEN": "emulator-token",
        "PR_ANALYTICS_GITHUB_CONCURRENCY_LIMIT": "",
    }
    return env


def flow_run_logs(flow_run_id: UUID) -> list[tuple[str, int, str]]:
    """(logger, level, message) of every log line the API holds for the flow run."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [(log.name, log.level, log.message) for log in logs]


def test_a_flow_run_under_worker_settings_logs_every_message_once_to_prefect(prefect_api, tmp_path):
    """Points 5 and 6: INFO lines of `sources` and `destinations`, and the line logged from a
    thread of dlt's extract pool (a pull request with more than 3,000 files; an info line since
    issue 19: nobody can act on GitHub's cap), reach the flow run's logs, each formatted once."""
    done = subprocess.run(
        [sys.executable, "-c", WORKER_SCRIPT, str(tmp_path)],
        cwd=ROOT, env=worker_environment(prefect_api), capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    marker = [line.split() for line in done.stdout.splitlines() if line.startswith("FLOW_RUN_ID")]
    assert marker and marker[0][2] == "COMPLETED", done.stdout + done.stderr[-4000:]
    logs = flow_run_logs(UUID(marker[0][1]))
    messages = [message for _, _, message in logs]

    nested = [message for message in messages if DLT_FORMAT.search(message)]
    assert nested == [], nested[:3]
    assert "acme: 2 repositories" in messages, messages
    assert any(name == "destinations.merge" and "merged load" in m for name, _, m in logs), messages
    assert any(
        name == "sources.github.source" and level == 20 and "GitHub serves only the first 3000 files" in m
        for name, level, m in logs
    ), messages
    # The task lines are Prefect's own, not wrapped in anything.
    assert any(message.startswith("Finished in state Completed") for message in messages), messages


def _landing(org: str) -> LandingReport:
    return LandingReport(
        org=org, pipeline_name=f"github_{org}", load_ids=["1"], rows={"pull_requests": 3},
        requests=RequestStats(requests=4, cost=4), progress=SyncProgress(repositories_done=1),
        landing_url=f"file:///data/landing/{org}", pipelines_dir="/data/pipelines",
    )


def _merge(org: str) -> MergeReport:
    return MergeReport(warehouse="duckdb:/data/warehouse.duckdb", pipeline_name=f"github_{org}", org=org,
                       loads_merged=["0"])


def test_summary_keeps_the_lines_of_an_organisation_whose_extract_failed_under_its_name() -> None:
    """Point 7: an extract failed, the merge of earlier loads succeeded: the warehouse line hangs
    under the failed organisation's own bullet, not under the previous organisation's."""
    summary = RunSummary([
        OrgResult("acme", landing=_landing("acme"), merge=_merge("acme")),
        OrgResult("acme-labs", merge=_merge("acme-labs"), error="extract-and-land failed: GitHubServerError: 502"),
        OrgResult("acme-tools", landing=_landing("acme-tools"), error="merge failed: RuntimeError: boom"),
    ])
    notes = render_summary(summary).split("\n\n", 2)[2].splitlines()

    owner: dict[int, str] = {}  # note line -> organisation of the top-level bullet above it
    current = ""
    for index, line in enumerate(notes):
        if line.startswith("- **"):
            current = line[4:].split("**")[0]
        owner[index] = current
    lines_of = {org: [notes[i] for i in owner if owner[i] == org] for org in ("acme", "acme-labs", "acme-tools")}
    assert lines_of["acme-labs"][0] == "- **acme-labs** FAILED: extract-and-land failed: GitHubServerError: 502"
    assert any("warehouse:" in line for line in lines_of["acme-labs"]), notes
    assert sum("warehouse:" in line for line in lines_of["acme"]) == 1, notes
    assert "  - FAILED: merge failed: RuntimeError: boom" in lines_of["acme-tools"], notes
    assert not notes[0].startswith(" "), notes


GCS_TEST = "tests/test_merge_concurrency.py"


def _plain_environment() -> dict[str, str]:
    """A developer's shell: none of what `./dev` exports."""
    dev_exports = ("GCSFS_", "RUNTIME__", "PREFECT_", "DO_NOT_TRACK", "PYTEST_")
    return {name: value for name, value in os.environ.items() if not name.startswith(dev_exports)}


# Imports gcsfs before any GCS emulator fixture runs, as the whole suite does.
IMPORTS_GCSFS = "tests/test_flow.py::test_gcs_landing_and_credentials_from_a_gcs_bucket_block"


def test_plain_pytest_runs_a_gcs_test_quickly() -> None:
    """Point 9: `python -m pytest` without ./dev's environment does not hang on the GCS emulator
    (gcsfs imported with its experimental gRPC support probed it with a 60 s timeout per call)."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", IMPORTS_GCSFS, _first_gcs_test()],
            cwd=ROOT, env=_plain_environment(), capture_output=True, text=True, timeout=150,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"plain pytest still running after {exc.timeout} s")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 passed" in done.stdout
    assert elapsed < 90, elapsed


def _first_gcs_test() -> str:
    """One small test that writes to the GCS emulator (fixture `gcs_bucket`)."""
    source = (ROOT / GCS_TEST).read_text()
    name = re.search(r"^def (test_\w+)\([^)]*gcs_bucket", source, re.M)
    assert name, f"no test of {GCS_TEST} uses gcs_bucket"
    return f"{GCS_TEST}::{name.group(1)}"


def _children_of(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux")
def test_servers_do_not_outlive_a_killed_test_run(tmp_path: Path) -> None:
    """Point 9: a test run killed with SIGKILL (no finaliser runs) leaves no fake-gcs-server and
    no Prefect test server behind."""
    (tmp_path / "test_wait.py").write_text(textwrap.dedent(
        """
        import time

        def test_wait(gcs_emulator, prefect_api):
            print("SERVERS UP", flush=True)
            time.sleep(600)
        """
    ))
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "conftest", "test_wait.py"],
        cwd=tmp_path, env=_plain_environment() | {"PYTHONPATH": str(ROOT / "tests")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    servers: list[int] = []
    commands: list[bytes] = []
    try:
        assert run.stdout is not None
        output = []
        deadline = time.monotonic() + 120
        for line in run.stdout:
            output.append(line)
            if "SERVERS UP" in line or time.monotonic() > deadline:
                break
        assert "SERVERS UP" in "".join(output), "".join(output)
        servers = _children_of(run.pid)
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") for pid in servers]
        assert any(b"fake-gcs-server" in c for c in commands), commands
        assert any(b"uvicorn" in c and b"prefect" in c for c in commands), commands
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in servers if _alive(pid)]
    for pid in left:  # never leave them running, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert left == [], commands
