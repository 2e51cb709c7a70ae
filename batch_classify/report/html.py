"""``report.html``: the morning report for people, one self-contained page per run.

:func:`render_html` puts the pictures (:mod:`batch_classify.report.figures`) and the thumbnails
(:mod:`batch_classify.report.gallery`), with the summary, the comparison and the per-class table,
into one page that needs nothing else: ``data:`` URIs, inline CSS, no script, and a Content-Security-
Policy forbidding any load. The page is the Jinja2 template ``templates/page.html.j2`` (its CSS
``templates/page.css``), autoescaped; this module gives it the report's facts, formatted
(:mod:`batch_classify.report.format`), and the pictures. Its numbers are the report's (scored once,
:mod:`batch_classify.report.build`); it computes one only for a report that lacks it (written by an
older version, or built by hand).
"""

from __future__ import annotations

import functools
import html
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from batch_classify.run.layout import RunLayout
from batch_classify.report.figures import (
    MAX_DISTRIBUTION_BARS, MAX_MATRIX_CLASSES, confidence_png, confusion_matrix_png, per_class_accuracy_png,
    prediction_distribution_png,
)
from batch_classify.report.change_figures import class_shares_png
from batch_classify.report.compare import compared_line
from batch_classify.report.format import NA, device, num, pct, points
from batch_classify.report.gallery import MAX_GALLERY, confident_mistakes
from batch_classify.report.html_sections import (
    class_names, history_section, mistake_tiles, png_figure as _png, review_section, verdict_section,
)
from batch_classify.report.metrics import DEFAULT_BINS, calibration, calibration_from_fields, prediction_distribution
from batch_classify.report.samples import MIN_CALIBRATION_IMAGES, MIN_IMAGES, few
from batch_classify.storage import StorageOptions, write_bytes
from batch_classify.models.vocabulary import Vocabulary

#: The page may load nothing: only its own inline styles and ``data:`` images.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
#: The page's template, in the package folder ``batch_classify/report/templates`` (package data:
#: pyproject.toml's ``[tool.setuptools.package-data]``; the wheel test checks it is shipped).
TEMPLATE = "page.html.j2"


# ---------------------------------------------------------------- the template


class _Safe(str):
    """Text the template prints as it is: escaped already, or a trusted constant (Jinja2 and MarkupSafe
    treat any object with ``__html__`` as safe)."""

    def __html__(self) -> str:
        return self


def _escaped(value):
    """One ``{{ value }}`` of the template, escaped as :func:`html.escape` (``quote=True``) does.

    Jinja2's autoescape would spell quotes ``&#34;``/``&#39;``; this keeps the page's earlier
    spelling (``&quot;``/``&#x27;``), so pages compare byte for byte across versions. Safe text (a
    macro's output, :data:`CSP`) passes unchanged; autoescape then leaves the result alone."""
    return value if hasattr(value, "__html__") else _Safe(html.escape(str(value), quote=True))


@functools.cache
def _template():
    """The page's template (:data:`TEMPLATE`), loaded once per process.

    Jinja2 is imported here, not at module level: a Ray Job imports this module (through
    :mod:`batch_classify.run.steps`) but never renders a page.

    Raises:
        ValueError: the package was installed without its ``templates`` folder (Jinja2's PackageLoader).
        jinja2.TemplateNotFound: the folder lacks :data:`TEMPLATE`.
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("batch_classify.report", "templates"),
        autoescape=True,
        finalize=_escaped,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env.get_template(TEMPLATE)


# ---------------------------------------------------------------- the page's facts, formatted


def _summary(report: dict, ece: float | None) -> list[tuple[str, str, str]]:
    """The summary's rows: (name, value, style), style ``"code"``, ``"big"`` or ``""``; a fact this run has
    no value for (an unlabelled run's top-1) is left out."""
    facts = [
        ("model", report.get("model", "n/a"), "code"),
        ("input", report.get("input", "n/a"), "code"),
        ("output", report.get("run_uri", "n/a"), "code"),
        ("images listed", num(report.get("n_listed")), ""),
        ("predicted", num(report.get("n_predicted")), ""),
        ("failed", num(report.get("n_failed")), ""),
        ("reused from an earlier run", num(report.get("n_reused", 0)), ""),
        ("entries ignored (not images, hidden)", num(report.get("n_ignored")), ""),
        ("labelled", num(report.get("n_labelled")), ""),
        ("top-1", pct(report.get("top1")), "big"),
        ("top-5", pct(report.get("top5")), "big"),
    ]
    if "restricted_top1" in report:
        facts.append((f"top-1 among the {num(report.get('n_label_classes'))} label classes (Imagenette-style)",
                      pct(report.get("restricted_top1")), "big"))
    ece_text = pct(ece)
    if ece is not None and (report.get("n_labelled") or 0) < MIN_CALIBRATION_IMAGES:
        ece_text += f" (over {report.get('n_labelled')} images: a small sample)"
    facts.append(("expected calibration error (ECE)", ece_text, ""))
    if "mean_confidence" in report:
        facts.append(("mean confidence (probability of the top-1 class)", pct(report.get("mean_confidence")), ""))
    if "low_confidence_threshold" in report:
        threshold = report.get("low_confidence_threshold")
        share = report.get("low_confidence_share")
        facts.append((
            f"low confidence (under {num(threshold, '{:.2f}')})",
            "n/a" if share is None else f"{pct(share)} ({num(report.get('n_low_confidence'))} images)", "",
        ))
    if "mean_entropy" in report:
        entropy, known, n_pred = report.get("mean_entropy"), report.get("n_entropy"), report.get("n_predicted")
        text = num(entropy, "{:.3f} nats")
        if entropy is not None and known is not None and n_pred is not None and known < n_pred:
            text += f" (over the {known} of {n_pred} images whose entropy is known)"
        facts.append(("mean entropy of the predicted distribution", text, ""))
    if "n_predicted_classes" in report:
        facts.append(("distinct predicted classes", num(report.get("n_predicted_classes")), ""))
    facts += [
        ("wall time", num(report.get("wall_seconds"), "{:.1f} s"), ""),
        ("throughput", num(report.get("images_per_second"), "{:.1f} images/s"), ""),
        ("device", device(report), ""),
    ]
    return [(name, value, style) for name, value, style in facts if value != NA and not str(value).startswith(f"{NA} ")]


def _comparison(comp: dict) -> dict:
    """The comparison section's facts (``report["comparison"]``, formatted)."""
    drift, drift_gate = comp.get("drift_tvd"), comp.get("drift_threshold")
    drift_name = "prediction drift (total variation distance, 0 = same distribution, 1 = disjoint)"
    if drift_gate is not None:
        drift_name += f"; max_drift = {drift_gate:g}, gated only when top-1 cannot be compared"
    deltas = [d for d in comp.get("per_class_delta") or [] if d.get("delta") is not None]
    deltas.sort(key=lambda d: (d["delta"], str(d.get("name")), str(d.get("wnid") or "")))
    shown = deltas[:15] + deltas[-15:] if len(deltas) > 30 else deltas  # the largest falls and rises
    shares = comp.get("class_shares") or []
    previous = comp.get("previous_run_id") or "the previous run"
    return {
        "shares_png": _png(class_shares_png(shares, previous_label=f"previous run ({previous})")) if shares else None,
        "n_shares": len(shares),
        "regressed": bool(comp.get("regressed")),
        "reasons": comp.get("reasons") or [],
        "threshold": points(comp.get("threshold"), sign=""),
        "top1_compared": comp.get("top1_delta") is not None,
        "drift": None if drift is None else f"{drift:.3f}",
        "drift_gate": None if drift_gate is None else f"{drift_gate:g}",
        "facts": [fact for fact in [
            ("previous run", comp.get("previous_run_uri", "n/a"), "code"),
            *([("previous model", comp["previous_model"], "code")] if comp.get("previous_model") else []),
            ("images compared", compared_line(comp), ""),
            ("top-1 change", points(comp.get("top1_delta")), ""),
            ("top-5 change", points(comp.get("top5_delta")), ""),
            (drift_name, num(drift, "{:.3f}"), ""),
            ("mean confidence change", points(comp.get("mean_confidence_delta")), ""),
            ("predictions changed", num(comp.get("n_changed"), "{} of the images compared"), ""),
        ] if fact[1] != NA],
        "share_changes": [
            {"name": d.get("name"), "before": pct(d.get("share_before")), "after": pct(d.get("share_after")),
             "change": points(d.get("delta"))}
            for d in comp.get("share_changes") or []
        ],
        "n_class_changes": len(deltas),
        "with_wnid": any(d.get("wnid") for d in shown),
        "class_changes": [
            {"name": d.get("name", ""), "wnid": d.get("wnid"), "before": pct(d.get("recall_before")),
             "after": pct(d.get("recall_after")), "change": points(d["delta"]),
             "trend": "worse" if d["delta"] < 0 else "better" if d["delta"] > 0 else ""}
            for d in shown
        ],
    }


def _predicted_classes(report: dict, predictions: pa.Table, conf: np.ndarray, labelled: bool) -> dict:
    """The "Predicted classes" section: the distribution, and without labels the confidence histogram."""
    distribution = report.get("prediction_distribution")
    if distribution is None:  # a report written before the label-free fields: count the table
        distribution = prediction_distribution(predictions.column("pred_label").to_numpy(zero_copy_only=False))
    threshold, share = report.get("low_confidence_threshold"), report.get("low_confidence_share")
    return {
        "n": predictions.num_rows,
        "n_bars": len(distribution[:MAX_DISTRIBUTION_BARS]),
        "n_classes": report.get("n_predicted_classes"),
        "distribution_png": _png(prediction_distribution_png(distribution)) if distribution else None,
        "confidence_png": None if labelled else _png(confidence_png(conf, None)),
        "low_share": pct(share) if share is not None and threshold is not None else None,
        "low_threshold": num(threshold, "{:.2f}"),
    }


def _labelled(report: dict, predictions: pa.Table, storage: StorageOptions, names, y, p, conf, labelled, cal,
              ece, max_mistakes: int) -> dict:
    """The sections of a run with labels: the accuracy pictures, the confusions and the mistakes."""
    mistakes = confident_mistakes(predictions, min(max_mistakes, MAX_GALLERY))
    gallery = mistake_tiles(mistakes, storage, report.get("input"), names)
    rows = [{"path": m["path"], "label": m["label"], "pred_label": m["pred_label"], "true_name": class_names(m, names)[0],
             "confidence": pct(float(m["confidence"])), "reason": tile["reason"]} for m, tile in zip(mistakes, gallery)]
    return {
        "n_labelled": report["n_labelled"] if "n_labelled" in report else int(labelled.sum()),
        "n_classes": report["n_label_classes"] if "n_label_classes" in report else len(np.unique(y[labelled])),
        "max_matrix_classes": MAX_MATRIX_CLASSES,
        "confusion_png": _png(confusion_matrix_png(y, p, names)),
        "confusions": report.get("confusions") or [],
        "per_class_png": _png(per_class_accuracy_png(y, p, names)),
        "confidence_png": _png(confidence_png(conf[labelled], p[labelled] == y[labelled], scored=cal)),
        "bins": DEFAULT_BINS,
        "ece": pct(ece),
        "gallery": gallery,
        "mistakes": rows,
    }


def _per_class(report: dict) -> list[dict]:
    """The per-class table's rows, by support (largest first), then class index."""
    rows = sorted(report.get("per_class") or [], key=lambda r: (-r.get("support", 0), r.get("index", 0)))
    def marked(value, n) -> str:
        return f"{pct(value)} (n={n})" if few(n) and value is not None else pct(value)

    return [{"name": r.get("name"), "wnid": r.get("wnid"), "support": r.get("support"), "predicted": r.get("predicted"),
             "correct": r.get("correct"), "precision": marked(r.get("precision"), r.get("predicted")),
             "recall": marked(r.get("recall"), r.get("support"))}
            for r in rows]


def render_html(
    report: dict,
    predictions: pa.Table,
    storage: StorageOptions,
    *,
    vocabulary: Vocabulary | None = None,
    max_mistakes: int = 24,
) -> str:
    """The run's report as one self-contained HTML page.

    Contents: the summary (the facts of :func:`batch_classify.report.markdown.render_markdown`, plus the
    ECE, the label-free figures and, when the report has them, ``restricted_top1``), a note with
    ``report["unlabelled_reason"]`` when set, the comparison with the previous run
    (``report["comparison"]``, when present and not None; labelled or not), the confusion matrix,
    the most frequent confusions, per-class accuracy, confidence and reliability, the most
    confident mistakes (gallery and list), the predicted classes (for every run: their shares,
    and without labels the confidence histogram), and the per-class table. Without labels the
    accuracy pictures are left out and the page says so; without predictions, the pictures are.
    ``report["input"]`` and ``report["run_uri"]`` are shown as given.

    Args:
        report: the run's report (``report.json``'s fields).
        predictions: the committed predictions (:data:`batch_classify.columns.PREDICTION_SCHEMA`).
        storage: how to reach the images for the thumbnails.
        vocabulary: the model's classes, for the class names of the pictures; None: ImageNet-1k
            (:func:`batch_classify.models.vocabulary.imagenet`).
        max_mistakes: tiles in the mistakes gallery (at most :data:`MAX_GALLERY`).

    Returns:
        the page (UTF-8 text): no script, no external URL; pictures as ``data:image/png`` URIs.

    Raises:
        ValueError, jinja2.TemplateNotFound: the installed package lacks its templates (``page.html.j2``,
            ``page.css``; see :func:`_template`).
    """
    if vocabulary is None:
        from batch_classify.models.vocabulary import imagenet

        vocabulary = imagenet()
    names = vocabulary.names
    n = predictions.num_rows
    y = predictions.column("label_index").fill_null(-1).to_numpy() if n else np.zeros(0, np.int64)
    p = predictions.column("pred_index").to_numpy() if n else np.zeros(0, np.int64)
    conf = predictions.column("confidence").to_numpy(zero_copy_only=False) if n else np.zeros(0, np.float32)
    labelled = y >= 0
    # The run's calibration as scored for report.json; scored here only for a report without it.
    cal = calibration_from_fields(report) or (
        calibration(conf[labelled], p[labelled] == y[labelled]) if labelled.any() else None
    )
    ece = cal["ece"] if cal else None
    comparison = report.get("comparison")
    any_label = bool(labelled.any())
    return _template().render(
        csp=_Safe(CSP),
        run_id=report.get("run_id", ""),
        verdict=verdict_section(report),
        review=review_section(report, storage),
        history=history_section(report),
        min_images=MIN_IMAGES,
        n_small_classes=sum(1 for r in report.get("per_class") or [] if few(r.get("support"))),
        unlabelled_reason=report.get("unlabelled_reason"),
        summary=_summary(report, ece),
        comparison=_comparison(comparison) if comparison else None,
        n_predicted=n,
        labelled=(_labelled(report, predictions, storage, names, y, p, conf, labelled, cal, ece, max_mistakes)
                  if n and any_label else None),
        predicted_classes=_predicted_classes(report, predictions, conf, labelled=any_label) if n else None,
        per_class=_per_class(report),
        per_class_wnid=any(r.get("wnid") for r in report.get("per_class") or []),
        written=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def write_report_html(
    run_uri: str,
    report: dict,
    storage: StorageOptions,
    predictions: pa.Table | None = None,
    vocabulary: Vocabulary | None = None,
) -> str:
    """Render the committed run's page and write it as ``RUN_URI/report.html``.

    ``predictions``: the run's committed predictions when the caller has read them already
    (all of ``PREDICTION_SCHEMA``'s columns); read here otherwise. ``vocabulary``: the model's
    classes (None: ImageNet-1k), see :func:`render_html`.

    Raises:
        FileNotFoundError: the run has no ``_SUCCESS`` (not committed).
        OSError: storage fails.

    Returns:
        the URI of ``report.html``.
    """
    from batch_classify.run.results import read_committed

    if predictions is None:
        predictions = read_committed(run_uri, storage)
    uri = RunLayout.parse(run_uri).report_html
    write_bytes(uri, render_html(report, predictions, storage, vocabulary=vocabulary).encode("utf-8"), storage)
    return uri
