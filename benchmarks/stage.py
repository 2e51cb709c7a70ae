"""The Ray Data inference stage alone, over a grid of plans (runtime, batch size, actors × threads).

Starts one local Ray, exports the model once, then runs ``run_stage`` for each plan given,
in order, after one warm-up run. Prints, per plan: total seconds, images/s, seconds to the
first output batch (actor start-up) and the steady-state images/s after it.

Usage: ``python -m benchmarks.stage INPUT_DIR onnx:64:1:2 onnx:32:1:2 torch:64:1:2``
(each plan is ``runtime:batch_size:actors:threads``).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("plans", nargs="+")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import ray

    from batch_classify.engines import onnx_model
    from batch_classify.inference import ClusterPlan, run_stage
    from batch_classify.storage import StorageOptions

    records = [{"path": str(p), "label": None} for p in sorted(Path(args.input).rglob("*.JPEG"))]
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
    storage = StorageOptions()
    blob = onnx_model(args.model, None, storage)
    plans = [args.plans[0], *[p for p in args.plans for _ in range(args.repeats)]]
    for i, text in enumerate(plans):
        runtime, batch, actors, threads = text.split(":")
        plan = ClusterPlan("cpu", int(actors), 0.0, int(threads), runtime, int(batch))
        r = run_stage(
            records, model_name=args.model, weights=None, storage=storage, plan=plan, on_batch=lambda b: None,
            onnx_blob=blob if runtime == "onnx" else None,
        )
        label = "warm-up" if i == 0 else text
        print(
            f"{label}: {r.wall_seconds:.2f} s, {len(records) / r.wall_seconds:.1f} images/s, "
            f"first batch {r.first_batch_seconds:.2f} s, steady {r.steady_images_per_second:.1f} images/s",
            flush=True,
        )


if __name__ == "__main__":
    main()
