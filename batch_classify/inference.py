"""The inference stage on Ray Data: read → decode + preprocess → model actor pool → top-5.

Shape of the pipeline (streamed; no stage holds the whole dataset)::

    from_items(path, label)                       # the listing, no pixels
      .map_batches(decode_batch)                  # CPU tasks: bytes → uint8 [N, H, W, 3]
      .map_batches(Classifier, compute=actors)    # one actor per GPU (num_gpus=1), else CPU actors
      → driver: rows streamed into staging Parquet files

Per-image failures (unreadable, undecodable) and per-batch inference failures
are carried as rows with ``error`` set, never dropped: every listed image comes
out exactly once, predicted or failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from batch_classify.models import ModelSpec, get_spec, load_model
from batch_classify.preprocess import DecodeError, normalize
from batch_classify.storage import StorageOptions, filesystem

log = logging.getLogger(__name__)

TOP_K = 5


def decode_batch(batch: dict[str, np.ndarray], *, model_name: str, storage: StorageOptions) -> dict[str, np.ndarray]:
    """Read and preprocess a batch of images.

    Args:
        batch: ``path`` (object [N]) and ``label`` (object [N]).

    Returns:
        ``path``, ``label``, ``image`` uint8 [N, crop, crop, 3] (zeros where failed),
        ``stage`` and ``error`` object [N] (``""`` where the image is fine).
    """
    preset = get_spec(model_name).preset
    paths = [str(p) for p in batch["path"]]
    n, c = len(paths), preset.crop_size
    images = np.zeros((n, c, c, 3), dtype=np.uint8)
    stage = np.full(n, "", dtype=object)
    error = np.full(n, "", dtype=object)
    contents = read_many(paths, storage)
    for i, path in enumerate(paths):
        data = contents[path]
        if isinstance(data, BaseException):
            stage[i], error[i] = "read", f"{type(data).__name__}: {data}"
            continue
        try:
            images[i] = preset(data)
        except DecodeError as err:
            stage[i], error[i] = "decode", str(err)
        except Exception as err:  # noqa: BLE001 - any other decoder fault is this image's failure
            stage[i], error[i] = "decode", f"{type(err).__name__}: {err}"
    return {"path": np.asarray(paths, dtype=object), "label": batch["label"], "image": images, "stage": stage, "error": error}


def read_many(paths: list[str], storage: StorageOptions) -> dict[str, bytes | BaseException]:
    """Read several files; S3 reads run concurrently (s3fs ``cat``).

    Returns:
        path → bytes, or the exception that reading it raised.
    """
    if not paths:
        return {}
    fs, _ = filesystem(paths[0], storage)
    stripped = {fs._strip_protocol(p): p for p in paths}
    try:
        got = fs.cat(list(stripped), on_error="return")
    except Exception as err:  # noqa: BLE001 - a failure of the whole request fails each file
        return {p: err for p in paths}
    if not isinstance(got, dict):  # a single path returns bytes
        got = {next(iter(stripped)): got}
    out: dict[str, bytes | BaseException] = {}
    for key, original in stripped.items():
        value = got.get(key, FileNotFoundError(original))
        out[original] = value
    return out


class Classifier:
    """A model actor: loads the model once in ``__init__``, classifies batches in ``__call__``.

    Args:
        model_name: registry name.
        weights: weights URI or None for the default location.
        storage: how to reach the weights.
        device: ``"cpu"`` or ``"cuda"``.
        num_threads: torch intra-op threads on CPU.
    """

    def __init__(
        self,
        *,
        model_name: str,
        weights: str | None,
        storage: StorageOptions,
        device: str = "cpu",
        num_threads: int | None = None,
    ) -> None:
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        self.spec: ModelSpec = get_spec(model_name)
        self.device = torch.device(device)
        model = load_model(self.spec, weights, storage)
        self.model = model.to(self.device, memory_format=torch.channels_last)

    def logits(self, images: np.ndarray):
        """uint8 [N, H, W, 3] → float32 logits [N, num_classes] (a torch tensor on the CPU)."""
        import torch

        if not images.flags.writeable:  # Ray hands zero-copy, read-only batches
            images = images.copy()
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
        x = normalize(x, self.spec.preset.mean, self.spec.preset.std).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.model(x).float().cpu()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Classify the rows that decoded.

        Returns:
            ``path``, ``label``, ``stage``, ``error`` as given (``stage="infer"`` on a model failure),
            ``pred_index`` int64 [N], ``confidence`` float32 [N], ``top5_index`` int64 [N, 5],
            ``top5_prob`` float32 [N, 5]; -1 / 0 where the row failed.
        """
        import torch

        n = len(batch["path"])
        stage = np.array(batch["stage"], dtype=object)
        error = np.array(batch["error"], dtype=object)
        top_idx = np.full((n, TOP_K), -1, dtype=np.int64)
        top_prob = np.zeros((n, TOP_K), dtype=np.float32)
        ok = np.flatnonzero(error == "")
        if len(ok):
            try:
                logits = self.logits(batch["image"][ok])
                if logits.ndim != 2 or logits.shape[1] != self.spec.num_classes:
                    raise RuntimeError(f"model returned logits of shape {tuple(logits.shape)}")
                probs = torch.softmax(logits, dim=1)
                p, i = probs.topk(TOP_K, dim=1)
                top_idx[ok], top_prob[ok] = i.numpy(), p.numpy()
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
        }


@dataclass(frozen=True)
class ClusterPlan:
    """How the actor pool is laid out on the cluster.

    Attributes:
        device: ``"cuda"`` or ``"cpu"``.
        num_actors: model actors in the pool.
        num_gpus_per_actor: 1 on GPU, 0 on CPU.
        threads_per_actor: torch threads per CPU actor.
    """

    device: str
    num_actors: int
    num_gpus_per_actor: float
    threads_per_actor: int


def plan_cluster(resources: dict[str, float], *, device: str = "auto", num_actors: int | None = None) -> ClusterPlan:
    """Choose device and pool size from the cluster's resources (``ray.cluster_resources()``).

    GPU: one actor per GPU, ``num_gpus=1`` each. CPU: one actor per 4 CPUs (at least 1),
    each with the CPUs it shares, since decoding takes far less CPU than the model.

    Raises:
        ValueError: ``device="cuda"`` on a cluster with no GPU.
    """
    cpus = int(resources.get("CPU", 1)) or 1
    gpus = int(resources.get("GPU", 0))
    if device == "cuda" and gpus == 0:
        raise ValueError("device 'cuda' asked for, but the Ray cluster has no GPU; use --device auto or cpu")
    if gpus and device in ("auto", "cuda"):
        return ClusterPlan("cuda", num_actors or gpus, 1.0, 1)
    actors = num_actors or max(1, cpus // 4)
    return ClusterPlan("cpu", actors, 0.0, max(1, cpus // actors))


@dataclass
class StageResult:
    """What the inference stage produced, counted."""

    n_input: int
    n_predicted: int
    n_failed: int
    wall_seconds: float
    plan: ClusterPlan


def run_stage(
    records: list[dict],
    *,
    model_name: str,
    weights: str | None,
    storage: StorageOptions,
    batch_size: int,
    plan: ClusterPlan,
    on_batch: Callable[[dict[str, np.ndarray]], None],
) -> StageResult:
    """Run the Ray Data pipeline over ``records`` and hand every output batch to ``on_batch``.

    Ray must be initialised by the caller. ``records`` are dicts with ``path`` and ``label``.

    Raises:
        RuntimeError: the output does not hold every input path exactly once.
    """
    import ray.data

    start = time.perf_counter()
    ds = ray.data.from_items(records, override_num_blocks=max(1, min(len(records) // batch_size, 200)))
    ds = ds.map_batches(
        decode_batch,
        batch_size=batch_size,
        batch_format="numpy",
        fn_kwargs={"model_name": model_name, "storage": storage},
        num_cpus=1,
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
        },
        compute=ray.data.ActorPoolStrategy(size=plan.num_actors),
        num_gpus=plan.num_gpus_per_actor,
        num_cpus=0 if plan.device == "cuda" else 1,
    )
    seen: set[str] = set()
    duplicates = 0
    n_failed = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for p in batch["path"]:
            if p in seen:
                duplicates += 1
            seen.add(p)
        n_failed += int(np.count_nonzero(batch["error"] != ""))
        on_batch(batch)
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
    )
