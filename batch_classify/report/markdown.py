"""``report.md``: the report as Markdown (also the Prefect report artifact)."""

from __future__ import annotations

from batch_classify.report.compare import compared_line
from batch_classify.report.format import NA, device, missing, num, pct, points, under, when
from batch_classify.report.samples import MIN_CALIBRATION_IMAGES, MIN_IMAGES, few, small_sample_notes
from batch_classify.report.trend import entry_status, this_run_entry
from batch_classify.report.verdict import key_figures, verdict


def _md(text) -> str:
    """A data string in a Markdown table cell: ``|`` escaped, line breaks made spaces."""
    return " ".join(str(text).replace("|", "\\|").split())


def _named(name, wnid) -> str:
    """``name (`wnid`)`` when there is a wnid, the name alone otherwise."""
    return f"{_md(name)} (`{wnid}`)" if wnid else _md(name)


def _rows(rows: list[tuple[str, str]]) -> list[str]:
    """A two-column table of (name, value) rows, leaving out a row whose value is missing (``n/a``)."""
    kept = [(name, value) for name, value in rows if value != NA and not value.startswith(f"{NA} ")]
    if not kept:
        return []
    return ["| | |", "|---|---|", *[f"| {name} | {value} |" for name, value in kept], ""]


def _verdict_lines(report: dict) -> list[str]:
    """The verdict's line (its status in bold), the key figures, the small-sample notes."""
    line = (report.get("verdict") or verdict(report))["line"]
    status, _, rest = line.partition(": ")
    lines = [f"**{status}:** {_md(rest)}" if rest else _md(line), ""]
    lines += _rows([(name, _md(value)) for name, value in key_figures(report)])
    notes = report.get("small_samples")
    notes = small_sample_notes(report) if notes is None else notes
    if notes:
        lines += ["> **Small samples:** read these figures as rough signs, not measurements:", ">"]
        lines += [f"> - {_md(n)}" for n in notes]
        lines.append("")
    return lines


def _fewer(value: str, n) -> str:
    """A proportion's text, marked with its count when that is a small sample (``100.0% (n=1)``)."""
    return f"{value} (n={n})" if few(n) and value != NA else value


def _details(report: dict) -> list[str]:
    """The run's facts, those that have a value for this run."""
    failed = f"{report['n_failed']}" + (
        f" ({report['n_list_failed']} of them folders that could not be listed)" if report.get("n_list_failed") else "")
    ece = pct(report.get("ece"))
    if report.get("ece") is not None and (report.get("n_labelled") or 0) < MIN_CALIBRATION_IMAGES:
        ece += f" (over {report.get('n_labelled')} images: a small sample)"
    rows = [
        ("model", f"`{report['model']}`"),
        ("input", f"`{report['input']}`"),
        ("output", f"`{report['run_uri']}`"),
        ("images listed", num(report.get("n_listed"))),
        ("predicted", num(report.get("n_predicted"))),
        ("failed", failed),
        ("reused from an earlier run", num(report.get("n_reused", 0))),
        ("entries ignored (not images, hidden)", num(report.get("n_ignored"))),
        ("labelled", num(report.get("n_labelled"))),
        ("**top-1**", f"**{pct(report.get('top1'))}**" if not missing(report.get("top1")) else NA),
        ("**top-5**", f"**{pct(report.get('top5'))}**" if not missing(report.get("top5")) else NA),
        (f"top-1 among the {report.get('n_label_classes', 0)} label classes (Imagenette-style)",
         pct(report.get("restricted_top1"))),
        ("calibration error (ECE, 15 bins)", ece),
        ("wall time", num(report.get("wall_seconds"), "{:.1f} s")),
        ("throughput", num(report.get("images_per_second"), "{:.1f} images/s")),
        ("device", device(report)),
    ]
    return ["## This run", "", *_rows(rows)]


def _predictions(report: dict) -> list[str]:
    """The label-free statistics, those that have a value."""
    threshold = report.get("low_confidence_threshold")
    entropy, n_entropy, n_pred = report.get("mean_entropy"), report.get("n_entropy"), report.get("n_predicted")
    items = [("mean confidence (probability of the top-1 class)", pct(report.get("mean_confidence")))]
    if report.get("low_confidence_share") is not None and threshold is not None:
        items.append(("low confidence", f"{pct(report['low_confidence_share'])} under {threshold:.2f} "
                                        f"({report.get('n_low_confidence')} images)"))
    if entropy is not None:
        text = f"{entropy:.3f} nats"
        if n_entropy is not None and n_pred is not None and n_entropy < n_pred:
            text += f" (over the {n_entropy} of {n_pred} images whose entropy is known)"
        items.append(("mean entropy of the predicted distribution", text))
    items.append(("distinct predicted classes", num(report.get("n_predicted_classes"))))
    lines = ["## Predictions (no labels needed)", ""]
    lines += [f"- {name}: {value}" for name, value in items if value != NA]
    top = (report.get("prediction_distribution") or [])[:10]
    if top:
        lines += ["", "| predicted class | images | share |", "|---|---|---|"]
        lines += [f"| {_md(r['name'])} | {r['count']} | {pct(r['share'])} |" for r in top]
    lines.append("")
    return lines


def _comparison(cmp: dict) -> list[str]:
    drift, gate = cmp.get("drift_tvd"), cmp.get("drift_threshold")
    lines = [
        "## Against the previous run",
        "",
        f"Previous committed run on this dataset: `{cmp['previous_run_uri']}` (model `{cmp.get('previous_model')}`).",
        "",
        compared_line(cmp),
        "",
    ]
    if not missing(cmp.get("top1_delta")):
        lines.append(f"- top-1: {points(cmp['top1_delta'])}; top-5: {points(cmp.get('top5_delta'))} "
                     f"(max_top1_drop = {cmp.get('threshold'):g})")
    if drift is not None:
        lines.append("- prediction drift (total variation distance of the predicted classes): " + f"{drift:.3f}"
                     + ("" if gate is None else f" (max_drift = {gate:g}, gated only when top-1 cannot be compared)"))
    if not missing(cmp.get("mean_confidence_delta")):
        lines.append(f"- mean confidence: {points(cmp['mean_confidence_delta'])}")
    if cmp.get("n_changed") is not None:
        lines.append(f"- predictions changed: {cmp['n_changed']} of the {cmp.get('n_compared')} images both runs predicted")
    if cmp.get("regressed"):
        reasons = cmp.get("reasons") or [f"top-1 dropped by more than {points(cmp['threshold'], sign='')} (max_top1_drop)"]
        lines += [f"- **REGRESSION: {_md(r)}**" for r in reasons]
    moved = cmp.get("share_changes") or []
    if moved:
        lines += ["", "Classes whose share of the predictions moved most (gains, then losses):", "",
                  "| predicted class | share before | after | change |", "|---|---|---|---|"]
        lines += [f"| {_md(r['name'])} | {pct(r['share_before'])} | {pct(r['share_after'])} | {points(r['delta'])} |"
                  for r in moved]
    worst = [r for r in cmp.get("per_class_delta") or [] if r["delta"] < 0][:10]
    if worst:
        lines += ["", "| class | recall before | after | change |", "|---|---|---|---|"]
        lines += [
            f"| {_named(r['name'], r.get('wnid'))} | {pct(r['recall_before'])} | {pct(r['recall_after'])} | {points(r['delta'])} |"
            for r in worst
        ]
    lines.append("")
    return lines


#: Rows of each list of images in the Markdown (the page shows up to ``review_images``, as thumbnails).
MARKDOWN_IMAGES = 10


def _images_to_look_at(report: dict) -> list[str]:
    lowest, changed = report.get("lowest_confidence") or [], report.get("changed") or []
    if not lowest and not changed:
        return []
    root = report.get("input")
    lines = ["## Images to look at", "", f"Paths under `{_md(root)}`; the report page shows them as thumbnails.", ""]
    if lowest:
        lines += [f"The least confident predictions ({min(len(lowest), MARKDOWN_IMAGES)} of the {len(lowest)} listed):",
                  "", "| image | predicted | confidence |", "|---|---|---|"]
        lines += [f"| `{_md(under(r['path'], root))}` | {_md(r['pred_label'])} | {pct(r['confidence'])} |"
                  for r in lowest[:MARKDOWN_IMAGES]]
        lines.append("")
    if changed:
        total = (report.get("comparison") or {}).get("n_changed", len(changed))
        shown = changed[:MARKDOWN_IMAGES]
        lines += [f"Predictions that changed since the previous run ({len(shown)} of {total}, most confident new answer "
                  "first):", "", "| image | before | after | confidence before | after |", "|---|---|---|---|---|"]
        lines += [f"| `{_md(under(r['path'], root))}` | {_md(r['before'])} | {_md(r['after'])} | "
                  f"{pct(r['confidence_before'])} | {pct(r['confidence_after'])} |" for r in shown]
        lines.append("")
    return lines


def _history(report: dict, rows: int) -> list[str]:
    """This run, then up to ``rows`` earlier runs, newest first; a column no run has a value for is left out."""
    earlier = (report.get("history") or [])[: max(0, rows)]
    if not earlier:
        return []
    this = this_run_entry(report)
    runs = [this, *earlier]
    columns = [("run", lambda r: f"`{r['run_id']}`"), ("committed (UTC)", lambda r: "this run" if r is this else when(r.get("committed_at"))),
               ("predicted", lambda r: num(r.get("n_predicted"))), ("failed", lambda r: num(r.get("n_failed")))]
    if any(not missing(r.get("top1")) for r in runs):
        columns.append(("top-1", lambda r: pct(r.get("top1"))))
    if any(not missing(r.get("mean_confidence")) for r in runs):
        columns.append(("mean confidence", lambda r: pct(r.get("mean_confidence"))))
    if any(not missing(r.get("drift_tvd")) for r in runs):
        columns.append(("drift (TVD)", lambda r: num(r.get("drift_tvd"), "{:.3f}")))
    columns.append(("verdict", entry_status))
    lines = [f"## History (this run and the {len(earlier)} before it)", "",
             "| " + " | ".join(name for name, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r).replace(NA, "–") for _, cell in columns) + " |" for r in runs]
    lines.append("")
    return lines


def render_markdown(report: dict, *, max_classes: int = 50, history_rows: int = 10) -> str:
    """The report as Markdown: the verdict's line, the key figures and the notes on small samples first
    (:mod:`batch_classify.report.verdict`), then the run's facts, the label-free prediction statistics,
    the comparison with the previous run, the images to look at, the history (this run and up to
    ``history_rows`` before it), the most frequent confusions and the per-class table (up to
    ``max_classes`` rows). A fact the run has no value for (an unlabelled run's accuracy) is left out."""
    lines = [f"# Classification report: run `{report['run_id']}`", ""]
    lines += _verdict_lines(report)
    if report.get("unlabelled_reason"):
        lines += [f"> **Unlabelled run:** {_md(report['unlabelled_reason'])}", ""]
    lines += _details(report)
    if "prediction_distribution" in report:
        lines += _predictions(report)
    if report.get("comparison"):
        lines += _comparison(report["comparison"])
    lines += _images_to_look_at(report)
    lines += _history(report, history_rows)
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
            + f" {r['support']} | {_fewer(pct(r['precision']), r.get('predicted'))} | {_fewer(pct(r['recall']), r['support'])} |"
            for r in rows
        ]
        if any(few(r["support"]) or few(r.get("predicted")) for r in rows):
            lines += ["", f"(n=…): a precision or recall over fewer than {MIN_IMAGES} images, a small sample."]
    return "\n".join(lines) + "\n"
