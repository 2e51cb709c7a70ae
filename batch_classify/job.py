"""The five steps of a run as plain functions, no Prefect in them.

``tasks`` wraps each in a Prefect task (retries, tags, artifacts); ``flows``
orders them. Each takes the run's :class:`~batch_classify.settings.RunSettings`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from batch_classify import report as report_lib
from batch_classify.inference import Classifier, ClusterPlan, StageResult, decode_batch, plan_cluster, run_stage
from batch_classify.listing import Listing, list_images
from batch_classify.models import get_spec
from batch_classify.results import CommittedRun, StagedRun, StagingWriter, commit, read_committed
from batch_classify.reuse import find_reusable, model_identity
from batch_classify.settings import RunSettings
from batch_classify.storage import StorageOptions, join, write_bytes
from batch_classify.vocabulary import imagenet

log = logging.getLogger(__name__)


class ValidationError(RuntimeError):
    """The sample batch shows the run cannot succeed (model output, labels, undecodable input)."""


class FailureBudgetExceeded(RuntimeError):
    """More images failed than ``max_failed_fraction`` allows; nothing was committed."""


def storage_options(settings: RunSettings) -> StorageOptions:
    return StorageOptions(anon=settings.anon, endpoint_url=settings.s3_endpoint_url)


def list_step(settings: RunSettings) -> Listing:
    """Step 1: list the images under ``settings.input`` (see :func:`batch_classify.listing.list_images`)."""
    return list_images(settings.input, storage_options(settings), labels_uri=settings.labels, limit=settings.limit)


@dataclass(frozen=True)
class Validation:
    """Step 2's findings.

    Attributes:
        label_map: every distinct label → ImageNet class index.
        sample_paths: images classified in the sample.
        sample_predictions: class names predicted for them (None where the image failed).
        sample_failures: path → error for sample images that failed.
    """

    label_map: dict[str, int]
    sample_paths: tuple[str, ...]
    sample_predictions: tuple[str | None, ...]
    sample_failures: dict[str, str] = field(default_factory=dict)


def validate_step(settings: RunSettings, listing: Listing) -> Validation:
    """Step 2: map the labels, then decode and classify a small sample in this process.

    Raises:
        LabelError: labels that do not map onto the model's classes (all of them named).
        ModelError: unknown model or missing weights.
        ValidationError: wrong logits shape or non-finite logits, or no sample image decodes.
    """
    spec = get_spec(settings.model)
    vocabulary = imagenet()
    if spec.num_classes != vocabulary.num_classes:
        raise ValidationError(f"model {spec.name} has {spec.num_classes} classes; ImageNet has {vocabulary.num_classes}")
    labels = {r.label for r in listing.records if r.label is not None}
    label_map = vocabulary.map_labels(labels) if labels else {}

    storage = storage_options(settings)
    n = min(settings.sample_size, len(listing.records))
    step = max(1, len(listing.records) // n)
    sample = [listing.records[i * step] for i in range(n)]
    batch = decode_batch(
        {"path": np.array([r.path for r in sample], dtype=object), "label": np.array([r.label for r in sample], dtype=object)},
        model_name=spec.name,
        storage=storage,
        max_pixels=settings.max_image_pixels,
    )
    failures = {str(p): str(e) for p, e in zip(batch["path"], batch["error"], strict=True) if e}
    if len(failures) == n:
        shown = "; ".join(f"{p}: {e}" for p, e in list(failures.items())[:3])
        raise ValidationError(f"none of the {n} sample images could be read and decoded ({shown})")
    classifier = Classifier(model_name=spec.name, weights=settings.weights, storage=storage, runtime=settings.runtime)
    ok = np.flatnonzero(batch["error"] == "")
    logits = classifier.logits(batch["image"][ok])
    if tuple(logits.shape) != (len(ok), spec.num_classes):
        raise ValidationError(f"model {spec.name} returned logits {tuple(logits.shape)}, expected ({len(ok)}, {spec.num_classes})")
    if not bool(np.isfinite(logits).all()):
        raise ValidationError(f"model {spec.name} returned non-finite logits on the sample; check the weights file")
    preds: list[str | None] = [None] * n
    for j, i in enumerate(ok):
        preds[i] = vocabulary.names[int(logits[j].argmax())]
    return Validation(
        label_map=label_map,
        sample_paths=tuple(r.path for r in sample),
        sample_predictions=tuple(preds),
        sample_failures=failures,
    )


def _ray_init(settings: RunSettings) -> bool:
    """Start or join Ray unless this process already has it. Returns whether we started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
    if settings.ray_address:
        ray.init(address=settings.ray_address, **kwargs)
    else:
        ray.init(num_cpus=settings.num_cpus, **kwargs)
    return True


@dataclass(frozen=True)
class InferenceOutcome:
    """Step 3's result.

    Attributes:
        stage: the Ray stage's counts and timings; None when every image was reused and Ray never started.
        reused_from: run URIs and staging attempts that predictions were reused from.
    """

    staged: StagedRun
    stage: StageResult | None
    reused_from: tuple[str, ...] = ()


def inference_step(settings: RunSettings, listing: Listing, label_map: dict[str, int]) -> InferenceOutcome:
    """Step 3: reuse what may be reused, run the Ray Data stage on the rest; output streams into
    staging files under ``OUTPUT/RUN_ID/_staging``.

    Reused: predictions of a crashed attempt of this run id (``settings.resume``) and of the
    latest committed run on the same input (``settings.incremental``), where the image's content
    identity and the model identity are unchanged (see :mod:`batch_classify.reuse`).

    With an ``http(s)://`` ``settings.ray_address`` (the Jobs API), all of this runs inside the
    cluster as a Ray Job (:func:`batch_classify.cluster.run_inference_job`).

    Raises:
        RuntimeError: the output does not hold every listed image exactly once.
        ValueError: a ``ray://`` (Ray Client) address.
        batch_classify.cluster.StageJobFailed: the Ray Job failed or was stopped.
    """
    from batch_classify import cluster  # imports this module

    if cluster.uses_jobs_api(settings.ray_address):
        return cluster.run_inference_job(settings, listing, label_map)
    storage = storage_options(settings)
    model_id = model_identity(settings.model, settings.weights, storage)
    reusable = find_reusable(
        listing.records,
        run_uri=settings.run_uri(),
        output=settings.output,
        input=settings.input,
        model_id=model_id,
        storage=storage,
        incremental=settings.incremental,
        resume=settings.resume,
    )
    writer = StagingWriter(
        settings.run_uri(),
        run_id=settings.run_id,
        model=settings.model,
        vocabulary=imagenet(),
        label_map=label_map,
        storage=storage,
        content_ids={r.path: r.content_id for r in listing.records},
        meta={"input": settings.input, "model_id": model_id},
        rows_per_file=settings.checkpoint_rows,
    )
    writer.write_reused(reusable.table)
    reused = reusable.paths
    todo = [{"path": r.path, "label": r.label} for r in listing.records if r.path not in reused]
    log.info("%d images reused from %s; %d to compute", len(reused), list(reusable.sources), len(todo))
    stage = _run_ray_stage(settings, storage, todo, writer) if todo else None
    staged = writer.close()
    if staged.n_predicted + staged.n_failed != len(listing.records):
        raise RuntimeError(
            f"{len(listing.records)} images listed but {staged.n_predicted} predicted + {staged.n_failed} failed"
        )
    return InferenceOutcome(staged=staged, stage=stage, reused_from=reusable.sources)


def _run_ray_stage(settings: RunSettings, storage: StorageOptions, todo: list[dict], writer: StagingWriter) -> StageResult:
    import ray

    started = _ray_init(settings)
    try:
        plan: ClusterPlan = plan_cluster(
            ray.cluster_resources(),
            device=settings.device,
            num_actors=settings.num_actors,
            runtime=settings.runtime,
            batch_size=settings.batch_size,
        )
        log.info("inference plan: %s", plan)
        return run_stage(
            todo,
            model_name=settings.model,
            weights=settings.weights,
            storage=storage,
            plan=plan,
            compile=settings.compile,
            max_pixels=settings.max_image_pixels,
            on_batch=writer.write,
        )
    finally:
        if started:
            ray.shutdown()


def persist_step(settings: RunSettings, staged: StagedRun) -> CommittedRun:
    """Step 4: commit the staged files to ``OUTPUT/RUN_ID``; ``_SUCCESS`` last.

    Raises:
        FailureBudgetExceeded: more than ``settings.max_failed_fraction`` of the images failed;
            the staged files stay under ``_staging/`` for inspection and nothing is committed.
    """
    n_listed = staged.n_predicted + staged.n_failed
    if n_listed and staged.n_failed / n_listed > settings.max_failed_fraction:
        raise FailureBudgetExceeded(
            f"{staged.n_failed} of {n_listed} images failed ({staged.n_failed / n_listed:.1%}), over the "
            f"--max-failed-fraction of {settings.max_failed_fraction:.1%}; nothing was committed; "
            f"the failures are listed in {staged.failures_file}"
        )
    return commit(staged, settings.run_uri(), storage_options(settings), run_id=settings.run_id, model=settings.model)


def _rounded(value: float) -> float | None:
    """Three decimals; None (JSON null) for NaN."""
    return None if math.isnan(value) else round(value, 3)


def _stage_fields(stage: StageResult | None) -> dict:
    """The report's ``stage_*`` and plan fields; null when nothing was computed."""
    if stage is None:
        keys = ("stage_seconds", "stage_images_per_second", "stage_first_batch_seconds",
                "stage_steady_images_per_second", "device", "num_actors", "batch_size", "runtime")
        return dict.fromkeys(keys)
    return {
        "stage_seconds": round(stage.wall_seconds, 3),
        "stage_images_per_second": round(stage.n_input / stage.wall_seconds, 3) if stage.wall_seconds > 0 else math.nan,
        "stage_first_batch_seconds": _rounded(stage.first_batch_seconds),
        "stage_steady_images_per_second": _rounded(stage.steady_images_per_second),
        "device": stage.plan.device,
        "num_actors": stage.plan.num_actors,
        "batch_size": stage.plan.batch_size,
        "runtime": stage.plan.runtime,
    }


def report_step(
    settings: RunSettings, listing: Listing, committed: CommittedRun, outcome: InferenceOutcome, *, wall_seconds: float
) -> dict:
    """Step 5: score the committed predictions; write ``report.json`` and ``report.md``.

    Args:
        wall_seconds: the run's wall time so far, seconds (listing to commit).

    Returns:
        the report (also in ``report.json``); see the README for its fields.
    """
    storage = storage_options(settings)
    table = read_committed(committed.run_uri, storage, columns=["label_index", "pred_index", "top5_index"])
    label_index = table.column("label_index").fill_null(-1).to_numpy()
    pred_index = table.column("pred_index").to_numpy()
    top5 = table.column("top5_index").combine_chunks().flatten().to_numpy().reshape(-1, 5)
    scores = report_lib.accuracy(label_index, pred_index, top5, imagenet())
    n_listed = len(listing.records)
    report = {
        "run_id": settings.run_id,
        "model": settings.model,
        "input": settings.input,
        "run_uri": committed.run_uri,
        "n_listed": n_listed,
        "n_predicted": committed.n_predicted,
        "n_failed": committed.n_failed,
        "n_ignored": listing.n_ignored,
        "n_reused": outcome.staged.n_reused,
        "n_computed": n_listed - outcome.staged.n_reused,
        "reused_from": list(outcome.reused_from),
        **scores,
        "wall_seconds": round(wall_seconds, 3),
        "images_per_second": round(n_listed / wall_seconds, 3) if wall_seconds > 0 else math.nan,
        **_stage_fields(outcome.stage),
    }
    write_bytes(join(committed.run_uri, "report.json"), report_lib.to_json(report), storage)
    write_bytes(join(committed.run_uri, "report.md"), report_lib.render_markdown(report).encode(), storage)
    return report


