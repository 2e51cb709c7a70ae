"""Device decoding against Pillow's: the same photos, the same model, top-1 compared; and its speed.

For the photos under PHOTOS (named ``<wnid>_<name>.JPEG``, as in ``../shared/imagenet-sample``):

* crops made by the CPU path (``ClassificationPreset``: Pillow) and by :class:`DeviceDecoder` on
  ``--device`` (nvJPEG on CUDA), their mean absolute pixel difference;
* one PyTorch engine on ``--device`` (bf16 autocast on CUDA, as the actors run it) classifies both:
  the share of photos with the same top-1 class, and top-1 accuracy of each against the wnid in
  the name (real weights needed for that: ``--weights``, e.g. the float16 copy ``gpu_bundle`` carries);
* with ``--speed-input DIR``: device decode + resize + crop of every ``*.JPEG`` under DIR, in
  batches of ``--batch-size``, images/s (synchronised, files read beforehand), against the CPU
  path's milliseconds per image on one core.

Prints one JSON object. Usage::

    python -m benchmarks.decode_parity PHOTOS [--device cuda] [--weights W] [--speed-input DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--speed-input", default=None)
    parser.add_argument("--speed-images", type=int, default=4096)
    args = parser.parse_args()

    import torch

    from batch_classify.stage.device_decode import DeviceDecoder, read_batch
    from batch_classify.stage.engines import build_engine
    from batch_classify.models.registry import get_spec
    from batch_classify.storage import StorageOptions
    from batch_classify.models.vocabulary import imagenet

    opts = StorageOptions()
    spec = get_spec(args.model)
    photos = sorted(Path(args.photos).glob("*.JPEG"))
    batch = {"path": np.array([str(p) for p in photos], dtype=object), "label": np.array([None] * len(photos), dtype=object)}
    read = read_batch(batch, storage=opts)
    decoder = DeviceDecoder(spec.preset, device=args.device)
    out = decoder(read["data"], read["on_device"], read["stage"], read["error"])
    device_crops = out.images.cpu().numpy()
    cpu_crops = np.stack([spec.preset(p.read_bytes()) for p in photos])
    engine = build_engine(spec, args.weights, opts, runtime="torch", device=args.device)
    dev_top1 = np.concatenate([engine(device_crops[i : i + 128]).argmax(1) for i in range(0, len(photos), 128)])
    cpu_top1 = np.concatenate([engine(cpu_crops[i : i + 128]).argmax(1) for i in range(0, len(photos), 128)])
    index = {w: i for i, w in enumerate(imagenet().wnids)}
    labels = np.array([index.get(p.name[:9], -1) for p in photos])
    result = {
        "device": args.device, "torch": torch.__version__, "photos": len(photos), "n_device": out.n_device, "n_cpu": out.n_cpu,
        "failed": int(sum(1 for e in out.error if e)),
        "mean_abs_pixel_diff": round(float(np.abs(device_crops.astype(int) - cpu_crops.astype(int)).mean()), 3),
        "top1_agree": round(float((dev_top1 == cpu_top1).mean()), 4),
        "top1_device_decode": round(float((dev_top1 == labels).mean()), 4),
        "top1_cpu_decode": round(float((cpu_top1 == labels).mean()), 4),
    }
    if args.speed_input:
        files = sorted(Path(args.speed_input).rglob("*.JPEG"))[: args.speed_images]
        blobs = np.array([f.read_bytes() for f in files], dtype=object)
        on_device = np.ones(len(files), dtype=bool)
        empty = np.full(len(files), "", dtype=object)
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        for rep in range(2):  # the first pass warms nvJPEG's buffers up
            sync()
            start = time.perf_counter()
            for i in range(0, len(files), args.batch_size):
                s = slice(i, i + args.batch_size)
                decoder(blobs[s], on_device[s], empty[s], empty[s])
            sync()
            seconds = time.perf_counter() - start
        start = time.perf_counter()
        for b in blobs[:200]:
            spec.preset(b)
        result.update({
            "speed_images": len(files), "batch_size": args.batch_size,
            "device_decode_images_per_second": round(len(files) / seconds, 1),
            "cpu_decode_ms_per_image_one_core": round(1000 * (time.perf_counter() - start) / min(200, len(files)), 2),
        })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
