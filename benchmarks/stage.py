"""The Ray Data inference stage alone, over a grid of plans (runtime, batch size, actors × threads).

Starts one local Ray, exports the model once, then runs ``run_stage`` for each plan given,
in order, after one warm-up run. Prints, per plan: total seconds, images/s, seconds to the
first output batch (actor start-up) and the steady-state images/s after it.

Usage: ``python -m benchmarks.stage INPUT_DIR onnx:64:1:2 onnx:32:1:2 torch:64:1:2``
(each plan is ``runtime:batch_size:actors:threads[:decode]``, decode ``cpu`` (the default: Pillow in
decoding tasks) or ``device`` (the model actors decode with ``decode_jpeg`` on their device)). Runtime ``torch-cuda`` asks for GPU actors, as
``plan_cluster`` lays them out on a GPU cluster (one GPU and no CPU reserved per actor), e.g.
``torch-cuda:128:1:1``. ``--random-weights`` times models whose weights are not on this machine;
``--json FILE`` also writes the timed (not warm-up) runs there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from batch_classify.models.registry import get_spec
from pathlib import Path


def parse_plan(text: str):
    """``runtime:batch_size:actors:threads[:decode]`` → ``ClusterPlan`` (runtime ``torch-cuda``: GPU actors)."""
    from batch_classify.stage.plan import ClusterPlan

    runtime, batch, actors, threads, *rest = text.split(":")
    decode = rest[0] if rest else "cpu"
    if runtime == "torch-cuda":
        gpus = min(1.0, 1 / int(actors))  # several actors share the one GPU, as plan_cluster does
        return ClusterPlan(
            "cuda", int(actors), gpus, int(threads), "torch", int(batch), cpus_per_actor=0.0, decode=decode
        )
    # The actors share what decoding leaves of the CPUs, as plan_cluster lays them out.
    actor_cpus = min(1.0, max(0.1, ((os.cpu_count() or 2) - 1) / int(actors)))
    return ClusterPlan("cpu", int(actors), 0.0, int(threads), runtime, int(batch), decode=decode, cpus_per_actor=actor_cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("plans", nargs="+")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--random-weights", action="store_true", help="random weights (timing only)")
    parser.add_argument("--workdir", default="/tmp/batch-classify-bench", help="where random weights are saved")
    parser.add_argument("--json", help="also write the timed runs to this file (a JSON list)")
    args = parser.parse_args()

    import ray

    from batch_classify.stage.engines import onnx_model
    from batch_classify.stage.inference import run_stage
    from batch_classify.storage import StorageOptions

    if args.random_weights and not args.weights:
        from benchmarks.common import random_weights

        args.weights = random_weights(Path(args.workdir), args.model)
    records = [{"path": str(p), "label": None} for p in sorted(Path(args.input).rglob("*.JPEG"))]
    parsed = {text: parse_plan(text) for text in args.plans}
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
    if any(p.device == "cuda" for p in parsed.values()) and not ray.cluster_resources().get("GPU"):
        raise SystemExit(f"a torch-cuda plan was asked for, but Ray sees no GPU: {ray.cluster_resources()}")
    storage = StorageOptions()
    blob = onnx_model(get_spec(args.model), args.weights, storage) if any(p.runtime == "onnx" for p in parsed.values()) else None
    plans = [args.plans[0], *[p for p in args.plans for _ in range(args.repeats)]]
    timed = []
    for i, text in enumerate(plans):
        plan = parsed[text]
        started_at = time.time()
        r = run_stage(
            records, spec=get_spec(args.model), weights=args.weights, storage=storage, plan=plan, on_batch=lambda b: None,
            onnx_blob=blob if plan.runtime == "onnx" else None,
        )
        label = "warm-up" if i == 0 else text
        print(
            f"{label}: {r.wall_seconds:.2f} s, {len(records) / r.wall_seconds:.1f} images/s, "
            f"first batch {r.first_batch_seconds:.2f} s, steady {r.steady_images_per_second:.1f} images/s",
            flush=True,
        )
        if i:
            timed.append({
                "model": args.model, "plan": text, "images": len(records), "failed": r.n_failed,
                "seconds": round(r.wall_seconds, 3), "images_per_second": round(len(records) / r.wall_seconds, 1),
                "first_batch_seconds": round(r.first_batch_seconds, 3),
                "steady_images_per_second": round(r.steady_images_per_second, 1),
                "started_at": round(started_at, 2), "ended_at": round(time.time(), 2),  # epoch s: GPU samples' window
            })
    if args.json:
        Path(args.json).write_text(json.dumps(timed, indent=1))


if __name__ == "__main__":
    main()
