"""What ``batch-classify run`` (and ``demo``) print when a run ends: the prediction table, the summary
line, the output line; and what ``batch-classify models MODEL`` prints of one model."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from batch_classify.run.layout import RunLayout
from batch_classify.settings import RunSettings


def print_summary(out: Console, report: dict, predictions_preview: list[dict] | None) -> None:
    """The prediction table (none when ``predictions_preview`` is None: --quiet), the summary line, the output line."""
    if predictions_preview is not None:
        table = Table(title=f"run {report['run_id']} — {report['model']}", show_lines=False)
        for col in ("path", "label", "prediction", "confidence"):
            table.add_column(col, overflow="fold")
        for row in predictions_preview:
            table.add_row(row["path"], row["label"] or "", row["pred_label"], f"{row['confidence']:.3f}")
        out.print(table)
    from batch_classify.report.format import pct
    reused = f" ({report['n_reused']} reused, {report['n_computed']} computed)" if report.get("n_reused") else ""
    if report.get("unlabelled_reason"):
        scores = f"unlabelled ({report['unlabelled_reason']})"
    else:
        scores = f"top-1 {pct(report['top1'])}, top-5 {pct(report['top5'])}"
    if report.get("mean_confidence") is not None:
        scores += (f"; mean confidence {report['mean_confidence']:.3f}, {pct(report['low_confidence_share'])} "
                   f"under {report['low_confidence_threshold']:g}")
    out.print(
        f"{report['n_predicted']} predicted, {report['n_failed']} failed of {report['n_listed']} listed{reused}; "
        f"{scores}; {report['wall_seconds']:.1f} s, {report['images_per_second']:.1f} images/s",
        highlight=False,
    )
    out.print(f"output: {report['run_uri']}  (report: {RunLayout.parse(report['run_uri']).report_html})", highlight=False)


def preview(settings: RunSettings, n: int = 20) -> list[dict]:
    """The first ``n`` committed predictions of the run, by path: ``path``, ``label``, ``pred_label``, ``confidence``."""
    from batch_classify.run.results import read_committed

    table = read_committed(settings.run_uri(), settings.storage_options(), columns=["path", "label", "pred_label", "confidence"])
    return table.sort_by("path").slice(0, n).to_pylist()


def describe_model(out: Console, spec, storage) -> None:
    """Print a model's format, classes, preprocessing and, for a folder, its files and SHA-256."""
    from batch_classify.run.reuse import model_identity

    p = spec.preset
    resize = f"shorter side to {p.resize_size}" if p.resize_mode == "shorter" else f"stretched to {p.resize_size}×{p.resize_size}"
    vocabulary = spec.vocabulary()
    shown = ", ".join(vocabulary.names[:10]) + (f", … ({vocabulary.num_classes - 10} more)" if vocabulary.num_classes > 10 else "")
    table = Table(title=f"model {spec.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows = [
        ("format", spec.format if spec.folder else f"registry ({spec.name})"),
        ("classes", f"{vocabulary.num_classes}: {shown}"),
        ("preprocessing", f"{resize} ({p.interpolation}), centre crop {p.crop_size}, "
                          f"(pixel × {p.rescale:.6g} − mean {list(p.mean)}) / std {list(p.std)}"),
    ]
    if spec.folder is not None:
        rows += [
            ("preprocessing from", spec.folder.preprocessing_source),
            ("files", ", ".join(f"{rel} ({size:,} bytes)" for rel, size, _ in spec.folder.files)),
            ("SHA-256 of the folder", spec.folder.sha256(storage)),
        ]
    else:
        rows.append(("weights", spec.default_weights_path()))
    rows.append(("identity (incremental reuse)", model_identity(spec, None, storage)))
    for k, v in rows:
        table.add_row(k, escape(v))
    out.print(table)
