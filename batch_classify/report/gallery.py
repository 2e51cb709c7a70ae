"""The gallery of the most confident mistakes: which mistakes (:func:`confident_mistakes`), their
thumbnails read from the images' URIs (:func:`load_thumbnails`), and the picture
(:func:`mistakes_gallery_png`). A thumbnail that cannot be read never fails the report.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from batch_classify.report.figures import axis_label, new_figure, to_png
from batch_classify.report.format import pct
from batch_classify.storage import StorageOptions, filesystem

#: Most tiles in the mistakes gallery (8 rows of 6): keeps the picture under 2,200 pixels high.
MAX_GALLERY = 48


def confident_mistakes(predictions: pa.Table, n: int) -> list[dict]:
    """The ``n`` most confident wrong predictions among the labelled rows, most confident first.

    Args:
        predictions: rows of :data:`batch_classify.results.PREDICTION_SCHEMA` (at least ``path``,
            ``label``, ``label_index``, ``pred_index``, ``pred_label``, ``confidence``).

    Returns:
        dicts with those six keys (ties in confidence: by path).
    """
    if predictions.num_rows == 0 or n <= 0:
        return []
    y = predictions.column("label_index").fill_null(-1).to_numpy()
    p = predictions.column("pred_index").to_numpy()
    conf = predictions.column("confidence").to_numpy(zero_copy_only=False)
    wrong = np.flatnonzero((y >= 0) & (p != y))
    if not len(wrong):
        return []
    paths = np.asarray(predictions.column("path").to_pylist(), dtype=object)
    pick = wrong[np.lexsort((paths[wrong], -conf[wrong]))][:n]
    rows = predictions.select(["path", "label", "label_index", "pred_index", "pred_label", "confidence"]).take(pick)
    return rows.to_pylist()


def _read_thumbnail(fs, path: str, size: int):
    """A thumbnail (PIL RGB image, letterboxed to ``size`` × ``size`` on white) or the reason it failed."""
    from PIL import Image

    from batch_classify.preprocess import ClassificationPreset, DecodeError

    try:
        data = fs.cat_file(path)
    except Exception as err:  # noqa: BLE001 - any read fault becomes the tile's reason
        return f"cannot read: {type(err).__name__}: {err}"
    try:
        # The run's own decoder: EXIF orientation applied, any mode made RGB, JPEGs drafted small,
        # oversized images refused before decoding.
        img = ClassificationPreset(resize_size=size, crop_size=size, mean=(0, 0, 0), std=(1, 1, 1)).decode(data)
        img.thumbnail((size, size), Image.Resampling.BICUBIC)
    except DecodeError as err:
        return f"cannot decode: {err}"
    except Exception as err:  # noqa: BLE001 - a thumbnail never fails the report
        return f"cannot decode: {type(err).__name__}: {err}"
    tile = Image.new("RGB", (size, size), (255, 255, 255))
    tile.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return tile


def load_thumbnails(uris: Sequence[str], storage: StorageOptions, *, size: int = 192) -> list:
    """Thumbnails of images by URI (local or S3, as :mod:`batch_classify.storage` reaches them).

    Returns:
        one entry per URI: a PIL RGB image ``size`` × ``size`` (EXIF orientation applied,
        letterboxed on white), or a string saying why it could not be shown. Never raises for
        a missing, unreadable or undecodable image.
    """

    def one(uri: str):
        try:
            fs, path = filesystem(uri, storage)
        except Exception as err:  # noqa: BLE001 - e.g. an unknown protocol
            return f"cannot read: {type(err).__name__}: {err}"
        return _read_thumbnail(fs, path, size)

    if not uris:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(uris))) as pool:
        return list(pool.map(one, uris))


def thumbnail_jpegs(uris: Sequence[str], storage: StorageOptions, *, size: int = 160, quality: int = 80) -> list:
    """Thumbnails for the page's tiles: one entry per URI, JPEG bytes of a ``size`` × ``size`` RGB
    thumbnail (:func:`load_thumbnails`: EXIF orientation applied, letterboxed on white; at ``size``
    160 and ``quality`` 80 about 5 to 10 KB each), or a string saying why it could not be shown.
    Never raises for a missing, unreadable or undecodable image."""
    import io

    out: list = []
    for tile in load_thumbnails(list(uris), storage, size=size):
        if isinstance(tile, str):
            out.append(tile)
            continue
        buf = io.BytesIO()
        tile.save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def gallery_with_reasons(mistakes: Sequence[dict], storage: StorageOptions, names: Sequence[str], *, columns: int = 6,
                         thumb_px: int = 192) -> tuple[bytes, list[str | None]]:
    """:func:`mistakes_gallery_png` and, per mistake, why its thumbnail is missing (None where it is shown)."""
    mistakes = list(mistakes)[:MAX_GALLERY]
    if not mistakes:
        raise ValueError("no mistakes to show")
    tiles = load_thumbnails([m["path"] for m in mistakes], storage, size=thumb_px)
    cols = min(columns, len(mistakes))
    nrows = math.ceil(len(mistakes) / cols)
    fig = new_figure(2.2 * cols, 0.5 + 2.65 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, cols)).reshape(-1)
    for ax in axes:
        ax.set_axis_off()
    reasons: list[str | None] = []
    for k, (m, tile, ax) in enumerate(zip(mistakes, tiles, axes), start=1):
        true_name = names[m["label_index"]] if 0 <= m["label_index"] < len(names) else str(m["label"])
        pred_name = m["pred_label"] or (names[m["pred_index"]] if 0 <= m["pred_index"] < len(names) else "")
        ax.set_title(
            f"#{k}  {pct(float(m['confidence']))}\ntrue: {axis_label(true_name, 22)}\npred: {axis_label(pred_name, 22)}",
            fontsize=8, loc="left",
        )
        if isinstance(tile, str):
            reasons.append(tile)
            ax.set_axis_on()
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor("#eeeeee")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            text = "\n".join(textwrap.wrap(tile, 26)[:6])
            ax.text(0.5, 0.5, axis_label(text, 170), ha="center", va="center", fontsize=6.5, color="#8b0000",
                    transform=ax.transAxes)
        else:
            reasons.append(None)
            ax.imshow(np.asarray(tile), interpolation="antialiased")
    return to_png(fig), reasons


def mistakes_gallery_png(
    mistakes: Sequence[dict], storage: StorageOptions, names: Sequence[str], *, columns: int = 6, thumb_px: int = 192
) -> bytes:
    """A gallery of mistakes as a PNG: thumbnails with the confidence, true and predicted class.

    Args:
        mistakes: rows as :func:`confident_mistakes` returns them, shown in order (at most
            :data:`MAX_GALLERY`; the figure is 2.2 inches per column, 2.65 per row).
        storage: how to reach the images (the run's :class:`StorageOptions`).
        names: display name of every class index.

    An image that cannot be read or decoded becomes a grey tile stating the reason. The picture has
    no title: the page prints it above (:mod:`batch_classify.report.html`), as text that wraps; drawn
    in the picture it was wider than a gallery of one or two tiles and cut at both edges.

    Raises:
        ValueError: ``mistakes`` is empty.
    """
    return gallery_with_reasons(mistakes, storage, names, columns=columns, thumb_px=thumb_px)[0]

