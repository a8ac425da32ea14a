"""The size of one offline HTML page per candidate plotting library, drawing the same two charts
from the demo warehouse: weekly opened/merged of organisation `demo` (26 weeks) and every PR's
size against its time to merge (a scatter).

Not part of the project's environment: run it in a scratch virtualenv, after `./dev demo`:
    python3.11 -m venv /tmp/cand && /tmp/cand/bin/pip install plotly bokeh altair vl-convert-python matplotlib pandas duckdb
    /tmp/cand/bin/python bench/plot_library_sizes.py data/warehouse.duckdb
"""

from __future__ import annotations

import io
import sys

import duckdb


def main(path: str) -> None:
    con = duckdb.connect(path, read_only=True)
    weeks = con.execute(
        "SELECT week_start::VARCHAR, prs_opened, prs_merged FROM github.weekly_pull_request_metrics "
        "WHERE org = 'demo' AND repo IS NULL AND week_start <= DATE '2025-12-07' ORDER BY week_start DESC LIMIT 26"
    ).fetchall()[::-1]
    points = con.execute(
        "SELECT additions + deletions, time_to_merge_seconds / 3600.0 FROM github.pull_request_metrics "
        "WHERE is_merged AND time_to_merge_seconds IS NOT NULL"
    ).fetchall()
    x, opened, merged = ([w[i] for w in weeks] for i in range(3))
    px, py = [p[0] for p in points], [p[1] for p in points]
    pages: dict[str, str] = {}

    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    figures = [go.Figure([go.Bar(x=x, y=opened, name="opened"), go.Bar(x=x, y=merged, name="merged")]),
               go.Figure([go.Scatter(x=px, y=py, mode="markers")])]
    pages["plotly, plotly.js inlined once"] = (
        f"<html><head><script>{get_plotlyjs()}</script></head><body>"
        + "".join(f.to_html(full_html=False, include_plotlyjs=False) for f in figures) + "</body></html>"
    )

    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    bars = figure(x_range=x)
    bars.vbar(x=x, top=opened, width=0.4)
    bars.vbar(x=x, top=merged, width=0.4)
    scatter = figure()
    scatter.scatter(px, py)
    pages["bokeh, INLINE resources"] = file_html(column(bars, scatter), INLINE, "sizes")

    import altair as alt
    import pandas as pd

    weekly = pd.DataFrame({"week": x * 2, "n": opened + merged, "kind": ["opened"] * len(x) + ["merged"] * len(x)})
    chart = alt.vconcat(alt.Chart(weekly).mark_bar().encode(x="week:O", y="n", color="kind"),
                        alt.Chart(pd.DataFrame({"size": px, "hours": py})).mark_point().encode(x="size", y="hours"))
    buffer = io.StringIO()
    chart.save(buffer, format="html", inline=True)
    pages["altair (vega-lite), inline=True"] = buffer.getvalue()

    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    svgs = []
    for draw in (lambda ax: (ax.bar(x, opened), ax.bar(x, merged)), lambda ax: ax.scatter(px, py)):
        fig, ax = plt.subplots()
        draw(ax)
        out = io.StringIO()
        fig.savefig(out, format="svg")
        plt.close(fig)
        svgs.append(out.getvalue())
    pages["matplotlib, inline SVG"] = "<html><body>" + "".join(svgs) + "</body></html>"

    print(f"{len(weeks)} weeks, {len(points)} merged PRs")
    for name, text in pages.items():
        print(f"{name}: {len(text.encode()) / 1024:,.0f} KiB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/warehouse.duckdb")
