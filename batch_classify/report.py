"""Run report: accuracy against labels, label-free prediction statistics, and the comparison with
the previous run.

* Accuracy (:func:`accuracy`): top-1/top-5, per-class precision/recall/support, frequent
  confusions. It is computed over the predicted images that carry a label; failed images are
  counted in ``n_failed`` and never scored as right or wrong.
* Label-free statistics (:func:`label_free`), for every run, labelled or not: the distribution of
  the predicted classes, the confidence histogram, the share of low-confidence predictions and
  the mean entropy of the softmax.
* The comparison with the previous run (:func:`compare`): accuracy changes when both runs have
  labels, prediction drift (total variation distance) and share changes always, and the
  regression gates.

Classes are keyed by display name in the label-free figures (two runs of different models can be
compared), by wnid when both sides have one in the per-class figures.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from batch_classify.vocabulary import Vocabulary

#: Equal-width bins of the label-free confidence histogram: 20 bins of 0.05, the bins of
#: :func:`batch_classify.report_html.confidence_png`.
CONFIDENCE_HIST_BINS = 20
#: Rows of :func:`compare`'s ``share_changes``.
SHARE_CHANGES = 10


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


# ---------------------------------------------------------------- label-free statistics


def _name_counts(pred_names) -> tuple[Counter, int]:
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
    counts, n = _name_counts(pred_names)
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
    counts, n = _name_counts(pred_names)
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


# ---------------------------------------------------------------- against the previous run


def _match_per_class(current: list[dict], previous: list[dict]) -> list[dict]:
    """Recall before/after of the classes labelled in both runs; see :func:`compare`."""
    before = [c for c in previous if c.get("support")]
    by_wnid: dict[str, list[dict]] = {}
    by_name: dict[str, list[dict]] = {}
    for c in before:
        if c.get("wnid"):
            by_wnid.setdefault(c["wnid"], []).append(c)
        by_name.setdefault(c.get("name"), []).append(c)
    rows = []
    for c in current:
        if not c.get("support"):
            continue
        old = None
        if c.get("wnid") and len(by_wnid.get(c["wnid"], [])) == 1:
            old = by_wnid[c["wnid"]][0]
        else:
            # By name, against previous entries that cannot be matched by wnid (this entry or
            # theirs has none); a name several of them share is not guessed.
            same = [o for o in by_name.get(c.get("name"), []) if not (c.get("wnid") and o.get("wnid"))]
            old = same[0] if len(same) == 1 else None
        if old is None or old.get("recall") is None or c.get("recall") is None:
            continue
        rows.append(
            {
                "wnid": c.get("wnid"),
                "name": c.get("name"),
                "recall_before": old["recall"],
                "recall_after": c["recall"],
                "delta": c["recall"] - old["recall"],
            }
        )
    rows.sort(key=lambda r: (r["delta"], str(r["name"]), r["wnid"] or ""))
    return rows


def compare(
    current: dict,
    previous: dict,
    current_pred: np.ndarray,
    previous_pred: np.ndarray,
    *,
    previous_run_uri: str,
    max_top1_drop: float,
    max_drift: float | None,
) -> dict:
    """How this run differs from the previous committed run on the same dataset.

    The two runs may have used different models with different class lists: predictions are
    compared by class display name, per-class recall by wnid where both entries have one, else by
    name (a name that several classes of the previous run share is left unmatched).

    Gates: a labelled run is gated on accuracy, ``regressed`` when top-1 fell by more than
    ``max_top1_drop``. Prediction drift is the proxy when labels are absent, so the drift gate
    (``drift_tvd > max_drift``) applies only when top-1 cannot be compared (either run
    unlabelled): a labelled run whose accuracy improves must not be flagged because its
    predictions moved.

    Args:
        current, previous: the two runs' reports (``top1``, ``top5``, ``per_class``, ``model``,
            ``mean_confidence``); a field that is missing (a ``report.json`` written by an older
            version) counts as None.
        current_pred, previous_pred: object [N], [M]: the predicted class name (``pred_label``)
            of every predicted image of each run.
        previous_run_uri: the previous run's URI, reported as given.
        max_top1_drop: a fraction (0.02 = 2 points): a top-1 drop larger than this is a regression.
        max_drift: a total variation distance in [0, 1] above which an unlabelled comparison is a
            regression; None turns that gate off.

    Returns:
        ``previous_run_uri``, ``previous_model``, ``top1_delta``, ``top5_delta`` (fractions; None
        where either run has no labels), ``per_class_delta`` (``{"wnid", "name", "recall_before",
        "recall_after", "delta"}`` for classes labelled in both, largest drop first, ties by name;
        ``wnid`` None for a model's own classes), ``drift_tvd`` (total variation distance between
        the two runs' predicted-class distributions over the union of names, ``0.5 * sum |p - q|``:
        0 identical, 1 disjoint; None when either run predicted nothing), ``share_changes`` (the
        up to 10 names whose share of the predictions moved most, by ``|delta|``, ties by name;
        names whose share did not move are left out: ``{"name", "share_before", "share_after",
        "delta"}``, fractions), ``mean_confidence_delta`` (None when either is None),
        ``threshold`` (``max_top1_drop``), ``drift_threshold`` (``max_drift``), ``reasons`` (one
        sentence per gate that fired) and ``regressed``.
    """

    def delta(key: str) -> float | None:
        a, b = current.get(key), previous.get(key)
        return None if a is None or b is None else a - b

    after, n = _name_counts(current_pred)
    before, m = _name_counts(previous_pred)
    if n and m:
        changes = []
        for name in set(after) | set(before):
            p, q = after.get(name, 0) / n, before.get(name, 0) / m
            changes.append({"name": name, "share_before": q, "share_after": p, "delta": p - q})
        tvd = float(0.5 * math.fsum(abs(c["delta"]) for c in changes))
        moved = [c for c in changes if c["delta"] != 0]
        # |delta| rounded for the order only: two equal moves computed differently tie by name.
        moved.sort(key=lambda c: (-round(abs(c["delta"]), 12), str(c["name"])))
        share_changes = moved[:SHARE_CHANGES]
    else:
        tvd, share_changes = None, []

    top1_delta = delta("top1")
    reasons = []
    if top1_delta is not None:
        if top1_delta < -max_top1_drop:
            reasons.append(
                f"top-1 dropped by {-100 * top1_delta:.1f} points, over --max-top1-drop {max_top1_drop:g} "
                f"({100 * max_top1_drop:.1f} points)"
            )
    elif max_drift is not None and tvd is not None and tvd > max_drift:
        reasons.append(f"prediction drift (TVD) {tvd:.3f}, over --max-drift {max_drift:g}")
    return {
        "previous_run_uri": previous_run_uri,
        "previous_model": previous.get("model"),
        "top1_delta": top1_delta,
        "top5_delta": delta("top5"),
        "per_class_delta": _match_per_class(current.get("per_class") or [], previous.get("per_class") or []),
        "drift_tvd": tvd,
        "share_changes": share_changes,
        "mean_confidence_delta": delta("mean_confidence"),
        "threshold": max_top1_drop,
        "drift_threshold": max_drift,
        "reasons": reasons,
        "regressed": bool(reasons),
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


# ---------------------------------------------------------------- Markdown


def _md(text) -> str:
    """A data string in a Markdown table cell: ``|`` escaped, line breaks made spaces."""
    return " ".join(str(text).replace("|", "\\|").split())


def _named(name, wnid) -> str:
    """``name (`wnid`)`` when there is a wnid, the name alone otherwise."""
    return f"{_md(name)} (`{wnid}`)" if wnid else _md(name)


def render_markdown(report: dict, *, max_classes: int = 50) -> str:
    """The report as Markdown: the summary, the label-free prediction statistics, the comparison
    with the previous run, the most frequent confusions and the per-class table (up to
    ``max_classes`` rows). Values a report lacks (an unlabelled run's accuracy, a field an older
    version did not write) read "n/a"."""

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    def num(v: float | None, unit: str) -> str:
        return "n/a" if v is None or v != v else f"{v:.1f}{unit}"

    def sign(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:+.1f} points"

    lines = [f"# Classification report: run `{report['run_id']}`", ""]
    if report.get("unlabelled_reason"):
        lines += [f"> **Unlabelled run:** {_md(report['unlabelled_reason'])}", ""]
    lines += [
        "| | |",
        "|---|---|",
        f"| model | `{report['model']}` |",
        f"| input | `{report['input']}` |",
        f"| output | `{report['run_uri']}` |",
        f"| images listed | {report['n_listed']} |",
        f"| predicted | {report['n_predicted']} |",
        f"| failed | {report['n_failed']}"
        + (f" ({report['n_list_failed']} of them folders that could not be listed)" if report.get("n_list_failed") else "")
        + " |",
        f"| reused from an earlier run | {report.get('n_reused', 0)} |",
        f"| non-image files ignored | {report.get('n_ignored') if report.get('n_ignored') is not None else 'n/a'} |",
        f"| labelled | {report['n_labelled']} |",
        f"| **top-1** | **{pct(report['top1'])}** |",
        f"| **top-5** | **{pct(report['top5'])}** |",
        f"| top-1 among the {report.get('n_label_classes', 0)} label classes (Imagenette-style) | {pct(report.get('restricted_top1'))} |",
        f"| calibration error (ECE, 15 bins) | {pct(report.get('ece'))} |",
        f"| wall time | {num(report.get('wall_seconds'), ' s')} |",
        f"| throughput | {num(report.get('images_per_second'), ' images/s')} |",
        f"| device | {report.get('device') or 'n/a'} × {report.get('num_actors') or 'n/a'} actors |",
        "",
    ]
    if "prediction_distribution" in report:
        threshold = report.get("low_confidence_threshold")
        entropy = report.get("mean_entropy")
        n_entropy, n_pred = report.get("n_entropy"), report.get("n_predicted")
        entropy_text = "n/a" if entropy is None else f"{entropy:.3f} nats"
        if entropy is not None and n_entropy is not None and n_pred is not None and n_entropy < n_pred:
            entropy_text += f" (over the {n_entropy} of {n_pred} images whose entropy is known)"
        low = "n/a" if report.get("low_confidence_share") is None or threshold is None else (
            f"{pct(report['low_confidence_share'])} under {threshold:.2f} ({report.get('n_low_confidence')} images)"
        )
        lines += [
            "## Predictions (no labels needed)",
            "",
            f"- mean confidence (probability of the top-1 class): {pct(report.get('mean_confidence'))}",
            f"- low confidence: {low}",
            f"- mean entropy of the predicted distribution: {entropy_text}",
            f"- distinct predicted classes: {report.get('n_predicted_classes', 'n/a')}",
        ]
        top = (report.get("prediction_distribution") or [])[:10]
        if top:
            lines += ["", "| predicted class | images | share |", "|---|---|---|"]
            lines += [f"| {_md(r['name'])} | {r['count']} | {pct(r['share'])} |" for r in top]
        lines.append("")
    cmp = report.get("comparison")
    if cmp:
        drift = cmp.get("drift_tvd")
        gate = cmp.get("drift_threshold")
        lines += [
            "## Against the previous run",
            "",
            f"Previous committed run on this dataset: `{cmp['previous_run_uri']}` (model `{cmp.get('previous_model')}`).",
            "",
            f"- top-1: {sign(cmp.get('top1_delta'))}; top-5: {sign(cmp.get('top5_delta'))}",
            "- prediction drift (total variation distance of the predicted classes): "
            + ("n/a" if drift is None else f"{drift:.3f}")
            + ("" if gate is None else f" (--max-drift {gate:g}, gated only when top-1 cannot be compared)"),
            f"- mean confidence: {sign(cmp.get('mean_confidence_delta'))}",
        ]
        if cmp.get("regressed"):
            reasons = cmp.get("reasons") or [
                f"top-1 dropped by more than {100 * cmp['threshold']:.1f} points (--max-top1-drop)"
            ]
            lines += [f"- **REGRESSION: {_md(r)}**" for r in reasons]
        moved = cmp.get("share_changes") or []
        if moved:
            lines += ["", "Classes whose share of the predictions moved most:", "",
                      "| predicted class | share before | after | change |", "|---|---|---|---|"]
            lines += [
                f"| {_md(r['name'])} | {pct(r['share_before'])} | {pct(r['share_after'])} | {sign(r['delta'])} |"
                for r in moved
            ]
        worst = [r for r in cmp.get("per_class_delta") or [] if r["delta"] < 0][:10]
        if worst:
            lines += ["", "| class | recall before | after | change |", "|---|---|---|---|"]
            lines += [
                f"| {_named(r['name'], r.get('wnid'))} | {pct(r['recall_before'])} | {pct(r['recall_after'])} | {sign(r['delta'])} |"
                for r in worst
            ]
        lines.append("")
    if report["confusions"]:
        lines += ["## Most frequent confusions", "", "| true | predicted | count |", "|---|---|---|"]
        lines += [
            f"| {_named(c['true_name'], c.get('true_wnid'))} | {_md(c['pred_name'])} | {c['count']} |"
            for c in report["confusions"]
        ]
        lines.append("")
    if report["per_class"]:
        rows = sorted(report["per_class"], key=lambda r: (-r["support"], r["index"]))[:max_classes]
        with_wnid = any(r.get("wnid") for r in rows)
        lines += [
            f"## Per class ({len(rows)} of {len(report['per_class'])}, by support)",
            "",
            "| class | wnid | support | precision | recall |" if with_wnid else "| class | support | precision | recall |",
            "|---|---|---|---|---|" if with_wnid else "|---|---|---|---|",
        ]
        lines += [
            f"| {_md(r['name'])} |" + ((f" `{r['wnid']}` |" if r.get("wnid") else " |") if with_wnid else "")
            + f" {r['support']} | {pct(r['precision'])} | {pct(r['recall'])} |"
            for r in rows
        ]
    return "\n".join(lines) + "\n"


def to_json(report: dict) -> bytes:
    return json.dumps(report, indent=2, sort_keys=False).encode()
