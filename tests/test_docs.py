"""The README and docs/ name only what exists (issue 19: the README had grown to 860 lines, and
docs/deployment.md still named a constant that had become a setting).

Checked in README.md and docs/*.md:
- every `./dev <command>` is a case of the `dev` script;
- every repository path is there. A repository path is a word of an inline code span, of a fenced
  code block or a link target whose first part is a top-level file or folder that git tracks
  (`flows/run.py`, `settings.py`, `docs/metrics.md`, `tests/test_*.py`); `data/...`, `.venv/...`,
  `gs://...` and the like are no repository paths. It must exist, or match a file when it holds
  a `*`, or be a file git ignores on purpose (`.dlt/secrets.toml`, `bench/results/`). A word
  with a placeholder (`<`, `{`, `...`) is not checked;
- every `PR_ANALYTICS_<NAME>` is a setting: a field of `settings.Settings` (env prefix
  `PR_ANALYTICS_`; the fields of `DuckDBConfig` and `SnowflakeConfig` nested with `__`; fields
  read under an alias of their own, such as `GITHUB_TOKEN`, have no `PR_ANALYTICS_` name) or a
  name the code reads from `os.environ` itself. `PR_ANALYTICS_SNOWFLAKE__*` must match one;
- no setting is named without its prefix (`GITHUB_CONCURRENCY_LIMIT` alone in an inline code span);
- every relative link resolves: the file exists, and a `#anchor` into a Markdown file is one
  of its headings (GitHub's heading ids);
- README.md has at most 200 lines.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


DOCS = pytest.mark.parametrize("doc", documents(), ids=doc_id)

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def code_words(text: str) -> list[str]:
    """The words of inline code spans and fenced code blocks."""
    words = []
    for block in FENCE.findall(text):
        words += block.split("\n", 1)[1].split() if "\n" in block else []
    for span in INLINE_CODE.findall(FENCE.sub("", text)):
        words += span.split()
    return words


def link_targets(text: str) -> list[str]:
    return LINK.findall(FENCE.sub("", text))


# --- ./dev commands ---------------------------------------------------------------------------


def dev_commands() -> set[str]:
    script = (ROOT / "dev").read_text()
    body = script[script.index('case "$cmd" in'):script.index("esac")]
    return {name for labels in re.findall(r"^\s+([a-z|-]+)\)", body, re.M) for name in labels.split("|")}


@DOCS
def test_every_dev_command_mentioned_exists(doc: Path):
    known = dev_commands()
    mentioned = set(re.findall(r"\./dev\s+([a-z][a-z-]*)", doc.read_text()))
    assert mentioned - known == set(), f"./dev has the commands {sorted(known)}"


# --- repository paths -------------------------------------------------------------------------


def tracked_top_level() -> set[str]:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {line.split("/")[0] for line in files.splitlines() if line}


def git_ignores(path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT).returncode == 0


def repository_path(word: str, top: set[str]) -> str | None:
    """The repository path a word names, or None when it names none (see the module's rule)."""
    word = word.strip("()[],;:\"'").removeprefix("./")
    word = re.sub(r":\d+$", "", word)  # file.py:123
    if any(mark in word for mark in ("<", ">", "{", "}", "...", "…", "://", "=", "$")):
        return None
    if not re.fullmatch(r"[\w.*-]+(/[\w.*-]+)*/?", word):
        return None
    return word if word.split("/")[0] in top else None


def missing_paths(doc: Path) -> list[str]:
    top = tracked_top_level()
    text = doc.read_text()
    words = code_words(text) + [target.split("#")[0] for target in link_targets(text) if "://" not in target]
    missing = []
    for word in words:
        path = repository_path(word, top)
        if path is None:
            continue
        if "*" in path:
            found = list(ROOT.glob(path))
        else:
            found = (ROOT / path).exists() or git_ignores(path)
        if not found:
            missing.append(path)
    return sorted(set(missing))


@DOCS
def test_every_repository_path_mentioned_exists(doc: Path):
    assert missing_paths(doc) == []


def test_the_path_rule_checks_repository_paths_only():
    top = tracked_top_level()
    assert repository_path("flows/run.py", top) == "flows/run.py"
    assert repository_path("settings.py", top) == "settings.py"
    assert repository_path("(destinations/handoff.py),", top) == "destinations/handoff.py"
    assert repository_path("tests/test_*.py", top) == "tests/test_*.py"
    for not_ours in ("data/landing", "./data/warehouse.duckdb", ".venv/bin/dlt", "gs://bucket/prefix",
                     "github/_manifests/<pipeline>/<load id>.json", "DATA_DIR/logs", "run.py", "--data-dir"):
        assert repository_path(not_ours, top) is None, not_ours
    assert git_ignores(".dlt/secrets.toml") and not git_ignores("flows/settings.py")


# --- settings ---------------------------------------------------------------------------------


def setting_names() -> set[str]:
    """Every PR_ANALYTICS_ name a run reads: Settings' fields (nested models with __) and the
    names the code reads from os.environ directly."""
    from settings import Settings

    names = set()
    for field_name, field in Settings.model_fields.items():
        if field.validation_alias is not None:
            continue  # read under its own names (GITHUB_TOKEN, GITHUB_API_URL), without the prefix
        names.add(f"PR_ANALYTICS_{field_name.upper()}")
        for model in getattr(field.annotation, "__args__", (field.annotation,)):
            if isinstance(model, type) and issubclass(model, BaseModel):
                names |= {f"PR_ANALYTICS_{field_name.upper()}__{sub.upper()}" for sub in model.model_fields}
    read_directly = re.compile(r"""os\.(?:environ(?:\.get|\.setdefault|\.pop)?|getenv)[(\[]\s*["'](PR_ANALYTICS_\w+)""")
    for folder in ("sources", "destinations", "analytics", "flows"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(read_directly.findall(path.read_text(encoding="utf-8")))
    names |= set(read_directly.findall((ROOT / "settings.py").read_text(encoding="utf-8")))
    return names


def unknown_settings(text: str, names: set[str]) -> list[str]:
    unknown = []
    for name, wildcard in re.findall(r"(PR_ANALYTICS_[A-Z0-9_]*)(\*|<)?", text):
        if wildcard == "<" or (name == "PR_ANALYTICS_" and not wildcard):
            continue  # PR_ANALYTICS_<NAME>, or the prefix alone: no setting named
        if wildcard == "*":
            if not any(known.startswith(name) for known in names):
                unknown.append(name + "*")
        elif name not in names:
            unknown.append(name)
    return sorted(set(unknown))


def settings_without_prefix(text: str) -> list[str]:
    from settings import Settings

    bare = {name.upper() for name, field in Settings.model_fields.items() if field.validation_alias is None}
    return sorted({span for span in INLINE_CODE.findall(text) if span in bare})


@DOCS
def test_every_setting_mentioned_exists(doc: Path):
    text = doc.read_text()
    assert unknown_settings(text, setting_names()) == []
    assert settings_without_prefix(text) == [], "a setting is PR_ANALYTICS_<NAME>"


def test_the_setting_rule():
    names = setting_names()
    assert {"PR_ANALYTICS_ORGS", "PR_ANALYTICS_SNOWFLAKE__ACCOUNT", "PR_ANALYTICS_DUCKDB__LOCK_TIMEOUT_SECONDS",
            "PR_ANALYTICS_GITHUB_CONCURRENCY_LIMIT", "PR_ANALYTICS_PREFECT_SERVER_IDLE_MINUTES"} <= names
    assert "PR_ANALYTICS_GITHUB_TOKEN" not in names  # GITHUB_TOKEN, without the prefix
    text = "PR_ANALYTICS_<NAME> PR_ANALYTICS_ PR_ANALYTICS_SNOWFLAKE__* PR_ANALYTICS_GITHUB_APP_* PR_ANALYTICS_SNOWFLAKE__ACOUNT"
    assert unknown_settings(text, names) == ["PR_ANALYTICS_SNOWFLAKE__ACOUNT"]
    assert settings_without_prefix("its own limit name (`GITHUB_CONCURRENCY_LIMIT`)") == ["GITHUB_CONCURRENCY_LIMIT"]


# --- links and length -------------------------------------------------------------------------


def heading_ids(markdown: Path) -> set[str]:
    """GitHub's ids of a Markdown file's headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated id suffixed -1, -2, ..."""
    ids: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", FENCE.sub("", markdown.read_text()), re.M):
        base = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        slug, n = base, 0
        while slug in ids:
            n += 1
            slug = f"{base}-{n}"
        ids.add(slug)
    return ids


def broken_links(doc: Path) -> list[str]:
    broken = []
    for target in link_targets(doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in heading_ids(resolved):
            broken.append(target)
    return broken


@DOCS
def test_every_relative_link_resolves(doc: Path):
    assert broken_links(doc) == []


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; reference material goes to docs/"
