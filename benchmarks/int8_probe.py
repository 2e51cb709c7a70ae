"""A probe for issue 28's int8 candidate: the stage's ONNX export quantized statically (ONNX Runtime's
``quantize_static``, QDQ format, calibrated on photos), against float32: model-alone speed and top-1.

Not a product path yet: it measures whether ``--precision int8`` is worth building. Calibration uses the
first ``--calibrate`` shared photos; top-1 is read on all 500 shared photos (one per even ImageNet class)
and on those not used for calibration.

Usage: ``python -m benchmarks.int8_probe [--calibrate 100] [--threads 2] [--batch-size 128]``

Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import SHARED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--calibrate", type=int, default=100)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--per-channel", action="store_true")
    parser.add_argument("--exclude-ends", action="store_true", help="keep the first convolution and the classifier in float32")
    args = parser.parse_args()

    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from batch_classify.stage.engines import onnx_model
    from batch_classify.models.registry import get_spec
    from batch_classify.settings import default_cache_dir
    from batch_classify.storage import StorageOptions
    from batch_classify.models.vocabulary import imagenet

    storage = StorageOptions()
    preset = get_spec(args.model).preset
    photos = sorted(SHARED.glob("*.JPEG"))
    images = np.stack([preset(p.read_bytes()) for p in photos])  # uint8 [N, crop, crop, 3]
    index = {w: i for i, w in enumerate(imagenet().wnids)}
    truth = np.array([index[p.name.split("_", 1)[0]] for p in photos])
    blob = onnx_model(get_spec(args.model), None, storage, cache_dir=default_cache_dir())

    class Reader(CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self.batches = iter([{name: images[i:i + 16]} for i in range(0, args.calibrate, 16)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as folder:
        fp32, pre, int8 = Path(folder) / "fp32.onnx", Path(folder) / "pre.onnx", Path(folder) / "int8.onnx"
        fp32.write_bytes(blob)
        quant_pre_process(str(fp32), str(pre))
        name = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()[0].name
        excluded = []
        if args.exclude_ends:
            import onnx

            nodes = onnx.load(str(pre)).graph.node
            convs = [n.name for n in nodes if n.op_type == "Conv"]
            heads = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
            excluded = convs[:1] + heads[-1:]
        started = time.perf_counter()
        quantize_static(str(pre), str(int8), Reader(name), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=args.per_channel, nodes_to_exclude=excluded)
        quantize_seconds = time.perf_counter() - started
        results = {}
        for label, path in (("float32", fp32), ("int8", int8)):
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            batches = [images[i:i + args.batch_size] for i in range(0, len(images), args.batch_size)]
            session.run(None, {name: batches[0]})
            rates, preds = [], None
            for _ in range(args.repeats):
                start = time.perf_counter()
                logits = np.concatenate([session.run(None, {name: b})[0] for b in batches])
                rates.append(len(images) / (time.perf_counter() - start))
                preds = logits.argmax(axis=1)
            held_out = slice(args.calibrate, None)
            results[label] = {"images_per_second": float(np.median(rates)), "top1": float((preds == truth).mean()),
                              "top1_held_out": float((preds[held_out] == truth[held_out]).mean()), "preds": preds}
    agree = float((results["float32"]["preds"] == results["int8"]["preds"]).mean())
    print(f"{len(images)} shared photos, {args.model}, batch {args.batch_size}, {args.threads} threads, "
          f"calibrated on the first {args.calibrate} (per-channel: {args.per_channel}; kept in float32: {excluded or 'none'}); quantizing took {quantize_seconds:.1f} s")
    print(f"| precision | model alone, images/s | top-1 ({len(images)} photos) | top-1 ({len(images) - args.calibrate} not calibrated on) |"
          "\n|---|---|---|---|")
    for label in ("float32", "int8"):
        r = results[label]
        print(f"| {label} | {r['images_per_second']:.1f} | {r['top1']:.3f} | {r['top1_held_out']:.3f} |")
    print(f"int8 and float32 agree on {agree:.1%} of the top-1 classes")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "preds"} for k, v in results.items()} | {"agree": agree}))


if __name__ == "__main__":
    main()
