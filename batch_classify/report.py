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
        f"| non-image files ignored | {report['n_ignored']} |",
        f"| labelled | {report['n_labelled']} |",
        f"| **top-1** | **{pct(report['top1'])}** |",
        f"| **top-5** | **{pct(report['top5'])}** |",
        f"| wall time | {report['wall_seconds']:.1f} s |",
        f"| throughput | {report['images_per_second']:.1f} images/s |",
        f"| device | {report.get('device') or 'n/a'} × {report.get('num_actors') or 'n/a'} actors |",
        "",
    ]
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
