"""The folders are layers: a module imports only from its own folder and the ones below it, so
a newcomer can read the architecture from the names (issue 19: `analytics` imported the flows'
settings while the flows import `analytics`, the one import that ran back up).

    flows       the Prefect flow and the CLI: everything below
    analytics   the report, from the warehouse
    settings    one run's settings (settings.py)
    destinations  the landing, the handoff, the warehouse merge
    sources     the GitHub source
The emulator (a stand-in for GitHub, for tests and the demo) stands apart: nothing imports it
but the CLI's --demo, the tests and the bench."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["sources", "destinations", "settings", "analytics", "flows"]
OURS = set(LAYERS) | {"emulator"}


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


def layer_files(layer: str) -> list[Path]:
    return [ROOT / "settings.py"] if layer == "settings" else sorted((ROOT / layer).rglob("*.py"))


def test_each_layer_imports_only_from_itself_and_the_layers_below():
    wrong = []
    for rank, layer in enumerate(LAYERS):
        allowed = set(LAYERS[: rank + 1])
        for path in layer_files(layer):
            extra = imports_of(path) - allowed - ({"emulator"} if path == ROOT / "flows" / "run.py" else set())
            if extra:
                wrong.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}")
    assert wrong == []


def test_the_emulator_stands_apart():
    wrong = [f"{p.relative_to(ROOT)} imports {sorted(imports_of(p) - {'emulator', 'sources'})}"
             for p in layer_files("emulator") if imports_of(p) - {"emulator", "sources"}]
    assert wrong == []
