"""One run's line in the history of its input and model: the fields that the report's ``history``
holds for each earlier run (:func:`history_entry`), and the same line for the run being reported
(:func:`this_run_entry`), which the writers put first. A leaf: no storage, so the Markdown can use it.
"""

from __future__ import annotations

from batch_classify.report.verdict import HEALTHY, NO_BASELINE, REGRESSED

#: The fields of one history entry, in this order.
HISTORY_FIELDS = ("run_id", "committed_at", "n_predicted", "n_failed", "top1", "mean_confidence", "drift_tvd",
                  "regressed")


def history_entry(manifest: dict, report: dict | None) -> dict:
    """One run's :data:`HISTORY_FIELDS` from its ``_SUCCESS`` manifest and its ``report.json`` (None
    when it has none: a run killed while reporting, or its report unreadable; its scores are then null).

    ``top1`` and ``mean_confidence`` are fractions (``top1`` null for a run without labels);
    ``drift_tvd`` is that run's prediction drift against its own baseline (null for a run that had
    none); ``regressed`` whether that run's comparison regressed (null without a comparison)."""
    report = report or {}
    comparison = report.get("comparison") or {}
    return {
        "run_id": manifest.get("run_id"),
        "committed_at": manifest.get("committed_at"),
        "n_predicted": manifest.get("n_predicted"),
        "n_failed": manifest.get("n_failed"),
        "top1": report.get("top1"),
        "mean_confidence": report.get("mean_confidence"),
        "drift_tvd": comparison.get("drift_tvd"),
        "regressed": comparison.get("regressed") if comparison else None,
    }


def this_run_entry(report: dict) -> dict:
    """The reported run's own line, as :func:`history_entry` gives an earlier run's (``committed_at``
    None: the writers name it "this run")."""
    counts = {key: report.get(key) for key in ("run_id", "n_predicted", "n_failed")}
    return history_entry({**counts, "committed_at": None}, report)


def entry_status(entry: dict) -> str:
    """A history line's verdict status (:mod:`batch_classify.report.verdict`'s words) from its ``regressed``."""
    return {True: REGRESSED, False: HEALTHY}.get(entry.get("regressed"), NO_BASELINE)
