"""Accuracy report: top-1/top-5, per-class precision/recall/support, frequent confusions.

Accuracy is computed over the predicted images that carry a label; failed images
are counted in ``n_failed`` and never scored as right or wrong.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np

from batch_classify.vocabulary import Vocabulary


@dataclass(frozen=True)
class ClassStats:
    """Per-class figures. precision = tp / predicted as the class, recall = tp / support."""

    index: int
    wnid: str
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


def compare(
    current: dict,
    previous: dict,
    current_pred: np.ndarray,
    previous_pred: np.ndarray,
    *,
    previous_run_uri: str,
    max_top1_drop: float,
    num_classes: int,
) -> dict:
    """How this run differs from the previous committed run on the same dataset.

    Args:
        current, previous: the two runs' reports (``top1``, ``top5``, ``per_class``, ``model``).
        current_pred, previous_pred: int64 [N], [M]: every predicted class index of each run.
        max_top1_drop: a top-1 drop larger than this (a fraction, 0.02 = 2 points) is a regression.

    Returns:
        ``previous_run_uri``, ``previous_model``, ``top1_delta``, ``top5_delta`` (None where either
        run has no labels), ``per_class_delta`` (recall before/after for classes labelled in both,
        largest drop first), ``drift_tvd`` (total variation distance between the two runs'
        predicted-class distributions: 0 identical, 1 disjoint), ``threshold``, ``regressed``.
    """

    def delta(key: str) -> float | None:
        a, b = current.get(key), previous.get(key)
        return None if a is None or b is None else a - b

    before = {c["index"]: c for c in previous.get("per_class") or [] if c.get("support")}
    per_class = []
    for c in current.get("per_class") or []:
        old = before.get(c["index"])
        if c.get("support") and old is not None:
            per_class.append(
                {
                    "wnid": c["wnid"],
                    "name": c["name"],
                    "recall_before": old["recall"],
                    "recall_after": c["recall"],
                    "delta": c["recall"] - old["recall"],
                }
            )
    per_class.sort(key=lambda r: (r["delta"], r["wnid"]))
    if len(current_pred) and len(previous_pred):
        p = np.bincount(current_pred, minlength=num_classes) / len(current_pred)
        q = np.bincount(previous_pred, minlength=num_classes) / len(previous_pred)
        tvd = float(0.5 * np.abs(p - q).sum())
    else:
        tvd = None
    top1_delta = delta("top1")
    return {
        "previous_run_uri": previous_run_uri,
        "previous_model": previous.get("model"),
        "top1_delta": top1_delta,
        "top5_delta": delta("top5"),
        "per_class_delta": per_class,
        "drift_tvd": tvd,
        "threshold": max_top1_drop,
        "regressed": top1_delta is not None and top1_delta < -max_top1_drop,
    }


def accuracy(
    label_index: np.ndarray, pred_index: np.ndarray, top5_index: np.ndarray, vocabulary: Vocabulary, *, top_confusions: int = 10
) -> dict:
    """Score predictions against labels.

    Args:
        label_index: int64 [N], -1 where the image has no label (unlabelled rows are skipped).
        pred_index: int64 [N], top-1 class index.
        top5_index: int64 [N, 5], the five best class indices, best first.

    Returns:
        ``n_labelled``, ``top1``, ``top5`` (None with no labelled row), ``per_class`` (list of
        dicts for every class that occurs as a label or a prediction among labelled rows, by
        class index), ``confusions`` (most frequent (true, predicted) pairs, most frequent first).
    """
    mask = label_index >= 0
    y, p, t5 = label_index[mask], pred_index[mask], top5_index[mask]
    n = int(mask.sum())
    if n == 0:
        return {"n_labelled": 0, "top1": None, "top5": None, "per_class": [], "confusions": []}
    right = p == y
    top5 = (t5 == y[:, None]).any(axis=1)
    support = np.bincount(y, minlength=vocabulary.num_classes)
    predicted = np.bincount(p, minlength=vocabulary.num_classes)
    correct = np.bincount(y[right], minlength=vocabulary.num_classes)
    classes = np.flatnonzero((support > 0) | (predicted > 0))
    per_class = []
    for c in classes:
        stats = ClassStats(int(c), vocabulary.wnids[c], vocabulary.names[c], int(support[c]), int(predicted[c]), int(correct[c]))
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
            "true_wnid": vocabulary.wnids[a],
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


def render_markdown(report: dict, *, max_classes: int = 50) -> str:
    """The report as Markdown (summary, confusions, the per-class table up to ``max_classes`` rows)."""

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    def num(v: float | None, unit: str) -> str:
        return "n/a" if v is None or v != v else f"{v:.1f}{unit}"

    lines = [
        f"# Classification report: run `{report['run_id']}`",
        "",
        "| | |",
        "|---|---|",
        f"| model | `{report['model']}` |",
        f"| input | `{report['input']}` |",
        f"| output | `{report['run_uri']}` |",
        f"| images listed | {report['n_listed']} |",
        f"| predicted | {report['n_predicted']} |",
        f"| failed | {report['n_failed']} |",
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
    cmp = report.get("comparison")
    if cmp:
        sign = lambda v: "n/a" if v is None else f"{100 * v:+.1f} points"  # noqa: E731
        lines += [
            "## Against the previous run",
            "",
            f"Previous committed run on this dataset: `{cmp['previous_run_uri']}` (model `{cmp['previous_model']}`).",
            "",
            f"- top-1: {sign(cmp['top1_delta'])}; top-5: {sign(cmp['top5_delta'])}",
            f"- prediction drift (total variation distance of the predicted classes): "
            + ("n/a" if cmp["drift_tvd"] is None else f"{cmp['drift_tvd']:.3f}"),
        ]
        if cmp["regressed"]:
            lines.append(
                f"- **REGRESSION: top-1 dropped by more than {100 * cmp['threshold']:.1f} points "
                f"(--max-top1-drop)**"
            )
        worst = [r for r in cmp["per_class_delta"] if r["delta"] < 0][:10]
        if worst:
            lines += ["", "| class | recall before | after | change |", "|---|---|---|---|"]
            lines += [
                f"| {r['name']} (`{r['wnid']}`) | {pct(r['recall_before'])} | {pct(r['recall_after'])} | {sign(r['delta'])} |"
                for r in worst
            ]
        lines.append("")
    if report["confusions"]:
        lines += ["## Most frequent confusions", "", "| true | predicted | count |", "|---|---|---|"]
        lines += [f"| {c['true_name']} (`{c['true_wnid']}`) | {c['pred_name']} | {c['count']} |" for c in report["confusions"]]
        lines.append("")
    if report["per_class"]:
        rows = sorted(report["per_class"], key=lambda r: (-r["support"], r["index"]))[:max_classes]
        lines += [
            f"## Per class ({len(rows)} of {len(report['per_class'])}, by support)",
            "",
            "| class | wnid | support | precision | recall |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['name']} | `{r['wnid']}` | {r['support']} | {pct(r['precision'])} | {pct(r['recall'])} |" for r in rows
        ]
    return "\n".join(lines) + "\n"


def to_json(report: dict) -> bytes:
    return json.dumps(report, indent=2, sort_keys=False).encode()
