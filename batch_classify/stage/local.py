"""The inference stage in this process, without Ray: for work one machine does best (issue 28).

The same reading, decoding and model as the Ray Data stage (:mod:`batch_classify.stage.inference`:
:func:`~batch_classify.stage.inference.decode_batch` and :class:`~batch_classify.stage.inference.Classifier`), in
the same batches, with the same output check (:class:`~batch_classify.stage.output.StageOutput`: every
input path exactly once, the read circuit breaker, the progress lines)::

    records ─ batches of plan.batch_size ─▶ thread pool (plan.decode_threads): read + decode + preprocess
                                              │  at most AHEAD batches decoded ahead
                                              ▼
                                 this thread: Classifier (the engine's own intra-op threads) → on_batch

Reading and Pillow's decoding release the GIL, so the pool's threads decode the next batches while the
engine computes this one. What Ray would add on one machine without a GPU is its start-up (a local Ray
and Ray Data's helper actors: about 8.6 CPU-seconds, BENCHMARKS.md "Start-up"), which a short run
never wins back; :func:`batch_classify.stage.plan.choose_executor` says which runs come here.

Ctrl-C, SIGTERM and Prefect's cancellation arrive in this thread as exceptions: the batches handed to
``on_batch`` stay handed, the pool's queued batches are cancelled and the running ones are not waited for.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from batch_classify.stage.inference import Classifier, decode_batch
from batch_classify.models.registry import ModelSpec
from batch_classify.stage.plan import ClusterPlan
from batch_classify.models.preprocess import DEFAULT_MAX_PIXELS
from batch_classify.stage.ray_logs import PROGRESS_EVERY, LoggerLike, StageProgress
from batch_classify.stage.reading import ReadBreaker
from batch_classify.stage.output import StageOutput, StageResult
from batch_classify.storage import DEFAULT_READ_TIMEOUT, StorageOptions

log = logging.getLogger(__name__)

#: Batches decoded ahead of the model, per decoding thread: enough that the model never waits for a
#: batch while the pool works, few enough to bound memory (128 crops of 224² RGB are 19 MB).
AHEAD_PER_THREAD = 2


def run_local_stage(
    records: list[dict],
    *,
    spec: ModelSpec,
    weights: str | None,
    storage: StorageOptions,
    plan: ClusterPlan,
    on_batch: Callable[[dict[str, np.ndarray]], None],
    onnx_blob: bytes | None = None,
    compile: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    restricted_classes: tuple[int, ...] | None = None,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    logger: LoggerLike | None = None,
    progress_every: float = PROGRESS_EVERY,
) -> StageResult:
    """Classify ``records`` in this process and hand every output batch to ``on_batch``, in input order.

    Args:
        records: dicts with ``path`` and ``label``, and any columns carried to ``on_batch`` (``listed:…``: see
            :data:`batch_classify.stage.reading.CARRIED`); every dict has the same keys.
        plan: a local plan (:func:`batch_classify.stage.plan.plan_local`): its ``batch_size``, its
            ``threads_per_actor`` (the engine's intra-op threads) and ``decode_threads``.
        onnx_blob: the ONNX export for ``plan.runtime == "onnx"`` (exported here when None).
        others: as :func:`batch_classify.stage.inference.run_stage`.

    Returns:
        the counts and timings, as the Ray stage's.

    Raises:
        RuntimeError: the output does not hold every input path exactly once.
        EndpointUnreachable: the read circuit breaker tripped; the message names the endpoint.
        ModelError, ConfigError: the model could not be built.
    """
    start = time.perf_counter()
    preset = spec.preset
    progress = StageProgress(logger or log, total=len(records), every=progress_every, label="local stage")
    output = StageOutput(records, on_batch, progress, ReadBreaker(storage))
    size = plan.batch_size
    chunks = iter(range(0, len(records), size))
    threads = max(1, plan.decode_threads)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="batch-classify-decode")

    def submit() -> bool:
        begin = next(chunks, None)
        if begin is None:
            return False
        rows = records[begin : begin + size]
        batch = {key: np.array([r[key] for r in rows], dtype=object) for key in rows[0]}
        pending.append(pool.submit(decode_batch, batch, storage=storage, preset=preset, max_pixels=max_pixels,
                                   read_timeout=read_timeout))
        return True

    pending: deque[Future] = deque()
    try:
        for _ in range(threads * AHEAD_PER_THREAD):
            if not submit():
                break
        # Built while the first batches decode (the session's start: 0.2-0.5 s for Lite0 here).
        classifier = Classifier(
            spec=spec, weights=weights, storage=storage, device=plan.device, num_threads=plan.threads_per_actor,
            runtime=plan.runtime, compile=compile, onnx_blob=onnx_blob, restricted_classes=restricted_classes,
            max_pixels=max_pixels,
        )
        while pending:
            decoded = pending.popleft().result()
            submit()
            output.take(classifier(decoded))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    progress.finish()
    return output.result(plan, start)
