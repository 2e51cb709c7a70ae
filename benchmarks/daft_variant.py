"""The peer: the same classification written with Daft, as Daft's own image-classification benchmarks
write it, on the same engine and preprocessing as ``batch-classify run``.

A glob of the files (``daft.from_glob_path``), Daft's native download and decode (``download``,
``decode_image``, RGB), a class UDF (``@daft.cls``, one instance, set up once) whose batch method resizes
the shorter side and crops the centre with the model's preset (Pillow, the preset's filter, as our
decoding tasks do) and runs the same ONNX export through ONNX Runtime with one intra-op thread per core,
then ``write_parquet`` of path, top-1 class index and its probability. Daft's native runner (no Ray).

Not part of the product: a benchmark variant of ``benchmarks/compare.py`` (``--variants daft``). Needs
``pip install daft`` (0.7.26 measured); the ONNX export comes from the cache ``batch-classify run``
fills (``default_cache_dir()/onnx``) or is made here.

Usage: ``python -m benchmarks.daft_variant INPUT_DIR OUTPUT_DIR [--model NAME] [--batch-size N]``

Prints, last, one JSON line: images, seconds, top-1 against the wnid folder names.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    start = time.perf_counter()

    import daft
    import numpy as np
    from daft import DataType, col
    from daft.functions import decode_image, download

    from batch_classify.stage.engines import onnx_model
    from batch_classify.models.registry import get_spec
    from batch_classify.settings import default_cache_dir
    from batch_classify.storage import StorageOptions

    spec = get_spec(args.model)
    preset = spec.preset
    blob = onnx_model(spec, None, StorageOptions(), cache_dir=default_cache_dir())

    @daft.cls(max_concurrency=1)
    class Classifier:
        def __init__(self) -> None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = os.cpu_count() or 1
            self.session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
            self.input = self.session.get_inputs()[0].name

        @daft.method.batch(return_dtype=DataType.struct({"pred_index": DataType.int64(), "confidence": DataType.float32()}),
                           batch_size=args.batch_size)
        def __call__(self, images):
            from PIL import Image

            batch = np.stack([preset.resize_crop(Image.fromarray(a)) for a in images.to_pylist()])
            logits = self.session.run(None, {self.input: batch})[0]
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = shifted / shifted.sum(axis=1, keepdims=True)
            top = probs.argmax(axis=1)
            return [{"pred_index": int(i), "confidence": float(probs[k, i])} for k, i in enumerate(top)]

    df = daft.from_glob_path(f"{args.input.rstrip('/')}/**/*.JPEG")
    df = df.with_column("image", decode_image(download(col("path")), mode="RGB"))
    df = df.with_column("top1", Classifier()(col("image")))
    df = df.select("path", col("top1")["pred_index"].alias("pred_index"), col("top1")["confidence"].alias("confidence"))
    df.write_parquet(args.output)
    seconds = time.perf_counter() - start

    import pyarrow.parquet as pq

    table = pq.read_table(args.output)
    from batch_classify.models.vocabulary import imagenet

    index = {wnid: i for i, wnid in enumerate(imagenet().wnids)}
    wnids = [Path(p).parent.name for p in table.column("path").to_pylist()]
    preds = table.column("pred_index").to_pylist()
    top1 = sum(index.get(w) == p for w, p in zip(wnids, preds, strict=True)) / max(1, len(preds))
    print(json.dumps({"images": table.num_rows, "seconds": round(seconds, 2), "top1": top1}))


if __name__ == "__main__":
    main()
