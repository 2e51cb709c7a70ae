"""``batch-classify`` with its inference stage in the CLI's own process, without Ray: a what-if for
:mod:`benchmarks.startup_floor`, not a product path.

It runs the product's console script (:func:`batch_classify.launch.entry`) with two replacements: no
local Ray is started ahead of the flow (:func:`batch_classify.startup.start_ray_ahead`), and the
inference step's Ray Data stage (``batch_classify.steps._run_ray_stage``) becomes a loop, in this
process, over batches of the same :func:`~batch_classify.inference.decode_batch` and
:class:`~batch_classify.inference.Classifier` that Ray Data runs. Listing, validation, reuse, the
commit and the report are the product's own. The thread that prepares the model still imports Ray Data
(:func:`batch_classify.startup.prepare_model`), so this overstates such a run's cost a little.

Usage: ``python -m benchmarks.without_ray run -i INPUT -o OUTPUT …`` (the options of ``batch-classify run``).
"""

from __future__ import annotations

import os
import sys
import time


def _stage_in_process(settings, storage, todo, on_batch, label_classes, *, spec, logger=None):
    """``steps._run_ray_stage``'s signature and result, one batch after another in this process."""
    import numpy as np

    from batch_classify.engines import onnx_model
    from batch_classify.inference import Classifier, StageResult, decode_batch
    from batch_classify.plan import plan_cluster

    start = time.perf_counter()
    cpus = float(settings.num_cpus or os.cpu_count() or 1)  # what a local Ray would have
    plan = plan_cluster({"CPU": cpus}, device="cpu", num_actors=1, runtime=settings.runtime,
                        batch_size=settings.batch_size, onnx_only=spec.onnx_only, decode="cpu", preset=spec.preset)
    blob = onnx_model(settings.model, settings.weights, storage, cache_dir=settings.cache_dir) if plan.runtime == "onnx" else None
    classifier = Classifier(model_name=settings.model, weights=settings.weights, storage=storage, device="cpu",
                            num_threads=int(cpus), runtime=plan.runtime, onnx_blob=blob,
                            restricted_classes=tuple(label_classes) if label_classes else None)
    n_failed = 0
    for i in range(0, len(todo), plan.batch_size):
        rows = todo[i:i + plan.batch_size]
        batch = {"path": np.array([r["path"] for r in rows], dtype=object),
                 "label": np.array([r["label"] for r in rows], dtype=object)}
        out = classifier(decode_batch(batch, storage=storage, preset=spec.preset, max_pixels=settings.max_image_pixels,
                                      read_timeout=settings.read_timeout))
        n_failed += int(np.count_nonzero(out["error"] != ""))
        on_batch(out)
    return StageResult(n_input=len(todo), n_predicted=len(todo) - n_failed, n_failed=n_failed,
                       wall_seconds=time.perf_counter() - start, plan=plan)


def main() -> None:
    from batch_classify import launch, startup, steps

    startup.start_ray_ahead = lambda settings: None
    steps._run_ray_stage = _stage_in_process
    sys.argv[0] = "batch-classify"
    launch.entry()


if __name__ == "__main__":
    main()
