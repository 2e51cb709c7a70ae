"""The report's pictures: PNG bytes drawn with matplotlib's Agg canvas on a
``matplotlib.figure.Figure`` (pyplot and its global figure registry are never used).

* a confusion matrix of the classes present in the labels (row-normalised, an ``other`` column
  for predictions outside them; above :data:`MAX_MATRIX_CLASSES` classes, the classes with most
  errors only, as its title says);
* per-class accuracy (recall), sorted;
* the confidence histogram (correct and wrong apart) beside a reliability diagram with the
  expected calibration error (ECE);
* for every run, labelled or not: the shares of the most predicted classes (horizontal bars) and,
  without labels, the confidence histogram alone.

The gallery of mistakes is :mod:`batch_classify.report.gallery`. Class names come from the run's
:class:`~batch_classify.models.vocabulary.Vocabulary`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from batch_classify.report.format import pct
from batch_classify.report.metrics import CONFIDENCE_HIST_BINS, DEFAULT_BINS, calibration

#: Resolution of every picture, dots per inch; figure sizes below are in inches.
DPI = 100
#: Up to this many label classes the confusion matrix shows them all, named; above, the
#: classes with most errors (this many).
MAX_MATRIX_CLASSES = 30
#: Up to this many label classes the per-class chart names every class; above, it shows the
#: sorted recall of all of them and names the :data:`WORST_NAMED` worst.
MAX_NAMED_BARS = 40
WORST_NAMED = 25
#: Display names are cut to this many characters on the axes of the pictures.
NAME_CHARS = 24
#: Most bars in the predicted-class distribution (keeps the picture within 11.5 inches high).
MAX_DISTRIBUTION_BARS = 30


# ---------------------------------------------------------------- drawing helpers


def new_figure(width: float, height: float):
    """A Figure on its own Agg canvas (no pyplot, nothing registered globally); size in inches."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig) -> bytes:
    """The figure as PNG bytes at :data:`DPI`."""
    buf = io.BytesIO()
    # No "Software" text chunk: matplotlib's would carry its web address into the page.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def axis_label(text: str, chars: int = NAME_CHARS) -> str:
    """A name as matplotlib should print it: cut to ``chars``, ``$`` escaped (no mathtext)."""
    text = str(text)
    if len(text) > chars:
        text = text[: chars - 1] + "…"
    return text.replace("$", r"\$")


def _labelled(label_index: np.ndarray, pred_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(label_index, dtype=np.int64).reshape(-1)
    p = np.asarray(pred_index, dtype=np.int64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"label_index has {y.size} values, pred_index {p.size}")
    mask = y >= 0
    if not mask.any():
        raise ValueError("no labelled row: accuracy pictures need labels")
    return y[mask], p[mask]


# ---------------------------------------------------------------- pictures


def confusion_counts(
    label_index: np.ndarray, pred_index: np.ndarray, *, max_classes: int = MAX_MATRIX_CLASSES
) -> tuple[np.ndarray, np.ndarray, int]:
    """The counts behind :func:`confusion_matrix_png`.

    Rows are the label classes (the distinct ``label_index`` values of the labelled rows), in
    class-index order; with more than ``max_classes`` of them, only the ``max_classes`` with most
    errors (ties: higher error rate, then larger support, then lower index). Columns are the
    same classes, then ``other``: a prediction of any class not among the rows.

    Args:
        label_index: int64 [N], -1 where unlabelled (skipped).
        pred_index: int64 [N].

    Returns:
        (classes int64 [K], counts int64 [K, K + 1] with ``counts[i, j]`` the images of class
        ``classes[i]`` predicted as ``classes[j]`` (``j == K``: other), number of label classes).

    Raises:
        ValueError: no labelled row, or lengths differ.
    """
    y, p = _labelled(label_index, pred_index)
    classes, support = np.unique(y, return_counts=True)
    n_label_classes = len(classes)
    if n_label_classes > max_classes:
        errors = np.bincount(y[p != y], minlength=int(classes.max()) + 1)[classes]
        order = np.lexsort((classes, -support, -errors / support, -errors))  # the last key sorts first
        classes = np.sort(classes[order[:max_classes]])
    k = len(classes)
    keep = np.isin(y, classes)
    rows = np.searchsorted(classes, y[keep])
    pos = np.searchsorted(classes, p[keep]).clip(max=k - 1)
    cols = np.where(classes[pos] == p[keep], pos, k)
    counts = np.bincount(rows * (k + 1) + cols, minlength=k * (k + 1)).reshape(k, k + 1)
    return classes, counts.astype(np.int64), n_label_classes


def confusion_matrix_png(
    label_index: np.ndarray, pred_index: np.ndarray, names: Sequence[str], *, max_classes: int = MAX_MATRIX_CLASSES
) -> bytes:
    """The confusion matrix of the labelled rows as a PNG.

    Rows are the true classes present in the labels, in class-index order (ImageNet's wnid
    order keeps related classes together); columns the same classes and ``other`` (a prediction
    outside them); each row is divided by its support. With more than ``max_classes`` label
    classes, only the ``max_classes`` with most errors are shown (see :func:`confusion_counts`),
    ``other`` then gathers every class not shown, and the title says so. The figure stays within
    14 × 13 inches (1,400 × 1,300 pixels) whatever the number of classes; class names label the
    axes; cells carry their percentage up to 15 classes.

    Args:
        label_index: int64 [N], -1 where unlabelled (skipped).
        pred_index: int64 [N].
        names: display name of every class index (e.g. ``Vocabulary.names``).

    Raises:
        ValueError: no labelled row, or lengths differ.
    """
    classes, counts, n_label_classes = confusion_counts(label_index, pred_index, max_classes=max_classes)
    k = len(classes)
    if n_label_classes > k:
        title = (
            f"Confusion matrix: the {k} of {n_label_classes} label classes with most errors\n"
            f"(rows normalised; 'other' = predicted as any class not shown)"
        )
    else:
        title = "Confusion matrix (rows normalised; 'other' = predicted outside the label classes)"
    matrix = counts / counts.sum(axis=1, keepdims=True)

    side = float(np.clip(3.5 + 0.3 * k, 5.0, 13.0))
    fig = new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    im = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    font = 9 if k <= 20 else 7
    ax.set_xticks(range(k + 1), [axis_label(names[c]) for c in classes] + ["other"], rotation=90, fontsize=font)
    ax.set_yticks(range(k), [axis_label(names[c]) for c in classes], fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    if k <= 15:
        for (i, j), v in np.ndenumerate(matrix):
            if counts[i, j]:
                ax.text(j, i, pct(v, 0) if v >= 0.005 else "<1%", ha="center", va="center", fontsize=7,
                        color="white" if v > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.04, label="share of the true class")
    return to_png(fig)


def per_class_accuracy_png(
    label_index: np.ndarray, pred_index: np.ndarray, names: Sequence[str], *, max_named: int = MAX_NAMED_BARS
) -> bytes:
    """Per-class accuracy (recall: correct / support) of the label classes as a PNG.

    Up to ``max_named`` classes: one named bar each, worst first, with its support. Above: the
    sorted recall of every class (an area, no names) beside the :data:`WORST_NAMED` worst, named.
    A dashed line marks the overall top-1. At most 13 × 11.5 inches.

    Raises:
        ValueError: no labelled row, or lengths differ.
    """
    y, p = _labelled(label_index, pred_index)
    classes, support = np.unique(y, return_counts=True)
    correct = np.bincount(y[p == y], minlength=int(classes.max()) + 1)[classes]
    recall = correct / support
    top1 = float(np.mean(p == y))
    order = np.lexsort((classes, -support, recall))  # worst first; ties: larger support first

    def bars(ax, idx, title):
        ys = np.arange(len(idx))
        ax.barh(ys, recall[idx], color="#4c72b0", height=0.7)
        ax.set_yticks(ys, [f"{axis_label(names[classes[i]])} (n={support[i]})" for i in idx], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.12)
        ax.axvline(top1, color="#c44e52", linestyle="--", linewidth=1, label=f"top-1 {pct(top1)}")
        for yy, i in zip(ys, idx):
            ax.text(recall[i] + 0.01, yy, pct(recall[i], 0), va="center", fontsize=7)
        ax.set_xlabel("accuracy (recall)")
        ax.set_title(title, fontsize=10)
        ax.legend(loc="lower right", fontsize=8)

    n = len(classes)
    if n <= max_named:
        fig = new_figure(8.0, float(np.clip(1.5 + 0.25 * n, 3.0, 11.5)))
        bars(fig.add_subplot(), order, f"Per-class accuracy (recall) of the {n} label classes, worst first")
        return to_png(fig)
    fig = new_figure(13.0, 8.0)
    left, right = fig.subplots(1, 2, width_ratios=[1, 1])
    ranked = np.sort(recall)[::-1]
    left.fill_between(np.arange(1, n + 1), ranked, step="mid", color="#4c72b0", alpha=0.8)
    left.axhline(top1, color="#c44e52", linestyle="--", linewidth=1, label=f"top-1 {pct(top1)}")
    left.set_xlim(1, n)
    left.set_ylim(0, 1.02)
    left.set_xlabel("class rank (best to worst)")
    left.set_ylabel("accuracy (recall)")
    left.set_title(f"Accuracy of all {n} label classes, sorted", fontsize=10)
    left.legend(loc="lower left", fontsize=8)
    worst = order[:WORST_NAMED]
    bars(right, worst, f"The {len(worst)} worst of {n} classes")
    return to_png(fig)


def confidence_png(
    confidence: np.ndarray, correct: np.ndarray | None, *, n_bins: int = DEFAULT_BINS, scored: dict | None = None
) -> bytes:
    """Confidence histogram, and with ``correct`` a reliability diagram with the ECE, as a PNG.

    Args:
        confidence: float32 [N], probability of the predicted class.
        correct: bool [N] (the histogram splits correct from wrong and the reliability diagram
            is drawn), or None for unlabelled predictions (the histogram alone).
        n_bins: bins of the reliability diagram and the ECE (see :func:`calibration`).
        scored: the run's calibration of these predictions, as :func:`calibration` returns it (the
            report's, through :func:`~batch_classify.report.metrics.calibration_from_fields`);
            None: computed here from ``confidence`` and ``correct`` with ``n_bins``.

    Raises:
        ValueError: see :func:`calibration`.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    hist_edges = np.linspace(0.0, 1.0, CONFIDENCE_HIST_BINS + 1)
    if correct is None:
        fig = new_figure(6.5, 4.5)
        ax = fig.add_subplot()
        ax.hist(conf, bins=hist_edges, color="#8c8c8c", edgecolor="white")
        ax.set_title(f"Confidence of the {conf.size} predictions (no labels)", fontsize=10)
        ax.set_xlabel("confidence (probability of the predicted class)")
        ax.set_ylabel("images")
        ax.set_xlim(0, 1)
        return to_png(fig)
    right = np.asarray(correct, dtype=bool).reshape(-1)
    cal = calibration(conf, right, n_bins) if scored is None else scored
    n_bins = len(cal["count"])
    fig = new_figure(13.0, 5.0)
    hist, rel = fig.subplots(1, 2)
    hist.hist([conf[right], conf[~right]], bins=hist_edges, stacked=True, color=["#55a868", "#c44e52"],
              label=[f"correct ({int(right.sum())})", f"wrong ({int((~right).sum())})"], edgecolor="white")
    hist.set_xlim(0, 1)
    hist.set_xlabel("confidence (probability of the predicted class)")
    hist.set_ylabel("images")
    hist.set_title(f"Confidence of the {conf.size} labelled predictions", fontsize=10)
    hist.legend(loc="upper left", fontsize=8)

    edges, count = cal["edges"], cal["count"]
    filled = count > 0
    width = np.diff(edges)
    rel.bar(edges[:-1][filled], cal["accuracy"][filled], width=width[filled], align="edge", color="#4c72b0",
            edgecolor="white", label="accuracy in the bin")
    gap_low = np.minimum(cal["accuracy"], cal["confidence"])[filled]
    gap = np.abs(cal["accuracy"] - cal["confidence"])[filled]
    rel.bar(edges[:-1][filled], gap, bottom=gap_low, width=width[filled], align="edge", color="#c44e52",
            alpha=0.35, edgecolor="#c44e52", hatch="//", label="gap to mean confidence")
    rel.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1, label="perfect calibration")
    for lo, w, c in zip(edges[:-1][filled], width[filled], count[filled]):
        rel.text(lo + w / 2, 0.01, str(c), ha="center", va="bottom", fontsize=6, rotation=90, color="white")
    rel.set_xlim(0, 1)
    rel.set_ylim(0, 1)
    rel.set_xlabel("confidence")
    rel.set_ylabel("accuracy")
    rel.set_title(f"Reliability diagram: ECE = {pct(cal['ece'])} ({n_bins} bins; counts in the bars)", fontsize=10)
    rel.legend(loc="upper left", fontsize=8)
    return to_png(fig)


def prediction_distribution_png(distribution: list[dict]) -> bytes:
    """The shares of the most predicted classes as horizontal bars, as a PNG (no labels needed).

    Args:
        distribution: ``[{"name", "count", "share"}, ...]`` as in
            :func:`batch_classify.report.metrics.label_free`'s ``prediction_distribution`` (``share``: a
            fraction of all the run's predictions). Drawn most first (ties by name); above
            :data:`MAX_DISTRIBUTION_BARS` entries, the largest that many, as the title says.

    The figure is 8 inches wide and 3 to 11.5 inches high (at most 800 × 1,150 pixels).

    Raises:
        ValueError: ``distribution`` is empty.
    """
    rows = sorted(distribution, key=lambda r: (-float(r["share"]), str(r["name"])))
    if not rows:
        raise ValueError("no predicted class to draw")
    shown = rows[:MAX_DISTRIBUTION_BARS]
    k = len(shown)
    share = np.array([float(r["share"]) for r in shown])
    fig = new_figure(8.0, float(np.clip(1.5 + 0.3 * k, 3.0, 11.5)))
    ax = fig.add_subplot()
    ys = np.arange(k)
    ax.barh(ys, share, color="#4c72b0", height=0.7)
    ax.set_yticks(ys, [f"{axis_label(r['name'])} (n={int(r['count'])})" for r in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(float(share.max()), 0.01) * 1.18)
    for yy, v in zip(ys, share):
        ax.text(v, yy, f" {pct(v)}", va="center", fontsize=7)
    from matplotlib.ticker import PercentFormatter

    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))  # decimals chosen from the axis range
    ax.set_xlabel("share of the predicted images")
    title = f"The {k} most predicted classes" if k == len(rows) else f"The {k} most predicted of the {len(rows)} classes given"
    ax.set_title(title + " (no labels needed)", fontsize=10)
    return to_png(fig)

