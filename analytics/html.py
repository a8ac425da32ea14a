"""The report as one self-contained HTML page: plotly.js inlined once, every chart's data inline.

No CDN, no server, no network: the file opens offline in any browser. Each chart sits in a
`<figure class="chart" data-chart="NAME">`; a chart with no data in the period says so in
place of the chart, never draws an empty frame.

An organisation's section holds its own numbers and, hidden until chosen in its selector, those
of its most active repositories and largest teams (`<div class="scope" data-scope="KIND:NAME">`):
the page stays one file, and switching needs no network.
"""

from __future__ import annotations

import functools
import html
import re
from datetime import datetime, timedelta, timezone

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from analytics.periods import DAY, HOUR, Metric, OpenPullRequest, OrgReport

_CONFIG = {"displaylogo": False, "responsive": True}
_COLOURS = {"opened": "#4c78a8", "merged": "#54a24b", "closed": "#e45756", "p50": "#4c78a8", "p75": "#f58518", "p90": "#e45756",
            "coding": "#72b7b2", "pickup": "#f58518", "review": "#4c78a8", "cycle": "#222222"}
# A week's percentile of fewer values than this is not drawn: a p90 of two pull requests says little.
MIN_SAMPLES = 3


def duration(seconds: float | None) -> str:
    """3 min, 5.2 h, 3.1 d: the unit a person reads at a glance."""
    if seconds is None:
        return "n/a"
    if abs(seconds) < HOUR:
        return f"{seconds / 60:.0f} min"
    if abs(seconds) < 2 * DAY:
        return f"{seconds / HOUR:.1f} h"
    return f"{seconds / DAY:.1f} d"


def metric_value(metric: Metric, *, previous: bool = False) -> str:
    """The metric's current (or previous) value as a person reads it: 12, 67%, 5.2 h."""
    value = metric.previous if previous else metric.current
    if value is None:
        return "n/a"
    if metric.unit == "ratio":
        return f"{value:.0%}"
    if metric.unit == "seconds":
        return duration(value)
    return f"{value:,.0f}"


def metric_change(metric: Metric) -> str:
    """'+12 (+15%)', '-2.0 h (-10%)', 'no previous data'."""
    change = metric.change
    if change is None:
        return "no data to compare" if metric.current is None else "no previous data"
    if metric.unit == "ratio":
        text = f"{change * 100:+.0f} pts"
    elif metric.unit == "seconds":
        text = ("+" if change >= 0 else "-") + duration(abs(change))
    else:
        text = f"{change:+,.0f}"
    ratio = metric.change_ratio
    if ratio is not None and metric.unit != "ratio":
        text += f" ({ratio:+.0%})"
    return text


@functools.cache
def _template() -> dict:
    return pio.templates["plotly_white"].to_plotly_json()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _chart(org: str, name: str, title: str, figure: go.Figure | None, empty: str, note: str = "",
           scope: str = "") -> str:
    """A chart in its <figure>. A scope's (hidden until chosen) is drawn when first shown: its
    figure waits as JSON, so that the page loads as fast as with the organisation's charts alone."""
    head = f"<h3>{html.escape(title)}</h3>" + (f'<p class="note chart-note">{html.escape(note)}</p>' if note else "")
    if figure is None:
        return f'<figure class="chart empty" data-chart="{name}">{head}<p class="note">{html.escape(empty)}</p></figure>'
    # The common layout goes onto the figure's JSON: set through plotly's objects, the template is
    # deep-copied and validated per figure (6 of the 7.5 s of a page of 118 charts).
    spec = figure.to_plotly_json()
    layout = spec["layout"]
    layout.setdefault("height", 340)
    layout.update(margin={"l": 60, "r": 20, "t": 30, "b": 50}, template=_template(), autosize=True,
                  legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
                  font={"family": "system-ui, sans-serif", "size": 12})
    div_id = "-".join(filter(None, (_slug(org), scope, name)))
    if scope:
        figure_json = pio.to_json({**spec, "config": _CONFIG}, validate=False).replace("</", "<\\/")
        body = (f'<div id="{div_id}" class="plotly-graph-div" style="height:{layout["height"]}px; width:100%;"></div>'
                f'<script type="application/json" class="lazy-chart" data-for="{div_id}">{figure_json}</script>')
    else:
        body = pio.to_html(spec, validate=False, full_html=False, include_plotlyjs=False, div_id=div_id,
                           config=_CONFIG)
    return f'<figure class="chart" data-chart="{name}">{head}{body}</figure>'


def _weeks_x(report: OrgReport) -> list[str]:
    return [week.week_start.isoformat() for week in report.weeks]


def _count_axis(top: float) -> dict:
    """A y axis of counts: whole numbers only while they are few (plotly would tick 0.5)."""
    return {"rangemode": "tozero", "tick0": 0, "dtick": 1} if top <= 10 else {"rangemode": "tozero"}


def throughput_figure(report: OrgReport) -> go.Figure | None:
    if not report.weeks:
        return None
    x = _weeks_x(report)
    figure = go.Figure()
    series = [
        ("opened", [w.prs_opened for w in report.weeks], _COLOURS["opened"]),
        ("merged", [w.prs_merged for w in report.weeks], _COLOURS["merged"]),
        ("closed without merge", [w.prs_closed_without_merge for w in report.weeks], _COLOURS["closed"]),
    ]
    shown = series[:2] if report.scope_kind == "team" else series  # a team's view has no closes
    for name, values, colour in shown:
        figure.add_bar(x=x, y=values, name=name, marker_color=colour)
    figure.update_layout(barmode="group", xaxis_title="week starting", yaxis_title="pull requests",
                         yaxis=_count_axis(max(v for _, values, _ in shown for v in values)))
    return figure


def _unit(values: list[float]) -> tuple[float, str]:
    """Hours, or days when the largest value exceeds three days."""
    return (DAY, "days") if values and max(values) > 3 * DAY else (HOUR, "hours")


def percentiles_figure(report: OrgReport, measure: str) -> go.Figure | None:
    """p50/p75/p90 of `measure` ('time_to_first_review' or 'time_to_merge') per week, in hours,
    or in days when the slowest week's p90 exceeds three days. A week of fewer than MIN_SAMPLES
    values is a gap; the pointer shows each point's sample size."""
    x = _weeks_x(report)
    samples = [getattr(w, f"{measure}_samples") for w in report.weeks]
    series = {p: [getattr(w, f"{measure}_{p}_seconds") if n >= MIN_SAMPLES else None
                  for w, n in zip(report.weeks, samples)] for p in ("p50", "p75", "p90")}
    known = [v for values in series.values() for v in values if v is not None]
    if not known:
        return None
    unit, unit_name = _unit(known)
    figure = go.Figure()
    for p, values in series.items():
        if all(v is None for v in values):
            continue  # a team's view has no p75 (nor a p90 of merges)
        figure.add_scatter(
            x=x, y=[None if v is None else round(v / unit, 2) for v in values], name=p,
            mode="lines+markers", line_color=_COLOURS[p], connectgaps=False, customdata=samples,
            hovertemplate=f"%{{x}}: {p} %{{y}} {unit_name} of %{{customdata}} PRs<extra></extra>",
        )
    figure.update_layout(xaxis_title="week starting", yaxis_title=unit_name, yaxis={"rangemode": "tozero"})
    return figure


def breakdown_figure(report: OrgReport) -> go.Figure | None:
    """The median coding, pickup and review time of the pull requests merged each week, stacked,
    and their median cycle time. Medians do not add up: the stack is each phase's typical length,
    the line the typical whole. A phase of fewer than MIN_SAMPLES values is left out."""
    x = _weeks_x(report)
    phases = {
        phase: [getattr(w, f"{phase}_time_p50_seconds") if getattr(w, f"{phase}_time_samples") >= MIN_SAMPLES
                else None for w in report.weeks]
        for phase in ("coding", "pickup", "review", "cycle")
    }
    known = [v for values in phases.values() for v in values if v is not None]
    if not known:
        return None
    unit, unit_name = _unit(known)
    figure = go.Figure()
    for phase in ("coding", "pickup", "review"):
        samples = [getattr(w, f"{phase}_time_samples") for w in report.weeks]
        figure.add_bar(x=x, y=[None if v is None else round(v / unit, 2) for v in phases[phase]],
                       name=f"{phase} (median)", marker_color=_COLOURS[phase], customdata=samples,
                       hovertemplate=f"%{{x}}: {phase} %{{y}} {unit_name}, median of %{{customdata}} PRs<extra></extra>")
    figure.add_scatter(x=x, y=[None if v is None else round(v / unit, 2) for v in phases["cycle"]],
                       name="cycle time (median)", mode="lines+markers", line_color=_COLOURS["cycle"],
                       customdata=[w.cycle_time_samples for w in report.weeks], connectgaps=False,
                       hovertemplate=f"%{{x}}: cycle %{{y}} {unit_name}, median of %{{customdata}} PRs<extra></extra>")
    figure.update_layout(barmode="stack", xaxis_title="week merged", yaxis_title=unit_name, yaxis={"rangemode": "tozero"})
    return figure


def work_in_progress_figure(report: OrgReport) -> go.Figure | None:
    """Open pull requests at each week's end: ready for review (work in progress) and drafts."""
    if not any(w.open_prs_at_week_end for w in report.weeks):
        return None
    x = _weeks_x(report)
    ready = [w.open_ready_prs_at_week_end for w in report.weeks]
    drafts = [max(0, (w.open_prs_at_week_end or 0) - w.open_ready_prs_at_week_end) for w in report.weeks]
    figure = go.Figure()
    figure.add_bar(x=x, y=ready, name="ready for review", marker_color=_COLOURS["opened"])
    figure.add_bar(x=x, y=drafts, name="drafts", marker_color="#bab0ac")
    figure.update_layout(barmode="stack", xaxis_title="week ending", yaxis_title="open pull requests",
                         yaxis=_count_axis(max(r + d for r, d in zip(ready, drafts))))
    return figure


def merged_without_review_figure(report: OrgReport) -> go.Figure | None:
    """Pull requests merged each week, and how many of them without a counted review."""
    if not any(w.prs_merged for w in report.weeks):
        return None
    x = _weeks_x(report)
    figure = go.Figure()
    figure.add_bar(x=x, y=[w.prs_merged - w.prs_merged_without_review for w in report.weeks],
                   name="reviewed", marker_color=_COLOURS["merged"])
    figure.add_bar(x=x, y=[w.prs_merged_without_review for w in report.weeks],
                   name="merged without review", marker_color=_COLOURS["closed"])
    figure.update_layout(barmode="stack", xaxis_title="week merged", yaxis_title="merged pull requests",
                         yaxis=_count_axis(max(w.prs_merged for w in report.weeks)))
    return figure


def review_depth_figure(report: OrgReport) -> go.Figure | None:
    """Of the pull requests merged each week: their reviews that said something (a body or an
    inline comment) and their bare approvals, and the mean inline comments per pull request (a
    gap for a week of fewer than MIN_SAMPLES pull requests with counts; the bars are counts, shown
    whatever their number)."""
    if all(w.reviews_with_comments is None and w.bare_approvals is None for w in report.weeks):
        return None
    x = _weeks_x(report)
    figure = go.Figure()
    figure.add_bar(x=x, y=[w.reviews_with_comments for w in report.weeks], name="reviews with comments",
                   marker_color=_COLOURS["opened"])
    figure.add_bar(x=x, y=[w.bare_approvals for w in report.weeks], name="bare approvals", marker_color="#bab0ac")
    samples = [w.review_comments_samples for w in report.weeks]
    figure.add_scatter(
        x=x, y=[None if n < MIN_SAMPLES or w.review_comments_per_merged_pr is None else round(w.review_comments_per_merged_pr, 2)
                for w, n in zip(report.weeks, samples)],
        name="inline comments per PR (mean)", mode="lines+markers", line_color=_COLOURS["cycle"], yaxis="y2",
        connectgaps=False, customdata=samples,
        hovertemplate="%{x}: %{y} inline comments per PR, mean of %{customdata} PRs<extra></extra>")
    top = max((w.reviews_with_comments or 0) + (w.bare_approvals or 0) for w in report.weeks)
    figure.update_layout(barmode="stack", xaxis_title="week merged", yaxis_title="reviews", yaxis=_count_axis(top),
                         yaxis2={"title": "inline comments per PR", "overlaying": "y", "side": "right",
                                 "rangemode": "tozero", "showgrid": False, "tickmode": "auto", "nticks": 6,
                                 "tickformat": ".1~f"})
    return figure


def mark_unfinished_week(figure: go.Figure | None, report: OrgReport, now: datetime) -> go.Figure | None:
    """Shade the period's last week when it has not ended yet: its numbers are not a whole week's."""
    if figure is None or not report.weeks:
        return figure
    last = report.weeks[-1].week_start
    if datetime.combine(last + timedelta(days=7), datetime.min.time(), timezone.utc) <= now:
        return figure
    half = timedelta(days=3, hours=12)  # the week's bar is centred on its Monday
    figure.add_vrect(x0=(last - half).isoformat(), x1=(last + half).isoformat(), fillcolor="#999999",
                     opacity=0.15, line_width=0, annotation_text="week in progress",
                     annotation_position="top left")
    return figure


def review_distribution_figure(report: OrgReport) -> go.Figure | None:
    labels = [label for label, _ in report.review_time_distribution]
    counts = [count for _, count in report.review_time_distribution]
    if not any(counts):
        return None
    figure = go.Figure(go.Bar(x=labels, y=counts, marker_color=_COLOURS["opened"], name="first reviews"))
    figure.update_layout(xaxis_title="time from ready for review to first review", yaxis_title="pull requests",
                         yaxis=_count_axis(max(counts)))
    return figure


def size_figure(report: OrgReport) -> go.Figure | None:
    figure = go.Figure()
    drawn = False
    for size, times in report.merge_times_by_size:
        if not times:
            continue
        drawn = True
        figure.add_box(y=[round(t / DAY, 3) for t in times], name=f"{size} ({len(times)})", boxpoints="outliers")
    if not drawn:
        return None
    figure.update_layout(showlegend=False, xaxis_title="PR size, with the number of PRs merged in the period",
                         yaxis_title="days to merge")
    return figure


def reviewer_figure(report: OrgReport) -> go.Figure | None:
    if not report.reviewers:
        return None
    ranked = list(reversed(report.reviewers))  # the busiest at the top of a horizontal bar chart
    logins = [r.reviewer_login for r in ranked]
    figure = go.Figure(go.Bar(
        y=logins, x=[r.reviews for r in ranked], orientation="h", name="reviews", marker_color=_COLOURS["opened"],
        customdata=[r.prs_reviewed for r in ranked],
        hovertemplate="%{y}: %{x} reviews, %{customdata} PRs reviewed (summed per week)<extra></extra>",
    ))
    figure.update_layout(height=max(340, 22 * len(ranked) + 90), xaxis_title="reviews in the period",
                         yaxis={"dtick": 1})
    return figure


# What each headline number counts, shown when the pointer rests on its card.
_DEFINITIONS = {
    "prs_opened": "Pull requests created in the period (not by bots).",
    "prs_merged": "Pull requests merged in the period.",
    "merge_rate": "Merged / (merged + closed without merge), of those that ended in the period.",
    "time_to_first_review_p50": "Median time from ready for review to the first review, of first reviews in the period.",
    "time_to_merge_p50": "Median time from ready for review to merge, of merges in the period.",
    "open_prs_at_end": "Pull requests open at the end of the period's last week.",
}


def _headline_html(report: OrgReport) -> str:
    assert report.previous is not None
    cards = []
    for metric in report.headline:
        cards.append(
            f'<div class="card {metric.verdict}" data-metric="{metric.key}" data-value="{metric.current if metric.current is not None else ""}" '
            f'title="{html.escape(_DEFINITIONS.get(metric.key, ""))}">'
            f'<div class="label">{html.escape(metric.label)}</div>'
            f'<div class="value">{metric_value(metric)}</div>'
            f'<div class="change">{html.escape(metric_change(metric))} vs previous {report.previous.weeks} weeks</div></div>'
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def _slowest_html(items: tuple[OpenPullRequest, ...], kind: str) -> str:
    if not items:
        return f'<p class="note">No open {kind}.</p>'
    rows = []
    for item in items:
        pr = item.pull_request
        review = "reviewed" if pr.first_review_at else "no review yet"
        draft = " (draft)" if pr.is_draft else ""
        rows.append(
            "<tr>"
            f"<td>{html.escape(pr.repo)}</td>"
            f'<td><a href="{html.escape(pr.html_url)}">#{pr.number} {html.escape(pr.title)}</a>{draft}</td>'
            f"<td>{html.escape(pr.author_login or 'unknown')}</td>"
            f"<td>{duration(item.age_seconds)}</td><td>{review}</td><td>{html.escape(pr.size_bucket or '')}</td>"
            "</tr>"
        )
    return (
        f'<table class="slowest" data-table="{_slug(kind)}"><thead><tr><th>repository</th><th>pull request</th><th>author</th>'
        f"<th>open for</th><th>review</th><th>size</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


STALE_AFTER_DAYS = 14  # a period that ended longer ago than this before the report says so
STALE_SYNC = timedelta(days=1)  # the newest merged load older than this: the page says so first


def _stale_sync_html(report: OrgReport, now: datetime) -> str:
    if report.last_merged_at is None or now - report.last_merged_at <= STALE_SYNC:
        return ""
    age = now - report.last_merged_at
    return (f'<p class="banner stale-sync">The newest data of {html.escape(report.org)} was merged on '
            f"{report.last_merged_at.strftime('%Y-%m-%d %H:%M UTC')}, {duration(age.total_seconds())} before this "
            "report. If the pipeline ran since, nothing changed on GitHub; if it did not, these numbers are "
            "out of date: check its runs.</p>")


def _charts(report: OrgReport, now: datetime, scope: str) -> list[str]:
    """The charts of a scope: a team's weekly numbers come from `weekly_team_metrics`, which has no
    closes, drafts, phases or review depth; its reviewer load is the reviews its members gave."""
    org = report.org
    few = f"No week of the period has {MIN_SAMPLES} or more"
    sampled = f"A week of fewer than {MIN_SAMPLES} pull requests is left out; the pointer shows each point's count."
    team = report.scope_kind == "team"

    def chart(name: str, title: str, figure: go.Figure | None, empty: str, note: str = "", weekly: bool = True) -> str:
        drawn = mark_unfinished_week(figure, report, now) if weekly else figure
        return _chart(org, name, title, drawn, empty, note, scope)

    charts = [chart("throughput", "Weekly throughput", throughput_figure(report), "No pull requests in the period.")]
    if not team:
        charts += [
            chart("cycle-time-breakdown", "Cycle time breakdown per week: coding, pickup, review (medians)",
                  breakdown_figure(report), f"{few} merged pull requests with a known phase.",
                  f"{sampled} Medians do not add up: the line is the typical whole, not the top of the stack."),
            chart("work-in-progress", "Work in progress: open pull requests at each week's end",
                  work_in_progress_figure(report), "No open pull requests in the period."),
            chart("merged-without-review", "Merged without review per week", merged_without_review_figure(report),
                  "No merges in the period."),
            chart("review-depth", "Review depth of the pull requests merged each week", review_depth_figure(report),
                  "No merged pull requests with counted reviews in the period.",
                  "A review with comments has a body or inline comments; a bare approval has neither. The mean "
                  f"leaves out a week of fewer than {MIN_SAMPLES} pull requests; the pointer shows each point's count."),
        ]
    charts += [
        chart("time-to-first-review", "Time to first review per week: " + ("p50, p90" if team else "p50, p75, p90"),
              percentiles_figure(report, "time_to_first_review"), f"{few} first reviews.", sampled),
        chart("time-to-merge", "Time to merge per week: " + ("p50" if team else "p50, p75, p90"),
              percentiles_figure(report, "time_to_merge"), f"{few} merges.", sampled),
        chart("review-distribution", "Distribution of time to first review", review_distribution_figure(report),
              "No reviews in the period.", weekly=False),
        chart("size-vs-merge", "PR size against time to merge", size_figure(report), "No merges in the period.",
              weekly=False),
        chart("reviewer-load", "Reviews given by the team's members" if team else "Reviewer load",
              reviewer_figure(report), "No reviews in the period.", weekly=False),
    ]
    return charts


_SCOPE_NOTES = {
    "repository": "The pull requests of the repository {name}.",
    "team": ("The pull requests opened by the members of the team {name} as it is now (GitHub keeps no history of "
             "membership). The weekly charts are its rows of weekly_team_metrics, which has no closes, work in "
             "progress, cycle-time breakdown or review depth (see the organisation and its repositories); the "
             "headline numbers and the tables count its pull requests."),
}


def _scope_html(report: OrgReport, now: datetime, chart_ids: str = "") -> str:
    """One scope's numbers: headline, charts and open pull requests; hidden unless it is the
    organisation's own. `chart_ids`: what its charts' element ids carry after the organisation's."""
    as_of = report.as_of.strftime("%Y-%m-%d") if report.as_of else "n/a"
    hidden = " hidden" if report.scope_key else ""
    note = _SCOPE_NOTES.get(report.scope_kind, "").format(name=report.scope_name)
    return (
        f'<div class="scope" data-scope="{html.escape(report.scope_key)}"{hidden}>'
        + (f'<p class="note scope-note">{html.escape(note)}</p>' if note else "")
        + f"{_headline_html(report)}"
        f'<div class="charts">{"".join(_charts(report, now, chart_ids))}</div>'
        f'<h3>Slowest open pull requests ready for review (age at {as_of})</h3>'
        f'{_slowest_html(report.slowest_open, "pull requests ready for review")}'
        f'<h3>Oldest drafts (waiting for their authors)</h3>{_slowest_html(report.oldest_drafts, "drafts")}</div>'
    )


def _scope_selector(report: OrgReport) -> str:
    if not report.scopes:
        return ""
    groups = []
    for kind, label in (("repository", "Repositories"), ("team", "Teams")):
        options = "".join(f'<option value="{html.escape(s.scope_key)}">{html.escape(s.scope_name)}</option>'
                          for s in report.scopes if s.scope_kind == kind)
        if options:
            groups.append(f'<optgroup label="{label}">{options}</optgroup>')
    return (f'<label class="scope-picker">Show <select class="scope-select" aria-label="scope of {html.escape(report.org)}">'
            f'<option value="">the whole organisation</option>{"".join(groups)}</select></label>')


def _chart_ids(scopes: tuple[OrgReport, ...]) -> list[str]:
    """Each scope's part of its charts' element ids: its kind and name as a slug, numbered when two
    names make the same slug ("a_b" and "a-b")."""
    seen: set[str] = set()
    out = []
    for scope in scopes:
        base = ids = _slug(scope.scope_key)
        n = 1
        while ids in seen:
            n += 1
            ids = f"{base}-{n}"
        seen.add(ids)
        out.append(ids)
    return out


def org_section(report: OrgReport, now: datetime) -> str:
    org = report.org
    anchor = f"org-{_slug(org)}"
    if report.empty is not None or report.current is None:
        return (f'<section id="{anchor}" class="org empty"><h2>{html.escape(org)}</h2>{_stale_sync_html(report, now)}'
                f'<p class="note">{html.escape(report.empty or "no data")}.</p></section>')
    current = report.current
    last_day = current.end - timedelta(days=1)
    period = f"{current.start.isoformat()} to {last_day.isoformat()} ({current.weeks} weeks, UTC)"
    stale = ""
    if (now.date() - last_day).days > STALE_AFTER_DAYS:
        days = (now.date() - last_day).days
        stale = (f'<p class="note stale">The newest pull-request activity of {html.escape(org)} is in the week '
                 f"ending {last_day.isoformat()}, {days} days before this report: the periods end there, "
                 "not today (an organisation gone quiet, or data not synced since).</p>")
    return (
        f'<section id="{anchor}" class="org"><h2>{html.escape(org)}</h2>'
        f'{_stale_sync_html(report, now)}<p class="period">{html.escape(period)}</p>{stale}'
        f"{_scope_selector(report)}{_scope_html(report, now)}"
        + "".join(_scope_html(scope, now, ids) for scope, ids in zip(report.scopes, _chart_ids(report.scopes)))
        + "</section>"
    )


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#f6f7f9}
header{background:#24292f;color:#fff;padding:16px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#c9d1d9;font-size:13px}nav a{color:#9ecbff;margin-right:14px}
main{padding:8px 24px 40px;max-width:1400px}section.org{margin-top:24px}
h2{border-bottom:2px solid #d0d7de;padding-bottom:4px}.period{color:#57606a;margin-top:-8px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:12px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px}
.card .label{font-size:13px;color:#57606a}.card .value{font-size:28px;font-weight:600;margin:4px 0}
.card .change{font-size:12px;color:#57606a}.card.better .change{color:#1a7f37}.card.worse .change{color:#cf222e}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px;margin-top:12px}
figure.chart{background:#fff;border:1px solid #d0d7de;border-radius:8px;margin:0;padding:8px 12px}
figure.chart h3{margin:4px 0 0;font-size:15px}.chart-note{margin:2px 0 0;font-size:12px}.note{color:#57606a;font-style:italic}
.banner{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:8px 12px}
table.slowest{border-collapse:collapse;background:#fff;width:100%;font-size:13px}
table.slowest th,table.slowest td{border:1px solid #d0d7de;padding:4px 8px;text-align:left}
.scope-picker{display:block;margin:8px 0 12px;font-size:14px}.scope-picker select{font-size:14px;padding:2px 4px}
.scope[hidden]{display:none}
"""


# Each chart is drawn as its <div> is parsed, before the page's final layout: fit them once it is.
# A scope's charts are drawn the first time the selector shows them, then fitted like the others.
_RESIZE_JS = """
function fit(root){root.querySelectorAll('.scope:not([hidden]) .js-plotly-plot').forEach(function(p){Plotly.Plots.resize(p);});}
function draw(scope){scope.querySelectorAll('script.lazy-chart').forEach(function(s){
  var f=JSON.parse(s.textContent);Plotly.newPlot(s.dataset.for,f.data,f.layout,f.config);s.remove();});}
window.addEventListener('load',function(){fit(document);});
document.querySelectorAll('select.scope-select').forEach(function(select){
  select.addEventListener('change',function(){
    var section=select.closest('section');
    section.querySelectorAll('.scope').forEach(function(scope){
      scope.hidden=scope.dataset.scope!==select.value;if(!scope.hidden){draw(scope);}});
    fit(section);
  });
});
"""


def render(reports: list[OrgReport], generated_at: datetime | None = None, source: str = "") -> str:
    """The whole page for these organisations' reports."""
    now = generated_at or datetime.now(timezone.utc)
    generated = now.strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#org-{_slug(r.org)}">{html.escape(r.org)}</a>' for r in reports)
    sections = "".join(org_section(r, now) for r in reports) or '<p class="note">No organisation to report on.</p>'
    where = f" from {html.escape(source)}" if source else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Pull request report</title>"
        f"<style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<header><h1>Pull request report</h1><p>Generated {generated}{where}</p><nav>{nav}</nav></header>"
        f"<main>{sections}</main><script>{_RESIZE_JS}</script></body></html>"
    )
