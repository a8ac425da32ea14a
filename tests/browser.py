"""Debian's Chromium, driven headless by Playwright (which never downloads a browser here), for
the report's browser tests: an opened page, its console errors, the requests it tried."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling home, which this closed
# network refuses; the page itself must need no network at all.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


def chromium_or_skip() -> str:
    """The Chromium binary; without one the test is skipped, except under CI (env CI), where
    .ci/run installs it and its absence is a failure."""
    path = shutil.which(CHROMIUM) or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path:
        return path
    message = f"Chromium not found at {CHROMIUM} (Debian: apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must run the browser tests")
    pytest.skip(message)


@dataclass
class OpenedPage:
    page: Any  # playwright.sync_api.Page
    console_errors: list[str] = field(default_factory=list)
    network_requests: list[str] = field(default_factory=list)


@contextmanager
def open_offline(html_file: Path, width: int = 1400, height: int = 1000) -> Iterator[OpenedPage]:
    """The file opened in headless Chromium with every request but the file itself refused
    (and recorded), console errors and page errors collected."""
    from playwright.sync_api import sync_playwright

    executable = chromium_or_skip()
    url = html_file.resolve().as_uri()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            opened = OpenedPage(page)

            def route(route: Any) -> None:
                if route.request.url == url:
                    route.continue_()
                else:
                    opened.network_requests.append(route.request.url)
                    route.abort()

            page.route("**/*", route)
            page.on("console", lambda m: opened.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: opened.console_errors.append(f"page error: {e}"))
            page.goto(url, wait_until="load")
            yield opened
        finally:
            browser.close()


# Per chart: how many traces it has, how many data points they hold, how many marks (bars,
# points, lines, boxes) plotly drew in its SVG.
CHART_STATE_JS = """
() => [...document.querySelectorAll('figure.chart')].filter(figure => !figure.closest('[hidden]')).map(figure => {
  const plot = figure.querySelector('.js-plotly-plot');
  const data = plot && plot.data ? plot.data : [];
  const points = data.reduce((n, t) => n + Math.max((t.x || []).length, (t.y || []).length), 0);
  const marks = plot ? [...plot.querySelectorAll('.trace path')]
    .filter(p => (p.getAttribute('d') || '').length > 2).length : 0;
  const svg = plot ? plot.querySelector('.main-svg').getBoundingClientRect() : {width: 0, height: 0};
  return {name: figure.dataset.chart, empty: figure.classList.contains('empty'), traces: data.length,
          points, marks, width: svg.width, height: svg.height, room: figure.clientWidth};
})
"""


def inspect_page(html_file: Path, screenshot: Path, scope: str = "") -> dict[str, Any]:
    """Open the file offline; return the shown charts' state, headline cards, links, console
    errors and the requests the page tried, after writing a full-page screenshot. `scope`
    ("repository:NAME", "team:SLUG") is chosen in the first organisation's selector first."""
    with open_offline(html_file) as opened:
        page = opened.page
        page.wait_for_function("() => typeof Plotly === 'object'")
        if scope:
            page.select_option("select.scope-select", scope)
        page.wait_for_function(
            "() => [...document.querySelectorAll('figure.chart:not(.empty) .js-plotly-plot')]"
            ".every(p => p._fullLayout && p.querySelector('.main-svg'))"
            " && [...document.querySelectorAll('.scope:not([hidden]) figure.chart:not(.empty)')]"
            ".every(f => { const svg = f.querySelector('.main-svg'); if (!svg) return false;"
            " const w = svg.getBoundingClientRect().width; return w > 300 && w <= f.clientWidth; })",
            timeout=30_000,
        )
        state = {
            "charts": page.evaluate(CHART_STATE_JS),
            "cards": page.eval_on_selector_all(
                ".card", "cards => cards.filter(c => !c.closest('[hidden]'))"
                ".map(c => [c.dataset.metric, c.querySelector('.value').textContent])"
            ),
            "links": page.eval_on_selector_all(
                "table.slowest a", "links => links.filter(a => !a.closest('[hidden]')).map(a => a.href)"),
        }
        page.screenshot(path=str(screenshot), full_page=True)
        state["console_errors"] = list(opened.console_errors)
        state["network_requests"] = list(opened.network_requests)
    return state
