"""Reports render in a real headless browser (Debian's chromium): figures decode, tables show.

A copy of each page gets a script that, once the page has loaded, records how many images it
has, how many decoded to a non-empty bitmap, and how many tables and section headings it shows;
``chromium --headless --dump-dom`` prints the resulting DOM. The pages themselves carry no script.
"""

import html
import json
import re
import shutil
import subprocess

import pytest
from test_config import GOOD  # a small LDS fit with custom priors and IWAE evidence

from probdyn.app.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium; .ci/run does)"
)

PROBE = """<script>window.addEventListener('load', () => {
  const images = [...document.images];
  document.body.setAttribute('data-rendered', JSON.stringify({
    images: images.length,
    decoded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    tables: document.querySelectorAll('table').length,
    headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
  }));
});</script>"""


def render(page, tmp_path) -> dict:
    """What chromium shows of ``page``: counts of images (decoded or not), tables, headings."""
    probe = tmp_path / f"probe-{page.name}"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    found = re.search(r'data-rendered="([^"]*)"', dom)
    assert found, "the page never finished loading in chromium"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def run_reports(tmp_path_factory):
    """A fitted run's report and a comparison report, written by the command line."""
    root = tmp_path_factory.mktemp("browser")
    config = root / "run.toml"
    config.write_text(GOOD.format(out=root / "run"))
    assert main(["fit", str(config), "--no-progress"]) == 0
    run = root / "run" / "run.nc"
    assert main(["fixed-points", str(run), "--out", str(root / "points.nc")]) == 0
    assert main(["report", str(root / "points.nc"), "--out", str(root / "run.html")]) == 0
    assert main(["compare", str(run), "--report", str(root / "compare.html")]) == 0
    return root


@pytest.mark.slow
def test_run_report_renders_every_figure_and_table(run_reports, tmp_path):
    shown = render(run_reports / "run.html", tmp_path)
    # two trials, each with its fit (smoothed | fresh-path predictive) and its latents; loss
    # trace, predictive distribution, LOO-PIT, Pareto k, phase portrait, eigenvalues
    assert shown["images"] == 10 and shown["decoded"] == 10
    assert shown["tables"] >= 2
    assert shown["headings"][:4] == ["Data and fit", "Fit diagnostics", "Evidence", "Fixed points"]


@pytest.mark.slow
def test_comparison_report_renders(run_reports, tmp_path):
    shown = render(run_reports / "compare.html", tmp_path)
    assert shown["images"] >= 1 and shown["decoded"] == shown["images"]
    assert shown["tables"] >= 1


@pytest.mark.slow
def test_the_browser_check_sees_a_broken_figure(run_reports, tmp_path):
    page = tmp_path / "broken.html"
    text = (run_reports / "run.html").read_text()
    page.write_text(text.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1))
    shown = render(page, tmp_path)
    assert shown["decoded"] == shown["images"] - 1
