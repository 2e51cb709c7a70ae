"""The report's pictures and self-contained page: calibration by hand, PNGs for 10 and 1000 classes,
hostile names escaped, thumbnails from local files and S3, and the page of a real run in headless Chromium."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from batch_classify.report import metrics
from batch_classify.report.policy import RegressionPolicy
from batch_classify.report.compare import compare
from batch_classify.report.figures import (
    MAX_MATRIX_CLASSES,
    confidence_png,
    confusion_counts,
    confusion_matrix_png,
    per_class_accuracy_png,
    prediction_distribution_png,
)
from batch_classify.report.gallery import confident_mistakes, load_thumbnails
from batch_classify.report.html_sections import mistake_tiles
from batch_classify.report.html import render_html, write_report_html
from batch_classify.report.metrics import calibration, calibration_fields
from batch_classify.columns import PREDICTION_SCHEMA
from batch_classify.run.results import StagingWriter, commit, read_committed
from batch_classify.storage import StorageOptions, read_bytes
from batch_classify.models.vocabulary import Vocabulary, from_names, imagenet
from batch_classify.models.registry import get_spec
from helpers.photos import arrange_in_wnid_folders

CHROMIUM = Path("/usr/bin/chromium")
#: Flags for this workplace's closed network: without them Chromium's background services try to
#: connect out and the page load waits on refused connections.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: For each <img>: loaded (``complete && naturalWidth > 0``) and wholly decoded: its last pixel row, drawn on
#: a canvas, is opaque (the pictures have opaque backgrounds; a truncated PNG leaves that row transparent).
IMAGE_STATE = """els => els.map(e => {
  const c = document.createElement("canvas");
  c.width = e.naturalWidth; c.height = e.naturalHeight;
  const g = c.getContext("2d");
  let opaque = 0;
  if (e.naturalWidth > 0) {
    g.drawImage(e, 0, 0);
    const row = g.getImageData(0, e.naturalHeight - 1, e.naturalWidth, 1).data;
    for (let i = 3; i < row.length; i += 4) opaque += row[i] === 255 ? 1 : 0;
  }
  return {ok: e.complete && e.naturalWidth > 0, w: e.naturalWidth, alt: e.alt, opaque: opaque / Math.max(1, e.naturalWidth)};
})"""
#: The "Most confident mistakes" section as laid out: the gallery's title (its box, and whether its text
#: overflows it) and the cells' text of the list of mistakes, header first.
MISTAKES_LAYOUT = """() => {
  const h2 = [...document.querySelectorAll("h2")].find(e => e.textContent === "Most confident mistakes");
  const out = {viewport: document.documentElement.clientWidth, title: null, rows: null};
  for (let e = h2.nextElementSibling; e && e.tagName !== "H2"; e = e.nextElementSibling) {
    if (e.classList.contains("gallery-title")) {
      const r = e.getBoundingClientRect();
      out.title = {text: e.textContent, left: r.left, right: r.right, scrollWidth: e.scrollWidth, clientWidth: e.clientWidth};
    }
    if (e.tagName === "TABLE") out.rows = [...e.rows].map(row => [...row.cells].map(c => c.textContent.trim()));
  }
  return out;
}"""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE = '<script>alert("x")</script>'


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    img = Image.open(io.BytesIO(data))
    img.load()  # decodes the whole image: a truncated PNG fails here
    assert img.format == "PNG"
    return img.size


def _table(rows: list[dict], vocabulary: Vocabulary | None = None) -> pa.Table:
    """Prediction rows (``path``, ``label``, ``label_index``, ``pred_index``, ``confidence``) in the committed
    schema; ``pred_label`` from ``vocabulary`` (ImageNet-1k by default)."""
    names = (vocabulary or imagenet()).names
    full = [
        {
            "path": r["path"], "label": r.get("label"), "label_index": r.get("label_index"),
            "pred_index": r["pred_index"], "pred_label": names[r["pred_index"]], "confidence": r["confidence"],
            "top5_index": [r["pred_index"], 1, 2, 3, 4], "top5_prob": [r["confidence"], 0.01, 0.01, 0.01, 0.01],
            "model": "m", "run_id": "r1", "content_id": "", "computed_run_id": "r1",
        }
        for r in rows
    ]
    schema = pa.schema([PREDICTION_SCHEMA.field(n) for n in full[0]]) if full else PREDICTION_SCHEMA
    return pa.Table.from_pylist(full, schema=schema)


def _report(table: pa.Table, vocabulary: Vocabulary | None = None, **extra) -> dict:
    """The report fields ``steps.report`` writes, scored from ``table`` (labels and the label-free statistics)."""
    y = table.column("label_index").fill_null(-1).to_numpy() if table.num_rows else np.zeros(0, np.int64)
    p = table.column("pred_index").to_numpy() if table.num_rows else np.zeros(0, np.int64)
    t5 = (table.column("top5_index").combine_chunks().flatten().to_numpy().reshape(-1, 5) if table.num_rows
          else np.zeros((0, 5), np.int64))
    return {
        "run_id": "r1", "model": "efficientnet_lite0", "input": "/data/in", "run_uri": "/data/out/r1",
        "n_listed": table.num_rows, "n_predicted": table.num_rows, "n_failed": 0, "n_ignored": 0, "n_reused": 0,
        **metrics.accuracy(y, p, t5, vocabulary or imagenet()),
        **metrics.label_free(
            table.column("pred_label").to_numpy(zero_copy_only=False) if table.num_rows else np.zeros(0, object),
            table.column("confidence").to_numpy(zero_copy_only=False) if table.num_rows else np.zeros(0, np.float32),
            None, low_confidence=0.5),
        "wall_seconds": 12.5, "images_per_second": 3.2, "device": "cpu", "num_actors": 1,
        **extra,
    }


def _images(page: str, kind: str = "png") -> list[bytes]:
    """The page's pictures (``kind`` png: the figures) or thumbnails (jpeg: the tiles), decoded from their
    data URIs; fails on any <img> whose src is neither."""
    srcs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", page)
    assert len(srcs) == len(re.findall(r"<img\b", page))
    out = []
    for src in srcs:
        assert src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")), src[:60]
        if src.startswith(f"data:image/{kind};"):
            out.append(base64.b64decode(src.split(",", 1)[1], validate=True))
    return out


def _jpeg(path: Path, size=(96, 64), color=(200, 30, 30)) -> Path:
    Image.new("RGB", size, color).save(path, "JPEG")
    return path


def _mistakes_section(page: str) -> tuple[str, list[str], list[list[str]]]:
    """The "Most confident mistakes" section of a page: its HTML, its list's header cells and body rows' cells."""
    section = page.split("<h2>Most confident mistakes</h2>", 1)[1].split("<h2>", 1)[0]
    [listing] = re.findall(r"<table\b.*?</table>", section)
    header = re.findall(r"<th\b[^>]*>(.*?)</th>", listing)
    rows = [re.findall(r"<td\b[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", listing.split("<tbody>", 1)[1])]
    return section, header, rows


# ---------------------------------------------------------------- calibration


def test_calibration_of_a_perfectly_calibrated_model_is_zero():
    # 10 predictions at 0.3 of which 3 right, 10 at 0.8 of which 8 right: accuracy = confidence in each bin.
    conf = np.array([0.3] * 10 + [0.8] * 10, dtype=np.float32)
    right = np.array([1, 1, 1] + [0] * 7 + [1] * 8 + [0, 0], dtype=bool)
    cal = calibration(conf, right, n_bins=10)
    assert cal["ece"] == pytest.approx(0.0, abs=1e-6)
    assert cal["count"].sum() == 20 and sorted(cal["count"][cal["count"] > 0]) == [10, 10]


def test_calibration_by_hand():
    # 3 bins (0, 1/3], (1/3, 2/3], (2/3, 1]:
    #   bin 1: 0.2 wrong, 0.3 right          -> acc 0.50, conf 0.25, gap 0.25, weight 2/8
    #   bin 2: 0.5 right, 0.6 wrong          -> acc 0.50, conf 0.55, gap 0.05, weight 2/8
    #   bin 3: 0.9, 0.95, 1.0 right; 0.99 wrong -> acc 0.75, conf 0.96, gap 0.21, weight 4/8
    # ECE = 0.25 * 0.25 + 0.25 * 0.05 + 0.5 * 0.21 = 0.18
    conf = np.array([0.2, 0.3, 0.5, 0.6, 0.9, 0.95, 0.99, 1.0], dtype=np.float32)
    right = np.array([0, 1, 1, 0, 1, 1, 0, 1], dtype=bool)
    cal = calibration(conf, right, n_bins=3)
    assert cal["ece"] == pytest.approx(0.18, abs=1e-6)
    assert cal["count"].tolist() == [2, 2, 4]
    assert cal["accuracy"] == pytest.approx([0.5, 0.5, 0.75])
    assert cal["confidence"] == pytest.approx([0.25, 0.55, 0.96], abs=1e-6)
    assert cal["edges"] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    # 0 belongs to the first bin, 1 to the last; an empty bin has NaN accuracy and adds nothing.
    edge = calibration(np.array([0.0, 1.0], np.float32), np.array([False, True]), n_bins=4)
    assert edge["count"].tolist() == [1, 0, 0, 1] and np.isnan(edge["accuracy"][1]) and edge["ece"] == 0.0


def test_calibration_fields_are_json_and_none_without_labels():
    fields = calibration_fields(
        np.array([5, 5, 7, -1]), np.array([5, 6, 7, 9]), np.array([0.95, 0.9, 0.5, 0.99], np.float32), n_bins=5
    )
    text = json.dumps(fields, allow_nan=False)  # no NaN for empty bins
    bins = json.loads(text)["calibration_bins"]
    assert [b["count"] for b in bins] == [0, 0, 1, 0, 2]  # the unlabelled row is left out
    assert bins[0]["accuracy"] is None and bins[4]["accuracy"] == 0.5 and bins[4]["confidence"] == pytest.approx(0.925)
    # ECE = 1/3 * |1 - 0.5| + 2/3 * |0.5 - 0.925|
    assert fields["ece"] == pytest.approx(0.5 / 3 + 2 / 3 * 0.425, abs=1e-6)
    assert calibration_fields(np.array([-1, -1]), np.array([1, 2]), np.array([0.5, 0.5], np.float32)) == {
        "ece": None, "calibration_bins": []}
    assert calibration(np.zeros(0, np.float32), np.zeros(0, bool))["ece"] is None
    with pytest.raises(ValueError, match="confidences"):
        calibration(np.array([1.5], np.float32), np.array([True]))
    with pytest.raises(ValueError, match="confidences"):
        calibration(np.array([np.nan], np.float32), np.array([True]))


# ---------------------------------------------------------------- pictures


def test_confusion_counts_have_an_other_column_and_keep_the_most_confused_of_many():
    # 3 label classes: 0 (3 images: 2 right, 1 as class 1), 1 (2 right), 2 (1 as class 500, outside the labels).
    classes, counts, n = confusion_counts(np.array([0, 0, 0, 1, 1, 2, -1]), np.array([0, 0, 1, 1, 1, 500, 3]))
    assert classes.tolist() == [0, 1, 2] and n == 3
    assert counts.tolist() == [[2, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1]]
    # 1000 label classes, 3 images each, all right except in five: those must be the rows shown.
    y = np.repeat(np.arange(1000), 3)
    p = y.copy()
    confused = [17, 230, 231, 640, 999]
    for k, c in enumerate(confused):
        p[np.flatnonzero(y == c)[: k % 3 + 1]] = (c + 1) % 1000
    classes, counts, n = confusion_counts(y, p, max_classes=MAX_MATRIX_CLASSES)
    assert n == 1000 and len(classes) == MAX_MATRIX_CLASSES and set(confused) <= set(classes.tolist())
    assert counts.sum(axis=1).tolist() == [3] * MAX_MATRIX_CLASSES


@pytest.mark.parametrize("n_classes", [10, 1000])
def test_pictures_are_pngs_of_bounded_size(n_classes):
    rng = np.random.default_rng(0)
    names = imagenet().names
    n = 4000
    y = rng.choice(np.linspace(0, 999, n_classes).astype(np.int64), n)
    if n_classes == 1000:
        y[:1000] = np.arange(1000)  # every class present
    p = np.where(rng.random(n) < 0.75, y, rng.integers(0, 1000, n))
    conf = rng.beta(5, 2, n).astype(np.float32)
    from matplotlib import _pylab_helpers

    figures_before = _pylab_helpers.Gcf.get_num_fig_managers()
    started = time.perf_counter()
    pictures = {
        "confusion": confusion_matrix_png(y, p, names),
        "per_class": per_class_accuracy_png(y, p, names),
        "confidence": confidence_png(conf, p == y),
        "unlabelled": confidence_png(conf, None),
    }
    elapsed = time.perf_counter() - started
    assert elapsed < 15, f"drawing took {elapsed:.1f} s"
    assert _pylab_helpers.Gcf.get_num_fig_managers() == figures_before  # no figure left registered
    for name, png in pictures.items():
        w, h = _png_size(png)
        assert 300 <= w <= 1500 and 300 <= h <= 1400, (name, w, h)  # readable, never 1000 rows tall
    if n_classes == 1000:
        assert len(np.unique(y)) == 1000


def test_drawing_never_imports_pyplot():
    """The pictures use Figure on an Agg canvas: pyplot (global figures, a GUI backend) is never loaded."""
    code = (
        "import sys, numpy as np\n"
        "from batch_classify.report import figures as r\n"
        "y = np.arange(40) % 12; p = (y + (np.arange(40) % 3 == 0)) % 12\n"
        "names = [f'class {i}' for i in range(1000)]\n"
        "r.confusion_matrix_png(y, p, names); r.per_class_accuracy_png(y, p, names)\n"
        "r.confidence_png(np.linspace(0, 1, 40, dtype=np.float32), p == y)\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MPLBACKEND": "TkAgg"})  # a GUI default would fail if ever used
    assert done.returncode == 0, done.stderr[-2000:]


def test_hostile_and_dollar_names_do_not_break_drawing():
    names = list(imagenet().names)
    names[3] = HOSTILE + " $\\frac{1}{0$ and a very long name that goes on and on"
    png = confusion_matrix_png(np.array([3, 3, 4]), np.array([3, 4, 4]), names)
    assert _png_size(png)[0] > 300
    assert _png_size(per_class_accuracy_png(np.array([3, 3, 4]), np.array([3, 4, 4]), names))[0] > 300


def test_prediction_distribution_picture_is_bounded_and_takes_any_name():
    names = [HOSTILE + " $\\frac{1}{0$", "tench", *(f"class {i}" for i in range(998))]
    counts = np.arange(1000, 0, -1)
    full = [{"name": n, "count": int(k), "share": float(k / counts.sum())} for n, k in zip(names, counts)]
    for distribution in (full[:1], full[:20], full):
        w, h = _png_size(prediction_distribution_png(distribution))
        assert 300 <= w <= 1500 and 300 <= h <= 1400, (len(distribution), w, h)
    with pytest.raises(ValueError):
        prediction_distribution_png([])


def test_thumbnails_apply_exif_orientation_and_never_raise(tmp_path, s3_endpoint):
    landscape = Image.new("RGB", (120, 40), (0, 0, 0))  # stored 120 x 40, shown rotated: 40 wide, 120 high
    exif = landscape.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    landscape.save(tmp_path / "rotated.jpg", "JPEG", exif=exif.tobytes())
    (tmp_path / "not-an-image.jpg").write_bytes(b"plain text, no picture")
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="thumbs")
    boto3.client("s3", endpoint_url=s3_endpoint).upload_file(str(_jpeg(tmp_path / "red.jpg")), "thumbs", "a/red.jpg")
    storage = StorageOptions(endpoint_url=s3_endpoint)
    rotated, missing, garbage, on_s3, s3_missing = load_thumbnails(
        [str(tmp_path / "rotated.jpg"), str(tmp_path / "gone.jpg"), str(tmp_path / "not-an-image.jpg"),
         "s3://thumbs/a/red.jpg", "s3://thumbs/a/gone.jpg"],
        storage, size=96,
    )
    dark = np.argwhere(np.asarray(rotated).sum(axis=2) < 100)
    height, width = dark.max(axis=0) - dark.min(axis=0) + 1
    assert (height, width) == (96, 32)  # portrait: the orientation was applied, then letterboxed on white
    assert missing.startswith("cannot read: FileNotFoundError")
    assert garbage.startswith("cannot decode:")
    assert np.asarray(on_s3)[48, 48].tolist() == pytest.approx([200, 30, 30], abs=12)
    assert isinstance(s3_missing, str) and s3_missing.startswith("cannot read")


def test_gallery_shows_placeholders_for_unreadable_images(tmp_path):
    paths = [str(_jpeg(tmp_path / "a.jpg")), str(tmp_path / "missing.jpg")]
    table = _table([
        {"path": paths[0], "label": "n01440764", "label_index": 0, "pred_index": 1, "confidence": 0.9},
        {"path": paths[1], "label": "n01440764", "label_index": 0, "pred_index": 2, "confidence": 0.8},
        {"path": paths[1], "label": "n01443537", "label_index": 1, "pred_index": 1, "confidence": 0.99},  # right
        {"path": paths[1], "label": None, "label_index": None, "pred_index": 7, "confidence": 0.97},  # no label
    ])
    mistakes = confident_mistakes(table, 10)
    assert [(m["path"], m["pred_index"]) for m in mistakes] == [(paths[0], 1), (paths[1], 2)]
    shown, gone = mistake_tiles(mistakes, StorageOptions(), str(tmp_path), imagenet().names)
    assert shown["reason"] is None and Image.open(io.BytesIO(base64.b64decode(shown["src"].split(",", 1)[1]))).size == (160, 160)
    assert gone["src"] is None and gone["reason"].startswith("cannot read: FileNotFoundError")
    assert shown["lines"] == ["#1 · 90.0%", "true: tench", "pred: goldfish"] and shown["path_parts"] == ["a.jpg"]
    assert gone["lines"] == ["#2 · 80.0%", "true: tench", "pred: great white shark"]
    assert mistake_tiles([], StorageOptions(), None, imagenet().names) == []


def test_the_mistakes_section_titles_its_gallery_and_lists_every_mistake(tmp_path):
    """The gallery's title is text on the page (it wraps; it was cut in the picture), and the list of
    mistakes has no empty column: the gallery above shows each thumbnail under the same number, so the
    list says only why a thumbnail is missing, beside that image's path."""
    shown, gone = str(_jpeg(tmp_path / "a.jpg")), str(tmp_path / "gone.jpg")
    table = _table([
        {"path": shown, "label": "n01440764", "label_index": 0, "pred_index": 1, "confidence": 0.9},
        {"path": gone, "label": "n01440764", "label_index": 0, "pred_index": 2, "confidence": 0.8},
        {"path": shown, "label": "n01440764", "label_index": 0, "pred_index": 0, "confidence": 0.7},  # right
    ])
    page = render_html(_report(table, input="s3://photos/nightly/2026-11-30/"), table, StorageOptions())
    assert "<tr><td>input</td><td><code>s3://photos/nightly/2026-11-30/</code></td></tr>" in page  # as given
    section, header, rows = _mistakes_section(page)
    assert '<p class="gallery-title">The 2 most confident mistakes (confidence of the wrong prediction)</p>' in section
    assert len(_images(section, "jpeg")) == 1 and section.count('<figure class="tile"') == 2  # one thumbnail, one reason
    assert "<br>#1 · 90.0%<br>true: tench<br>pred: goldfish</figcaption>" in section
    assert header == ["#", "image", "label", "true class", "predicted", "confidence"]
    assert [len(r) for r in rows] == [6, 6] and all(cell.strip() for row in rows for cell in row), rows
    assert [r[0] for r in rows] == ["1", "2"] and [r[4] for r in rows] == ["goldfish", "great white shark"]
    assert "thumbnail not shown" not in rows[0][1]
    assert "thumbnail not shown: cannot read: FileNotFoundError" in rows[1][1] and html.escape(gone) in rows[1][1]


# ---------------------------------------------------------------- the page


def test_page_is_self_contained_and_escapes_data(tmp_path):
    hostile_dir = tmp_path / HOSTILE.replace("/", "_")
    hostile_dir.mkdir()
    photo = _jpeg(hostile_dir / "x.jpg")
    table = _table([
        {"path": str(photo), "label": HOSTILE, "label_index": 0, "pred_index": 1, "confidence": 0.9},
        {"path": str(tmp_path / "b.jpg"), "label": "n01440764", "label_index": 0, "pred_index": 0, "confidence": 0.7},
    ])
    report = _report(table, input=HOSTILE, restricted_top1=0.5, n_label_classes=1, comparison={
        "previous_run_uri": f"s3://bucket/{HOSTILE}", "previous_model": HOSTILE, "top1_delta": -0.25,
        "top5_delta": 0.0, "drift_tvd": 0.5, "regressed": True, "threshold": 0.02, "drift_threshold": None,
        "per_class_delta": [{"wnid": HOSTILE, "name": HOSTILE, "recall_before": 0.75, "recall_after": 0.5, "delta": -0.25}],
        "share_changes": [{"name": HOSTILE, "share_before": 0.0, "share_after": 0.5, "delta": 0.5}],
        "mean_confidence_delta": 0.05,
        "reasons": ["top-1 dropped by 25.0 points, over max_top1_drop = 0.02 (2.0 points)"],
    })
    report["prediction_distribution"][0]["name"] = HOSTILE
    report["per_class"][0]["name"] = HOSTILE
    report["confusions"][0]["pred_name"] = HOSTILE
    page = render_html(report, table, StorageOptions())
    assert "<script" not in page.lower() and page.count("&lt;script&gt;") >= 9
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page, re.I)
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert re.findall(r"\b(?:src|href)=\"([^\"]*)\"", page) and all(
        s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for s in re.findall(r"\b(?:src|href)=\"([^\"]*)\"", page))
    pictures = _images(page)
    assert len(pictures) == 4  # confusion matrix, per-class accuracy, confidence, predicted classes
    assert len(_images(page, "jpeg")) == 1  # the mistakes' tiles: the one that exists
    for png in pictures:
        assert min(_png_size(png)) > 100
    assert "Content-Security-Policy" in page
    # Restricted accuracy and the comparison are shown.
    assert "top-1 among the 1 label classes" in page and "50.0%" in page
    assert "-25.0 points" in page and "0.500" in page and "Regression" in page and "2.0 points" in page
    assert "top-1 dropped by 25.0 points, over max_top1_drop = 0.02 (2.0 points)" in page
    assert "+50.0 points" in page and "+5.0 points" in page  # a share change, the mean confidence change
    # An older report's comparison (no reasons, no label-free fields) still renders.
    old = {k: v for k, v in report["comparison"].items()
           if k not in ("reasons", "share_changes", "mean_confidence_delta", "drift_threshold")}
    page = render_html({**report, "comparison": old}, table, StorageOptions())
    assert "top-1 dropped by more than 2.0 points" in page and "top-1 change" in page
    assert "mean confidence change" not in page and "n/a" not in page.split("<h2>Summary</h2>")[0]  # no value, no row


def test_page_without_labels_without_predictions_and_with_one_class(tmp_path):
    photo = str(_jpeg(tmp_path / "a.jpg"))
    unlabelled = _table([{"path": photo, "pred_index": 5, "confidence": 0.4}, {"path": photo, "pred_index": 9, "confidence": 0.8}])
    page = render_html(_report(unlabelled), unlabelled, StorageOptions())
    assert "No predicted image carries a label" in page and "Confusion matrix" not in page
    assert len(_images(page)) == 2  # the predicted classes and the confidence histogram
    assert "Compared with" not in page and "Imagenette" not in page

    empty = _table([])
    page = render_html(_report(empty, comparison=None), empty, StorageOptions())
    assert "No image was predicted" in page and _images(page) == [] and "Compared with" not in page

    one = _table([{"path": photo, "label": "n01440764", "label_index": 0, "pred_index": p, "confidence": c}
                  for p, c in [(0, 0.9), (0, 0.8), (3, 0.7)]])
    page = render_html(_report(one), one, StorageOptions())
    assert len(_images(page)) == 4 and len(_images(page, "jpeg")) == 1 and "66.7%" in page  # one class, 2 of 3 right

    right = _table([{"path": photo, "label": "n01440764", "label_index": 0, "pred_index": 0, "confidence": 0.9}])
    page = render_html(_report(right), right, StorageOptions())
    assert "No mistakes among the 1 labelled images" in page and len(_images(page)) == 4 and not _images(page, "jpeg")


def test_page_of_an_unlabelled_run_of_a_model_with_its_own_classes(tmp_path):
    vocabulary = from_names(["Cat $x$", HOSTILE, "dog", "fox"])  # a config.json's id2label: no wnids
    photo = str(_jpeg(tmp_path / "a.jpg"))
    table = _table([{"path": photo, "pred_index": p, "confidence": c}
                    for p, c in [(0, 0.9), (0, 0.3), (1, 0.8), (2, 0.45), (2, 0.5)]], vocabulary)
    reason = f"folder names (e.g. {HOSTILE}) are not class names; the run is unlabelled"
    report = _report(table, vocabulary, unlabelled_reason=reason)
    current_names = table.column("pred_label").to_numpy(zero_copy_only=False)
    previous_names = np.array(["fox"] * 4 + ["Cat $x$"], dtype=object)  # another model's run on the same input
    previous = {"top1": None, "top5": None, "per_class": [], "model": "old-model", "mean_confidence": 0.9}

    def page_with(max_drift):
        comparison = compare(report, previous, current_names, previous_names, previous_run_uri="/out/r0",
                                        policy=RegressionPolicy(0.02, max_drift))
        return comparison, render_html({**report, "comparison": comparison}, table, StorageOptions(), vocabulary=vocabulary)

    comparison, page = page_with(0.1)
    assert comparison["top1_delta"] is None and comparison["drift_tvd"] == pytest.approx(0.8) and comparison["regressed"]
    assert "<script" not in page.lower() and html.escape(reason) in page and page.count("the run is unlabelled") == 1
    assert "No predicted image carries a label" in page and "folders named by the model's class names" in page
    assert "wnid" not in page.replace("(for ImageNet-1k models, wnids too)", "")  # no wnid column or cell
    pictures = _images(page)
    assert len(pictures) == 3 and all(250 <= min(_png_size(png)) for png in pictures)
    assert 'alt="predicted class distribution"' in page and 'alt="confidence histogram"' in page
    assert 'alt="class distributions of the previous run and this run side by side"' in page
    assert 'alt="confusion matrix"' not in page and "Confusion matrix" not in page and "Per-class accuracy" not in page
    assert "Predicted classes" in page and "<h2>Compared with the previous committed run</h2>" in page
    assert "prediction drift (TVD) 0.800, over max_drift = 0.1" in page and "Regression" in page
    assert '<p class="verdict alert"><strong>Regressed:</strong> prediction drift (TVD) 0.800, over max_drift = 0.1' in page
    assert "low confidence (under 0.50)" in page and "40.0% (2 images)" in page  # 0.3, 0.45; 0.5 is not under
    assert "Cat $x$" in page and "-80.0 points" in page  # fox's share fell from 80% to 0
    assert "mean confidence change" in page and "-31.0 points" in page  # 0.59 - 0.9

    comparison, page = page_with(0.9)
    assert not comparison["regressed"] and "prediction drift 0.800 is within max_drift = 0.9" in page
    assert '<p class="verdict ok"><strong>Healthy:</strong> prediction drift (TVD) 0.800 against run /out/r0, within' in page
    comparison, page = page_with(None)
    assert not comparison["regressed"] and "the drift gate is off" in page and "Regression" not in page


def test_page_of_a_labelled_run_of_a_model_with_its_own_classes(tmp_path):
    vocabulary = from_names(["cat", "dog", "fox"])
    photo = str(_jpeg(tmp_path / "a.jpg"))
    table = _table([{"path": photo, "label": label, "label_index": y, "pred_index": p, "confidence": c}
                    for label, y, p, c in [("cat", 0, 0, 0.9), ("cat", 0, 1, 0.8), ("dog", 1, 1, 0.7), ("fox", 2, 2, 0.6)]],
                   vocabulary)
    report = _report(table, vocabulary)
    uri = write_report_html(str(tmp_path / "out" / "r1"), report, StorageOptions(), predictions=table, vocabulary=vocabulary)
    page = Path(uri).read_text(encoding="utf-8")
    assert len(_images(page)) == 4 and len(_images(page, "jpeg")) == 1 and "75.0%" in page
    assert "wnid" not in page and "<code>None</code>" not in page
    assert "goldfish" not in page and "tench" not in page  # the names are the model's, not ImageNet's
    assert "<td>cat</td><td>dog</td><td>1</td>" in page.replace('<td class="n">', "<td>")  # the confusion, no wnid


@pytest.mark.parametrize("where", ["local", "s3"])
def test_write_report_html_reads_the_committed_run(where, tmp_path, request):
    """The page of a committed run lands beside it; the thumbnail is read from where the image is."""
    photo = _jpeg(tmp_path / "a.jpg", color=(20, 160, 40))
    if where == "local":
        storage, photo_uri, run_uri = StorageOptions(), str(photo), str(tmp_path / "out" / "r1")
    else:
        import boto3

        endpoint = request.getfixturevalue("s3_endpoint")
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="report-html")
        s3.upload_file(str(photo), "report-html", "in/n01440764/a.jpg")
        storage, photo_uri, run_uri = StorageOptions(endpoint_url=endpoint), "s3://report-html/in/n01440764/a.jpg", "s3://report-html/out/r1"
    writer = StagingWriter(run_uri, run_id="r1", model="m", vocabulary=imagenet(), label_map={"n01440764": 0}, storage=storage)
    writer.write({
        "path": np.array([photo_uri], dtype=object), "label": np.array(["n01440764"], dtype=object),
        "stage": np.array([""], dtype=object), "error": np.array([""], dtype=object),
        "pred_index": np.array([1]), "confidence": np.array([0.8], np.float32),
        "top5_index": np.array([[1, 0, 2, 3, 4]]), "top5_prob": np.array([[0.8, 0.1, 0.05, 0.03, 0.02]], np.float32),
    })
    commit(writer.close(), run_uri, storage, run_id="r1", model="m")
    report = _report(read_committed(run_uri, storage), run_uri=run_uri)
    uri = write_report_html(run_uri, report, storage)
    assert uri == f"{run_uri}/report.html"
    page = read_bytes(uri, storage).decode("utf-8")
    assert "goldfish" in page and html.escape(photo_uri) in page and len(_images(page)) == 4
    [thumbnail] = _images(page, "jpeg")  # read from where the image is
    assert np.asarray(Image.open(io.BytesIO(thumbnail)))[80, 80].tolist() == pytest.approx([20, 160, 40], abs=12)
    assert "cannot read" not in page and "cannot decode" not in page  # the thumbnail came from storage
    with pytest.raises(FileNotFoundError):
        write_report_html(run_uri.replace("/r1", "/never-committed"), report, storage)


# ---------------------------------------------------------------- a real run, in a real browser


def _chromium_or_skip():
    if not CHROMIUM.exists():
        pytest.skip(f"headless Chromium is not installed at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[test]'")


def _classified_run(photos: list[Path], root: Path) -> tuple[str, dict]:
    """40 real photos in wnid folders, classified by EfficientNet-Lite0 (ONNX Runtime), committed."""
    from batch_classify.stage.inference import Classifier, decode_batch

    storage = StorageOptions()
    input_dir = arrange_in_wnid_folders(photos[::12][:40], root / "input")
    files = sorted(input_dir.rglob("*.JPEG"))
    batch = {"path": np.array([str(f) for f in files], dtype=object),
             "label": np.array([f.parent.name for f in files], dtype=object)}
    out = Classifier(spec=get_spec("efficientnet_lite0"), weights=None, storage=storage, runtime="onnx")(
        decode_batch(batch, preset=get_spec("efficientnet_lite0").preset, storage=storage))
    vocabulary = imagenet()
    run_uri = str(root / "output" / "20261127T020000Z-abc123")
    writer = StagingWriter(run_uri, run_id="20261127T020000Z-abc123", model="efficientnet_lite0", vocabulary=vocabulary,
                           label_map=vocabulary.map_labels(set(batch["label"])), storage=storage)
    writer.write(out)
    commit(writer.close(), run_uri, storage, run_id="20261127T020000Z-abc123", model="efficientnet_lite0")
    table = read_committed(run_uri, storage)
    y = table.column("label_index").to_numpy()
    t5 = table.column("top5_index").combine_chunks().flatten().to_numpy().reshape(-1, 5)
    # Restricted to the label classes: the best of the top-5 that is one of them (a stand-in for the
    # argmax over those classes, which the job computes from the logits).
    allowed = set(y.tolist())
    restricted = np.array([next((c for c in row if c in allowed), row[0]) for row in t5])
    report = _report(
        table, run_id="20261127T020000Z-abc123", input=str(input_dir), run_uri=run_uri, n_listed=40,
        restricted_top1=float(np.mean(restricted == y)), n_label_classes=len(allowed),
        comparison={
            "previous_run_uri": str(root / "output" / "20261126T020000Z-def456"), "previous_model": "efficientnet_lite0",
            "top1_delta": -0.025, "top5_delta": 0.0, "drift_tvd": 0.05, "regressed": True, "threshold": 0.02,
            "drift_threshold": 0.1, "mean_confidence_delta": -0.01,
            "reasons": ["top-1 dropped by 2.5 points, over max_top1_drop = 0.02 (2.0 points)"],
            "share_changes": [{"name": r["name"], "share_before": 0.0, "share_after": r["share"], "delta": r["share"]}
                              for r in metrics.prediction_distribution(table.column("pred_label").to_numpy(
                                  zero_copy_only=False), 10)],
            "per_class_delta": [
                {"wnid": c["wnid"], "name": c["name"], "recall_before": 1.0, "recall_after": c["recall"],
                 "delta": c["recall"] - 1.0}
                for c in metrics.accuracy(y, table.column("pred_index").to_numpy(), t5, vocabulary)["per_class"]
                if c["support"] and c["recall"] < 1.0
            ],
        },
    )
    return run_uri, report


def test_report_page_renders_in_headless_chromium(photos, tmp_path):
    playwright = _chromium_or_skip()
    run_uri, report = _classified_run(photos, tmp_path)
    mistakes = confident_mistakes(read_committed(run_uri, StorageOptions()), 24)
    assert len(mistakes) >= 3, "the 40 photos should give Lite0 a few real mistakes"
    Path(mistakes[1]["path"]).unlink()  # a photo gone since the run: a placeholder tile, not an error
    page_uri = write_report_html(run_uri, report, StorageOptions())
    html_text = Path(page_uri).read_text(encoding="utf-8")
    assert "cannot read: FileNotFoundError" in html_text and mistakes[0]["pred_label"] in html_text
    assert [min(_png_size(png)) > 300 for png in _images(html_text)] == [True] * 4
    assert len(_images(html_text, "jpeg")) == len(mistakes) - 1  # every mistake's tile but the gone photo's

    console, errors, requests = [], [], []
    shot = tmp_path / "report.png"
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.on("console", lambda m: console.append((m.type, m.text)))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(Path(page_uri).as_uri(), wait_until="load", timeout=30_000)
            images = page.eval_on_selector_all("img", IMAGE_STATE)
            title = page.title()
            headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
            page.screenshot(path=str(shot), full_page=True)
            layouts = [page.evaluate(MISTAKES_LAYOUT)]
            page.set_viewport_size({"width": 420, "height": 900})  # a phone: the title wraps, never cut
            layouts.append(page.evaluate(MISTAKES_LAYOUT))
        finally:
            browser.close()

    assert [m for m in console if m[0] == "error"] == [] and errors == []
    assert all(u.startswith(("file://", "data:")) for u in requests), requests
    assert len(images) == 4 + len(mistakes) - 1 and all(i["ok"] and i["opaque"] == 1 for i in images), images
    assert title == "Classification report: run 20261127T020000Z-abc123"
    assert {"Summary", "Compared with the previous committed run", "Confusion matrix", "Per-class accuracy",
            "Confidence and calibration", "Most confident mistakes", "Predicted classes"} <= set(headings)
    # The gallery's title is the page's text, inside the window at any width (it was cut in the picture).
    for layout in layouts:
        title = layout["title"]
        assert title and title["text"] == f"The {len(mistakes)} most confident mistakes (confidence of the wrong prediction)"
        assert 0 <= title["left"] and title["right"] <= layout["viewport"], layout
        assert title["scrollWidth"] <= title["clientWidth"], layout
    # The list of mistakes has no empty column; the missing photo's row says why it has no thumbnail.
    header, *rows = layouts[0]["rows"]
    assert header == ["#", "image", "label", "true class", "predicted", "confidence"]
    assert len(rows) == len(mistakes) and all(len(r) == len(header) and all(r) for r in rows), rows
    assert "thumbnail not shown: cannot read: FileNotFoundError" in rows[1][1]
    assert not any("thumbnail not shown" in r[1] for r in rows[:1] + rows[2:])
    data = shot.read_bytes()
    w, h = _png_size(data)
    assert w == 1360 and 2500 <= h <= 20000
    pixels = np.asarray(Image.open(shot).convert("RGB").resize((w // 4, h // 4)))
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # not a blank page
    if os.environ.get("BATCH_CLASSIFY_SCREENSHOT_DIR"):
        target = Path(os.environ["BATCH_CLASSIFY_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target / "report.png")
        shutil.copyfile(page_uri, target / "report.html")


# ---------------------------------------------------------------- real runs with a history, in a real browser

#: For every element of the page not inside a box that scrolls sideways (a wide table on a phone scrolls
#: within itself): its box leaves the window, or its content is cut (``scrollWidth > clientWidth`` on an
#: element that hides or clips what overflows).
CLIPPED = """() => {
  const vw = document.documentElement.clientWidth;
  const scrolls = e => ["auto", "scroll"].includes(getComputedStyle(e).overflowX);
  const inScroller = e => { for (let a = e.parentElement; a; a = a.parentElement) if (scrolls(a)) return true; return false; };
  return [...document.querySelectorAll("body *")].filter(e => !inScroller(e)).flatMap(e => {
    const r = e.getBoundingClientRect();
    const out = [];
    if (r.width > 0 && (r.left < -1 || r.right > vw + 1)) out.push(`${e.tagName}.${e.className} leaves the window`);
    const x = getComputedStyle(e).overflowX;
    if ((x === "hidden" || x === "clip") && e.scrollWidth > e.clientWidth + 1) out.push(`${e.tagName}.${e.className} cut`);
    return out;
  });
}"""


@pytest.fixture(scope="module")
def lite0():
    from batch_classify.stage.inference import Classifier

    return Classifier(spec=get_spec("efficientnet_lite0"), weights=None, storage=StorageOptions(), runtime="onnx")


def _real_run(lite0, input_dir: Path, out: Path, run_id: str, *, labelled: bool, review_images: int = 12) -> dict:
    """Classify every JPEG under ``input_dir`` with EfficientNet-Lite0 (ONNX Runtime), commit the run under
    ``out`` and build its report as a run does (history, comparison, images to look at, page)."""
    from batch_classify.stage.inference import decode_batch
    from batch_classify.report.build import score_and_write

    storage, vocabulary = StorageOptions(), imagenet()
    files = sorted(p for p in input_dir.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
    batch = {"path": np.array([str(f) for f in files], dtype=object),
             "label": np.array([f.parent.name if labelled else None for f in files], dtype=object)}
    run_uri = str(out / run_id)
    label_map = vocabulary.map_labels(set(batch["label"])) if labelled else {}
    writer = StagingWriter(run_uri, run_id=run_id, model="efficientnet_lite0", vocabulary=vocabulary, label_map=label_map,
                           storage=storage, meta={"input": str(input_dir)})
    writer.write(lite0(decode_batch(batch, preset=get_spec("efficientnet_lite0").preset, storage=storage)))
    commit(writer.close(), run_uri, storage, run_id=run_id, model="efficientnet_lite0")
    base = {"run_id": run_id, "model": "efficientnet_lite0", "input": str(input_dir), "run_uri": run_uri,
            "labels": "folders" if labelled else "none", "n_listed": len(files), "n_predicted": len(files), "n_failed": 0,
            "n_ignored": 0, "n_reused": 0, "wall_seconds": 10.0, "images_per_second": len(files) / 10.0,
            "device": "cpu", "num_actors": 1}
    return score_and_write(base, storage, vocabulary=vocabulary, policy=RegressionPolicy(0.02, 0.1), low_confidence=0.5,
                           review_images=review_images)


def _open_in_chromium(playwright, page_path: Path, shot: Path) -> dict:
    """The page in headless Chromium at 1,360 and 420 pixels wide: its images' state, what is clipped at
    each width, the tiles, the element after the title; a full-page screenshot at 1,360."""
    seen: dict = {"console": [], "errors": []}
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.on("console", lambda m: seen["console"].append((m.type, m.text)))
            page.on("pageerror", lambda e: seen["errors"].append(str(e)))
            page.goto(page_path.as_uri(), wait_until="load", timeout=30_000)
            seen["images"] = page.eval_on_selector_all("img", IMAGE_STATE)
            seen["first"] = page.evaluate("() => document.querySelector('h1').nextElementSibling.className")
            seen["tiles"] = page.evaluate("() => [...document.querySelectorAll('.tiles')].map(t => t.children.length)")
            seen["clipped"] = page.evaluate(CLIPPED)
            page.screenshot(path=str(shot), full_page=True)
            page.set_viewport_size({"width": 420, "height": 900})  # a phone
            seen["clipped_narrow"] = page.evaluate(CLIPPED)
            seen["scroll_narrow"] = page.evaluate("() => document.documentElement.scrollWidth")
        finally:
            browser.close()
    return seen


def test_pages_of_real_labelled_and_unlabelled_runs_with_a_history_render_in_headless_chromium(photos, tmp_path, lite0):
    """Three real runs of each kind, the second and third after photos were replaced at the same paths: the
    third's page opens with its verdict, shows the thumbnails of the images to look at, the two class
    distributions side by side and the trend; every image loads; nothing is cut, wide or narrow."""
    playwright = _chromium_or_skip()
    labelled_in = arrange_in_wnid_folders(photos[::12][:30], tmp_path / "labelled")
    unlabelled_in = tmp_path / "unlabelled"
    for day, part in (("2026-12-05", photos[1:11]), ("2026-12-06", photos[11:21])):
        (unlabelled_in / day).mkdir(parents=True)
        for k, p in enumerate(part):
            shutil.copyfile(p, unlabelled_in / day / f"IMG_{k:04d}.jpg")
    pages = {}
    for kind, input_dir in (("labelled", labelled_in), ("unlabelled", unlabelled_in)):
        out = tmp_path / f"out-{kind}"
        files = sorted(p for p in input_dir.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
        for night in range(3):
            if night:  # other photos at the same paths: labels (folders) stay, predictions move
                for k, target in enumerate(files[night * 4: night * 4 + 8]):
                    shutil.copyfile(photos[301 + 10 * night + k], target)
            report = _real_run(lite0, input_dir, out, f"2026120{night + 5}T020000Z-{kind[:6]}", labelled=kind == "labelled")
        assert [h["run_id"] for h in report["history"]] == ["20261206T020000Z-" + kind[:6], "20261205T020000Z-" + kind[:6]]
        assert report["comparison"]["n_changed"] >= 4 and report["changed"] and len(report["lowest_confidence"]) == 12
        assert (report["top1"] is None) == (kind == "unlabelled")
        pages[kind] = (Path(report["run_uri"]) / "report.html", report)
    # A photo gone since the run: its tile says why, the page is written all the same.
    page_path, report = pages["unlabelled"]
    gone = report["lowest_confidence"][2]["path"]
    Path(gone).unlink()
    write_report_html(report["run_uri"], report, StorageOptions())
    tile = page_path.read_text(encoding="utf-8").split(f'<figure class="tile" title="{gone}">', 1)[1].split("</figure>")[0]
    assert "thumbnail not shown: cannot read: FileNotFoundError" in tile and "<img" not in tile

    for kind, (page_path, report) in pages.items():
        text = page_path.read_text(encoding="utf-8")
        assert 'alt="trend over the earlier runs"' in text, kind
        assert 'alt="class distributions of the previous run and this run side by side"' in text, kind
        seen = _open_in_chromium(playwright, page_path, tmp_path / f"{kind}.png")
        assert [m for m in seen["console"] if m[0] == "error"] == [] and seen["errors"] == [], kind
        assert seen["images"] and all(i["ok"] and i["opaque"] == 1 for i in seen["images"]), (kind, seen["images"])
        thumbnails = [i for i in seen["images"] if i["w"] == 160]
        n_changed = min(12, report["comparison"]["n_changed"])
        gone_here = sum(1 for r in report["lowest_confidence"] + report["changed"][:12] if not Path(r["path"]).exists())
        # The labelled page's mistakes are tiles too, after the images to look at.
        n_mistakes = len(confident_mistakes(read_committed(report["run_uri"], StorageOptions()), 48))
        assert (n_mistakes > 0) == (kind == "labelled"), kind
        assert len(thumbnails) == 12 + n_changed + n_mistakes - gone_here, kind  # every other tile's thumbnail loaded
        assert seen["tiles"] == [12, n_changed] + ([n_mistakes] if n_mistakes else []), kind
        assert (gone_here > 0) == (kind == "unlabelled"), kind
        assert seen["first"].startswith("verdict "), kind  # the verdict right under the title
        assert seen["clipped"] == [] and seen["clipped_narrow"] == [] and seen["scroll_narrow"] <= 420, (kind, seen)
        if os.environ.get("BATCH_CLASSIFY_SCREENSHOT_DIR"):
            target = Path(os.environ["BATCH_CLASSIFY_SCREENSHOT_DIR"])
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp_path / f"{kind}.png", target / f"report-{kind}-history.png")
