"""The page's sections on what to read first and what moved since earlier runs: the verdict with the
key figures and the notes on small samples (:func:`verdict_section`), the images to look at as
thumbnail tiles (:func:`review_section`), the most confident mistakes as tiles (:func:`mistake_tiles`),
the history's trend and table (:func:`history_section`);
and how a picture enters the page (:func:`png_figure`). Each returns the facts the template
``templates/page.html.j2`` prints, formatted (:mod:`batch_classify.report.format`).
"""

from __future__ import annotations

import base64
import io

from batch_classify.report.change_figures import history_png
from batch_classify.report.format import NA, num, pct, under, when
from batch_classify.report.gallery import thumbnail_jpegs
from batch_classify.report.samples import small_sample_notes
from batch_classify.report.trend import entry_status, this_run_entry
from batch_classify.report.verdict import HEALTHY, REGRESSED, key_figures, verdict
from batch_classify.storage import StorageOptions


def png_figure(png: bytes) -> dict:
    """A PNG as the template's ``figure`` macro takes it: ``src`` (a ``data:`` URI), ``width`` and
    ``height`` (pixels, for the page's layout before the image decodes)."""
    from PIL import Image

    w, h = Image.open(io.BytesIO(png)).size
    return {"src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"), "width": w, "height": h}


def verdict_section(report: dict) -> dict:
    """The page's first lines: the verdict (its status word apart), the key figures, the small-sample notes."""
    found = report.get("verdict") or verdict(report)
    word, _, rest = found["line"].partition(": ")
    notes = report.get("small_samples")
    return {
        "css": {REGRESSED: "alert", HEALTHY: "ok"}.get(found["status"], "note"),
        "word": word,
        "rest": rest,
        "figures": [(name, value, "") for name, value in key_figures(report)],
        "notes": small_sample_notes(report) if notes is None else notes,
    }


def _tiles(rows: list[dict], storage: StorageOptions, input_uri: str | None, caption) -> list[dict]:
    """The thumbnails of ``rows`` (each with a ``path``) as the template's tiles: ``src`` (a JPEG
    ``data:`` URI, None where it cannot be shown), ``reason`` (why not), ``path_parts`` (the path as
    shown, relative to the input, split at ``/`` so that it wraps there),
    ``full_path``, ``lines`` (``caption(row)``: the tile's text lines)."""
    tiles = []
    for row, jpeg in zip(rows, thumbnail_jpegs([r["path"] for r in rows], storage)):
        shown = isinstance(jpeg, bytes)
        tiles.append({
            "src": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii") if shown else None,
            "reason": None if shown else jpeg,
            "path_parts": under(row["path"], input_uri).split("/"),
            "full_path": row["path"],
            "lines": caption(row),
        })
    return tiles


def class_names(mistake: dict, names) -> tuple[str, str]:
    """A mistake's true and predicted class names (:func:`batch_classify.report.gallery.confident_mistakes`'
    rows), from ``names`` (every class index's display name); the label or the empty string where an
    index is outside them."""
    true_name = names[mistake["label_index"]] if 0 <= mistake["label_index"] < len(names) else str(mistake["label"])
    pred_name = mistake["pred_label"] or (names[mistake["pred_index"]] if 0 <= mistake["pred_index"] < len(names) else "")
    return true_name, pred_name


def mistake_tiles(mistakes: list[dict], storage: StorageOptions, input_uri: str | None, names) -> list[dict]:
    """The "Most confident mistakes" gallery: one tile per mistake, in order, captioned with its number
    (the list below the gallery uses the same), the confidence of the wrong prediction and both class
    names. Tiles, not a drawn picture: 48 thumbnails drawn by matplotlib took 1.2 of the report's 2.2 s
    on the 2-core development machine (cProfile of ``rerender_report``, 1,000 photos, 2026-12-07), and
    the page's text wraps where a picture's is cut."""
    def caption(m: dict) -> list[str]:
        true_name, pred_name = class_names(m, names)
        return [f"#{m['number']} · {pct(float(m['confidence']))}", f"true: {true_name}", f"pred: {pred_name}"]

    return _tiles([{**m, "number": k} for k, m in enumerate(mistakes, start=1)], storage, input_uri, caption)


def review_section(report: dict, storage: StorageOptions) -> dict | None:
    """The "Images to look at" section: the least confident predictions and the changed ones, as tiles."""
    lowest, changed = report.get("lowest_confidence") or [], report.get("changed") or []
    if not lowest and not changed:
        return None
    n = report.get("review_images") or len(lowest)
    cmp = report.get("comparison") or {}
    return {
        "lowest": _tiles(lowest, storage, report.get("input"), lambda r: [r["pred_label"], pct(r["confidence"])]),
        "changed": _tiles(changed[:n], storage, report.get("input"),
                          lambda r: [f"was {r['before']} ({pct(r['confidence_before'])})",
                                     f"now {r['after']} ({pct(r['confidence_after'])})"]),
        "n_changed": cmp.get("n_changed", len(changed)),
        "n_compared": cmp.get("n_compared"),
        "previous": cmp.get("previous_run_id") or cmp.get("previous_run_uri"),
    }


def history_section(report: dict) -> dict | None:
    """The "History" section: the trend picture and the table, this run first."""
    earlier = report.get("history") or []
    if not earlier:
        return None
    cmp = report.get("comparison") or {}
    this = this_run_entry(report)
    runs = [this, *earlier]
    has = {key: any(r.get(key) is not None for r in runs) for key in ("top1", "drift_tvd")}
    return {
        "png": png_figure(history_png(runs[::-1], max_drift=None if has["top1"] else cmp.get("drift_threshold"))),
        "n": len(earlier),
        "top1": has["top1"],
        "drift": has["drift_tvd"],
        "rows": [{"run_id": r["run_id"], "committed": "this run" if r is this else when(r.get("committed_at")),
                  "n_predicted": num(r.get("n_predicted")), "n_failed": num(r.get("n_failed")),
                  "top1": pct(r.get("top1")).replace(NA, "–"), "mean_confidence": pct(r.get("mean_confidence")).replace(NA, "–"),
                  "drift": num(r.get("drift_tvd"), "{:.3f}").replace(NA, "–"), "verdict": entry_status(r),
                  "css": "worse" if r.get("regressed") else ""} for r in runs],
    }
