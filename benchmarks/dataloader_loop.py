"""A plain PyTorch ``DataLoader`` loop, as a user without Ray would write it.

One process: a ``Dataset`` that opens each file with Pillow and applies the model's
eval transform (``Resize``, ``CenterCrop``, ``ToTensor``, ``Normalize``), a
``DataLoader`` with one worker per core, the eager model under ``torch.inference_mode``,
and the predictions written to one Parquet file with pyarrow.

Usage: ``python -m benchmarks.dataloader_loop INPUT_DIR OUTPUT_FILE [--model NAME]``
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    start = time.perf_counter()

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    from batch_classify.models.registry import get_spec, load_model
    from batch_classify.storage import StorageOptions

    spec = get_spec(args.model)
    preset = spec.preset
    transform = transforms.Compose(
        [
            transforms.Resize(preset.resize_size, interpolation=transforms.InterpolationMode(preset.interpolation)),
            transforms.CenterCrop(preset.crop_size),
            transforms.ToTensor(),
            transforms.Normalize(preset.mean, preset.std),
        ]
    )
    paths = sorted(str(p) for p in Path(args.input).rglob("*") if p.suffix.lower() in {".jpeg", ".jpg", ".png"})

    class Files(Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int):
            with Image.open(paths[i]) as img:
                return transform(img.convert("RGB")), i

    model = load_model(spec, args.weights, StorageOptions())
    indices, preds = [], []
    with torch.inference_mode():
        for x, idx in DataLoader(Files(), batch_size=args.batch_size, num_workers=args.workers):
            preds.append(model(x).argmax(1))
            indices.append(idx)
    pred = torch.cat(preds).numpy()
    order = torch.cat(indices).numpy()
    pq.write_table(pa.table({"path": [paths[i] for i in order], "pred_index": pred}), args.output)
    print(f"dataloader loop: {len(paths)} images in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
