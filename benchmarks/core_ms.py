"""Where a steady-state image's core-milliseconds go (issue 28 item 2): each step of the stage timed alone,
in one process, on the shared photos, as the stage runs it.

Steps, per image (milliseconds of one core; the model's are its batch's wall time × the threads it uses,
divided by the batch):

- ``read``: the file's bytes (``storage.read_bytes``, page cache warm);
- ``decode``: ``ClassificationPreset.decode`` (Pillow, EXIF, the reduced-size JPEG draft);
- ``resize_crop``: ``ClassificationPreset.resize_crop``;
- ``model``: ONNX Runtime on the export the stage uses, uint8 batches of ``--batch-size``, ``--threads``
  intra-op threads (the stage's model actor on this machine: 2);
- ``scores``: ``scores.scores`` (softmax top-5, entropy) on those logits;
- ``write``: one staged Parquet file of the batch's rows (``results``' schema is not used: path, top-5
  classes and probabilities, the same columns' sizes).

Usage: ``python -m benchmarks.core_ms [--images 500] [--batch-size 128] [--threads 2] [--repeats 3]``

Prints a table (median of ``--repeats`` passes) and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np

from benchmarks.common import SHARED


def _timed(fn, items) -> tuple[float, list]:
    start = time.perf_counter()
    out = [fn(x) for x in items]
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import onnxruntime as ort
    import pyarrow as pa
    import pyarrow.parquet as pq

    from batch_classify.stage.engines import onnx_model
    from batch_classify.models.registry import get_spec
    from batch_classify.stage.scores import scores
    from batch_classify.settings import default_cache_dir
    from batch_classify.storage import StorageOptions, read_bytes

    storage = StorageOptions()
    preset = get_spec(args.model).preset
    paths = [str(p) for p in sorted(SHARED.glob("*.JPEG"))[: args.images]]
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(onnx_model(get_spec(args.model), None, storage, cache_dir=default_cache_dir()), options,
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    per_pass: dict[str, list[float]] = {k: [] for k in ("read", "decode", "resize_crop", "model", "scores", "write")}
    n = len(paths)
    for _ in range(args.repeats):
        t, data = _timed(lambda p: read_bytes(p, storage), paths)
        per_pass["read"].append(t)
        t, pictures = _timed(preset.decode, data)
        per_pass["decode"].append(t)
        t, arrays = _timed(preset.resize_crop, pictures)
        per_pass["resize_crop"].append(t)
        batches = [np.stack(arrays[i:i + args.batch_size]) for i in range(0, n, args.batch_size)]
        session.run(None, {name: batches[0]})  # warm: the first call plans the graph
        start = time.perf_counter()
        logits = [session.run(None, {name: b})[0] for b in batches]
        per_pass["model"].append((time.perf_counter() - start) * args.threads)
        t, rows = _timed(scores, logits)
        per_pass["scores"].append(t)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            for k, (b, s) in enumerate(zip(batches, rows, strict=True)):
                table = pa.table({
                    "path": paths[k * args.batch_size: k * args.batch_size + len(b)],
                    "top5_prob": pa.array(list(s["top5_prob"])), "top5_index": pa.array(list(s["top5_index"])),
                    "entropy": s["entropy"],
                })
                pq.write_table(table, f"{folder}/part-{k:05d}.parquet")
            per_pass["write"].append(time.perf_counter() - start)
    ms = {k: 1000 * statistics.median(v) / n for k, v in per_pass.items()}
    total = sum(ms.values())
    print(f"{n} photos, {args.model}, batch {args.batch_size}, model on {args.threads} threads; "
          f"median of {args.repeats} passes; core-ms per image")
    print("| step | core-ms per image | share |\n|---|---|---|")
    for k, v in ms.items():
        print(f"| {k} | {v:.2f} | {v / total:.0%} |")
    print(f"| all | {total:.2f} | 100% |  (at most {1000 * (os.cpu_count() or 1) / total:.0f} images/s on "
          f"{os.cpu_count()} cores, nothing else running)")
    print(json.dumps({"images": n, "batch_size": args.batch_size, "threads": args.threads, "core_ms": ms}))


if __name__ == "__main__":
    main()
