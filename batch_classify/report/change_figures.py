"""The pictures of what moved: the previous and this run's class distributions side by side
(:func:`class_shares_png`) and the trend over the earlier runs (:func:`history_png`). Drawn like the
other pictures (:mod:`batch_classify.report.figures`: matplotlib's Agg canvas, no pyplot).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from batch_classify.report.figures import axis_label, new_figure, to_png
from batch_classify.report.format import pct

#: Colours of the previous run and of this run, everywhere they are drawn side by side.
PREVIOUS_COLOUR, CURRENT_COLOUR = "#a0a0a0", "#4c72b0"
#: The colour of a run that regressed, in the trend.
REGRESSED_COLOUR = "#c62828"


def class_shares_png(class_shares: Sequence[dict], *, previous_label: str = "previous run",
                     current_label: str = "this run") -> bytes:
    """The two runs' class distributions side by side: for each class, its share of the previous run's
    predictions and of this run's, as two horizontal bars.

    Args:
        class_shares: ``[{"name", "share_before", "share_after"}]`` (fractions), as the comparison's
            ``class_shares``: drawn in the order given, first at the top.
        previous_label, current_label: the legend's names of the two runs.

    The figure is 9 inches wide and 2.5 to 10 inches high (at most 900 × 1,000 pixels).

    Raises:
        ValueError: ``class_shares`` is empty.
    """
    rows = list(class_shares)
    if not rows:
        raise ValueError("no class to draw")
    k = len(rows)
    before = np.array([float(r["share_before"]) for r in rows])
    after = np.array([float(r["share_after"]) for r in rows])
    fig = new_figure(9.0, float(np.clip(1.4 + 0.5 * k, 2.5, 10.0)))
    ax = fig.add_subplot()
    ys = np.arange(k)
    ax.barh(ys - 0.2, before, height=0.38, color=PREVIOUS_COLOUR, label=previous_label)
    ax.barh(ys + 0.2, after, height=0.38, color=CURRENT_COLOUR, label=current_label)
    ax.set_yticks(ys, [axis_label(r["name"]) for r in rows], fontsize=8)
    ax.invert_yaxis()
    top = max(float(before.max()), float(after.max()), 0.01)
    ax.set_xlim(0, top * 1.22)
    for offset, values, colour in ((-0.2, before, "#555555"), (0.2, after, "#1d1d1f")):
        for yy, v in zip(ys, values):
            if v > 0:  # an empty bar needs no figure: its absence says it
                ax.text(v, yy + offset, f" {pct(v)}", va="center", fontsize=6.5, color=colour)
    from matplotlib.ticker import PercentFormatter

    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_xlabel("share of the images both runs predicted")
    # The legend between the title and the bars: never on a bar or its figure.
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, fontsize=8, frameon=False)
    ax.set_title(f"Class distributions side by side: the {k} classes largest in either run", fontsize=10, pad=22)
    return to_png(fig)


def _panels(runs: Sequence[dict]) -> list[tuple[str, str, list]]:
    """(title, kind, values) of the trend's panels that have at least one value: kind ``pct`` for a
    fraction, ``tvd`` for a distance, ``count`` for a number of images."""
    panels = []
    for key, title, kind in (("top1", "top-1", "pct"), ("mean_confidence", "mean confidence", "pct"),
                             ("drift_tvd", "prediction drift (TVD) against the run before", "tvd"),
                             ("n_failed", "failed images", "count")):
        values = [r.get(key) for r in runs]
        if any(v is not None for v in values):
            panels.append((title, kind, values))
    return panels


def history_png(runs: Sequence[dict], *, max_drift: float | None = None) -> bytes:
    """The trend: top-1 (when any run has labels), mean confidence, prediction drift and failed images
    over the runs, oldest on the left, one point per run; a run that regressed is a red point, the
    last run (this one) a larger point.

    Args:
        runs: oldest first, each with ``run_id`` and any of ``top1``, ``mean_confidence``,
            ``drift_tvd`` (fractions or None), ``n_failed``, ``regressed`` (None: no baseline).
        max_drift: this run's drift gate, drawn as a dashed line in the drift panel; None: not drawn.

    The figure is 11 inches wide, 2.4 inches per row of two panels (at most 1,100 × 560 pixels); run
    ids label the x axis (at most 12 of them, cut to 18 characters).

    Raises:
        ValueError: ``runs`` is empty or has no value to draw.
    """
    runs = list(runs)
    panels = _panels(runs)
    if not runs or not panels:
        raise ValueError("no run history to draw")
    n_rows = (len(panels) + 1) // 2
    fig = new_figure(11.0, 0.5 + 2.4 * n_rows)
    axes = np.atleast_1d(fig.subplots(n_rows, 2, sharex=True)).reshape(-1)
    xs = np.arange(len(runs))
    regressed = np.array([r.get("regressed") is True for r in runs])
    step = max(1, int(np.ceil(len(runs) / 12)))
    ticks = sorted(set(range(len(runs) - 1, -1, -step)))  # always label this run, the last
    for ax, (title, kind, values) in zip(axes, panels):
        y = np.array([np.nan if v is None else float(v) for v in values])
        known = ~np.isnan(y)
        ax.plot(xs[known], y[known], color=CURRENT_COLOUR, linewidth=1.2, marker="o", markersize=4, zorder=2)
        if (known & regressed).any():
            ax.scatter(xs[known & regressed], y[known & regressed], color=REGRESSED_COLOUR, s=36, zorder=3,
                       label="regressed")
        if known[-1]:
            ax.scatter([xs[-1]], [y[-1]], s=90, facecolors="none", edgecolors="#1d1d1f", zorder=4, label="this run")
        if kind == "tvd" and max_drift is not None:
            ax.axhline(max_drift, color=REGRESSED_COLOUR, linestyle="--", linewidth=1, label=f"max_drift = {max_drift:g}")
            ax.set_ylim(0, max(max_drift, float(np.nanmax(y)) if known.any() else 0.0) * 1.15 or 1.0)
            ax.legend(loc="best", fontsize=7)
        if kind == "pct":
            from matplotlib.ticker import PercentFormatter

            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
        if kind == "count":
            from matplotlib.ticker import MaxNLocator

            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(0, max(1.0, float(np.nanmax(y)) * 1.15) if known.any() else 1.0)
        ax.set_title(title, fontsize=9, loc="left")
        ax.grid(alpha=0.3)
        ax.set_xticks(ticks, [axis_label(str(runs[i].get("run_id")), 18) for i in ticks], rotation=30, ha="right",
                      fontsize=7)
        ax.tick_params(axis="x", labelbottom=True)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    axes[0].legend(loc="best", fontsize=7)
    fig.suptitle(f"The last {len(runs)} runs of this input and model, oldest first", fontsize=10)
    return to_png(fig)
