"""The inference stage on Ray Data: read → decode + preprocess → model actor pool → top-5.

Shape of the pipeline (streamed; no stage holds the whole dataset)::

    from_items(path, label)                       # the listing, no pixels
      .map_batches(decode_batch)                  # CPU tasks: bytes → uint8 [N, H, W, 3]
      .map_batches(Classifier, compute=actors)    # 4 actors per GPU (num_gpus=0.25), else CPU actors
      → driver: rows streamed into staging Parquet files

Per-image failures (unreadable, undecodable) and per-batch inference failures
are carried as rows with ``error`` set, never dropped: every listed image comes
out exactly once, predicted or failed.

Every image read has a deadline (``read_timeout``): a read that takes longer is that image's
read failure, never a hang. Storage that cannot be reached at all is not retried image by image:
after ``UNREACHABLE_READS_TO_TRIP`` consecutive reads that failed to connect or timed out, the
stage stops with :class:`EndpointUnreachable` (a circuit breaker).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from fsspec.asyn import AsyncFileSystem, sync

from batch_classify.errors import BatchClassifyError, ConfigError
from batch_classify.engines import build_engine, onnx_cuda_available, onnx_model, resolve_runtime
from batch_classify.models import ModelSpec, get_spec
from batch_classify.preprocess import DEFAULT_MAX_PIXELS, ClassificationPreset, DecodeError
from batch_classify.storage import (
    DEFAULT_READ_TIMEOUT,
    READ_CONCURRENCY,
    StorageOptions,
    describe_endpoint,
    filesystem,
    is_connection_error,
)

log = logging.getLogger(__name__)

TOP_K = 5

#: Consecutive image reads that failed to connect or timed out after which the stage stops
#: (:class:`EndpointUnreachable`). 20: twice the reads one S3 reading task has in flight at once
#: (``READ_CONCURRENCY``), so one burst of dropped pooled connections does not trip it, and well
#: under one batch (64 on the CPU, 256 on a GPU), so a dead endpoint stops the stage at its first
#: output batch instead of failing every image in turn (285 s for 400 images before).
UNREACHABLE_READS_TO_TRIP = 20


class ReadTimedOut(BatchClassifyError, TimeoutError):
    """An image read that did not finish within the read timeout; it was abandoned.

    Attributes:
        seconds: the read timeout, seconds.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the read took longer than the read timeout of {seconds:g} s (--read-timeout); abandoned")
        self.seconds = seconds


class ReadSkipped(BatchClassifyError, ConnectionError):
    """An image not read because the ``UNREACHABLE_READS_TO_TRIP`` reads before it in its batch
    failed to connect or timed out: the storage is down, and trying each remaining image would
    only repeat the wait."""

    def __init__(self, count: int, last: BaseException) -> None:
        super().__init__(f"not read: the {count} reads before it failed to connect or timed out (the last: "
                         f"{type(last).__name__}: {last})")


class _Streak:
    """Consecutive unreachable reads within one batch, in the order they end."""

    def __init__(self) -> None:
        self.count = 0
        self.last: BaseException | None = None

    def add(self, result: bytes | BaseException) -> None:
        if isinstance(result, BaseException) and _unreachable(result):
            self.count += 1
            self.last = result
        else:
            self.count = 0

    @property
    def tripped(self) -> bool:
        return self.count >= UNREACHABLE_READS_TO_TRIP

    def skipped(self) -> ReadSkipped:
        return ReadSkipped(self.count, self.last)


class EndpointUnreachable(BatchClassifyError, RuntimeError):
    """The storage the images are read from cannot be reached: ``UNREACHABLE_READS_TO_TRIP``
    consecutive reads failed to connect or timed out. The stage stopped; nothing was committed.

    Attributes:
        endpoint: the storage, named (``S3 endpoint http://host:port``, ``the file system holding …``).
    """

    def __init__(self, message: str, *, endpoint: str) -> None:
        super().__init__(message)
        self.endpoint = endpoint

    def __reduce__(self):  # picklable with its keyword argument (Ray, Prefect results)
        return (_endpoint_unreachable, (str(self), self.endpoint))


def _endpoint_unreachable(message: str, endpoint: str) -> EndpointUnreachable:
    return EndpointUnreachable(message, endpoint=endpoint)


class ReadBreaker:
    """The circuit breaker over image reads: counts consecutive rows whose read could not reach
    the storage (``unreachable`` set by :func:`decode_batch`), in the order the rows are seen. Any
    other row resets the count: an image read, or a read answered with an error about that one
    file (missing, access denied), or a decode or inference failure (the read worked).

    Args:
        storage: names the endpoint in the error.
        trip_after: consecutive unreachable reads that trip it.
    """

    def __init__(self, storage: StorageOptions, trip_after: int = UNREACHABLE_READS_TO_TRIP) -> None:
        self.storage, self.trip_after = storage, trip_after
        self.consecutive = 0

    def observe(self, batch: dict[str, np.ndarray]) -> None:
        """Count the rows of one output batch.

        Raises:
            EndpointUnreachable: the count reached ``trip_after``; the message names the endpoint,
                the count and the last error.
        """
        flags = batch.get("unreachable")
        if flags is None:
            return
        for i, flag in enumerate(flags):
            if not flag:
                self.consecutive = 0
                continue
            self.consecutive += 1
            if self.consecutive >= self.trip_after:
                path = str(batch["path"][i])
                endpoint = describe_endpoint(path, self.storage)
                raise EndpointUnreachable(
                    f"{endpoint} is unreachable: {self.consecutive} consecutive image reads failed to connect or "
                    f"timed out (the last: {path}: {batch['error'][i]}); the stage stopped",
                    endpoint=endpoint,
                )


def decode_batch(
    batch: dict[str, np.ndarray],
    *,
    storage: StorageOptions,
    model_name: str | None = None,
    preset: ClassificationPreset | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
) -> dict[str, np.ndarray]:
    """Read and preprocess a batch of images.

    Args:
        batch: ``path`` (object [N]) and ``label`` (object [N]).
        model_name: registry name or model folder, for its preprocessing (``preset`` given: unused).
        preset: the preprocessing; default: ``model_name``'s, resolved here (a folder is read each call).
        max_pixels: images with more pixels are recorded as decode failures, undecoded.
        read_timeout: seconds each image's read may take (see :func:`read_many`).

    Returns:
        ``path``, ``label``, ``image`` uint8 [N, crop, crop, 3] (zeros where failed),
        ``stage`` and ``error`` object [N] (``""`` where the image is fine), ``unreachable`` bool [N]
        (the read failed to connect or timed out: what :class:`ReadBreaker` counts).
    """
    preset = preset or get_spec(model_name, storage).preset
    paths = [str(p) for p in batch["path"]]
    n, c = len(paths), preset.crop_size
    images = np.zeros((n, c, c, 3), dtype=np.uint8)
    stage = np.full(n, "", dtype=object)
    error = np.full(n, "", dtype=object)
    unreachable = np.zeros(n, dtype=bool)
    contents = read_many(paths, storage, read_timeout=read_timeout)
    for i, path in enumerate(paths):
        data = contents[path]
        if isinstance(data, BaseException):
            stage[i], error[i] = "read", f"{type(data).__name__}: {data}"
            unreachable[i] = _unreachable(data)
            continue
        try:
            images[i] = preset(data, max_pixels=max_pixels)
        except DecodeError as err:
            stage[i], error[i] = "decode", str(err)
        except Exception as err:  # noqa: BLE001 - any other decoder fault is this image's failure
            stage[i], error[i] = "decode", f"{type(err).__name__}: {err}"
    return {
        "path": np.asarray(paths, dtype=object), "label": batch["label"], "image": images, "stage": stage,
        "error": error, "unreachable": unreachable,
    }


def _unreachable(err: BaseException) -> bool:
    """A read that failed to connect or timed out (ours, botocore's, a socket's): it says nothing
    about the file, only that the storage did not answer."""
    from botocore.exceptions import ReadTimeoutError

    return isinstance(err, (TimeoutError, asyncio.TimeoutError, ReadTimeoutError)) or is_connection_error(err)


def read_many(
    paths: list[str], storage: StorageOptions, *, read_timeout: float = DEFAULT_READ_TIMEOUT
) -> dict[str, bytes | BaseException]:
    """Read several files, each path taken literally (``photo [1].jpg`` is no glob pattern).

    Each read gets ``read_timeout`` seconds from its first request to its last byte, retries
    included; a read that takes longer becomes :class:`ReadTimedOut`, never a hang. Once
    ``UNREACHABLE_READS_TO_TRIP`` reads in a row (in the order they end) failed to connect or timed
    out, the files not yet started are not tried: each gets :class:`ReadSkipped`.

    - S3 (any async fsspec filesystem): ``READ_CONCURRENCY`` whole-file GETs in flight at once, each
      under an asyncio deadline that cancels its request, on a client with matching botocore
      timeouts (:func:`batch_classify.storage.filesystem`); the batch as a whole also has a deadline
      (``read_timeout`` × its rounds of ``READ_CONCURRENCY``, plus one).
    - Local files: read one after the other in a daemon thread. A read that blocks in the kernel (a
      hung NFS server) cannot be interrupted: past the deadline its thread is abandoned (it ends
      when the read returns, if ever) and the rest are read in a new thread.

    Returns:
        path → bytes, or the exception that reading it raised (:class:`ReadTimedOut` past the deadline).
    """
    if not paths:
        return {}
    fs, _ = filesystem(paths[0], storage, read_timeout=read_timeout)
    stripped = [fs._strip_protocol(p) for p in paths]
    if isinstance(fs, AsyncFileSystem):
        got = _read_async(fs, stripped, read_timeout)
    else:
        got = _read_in_thread(fs, stripped, read_timeout)
    return dict(zip(paths, got, strict=True))


def _read_async(fs: AsyncFileSystem, paths: list[str], timeout: float) -> list[bytes | BaseException]:
    # One GET per file: s3fs otherwise asks for the size first (a HEAD) to split large files.
    extra = {"max_concurrency": 1} if "max_concurrency" in inspect.signature(fs._cat_file).parameters else {}

    streak = _Streak()

    async def one(gate: asyncio.Semaphore, path: str) -> bytes | BaseException:
        async with gate:  # the deadline starts when the read does, not while it waits for a connection
            if streak.tripped:
                return streak.skipped()
            try:
                got = await asyncio.wait_for(fs._cat_file(path, **extra), timeout)
            except asyncio.TimeoutError:
                got = ReadTimedOut(timeout)
            except Exception as err:  # noqa: BLE001 - this file's failure, recorded
                got = err
            streak.add(got)
            return got

    async def gather() -> list[bytes | BaseException]:
        gate = asyncio.Semaphore(READ_CONCURRENCY)
        return await asyncio.gather(*(one(gate, p) for p in paths))

    rounds = math.ceil(len(paths) / READ_CONCURRENCY)
    try:
        return sync(fs.loop, gather, timeout=timeout * (rounds + 1))
    except Exception as err:  # noqa: BLE001 - the batch's deadline, or a failure of the whole call: each file's
        return [ReadTimedOut(timeout) if isinstance(err, TimeoutError | asyncio.TimeoutError) else err] * len(paths)


def _read_in_thread(fs, paths: list[str], timeout: float) -> list[bytes | BaseException]:
    results: list[bytes | BaseException | None] = [None] * len(paths)
    streak = _Streak()
    next_i = 0
    while next_i < len(paths) and not streak.tripped:
        done: queue.SimpleQueue = queue.SimpleQueue()
        abandoned = threading.Event()

        def work(first: int = next_i, done: queue.SimpleQueue = done, abandoned: threading.Event = abandoned) -> None:
            for i in range(first, len(paths)):
                if abandoned.is_set():
                    return
                try:
                    data: bytes | BaseException = fs.cat_file(paths[i])
                except Exception as err:  # noqa: BLE001 - this file's failure, recorded
                    data = err
                done.put((i, data))

        threading.Thread(target=work, name="batch-classify-read", daemon=True).start()
        while next_i < len(paths):
            try:
                i, data = done.get(timeout=timeout)  # the worker starts file next_i as it hands back the one before
            except queue.Empty:
                abandoned.set()
                log.warning("reading %s took longer than %g s; abandoned (its thread stays blocked)", paths[next_i], timeout)
                results[next_i] = ReadTimedOut(timeout)
                streak.add(results[next_i])
                next_i += 1
                break
            results[i] = data
            streak.add(data)
            next_i = i + 1
            if streak.tripped:
                abandoned.set()
                break
    for i in range(next_i, len(paths)):
        results[i] = streak.skipped()
    return results


class Classifier:
    """A model actor: builds its engine once in ``__init__``, classifies batches in ``__call__``.

    Args:
        model_name: registry name.
        weights: weights URI or None for the default location.
        storage: how to reach the weights.
        device: ``"cpu"`` or ``"cuda"``.
        num_threads: intra-op threads on the CPU.
        runtime: ``auto``, ``torch`` or ``onnx`` (see :mod:`batch_classify.engines`).
        compile: ``torch.compile`` the model (torch runtime only).
        onnx_blob: the driver's ONNX export, so that actors do not export again.
        restricted_classes: class indices present in the dataset's labels; each row then also
            gets ``restricted_index``, the argmax of the logits over these classes only (the
            Imagenette-style evaluation: a 10-class dataset scored among its own 10 classes).
    """

    def __init__(
        self,
        *,
        model_name: str,
        weights: str | None,
        storage: StorageOptions,
        device: str = "cpu",
        num_threads: int | None = None,
        runtime: str = "auto",
        compile: bool = False,
        onnx_blob: bytes | None = None,
        restricted_classes: tuple[int, ...] | None = None,
    ) -> None:
        self.spec: ModelSpec = get_spec(model_name, storage)
        self.restricted = np.asarray(sorted(restricted_classes), dtype=np.int64) if restricted_classes else None
        self.engine = build_engine(
            model_name,
            weights,
            storage,
            runtime=runtime,
            device=device,
            num_threads=num_threads,
            compile=compile,
            onnx_blob=onnx_blob,
        )

    def logits(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] → float32 logits [N, num_classes]."""
        return self.engine(images)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Classify the rows that decoded.

        Returns:
            ``path``, ``label``, ``stage``, ``error`` as given (``stage="infer"`` on a model failure),
            ``pred_index`` int64 [N], ``confidence`` float32 [N], ``top5_index`` int64 [N, 5]
            (fewer classes than 5: -1 in the missing places), ``top5_prob`` float32 [N, 5],
            ``entropy`` float32 [N] (of the softmax over all classes, nats), ``restricted_index``
            int64 [N] (-1 without ``restricted_classes``); -1 / 0 where the row failed;
            ``unreachable`` as given (all False when absent).
        """
        import torch

        n = len(batch["path"])
        stage = np.array(batch["stage"], dtype=object)
        error = np.array(batch["error"], dtype=object)
        top_idx = np.full((n, TOP_K), -1, dtype=np.int64)
        top_prob = np.zeros((n, TOP_K), dtype=np.float32)
        restricted = np.full(n, -1, dtype=np.int64)
        entropy = np.zeros(n, dtype=np.float32)
        ok = np.flatnonzero(error == "")
        if len(ok):
            try:
                logits = self.logits(batch["image"][ok])
                if logits.ndim != 2 or logits.shape[1] != self.spec.num_classes:
                    raise RuntimeError(f"model returned logits of shape {tuple(logits.shape)}")
                probs = torch.softmax(torch.from_numpy(logits), dim=1)
                k = min(TOP_K, probs.shape[1])
                p, i = probs.topk(k, dim=1)
                top_idx[ok, :k], top_prob[ok, :k] = i.numpy(), p.numpy()
                entropy[ok] = torch.special.entr(probs).sum(dim=1).numpy()
                if self.restricted is not None:
                    restricted[ok] = self.restricted[logits[:, self.restricted].argmax(axis=1)]
            except Exception as err:  # noqa: BLE001 - recorded per row, the batch is not lost
                stage[ok], error[ok] = "infer", f"{type(err).__name__}: {err}"
        return {
            "path": batch["path"],
            "label": batch["label"],
            "stage": stage,
            "error": error,
            "pred_index": top_idx[:, 0].copy(),
            "confidence": top_prob[:, 0].copy(),
            "top5_index": top_idx,
            "top5_prob": top_prob,
            "entropy": entropy,
            "restricted_index": restricted,
            "unreachable": np.asarray(batch.get("unreachable", np.zeros(n, dtype=bool)), dtype=bool),
        }


#: Default images per pipeline batch. CPU: measured on the 2-core development machine,
#: EfficientNet-Lite0, 3,000 files (benchmarks/stage.py): 175 images/s with batches of 32,
#: 195 of 64, 201-205 of 128, 198 of 256 (fewer, larger Ray tasks; the engines still call the
#: model 8 images at a time); 64 keeps most of the gain with half the latency to the first
#: batch. GPU: measured on one H200 with 16 CPUs, ResNet-152, 12,000 files (benchmarks/gpu_check.sh,
#: BENCHMARKS.md): stage steady state 1,793 images/s with 1 actor × batch 128, 3,237 with
#: 4 × 128, 3,559 with 4 × 256, 3,681 with 8 × 128, 3,744 with 8 × 256 (model alone 5,723).
CPU_BATCH_SIZE = 64
GPU_BATCH_SIZE = 256
#: Model actors per GPU (each reserves ``1 / ACTORS_PER_GPU`` of it). One actor leaves the GPU
#: idle while it fetches a batch, copies it in and hands results back; four overlap that work
#: (figures above: 1.8× one actor; eight add 3-5 % for twice the CUDA contexts and start-up).
ACTORS_PER_GPU = 4


#: Memory one image takes while it is decoded, bytes: the file plus a decoded picture of about
#: 1 megapixel RGB (ImageNet photos average 0.2; larger JPEGs are decoded at reduced DCT scale).
DECODE_MEMORY_PER_IMAGE = 4 * 2**20


@dataclass(frozen=True)
class ClusterPlan:
    """How the actor pool is laid out on the cluster.

    Attributes:
        device: ``"cuda"`` or ``"cpu"``.
        num_actors: model actors in the pool.
        num_gpus_per_actor: 1 on GPU (a fraction when there are more actors than GPUs), 0 on CPU.
        threads_per_actor: intra-op threads per CPU actor.
        runtime: ``"torch"`` or ``"onnx"`` (resolved, never ``auto``).
        batch_size: images per pipeline batch.
        cpus_per_actor: Ray CPUs each model actor reserves (0 on GPU).
        cpus_per_decode_task: Ray CPUs each decoding task reserves.
    """

    device: str
    num_actors: int
    num_gpus_per_actor: float
    threads_per_actor: int
    runtime: str = "torch"
    batch_size: int = CPU_BATCH_SIZE
    cpus_per_actor: float = 1.0
    cpus_per_decode_task: float = 1.0


def plan_cluster(
    resources: dict[str, float],
    *,
    device: str = "auto",
    num_actors: int | None = None,
    runtime: str = "auto",
    batch_size: int | None = None,
    onnx_only: bool = False,
) -> ClusterPlan:
    """Choose device, runtime, batch size and pool size from the cluster's resources.

    Args:
        resources: ``ray.cluster_resources()``.

    GPU: ``ACTORS_PER_GPU`` (4) actors per GPU, ``num_gpus=0.25`` each, PyTorch, batch 256. CPU: one actor per
    4 CPUs (at least 1), each with the CPUs it shares as intra-op threads, since decoding
    takes less CPU than the model; ONNX Runtime, batch 64. The actors' CPU reservations
    always leave room for a decoding task (1 CPU, or half of a 1-CPU cluster), since
    actors that took every CPU would wait forever for decoded images.

    An ONNX-only model (``onnx_only``, an ONNX folder) runs on the GPUs where this process's ONNX
    Runtime has the CUDA provider (``onnxruntime-gpu``, assumed installed on the cluster alike);
    without it, on the CPUs with a warning (``device="auto"``).

    Raises:
        ConfigError (a ValueError): ``device="cuda"`` on a cluster with no GPU, or for an ONNX-only model without
            ONNX Runtime's CUDA provider; ``runtime="onnx"`` on a GPU for a PyTorch model;
            ``runtime="torch"`` for an ONNX-only model; more actors than the CPUs can hold beside decoding.
    """
    raw_cpus = float(resources.get("CPU", 1)) or 1.0  # fractional on some clusters
    cpus = max(1, int(raw_cpus))
    gpus = int(resources.get("GPU", 0))
    if device == "cuda" and gpus == 0:
        raise ConfigError("device 'cuda' asked for, but the Ray cluster has no GPU; use --device auto or cpu")
    if gpus and device in ("auto", "cuda") and onnx_only and not onnx_cuda_available():
        if device == "cuda":
            raise ConfigError(
                "device 'cuda' asked for an ONNX model, but ONNX Runtime has no CUDA provider here; "
                "pip install onnxruntime-gpu, or use --device auto (the CPUs) or cpu"
            )
        log.warning("the cluster has GPUs but ONNX Runtime has no CUDA provider (pip install onnxruntime-gpu); "
                    "the ONNX model runs on the CPUs")
        gpus = 0
    if gpus and device in ("auto", "cuda"):
        actors = num_actors or gpus * ACTORS_PER_GPU
        # More actors than GPUs share them (num_gpus < 1), so one actor's host-side work (fetching
        # the batch, the copy in, the results out) overlaps another's GPU work.
        return ClusterPlan(
            "cuda", actors, min(1.0, gpus / actors), 1, resolve_runtime(runtime, "cuda", onnx_only=onnx_only),
            batch_size or GPU_BATCH_SIZE,
            cpus_per_actor=0.0,
        )
    actors = num_actors or max(1, cpus // 4)
    decode_cpus = 1.0 if raw_cpus >= 2 else raw_cpus / 2
    actor_cpus = min(1.0, (raw_cpus - decode_cpus) / actors)
    if actor_cpus < 0.1:
        raise ConfigError(
            f"{actors} model actors do not fit beside decoding on a cluster with {raw_cpus:g} CPUs; "
            f"use --num-actors {max(1, int((raw_cpus - decode_cpus) / 0.5))} or fewer"
        )
    return ClusterPlan(
        "cpu",
        actors,
        0.0,
        max(1, cpus // actors),
        resolve_runtime(runtime, "cpu", onnx_only=onnx_only),
        batch_size or CPU_BATCH_SIZE,
        cpus_per_actor=actor_cpus,
        cpus_per_decode_task=decode_cpus,
    )


@dataclass
class StageResult:
    """What the inference stage produced, counted.

    Attributes:
        wall_seconds: the whole stage, actor start-up included, seconds.
        first_batch_seconds: stage start to the first output batch (start-up latency), seconds.
        steady_images_per_second: images after the first batch over the time from the first
            output batch to the last (NaN with fewer than two batches).
    """

    n_input: int
    n_predicted: int
    n_failed: int
    wall_seconds: float
    plan: ClusterPlan
    first_batch_seconds: float = float("nan")
    steady_images_per_second: float = float("nan")


def run_stage(
    records: list[dict],
    *,
    model_name: str,
    weights: str | None,
    storage: StorageOptions,
    plan: ClusterPlan,
    on_batch: Callable[[dict[str, np.ndarray]], None],
    onnx_blob: bytes | None = None,
    compile: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    restricted_classes: tuple[int, ...] | None = None,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
) -> StageResult:
    """Run the Ray Data pipeline over ``records`` and hand every output batch to ``on_batch``.

    Ray must be initialised by the caller. ``records`` are dicts with ``path`` and ``label``.
    ``onnx_blob``: the driver's export for ``plan.runtime == "onnx"`` (exported here when None).
    ``restricted_classes``: see :class:`Classifier`. ``read_timeout``: seconds per image read
    (see :func:`read_many`).

    Output batches pass through a :class:`ReadBreaker` after ``on_batch``: when
    ``UNREACHABLE_READS_TO_TRIP`` consecutive rows could not reach the storage, the stage stops
    (the batches handed to ``on_batch`` so far stay handed).

    Raises:
        RuntimeError: the output does not hold every input path exactly once.
        EndpointUnreachable: the circuit breaker tripped; the message names the endpoint.
    """
    import ray.data

    start = time.perf_counter()
    batch_size = plan.batch_size
    preset = get_spec(model_name, storage).preset  # resolved once here: decoding tasks need not read a folder
    if plan.runtime == "onnx" and onnx_blob is None:
        onnx_blob = onnx_model(model_name, weights, storage)
    ds = ray.data.from_items(records, override_num_blocks=max(1, min(len(records) // batch_size, 200)))
    ds = ds.map_batches(
        decode_batch,
        batch_size=batch_size,
        batch_format="numpy",
        fn_kwargs={"preset": preset, "storage": storage, "max_pixels": max_pixels, "read_timeout": read_timeout},
        num_cpus=plan.cpus_per_decode_task,
        # Reserve what a batch of decodes holds. Ray Data fuses a task stage into the next actor
        # stage only when their resource requests match, so this also keeps decoding in its own
        # tasks, beside inference, instead of one after the other inside the model actors
        # (measured in BENCHMARKS.md).
        memory=batch_size * DECODE_MEMORY_PER_IMAGE,
    )
    ds = ds.map_batches(
        Classifier,
        batch_size=batch_size,
        batch_format="numpy",
        fn_constructor_kwargs={
            "model_name": model_name,
            "weights": weights,
            "storage": storage,
            "device": plan.device,
            "num_threads": plan.threads_per_actor,
            "runtime": plan.runtime,
            "compile": compile,
            "onnx_blob": onnx_blob,
            "restricted_classes": restricted_classes,
        },
        compute=ray.data.ActorPoolStrategy(size=plan.num_actors),
        num_gpus=plan.num_gpus_per_actor,
        num_cpus=plan.cpus_per_actor,
    )
    seen: set[str] = set()
    duplicates = 0
    n_failed = 0
    first_at = last_at = math.nan
    n_first = 0
    breaker = ReadBreaker(storage)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for p in batch["path"]:
            if p in seen:
                duplicates += 1
            seen.add(p)
        n_failed += int(np.count_nonzero(batch["error"] != ""))
        on_batch(batch)
        breaker.observe(batch)
        last_at = time.perf_counter()
        if math.isnan(first_at):
            first_at, n_first = last_at, len(batch["path"])
    expected = {r["path"] for r in records}
    missing = expected - seen
    if missing or duplicates or seen - expected:
        raise RuntimeError(
            f"inference output does not match its input: {len(missing)} missing, {duplicates} duplicated, "
            f"{len(seen - expected)} unexpected paths"
        )
    return StageResult(
        n_input=len(records),
        n_predicted=len(seen) - n_failed,
        n_failed=n_failed,
        wall_seconds=time.perf_counter() - start,
        plan=plan,
        first_batch_seconds=first_at - start,
        steady_images_per_second=(len(seen) - n_first) / (last_at - first_at) if last_at > first_at else math.nan,
    )
