"""Errors that can never succeed fail at once, with one line naming the cause and the path or
setting: bad arguments before Prefect starts, and permanent errors inside the flow unretried."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# flows/run.py's main(), then a last line saying whether Prefect was ever imported: arguments are
# refused before Prefect starts (what this checks, rather than a wall time).
_CLI = """
import sys
sys.path.insert(0, {root!r})
from flows.run import main
code = main(sys.argv[1:])
print("prefect imported:", any(m == "prefect" or m.startswith("prefect.") for m in sys.modules))
sys.exit(code)
"""


def run_cli(*args: str) -> tuple[subprocess.CompletedProcess[str], bool]:
    """The CLI's outcome, and whether it imported Prefect at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PR_ANALYTICS_"))}
    done = subprocess.run([sys.executable, "-c", _CLI.format(root=str(ROOT)), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    imported = "prefect imported: True" in done.stdout
    return done, imported


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--org", "not_a_login!"), "invalid organisation 'not_a_login!'"),
        (("--demo", "--org", "acme"), "the demo serves demo and demo-labs, not acme"),
        (("--org", "acme", "--github-url", "api.github.com"), "github_url is not an http(s) URL"),
        (("--org", "acme", "--since", "2999-01-01"), "since 2999-01-01 is in the future"),
    ],
)
def test_bad_arguments_are_refused_before_prefect_starts(args, expected):
    done, prefect_imported = run_cli(*args)

    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [f"error: {done.stderr.strip().removeprefix('error: ')}"]
    assert expected in done.stderr
    assert "Traceback" not in done.stderr and "prefect" not in done.stderr.lower()
    assert not prefect_imported  # refused before Prefect (whose start alone takes 12-18 s)


@pytest.mark.parametrize("place", ["under-a-file", "under-proc", "under-sys"])
def test_a_data_folder_that_cannot_be_written_is_refused_in_one_line(place, tmp_path):
    """Issue 19.3: each place the run writes gets a probe file first. "Operation not permitted"
    was retried for 58 s, a folder under a file ended in a traceback, one under /proc in 73 s of
    retries."""
    (tmp_path / "a-file").write_text("x")
    data_dir = {"under-a-file": tmp_path / "a-file" / "data", "under-proc": Path("/proc/pr-analytics-test/data"),
                "under-sys": Path("/sys/pr-analytics-test/data")}[place]
    done, prefect_imported = run_cli("--demo", "--data-dir", str(data_dir))

    assert done.returncode == 2, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: cannot write ") and f"(the run writes to {data_dir})" in line
    assert not prefect_imported


def test_a_bad_organisation_is_refused_before_anything_heavy_is_imported():
    done, prefect_imported = run_cli("--org", "bad_org")

    assert done.returncode == 2 and "invalid organisation 'bad_org'" in done.stderr
    assert not prefect_imported and "dlt" not in done.stderr


def test_a_file_where_the_data_folder_should_be_is_refused(tmp_path):
    data = tmp_path / "data"
    data.write_text("not a folder")

    done, _ = run_cli("--org", "acme", "--data-dir", str(data))

    assert done.returncode == 2
    assert done.stderr.strip() == f"error: data_dir: {data} is a file, not a folder"


# -- the GitHub client: answers that are not GitHub's, a server that refuses connections ------


@pytest.mark.parametrize("status", [200, 404])
def test_an_html_page_is_not_retried_and_names_the_url(status):
    import httpx

    from sources.github.client import GitHubClient
    from sources.github.errors import GitHubClientError

    calls: list[str] = []

    def html(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(status, text="<html>Sign in</html>", headers={"content-type": "text/html; charset=utf-8"})

    with GitHubClient("https://intranet.example/", transport=httpx.MockTransport(html)) as client:
        with pytest.raises(GitHubClientError) as raised:
            client.get_page("/orgs/acme/repos")

    assert len(calls) == 1
    assert f"https://intranet.example/orgs/acme/repos answered {status} with text/html, not JSON" in str(raised.value)
    assert "<html>" not in str(raised.value)


def test_a_refused_connection_gives_up_within_the_connect_budget():
    import httpx

    from sources.github.client import CONNECT_BUDGET, GitHubClient, GitHubUnreachable
    from tests.fakes import FakeClock

    clock = FakeClock(1_700_000_000.0)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    client = GitHubClient("http://127.0.0.1:9", transport=httpx.MockTransport(refused), clock=clock,
                          max_retries=100, backoff_base=1.0)
    with client:
        with pytest.raises(GitHubUnreachable) as raised:
            client.get_page("/orgs/acme/repos")
        assert sum(clock.sleeps) <= CONNECT_BUDGET + 1e-6
        assert "no connection to http://127.0.0.1:9" in str(raised.value)
        # The budget is the client's, not each request's: the next request gives up at once.
        with pytest.raises(GitHubUnreachable):
            client.get_page("/orgs/acme/repos?page=2")
        assert sum(clock.sleeps) <= CONNECT_BUDGET + 1e-6


class SilentServer:
    """A TCP server that accepts every connection and never answers (a wrong URL, a dead proxy)."""

    def __init__(self) -> None:
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(connection)

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        for connection in self.held:
            connection.close()


def test_a_server_that_never_answers_gives_up_after_two_silent_attempts():
    """Issue 19.1: it took 7 attempts of the read timeout, times Prefect's retries (17.7 minutes);
    now two attempts of the timeout, and the error names the URL and what happened."""
    from sources.github.client import GitHubClient, GitHubUnreachable

    with SilentServer() as server, GitHubClient(server.url, timeout=1.0, backoff_base=0.01) as client:
        started = time.monotonic()
        with pytest.raises(GitHubUnreachable) as raised:
            client.get_page("/orgs/acme/repos")
        took = time.monotonic() - started
    assert 2.0 <= took < 4.0
    assert f"{server.url} accepted the connection but sent no answer: 2 attempts of 1 s each" in str(raised.value)


# -- the flow: permanent errors fail the organisation at the first attempt --------------------


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def flow(prefect_api, monkeypatch):
    import flows.github_analytics as flow_module

    for name in ("extract_and_land", "merge"):  # a retry, if any, costs no time
        monkeypatch.setattr(flow_module, name, getattr(flow_module, name).with_options(retry_delay_seconds=0))
    return flow_module


def _run(flow_module, emulator_url: str, data_dir: Path):
    started = time.monotonic()
    state = flow_module.github_analytics(orgs=["acme"], github_url=emulator_url, data_dir=data_dir,
                                         return_state=True)
    return state, time.monotonic() - started


def _extract_attempts(state) -> int:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    return next(r.run_count for r in runs if r.name == "extract-and-land-acme")


@pytest.fixture
def emulator():
    from emulator import Dataset, GitHubEmulator

    with GitHubEmulator(Dataset.generate(orgs={"acme": 1}, prs_per_repo=[2], seed=3, edge_cases=False)) as emu:
        yield emu


def test_a_secret_block_without_credentials_on_the_worker_fails_at_once(flow, emulator, tmp_path, monkeypatch):
    import json

    from prefect_gcp import GcpCredentials
    from prefect_gcp.secret_manager import GcpSecret

    adc = tmp_path / "adc.json"  # only to save the block: the worker below has no credentials
    adc.write_text(json.dumps({"type": "authorized_user", "client_id": "x", "client_secret": "x", "refresh_token": "x"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    GcpSecret(gcp_credentials=GcpCredentials(project="p"), secret_name="github-token").save("no-creds", overwrite=True)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    monkeypatch.setenv("HOME", str(tmp_path))  # no gcloud application_default_credentials.json
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # no metadata server either
    monkeypatch.setenv("PR_ANALYTICS_GITHUB_TOKEN_SECRET_BLOCK", "no-creds")

    state, _ = _run(flow, emulator.url, tmp_path / "data")

    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert "acme: extract-and-land failed: ConfigurationError: GcpSecret block 'no-creds'" in message
    assert "no Google application default credentials" in message and "service_account_info" in message
    assert _extract_attempts(state) == 1


def test_a_corrupt_dlt_state_file_fails_at_once_naming_the_folder(flow, emulator, tmp_path):
    folder = tmp_path / "data" / "pipelines" / "github_acme"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text("{not json")

    state, _ = _run(flow, emulator.url, tmp_path / "data")

    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert f"ConfigurationError: dlt state in {folder} is corrupt" in message
    assert _extract_attempts(state) == 1


def test_a_server_that_is_not_github_fails_at_once(flow, tmp_path):
    import http.server
    import threading

    class Html(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"<html>not an API</html>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        state, _ = _run(flow, f"http://127.0.0.1:{server.server_port}", tmp_path / "data")
    finally:
        server.shutdown()

    assert state.is_failed()
    assert "with text/html, not JSON" in str(state.result(raise_on_failure=False))
    assert _extract_attempts(state) == 1


def test_a_dead_api_fails_within_the_connect_budget(flow, tmp_path, monkeypatch):
    import sources.github.client as client_module

    monkeypatch.setattr(client_module, "CONNECT_BUDGET", 2.0)  # the default is 20 s
    with socket.socket() as sock:  # a port nobody listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    state, _ = _run(flow, f"http://127.0.0.1:{port}", tmp_path / "data")

    assert state.is_failed()
    assert "GitHubUnreachable" in str(state.result(raise_on_failure=False))
    assert _extract_attempts(state) == 1


def test_a_server_that_never_answers_fails_the_run_once(flow, tmp_path, monkeypatch):
    monkeypatch.setenv("PR_ANALYTICS_REQUEST_TIMEOUT", "1")
    with SilentServer() as server:
        started = time.monotonic()
        state, _ = _run(flow, server.url, tmp_path / "data")
        took = time.monotonic() - started
    assert state.is_failed()
    assert "accepted the connection but sent no answer" in str(state.result(raise_on_failure=False))
    assert _extract_attempts(state) == 1  # Prefect does not repeat what the client spent
    assert took < 30


def test_an_unwritable_data_folder_fails_the_flow_before_any_task(flow, emulator, tmp_path):
    (tmp_path / "a-file").write_text("x")
    state, took = _run(flow, emulator.url, tmp_path / "a-file" / "data")
    assert state.is_failed()
    assert "cannot write" in str(state.result(raise_on_failure=False)) and took < 30


def test_a_permission_error_is_not_retried(flow, emulator, tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "landing"))

    monkeypatch.setattr(flow, "land", read_only)
    state, _ = _run(flow, emulator.url, tmp_path / "data")

    assert state.is_failed()
    assert f"Permission denied: '{tmp_path / 'landing'}'" in str(state.result(raise_on_failure=False))
    assert _extract_attempts(state) == 1


def test_an_organisation_that_failed_gets_no_report_section_and_never_replaces_the_report(flow, emulator, tmp_path):
    """Issue 19.6: a missing organisation got an empty report section, and a run of only it
    replaced the report of the ones that had synced (the demo's, after a mistyped --org)."""
    data_dir = tmp_path / "data"
    state = flow.github_analytics(orgs=["acme", "ghost"], github_url=emulator.url, data_dir=data_dir, return_state=True)
    assert state.is_failed()
    page = (data_dir / "report.html").read_text(encoding="utf-8")
    assert 'id="org-acme"' in page and 'id="org-ghost"' not in page
    before = (data_dir / "report.html").stat().st_mtime_ns

    state = flow.github_analytics(orgs=["ghost"], github_url=emulator.url, data_dir=data_dir, return_state=True)
    assert state.is_failed()
    assert (data_dir / "report.html").stat().st_mtime_ns == before
