"""``report.md``: the report as Markdown (also the Prefect report artifact)."""

from __future__ import annotations

from batch_classify.report.compare import compared_line
from batch_classify.report.format import num, pct, points



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
        f"| wall time | {num(report.get('wall_seconds'), '{:.1f} s')} |",
        f"| throughput | {num(report.get('images_per_second'), '{:.1f} images/s')} |",
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
            compared_line(cmp),
            "",
            f"- top-1: {points(cmp.get('top1_delta'))}; top-5: {points(cmp.get('top5_delta'))}",
            "- prediction drift (total variation distance of the predicted classes): "
            + ("n/a" if drift is None else f"{drift:.3f}")
            + ("" if gate is None else f" (--max-drift {gate:g}, gated only when top-1 cannot be compared)"),
            f"- mean confidence: {points(cmp.get('mean_confidence_delta'))}",
        ]
        if cmp.get("regressed"):
            reasons = cmp.get("reasons") or [
                f"top-1 dropped by more than {points(cmp['threshold'], sign='')} (--max-top1-drop)"
            ]
            lines += [f"- **REGRESSION: {_md(r)}**" for r in reasons]
        moved = cmp.get("share_changes") or []
        if moved:
            lines += ["", "Classes whose share of the predictions moved most:", "",
                      "| predicted class | share before | after | change |", "|---|---|---|---|"]
            lines += [
                f"| {_md(r['name'])} | {pct(r['share_before'])} | {pct(r['share_after'])} | {points(r['delta'])} |"
                for r in moved
            ]
        worst = [r for r in cmp.get("per_class_delta") or [] if r["delta"] < 0][:10]
        if worst:
            lines += ["", "| class | recall before | after | change |", "|---|---|---|---|"]
            lines += [
                f"| {_named(r['name'], r.get('wnid'))} | {pct(r['recall_before'])} | {pct(r['recall_after'])} | {points(r['delta'])} |"
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

