"""The report of a warehouse filled through the real pipeline (emulator -> dlt source -> Parquet
landing -> DuckDB merge, which creates the metrics views): every number it shows is the views'."""

from __future__ import annotations

import json
import re
import statistics
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pytest

from analytics.build import write_report
from analytics.cli import main as report_main
from analytics.html import MIN_SAMPLES
from analytics.queries import ReportError
from browser import inspect_page
from emulator import Dataset, GitHubEmulator
from settings import Settings
from landing_runs import ORG, sync

WEEKS = 26
NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One warehouse for the module: two repositories, 160 pull requests and the teams (the token
    reads the organisation), merged once."""
    data_dir = tmp_path_factory.mktemp("report-pipeline")
    dataset = Dataset.generate(orgs={ORG: 2}, prs_per_repo=[100, 60], seed=4)
    with GitHubEmulator(dataset) as emulator:
        emulator.graphql.org_readers = {"x"}
        settings = Settings(orgs=[ORG], github_url=emulator.url, data_dir=data_dir, github_token="x")
        sync(settings)
    return settings


def plotted(page: str, div_id: str) -> list[dict[str, Any]]:
    """The traces plotly draws in the chart `div_id`, read back from the page's own script (or,
    for a scope's chart, drawn when first shown, from the figure waiting as JSON)."""
    match = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', page)
    if match:
        traces, _ = json.JSONDecoder().raw_decode(page, match.end())
        return traces
    lazy = re.search(r'<script type="application/json" class="lazy-chart" data-for="' + re.escape(div_id) + r'">', page)
    assert lazy, f"no chart {div_id}"
    figure, _ = json.JSONDecoder().raw_decode(page, lazy.end())
    return figure["data"]


def scope(page: str, key: str = "") -> str:
    """The part of the page of one scope: the organisation's (""), "repository:NAME", "team:SLUG"."""
    return page.split(f'<div class="scope" data-scope="{key}"')[1].split('<div class="scope" ')[0]


def cards(page: str) -> dict[str, str]:
    """The headline numbers of the organisation's scope."""
    return dict(re.findall(r'data-metric="([a-z0-9_]+)" data-value="([^"]*)"', scope(page)))


def view_rows(con: duckdb.DuckDBPyConnection, sql: str, *params: Any) -> list[tuple]:
    return con.execute(sql, list(params)).fetchall()


def test_report_shows_the_views_numbers(filled: Settings, tmp_path: Path):
    out = tmp_path / "report.html"
    written = write_report(filled.warehouse_config, out, [ORG], WEEKS, now=NOW)
    page = out.read_text(encoding="utf-8")
    (report,) = written.reports
    assert report.empty is None and report.current is not None
    # The newest merged load, from the ledger: this test's own merge, moments ago.
    assert report.last_merged_at is not None and 0 <= (datetime.now(timezone.utc) - report.last_merged_at).total_seconds() < 3600
    start, end = report.current.start, report.current.end
    previous_start = report.previous.start

    con = duckdb.connect(str(filled.duckdb_config.path), read_only=True)
    try:
        weekly = view_rows(
            con,
            "SELECT week_start, prs_opened, prs_merged, prs_closed_without_merge, time_to_first_review_p50_seconds, "
            "time_to_first_review_p90_seconds, time_to_merge_p50_seconds, time_to_merge_p75_seconds, open_prs_at_week_end, "
            "time_to_first_review_samples, time_to_merge_samples, open_ready_prs_at_week_end, prs_merged_without_review FROM github.weekly_pull_request_metrics WHERE org = ? AND repo IS NULL ORDER BY week_start", ORG,
        )
        # The period ends with the last week in which anything happened.
        active = [w for w in weekly if w[1] or w[2] or w[3]]
        assert end == active[-1][0] + timedelta(days=7)
        in_period = [w for w in weekly if start <= w[0] < end]
        assert len(in_period) == WEEKS

        # Weekly throughput and percentiles: the view's rows, week by week.
        throughput = plotted(page, "acme-throughput")
        assert [t["name"] for t in throughput] == ["opened", "merged", "closed without merge"]
        assert throughput[0]["x"] == [w[0].isoformat() for w in in_period]
        assert [t["y"] for t in throughput] == [[w[1] for w in in_period], [w[2] for w in in_period], [w[3] for w in in_period]]
        # A week's percentiles of fewer than MIN_SAMPLES pull requests are not drawn.
        merges = [w[6] if w[10] >= MIN_SAMPLES else None for w in in_period]
        assert any(merges) and None in merges, "the demo has weeks of both kinds"
        merge_chart = {t["name"]: t for t in plotted(page, "acme-time-to-merge")}
        unit = 86400 if max(w[7] or 0 for w in in_period if w[10] >= MIN_SAMPLES) > 3 * 86400 else 3600
        assert merge_chart["p50"]["y"] == [None if v is None else round(v / unit, 2) for v in merges]
        assert merge_chart["p50"]["customdata"] == [w[10] for w in in_period]
        # Work in progress (ready for review, drafts) and merged without review, week by week.
        wip = {t["name"]: t["y"] for t in plotted(page, "acme-work-in-progress")}
        assert wip == {"ready for review": [w[11] for w in in_period], "drafts": [w[8] - w[11] for w in in_period]}
        unreviewed = {t["name"]: t["y"] for t in plotted(page, "acme-merged-without-review")}
        assert unreviewed == {"reviewed": [w[2] - w[12] for w in in_period],
                              "merged without review": [w[12] for w in in_period]}
        review_chart = {t["name"]: t for t in plotted(page, "acme-time-to-first-review")}
        shown_p90 = [w[5] if w[9] >= MIN_SAMPLES else None for w in in_period]
        unit = 86400 if max(v or 0 for v in shown_p90) > 3 * 86400 else 3600
        assert review_chart["p90"]["y"] == [None if v is None else round(v / unit, 2) for v in shown_p90]

        # Headline: the same events counted straight from the views, for both periods.
        shown = cards(page)
        opened, merged, closed = (sum(w[i] for w in in_period) for i in (1, 2, 3))
        assert float(shown["prs_opened"]) == opened > 0
        assert float(shown["prs_merged"]) == merged > 0
        assert float(shown["merge_rate"]) == pytest.approx(merged / (merged + closed))
        assert float(shown["open_prs_at_end"]) == in_period[-1][8]
        before = [w for w in weekly if previous_start <= w[0] < start]
        (opened_metric,) = [m for m in report.headline if m.key == "prs_opened"]
        assert opened_metric.previous == sum(w[1] for w in before)

        def median_of(column: str, at: str, lo: date, hi: date) -> float:
            values = [r[0] for r in view_rows(
                con,
                f"SELECT {column} FROM github.pull_request_metrics WHERE org = ? AND {column} IS NOT NULL "
                f"AND {at} >= CAST(? AS TIMESTAMPTZ) AND {at} < CAST(? AS TIMESTAMPTZ)",
                ORG, f"{lo.isoformat()} 00:00:00+00", f"{hi.isoformat()} 00:00:00+00",
            )]
            return statistics.median(values)

        assert float(shown["time_to_first_review_p50"]) == median_of("time_to_first_review_seconds", "first_review_at", start, end)
        assert float(shown["time_to_merge_p50"]) == median_of("time_to_merge_seconds", "merged_at", start, end)

        # Reviewer load: the view's reviews in the period, per reviewer.
        load = dict(view_rows(
            con, "SELECT reviewer_login, SUM(reviews) FROM github.reviewer_load WHERE org = ? AND week_start >= ? "
            "AND week_start < ? GROUP BY 1", ORG, start, end,
        ))
        (bars,) = plotted(page, "acme-reviewer-load")
        assert dict(zip(bars["y"], bars["x"])) == {login: n for login, n in load.items() if login in bars["y"]}
        assert len(bars["y"]) == min(20, len(load)) and max(bars["x"]) == max(load.values())

        # The slowest open pull requests ready for review, then the oldest drafts apart: the view's
        # oldest open ones of each, with their links.
        oldest = view_rows(
            con, "SELECT html_url FROM github.pull_request_metrics WHERE org = ? AND state = 'open' "
            "AND NOT is_draft ORDER BY created_at, repo, number LIMIT 15", ORG,
        )
        drafts = view_rows(
            con, "SELECT html_url FROM github.pull_request_metrics WHERE org = ? AND state = 'open' "
            "AND is_draft ORDER BY created_at, repo, number LIMIT 5", ORG,
        )
        assert drafts, "the demo has open drafts"
        ready_table, drafts_table = (page.split(f'data-table="{kind}"')[1].split("</table>")[0]
                                     for kind in ("pull-requests-ready-for-review", "drafts"))
        assert re.findall(r'<td><a href="([^"]+)">', ready_table) == [url for (url,) in oldest]
        assert re.findall(r'<td><a href="([^"]+)">', drafts_table) == [url for (url,) in drafts]
    finally:
        con.close()


def test_report_of_the_pipeline_renders_in_chromium(filled: Settings, tmp_path: Path):
    out = tmp_path / "report.html"
    (report,) = write_report(filled.warehouse_config, out, [ORG], WEEKS, now=NOW).reports

    state = inspect_page(out, tmp_path / "report.png")

    assert state["console_errors"] == [] and state["network_requests"] == []
    assert [chart["name"] for chart in state["charts"]][:2] == ["throughput", "cycle-time-breakdown"]
    assert len(state["charts"]) == 10
    for chart in state["charts"]:
        assert not chart["empty"] and chart["points"] > 0 and chart["marks"] > 0, chart
    assert len(report.slowest_open) == 15 and report.oldest_drafts
    assert len(state["links"]) == 15 + len(report.oldest_drafts) and all(link.startswith("https://github.com/acme/") for link in state["links"])
    assert (tmp_path / "report.png").stat().st_size > 20_000


def test_unknown_organisation_is_an_honest_empty_section(filled: Settings, tmp_path: Path):
    written = write_report(filled.warehouse_config, tmp_path / "r.html", ["nobody"], WEEKS, now=NOW)
    assert written.reports[0].empty == "no pull request activity for nobody in the warehouse"
    assert "no pull request activity for nobody" in (tmp_path / "r.html").read_text()


def test_cli_writes_the_report_and_says_where(filled: Settings, tmp_path: Path, capsys):
    out = tmp_path / "cli.html"
    assert report_main(["--data-dir", str(filled.data_dir), "--out", str(out), "--weeks", "8"]) == 0
    assert capsys.readouterr().out.strip() == str(out.resolve())
    assert out.stat().st_size > 1_000_000  # plotly.js is inside


def test_cli_without_warehouse_or_views_is_one_line(tmp_path: Path, capsys):
    assert report_main(["--data-dir", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no warehouse at ") and err.count("\n") == 1
    # A warehouse from before the views: tables but no pull_request_metrics.
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("CREATE SCHEMA github; CREATE TABLE github.pull_requests (id BIGINT)")
    con.close()
    assert report_main(["--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "has no view pull_request_metrics" in err and err.count("\n") == 1
    with pytest.raises(ReportError):
        write_report(Settings(data_dir=tmp_path).warehouse_config, tmp_path / "x.html", [], WEEKS)


def test_each_repository_and_team_has_its_own_numbers(filled: Settings, tmp_path: Path):
    """The selector's scopes: a repository's charts are its rows of the weekly view, a team's its
    rows of weekly_team_metrics (quiet weeks as 0); their headline counts their pull requests."""
    out = tmp_path / "report.html"
    (report,) = write_report(filled.warehouse_config, out, [ORG], WEEKS, now=NOW).reports
    page = out.read_text(encoding="utf-8")
    assert report.current is not None
    start, end = report.current.start, report.current.end
    con = duckdb.connect(str(filled.duckdb_config.path), read_only=True)
    try:
        repos = [r for (r,) in view_rows(con, "SELECT DISTINCT repo FROM github.pull_requests ORDER BY 1")]
        teams = [t for (t,) in view_rows(con, "SELECT slug FROM github.teams WHERE org = ? ORDER BY 1", ORG)]
        assert len(repos) == 2 and teams, "two repositories and the teams"
        assert [s.scope_key for s in report.scopes] == [f"repository:{r}" for r in repos] + [f"team:{t}" for t in teams]
        options = re.findall(r'<option value="([^"]*)">', page)
        assert options == ["", *(s.scope_key for s in report.scopes)]
        for repo in repos:
            weekly = view_rows(
                con, "SELECT week_start, prs_opened, prs_merged, prs_closed_without_merge, reviews_with_comments, "
                "bare_approvals FROM github.weekly_pull_request_metrics WHERE org = ? AND repo = ? "
                "AND week_start >= ? AND week_start < ? ORDER BY week_start", ORG, repo, start, end)
            throughput = plotted(page, f"acme-repository-{repo}-throughput")
            assert throughput[0]["x"] == [w[0].isoformat() for w in weekly]
            assert [t["y"] for t in throughput] == [[w[i] for w in weekly] for i in (1, 2, 3)]
            depth = {t["name"]: t["y"] for t in plotted(page, f"acme-repository-{repo}-review-depth")}
            assert depth["reviews with comments"] == [w[4] for w in weekly]
            assert depth["bare approvals"] == [w[5] for w in weekly]
            shown = dict(re.findall(r'data-metric="([a-z0-9_]+)" data-value="([^"]*)"', scope(page, f"repository:{repo}")))
            assert float(shown["prs_opened"]) == sum(w[1] for w in weekly) > 0
        for team in teams:
            rows = dict((w, (o, m)) for w, o, m in view_rows(
                con, "SELECT week_start, prs_opened, prs_merged FROM github.weekly_team_metrics WHERE org = ? "
                "AND team_slug = ? AND week_start >= ? AND week_start < ?", ORG, team, start, end))
            throughput = plotted(page, f"acme-team-{team}-throughput")
            assert [t["name"] for t in throughput] == ["opened", "merged"]  # the team view has no closes
            weeks = [date.fromisoformat(x) for x in throughput[0]["x"]]
            assert len(weeks) == WEEKS and set(rows) <= set(weeks)
            assert [t["y"] for t in throughput] == [[rows.get(w, (0, 0))[i] for w in weeks] for i in (0, 1)]
            shown = dict(re.findall(r'data-metric="([a-z0-9_]+)" data-value="([^"]*)"', scope(page, f"team:{team}")))
            assert float(shown["prs_opened"]) == sum(o for o, _ in rows.values())
            # Open at the period's end: counted from the team's pull requests (the team view has no such column).
            [(open_at_end,)] = view_rows(
                con, "SELECT COUNT(*) FROM github.pull_request_metrics AS m JOIN github.pull_requests AS p ON p.id = m.id "
                "JOIN github.team_members AS tm ON tm.user_id = p.author_id JOIN github.teams AS t ON t.id = tm.team_id "
                "WHERE m.org = ? AND t.slug = ? AND m.created_at < CAST(? AS TIMESTAMPTZ) "
                "AND (m.closed_at IS NULL OR m.closed_at >= CAST(? AS TIMESTAMPTZ))",
                ORG, team, f"{end.isoformat()} 00:00:00+00", f"{end.isoformat()} 00:00:00+00")
            assert float(shown["open_prs_at_end"]) == open_at_end
        # Review depth of the organisation: the view's rows.
        org_depth = view_rows(
            con, "SELECT review_comments_per_merged_pr, review_comments_samples, reviews_with_comments, bare_approvals "
            "FROM github.weekly_pull_request_metrics WHERE org = ? AND repo IS NULL AND week_start >= ? "
            "AND week_start < ? ORDER BY week_start", ORG, start, end)
        depth = {t["name"]: t for t in plotted(page, "acme-review-depth")}
        assert depth["bare approvals"]["y"] == [w[3] for w in org_depth] and any(w[3] for w in org_depth)
        assert depth["inline comments per PR (mean)"]["y"] == [
            None if n < MIN_SAMPLES or v is None else round(v, 2) for v, n, *_ in org_depth]
    finally:
        con.close()

    state = inspect_page(out, tmp_path / "repository.png", scope=f"repository:{repos[0]}")
    assert state["console_errors"] == [] and state["network_requests"] == []
    assert len(state["charts"]) == 10
    for chart in state["charts"]:
        assert not chart["empty"] and 300 < chart["width"] <= chart["room"], chart
    assert dict(state["cards"])["prs_opened"] != "n/a"
    assert state["links"] and all(f"/acme/{repos[0]}/pull/" in link for link in state["links"])
    team_state = inspect_page(out, tmp_path / "team.png", scope=f"team:{teams[0]}")
    assert [c["name"] for c in team_state["charts"]] == [
        "throughput", "time-to-first-review", "time-to-merge", "review-distribution", "size-vs-merge", "reviewer-load"]
    assert team_state["console_errors"] == []
