"""The run's numbers: accuracy against labels, calibration, and the label-free statistics.

* Accuracy (:func:`accuracy`): top-1/top-5, per-class precision/recall/support, frequent
  confusions. It is computed over the predicted images that carry a label; failed images are
  counted in ``n_failed`` and never scored as right or wrong. :func:`restricted_accuracy` scores
  the Imagenette-style top-1 among the label classes.
* Calibration (:func:`calibration`, :func:`calibration_fields`): the expected calibration error
  (ECE) and the reliability diagram's bins, computed once per run; the page draws those bins.
* Label-free statistics (:func:`label_free`), for every run, labelled or not: the distribution of
  the predicted classes, the confidence histogram, the share of low-confidence predictions and
  the mean entropy of the softmax.

Classes are keyed by display name in the label-free figures (two runs of different models can be
compared), by wnid when both sides have one in the per-class figures.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from batch_classify.models.vocabulary import Vocabulary

#: Equal-width bins of the label-free confidence histogram: 20 bins of 0.05, the bins of
#: :func:`batch_classify.report.figures.confidence_png`.
CONFIDENCE_HIST_BINS = 20
#: Default number of equal-width confidence bins of the ECE: Guo et al. 2017 use M = 15.
DEFAULT_BINS = 15


@dataclass(frozen=True)
class ClassStats:
    """Per-class figures. precision = tp / predicted as the class, recall = tp / support.

    ``wnid`` is None for a model's own classes (no WordNet ids).
    """

    index: int
    wnid: str | None
    name: str
    support: int
    predicted: int
    correct: int

    @property
    def precision(self) -> float | None:
        return self.correct / self.predicted if self.predicted else None

    @property
    def recall(self) -> float | None:
        return self.correct / self.support if self.support else None


def restricted_accuracy(label_index: np.ndarray, restricted_index: np.ndarray) -> dict:
    """Imagenette-style accuracy: each image's prediction is the argmax over the classes present
    in the labels only (``restricted_index``), so a 10-class subset is scored among its 10 classes.

    Args:
        label_index: int64 [N], -1 where unlabelled.
        restricted_index: int64 [N], -1 where not computed (no labels, or reused from a run
            whose label classes differed).

    Returns:
        ``restricted_top1`` (None when no row has both), ``n_restricted`` (rows scored),
        ``n_label_classes`` (distinct classes among those rows' labels).
    """
    mask = (label_index >= 0) & (restricted_index >= 0)
    n = int(mask.sum())
    return {
        "restricted_top1": float((restricted_index[mask] == label_index[mask]).mean()) if n else None,
        "n_restricted": n,
        "n_label_classes": int(len(np.unique(label_index[label_index >= 0]))),
    }



# ---------------------------------------------------------------- accuracy


def accuracy(
    label_index: np.ndarray, pred_index: np.ndarray, top5_index: np.ndarray, vocabulary: Vocabulary, *, top_confusions: int = 10
) -> dict:
    """Score predictions against labels.

    Args:
        label_index: int64 [N], -1 where the image has no label (unlabelled rows are skipped).
        pred_index: int64 [N], top-1 class index.
        top5_index: int64 [N, 5], the five best class indices, best first.
        vocabulary: the model's classes (names; wnids for ImageNet-1k, else None).

    Returns:
        ``n_labelled``, ``top1``, ``top5`` (None with no labelled row), ``per_class`` (list of
        dicts for every class that occurs as a label or a prediction among labelled rows, by
        class index: ``index``, ``wnid`` (None without wnids), ``name``, ``support``,
        ``predicted``, ``correct``, ``precision``, ``recall``), ``confusions`` (most frequent
        (true, predicted) pairs, most frequent first: ``true_index``, ``true_wnid`` (None without
        wnids), ``true_name``, ``pred_index``, ``pred_name``, ``count``).
    """
    mask = label_index >= 0
    y, p, t5 = label_index[mask], pred_index[mask], top5_index[mask]
    n = int(mask.sum())
    if n == 0:
        return {"n_labelled": 0, "top1": None, "top5": None, "per_class": [], "confusions": []}
    wnids = vocabulary.wnids

    def wnid(c: int) -> str | None:
        return wnids[c] if wnids is not None else None

    right = p == y
    top5 = (t5 == y[:, None]).any(axis=1)
    support = np.bincount(y, minlength=vocabulary.num_classes)
    predicted = np.bincount(p, minlength=vocabulary.num_classes)
    correct = np.bincount(y[right], minlength=vocabulary.num_classes)
    classes = np.flatnonzero((support > 0) | (predicted > 0))
    per_class = []
    for c in classes:
        stats = ClassStats(int(c), wnid(int(c)), vocabulary.names[c], int(support[c]), int(predicted[c]), int(correct[c]))
        per_class.append(
            {
                "index": stats.index,
                "wnid": stats.wnid,
                "name": stats.name,
                "support": stats.support,
                "predicted": stats.predicted,
                "correct": stats.correct,
                "precision": stats.precision,
                "recall": stats.recall,
            }
        )
    pairs = Counter(zip(y[~right].tolist(), p[~right].tolist(), strict=True)).most_common(top_confusions)
    confusions = [
        {
            "true_index": a,
            "true_wnid": wnid(a),
            "true_name": vocabulary.names[a],
            "pred_index": b,
            "pred_name": vocabulary.names[b],
            "count": k,
        }
        for (a, b), k in pairs
    ]
    return {
        "n_labelled": n,
        "top1": float(right.mean()),
        "top5": float(top5.mean()),
        "per_class": per_class,
        "confusions": confusions,
    }



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


def calibration_from_fields(fields: dict) -> dict | None:
    """The inverse of :func:`calibration_fields`: the report's ``ece`` and ``calibration_bins`` back
    in :func:`calibration`'s form (the same float64 values; NaN in empty bins), so that the page
    draws the run's reliability diagram without scoring it again.

    Returns:
        None when ``fields`` has no bins (no labelled row, or a report written before them).
    """
    bins = fields.get("calibration_bins")
    if not bins or fields.get("ece") is None:
        return None
    nan = float("nan")
    return {
        "ece": fields["ece"],
        "n": int(sum(b["count"] for b in bins)),
        "edges": np.array([b["lower"] for b in bins] + [bins[-1]["upper"]], dtype=np.float64),
        "count": np.array([b["count"] for b in bins], dtype=np.int64),
        "accuracy": np.array([nan if b["accuracy"] is None else b["accuracy"] for b in bins], dtype=np.float64),
        "confidence": np.array([nan if b["confidence"] is None else b["confidence"] for b in bins], dtype=np.float64),
    }


# ---------------------------------------------------------------- label-free statistics


def name_counts(pred_names) -> tuple[Counter, int]:
    """(predictions per display name, N) of object [N] ``pred_names``; used here and by the comparison."""
    names = np.asarray(pred_names, dtype=object).reshape(-1)
    return Counter(names.tolist()), int(names.size)


def prediction_distribution(pred_names: np.ndarray, top_classes: int = 20) -> list[dict]:
    """The most predicted classes by display name.

    Args:
        pred_names: object [N], the predicted class name of each predicted image (``pred_label``).
        top_classes: rows returned, at most.

    Returns:
        ``[{"name", "count", "share"}, ...]``: the ``top_classes`` names with most predictions,
        most first (ties by name); ``share`` is ``count / N``, a fraction. Empty when N is 0.
    """
    counts, n = name_counts(pred_names)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[: max(0, top_classes)]
    return [{"name": name, "count": int(k), "share": k / n} for name, k in ranked]


def label_free(
    pred_names: np.ndarray,
    confidence: np.ndarray,
    entropy: np.ndarray | None,
    *,
    low_confidence: float,
    top_classes: int = 20,
) -> dict:
    """Statistics of the predictions that need no labels (for every run, labelled or not).

    Classes are keyed by their display name (the ``pred_label`` string), so that runs of two
    models with different class lists can be compared. Display names need not be unique: a
    model's ``config.json`` may repeat a name, and older ImageNet-1k name lists have two
    ``crane`` (the bird n02012849, the machine n03126707) and two ``maillot`` (torchvision's
    current list, used here, says ``crane bird`` and ``maillot tank suit``). Classes that share a
    name are counted together under it, which is what a distribution of displayed names means.

    Args:
        pred_names: object [N], the predicted class name of each predicted image (``pred_label``).
        confidence: float32 [N], the softmax probability of the top-1 class, in [0, 1].
        entropy: float32 [N], the entropy of the full softmax distribution in nats (0 for a
            one-hot prediction, ln K for a uniform one over K classes), NaN where unknown (rows
            written by older versions); or None when no row has it.
        low_confidence: a fraction in [0, 1]: a prediction with ``confidence < low_confidence`` is
            a low-confidence one (equal is not). Compared in float64, with the float32
            confidence's exact value.
        top_classes: rows of ``prediction_distribution``, at most.

    Returns:
        JSON-ready: ``prediction_distribution`` (see :func:`prediction_distribution`),
        ``n_predicted_classes`` (distinct names predicted), ``confidence_histogram``
        (``{"edges": 21 floats 0, 0.05, ..., 1, "counts": 20 ints}``; bin i holds
        ``edges[i] <= c < edges[i+1]``, the last bin also ``c == 1``, as ``numpy.histogram``),
        ``mean_confidence`` (None when N is 0), ``low_confidence_threshold`` (``low_confidence``),
        ``n_low_confidence``, ``low_confidence_share`` (a fraction; None when N is 0),
        ``mean_entropy`` (nats, the mean over the rows whose entropy is finite; None when there
        is none), ``n_entropy`` (those rows).

    Raises:
        ValueError: lengths differ, ``low_confidence`` is outside [0, 1], or a confidence is
            outside [0, 1] or NaN.
    """
    counts, n = name_counts(pred_names)
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    if conf.size != n:
        raise ValueError(f"pred_names has {n} values, confidence {conf.size}")
    if not 0.0 <= low_confidence <= 1.0:
        raise ValueError(f"low_confidence must lie in [0, 1], not {low_confidence}")
    if n and not (np.all(conf >= 0.0) and np.all(conf <= 1.0)):  # NaN fails both
        raise ValueError("confidences must lie in [0, 1]")
    if entropy is None:
        ent = np.zeros(0, np.float64)
    else:
        ent = np.asarray(entropy, dtype=np.float64).reshape(-1)
        if ent.size != n:
            raise ValueError(f"pred_names has {n} values, entropy {ent.size}")
        ent = ent[np.isfinite(ent)]
    edges = [i / CONFIDENCE_HIST_BINS for i in range(CONFIDENCE_HIST_BINS + 1)]
    hist, _ = np.histogram(conf, bins=np.asarray(edges))
    n_low = int(np.count_nonzero(conf < low_confidence))
    return {
        "prediction_distribution": prediction_distribution(pred_names, top_classes),
        "n_predicted_classes": len(counts),
        "confidence_histogram": {"edges": edges, "counts": [int(c) for c in hist]},
        "mean_confidence": float(conf.mean()) if n else None,
        "low_confidence_threshold": float(low_confidence),
        "n_low_confidence": n_low,
        "low_confidence_share": n_low / n if n else None,
        "mean_entropy": float(ent.mean()) if ent.size else None,
        "n_entropy": int(ent.size),
    }

