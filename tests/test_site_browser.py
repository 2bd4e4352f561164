"""The built results page in a real headless Chromium: the table and a plot render.

Needs Debian's `chromium` package (`apt-get install -y chromium`); skipped, saying so,
only when no chromium binary is on PATH. The screenshot stays in the test's temp dir.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import report_study as rs

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on the page; waits for the page's resources (virtual time budget),
    and tries once more if the browser itself crashed (a loaded 2-core CI box)."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--run-all-compositor-stages-before-draw",
        "--virtual-time-budget=10000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,2400",
    ]
    for _ in range(2):
        res = subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=180)
        if res.returncode == 0:
            break
    return res


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium)"
)
def test_results_page_renders_table_and_plot(tmp_path):
    import numpy as np
    from PIL import Image

    from rlvf.report.collect import Selection
    from rlvf.report.export import export
    from rlvf.report.plots import BAR_COLOR

    ids = rs.build_study(tmp_path)
    export(ids["client"], Selection(), tmp_path / "registry", tmp_path / "site")
    shutil.copy(REPO / "site" / "index.md", tmp_path / "site" / "index.md")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stderr
    page = (tmp_path / "site_build" / "report" / "results.html").as_uri()

    dom = _chromium(tmp_path, "--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    table = html[html.index("<table>") : html.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
    assert len(rows) == 1 + 11  # header + one row per run
    assert "80.0 ± 0.0 (n=3)" in table and "dpo-n_pairs400" in table
    assert re.search(r'<img[^>]+src="plots/results-humaneval.svg"', html)

    shot = tmp_path / "results.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", page)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    want = np.array([int(BAR_COLOR[i : i + 2], 16) for i in (1, 3, 5)])
    bar_pixels = int((np.abs(img - want) <= 8).all(axis=-1).sum())
    # the bars of the pass@1 plot (11 runs) cover tens of thousands of pixels once the SVG has rendered
    assert bar_pixels > 5000, f"plot not rendered ({bar_pixels} bar-coloured pixels); see {shot}"
