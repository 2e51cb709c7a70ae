"""Images for a person to look at, labelled run or not: the least confident predictions
(:func:`lowest_confidence`) and the images whose top-1 changed since the previous run
(:func:`changed_predictions`). ``report.json`` lists them; the page shows their thumbnails.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

#: Images whose top-1 changed that ``report.json`` lists at most (``comparison.n_changed`` counts them all).
MAX_CHANGED_LISTED = 1000


def _confidences(table: pa.Table) -> np.ndarray:
    return table.column("confidence").to_numpy(zero_copy_only=False).astype(np.float64)


def lowest_confidence(predictions: pa.Table, n: int) -> list[dict]:
    """The ``n`` least confident predictions, least confident first (ties by path).

    Args:
        predictions: committed predictions (at least ``path``, ``pred_label``, ``confidence``:
            the softmax probability of the top-1 class, float32 in [0, 1]).

    Returns:
        ``[{"path", "pred_label", "confidence"}]``, ``confidence`` rounded to 4 decimals.
    """
    if predictions.num_rows == 0 or n <= 0:
        return []
    conf = _confidences(predictions)
    # Only the rows at or under the n-th lowest confidence can be picked: their paths alone become Python
    # strings (a million rows' paths are about 80 MB of them).
    last = min(n, len(conf)) - 1
    candidates = np.flatnonzero(conf <= np.partition(conf, last)[last])
    rows = predictions.select(["path", "pred_label"]).take(candidates)
    paths = np.asarray(rows.column("path").to_pylist(), dtype=object)
    labels = rows.column("pred_label").to_pylist()
    conf = conf[candidates]
    pick = np.lexsort((paths, conf))[:n]
    return [{"path": paths[i], "pred_label": labels[i], "confidence": round(float(conf[i]), 4)} for i in pick]


def changed_predictions(current: pa.Table, previous: pa.Table, *, limit: int = MAX_CHANGED_LISTED) -> tuple[list[dict], int]:
    """The images both runs predicted whose top-1 class name (``pred_label``) differs.

    Names are compared, not class indices, as the comparison compares distributions (two models may
    number their classes differently).

    Args:
        current, previous: the two runs' committed predictions (``path``, ``pred_label``, ``confidence``).
        limit: entries returned at most.

    Returns:
        (``[{"path", "before", "after", "confidence_before", "confidence_after"}]``, most confident
        new answer first, ties by path; how many changed in all).
    """
    if current.num_rows == 0 or previous.num_rows == 0:
        return [], 0
    before = {p: (label, c) for p, label, c in zip(previous.column("path").to_pylist(),
                                                 previous.column("pred_label").to_pylist(), _confidences(previous))}
    rows = []
    for path, label, c in zip(current.column("path").to_pylist(), current.column("pred_label").to_pylist(),
                              _confidences(current)):
        old = before.get(path)
        if old is not None and old[0] != label:
            rows.append({"path": path, "before": old[0], "after": label,
                         "confidence_before": round(float(old[1]), 4), "confidence_after": round(float(c), 4)})
    rows.sort(key=lambda r: (-r["confidence_after"], r["path"]))
    return rows[: max(0, limit)], len(rows)
