"""The cluster plan: device, runtime, decoding, batch size and actor pool, chosen from the cluster's resources.

Kept apart from the stage (:mod:`batch_classify.stage.inference`) so that what it chooses, and the
measurements behind each default, can be read, tested and changed without Ray.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from batch_classify.stage.device_decode import supports
from batch_classify.stage.engines import onnx_cuda_available, resolve_runtime
from batch_classify.errors import ConfigError
from batch_classify.models.preprocess import ClassificationPreset

log = logging.getLogger(__name__)

#: Default images per pipeline batch. CPU: measured on the 2-core development machine,
#: EfficientNet-Lite0, 3,000 files (benchmarks/stage.py): 175 images/s with batches of 32,
#: 195 of 64, 201-205 of 128, 198 of 256 (fewer, larger Ray tasks; the engines still call the
#: model 8 images at a time). 2026-12-01, whole `batch-classify run` (BENCHMARKS.md, "Start-up"):
#: stage steady state at 10,000 files 130 images/s with 64, 136 with 128 (3,000 files, two runs
#: each: 133 and 120 against 142 and 140); over 1,000 files the whole run takes the same (20.4 s
#: and 20.7 s, medians of 3): 128 costs 1.5 s more to the first batch and wins it back. A nightly
#: job is paid by its throughput, so 128. GPU: measured on one H200 with 16 CPUs, ResNet-152, 12,000 files (benchmarks/gpu_check.sh,
#: BENCHMARKS.md): stage steady state 1,793 images/s with 1 actor × batch 128, 3,237 with
#: 4 × 128, 3,559 with 4 × 256, 3,681 with 8 × 128, 3,744 with 8 × 256 (model alone 5,723).
CPU_BATCH_SIZE = 128
GPU_BATCH_SIZE = 256
#: Model actors per GPU (each reserves ``1 / ACTORS_PER_GPU`` of it). One actor leaves the GPU
#: idle while it fetches a batch, copies it in and hands results back; four overlap that work
#: (figures above: 1.8× one actor; eight add 3-5 % for twice the CUDA contexts and start-up).
#: With decoding on the GPU too (2026-12-01, BENCHMARKS.md), 4 × 256 still measured best: EfficientNet-Lite0
#: 2,361 images/s steady against 2,020 with 8 × 256 and 1,871 with 4 × 512.
ACTORS_PER_GPU = 4
#: Where ``--executor auto`` runs the stage (:func:`choose_executor`): in this process below this many
#: images to compute, with Ray from it. Measured on the 2-core development machine (BENCHMARKS.md,
#: "Where the stage runs"), EfficientNet-Lite0, whole process: the local stage was faster at every size
#: tried (1,000 and 10,000 files: it starts no Ray, and its steady state is higher: 225-235 images/s
#: against Ray Data's 194 on 2 cores), so speed sets no crossover here. The bound is what a long run
#: needs more than a few per cent: Ray retries a task whose process died (a decoder's segfault, the
#: OOM killer) where the local stage loses its process (the next attempt resumes from the staged
#: files), and Ray's actor pool spreads over more cores than one ONNX Runtime session scales to.
#: 50,000 images are about 4 minutes of stage here.
LOCAL_MAX_IMAGES = 50_000
#: The local executor's images per batch: 64 gave the same steady state as 128 (235 images/s, float32)
#: and half the wait for the first batch (0.59 s against 0.96; 32: 0.23 s and 4% slower), measured with
#: ``benchmarks/local_stage.py``.
LOCAL_BATCH_SIZE = 64
#: Cores per decoding thread of the local executor: decoding and resizing are about a quarter of an
#: image's core time in float32, a third in int8 (BENCHMARKS.md, "Where a steady-state image's core
#: time goes"); on 2 cores one thread and two measured the same.
CORES_PER_DECODE_THREAD = 3


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
        decode: ``"cpu"`` (decoding tasks decode with Pillow) or ``"device"`` (reading tasks read,
            the model actors decode on their device: :mod:`batch_classify.stage.device_decode`).
        executor: ``"ray"`` (the Ray Data stage, :mod:`batch_classify.stage.inference`) or ``"local"`` (one
            model in the driver's process, :mod:`batch_classify.stage.local`; :func:`plan_local`).
        decode_threads: the local executor's decoding threads (0 under Ray: decoding tasks instead).
        precision: ``"float32"``, or ``"int8"`` (a quantized ONNX model: :mod:`batch_classify.stage.quantize`).
    """

    device: str
    num_actors: int
    num_gpus_per_actor: float
    threads_per_actor: int
    runtime: str = "torch"
    batch_size: int = CPU_BATCH_SIZE
    cpus_per_actor: float = 1.0
    cpus_per_decode_task: float = 1.0
    decode: str = "cpu"
    executor: str = "ray"
    decode_threads: int = 0
    precision: str = "float32"

    def needs(self) -> dict[str, float]:
        """The resources this plan needs at once: its model actors' reservations and one decoding task's,
        ``{"CPU": cpus, "GPU": gpus}``."""
        return {
            "CPU": self.num_actors * self.cpus_per_actor + self.cpus_per_decode_task,
            "GPU": self.num_actors * self.num_gpus_per_actor,
        }

    def shortfall(self, resources: Mapping[str, float]) -> str | None:
        """What a cluster's ``resources`` (``ray.cluster_resources()``: its alive nodes' totals) lack to hold
        this plan, in words; None when they hold it. A small tolerance absorbs Ray's fixed-point fractions.
        (Totals, not node by node: a plan made for the cluster fits its nodes, and one that no longer fits
        the totals is what a lost node leaves.)"""
        need = self.needs()
        if all(resources.get(kind, 0.0) + 1e-6 >= amount for kind, amount in need.items()):
            return None
        return (
            f"the Ray cluster has {resources.get('CPU', 0.0):g} CPU and {resources.get('GPU', 0.0):g} GPU now; the stage's "
            f"plan needs {need['CPU']:g} CPU and {need['GPU']:g} GPU (model actors: {self.num_actors} × "
            f"{self.cpus_per_actor:g} CPU and {self.num_gpus_per_actor:g} GPU; decoding: {self.cpus_per_decode_task:g} CPU)"
        )


def plan_cluster(
    resources: dict[str, float],
    *,
    device: str = "auto",
    num_actors: int | None = None,
    runtime: str = "auto",
    batch_size: int | None = None,
    onnx_only: bool = False,
    decode: str = "auto",
    preset: ClassificationPreset | None = None,
) -> ClusterPlan:
    """Choose device, runtime, batch size and pool size from the cluster's resources.

    Args:
        resources: ``ray.cluster_resources()``.

    GPU: ``ACTORS_PER_GPU`` (4) actors per GPU, ``num_gpus=0.25`` each, PyTorch, batch 256. CPU: one actor per
    4 CPUs (at least 1), each with the CPUs it shares as intra-op threads, since decoding
    takes less CPU than the model; ONNX Runtime, batch 128. The actors' CPU reservations
    always leave room for a decoding task (1 CPU, or half of a 1-CPU cluster), since
    actors that took every CPU would wait forever for decoded images.

    An ONNX-only model (``onnx_only``, an ONNX folder) runs on the GPUs where this process's ONNX
    Runtime has the CUDA provider (``onnxruntime-gpu``, assumed installed on the cluster alike);
    without it, on the CPUs with a warning (``device="auto"``).

    ``decode``: ``auto`` decodes JPEGs on the GPU (``"device"``) when the actors run PyTorch on
    GPUs and ``preset``'s interpolation has a GPU version, else on the CPUs; ``gpu`` insists.

    Raises:
        ConfigError (a ValueError): ``device="cuda"`` on a cluster with no GPU, or for an ONNX-only model without
            ONNX Runtime's CUDA provider; ``runtime="onnx"`` on a GPU for a PyTorch model;
            ``runtime="torch"`` for an ONNX-only model; more actors than the CPUs can hold beside decoding;
            ``decode="gpu"`` where the actors have no GPU, run ONNX Runtime, or ``preset`` needs the CPU.
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
        resolved = resolve_runtime(runtime, "cuda", onnx_only=onnx_only)
        # More actors than GPUs share them (num_gpus < 1), so one actor's host-side work (fetching
        # the batch, the copy in, the results out) overlaps another's GPU work.
        return ClusterPlan(
            "cuda", actors, min(1.0, gpus / actors), 1, resolved,
            batch_size or GPU_BATCH_SIZE,
            cpus_per_actor=0.0,
            decode=_plan_decode(decode, resolved, preset),
        )
    if decode == "gpu":
        raise ConfigError("--decode gpu asked for, but the model actors run on the CPUs; use --decode auto or cpu")
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


def plan_local(
    cpus: int,
    *,
    runtime: str = "auto",
    batch_size: int | None = None,
    onnx_only: bool = False,
) -> ClusterPlan:
    """The plan of the stage in this process (:mod:`batch_classify.stage.local`): one model on the CPUs,
    ``cpus`` intra-op threads, one decoding thread per :data:`CORES_PER_DECODE_THREAD` cores (at least one) beside it.

    Raises:
        ConfigError: ``runtime="torch"`` for an ONNX-only model.
    """
    return ClusterPlan(
        "cpu", 1, 0.0, max(1, cpus), resolve_runtime(runtime, "cpu", onnx_only=onnx_only),
        batch_size or LOCAL_BATCH_SIZE, cpus_per_actor=float(cpus), cpus_per_decode_task=0.0,
        executor="local", decode_threads=max(1, cpus // CORES_PER_DECODE_THREAD),
    )


def local_gpus() -> bool:
    """Whether this machine shows an NVIDIA GPU to this process, without importing torch or starting Ray:
    a ``/dev/nvidia<N>`` device node, unless ``CUDA_VISIBLE_DEVICES`` hides every GPU (``""`` or ``-1``)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def choose_executor(executor: str, *, n_images: int, ray_address: str | None, device: str) -> str:
    """Where the stage runs: ``"local"`` (this process, :mod:`batch_classify.stage.local`) or ``"ray"``.

    Args:
        executor: the setting: ``"local"`` or ``"ray"`` as given; ``"auto"``: Ray with a cluster
            (``ray_address``), with GPUs (``device="cuda"``, or ``"auto"`` on a machine that shows one:
            :func:`local_gpus`) or from :data:`LOCAL_MAX_IMAGES` images to compute on; this process below.
        n_images: images the stage has to compute (reused ones not counted).

    Raises:
        ConfigError: ``"local"`` with ``ray_address`` (a cluster runs the stage as its own), or with
            ``device="cuda"`` (the local executor runs on the CPUs).
    """
    if executor == "local":
        if ray_address is not None:
            raise ConfigError("--executor local runs the stage in this process, but a Ray cluster is given "
                              f"({ray_address}); drop --ray-address, or use --executor auto")
        if device == "cuda":
            raise ConfigError("--executor local runs the model on the CPUs; use --device auto or cpu, "
                              "or --executor auto to run on the GPUs with Ray")
        return "local"
    if executor == "ray":
        return "ray"
    if ray_address is not None or device == "cuda" or (device == "auto" and local_gpus()):
        return "ray"
    return "local" if n_images < LOCAL_MAX_IMAGES else "ray"


def _plan_decode(decode: str, runtime: str, preset: ClassificationPreset | None) -> str:
    """Where GPU actors decode: ``"device"`` or ``"cpu"`` (see :func:`plan_cluster`)."""
    if decode == "cpu":
        return "cpu"
    why = (
        "the model runs under ONNX Runtime" if runtime != "torch"
        else f"the model's interpolation {preset.interpolation!r} has no GPU version" if preset and not supports(preset)
        else ""
    )
    if why and decode == "gpu":
        raise ConfigError(f"--decode gpu asked for, but {why}; use --decode auto or cpu")
    return "cpu" if why else "device"
