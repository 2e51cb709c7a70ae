"""The local executor's stage alone (:func:`batch_classify.stage.local.run_local_stage`), in this process, over
``--images`` files (copies of the shared photos), for each configuration given: precision, model threads,
decoding threads, batch size. What chose ``plan.LOCAL_BATCH_SIZE`` and ``plan.CORES_PER_DECODE_THREAD``.

Usage: ``python -m benchmarks.local_stage [--images 1000] float32:2:1:64 int8:2:1:64 int8:2:2:32 …``

Each configuration prints the stage's seconds (the model's session built included), its first batch and
its steady state (images/s). The int8 model is quantized (or loaded from the cache) before any timing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="PRECISION:MODEL_THREADS:DECODE_THREADS:BATCH_SIZE")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--workdir", default="/tmp/batch-classify-bench")
    args = parser.parse_args()

    from batch_classify.stage.engines import onnx_model
    from batch_classify.stage.local import run_local_stage
    from batch_classify.models.registry import get_spec
    from batch_classify.stage.plan import plan_local
    from batch_classify.stage.quantize import int8_model
    from batch_classify.settings import default_cache_dir
    from batch_classify.storage import StorageOptions
    from benchmarks.common import prepare_input

    storage = StorageOptions()
    root = prepare_input(Path(args.workdir), args.images)
    paths = sorted(str(p) for p in root.rglob("*.JPEG"))
    records = [{"path": p, "label": None} for p in paths]
    blob = onnx_model(get_spec(args.model), None, storage, cache_dir=default_cache_dir())
    blobs = {"float32": blob}
    if any(c.startswith("int8") for c in args.configs):
        blobs["int8"] = int8_model(blob, paths=paths, preset=get_spec(args.model).preset, storage=storage,
                                   cache_dir=default_cache_dir()).blob
    print(f"{len(paths)} files, {args.model}, {os.cpu_count()} cores")
    print("| precision | model threads | decoding threads | batch | stage s | first batch s | steady images/s |\n|---|---|---|---|---|---|---|")
    for config in args.configs:
        precision, threads, decoders, batch = config.split(":")
        plan = dataclasses.replace(plan_local(int(threads)), decode_threads=int(decoders), batch_size=int(batch))
        started = time.perf_counter()
        result = run_local_stage(records, spec=get_spec(args.model), weights=None, storage=storage, plan=plan,
                                 on_batch=lambda batch: None, onnx_blob=blobs[precision])
        print(f"| {precision} | {threads} | {decoders} | {batch} | {time.perf_counter() - started:.2f} | "
              f"{result.first_batch_seconds:.2f} | {result.steady_images_per_second:.0f} |", flush=True)


if __name__ == "__main__":
    main()
