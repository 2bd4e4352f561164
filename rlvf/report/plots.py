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
    ax.set_xlabel("pass@1 (%), mean ± std over eval seeds")
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


def forest(labels: list[str], deltas: list[float], half_widths: list[float], title: str, xlabel: str) -> str:
    """One horizontal point per comparison with an error bar (here: ±2×SE), and the zero line."""
    plt = _plt()
    n = len(labels)
    width, height = 7.5, 1.2 + 0.3 * n
    fig, ax = plt.subplots(figsize=(width, height))
    left = 0.3 + 0.068 * max((len(x) for x in labels), default=1)
    fig.subplots_adjust(left=min(0.6, left / width), right=0.97, top=1 - 0.4 / height, bottom=0.65 / height)
    y = list(range(n))[::-1]
    colors = [
        "#2ca02c" if d - h > 0 else "#d62728" if d + h < 0 else "#7f7f7f"
        for d, h in zip(deltas, half_widths, strict=True)
    ]
    ax.errorbar(
        [d * 100 for d in deltas],
        y,
        xerr=[h * 100 for h in half_widths],
        fmt="none",
        ecolor="#555",
        capsize=3,
    )
    ax.scatter([d * 100 for d in deltas], y, c=colors, zorder=3)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _save(fig)


def stacked_bars(labels: list[str], parts: dict[str, list[float]], title: str, xlabel: str) -> str:
    """Horizontal stacked bars: one bar per label, one segment per part (legend below). The
    figure widens with the labels so long run names never squeeze the bars."""
    plt = _plt()
    n = len(labels)
    label_in = 0.3 + 0.068 * max((len(x) for x in labels), default=1)  # inches for the 8pt labels
    width = max(7.5, label_in + 5.0)
    rows_in = 0.3 * n
    legend_in = 0.25 * ((len(parts) + 3) // 4)
    height = 1.3 + rows_in + legend_in
    fig, ax = plt.subplots(figsize=(width, height))
    fig.subplots_adjust(
        left=label_in / width, right=0.97, top=1 - 0.4 / height, bottom=(0.75 + legend_in) / height
    )
    y = list(range(n))[::-1]
    acc = [0.0] * n
    for name, vals in parts.items():
        ax.barh(y, vals, left=acc, label=name)
        acc = [a + v for a, v in zip(acc, vals, strict=True)]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.legend(fontsize=7, ncol=min(4, max(1, len(parts))), loc="lower center", frameon=False)
    return _save(fig)


def stacked_area(x: list[float], parts: dict[str, list[float]], title: str, xlabel: str, ylabel: str) -> str:
    """Shares over training (each x column sums to 1), shown in percent."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    fig.subplots_adjust(left=0.1, right=0.75, top=0.92, bottom=0.12)
    names = list(parts)
    ax.stackplot(x, *[[v * 100 for v in parts[n]] for n in names], labels=names)
    ax.set_ylim(0, 100)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig)


def panels(items: list[dict[str, Any]], title: str, ncols: int = 3) -> str:
    """Small multiples, one panel per metric: items = [{title, series: [{label, x, y}]}]."""
    plt = _plt()
    n = max(1, len(items))
    cols = min(ncols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows + 0.5), squeeze=False)
    fig.subplots_adjust(
        left=0.07, right=0.98, top=1 - 0.55 / (2.6 * rows + 0.5), bottom=0.08, hspace=0.55, wspace=0.3
    )
    for ax, item in zip(axes.flat, items, strict=False):
        for s in item["series"]:
            ax.plot(
                s["x"],
                s["y"],
                marker="o" if len(s["x"]) <= 20 else None,
                markersize=3,
                linewidth=1.1,
                label=s["label"],
            )
        ax.set_title(item["title"], fontsize=9)
        ax.tick_params(labelsize=7)
        if len(item["series"]) > 1 and len(item["series"]) <= 6:
            ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(items) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    return _save(fig)
