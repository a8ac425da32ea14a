"""Errors that can never succeed fail at once, with one line naming the cause and the path or
setting: bad arguments before Prefect starts, and permanent errors inside the flow unretried."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PR_ANALYTICS_"))}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "flows/run.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - started


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--org", "not_a_login!"), "invalid organisation 'not_a_login!'"),
        (("--org", "acme", "--github-url", "api.github.com"), "github_url is not an http(s) URL"),
        (("--org", "acme", "--since", "2999-01-01"), "since 2999-01-01 is in the future"),
    ],
)
def test_bad_arguments_are_refused_before_prefect_starts(args, expected):
    done, seconds = run_cli(*args)

    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [f"error: {done.stderr.strip().removeprefix('error: ')}"]
    assert expected in done.stderr
    assert "Traceback" not in done.stderr and "prefect" not in (done.stdout + done.stderr).lower()
    assert seconds < 10  # a Prefect start alone takes 12-18 s


def test_a_bad_organisation_is_refused_in_under_a_second():
    done, seconds = run_cli("--org", "bad_org")

    assert done.returncode == 2 and "invalid organisation 'bad_org'" in done.stderr
    assert seconds < 1.0


def test_a_file_where_the_data_folder_should_be_is_refused(tmp_path):
    data = tmp_path / "data"
    data.write_text("not a folder")

    done, _ = run_cli("--org", "acme", "--data-dir", str(data))

    assert done.returncode == 2
    assert done.stderr.strip() == f"error: data_dir: {data} is a file, not a folder"
