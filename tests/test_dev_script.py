"""`./dev`, the one entry point: on a machine without .venv it says what each slow step does
(issue 19.7: the first command was silent for half a minute); once set up, it says nothing.
The interpreter, pip and uv are stand-ins that only record what they were asked to do."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A stand-in interpreter: `-m venv DIR` makes DIR/bin/python (this same script); `-m pip install`
# makes the venv's uv; anything else (compileall, flows/run.py) is recorded and succeeds.
_PYTHON = """#!/usr/bin/env bash
echo "python $*" >> "$DEV_CALLS"
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; exit 0; fi
if [ "$1 $2 $3" = "-m pip install" ]; then
  printf '#!/usr/bin/env bash\\necho "uv $*" >> "$DEV_CALLS"\\n' > "$(dirname "$0")/uv"; chmod +x "$(dirname "$0")/uv"
fi
if [ "$1" = "--version" ]; then echo "Python 3.11.9"; fi
exit 0
"""


def run_dev(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": str(folder / "python3.11"), "DEV_CALLS": str(folder / "calls.txt")}
    return subprocess.run([str(folder / "dev"), *args], cwd=folder, env=env, capture_output=True, text=True, timeout=60)


def test_the_first_run_says_what_each_slow_step_does_and_a_set_up_one_says_nothing(tmp_path):
    for name in ("dev", "requirements.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    interpreter = tmp_path / "python3.11"
    interpreter.write_text(_PYTHON)
    interpreter.chmod(interpreter.stat().st_mode | stat.S_IEXEC)

    first = run_dev(tmp_path, "demo")
    assert first.returncode == 0, first.stderr
    said = [line for line in first.stderr.splitlines() if line.startswith("dev: ")]
    packages = sum("==" in line for line in (ROOT / "requirements.lock").read_text().splitlines())
    assert said == [
        "dev: first run: creating the virtualenv .venv with Python 3.11.9",
        "dev: installing uv 0.13.8 (the installer)",
        f"dev: installing the {packages} pinned packages of requirements.lock",
        "dev: compiling the installed modules to bytecode (once)",
        "dev: ready",
    ]
    assert "python flows/run.py --demo" in (tmp_path / "calls.txt").read_text()

    again = run_dev(tmp_path, "demo")
    assert again.returncode == 0 and again.stderr == ""
