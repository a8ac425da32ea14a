"""A local Prefect API server that outlives one run, so that the next local run reuses it.

Without PREFECT_API_URL, Prefect 3.9 starts a temporary API server for every `python flows/run.py`
(`SubprocessASGIServer`: uvicorn serving `prefect.server.api.server.create_app` in a child
process) and stops it at exit. On a 2-core machine that start costs 10-18 s, most of a no-change
run. This module starts the same application (ephemeral services, no UI) in a detached process
that stops itself after `idle_seconds` without a request or an open connection, and records its
address in `$PREFECT_HOME/pr-analytics-server.json`. A later run with the same PREFECT_HOME,
Python and Prefect version finds it answering and uses it: Prefect still orchestrates (flow and
task runs, states, retries), only the server start is gone.

`python flows/prefect_server.py --port P --idle-seconds S` is the server process itself;
`python flows/prefect_server.py --stop` stops the one recorded in this PREFECT_HOME.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path
from typing import Any

STATE_FILE = "pr-analytics-server.json"
LOG_FILE = "pr-analytics-server.log"


def _identity() -> dict[str, str]:
    """What a reused server must share with this run: the interpreter and Prefect's version."""
    return {"python": sys.executable, "prefect": version("prefect")}


def healthy(api_url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def running_server(home: Path) -> str | None:
    """The API URL of the server recorded in `home`, if it answers and matches this run."""
    try:
        state = json.loads((home / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if {k: state.get(k) for k in _identity()} != _identity():
        return None  # another interpreter or Prefect version: start a server of our own
    url = state.get("api_url")
    return url if isinstance(url, str) and healthy(url) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(home: Path, idle_seconds: int) -> tuple[str, subprocess.Popen[bytes]]:
    """Start a detached server (its own session: it outlives this run) and record it in `home`.
    Returns at once; `wait_until_healthy` waits for it, so the caller can work meanwhile."""
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    with open(home / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--port", str(port),
             "--idle-seconds", str(idle_seconds)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "0"},
            start_new_session=True,
        )
    state = {"api_url": api_url, "pid": process.pid, **_identity()}
    (home / STATE_FILE).write_text(json.dumps(state))
    return api_url, process


def wait_until_healthy(api_url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the local Prefect server exited with code {process.returncode}")
        if healthy(api_url, timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the local Prefect server at {api_url} did not answer within {timeout:.0f} s")


def stop_server(home: Path) -> bool:
    """Stop the server recorded in `home` (tests, or to free its memory); False if none was."""
    import signal

    try:
        pid = int(json.loads((home / STATE_FILE).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    answering = running_server(home) is not None  # else the pid may be another process's by now
    (home / STATE_FILE).unlink(missing_ok=True)
    if not answering:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


# ------------------------------------------------------------------------------ server process
def serve(port: int, idle_seconds: int) -> None:
    """Prefect's API as `SubprocessASGIServer` runs it, plus an exit after `idle_seconds` with
    no request and no open connection (a running flow keeps its events websocket open)."""
    import uvicorn

    from prefect.server.api.server import create_app

    app = create_app(ephemeral=True, final=True)
    active = [0]
    last = [time.monotonic()]

    async def tracked(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await app(scope, receive, send)
        active[0] += 1
        try:
            await app(scope, receive, send)
        finally:
            active[0] -= 1
            last[0] = time.monotonic()

    server = uvicorn.Server(uvicorn.Config(tracked, host="127.0.0.1", port=port,
                                           log_level="error", lifespan="on"))

    def watch() -> None:
        while not server.should_exit:
            time.sleep(1)
            if not server.started:  # idle time counts from the end of the start-up
                last[0] = time.monotonic()
            elif active[0] == 0 and time.monotonic() - last[0] > idle_seconds:
                server.should_exit = True

    threading.Thread(target=watch, name="idle-watch", daemon=True).start()
    server.run()


if __name__ == "__main__":
    # Run as a script: its folder (flows/) must not shadow top-level modules in the server.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    parser = argparse.ArgumentParser(description="A local Prefect server that stops when idle.")
    parser.add_argument("--port", type=int)
    parser.add_argument("--idle-seconds", type=int, default=1800)
    parser.add_argument("--stop", action="store_true", help="stop the server of this PREFECT_HOME")
    options = parser.parse_args()
    if options.stop:
        from prefect.settings import get_current_settings

        home = get_current_settings().home
        print(f"stopped the local Prefect server of {home}" if stop_server(home) else f"no local Prefect server in {home}")
    elif options.port is None:
        parser.error("--port is required to serve")
    else:
        serve(options.port, options.idle_seconds)
