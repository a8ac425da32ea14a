"""What a run did, per organisation, and its end-of-run summary as Markdown: printed by
`flows/run.py`, stored as a Prefect artifact by the flow."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from destinations.merge import MergeReport
from flows.extract import DATA_TABLES, LandingReport


@dataclass
class OrgResult:
    org: str
    landing: LandingReport | None = None
    merge: MergeReport | None = None
    error: str | None = None

    @property
    def unsynced(self) -> list[str]:
        """Repositories and pull requests on the retry list, and items set aside, with the reason."""
        set_aside = self.merge.loads_set_aside if self.merge else {}
        unsynced = [f"load {load_id} set aside: {why}" for load_id, why in set_aside.items()]
        if self.landing is None:
            return unsynced
        progress = self.landing.progress
        return unsynced + [
            f"{item.kind} {item.name}: {item.reason}" + (f" (next attempt {_when(item.retry_at)})" if item.retry_at else "")
            for item in progress.failed
        ] + [
            f"rejected {label}" for label in progress.rejected
        ]


@dataclass
class RunSummary:
    results: list[OrgResult] = field(default_factory=list)
    report_path: Path | None = None  # the HTML report written after the merges, if any

    @property
    def failed(self) -> list[OrgResult]:
        return [result for result in self.results if result.error]

    @property
    def partial(self) -> list[OrgResult]:
        """Organisations that landed, but not all of it: some repository or PR is still to come."""
        return [result for result in self.results if not result.error and result.unsynced]

    def partial_message(self) -> str:
        items = [f"{r.org}: {item}" for r in self.partial for item in r.unsynced]
        shown = "; ".join(items[:20]) + (f"; and {len(items) - 20} more" if len(items) > 20 else "")
        return f"partial success, {len(items)} item(s) not synced (retried on later runs): {shown}"


def dlt_command() -> str:
    """How to call this environment's `dlt` from the working directory."""
    candidate = Path(sys.executable).parent / "dlt"
    if not candidate.exists():
        return "dlt"
    try:
        return str(candidate.relative_to(Path.cwd()))
    except ValueError:
        return str(candidate)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def render_summary(summary: RunSummary) -> str:
    lines = [
        "| organisation | table | rows landed | rows merged |",
        "|---|---|---:|---:|",
    ]
    notes: list[str] = []
    for result in summary.results:
        landed = result.landing.rows if result.landing else {}
        merged = result.merge.rows_merged if result.merge else {}
        for table in DATA_TABLES:
            lines.append(
                f"| {result.org} | {table} | {landed.get(table, 0)} | {merged.get(table, 0)} |"
            )
        # Every organisation opens with its own top-level bullet, so the nested lines below
        # (warehouse, set-aside loads) never hang under the previous organisation.
        if result.error and not result.landing:
            notes.append(f"- **{result.org}** FAILED: {result.error}")
        if result.landing:
            req = result.landing.requests
            progress = result.landing.progress
            remaining = result.landing.rate_limit_remaining
            left = f", {remaining} left in the rate limit" if remaining is not None else ""
            installations = [name.removeprefix("app-installation-") for name in result.landing.credentials
                             if name.startswith("app-installation-")]
            if installations:
                left += f", through GitHub App installation {', '.join(installations)}"
            notes.append(
                f"- **{result.org}**: {req.requests} GitHub requests, {req.cost} counted against "
                f"the rate limit, {req.not_modified} answered 304 (free), {req.retries} retried"
                f"{left}; {counted(progress.repositories_done, 'repository', 'repositories')} synced "
                f"({progress.repositories_unchanged} unchanged)."
            )
            if progress.stopped_early:
                notes.append(
                    f"  - stopped early, resumes on the next run: {progress.stopped_early}"
                )
            if progress.graphql_pull_requests or progress.graphql_points:
                per_pr = progress.graphql_points / max(1, progress.graphql_pull_requests)
                notes.append(
                    f"  - GraphQL: {progress.graphql_points} points for the child lists of "
                    f"{progress.graphql_pull_requests} pull request(s) ({per_pr:.2f} points per pull request)"
                )
            if progress.graphql_fallback:
                notes.append(f"  - GraphQL refused ({progress.graphql_fallback}): child lists over REST")
            if progress.full_refresh:
                notes.append("  - full refresh: every repository's listing started over (a refresh stopped "
                             "halfway is finished by the next run, with or without --full-refresh)")
            if progress.retry_now or (progress.full_refresh and progress.retried_now):
                notes.append(
                    f"  - {'--retry-now' if progress.retry_now else 'full refresh'}: every item on the retry "
                    f"list was due; {progress.retried_now} retried ahead of its backoff"
                )
            if progress.chunks > 1:
                notes.append(f"  - committed in {progress.chunks} chunks")
            if progress.reconciled_pull_requests:
                notes.append(
                    f"  - reconciliation: reviews of {progress.reconciled_pull_requests} recently "
                    f"updated pull request(s) re-read ({progress.reconcile_requests} requests)"
                )
            for item in progress.failed:
                when = f", next attempt {_when(item.retry_at)}" if item.retry_at else ""
                notes.append(f"  - NOT SYNCED {item.kind} `{item.name}`: {item.reason}{when}")
            for label in progress.rejected:
                notes.append(f"  - REJECTED (malformed, kept in `rejected_items`): {label}")
            notes.append(f"  - landing: `{result.landing.landing_url}`")
            notes.append(
                f"  - state: `{dlt_command()} pipeline --pipelines-dir "
                f"{result.landing.pipelines_dir} {result.landing.pipeline_name} info`"
            )
        if result.landing and result.landing.loads_refetched:
            notes.append(
                f"  - fetched again what load(s) {', '.join(result.landing.loads_refetched)} held "
                "(set aside by an earlier merge)"
            )
        if result.merge:
            notes.append(
                f"  - warehouse: {result.merge.warehouse} "
                f"({len(result.merge.loads_merged)} load(s) merged)"
            )
            for load_id, why in result.merge.loads_set_aside.items():
                notes.append(f"  - SET ASIDE load {load_id} (its rows are fetched again next run): {why}")
        if result.error and result.landing:
            notes.append(f"  - FAILED: {result.error}")
    if summary.report_path is not None:
        notes.append(f"- report: `{summary.report_path.resolve()}`")
    return "\n".join(["## GitHub pull-request analytics run", "", *lines, "", *notes])


def counted(n: int, one: str, many: str) -> str:
    """`1 repository`, `3 repositories`."""
    return f"{n} {one if n == 1 else many}"
