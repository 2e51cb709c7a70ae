"""The morning report for people: pictures and one self-contained ``report.html`` per run.

Pictures (PNG bytes, drawn with matplotlib's Agg canvas on a ``matplotlib.figure.Figure``; pyplot
and its global figure registry are never used):

* a confusion matrix of the classes present in the labels (row-normalised, an ``other`` column
  for predictions outside them; above :data:`MAX_MATRIX_CLASSES` classes, the classes with most
  errors only, as its title says);
* per-class accuracy (recall), sorted;
* the confidence histogram (correct and wrong apart) beside a reliability diagram with the
  expected calibration error (ECE);
* a gallery of the most confident mistakes, thumbnails read from the images' URIs;
* for every run, labelled or not: the shares of the most predicted classes (horizontal bars) and,
  without labels, the confidence histogram alone.

Class names come from the run's :class:`~batch_classify.vocabulary.Vocabulary` (ImageNet-1k or a
model's own classes); wnids are shown only where the classes have them.

:func:`render_html` puts them, with the summary and the per-class table, into one page that
needs nothing else: the pictures are ``data:`` URIs, the CSS is inline, there is no script, and a
Content-Security-Policy forbids loading anything from anywhere. Every string that comes from data
(paths, labels, class names, URIs) is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import io
import math
import textwrap
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from batch_classify.storage import StorageOptions, filesystem, join, write_bytes
from batch_classify.vocabulary import Vocabulary

#: Resolution of every picture, dots per inch; figure sizes below are in inches.
DPI = 100
#: Up to this many label classes the confusion matrix shows them all, named; above, the
#: classes with most errors (this many).
MAX_MATRIX_CLASSES = 30
#: Up to this many label classes the per-class chart names every class; above, it shows the
#: sorted recall of all of them and names the :data:`WORST_NAMED` worst.
MAX_NAMED_BARS = 40
WORST_NAMED = 25
#: Most tiles in the mistakes gallery (8 rows of 6): keeps the picture under 2,200 pixels high.
MAX_GALLERY = 48
#: Default number of equal-width confidence bins of the ECE: Guo et al. 2017 use M = 15.
DEFAULT_BINS = 15
#: Display names are cut to this many characters on the axes of the pictures.
NAME_CHARS = 24
#: Most bars in the predicted-class distribution (keeps the picture within 11.5 inches high).
MAX_DISTRIBUTION_BARS = 30

#: The page may load nothing: only its own inline styles and ``data:`` images.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# ---------------------------------------------------------------- calibration


def calibration(confidence: np.ndarray, correct: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict:
    """Expected calibration error and the reliability diagram's bins.

    The definition of Guo et al. 2017, "On Calibration of Modern Neural Networks" (eq. 3): the
    confidences are put in ``n_bins`` equal-width bins ``B_m = ((m-1)/M, m/M]`` (a confidence of
    exactly 0 goes to the first bin), and ``ECE = sum_m |B_m| / N * |acc(B_m) - conf(B_m)|``,
    with ``acc`` the fraction correct and ``conf`` the mean confidence in the bin. Confidences
    are compared with the edges as given (a float32 0.2 is a little above 0.2).

    Args:
        confidence: float [N], the probability of the predicted class, in [0, 1].
        correct: bool [N], whether the prediction is right.
        n_bins: M, at least 1.

    Returns:
        ``ece`` (float in [0, 1]; None when N is 0), ``n`` (N), ``edges`` float64 [M + 1],
        ``count`` int64 [M], ``accuracy`` and ``confidence`` float64 [M] (NaN in empty bins).

    Raises:
        ValueError: shapes differ, ``n_bins < 1``, or a confidence is outside [0, 1] or NaN.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    right = np.asarray(correct, dtype=bool).reshape(-1)
    if conf.shape != right.shape:
        raise ValueError(f"confidence has {conf.size} values, correct {right.size}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, not {n_bins}")
    if conf.size and not (np.all(conf >= 0.0) and np.all(conf <= 1.0)):  # NaN fails both
        raise ValueError("confidences must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin m holds (edges[m], edges[m + 1]]: the number of inner edges strictly below the value.
    which = np.searchsorted(edges[1:-1], conf, side="left")
    count = np.bincount(which, minlength=n_bins).astype(np.int64)
    hits = np.bincount(which, weights=right.astype(np.float64), minlength=n_bins)
    total = np.bincount(which, weights=conf, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, hits / count, np.nan)
        mean_conf = np.where(count > 0, total / count, np.nan)
    if conf.size == 0:
        ece = None
    else:
        filled = count > 0
        ece = float(np.sum(count[filled] / conf.size * np.abs(acc[filled] - mean_conf[filled])))
    return {"ece": ece, "n": int(conf.size), "edges": edges, "count": count, "accuracy": acc, "confidence": mean_conf}


def calibration_fields(
    label_index: np.ndarray, pred_index: np.ndarray, confidence: np.ndarray, n_bins: int = DEFAULT_BINS
) -> dict:
    """The report's calibration fields, JSON-ready, over the labelled rows.

    Args:
        label_index: int64 [N], -1 where the image has no label (such rows are skipped).
        pred_index: int64 [N], the top-1 class.
        confidence: float32 [N], the softmax probability of ``pred_index``.

    Returns:
        ``{"ece": float | None, "calibration_bins": [{"lower", "upper", "count", "accuracy",
        "confidence"}, ...]}``: ``ece`` as a fraction (0.032 is 3.2 %), None with no labelled
        row (and then no bins); ``accuracy``/``confidence`` None in empty bins.

    Raises:
        ValueError: see :func:`calibration`.
    """
    y = np.asarray(label_index).reshape(-1)
    mask = y >= 0
    if not mask.any():
        return {"ece": None, "calibration_bins": []}
    cal = calibration(np.asarray(confidence)[mask], np.asarray(pred_index)[mask] == y[mask], n_bins)
    bins = [
        {
            "lower": float(cal["edges"][m]),
            "upper": float(cal["edges"][m + 1]),
            "count": int(cal["count"][m]),
            "accuracy": None if cal["count"][m] == 0 else float(cal["accuracy"][m]),
            "confidence": None if cal["count"][m] == 0 else float(cal["confidence"][m]),
        }
        for m in range(n_bins)
    ]
    return {"ece": cal["ece"], "calibration_bins": bins}


# ---------------------------------------------------------------- drawing helpers


def _figure(width: float, height: float):
    """A Figure on its own Agg canvas (no pyplot, nothing registered globally); size in inches."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # No "Software" text chunk: matplotlib's would carry its web address into the page.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _label(text: str, chars: int = NAME_CHARS) -> str:
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
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot()
    im = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    font = 9 if k <= 20 else 7
    ax.set_xticks(range(k + 1), [_label(names[c]) for c in classes] + ["other"], rotation=90, fontsize=font)
    ax.set_yticks(range(k), [_label(names[c]) for c in classes], fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    if k <= 15:
        for (i, j), v in np.ndenumerate(matrix):
            if counts[i, j]:
                ax.text(j, i, f"{100 * v:.0f}%" if v >= 0.005 else "<1%", ha="center", va="center", fontsize=7,
                        color="white" if v > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.04, label="share of the true class")
    return _png(fig)


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
        ax.set_yticks(ys, [f"{_label(names[classes[i]])} (n={support[i]})" for i in idx], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.12)
        ax.axvline(top1, color="#c44e52", linestyle="--", linewidth=1, label=f"top-1 {100 * top1:.1f}%")
        for yy, i in zip(ys, idx):
            ax.text(recall[i] + 0.01, yy, f"{100 * recall[i]:.0f}%", va="center", fontsize=7)
        ax.set_xlabel("accuracy (recall)")
        ax.set_title(title, fontsize=10)
        ax.legend(loc="lower right", fontsize=8)

    n = len(classes)
    if n <= max_named:
        fig = _figure(8.0, float(np.clip(1.5 + 0.25 * n, 3.0, 11.5)))
        bars(fig.add_subplot(), order, f"Per-class accuracy (recall) of the {n} label classes, worst first")
        return _png(fig)
    fig = _figure(13.0, 8.0)
    left, right = fig.subplots(1, 2, width_ratios=[1, 1])
    ranked = np.sort(recall)[::-1]
    left.fill_between(np.arange(1, n + 1), ranked, step="mid", color="#4c72b0", alpha=0.8)
    left.axhline(top1, color="#c44e52", linestyle="--", linewidth=1, label=f"top-1 {100 * top1:.1f}%")
    left.set_xlim(1, n)
    left.set_ylim(0, 1.02)
    left.set_xlabel("class rank (best to worst)")
    left.set_ylabel("accuracy (recall)")
    left.set_title(f"Accuracy of all {n} label classes, sorted", fontsize=10)
    left.legend(loc="lower left", fontsize=8)
    worst = order[:WORST_NAMED]
    bars(right, worst, f"The {len(worst)} worst of {n} classes")
    return _png(fig)


def confidence_png(confidence: np.ndarray, correct: np.ndarray | None, *, n_bins: int = DEFAULT_BINS) -> bytes:
    """Confidence histogram, and with ``correct`` a reliability diagram with the ECE, as a PNG.

    Args:
        confidence: float32 [N], probability of the predicted class.
        correct: bool [N] (the histogram splits correct from wrong and the reliability diagram
            is drawn), or None for unlabelled predictions (the histogram alone).
        n_bins: bins of the reliability diagram and the ECE (see :func:`calibration`).

    Raises:
        ValueError: see :func:`calibration`.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    hist_edges = np.linspace(0.0, 1.0, 21)
    if correct is None:
        fig = _figure(6.5, 4.5)
        ax = fig.add_subplot()
        ax.hist(conf, bins=hist_edges, color="#8c8c8c", edgecolor="white")
        ax.set_title(f"Confidence of the {conf.size} predictions (no labels)", fontsize=10)
        ax.set_xlabel("confidence (probability of the predicted class)")
        ax.set_ylabel("images")
        ax.set_xlim(0, 1)
        return _png(fig)
    right = np.asarray(correct, dtype=bool).reshape(-1)
    cal = calibration(conf, right, n_bins)
    fig = _figure(13.0, 5.0)
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
    rel.set_title(f"Reliability diagram: ECE = {100 * cal['ece']:.1f}% ({n_bins} bins; counts in the bars)", fontsize=10)
    rel.legend(loc="upper left", fontsize=8)
    return _png(fig)


def prediction_distribution_png(distribution: list[dict]) -> bytes:
    """The shares of the most predicted classes as horizontal bars, as a PNG (no labels needed).

    Args:
        distribution: ``[{"name", "count", "share"}, ...]`` as in
            :func:`batch_classify.report.label_free`'s ``prediction_distribution`` (``share``: a
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
    fig = _figure(8.0, float(np.clip(1.5 + 0.3 * k, 3.0, 11.5)))
    ax = fig.add_subplot()
    ys = np.arange(k)
    ax.barh(ys, share, color="#4c72b0", height=0.7)
    ax.set_yticks(ys, [f"{_label(r['name'])} (n={int(r['count'])})" for r in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(float(share.max()), 0.01) * 1.18)
    for yy, v in zip(ys, share):
        ax.text(v, yy, f" {100 * v:.1f}%", va="center", fontsize=7)
    from matplotlib.ticker import PercentFormatter

    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))  # decimals chosen from the axis range
    ax.set_xlabel("share of the predicted images")
    title = f"The {k} most predicted classes" if k == len(rows) else f"The {k} most predicted of the {len(rows)} classes given"
    ax.set_title(title + " (no labels needed)", fontsize=10)
    return _png(fig)


def confident_mistakes(predictions: pa.Table, n: int) -> list[dict]:
    """The ``n`` most confident wrong predictions among the labelled rows, most confident first.

    Args:
        predictions: rows of :data:`batch_classify.results.PREDICTION_SCHEMA` (at least ``path``,
            ``label``, ``label_index``, ``pred_index``, ``pred_label``, ``confidence``).

    Returns:
        dicts with those six keys (ties in confidence: by path).
    """
    if predictions.num_rows == 0 or n <= 0:
        return []
    y = predictions.column("label_index").fill_null(-1).to_numpy()
    p = predictions.column("pred_index").to_numpy()
    conf = predictions.column("confidence").to_numpy(zero_copy_only=False)
    wrong = np.flatnonzero((y >= 0) & (p != y))
    if not len(wrong):
        return []
    paths = np.asarray(predictions.column("path").to_pylist(), dtype=object)
    pick = wrong[np.lexsort((paths[wrong], -conf[wrong]))][:n]
    rows = predictions.select(["path", "label", "label_index", "pred_index", "pred_label", "confidence"]).take(pick)
    return rows.to_pylist()


def _read_thumbnail(fs, path: str, size: int):
    """A thumbnail (PIL RGB image, letterboxed to ``size`` × ``size`` on white) or the reason it failed."""
    from PIL import Image

    from batch_classify.preprocess import ClassificationPreset, DecodeError

    try:
        data = fs.cat_file(path)
    except Exception as err:  # noqa: BLE001 - any read fault becomes the tile's reason
        return f"cannot read: {type(err).__name__}: {err}"
    try:
        # The run's own decoder: EXIF orientation applied, any mode made RGB, JPEGs drafted small,
        # oversized images refused before decoding.
        img = ClassificationPreset(resize_size=size, crop_size=size, mean=(0, 0, 0), std=(1, 1, 1)).decode(data)
        img.thumbnail((size, size), Image.Resampling.BICUBIC)
    except DecodeError as err:
        return f"cannot decode: {err}"
    except Exception as err:  # noqa: BLE001 - a thumbnail never fails the report
        return f"cannot decode: {type(err).__name__}: {err}"
    tile = Image.new("RGB", (size, size), (255, 255, 255))
    tile.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return tile


def load_thumbnails(uris: Sequence[str], storage: StorageOptions, *, size: int = 192) -> list:
    """Thumbnails of images by URI (local or S3, as :mod:`batch_classify.storage` reaches them).

    Returns:
        one entry per URI: a PIL RGB image ``size`` × ``size`` (EXIF orientation applied,
        letterboxed on white), or a string saying why it could not be shown. Never raises for
        a missing, unreadable or undecodable image.
    """

    def one(uri: str):
        try:
            fs, path = filesystem(uri, storage)
        except Exception as err:  # noqa: BLE001 - e.g. an unknown protocol
            return f"cannot read: {type(err).__name__}: {err}"
        return _read_thumbnail(fs, path, size)

    if not uris:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(uris))) as pool:
        return list(pool.map(one, uris))


def _gallery(mistakes: Sequence[dict], storage: StorageOptions, names: Sequence[str], *, columns: int = 6,
             thumb_px: int = 192) -> tuple[bytes, list[str | None]]:
    mistakes = list(mistakes)[:MAX_GALLERY]
    if not mistakes:
        raise ValueError("no mistakes to show")
    tiles = load_thumbnails([m["path"] for m in mistakes], storage, size=thumb_px)
    cols = min(columns, len(mistakes))
    nrows = math.ceil(len(mistakes) / cols)
    fig = _figure(2.2 * cols, 0.5 + 2.65 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, cols)).reshape(-1)
    for ax in axes:
        ax.set_axis_off()
    reasons: list[str | None] = []
    for k, (m, tile, ax) in enumerate(zip(mistakes, tiles, axes), start=1):
        true_name = names[m["label_index"]] if 0 <= m["label_index"] < len(names) else str(m["label"])
        pred_name = m["pred_label"] or (names[m["pred_index"]] if 0 <= m["pred_index"] < len(names) else "")
        ax.set_title(
            f"#{k}  {100 * float(m['confidence']):.1f}%\ntrue: {_label(true_name, 22)}\npred: {_label(pred_name, 22)}",
            fontsize=8, loc="left",
        )
        if isinstance(tile, str):
            reasons.append(tile)
            ax.set_axis_on()
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor("#eeeeee")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            text = "\n".join(textwrap.wrap(tile, 26)[:6])
            ax.text(0.5, 0.5, _label(text, 170), ha="center", va="center", fontsize=6.5, color="#8b0000",
                    transform=ax.transAxes)
        else:
            reasons.append(None)
            ax.imshow(np.asarray(tile), interpolation="antialiased")
    fig.suptitle(f"The {len(mistakes)} most confident mistakes (confidence of the wrong prediction)", fontsize=10)
    return _png(fig), reasons


def mistakes_gallery_png(
    mistakes: Sequence[dict], storage: StorageOptions, names: Sequence[str], *, columns: int = 6, thumb_px: int = 192
) -> bytes:
    """A gallery of mistakes as a PNG: thumbnails with the confidence, true and predicted class.

    Args:
        mistakes: rows as :func:`confident_mistakes` returns them, shown in order (at most
            :data:`MAX_GALLERY`; the figure is 2.2 inches per column, 2.65 per row).
        storage: how to reach the images (the run's :class:`StorageOptions`).
        names: display name of every class index.

    An image that cannot be read or decoded becomes a grey tile stating the reason.

    Raises:
        ValueError: ``mistakes`` is empty.
    """
    return _gallery(mistakes, storage, names, columns=columns, thumb_px=thumb_px)[0]


# ---------------------------------------------------------------- the page


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def _pp(v, sign: str = "+") -> str:
    """A fraction (a change, signed by default) in percentage points."""
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:{sign}.1f} points"


def _num(v, fmt: str = "{}") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return fmt.format(v)


def _img(png: bytes, alt: str) -> str:
    from PIL import Image

    w, h = Image.open(io.BytesIO(png)).size
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" width="{w}" height="{h}" alt="{_esc(alt)}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table; header and cells must already be escaped HTML; columns in ``numeric`` align right."""
    def cell(tag: str, j: int, c: str) -> str:
        return f'<{tag} class="n">{c}</{tag}>' if j in numeric else f"<{tag}>{c}</{tag}>"

    head = "".join(cell("th", j, h) for j, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", j, c) for j, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _facts(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table of name → value; both already escaped HTML."""
    body = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="facts"><tbody>{body}</tbody></table>'


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;
max-width:1340px;padding:1rem 1.5rem 3rem;color:#1d1d1f;background:#fff;line-height:1.4}
h1{font-size:1.5rem;margin:.5rem 0 1rem}h2{font-size:1.2rem;margin:2rem 0 .6rem;border-bottom:1px solid #ddd;
padding-bottom:.2rem}code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.9em;word-break:break-all}
table{border-collapse:collapse;margin:.4rem 0;font-size:.9rem}th,td{border:1px solid #d0d0d0;padding:.25rem .55rem;
text-align:left;vertical-align:top}th{background:#f3f3f6}td.n,th.n{text-align:right}
table.facts td:first-child{font-weight:600;background:#fafafa}tr.worse td{background:#fdecea}tr.better td{background:#eaf6ec}
img{max-width:100%;height:auto;display:block;border:1px solid #e3e3e3}figure{margin:.5rem 0 1rem}
figcaption{font-size:.85rem;color:#555;margin-top:.3rem}.note{background:#f6f6f9;border-left:4px solid #999;
padding:.5rem .8rem;margin:.6rem 0}.alert{background:#fdecea;border-left:4px solid #c62828;padding:.6rem .9rem;
font-weight:600}.ok{background:#eaf6ec;border-left:4px solid #2e7d32;padding:.6rem .9rem}
.big{font-size:1.05em;font-weight:700}footer{margin-top:2rem;font-size:.8rem;color:#777}
"""


def _summary(report: dict, ece: float | None) -> str:
    device = f"{report.get('device') or 'n/a'} × {report.get('num_actors') or 'n/a'} actors"
    facts = [
        ("model", f"<code>{_esc(report.get('model', 'n/a'))}</code>"),
        ("input", f"<code>{_esc(report.get('input', 'n/a'))}</code>"),
        ("output", f"<code>{_esc(report.get('run_uri', 'n/a'))}</code>"),
        ("images listed", _esc(_num(report.get("n_listed")))),
        ("predicted", _esc(_num(report.get("n_predicted")))),
        ("failed", _esc(_num(report.get("n_failed")))),
        ("reused from an earlier run", _esc(_num(report.get("n_reused", 0)))),
        ("non-image files ignored", _esc(_num(report.get("n_ignored")))),
        ("labelled", _esc(_num(report.get("n_labelled")))),
        ("top-1", f'<span class="big">{_pct(report.get("top1"))}</span>'),
        ("top-5", f'<span class="big">{_pct(report.get("top5"))}</span>'),
    ]
    if "restricted_top1" in report:
        facts.append(
            (f"top-1 among the {_esc(_num(report.get('n_label_classes')))} label classes (Imagenette-style)",
             f'<span class="big">{_pct(report.get("restricted_top1"))}</span>')
        )
    facts.append(("expected calibration error (ECE)", _pct(ece)))
    if "mean_confidence" in report:
        facts.append(("mean confidence (probability of the top-1 class)", _esc(_pct(report.get("mean_confidence")))))
    if "low_confidence_threshold" in report:
        threshold = report.get("low_confidence_threshold")
        share = report.get("low_confidence_share")
        facts.append((
            f"low confidence (under {_esc(_num(threshold, '{:.2f}'))})",
            "n/a" if share is None else _esc(f"{_pct(share)} ({_num(report.get('n_low_confidence'))} images)"),
        ))
    if "mean_entropy" in report:
        entropy, known, n_pred = report.get("mean_entropy"), report.get("n_entropy"), report.get("n_predicted")
        text = _num(entropy, "{:.3f} nats")
        if entropy is not None and known is not None and n_pred is not None and known < n_pred:
            text += f" (over the {known} of {n_pred} images whose entropy is known)"
        facts.append(("mean entropy of the predicted distribution", _esc(text)))
    if "n_predicted_classes" in report:
        facts.append(("distinct predicted classes", _esc(_num(report.get("n_predicted_classes")))))
    facts += [
        ("wall time", _esc(_num(report.get("wall_seconds"), "{:.1f} s"))),
        ("throughput", _esc(_num(report.get("images_per_second"), "{:.1f} images/s"))),
        ("device", _esc(device)),
    ]
    return _facts(facts)


def _comparison(comp: dict) -> str:
    parts = ["<h2>Compared with the previous committed run</h2>"]
    threshold = _pp(comp.get("threshold"), sign="")
    drift, drift_gate = comp.get("drift_tvd"), comp.get("drift_threshold")
    if comp.get("regressed"):
        # A comparison written before the gates gave reasons: the top-1 gate was the only one.
        reasons = comp.get("reasons") or [f"top-1 dropped by more than {threshold}"]
        items = "".join(f"<li>{_esc(r)}</li>" for r in reasons)
        parts.append(f'<div class="alert">Regression against the previous run:<ul>{items}</ul></div>')
    elif comp.get("top1_delta") is not None:
        parts.append(f'<p class="ok">No top-1 drop beyond {_esc(threshold)} against the previous run.</p>')
    else:
        if drift_gate is None:
            gate = "the drift gate is off (no --max-drift)"
        elif drift is None:
            gate = "no drift could be measured (a run predicted nothing)"
        else:
            gate = f"prediction drift {drift:.3f} is within --max-drift {drift_gate:g}"
        parts.append(f'<p class="ok">Top-1 cannot be compared (a run has no labels); {_esc(gate)}.</p>')
    drift_name = "prediction drift (total variation distance, 0 = same distribution, 1 = disjoint)"
    if drift_gate is not None:
        drift_name += f"; --max-drift {drift_gate:g}, gated only when top-1 cannot be compared"
    parts.append(
        _facts(
            [
                ("previous run", f"<code>{_esc(comp.get('previous_run_uri', 'n/a'))}</code>"),
                *([("previous model", f"<code>{_esc(comp['previous_model'])}</code>")] if comp.get("previous_model") else []),
                ("top-1 change", _esc(_pp(comp.get("top1_delta")))),
                ("top-5 change", _esc(_pp(comp.get("top5_delta")))),
                (_esc(drift_name), _esc(_num(drift, "{:.3f}"))),
                ("mean confidence change", _esc(_pp(comp.get("mean_confidence_delta")))),
            ]
        )
    )
    moved = comp.get("share_changes") or []
    if moved:
        rows = [
            (_esc(d.get("name")), _esc(_pct(d.get("share_before"))), _esc(_pct(d.get("share_after"))),
             _esc(_pp(d.get("delta"))))
            for d in moved
        ]
        parts += [
            "<h3>Classes whose share of the predictions moved most (no labels needed)</h3>",
            _table(["predicted class", "share before", "after", "change"], rows, numeric=(1, 2, 3)),
        ]
    deltas = [d for d in comp.get("per_class_delta") or [] if d.get("delta") is not None]
    if deltas:
        deltas.sort(key=lambda d: (d["delta"], str(d.get("name")), str(d.get("wnid") or "")))
        shown = deltas[:15] + deltas[-15:] if len(deltas) > 30 else deltas  # the largest falls and rises
        with_wnid = any(d.get("wnid") for d in shown)
        body = []
        for d in shown:
            cls = "worse" if d["delta"] < 0 else "better" if d["delta"] > 0 else ""
            cells = [f"<td>{_esc(d.get('name', ''))}</td>"]
            if with_wnid:
                cells.append(f"<td><code>{_esc(d['wnid'])}</code></td>" if d.get("wnid") else "<td></td>")
            cells += [f'<td class="n">{_esc(v)}</td>'
                      for v in (_pct(d.get("recall_before")), _pct(d.get("recall_after")), _pp(d["delta"]))]
            body.append(f'<tr class="{cls}">{"".join(cells)}</tr>')
        note = f" ({len(shown)} of {len(deltas)}: the largest falls and rises)" if len(shown) < len(deltas) else ""
        head = "<th>class</th>" + ("<th>wnid</th>" if with_wnid else "")
        parts.append(
            f"<h3>Per-class accuracy change{_esc(note)}</h3><table><thead><tr>{head}"
            f'<th class="n">before</th><th class="n">after</th><th class="n">change</th></tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
        )
    return "\n".join(parts)


def _figure_html(png: bytes, alt: str, caption: str) -> str:
    return f"<figure>{_img(png, alt)}<figcaption>{caption}</figcaption></figure>"


def _predicted_classes(report: dict, predictions: pa.Table, conf: np.ndarray, labelled: bool) -> list[str]:
    """The "Predicted classes" section: the distribution, and without labels the confidence histogram."""
    from batch_classify.report import prediction_distribution

    distribution = report.get("prediction_distribution")
    if distribution is None:  # a report written before the label-free fields: count the table
        distribution = prediction_distribution(predictions.column("pred_label").to_numpy(zero_copy_only=False))
    n = predictions.num_rows
    n_classes = report.get("n_predicted_classes")
    out = ["<h2>Predicted classes</h2>"]
    if distribution:
        of = f" (of the {_esc(n_classes)} classes predicted)" if n_classes is not None else ""
        out.append(_figure_html(
            prediction_distribution_png(distribution), "predicted class distribution",
            f"Share of the {n} predicted images given to each of the {len(distribution[:MAX_DISTRIBUTION_BARS])} most "
            f"predicted classes{of}. Needs no labels; compare it with earlier runs to see the predictions move.",
        ))
    if not labelled:
        threshold, share = report.get("low_confidence_threshold"), report.get("low_confidence_share")
        low = (f" {_esc(_pct(share))} of them are under {_esc(_num(threshold, '{:.2f}'))}."
               if share is not None and threshold is not None else "")
        out.append(_figure_html(confidence_png(conf, None), "confidence histogram",
                                f"How sure the model is of its top-1 prediction, over every predicted image.{low}"))
    return out


def render_html(
    report: dict,
    predictions: pa.Table,
    storage: StorageOptions,
    *,
    vocabulary: Vocabulary | None = None,
    max_mistakes: int = 24,
) -> str:
    """The run's report as one self-contained HTML page.

    Contents: the summary (the facts of :func:`batch_classify.report.render_markdown`, plus the
    ECE, the label-free figures and, when the report has them, ``restricted_top1``), a note with
    ``report["unlabelled_reason"]`` when set, the comparison with the previous run
    (``report["comparison"]``, when present and not None; labelled or not), the confusion matrix,
    the most frequent confusions, per-class accuracy, confidence and reliability, the most
    confident mistakes (gallery and list), the predicted classes (for every run: their shares,
    and without labels the confidence histogram), and the per-class table. Without labels the
    accuracy pictures are left out and the page says so; without predictions, the pictures are.

    Args:
        report: the run's report (``report.json``'s fields).
        predictions: the committed predictions (:data:`batch_classify.results.PREDICTION_SCHEMA`).
        storage: how to reach the images for the thumbnails.
        vocabulary: the model's classes, for the class names of the pictures; None: ImageNet-1k
            (:func:`batch_classify.vocabulary.imagenet`).
        max_mistakes: tiles in the mistakes gallery (at most :data:`MAX_GALLERY`).

    Returns:
        the page (UTF-8 text): no script, no external URL; pictures as ``data:image/png`` URIs.
    """
    if vocabulary is None:
        from batch_classify.vocabulary import imagenet

        vocabulary = imagenet()
    names = vocabulary.names
    n = predictions.num_rows
    y = predictions.column("label_index").fill_null(-1).to_numpy() if n else np.zeros(0, np.int64)
    p = predictions.column("pred_index").to_numpy() if n else np.zeros(0, np.int64)
    conf = predictions.column("confidence").to_numpy(zero_copy_only=False) if n else np.zeros(0, np.float32)
    labelled = y >= 0
    cal = calibration(conf[labelled], p[labelled] == y[labelled]) if labelled.any() else None
    ece = cal["ece"] if cal else None

    run_id = report.get("run_id", "")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Classification report: run {_esc(run_id)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Classification report: run <code>{_esc(run_id)}</code></h1>",
    ]
    if report.get("unlabelled_reason"):
        out.append(f'<p class="note">Unlabelled run: {_esc(report["unlabelled_reason"])}</p>')
    comparison = report.get("comparison")
    if comparison and comparison.get("regressed"):
        out.append('<p class="alert">This run regressed against the previous committed run (see the comparison).</p>')
    out += ["<h2>Summary</h2>", _summary(report, ece)]
    if comparison:
        out.append(_comparison(comparison))

    if n == 0:
        out.append('<p class="note">No image was predicted in this run: there is nothing to draw.</p>')
    elif not labelled.any():
        out.append(
            '<p class="note">No predicted image carries a label, so there is no accuracy, confusion matrix, '
            "per-class accuracy, calibration or list of mistakes. Labels come from folders named by the model's "
            "class names (for ImageNet-1k models, wnids too) or from a <code>--labels</code> manifest.</p>"
        )
        out += _predicted_classes(report, predictions, conf, labelled=False)
    else:
        n_lab = int(labelled.sum())
        n_classes = len(np.unique(y[labelled]))
        out += [
            "<h2>Confusion matrix</h2>",
            _figure_html(
                confusion_matrix_png(y, p, names), "confusion matrix",
                f"{n_lab} labelled images over {n_classes} label classes. Each row is one true class and sums to "
                "100%; the diagonal is that class's accuracy."
                + (f" With more than {MAX_MATRIX_CLASSES} classes only those with most errors are drawn."
                   if n_classes > MAX_MATRIX_CLASSES else ""),
            ),
        ]
        if report.get("confusions"):
            rows = [
                (_esc(c.get("true_name")) + (f' (<code>{_esc(c["true_wnid"])}</code>)' if c.get("true_wnid") else ""),
                 _esc(c.get("pred_name")), _esc(c.get("count")))
                for c in report["confusions"]
            ]
            out += ["<h3>Most frequent confusions</h3>", _table(["true", "predicted", "count"], rows, numeric=(2,))]
        out += [
            "<h2>Per-class accuracy</h2>",
            _figure_html(per_class_accuracy_png(y, p, names), "per-class accuracy",
                         "Accuracy (recall) of each label class: the share of its images predicted as it."),
            "<h2>Confidence and calibration</h2>",
            _figure_html(
                confidence_png(conf[labelled], p[labelled] == y[labelled]), "confidence histogram and reliability diagram",
                f"Left: how sure the model is, right and wrong apart. Right: accuracy against confidence in "
                f"{DEFAULT_BINS} equal bins; the expected calibration error (ECE, Guo et al. 2017) is the "
                f"support-weighted mean gap: {_pct(ece)}.",
            ),
        ]
        mistakes = confident_mistakes(predictions, min(max_mistakes, MAX_GALLERY))
        out.append("<h2>Most confident mistakes</h2>")
        if not mistakes:
            out.append(f'<p class="note">No mistakes among the {n_lab} labelled images.</p>')
        else:
            png, reasons = _gallery(mistakes, storage, names)
            out.append(_figure_html(png, "most confident mistakes",
                                    "Wrong predictions the model was surest of; numbers match the list below."))
            rows = []
            for k, (m, reason) in enumerate(zip(mistakes, reasons), start=1):
                true_name = names[m["label_index"]] if 0 <= m["label_index"] < len(names) else ""
                rows.append((
                    _esc(k), f"<code>{_esc(m['path'])}</code>", _esc(m["label"]), _esc(true_name),
                    _esc(m["pred_label"]), _esc(_pct(float(m["confidence"]))), _esc(reason or ""),
                ))
            out.append(_table(["#", "image", "label", "true class", "predicted", "confidence", "thumbnail"], rows, numeric=(0, 5)))
        out += _predicted_classes(report, predictions, conf, labelled=True)

    if report.get("per_class"):
        rows = sorted(report["per_class"], key=lambda r: (-r.get("support", 0), r.get("index", 0)))
        with_wnid = any(r.get("wnid") for r in rows)
        out += [
            f"<h2>Per class ({len(rows)} classes, by support)</h2>",
            _table(
                ["class", *(["wnid"] if with_wnid else []), "support", "predicted", "correct", "precision", "recall"],
                [
                    (_esc(r.get("name")),
                     *([f"<code>{_esc(r['wnid'])}</code>" if r.get("wnid") else ""] if with_wnid else []),
                     _esc(r.get("support")), _esc(r.get("predicted")), _esc(r.get("correct")),
                     _esc(_pct(r.get("precision"))), _esc(_pct(r.get("recall"))))
                    for r in rows
                ],
                numeric=(2, 3, 4, 5, 6) if with_wnid else (1, 2, 3, 4, 5),
            ),
        ]
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out += [f"<footer>batch-classify report, written {made}.</footer>", "</body></html>"]
    return "\n".join(out) + "\n"


def write_report_html(
    run_uri: str,
    report: dict,
    storage: StorageOptions,
    predictions: pa.Table | None = None,
    vocabulary: Vocabulary | None = None,
) -> str:
    """Render the committed run's page and write it as ``RUN_URI/report.html``.

    ``predictions``: the run's committed predictions when the caller has read them already
    (all of ``PREDICTION_SCHEMA``'s columns); read here otherwise. ``vocabulary``: the model's
    classes (None: ImageNet-1k), see :func:`render_html`.

    Raises:
        FileNotFoundError: the run has no ``_SUCCESS`` (not committed).
        OSError: storage fails.

    Returns:
        the URI of ``report.html``.
    """
    from batch_classify.results import read_committed

    if predictions is None:
        predictions = read_committed(run_uri, storage)
    uri = join(run_uri, "report.html")
    write_bytes(uri, render_html(report, predictions, storage, vocabulary=vocabulary).encode("utf-8"), storage)
    return uri
