"""The fleet benchmark (issue 21): `github-analytics-fleet/fleet` as deployed, over several
organisations of the emulator, each through its own installation of one GitHub App, once with
one process worker and once with two.

A real `prefect server start` in its own PREFECT_HOME, the work pool, `prefect --no-prompt deploy
--all` of prefect.yaml unchanged, then per round: fresh data dir, the emulator's counts and rate
limits reset, N workers (`--limit 2` each), one fleet run, its wall time from `prefect deployment
run` to the parent's final state, and each installation's REST and GraphQL budget use (the
emulator's `/_emulator/callers`). Every process is started in its own process group and killed
with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKER_LIMIT = 2  # about the cores of a worker (docs/deployment.md), and the parent holds one
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            yield proc
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(10)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue


def _prefect(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _prefect_env(home: Path, api: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PREFECT_HOME": str(home),
           "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
           "RUNTIME__DLTHUB_TELEMETRY": "false", "DO_NOT_TRACK": "1"}
    for name in list(env):
        if name.startswith(("GITHUB_", "PR_ANALYTICS_", "SOURCES__GITHUB__", "GOOGLE_")):
            del env[name]
    return env


def fleet_rounds(emulator_url: str, orgs: list[str], app_id: str, key: Path, work: Path,
                 progress: Callable[[str], None], workers: tuple[int, ...] = (1, 2)) -> list[dict[str, Any]]:
    """One fleet run over `orgs` per entry of `workers` (that many workers), each into a fresh
    data dir: its wall time, the parent's and children's states, and each caller's budget use."""
    from flows.prefect_server import _free_port, healthy

    home = work / "fleet-prefect"
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _prefect_env(home, api)
    worker_env = {**env, "PR_ANALYTICS_GITHUB_APP_ID": app_id, "PR_ANALYTICS_GITHUB_APP_PRIVATE_KEY_PATH": str(key),
                  "PR_ANALYTICS_GITHUB_API_MODE": "graphql",  # explicit, as every bench run
                  "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
    rounds: list[dict[str, Any]] = []
    home.mkdir(parents=True, exist_ok=True)
    with _process([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                  env, home / "server.log") as server:
        deadline = time.monotonic() + 120
        while not healthy(api):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        _prefect(env, "work-pool", "create", "github-analytics", "--type", "process")
        _prefect(env, "--no-prompt", "deploy", "--all")
        for n in workers:
            progress(f"fleet: {len(orgs)} organisations, {n} worker(s)")
            _post(f"{emulator_url}/_emulator/reset_stats", {})
            _post(f"{emulator_url}/_emulator/reset_rate_limit", {})
            data_dir = work / f"fleet-{n}-workers"
            with _workers(n, worker_env, home):
                listed = json.dumps(orgs)
                started = time.monotonic()
                out = _prefect(env, "deployment", "run", "github-analytics-fleet/fleet", "-p", f"orgs={listed}",
                               "-p", f"github_url={emulator_url}", "-p", f"data_dir={data_dir}")
                parent_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)
                parent = _wait_final(api, parent_id)
                wall = time.monotonic() - started
                children = _children(api, parent_id)
            rounds.append({
                "workers": n, "wall": wall, "data_dir": str(data_dir),
                "parent": (parent.get("state") or {}).get("name"),
                "message": (parent.get("state") or {}).get("message"),
                "children": {run["parameters"]["orgs"][0]: (run.get("state") or {}).get("name") for run in children},
                "callers": _get(f"{emulator_url}/_emulator/callers"),
            })
    return rounds


@contextmanager
def _workers(n: int, env: dict[str, str], home: Path) -> Iterator[None]:
    with ExitStack() as stack:
        for i in range(1, n + 1):
            stack.enter_context(_process([str(BIN / "prefect"), "worker", "start", "--pool", "github-analytics",
                                          "--name", f"worker-{i}", "--limit", str(WORKER_LIMIT)],
                                         env, home / f"worker-{i}.log"))
        yield


def _wait_final(api: str, flow_run_id: str, seconds: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        run = _get(f"{api}/flow_runs/{flow_run_id}")
        if (run.get("state") or {}).get("type") in FINAL or time.monotonic() > deadline:
            return run
        time.sleep(1)


def _children(api: str, parent_id: str) -> list[dict[str, Any]]:
    tasks = _post(f"{api}/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [parent_id]}}, "limit": 200})
    task_ids = {task["id"] for task in tasks}
    runs = _post(f"{api}/flow_runs/filter", {"limit": 200})
    return [run for run in runs if run.get("parent_task_run_id") in task_ids]


def warehouse_counts(data_dir: str) -> dict[str, int]:
    """Pull requests per organisation in the round's warehouse, and the duplicates."""
    import duckdb

    con = duckdb.connect(str(Path(data_dir) / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.sql("SELECT org, COUNT(*), COUNT(DISTINCT id) FROM github.pull_requests GROUP BY org").fetchall()
    finally:
        con.close()
    return {org: total if total == distinct else -1 for org, total, distinct in rows}


def fleet_report(rounds: list[dict[str, Any]], installations: dict[str, int], minimum: dict[str, dict[str, int]],
                 expected_prs: dict[str, int]) -> list[str]:
    """The table: per round, wall time and each installation's REST cost and GraphQL points
    against the least a cold sync of its organisation can spend."""
    lines = ["| workers | wall s | parent | organisations completed | REST cost per installation (min) | "
             "GraphQL points per installation (min) | warehouse exact |",
             "|---:|---:|---|---:|---|---|---|"]
    for r in rounds:
        rest = ", ".join(f"{r['callers'].get(f'installation:{i}', {}).get('rest_used', 0)} ({minimum[org]['rest_cost']})"
                         for org, i in installations.items())
        points = ", ".join(f"{r['callers'].get(f'installation:{i}', {}).get('graphql_used', 0)} ({minimum[org]['points']})"
                           for org, i in installations.items())
        completed = sum(state == "Completed" for state in r["children"].values())
        exact = r["warehouse"] == expected_prs
        lines.append(f"| {r['workers']} | {r['wall']:.1f} | {r['parent']} | {completed}/{len(installations)} | "
                     f"{rest} | {points} | {'yes' if exact else 'no: ' + str(r['warehouse'])} |")
    return lines


def fleet_checks(rounds: list[dict[str, Any]], installations: dict[str, int], minimum: dict[str, dict[str, int]],
                 expected_prs: dict[str, int]) -> list[tuple[str, bool | None, str]]:
    checks: list[tuple[str, bool | None, str]] = []
    for r in rounds:
        name = f"fleet, {r['workers']} worker(s)"
        done = r["parent"] == "Completed" and all(s == "Completed" for s in r["children"].values()) \
            and set(r["children"]) == set(installations)
        checks.append((f"{name}: every organisation's run Completed, warehouse exact", done and r["warehouse"] == expected_prs,
                       f"parent {r['parent']}, children {r['children']}, pull requests {r['warehouse']}"))
        callers = {c for c in r["callers"] if c.startswith("installation:")}
        at_min = all(r["callers"].get(f"installation:{i}", {}).get("rest_used") == minimum[org]["rest_cost"]
                     for org, i in installations.items())
        checks.append((f"{name}: each installation spent only its organisation's REST minimum",
                       at_min and callers == {f"installation:{i}" for i in installations.values()},
                       f"{len(callers)} installations; REST cost == minimum for each: {at_min}"))
        over = {org: r["callers"].get(f"installation:{i}", {}).get("graphql_used", 0) - minimum[org]["points"]
                for org, i in installations.items()}
        checks.append((f"(info) {name}: GraphQL points per installation == minimum (every batch at the ceiling)",
                       not any(over.values()), f"points over the minimum per organisation: {over}"))
    if len(rounds) >= 2:
        one, two = rounds[0]["wall"], rounds[1]["wall"]
        checks.append((f"(info) fleet: wall time with two workers vs one on this {os.cpu_count()}-CPU machine", True,
                       f"{one:.1f} s with one worker, {two:.1f} s with two ({one / two:.2f}x)"))
    return checks
