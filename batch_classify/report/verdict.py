"""The report's first line and first numbers: the verdict (healthy, regressed and why, or nothing to
compare with) and the few figures that matter for this kind of run.

``report.md``, the Prefect report artifact and ``report.html`` all open with :func:`verdict`'s line
and :func:`key_figures`; ``report.json`` keeps the verdict as ``verdict`` (``status`` and ``line``).
The decision itself is the regression policy's (:meth:`batch_classify.report.policy.RegressionPolicy.reasons`);
this module only words it.
"""

from __future__ import annotations

from batch_classify.report.format import missing, pct, points
from batch_classify.report.samples import few

#: The verdict's ``status``: the run regressed against its baseline; it did not; it had no baseline.
REGRESSED, HEALTHY, NO_BASELINE = "regressed", "healthy", "no baseline"


def verdict(report: dict) -> dict:
    """The run's verdict: ``{"status": REGRESSED | HEALTHY | NO_BASELINE, "line": one sentence or two}``.

    The line names the reasons of a regression (the settings as ``max_drift = 0.2``) and the run
    compared with; a healthy run's line names the figure that was gated and its threshold; failed
    images are added in every case."""
    cmp = report.get("comparison")
    if not cmp:
        status = NO_BASELINE
        line = ("No baseline: no earlier full run of this input and model under this output shares an image with "
                "this one, so nothing is gated.")
    else:
        against = f"against run {cmp.get('previous_run_id') or cmp.get('previous_run_uri')}"
        if cmp.get("regressed"):
            status = REGRESSED
            reasons = "; ".join(cmp.get("reasons") or [f"top-1 dropped by more than {points(cmp.get('threshold'), sign='')}"])
            line = f"Regressed: {reasons}, {against}. The predictions and the report are committed: the results are valid."
        else:
            status = HEALTHY
            if cmp.get("top1_delta") is not None:
                line = (f"Healthy: top-1 {points(cmp['top1_delta'])} {against}, within max_top1_drop = "
                        f"{cmp.get('threshold'):g}.")
            elif cmp.get("drift_tvd") is None:
                line = f"Healthy: nothing to gate {against} (a run predicted no image)."
            elif cmp.get("drift_threshold") is None:
                line = f"Healthy: prediction drift (TVD) {cmp['drift_tvd']:.3f} {against}; the drift gate is off."
            else:
                line = (f"Healthy: prediction drift (TVD) {cmp['drift_tvd']:.3f} {against}, within max_drift = "
                        f"{cmp['drift_threshold']:g}.")
    if report.get("n_failed"):
        line += f" {report['n_failed']} of {report.get('n_listed')} listed images failed (see failures)."
    return {"status": status, "line": line}


def key_figures(report: dict) -> list[tuple[str, str]]:
    """The few figures that matter for this kind of run, as (name, value) text, none of them missing:
    with labels top-1, top-5 and the top-1 change; without, the confidence, the prediction drift and
    how many predictions changed; the image counts always."""
    cmp = report.get("comparison") or {}
    rows: list[tuple[str, str]] = []
    n_labelled = report.get("n_labelled") or 0
    if not missing(report.get("top1")):
        small = f" (n={n_labelled}: a small sample)" if few(n_labelled) else ""
        rows.append(("top-1", f"{pct(report['top1'])} over {n_labelled} labelled images{small}"))
        if not missing(report.get("top5")):
            rows.append(("top-5", pct(report["top5"])))
        if not missing(cmp.get("top1_delta")):
            rows.append(("top-1 change", f"{points(cmp['top1_delta'])} (max_top1_drop = {cmp.get('threshold'):g})"))
    rows.append(("images", f"{report.get('n_predicted')} predicted, {report.get('n_failed')} failed "
                           f"of {report.get('n_listed')} listed"))
    if not missing(report.get("mean_confidence")):
        rows.append(("mean confidence", pct(report["mean_confidence"])))
    if n_labelled == 0 and not missing(report.get("low_confidence_share")):
        rows.append(("low confidence", f"{pct(report['low_confidence_share'])} under "
                                       f"{report.get('low_confidence_threshold'):.2f} ({report.get('n_low_confidence')} images)"))
    if n_labelled == 0 and not missing(cmp.get("drift_tvd")):
        gate = "" if cmp.get("drift_threshold") is None else f" (max_drift = {cmp['drift_threshold']:g})"
        rows.append(("prediction drift (TVD)", f"{cmp['drift_tvd']:.3f}{gate}"))
    if cmp.get("n_changed") is not None and cmp.get("n_compared"):
        rows.append(("predictions changed", f"{cmp['n_changed']} of the {cmp['n_compared']} images both runs predicted"))
    return rows

