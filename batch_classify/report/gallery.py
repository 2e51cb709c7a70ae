"""The page's thumbnails: which mistakes the "Most confident mistakes" section shows
(:func:`confident_mistakes`), and the thumbnails of any images, read from their URIs
(:func:`load_thumbnails`) and encoded for the page's tiles (:func:`thumbnail_jpegs`). A thumbnail that
cannot be read never fails the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from batch_classify.storage import StorageOptions, filesystem

#: Most tiles in the mistakes gallery: 48, 8 rows of 6 tiles on a laptop's 1,360-pixel-wide page.
MAX_GALLERY = 48


def confident_mistakes(predictions: pa.Table, n: int) -> list[dict]:
    """The ``n`` most confident wrong predictions among the labelled rows, most confident first.

    Args:
        predictions: rows of :data:`batch_classify.columns.PREDICTION_SCHEMA` (at least ``path``,
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
    paths = np.asarray(predictions.column("path").take(wrong).to_pylist(), dtype=object)  # the wrong rows' only
    pick = wrong[np.lexsort((paths, -conf[wrong]))][:n]
    rows = predictions.select(["path", "label", "label_index", "pred_index", "pred_label", "confidence"]).take(pick)
    return rows.to_pylist()


def _read_thumbnail(fs, path: str, size: int):
    """A thumbnail (PIL RGB image, letterboxed to ``size`` × ``size`` on white) or the reason it failed."""
    from PIL import Image

    from batch_classify.models.preprocess import ClassificationPreset, DecodeError

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
