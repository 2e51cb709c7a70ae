"""This run against the previous committed run on the same dataset.

:func:`compare` measures the changes (accuracy when both runs have labels, prediction drift and
share changes always) and asks the run's :class:`~batch_classify.report.policy.RegressionPolicy`
whether they are a regression: the report's verdict says so, and the flow ends the run as the policy's
outcome says, all from the ``regressed`` and ``reasons`` this module writes.
"""

from __future__ import annotations

import math

import numpy as np

from batch_classify.report.metrics import name_counts
from batch_classify.report.policy import RegressionPolicy

#: Rows of :func:`compare`'s ``share_changes`` each way: the largest gains, then the largest losses.
SHARE_CHANGES_EACH_WAY = 5
#: Classes in :func:`compare`'s ``class_shares`` (the side-by-side distributions of the page).
CLASS_SHARES = 15


def compared_line(cmp: dict) -> str:
    """Which images the comparison covers: both runs' counts and the images they share."""
    if cmp.get("n_compared") is None:  # a report.json written before the counts existed
        return "Compared over each run's own images."
    return (f"Compared on the {cmp['n_compared']} images both runs predicted "
            f"(this run {cmp['n_current']}, the previous run {cmp['n_previous']}).")


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


def _largest_moves(changes: list[dict]) -> list[dict]:
    """The largest gains (largest first), then the largest losses, :data:`SHARE_CHANGES_EACH_WAY` each.

    ``|delta|`` is rounded for the order only: two equal moves computed differently tie by name."""
    order = lambda c: (-round(abs(c["delta"]), 12), str(c["name"]))  # noqa: E731
    gains = sorted((c for c in changes if c["delta"] > 0), key=order)
    losses = sorted((c for c in changes if c["delta"] < 0), key=order)
    return gains[:SHARE_CHANGES_EACH_WAY] + losses[:SHARE_CHANGES_EACH_WAY]


def compare(
    current: dict,
    previous: dict,
    current_pred: np.ndarray,
    previous_pred: np.ndarray,
    *,
    previous_run_uri: str,
    policy: RegressionPolicy,
) -> dict:
    """How this run differs from the previous committed run on the same dataset.

    The two runs may have used different models with different class lists: predictions are
    compared by class display name, per-class recall by wnid where both entries have one, else by
    name (a name that several classes of the previous run share is left unmatched).

    Gates: :meth:`RegressionPolicy.reasons` (top-1 when both runs have labels, prediction drift otherwise).

    Args:
        current, previous: the two runs' reports (``top1``, ``top5``, ``per_class``, ``model``,
            ``mean_confidence``); a field that is missing (a ``report.json`` written by an older
            version) counts as None.
        current_pred, previous_pred: object [N], [M]: the predicted class name (``pred_label``)
            of every predicted image of each run.
        previous_run_uri: the previous run's URI, reported as given.
        policy: the run's thresholds (``max_top1_drop``, ``max_drift``).

    Returns:
        ``previous_run_uri``, ``previous_model``, ``top1_delta``, ``top5_delta`` (fractions; None
        where either run has no labels), ``per_class_delta`` (``{"wnid", "name", "recall_before",
        "recall_after", "delta"}`` for classes labelled in both, largest drop first, ties by name;
        ``wnid`` None for a model's own classes), ``drift_tvd`` (total variation distance between
        the two runs' predicted-class distributions over the union of names, ``0.5 * sum |p - q|``:
        0 identical, 1 disjoint; None when either run predicted nothing), ``share_changes`` (the
        classes whose share of the predictions moved most, both ways: the up to
        :data:`SHARE_CHANGES_EACH_WAY` largest gains, largest first, then as many largest losses;
        ties by name; classes whose share did not move are left out: ``{"name", "share_before",
        "share_after", "delta"}``, fractions), ``class_shares`` (the up to :data:`CLASS_SHARES`
        classes with the largest share in either run, largest first, ties by name, as
        ``{"name", "share_before", "share_after"}``: the two distributions side by side),
        ``mean_confidence_delta`` (None when either is None),
        ``threshold`` (``max_top1_drop``), ``drift_threshold`` (``max_drift``), ``reasons`` (one
        sentence per gate that fired) and ``regressed``.
    """

    def delta(key: str) -> float | None:
        a, b = current.get(key), previous.get(key)
        return None if a is None or b is None else a - b

    after, n = name_counts(current_pred)
    before, m = name_counts(previous_pred)
    if n and m:
        changes = []
        for name in set(after) | set(before):
            p, q = after.get(name, 0) / n, before.get(name, 0) / m
            changes.append({"name": name, "share_before": q, "share_after": p, "delta": p - q})
        tvd = float(0.5 * math.fsum(abs(c["delta"]) for c in changes))
        share_changes = _largest_moves(changes)
        changes.sort(key=lambda c: (-max(c["share_before"], c["share_after"]), str(c["name"])))
        class_shares = [{k: c[k] for k in ("name", "share_before", "share_after")} for c in changes[:CLASS_SHARES]]
    else:
        tvd, share_changes, class_shares = None, [], []

    measured = {
        "previous_run_uri": previous_run_uri,
        "previous_model": previous.get("model"),
        "top1_delta": delta("top1"),
        "top5_delta": delta("top5"),
        "per_class_delta": _match_per_class(current.get("per_class") or [], previous.get("per_class") or []),
        "drift_tvd": tvd,
        "share_changes": share_changes,
        "class_shares": class_shares,
        "mean_confidence_delta": delta("mean_confidence"),
        "threshold": policy.max_top1_drop,
        "drift_threshold": policy.max_drift,
    }
    reasons = policy.reasons(measured)
    return measured | {"reasons": reasons, "regressed": bool(reasons)}
