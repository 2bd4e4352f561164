"""SVG plots with matplotlib's Agg backend: no CDN, no web fonts, deterministic bytes
(fixed hash salt, no date, text kept as text)."""

from __future__ import annotations

import io
from typing import Any

_READY = False


def _plt():
    global _READY
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    if not _READY:
        matplotlib.rcParams.update(
            {
                "svg.hashsalt": "rlvf",
                "svg.fonttype": "none",
                "font.family": "sans-serif",
                "axes.grid": True,
                "grid.alpha": 0.3,
                "figure.dpi": 100,
            }
        )
        _READY = True
    return plt


#: the bar colour of the results plot (the browser test looks for it)
BAR_COLOR = "#1f77b4"


def _save(fig) -> str:
    plt = _plt()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "rlvf"})  # one draw: no "tight" bbox
    plt.close(fig)
    return buf.getvalue()


def results_bars(labels: list[str], means: list[float], stds: list[float], title: str) -> str:
    plt = _plt()
    n = len(labels)
    width, height = 7.5, 1.1 + 0.3 * n
    fig, ax = plt.subplots(figsize=(width, height))
    left = 0.3 + 0.068 * max((len(x) for x in labels), default=1)  # inches for the 8pt labels
    fig.subplots_adjust(left=min(0.6, left / width), right=0.97, top=1 - 0.4 / height, bottom=0.6 / height)
    y = list(range(n))[::-1]
    ax.barh(y, [m * 100 for m in means], xerr=[s * 100 for s in stds], color=BAR_COLOR, capsize=3)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("pass@1 (%), mean ± std over seeds")
    ax.set_xlim(0, 100)
    ax.set_title(title)
    return _save(fig)


def lines(
    series: list[dict[str, Any]],
    xlabel: str,
    ylabel: str,
    title: str,
    *,
    categorical_x: bool = False,
    reference: tuple[str, float] | None = None,
    percent: bool = True,
) -> str:
    """series: [{label, x, y, yerr?}]."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    fig.subplots_adjust(left=0.1, right=0.97, top=0.92, bottom=0.12)
    scale = 100 if percent else 1
    for s in series:
        xs = list(range(len(s["x"]))) if categorical_x else s["x"]
        ys = [v * scale for v in s["y"]]
        style = {
            "marker": "o" if len(xs) <= 30 else None,
            "label": s["label"],
            "linewidth": 1.2,
            "markersize": 5,
        }
        if s.get("yerr"):
            ax.errorbar(xs, ys, yerr=[e * scale for e in s["yerr"]], capsize=3, **style)
        else:
            ax.plot(xs, ys, **style)
    if categorical_x and series:
        ax.set_xticks(range(len(series[0]["x"])), [str(x) for x in series[0]["x"]])
    if reference is not None:
        ax.axhline(reference[1] * scale, color="grey", linestyle="--", linewidth=1, label=reference[0])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if series and len(series) <= 15:
        ax.legend(fontsize=8)
    return _save(fig)
