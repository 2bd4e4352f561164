"""The built site in a real headless Chromium at a laptop's width (1400 px): every generated page
opens, its plots load, no table hides columns behind a horizontal scroll, no cell grows tall,
the Results summary has its rows, long task lists start collapsed.

Needs Debian's `chromium` package (`apt-get install -y chromium`); skipped, saying so,
only when no chromium binary is on PATH. Screenshots stay in the test's temp dir.
"""

from __future__ import annotations

import json
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
WIDTH = 1400

# Runs in the page once it has loaded (and Material has wrapped its tables): the layout as JSON
# in a <pre id="rlvf-layout"> that --dump-dom then prints.
PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const out = {width: window.innerWidth, tables: [], images: [], details: []};
  const heading = (el) => {
    let n = el;
    while (n && n.previousElementSibling === null) n = n.parentElement;
    for (n = n && n.previousElementSibling; n; n = n.previousElementSibling) {
      if (/^H[1-4]$/.test(n.tagName)) return n.textContent.replace("¶", "").trim();
    }
    return "";
  };
  document.querySelectorAll(".md-content table").forEach((t) => {
    const wrap = t.closest(".md-typeset__scrollwrap") || t.parentElement;
    const cells = [...t.querySelectorAll("td")].map((c) => c.getBoundingClientRect().height);
    const head = [...t.querySelectorAll("th")].map((c) => {
      const r = c.getBoundingClientRect();
      return {text: c.textContent.trim(), right: r.right, width: r.width};
    });
    out.tables.push({
      heading: heading(t.closest(".md-typeset__scrollwrap") || t),
      visible: t.getClientRects().length > 0,
      scroll: wrap.scrollWidth, client: wrap.clientWidth,
      rows: t.rows.length, tallest: Math.max(0, ...cells), head: head,
    });
  });
  document.querySelectorAll(".md-content img").forEach((i) => out.images.push(
    {src: i.getAttribute("src"), w: i.naturalWidth, h: i.naturalHeight, shown: i.getBoundingClientRect().width}));
  document.querySelectorAll(".md-content details").forEach((d) => out.details.push(
    {title: d.querySelector("summary").textContent.trim(), open: d.open}));
  window.parent.postMessage(JSON.stringify(out), "*");
}, 300));
</script>
"""

# The page Chromium opens: it loads each probed page in turn into a WIDTH-wide frame (a window
# of its own: its innerWidth is the frame's), collects what each probe posts, then prints all
# of it in a <pre id="rlvf-layout"> that --dump-dom writes out. One browser for every page: a
# Chromium start costs more than a page.
HARNESS = """<!doctype html><html><body><script>
const pages = PAGES;
const out = {};
const frame = document.createElement("iframe");
frame.width = WIDTH; frame.height = 2400; frame.style.border = "0";
document.body.appendChild(frame);
let i = -1;
const next = () => {
  i += 1;
  if (i < pages.length) { frame.src = pages[i][1]; return; }
  frame.remove();
  const pre = document.createElement("pre");
  pre.id = "rlvf-layout";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
};
window.addEventListener("message", (e) => { out[pages[i][0]] = JSON.parse(e.data); next(); });
next();
</script></body></html>
"""


def _chromium(
    tmp_path: Path, *args: str, budget_ms: int = 8000, width: int = WIDTH
) -> subprocess.CompletedProcess:
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
        f"--virtual-time-budget={budget_ms}",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--window-size={width},2400",
    ]
    for _ in range(2):
        res = subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=180)
        if res.returncode == 0:
            break
    return res


def _layouts(tmp_path: Path, report: Path, pages: list[Path]) -> dict[str, dict]:
    """The layout of every page (by its path under `report`), measured by one headless Chromium."""
    import html

    probes = []
    for page in pages:
        probe = page.with_name(page.stem + ".probe.html")
        probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
        probes.append((page.relative_to(report).as_posix(), probe.as_uri()))
    harness = tmp_path / "harness.html"
    harness.write_text(HARNESS.replace("PAGES", json.dumps(probes)).replace("WIDTH", str(WIDTH)))
    res = _chromium(
        tmp_path,
        "--allow-file-access-from-files",
        "--dump-dom",
        harness.as_uri(),
        budget_ms=8000 * len(pages),
        width=WIDTH + 100,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'<pre id="rlvf-layout">(.*?)</pre>', res.stdout, re.S)
    assert m, f"the layout probes did not all report: {res.stdout[-500:]}"
    return json.loads(html.unescape(m.group(1)))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from rlvf.report.collect import Selection
    from rlvf.report.export import export

    tmp = tmp_path_factory.mktemp("site")
    ids = rs.build_study(tmp)
    export(ids["client"], Selection(), tmp / "registry", tmp / "site")
    shutil.copy(REPO / "site" / "index.md", tmp / "site" / "index.md")
    shutil.copy(REPO / "mkdocs.yml", tmp / "mkdocs.yml")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q"],
        cwd=tmp,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stderr
    return tmp


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium)"
)
def test_every_page_fits_1400px_and_shows_its_plots(built, tmp_path):
    report = built / "site_build" / "report"
    pages = sorted(report.glob("*.html")) + sorted((report / "samples").glob("*.html"))
    names = {p.relative_to(report).as_posix() for p in pages}
    assert {
        "results.html",
        "deltas.html",
        "head-to-head.html",
        "failures.html",
        "procedural.html",
        "training.html",
        "reward-hacking.html",
        "samples.html",
        "samples/dpo.html",
        "scaling.html",
        "fairness.html",
    } <= names
    layouts = _layouts(tmp_path, report, pages)
    assert set(layouts) == names
    for name, lay in layouts.items():
        assert lay["width"] == WIDTH
        # at least one plot, and every plot loaded (an SVG that failed to load has no natural size)
        assert lay["images"], f"{name}: no plot"
        for img in lay["images"]:
            assert img["w"] > 0 and img["h"] > 0, f"{name}: plot {img['src']} did not load"
        for t in lay["tables"]:
            if not t["visible"]:  # inside a collapsed block
                continue
            # no horizontal scroll: every column, the verdicts included, is on screen
            assert t["scroll"] <= t["client"] + 1, f"{name} ({t['heading']}): table scrolls sideways {t}"
            assert all(h["right"] <= WIDTH for h in t["head"]), f"{name} ({t['heading']}): {t['head']}"
            # no cell squeezed into a tall column (e.g. task ids broken mid-word)
            assert t["tallest"] < 160, f"{name} ({t['heading']}): a {t['tallest']:.0f} px tall cell"

    # the seed-004 summary: one row per method and group (+ the header row)
    summary: dict[str, int] = {}
    for t in layouts["results.html"]["tables"]:  # the first table under each heading
        summary.setdefault(t["heading"], t["rows"])
    assert summary["tiny"] == 1 + 7  # base (greedy), base (sampled), sft, dpo, kto, orpo, grpo
    assert summary["other-model"] == 1 + 2  # other-base, the scan's representative
    verdicts = [
        h
        for t in layouts["deltas.html"]["tables"]
        for h in t["head"]
        if h["text"] == "Verdict" and t["heading"] == "humaneval: pass@1"
    ]
    assert verdicts and verdicts[0]["width"] > 40 and verdicts[0]["right"] <= WIDTH
    # long task lists start collapsed; the hacking examples and samples too
    for name in ("head-to-head.html", "failures.html", "reward-hacking.html", "samples/dpo.html"):
        det = layouts[name]["details"]
        assert det and not any(d["open"] for d in det), (name, det)
    assert any(d["title"] == "Both pass (14)" for d in layouts["head-to-head.html"]["details"])


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium)"
)
def test_results_plot_renders_in_a_screenshot(built, tmp_path):
    import numpy as np
    from PIL import Image

    from rlvf.report.plots import BAR_COLOR

    page = (built / "site_build" / "report" / "results.html").as_uri()
    shot = tmp_path / "results.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", page)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    want = np.array([int(BAR_COLOR[i : i + 2], 16) for i in (1, 3, 5)])
    bar_pixels = int((np.abs(img - want) <= 8).all(axis=-1).sum())
    # the bars of the pass@1 plot cover thousands of pixels once the SVG has rendered (the
    # summary tables come first, so only part of the plot is inside the 2400 px window)
    assert bar_pixels > 2000, f"plot not rendered ({bar_pixels} bar-coloured pixels); see {shot}"
