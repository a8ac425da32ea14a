"""The report as a person sees it: opened from disk in headless Chromium with no network, every
chart drawn with data, no console error, a screenshot under the test's tmp folder."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from analytics.html import render
from analytics.periods import org_report
from browser import inspect_page
from report_rows import busy_org

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
CHARTS = ("throughput", "cycle-time-breakdown", "work-in-progress", "merged-without-review", "review-depth",
          "time-to-first-review", "time-to-merge", "review-distribution", "size-vs-merge", "reviewer-load")


def test_report_renders_every_chart_with_data_offline(tmp_path: Path):
    prs, weeks, reviewers = busy_org()
    report = org_report("acme", prs, weeks, reviewers, 8, NOW)
    html_file = tmp_path / "report.html"
    html_file.write_text(render([report], NOW, "duckdb:test"), encoding="utf-8")
    screenshot = tmp_path / "report.png"

    state = inspect_page(html_file, screenshot)

    assert state["console_errors"] == []
    assert state["network_requests"] == []
    assert [chart["name"] for chart in state["charts"]] == list(CHARTS)
    for chart in state["charts"]:
        assert not chart["empty"], chart
        assert chart["traces"] > 0 and chart["points"] > 0 and chart["marks"] > 0, chart
        assert 300 < chart["width"] <= chart["room"] and chart["height"] > 200, chart  # drawn, and fits its box
    assert [key for key, _ in state["cards"]] == [
        "prs_opened", "prs_merged", "merge_rate", "time_to_first_review_p50", "time_to_merge_p50", "open_prs_at_end",
    ]
    assert all(value.strip() for _, value in state["cards"])
    open_prs = [pr for pr in prs if pr.state == "open"]
    assert state["links"] and set(state["links"]) <= {pr.html_url for pr in open_prs}
    assert screenshot.stat().st_size > 20_000  # a picture of the page, not a blank one
