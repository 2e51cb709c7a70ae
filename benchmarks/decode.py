"""Decoding and preprocessing alone, one core: the choices kept in ``preprocess.py``, before and after.

For each variant, milliseconds per image over the shared photos (median of 3 passes), and
the bytes per image that the variant hands to the next pipeline stage.

Usage: ``python -m benchmarks.decode [--images 500]``
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
from PIL import Image

from batch_classify.models.registry import LITE0_PRESET
from benchmarks.common import SHARED


def _resize_then_crop(img: Image.Image, size: int = 256, crop: int = 224) -> np.ndarray:
    w, h = img.size
    s = size / min(w, h)
    nw, nh = round(w * s), round(h * s)
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = int(round((nw - crop) / 2)), int(round((nh - crop) / 2))
    return np.asarray(img.crop((left, top, left + crop, top + crop)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--large", type=int, default=50, help="also time this many photos re-encoded at 4x the size")
    args = parser.parse_args()
    import torch
    from torchvision import transforms

    torch.set_num_threads(1)
    data = [p.read_bytes() for p in sorted(SHARED.glob("*.JPEG"))[: args.images]]
    seed_tf = transforms.Compose(
        [transforms.ToTensor(), transforms.Resize(256, antialias=True), transforms.CenterCrop(224),
         transforms.Normalize((0.5,) * 3, (0.5,) * 3)]
    )

    def seed(d):  # the notebook: full decode, float32 tensor of the whole picture, then resize
        img = np.asarray(Image.open(io.BytesIO(d)).convert("RGB"))
        return img, seed_tf(img).numpy()

    def full(d):  # full decode, Pillow resize, crop, uint8
        return _resize_then_crop(Image.open(io.BytesIO(d)).convert("RGB"))

    def draft(d):  # + DCT-scaled decoding where the photo is much larger than the model input
        img = Image.open(io.BytesIO(d))
        img.draft("RGB", (256, 256))
        return _resize_then_crop(img.convert("RGB"))

    variants = {
        "seed: ToTensor on the full picture, original carried": (seed, lambda o: o[0].nbytes + o[1].nbytes),
        "uint8: Pillow resize + crop": (full, lambda o: o.nbytes),
        "uint8 + JPEG draft (DCT scaling)": (draft, lambda o: o.nbytes),
        "uint8 + draft + crop-box resampling (kept)": (LITE0_PRESET, lambda o: o.nbytes),
    }
    def bigger(d: bytes) -> bytes:  # a phone-sized photo: the same picture at 4x the width and height
        img = Image.open(io.BytesIO(d)).convert("RGB")
        buf = io.BytesIO()
        img.resize((img.width * 4, img.height * 4), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
        return buf.getvalue()

    sets = {"shared photos (about 500x375)": data, "the same at 4x (about 2000x1500)": [bigger(d) for d in data[: args.large]]}
    for label, photos in sets.items():
        print(f"{label}: {len(photos)} photos, one thread; ms per image (median of 3), bytes per image to the next stage")
        for name, (fn, size) in variants.items():
            times = []
            for _ in range(3):
                start = time.perf_counter()
                outs = [fn(d) for d in photos]
                times.append((time.perf_counter() - start) / len(photos) * 1000)
            print(f"- {name}: {statistics.median(times):.2f} ms, {statistics.mean(size(o) for o in outs) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
