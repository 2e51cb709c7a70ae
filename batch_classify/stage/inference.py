"""The inference stage on Ray Data: read → decode + preprocess → model actor pool → top-5.

Shape of the pipeline (streamed; no stage holds the whole dataset)::

    from_items(page URIs).map_batches(read_pages)  # the stage's input pages (StageInput): paths, no pixels
      .map_batches(decode_batch)                  # CPU tasks (fused with the reading): bytes → uint8 [N, H, W, 3]
      .map_batches(Classifier, compute=actors)    # 4 actors per GPU (num_gpus=0.25), else CPU actors
      .map_batches(write)                         # CPU tasks: rows → staged Parquet files (run.staged_parts)
      → driver: one summary per written file (counts, a digest of its paths, its unreachable reads)

With a list of records in place of the pages (tests, benchmarks), ``from_items(path, label)`` is the input
and the output rows themselves come back to the driver (``on_batch``).

or, with ``plan.decode == "device"`` (PyTorch on GPUs, :mod:`batch_classify.stage.device_decode`)::

    from_items(page URIs).map_batches(read_pages)
      .map_batches(read_batch)                    # CPU tasks: the files' bytes and headers, no pixels
      .map_batches(Classifier, compute=actors)    # decode + resize + crop on the GPU, then the model
      .map_batches(write)

Per-image failures (unreadable, undecodable) and per-batch inference failures
are carried as rows with ``error`` set, never dropped: every listed image comes
out exactly once, predicted or failed. Reading, its deadlines and the circuit breaker over it:
:mod:`batch_classify.stage.reading`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from batch_classify.stage.capacity import DEFAULT_WAIT, CapacityLost, CapacityWatch
from batch_classify.columns import empty_outputs, with_best
from batch_classify.stage.device_decode import DeviceDecoder, read_batch
from batch_classify.stage.engines import build_engine, onnx_model
from batch_classify.errors import ConfigError
from batch_classify.models.registry import ModelSpec
from batch_classify.stage.plan import ClusterPlan
from batch_classify.models.preprocess import DEFAULT_MAX_PIXELS, ClassificationPreset, DecodeError
from batch_classify.stage.ray_logs import PROGRESS_EVERY, LoggerLike, stage_logging
from batch_classify.stage.reading import ReadBreaker, carried, read_rows
from batch_classify.stage.scores import scores
from batch_classify.stage.output import PathDigest, StageOutput, StageResult, WrittenOutput
from batch_classify.storage import DEFAULT_READ_TIMEOUT, StorageOptions, read_parquet


log = logging.getLogger(__name__)


def decode_batch(
    batch: dict[str, np.ndarray],
    *,
    storage: StorageOptions,
    preset: ClassificationPreset,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
) -> dict[str, np.ndarray]:
    """Read and preprocess a batch of images.

    Args:
        batch: ``path`` (object [N]) and ``label`` (object [N]).
        preset: the model's preprocessing (:attr:`batch_classify.models.registry.ModelSpec.preset`).
        max_pixels: images with more pixels are recorded as decode failures, undecoded.
        read_timeout: seconds each image's read may take (see :func:`read_many`).

    Returns:
        ``path``, ``label``, ``image`` uint8 [N, crop, crop, 3] (zeros where failed),
        ``stage`` and ``error`` object [N] (``""`` where the image is fine), ``unreachable`` bool [N]
        (the read failed to connect or timed out: what :class:`ReadBreaker` counts); the ``listed:…``
        columns of ``batch`` as they are (:func:`batch_classify.stage.output.carried`).
    """
    paths = [str(p) for p in batch["path"]]
    n, c = len(paths), preset.crop_size
    images = np.zeros((n, c, c, 3), dtype=np.uint8)
    contents, stage, error, unreachable = read_rows(paths, storage, read_timeout=read_timeout)
    for i, data in enumerate(contents):
        if data is None:
            continue
        try:
            images[i] = preset(data, max_pixels=max_pixels)
        except DecodeError as err:
            stage[i], error[i] = "decode", str(err)
        except Exception as err:  # noqa: BLE001 - any other decoder fault is this image's failure
            stage[i], error[i] = "decode", f"{type(err).__name__}: {err}"
    return {
        "path": np.asarray(paths, dtype=object), "label": batch["label"], "image": images, "stage": stage,
        "error": error, "unreachable": unreachable, **carried(batch),
    }


class Classifier:
    """A model actor: builds its engine once in ``__init__``, classifies batches in ``__call__``.

    Args:
        spec: the model, as the run resolved it (:func:`batch_classify.models.registry.get_spec`).
        weights: weights URI or None for the default location.
        storage: how to reach the weights.
        device: ``"cpu"`` or ``"cuda"``.
        num_threads: intra-op threads on the CPU.
        runtime: ``auto``, ``torch`` or ``onnx`` (see :mod:`batch_classify.stage.engines`).
        compile: ``torch.compile`` the model (torch runtime only).
        onnx_blob: the driver's ONNX export, so that actors do not export again.
        restricted_classes: class indices present in the dataset's labels; each row then also
            gets ``restricted_index``, the argmax of the logits over these classes only (the
            Imagenette-style evaluation: a 10-class dataset scored among its own 10 classes).
        decode: ``"cpu"``: batches carry decoded ``image`` crops (:func:`decode_batch`);
            ``"device"``: batches carry the files' ``data`` (:func:`batch_classify.stage.device_decode.read_batch`)
            and this actor decodes them on its device (torch runtime only).
        max_pixels: the pixel limit of the CPU fallback when ``decode="device"``.

    Softmax, top-5, entropy and the restricted argmax are computed where the logits are (on the
    GPU for the torch engine on CUDA), and only those [N, 12] numbers come back to the host.
    """

    def __init__(
        self,
        *,
        spec: ModelSpec,
        weights: str | None,
        storage: StorageOptions,
        device: str = "cpu",
        num_threads: int | None = None,
        runtime: str = "auto",
        compile: bool = False,
        onnx_blob: bytes | None = None,
        restricted_classes: tuple[int, ...] | None = None,
        decode: str = "cpu",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.spec = spec
        self.restricted = np.asarray(sorted(restricted_classes), dtype=np.int64) if restricted_classes else None
        self.engine = build_engine(
            spec,
            weights,
            storage,
            runtime=runtime,
            device=device,
            num_threads=num_threads,
            compile=compile,
            onnx_blob=onnx_blob,
        )
        self.decoder = DeviceDecoder(self.spec.preset, device=device, max_pixels=max_pixels) if decode == "device" else None
        if self.decoder is not None and not hasattr(self.engine, "logits_tensor"):
            raise ConfigError("decoding on the device needs the PyTorch runtime; use --runtime torch or --decode cpu")

    def logits(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] → float32 logits [N, num_classes] (numpy)."""
        return self.engine(images)

    def _logits(self, images):
        """uint8 [N, H, W, 3] (numpy, or a torch tensor on the engine's device) → float32 logits
        [N, C]: a torch tensor where the PyTorch engine computed them (on its device), else numpy."""
        if hasattr(self.engine, "logits_tensor"):
            return self.engine.logits_tensor(images)
        return self.engine(images)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Classify the rows that decoded (decoding them first when the batch carries ``data``).

        Returns:
            ``path``, ``label``, ``stage``, ``error`` as given (``stage="decode"`` where this actor's
            decoding failed, ``"infer"`` on a model failure), the model outputs
            (:data:`batch_classify.columns.MODEL_OUTPUTS`): ``pred_index`` int64 [N], ``confidence``
            float32 [N], ``top5_index`` int64 [N, 5] (fewer classes than 5: -1 in the missing places),
            ``top5_prob`` float32 [N, 5],
            ``entropy`` float32 [N] (of the softmax over all classes, nats), ``restricted_index``
            int64 [N] (-1 without ``restricted_classes``); -1 / 0 where the row failed;
            ``unreachable`` as given (all False when absent); the ``listed:…`` columns as given.
        """
        n = len(batch["path"])
        stage = np.array(batch["stage"], dtype=object)
        error = np.array(batch["error"], dtype=object)
        if "data" in batch:
            if self.decoder is None:
                raise ConfigError("the batch carries undecoded files but this actor decodes nothing (decode='cpu')")
            decoded = self.decoder(batch["data"], batch["on_device"], stage, error)
            stage, error, images = decoded.stage, decoded.error, decoded.images
        else:
            images = batch["image"]
        outputs = empty_outputs(n)  # the scored columns, at their fill where a row fails
        ok = np.flatnonzero(error == "")
        if len(ok):
            try:
                if isinstance(images, np.ndarray):
                    picked = images[ok]
                else:  # a torch tensor on this actor's device (decoded there)
                    import torch

                    picked = images[torch.from_numpy(ok).to(images.device)]
                logits = self._logits(picked)
                if logits.ndim != 2 or logits.shape[1] != self.spec.num_classes:
                    raise RuntimeError(f"model returned logits of shape {tuple(logits.shape)}")
                for name, values in scores(logits, self.restricted).items():
                    if values.ndim == 2:  # a top-k list: k = min(TOP_K, classes) of TOP_K places
                        outputs[name][ok, : values.shape[1]] = values
                    else:
                        outputs[name][ok] = values
            except Exception as err:  # noqa: BLE001 - recorded per row, the batch is not lost
                stage[ok], error[ok] = "infer", f"{type(err).__name__}: {err}"
        return {
            "path": batch["path"],
            "label": batch["label"],
            "stage": stage,
            "error": error,
            **with_best(outputs),
            "unreachable": np.asarray(batch.get("unreachable", np.zeros(n, dtype=bool)), dtype=bool),
            **carried(batch),
        }


@dataclass(frozen=True)
class StageInput:
    """The stage's input as Parquet pages on the run's storage, in place of a list of dicts in the driver
    (issue 28 item 3): Ray Data's tasks read the pages (:func:`read_pages`), so the driver never holds a
    record or a block per image.

    Attributes:
        pages: the pages' URIs; each holds ``path``, ``label`` and the ``listed:…`` columns the writer
            needs (:func:`batch_classify.stage.reading.carried`), one row per image to compute.
        n_images: rows over all pages.
        digest: the digest of their paths (:class:`batch_classify.stage.output.PathDigest`), what the
            written files' summaries must add up to.
    """

    pages: tuple[str, ...]
    n_images: int
    digest: PathDigest


def read_pages(batch: dict[str, np.ndarray], *, storage: StorageOptions) -> dict[str, np.ndarray]:
    """``page`` object [P] (URIs of :class:`StageInput` pages) → their rows: ``path``, ``label`` and the
    ``listed:…`` columns, object [N]."""
    import pyarrow as pa

    table = pa.concat_tables([read_parquet(str(uri), storage) for uri in batch["page"]])
    return {name: np.asarray(table.column(name).to_pylist(), dtype=object) for name in table.column_names}


def decode_pages(batch: dict[str, np.ndarray], *, decode: Callable[..., dict[str, np.ndarray]], batch_size: int,
                 storage: StorageOptions, **kwargs) -> Iterator[dict[str, np.ndarray]]:
    """``page`` object [1] (one :class:`StageInput` page) → its rows through ``decode`` (:func:`decode_batch`, or
    :func:`batch_classify.stage.device_decode.read_batch`) in batches of ``batch_size`` rows, yielded one by one;
    ``kwargs`` go to ``decode``.

    Reading and decoding are one function over one page, not two map steps that Ray Data fuses: a fused step
    gathers its input up to the later step's batch size counted in the first step's rows, so every task took
    ``batch_size`` pages. At 20,000 images in 156 pages that was three tasks, and nothing reached the model
    until one of them had decoded 8,192 images (the driver heard from the workers only as the stage ended).
    """
    rows = read_pages(batch, storage=storage)
    for begin in range(0, len(rows["path"]), batch_size):
        yield decode({name: column[begin:begin + batch_size] for name, column in rows.items()}, storage=storage, **kwargs)


#: Memory one image takes while it is decoded, bytes: the file plus a decoded picture of about
#: 1 megapixel RGB (ImageNet photos average 0.2; larger JPEGs are decoded at reduced DCT scale).
DECODE_MEMORY_PER_IMAGE = 4 * 2**20


def run_stage(
    records: list[dict] | StageInput,
    *,
    spec: ModelSpec,
    weights: str | None,
    storage: StorageOptions,
    plan: ClusterPlan,
    on_batch: Callable[[dict[str, np.ndarray]], None],
    write: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
    write_rows: int | None = None,
    onnx_blob: bytes | None = None,
    compile: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    restricted_classes: tuple[int, ...] | None = None,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    logger: LoggerLike | None = None,
    verbose: bool = False,
    progress_every: float = PROGRESS_EVERY,
    lost_capacity_wait: float = DEFAULT_WAIT,
) -> StageResult:
    """Run the Ray Data pipeline over ``records`` and hand every output batch to ``on_batch``.

    Ray must be initialised by the caller. ``records`` are dicts with ``path`` and ``label``, or a
    :class:`StageInput` (pages that Ray Data's tasks read). ``spec``: the model as the run resolved it,
    sent to the actors as it is (a model folder is not read again).

    With ``write`` (a picklable callable: an output batch → the summary of the files it wrote,
    :data:`batch_classify.stage.output.SUMMARY_COLUMNS`), Ray Data's tasks write the output themselves,
    ``write_rows`` rows at a time (default: the batch size), and ``on_batch`` gets the summaries: the
    driver sees no output row (:class:`batch_classify.stage.output.WrittenOutput`). A :class:`StageInput`
    and ``write`` go together.
    ``onnx_blob``: the driver's export for ``plan.runtime == "onnx"`` (exported here when None).
    ``restricted_classes``: see :class:`Classifier`. ``read_timeout``: seconds per image read
    (see :func:`read_many`).

    ``logger`` (default: this module's) gets Ray Data's warnings and summary lines and a progress
    line every ``progress_every`` seconds (:func:`batch_classify.stage.ray_logs.stage_logging`); unless
    ``verbose``, Ray Data's console output and progress bars stay off the terminal.

    While no output batch comes, the cluster's resources are looked at (:class:`batch_classify.stage.capacity.CapacityWatch`):
    once they no longer hold ``plan`` (a node lost) and nothing came for ``lost_capacity_wait`` seconds,
    the stage stops (the batches handed to ``on_batch`` so far stay handed).

    Output batches pass through a :class:`ReadBreaker` after ``on_batch``: when
    ``UNREACHABLE_READS_TO_TRIP`` consecutive rows could not reach the storage, the stage stops
    (the batches handed to ``on_batch`` so far stay handed).

    Raises:
        RuntimeError: the output does not hold every input path exactly once.
        EndpointUnreachable: the circuit breaker tripped; the message names the endpoint.
        CapacityLost: the cluster lost what ``plan`` needs and the stage stalled (see above).
    """
    import ray
    import ray.data

    start = time.perf_counter()
    batch_size = plan.batch_size
    preset = spec.preset
    if plan.runtime == "onnx" and onnx_blob is None:
        onnx_blob = onnx_model(spec, weights, storage)
    paged = isinstance(records, StageInput)
    if (write is not None) != paged:
        raise ValueError("a StageInput goes with a writer (the workers write the output), a list of records without")
    total = records.n_images if paged else len(records)
    decode_resources = {"num_cpus": plan.cpus_per_decode_task, "memory": batch_size * DECODE_MEMORY_PER_IMAGE}
    with stage_logging(logger or log, total=total, verbose=verbose, every=progress_every) as progress:
        if plan.decode == "device":  # the tasks read and check headers; the model actors decode
            first, kwargs = read_batch, {"storage": storage, "max_pixels": max_pixels, "read_timeout": read_timeout}
        else:
            first = decode_batch
            kwargs = {"preset": preset, "storage": storage, "max_pixels": max_pixels, "read_timeout": read_timeout}
        # Reserve what a batch of decodes holds. Ray Data fuses a task stage into the next actor stage only
        # when their resource requests match, so this also keeps decoding in its own tasks, beside inference,
        # instead of one after the other inside the model actors (measured in BENCHMARKS.md).
        if paged:  # one task per page (decode_pages: why not two fused steps)
            ds = ray.data.from_items([{"page": page} for page in records.pages], override_num_blocks=len(records.pages))
            ds = ds.map_batches(decode_pages, batch_size=1, batch_format="numpy",
                                fn_kwargs={"decode": first, "batch_size": batch_size, **kwargs}, **decode_resources)
        else:
            ds = ray.data.from_items(records, override_num_blocks=max(1, min(len(records) // batch_size, 200)))
            ds = ds.map_batches(first, batch_size=batch_size, batch_format="numpy", fn_kwargs=kwargs, **decode_resources)
        ds = ds.map_batches(
            Classifier,
            batch_size=batch_size,
            batch_format="numpy",
            fn_constructor_kwargs={
                "spec": spec,
                "weights": weights,
                "storage": storage,
                "device": plan.device,
                "num_threads": plan.threads_per_actor,
                "runtime": plan.runtime,
                "compile": compile,
                "onnx_blob": onnx_blob,
                "restricted_classes": restricted_classes,
                "decode": plan.decode,
                "max_pixels": max_pixels,
            },
            compute=ray.data.ActorPoolStrategy(size=plan.num_actors),
            num_gpus=plan.num_gpus_per_actor,
            num_cpus=plan.cpus_per_actor,
        )
        if write is not None:  # the workers write; the driver gets one summary per written file
            # No CPU reserved: a file's write takes milliseconds, and a task that waited for a CPU would wait
            # for the decoding tasks to end, holding every output block in the object store until then.
            ds = ds.map_batches(write, batch_size=write_rows or batch_size, batch_format="numpy", num_cpus=0)
            output = WrittenOutput(records.digest, on_batch, progress, ReadBreaker(storage))
        else:
            output = StageOutput(records, on_batch, progress, ReadBreaker(storage))
        watch = CapacityWatch(short_of=lambda: plan.shortfall(ray.cluster_resources()), wait=lost_capacity_wait)
        try:
            with watch:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    watch.output_came()
                    output.take(batch)
        except CapacityLost:
            raise CapacityLost(watch.reason) from None
        progress.finish()
    return output.result(plan, start)
