"""``report.html``: the morning report for people, one self-contained page per run.

:func:`render_html` puts the pictures (:mod:`batch_classify.report.figures`,
:mod:`batch_classify.report.gallery`), with the summary, the comparison and the per-class table,
into one page that needs nothing else: ``data:`` URIs, inline CSS, no script, and a Content-Security-
Policy forbidding any load. Data strings are escaped (:func:`html.escape`); f-strings, no template engine. Its numbers are the report's (scored once, :mod:`batch_classify.report.build`);
it computes one only for a report that lacks it (written by an older version, or built by hand).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from batch_classify.layout import RunLayout
from batch_classify.report.figures import (
    MAX_DISTRIBUTION_BARS, MAX_MATRIX_CLASSES, confidence_png, confusion_matrix_png, per_class_accuracy_png,
    prediction_distribution_png,
)
from batch_classify.report.format import num, pct, points
from batch_classify.report.gallery import MAX_GALLERY, confident_mistakes, gallery_with_reasons
from batch_classify.report.metrics import DEFAULT_BINS, calibration, calibration_from_fields, prediction_distribution
from batch_classify.storage import StorageOptions, write_bytes
from batch_classify.vocabulary import Vocabulary

#: The page may load nothing: only its own inline styles and ``data:`` images.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# ---------------------------------------------------------------- the page


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _img(png: bytes, alt: str) -> str:
    from PIL import Image

    w, h = Image.open(io.BytesIO(png)).size
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" width="{w}" height="{h}" alt="{_esc(alt)}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table; header and cells must already be escaped HTML; columns in ``numeric`` align right."""
    def cell(tag: str, j: int, c: str) -> str:
        return f'<{tag} class="n">{c}</{tag}>' if j in numeric else f"<{tag}>{c}</{tag}>"

    head = "".join(cell("th", j, h) for j, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", j, c) for j, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _facts(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table of name → value; both already escaped HTML."""
    body = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="facts"><tbody>{body}</tbody></table>'


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;
max-width:1340px;padding:1rem 1.5rem 3rem;color:#1d1d1f;background:#fff;line-height:1.4}
h1{font-size:1.5rem;margin:.5rem 0 1rem}h2{font-size:1.2rem;margin:2rem 0 .6rem;border-bottom:1px solid #ddd;
padding-bottom:.2rem}code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.9em;word-break:break-all}
table{border-collapse:collapse;margin:.4rem 0;font-size:.9rem}th,td{border:1px solid #d0d0d0;padding:.25rem .55rem;
text-align:left;vertical-align:top}th{background:#f3f3f6}td.n,th.n{text-align:right}
table.facts td:first-child{font-weight:600;background:#fafafa}tr.worse td{background:#fdecea}tr.better td{background:#eaf6ec}
img{max-width:100%;height:auto;display:block;border:1px solid #e3e3e3}figure{margin:.5rem 0 1rem}
figcaption{font-size:.85rem;color:#555;margin-top:.3rem}.note{background:#f6f6f9;border-left:4px solid #999;
padding:.5rem .8rem;margin:.6rem 0}.alert{background:#fdecea;border-left:4px solid #c62828;padding:.6rem .9rem;
font-weight:600}.ok{background:#eaf6ec;border-left:4px solid #2e7d32;padding:.6rem .9rem}
.big{font-size:1.05em;font-weight:700}footer{margin-top:2rem;font-size:.8rem;color:#777}
"""


def _summary(report: dict, ece: float | None) -> str:
    device = f"{report.get('device') or 'n/a'} × {report.get('num_actors') or 'n/a'} actors"
    facts = [
        ("model", f"<code>{_esc(report.get('model', 'n/a'))}</code>"),
        ("input", f"<code>{_esc(report.get('input', 'n/a'))}</code>"),
        ("output", f"<code>{_esc(report.get('run_uri', 'n/a'))}</code>"),
        ("images listed", _esc(num(report.get("n_listed")))),
        ("predicted", _esc(num(report.get("n_predicted")))),
        ("failed", _esc(num(report.get("n_failed")))),
        ("reused from an earlier run", _esc(num(report.get("n_reused", 0)))),
        ("non-image files ignored", _esc(num(report.get("n_ignored")))),
        ("labelled", _esc(num(report.get("n_labelled")))),
        ("top-1", f'<span class="big">{pct(report.get("top1"))}</span>'),
        ("top-5", f'<span class="big">{pct(report.get("top5"))}</span>'),
    ]
    if "restricted_top1" in report:
        facts.append(
            (f"top-1 among the {_esc(num(report.get('n_label_classes')))} label classes (Imagenette-style)",
             f'<span class="big">{pct(report.get("restricted_top1"))}</span>')
        )
    facts.append(("expected calibration error (ECE)", pct(ece)))
    if "mean_confidence" in report:
        facts.append(("mean confidence (probability of the top-1 class)", _esc(pct(report.get("mean_confidence")))))
    if "low_confidence_threshold" in report:
        threshold = report.get("low_confidence_threshold")
        share = report.get("low_confidence_share")
        facts.append((
            f"low confidence (under {_esc(num(threshold, '{:.2f}'))})",
            "n/a" if share is None else _esc(f"{pct(share)} ({num(report.get('n_low_confidence'))} images)"),
        ))
    if "mean_entropy" in report:
        entropy, known, n_pred = report.get("mean_entropy"), report.get("n_entropy"), report.get("n_predicted")
        text = num(entropy, "{:.3f} nats")
        if entropy is not None and known is not None and n_pred is not None and known < n_pred:
            text += f" (over the {known} of {n_pred} images whose entropy is known)"
        facts.append(("mean entropy of the predicted distribution", _esc(text)))
    if "n_predicted_classes" in report:
        facts.append(("distinct predicted classes", _esc(num(report.get("n_predicted_classes")))))
    facts += [
        ("wall time", _esc(num(report.get("wall_seconds"), "{:.1f} s"))),
        ("throughput", _esc(num(report.get("images_per_second"), "{:.1f} images/s"))),
        ("device", _esc(device)),
    ]
    return _facts(facts)


def _comparison(comp: dict) -> str:
    parts = ["<h2>Compared with the previous committed run</h2>"]
    threshold = points(comp.get("threshold"), sign="")
    drift, drift_gate = comp.get("drift_tvd"), comp.get("drift_threshold")
    if comp.get("regressed"):
        # A comparison written before the gates gave reasons: the top-1 gate was the only one.
        reasons = comp.get("reasons") or [f"top-1 dropped by more than {threshold}"]
        items = "".join(f"<li>{_esc(r)}</li>" for r in reasons)
        parts.append(f'<div class="alert">Regression against the previous run:<ul>{items}</ul></div>')
    elif comp.get("top1_delta") is not None:
        parts.append(f'<p class="ok">No top-1 drop beyond {_esc(threshold)} against the previous run.</p>')
    else:
        if drift_gate is None:
            gate = "the drift gate is off (no --max-drift)"
        elif drift is None:
            gate = "no drift could be measured (a run predicted nothing)"
        else:
            gate = f"prediction drift {drift:.3f} is within --max-drift {drift_gate:g}"
        parts.append(f'<p class="ok">Top-1 cannot be compared (a run has no labels); {_esc(gate)}.</p>')
    drift_name = "prediction drift (total variation distance, 0 = same distribution, 1 = disjoint)"
    if drift_gate is not None:
        drift_name += f"; --max-drift {drift_gate:g}, gated only when top-1 cannot be compared"
    parts.append(
        _facts(
            [
                ("previous run", f"<code>{_esc(comp.get('previous_run_uri', 'n/a'))}</code>"),
                *([("previous model", f"<code>{_esc(comp['previous_model'])}</code>")] if comp.get("previous_model") else []),
                ("top-1 change", _esc(points(comp.get("top1_delta")))),
                ("top-5 change", _esc(points(comp.get("top5_delta")))),
                (_esc(drift_name), _esc(num(drift, "{:.3f}"))),
                ("mean confidence change", _esc(points(comp.get("mean_confidence_delta")))),
            ]
        )
    )
    moved = comp.get("share_changes") or []
    if moved:
        rows = [
            (_esc(d.get("name")), _esc(pct(d.get("share_before"))), _esc(pct(d.get("share_after"))),
             _esc(points(d.get("delta"))))
            for d in moved
        ]
        parts += [
            "<h3>Classes whose share of the predictions moved most (no labels needed)</h3>",
            _table(["predicted class", "share before", "after", "change"], rows, numeric=(1, 2, 3)),
        ]
    deltas = [d for d in comp.get("per_class_delta") or [] if d.get("delta") is not None]
    if deltas:
        deltas.sort(key=lambda d: (d["delta"], str(d.get("name")), str(d.get("wnid") or "")))
        shown = deltas[:15] + deltas[-15:] if len(deltas) > 30 else deltas  # the largest falls and rises
        with_wnid = any(d.get("wnid") for d in shown)
        body = []
        for d in shown:
            cls = "worse" if d["delta"] < 0 else "better" if d["delta"] > 0 else ""
            cells = [f"<td>{_esc(d.get('name', ''))}</td>"]
            if with_wnid:
                cells.append(f"<td><code>{_esc(d['wnid'])}</code></td>" if d.get("wnid") else "<td></td>")
            cells += [f'<td class="n">{_esc(v)}</td>'
                      for v in (pct(d.get("recall_before")), pct(d.get("recall_after")), points(d["delta"]))]
            body.append(f'<tr class="{cls}">{"".join(cells)}</tr>')
        note = f" ({len(shown)} of {len(deltas)}: the largest falls and rises)" if len(shown) < len(deltas) else ""
        head = "<th>class</th>" + ("<th>wnid</th>" if with_wnid else "")
        parts.append(
            f"<h3>Per-class accuracy change{_esc(note)}</h3><table><thead><tr>{head}"
            f'<th class="n">before</th><th class="n">after</th><th class="n">change</th></tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
        )
    return "\n".join(parts)


def _figure_html(png: bytes, alt: str, caption: str) -> str:
    return f"<figure>{_img(png, alt)}<figcaption>{caption}</figcaption></figure>"


def _predicted_classes(report: dict, predictions: pa.Table, conf: np.ndarray, labelled: bool) -> list[str]:
    """The "Predicted classes" section: the distribution, and without labels the confidence histogram."""
    distribution = report.get("prediction_distribution")
    if distribution is None:  # a report written before the label-free fields: count the table
        distribution = prediction_distribution(predictions.column("pred_label").to_numpy(zero_copy_only=False))
    n = predictions.num_rows
    n_classes = report.get("n_predicted_classes")
    out = ["<h2>Predicted classes</h2>"]
    if distribution:
        of = f" (of the {_esc(n_classes)} classes predicted)" if n_classes is not None else ""
        out.append(_figure_html(
            prediction_distribution_png(distribution), "predicted class distribution",
            f"Share of the {n} predicted images given to each of the {len(distribution[:MAX_DISTRIBUTION_BARS])} most "
            f"predicted classes{of}. Needs no labels; compare it with earlier runs to see the predictions move.",
        ))
    if not labelled:
        threshold, share = report.get("low_confidence_threshold"), report.get("low_confidence_share")
        low = (f" {_esc(pct(share))} of them are under {_esc(num(threshold, '{:.2f}'))}."
               if share is not None and threshold is not None else "")
        out.append(_figure_html(confidence_png(conf, None), "confidence histogram",
                                f"How sure the model is of its top-1 prediction, over every predicted image.{low}"))
    return out


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

    Args:
        report: the run's report (``report.json``'s fields).
        predictions: the committed predictions (:data:`batch_classify.results.PREDICTION_SCHEMA`).
        storage: how to reach the images for the thumbnails.
        vocabulary: the model's classes, for the class names of the pictures; None: ImageNet-1k
            (:func:`batch_classify.vocabulary.imagenet`).
        max_mistakes: tiles in the mistakes gallery (at most :data:`MAX_GALLERY`).

    Returns:
        the page (UTF-8 text): no script, no external URL; pictures as ``data:image/png`` URIs.
    """
    if vocabulary is None:
        from batch_classify.vocabulary import imagenet

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

    run_id = report.get("run_id", "")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Classification report: run {_esc(run_id)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Classification report: run <code>{_esc(run_id)}</code></h1>",
    ]
    if report.get("unlabelled_reason"):
        out.append(f'<p class="note">Unlabelled run: {_esc(report["unlabelled_reason"])}</p>')
    comparison = report.get("comparison")
    if comparison and comparison.get("regressed"):
        out.append('<p class="alert">This run regressed against the previous committed run (see the comparison).</p>')
    out += ["<h2>Summary</h2>", _summary(report, ece)]
    if comparison:
        out.append(_comparison(comparison))

    if n == 0:
        out.append('<p class="note">No image was predicted in this run: there is nothing to draw.</p>')
    elif not labelled.any():
        out.append(
            '<p class="note">No predicted image carries a label, so there is no accuracy, confusion matrix, '
            "per-class accuracy, calibration or list of mistakes. Labels come from folders named by the model's "
            "class names (for ImageNet-1k models, wnids too) or from a <code>--labels</code> manifest.</p>"
        )
        out += _predicted_classes(report, predictions, conf, labelled=False)
    else:
        n_lab = report["n_labelled"] if "n_labelled" in report else int(labelled.sum())
        n_classes = report["n_label_classes"] if "n_label_classes" in report else len(np.unique(y[labelled]))
        out += [
            "<h2>Confusion matrix</h2>",
            _figure_html(
                confusion_matrix_png(y, p, names), "confusion matrix",
                f"{n_lab} labelled images over {n_classes} label classes. Each row is one true class and sums to "
                "100%; the diagonal is that class's accuracy."
                + (f" With more than {MAX_MATRIX_CLASSES} classes only those with most errors are drawn."
                   if n_classes > MAX_MATRIX_CLASSES else ""),
            ),
        ]
        if report.get("confusions"):
            rows = [
                (_esc(c.get("true_name")) + (f' (<code>{_esc(c["true_wnid"])}</code>)' if c.get("true_wnid") else ""),
                 _esc(c.get("pred_name")), _esc(c.get("count")))
                for c in report["confusions"]
            ]
            out += ["<h3>Most frequent confusions</h3>", _table(["true", "predicted", "count"], rows, numeric=(2,))]
        out += [
            "<h2>Per-class accuracy</h2>",
            _figure_html(per_class_accuracy_png(y, p, names), "per-class accuracy",
                         "Accuracy (recall) of each label class: the share of its images predicted as it."),
            "<h2>Confidence and calibration</h2>",
            _figure_html(
                confidence_png(conf[labelled], p[labelled] == y[labelled], scored=cal),
                "confidence histogram and reliability diagram",
                f"Left: how sure the model is, right and wrong apart. Right: accuracy against confidence in "
                f"{DEFAULT_BINS} equal bins; the expected calibration error (ECE, Guo et al. 2017) is the "
                f"support-weighted mean gap: {pct(ece)}.",
            ),
        ]
        mistakes = confident_mistakes(predictions, min(max_mistakes, MAX_GALLERY))
        out.append("<h2>Most confident mistakes</h2>")
        if not mistakes:
            out.append(f'<p class="note">No mistakes among the {n_lab} labelled images.</p>')
        else:
            png, reasons = gallery_with_reasons(mistakes, storage, names)
            out.append(_figure_html(png, "most confident mistakes",
                                    "Wrong predictions the model was surest of; numbers match the list below."))
            rows = []
            for k, (m, reason) in enumerate(zip(mistakes, reasons), start=1):
                true_name = names[m["label_index"]] if 0 <= m["label_index"] < len(names) else ""
                rows.append((
                    _esc(k), f"<code>{_esc(m['path'])}</code>", _esc(m["label"]), _esc(true_name),
                    _esc(m["pred_label"]), _esc(pct(float(m["confidence"]))), _esc(reason or ""),
                ))
            out.append(_table(["#", "image", "label", "true class", "predicted", "confidence", "thumbnail"], rows, numeric=(0, 5)))
        out += _predicted_classes(report, predictions, conf, labelled=True)

    if report.get("per_class"):
        rows = sorted(report["per_class"], key=lambda r: (-r.get("support", 0), r.get("index", 0)))
        with_wnid = any(r.get("wnid") for r in rows)
        out += [
            f"<h2>Per class ({len(rows)} classes, by support)</h2>",
            _table(
                ["class", *(["wnid"] if with_wnid else []), "support", "predicted", "correct", "precision", "recall"],
                [
                    (_esc(r.get("name")),
                     *([f"<code>{_esc(r['wnid'])}</code>" if r.get("wnid") else ""] if with_wnid else []),
                     _esc(r.get("support")), _esc(r.get("predicted")), _esc(r.get("correct")),
                     _esc(pct(r.get("precision"))), _esc(pct(r.get("recall"))))
                    for r in rows
                ],
                numeric=(2, 3, 4, 5, 6) if with_wnid else (1, 2, 3, 4, 5),
            ),
        ]
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out += [f"<footer>batch-classify report, written {made}.</footer>", "</body></html>"]
    return "\n".join(out) + "\n"


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
    from batch_classify.results import read_committed

    if predictions is None:
        predictions = read_committed(run_uri, storage)
    uri = RunLayout.parse(run_uri).report_html
    write_bytes(uri, render_html(report, predictions, storage, vocabulary=vocabulary).encode("utf-8"), storage)
    return uri
