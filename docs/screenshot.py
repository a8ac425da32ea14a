"""Regenerate docs/report.png, the README's picture of the report: `./dev screenshot`.

    ./dev screenshot [--report FILE] [--out docs/report.png] [--height 1560]

Without --report it runs the demo (`flows/run.py --demo`) into a temporary data folder and
writes its report there with `./dev report`, so the picture always shows the demo organisations,
whatever ./data holds; with --report it takes that HTML file (for example data/report.html after
`./dev demo`). The page is opened from disk in
Debian's headless Chromium (/usr/bin/chromium, or TEST_CHROMIUM) through Playwright, which never
downloads a browser, with every network request refused, as in tests/browser.py. The picture is
the top of the page: 1280 pixels wide, --height high.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")
# The flags of tests/browser.py: no sandbox (root), no GPU, and no background calls home.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]
# Every chart drawn: plotly has laid it out and made its SVG.
CHARTS_DRAWN_JS = (
    "() => typeof Plotly === 'object' && [...document.querySelectorAll('figure.chart:not(.empty) .js-plotly-plot')]"
    ".every(p => p._fullLayout && p.querySelector('.main-svg'))"
)


def demo_report(scratch: Path) -> Path:
    """Run the demo into scratch/data, then write its report again as `./dev report` does from
    inside scratch, so the page names the warehouse `data/warehouse.duckdb`, not a temporary
    path. The runs' own output goes to stderr."""
    data_dir = scratch / "data"
    print(f"screenshot: running the demo into {data_dir}", file=sys.stderr)
    demo = subprocess.run([sys.executable, str(ROOT / "flows" / "run.py"), "--demo", "--data-dir", str(data_dir)],
                          cwd=ROOT, stdout=sys.stderr)
    if demo.returncode != 0:
        raise SystemExit(f"error: the demo failed (exit {demo.returncode})")
    report = subprocess.run([sys.executable, "-m", "analytics.cli", "--data-dir", "data"], cwd=scratch, stdout=sys.stderr)
    if report.returncode != 0 or not (data_dir / "report.html").is_file():
        raise SystemExit(f"error: no report from the demo's warehouse (exit {report.returncode})")
    return data_dir / "report.html"


def screenshot(report: Path, out: Path, width: int = 1280, height: int = 1560) -> None:
    """Open the report offline in headless Chromium and write the top width x height pixels to out."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which(CHROMIUM) or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if executable is None:
        raise SystemExit(f"error: Chromium not found at {CHROMIUM} (Debian: apt-get install -y chromium)")
    url = report.resolve().as_uri()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.route("**/*", lambda route: route.continue_() if route.request.url == url else route.abort())
            page.goto(url, wait_until="load")
            page.wait_for_function(CHARTS_DRAWN_JS, timeout=30_000)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": width, "height": height})
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev screenshot", description=__doc__.split("\n")[0])
    parser.add_argument("--report", type=Path, help="an existing report (default: run the demo into a temporary folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png", help="the PNG to write (default docs/report.png)")
    parser.add_argument("--height", type=int, default=1560, help="pixels of the page's top to keep (default 1560)")
    args = parser.parse_args(argv)
    if args.report is not None and not args.report.is_file():
        print(f"error: no report at {args.report}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pr-analytics-screenshot-") as scratch:
        report = args.report or demo_report(Path(scratch))
        screenshot(report, args.out, height=args.height)
    print(f"{args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
