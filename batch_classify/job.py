"""The five steps of a run as plain functions, no Prefect in them.

``tasks`` wraps each in a Prefect task (retries, tags, artifacts); ``flows``
orders them. Each takes the run's :class:`~batch_classify.settings.RunSettings`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_classify import report as report_lib
from batch_classify.engines import onnx_model, resolve_runtime
from batch_classify.errors import PermanentError
from batch_classify.report_html import calibration_fields, write_report_html
from batch_classify.inference import TOP_K, Classifier, StageResult, decode_batch, run_stage
from batch_classify.listing import NO_LABELS, Listing, list_images
from batch_classify.model_folder import CONFIG_FILE
from batch_classify.models import ModelError, get_spec
from batch_classify.plan import ClusterPlan, plan_cluster
from batch_classify.reading import EndpointUnreachable
from batch_classify.results import (
    SUCCESS,
    CommittedRun,
    CorruptRun,
    StagedRun,
    StagingWriter,
    commit,
    committed_manifest,
    read_committed,
    read_failures,
)
from batch_classify.reuse import find_reusable, latest_committed_run, model_identity
from batch_classify.settings import RunSettings
from batch_classify.storage import StorageOptions, describe_endpoint, join, read_bytes, write_bytes
from batch_classify.vocabulary import AmbiguousLabel, Vocabulary

log = logging.getLogger(__name__)


class SampleRejected(PermanentError, RuntimeError):
    """The sample batch shows the run cannot succeed (model output, labels, undecodable input)."""


class FailureBudgetExceeded(PermanentError, RuntimeError):
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
        label_map: every distinct label → the model's class index; empty in an unlabelled run.
        sample_paths: images classified in the sample.
        sample_predictions: class names predicted for them (None where the image failed).
        sample_failures: path → error for sample images that failed.
        unlabelled_reason: why the run has no labels (said once in the log and the report), or
            None for a labelled run.
    """

    label_map: dict[str, int]
    sample_paths: tuple[str, ...]
    sample_predictions: tuple[str | None, ...]
    sample_failures: dict[str, str] = field(default_factory=dict)
    unlabelled_reason: str | None = None


def map_labels(listing: Listing, vocabulary: Vocabulary) -> tuple[dict[str, int], str | None]:
    """Decide whether the run is labelled, and map its labels onto the model's classes.

    - ``--labels none``: unlabelled.
    - A manifest: every label must map (as before).
    - Folder names: they are labels only when they name the model's classes. None maps (date
      partitions, camera ids, ``incoming/``): the run is unlabelled. Some map and others do not:
      a likely typo in an evaluation set, so the run stops, naming them (``--labels none`` forces
      an unlabelled run). A name that several classes share stops the run in any case.

    Returns:
        (label → class index, empty when unlabelled; the reason the run is unlabelled, or None).

    Raises:
        LabelError: labels that do not map (all of them named), or an ambiguous one.
    """
    labels = {r.label for r in listing.records if r.label is not None}
    if listing.label_source == NO_LABELS:
        return {}, "--labels none: the run is unlabelled"
    if listing.label_source == "folders":
        if not labels:
            return {}, "no image lies in a folder that could name its class (only the input itself or partition folders); the run is unlabelled"
        mapping, problems = vocabulary.try_map(labels)
        ambiguous = [e for e in problems.values() if isinstance(e, AmbiguousLabel)]
        if not mapping and not ambiguous:
            shown = ", ".join(repr(label) for label in sorted(labels)[:3]) + (", …" if len(labels) > 3 else "")
            return {}, f"folder names are not class names ({shown}); the run is unlabelled"
    return (vocabulary.map_labels(labels) if labels else {}), None


def validate_step(settings: RunSettings, listing: Listing) -> Validation:
    """Step 2: check the model, decide whether the run is labelled and map the labels (see
    :func:`map_labels`), then decode and classify a small sample in this process.

    Raises:
        LabelError: labels that do not map onto the model's classes (all of them named).
        ModelError: unknown model, missing weights, or a model folder that is incomplete or
            inconsistent (the message names the file).
        SampleRejected: wrong logits shape (e.g. ``id2label`` not the width of the logits) or
            non-finite logits, or no sample image decodes.
        EndpointUnreachable: no sample image could be read because the storage did not answer
            (connection refused or timed out): not permanent, the task retries.
    """
    storage = storage_options(settings)
    spec = get_spec(settings.model, storage)
    vocabulary = spec.vocabulary()
    if spec.num_classes != vocabulary.num_classes:
        raise SampleRejected(f"model {spec.name} has {spec.num_classes} classes; ImageNet has {vocabulary.num_classes}")
    label_map, unlabelled_reason = map_labels(listing, vocabulary)
    if unlabelled_reason:
        log.warning("%s", unlabelled_reason)

    n = min(settings.sample_size, len(listing.records))
    step = max(1, len(listing.records) // n)
    sample = [listing.records[i * step] for i in range(n)]
    batch = decode_batch(
        {"path": np.array([r.path for r in sample], dtype=object), "label": np.array([r.label for r in sample], dtype=object)},
        preset=spec.preset,
        storage=storage,
        max_pixels=settings.max_image_pixels,
        read_timeout=settings.read_timeout,
    )
    failures = {str(p): str(e) for p, e in zip(batch["path"], batch["error"], strict=True) if e}
    if len(failures) == n:
        shown = "; ".join(f"{p}: {e}" for p, e in list(failures.items())[:3])
        if bool(np.all(batch["unreachable"])):  # storage down, not bad files: a retry may pass
            endpoint = describe_endpoint(str(batch["path"][0]), storage)
            raise EndpointUnreachable(
                f"{endpoint} is unreachable: none of the {n} sample images could be read ({shown})", endpoint=endpoint
            )
        raise SampleRejected(f"none of the {n} sample images could be read and decoded ({shown})")
    ok = np.flatnonzero(batch["error"] == "")
    try:
        blob = None
        if resolve_runtime(settings.runtime, "cpu", onnx_only=spec.onnx_only) == "onnx":
            blob = onnx_model(spec.name, settings.weights, storage, cache_dir=settings.cache_dir)
        classifier = Classifier(
            model_name=spec.name, weights=settings.weights, storage=storage, runtime=settings.runtime, onnx_blob=blob
        )
        logits = classifier.logits(batch["image"][ok])
    except ModelError:
        raise
    except Exception as err:  # noqa: BLE001 - the runtime's own error types; the model cannot run
        raise SampleRejected(f"model {spec.name} could not be loaded or failed on the sample: {type(err).__name__}: {err}") from err
    if tuple(logits.shape) != (len(ok), spec.num_classes):
        where = f" but {CONFIG_FILE} names {spec.num_classes} classes (id2label)" if spec.folder else ""
        raise SampleRejected(
            f"model {spec.name} returned logits {tuple(logits.shape)}, expected ({len(ok)}, {spec.num_classes}){where}"
        )
    if not bool(np.isfinite(logits).all()):
        raise SampleRejected(f"model {spec.name} returned non-finite logits on the sample; check the weights file")
    preds: list[str | None] = [None] * n
    for j, i in enumerate(ok):
        preds[i] = vocabulary.names[int(logits[j].argmax())]
    return Validation(
        label_map=label_map,
        sample_paths=tuple(r.path for r in sample),
        sample_predictions=tuple(preds),
        sample_failures=failures,
        unlabelled_reason=unlabelled_reason,
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
        # address="local": a new Ray for this run, even where a stale /tmp/ray/ray_current_cluster
        # names some other cluster (Ray would otherwise try to join it).
        ray.init(address="local", num_cpus=settings.num_cpus, **kwargs)
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


def inference_step(
    settings: RunSettings,
    listing: Listing,
    label_map: dict[str, int],
    progress: Callable[[int, int], None] | None = None,
) -> InferenceOutcome:
    """Step 3: reuse what may be reused, run the Ray Data stage on the rest; output streams into
    staging files under ``OUTPUT/RUN_ID/_staging``.

    Reused: predictions of a crashed attempt of this run id (``settings.resume``) and of the
    latest committed run on the same input (``settings.incremental``), where the image's content
    identity and the model identity are unchanged (see :mod:`batch_classify.reuse`).

    This runs the stage from this process (local Ray, or a cluster it joins as the driver). For an
    ``http(s)://`` ``settings.ray_address`` (the Jobs API), :func:`batch_classify.cluster.run_inference_job`
    runs this same function inside the cluster as a Ray Job; the Prefect task picks one of the two.

    ``progress(done, total)`` is called after each output batch (images predicted or failed so
    far, reused ones included; all listed images), on local Ray and a cluster driver only.

    Raises:
        RuntimeError: the output does not hold every listed image exactly once, and one ``list``
            failure per folder the listing could not list.
        EndpointUnreachable: the input's storage stopped answering (the read circuit breaker of
            :func:`batch_classify.inference.run_stage`); the predictions made so far stay staged for
            a resumed attempt (not deterministic: the Prefect task retries once, resuming).
    """
    storage = storage_options(settings)
    spec = get_spec(settings.model, storage)
    model_id = model_identity(settings.model, settings.weights, storage)
    label_classes = sorted(set(label_map.values())) or None
    reusable = find_reusable(
        listing.records,
        run_uri=settings.run_uri(),
        output=settings.output,
        input=settings.input,
        model_id=model_id,
        storage=storage,
        incremental=settings.incremental,
        resume=settings.resume,
        label_classes=label_classes,
    )
    writer = StagingWriter(
        settings.run_uri(),
        run_id=settings.run_id,
        model=settings.model,
        vocabulary=spec.vocabulary(),
        label_map=label_map,
        storage=storage,
        records={r.path: r for r in listing.records},
        partition_keys=listing.partition_keys,
        meta={
            "input": settings.input, "model_id": model_id, "label_classes": label_classes,
            "partition_keys": list(listing.partition_keys),
        },
        rows_per_file=settings.checkpoint_rows,
    )
    writer.write_reused(reusable.table)
    reused = reusable.paths
    todo = [{"path": r.path, "label": r.label} for r in listing.records if r.path not in reused]
    log.info("%d images reused from %s; %d to compute", len(reused), list(reusable.sources), len(todo))
    total = len(listing.records)

    def on_batch(batch: dict) -> None:
        writer.write(batch)
        if progress is not None:
            progress(writer.n_predicted + writer.n_failed, total)

    if progress is not None:
        progress(len(reused), total)

    try:
        stage = _run_ray_stage(settings, storage, todo, on_batch, label_classes, onnx_only=spec.onnx_only) if todo else None
    except EndpointUnreachable as err:
        raise _stopped_unreachable(err, writer, settings) from err
    writer.write_list_failures(listing.list_failures)  # one failure per folder the listing could not list
    staged = writer.close()
    if staged.n_predicted + staged.n_failed != len(listing.records) + len(listing.list_failures):
        raise RuntimeError(
            f"{len(listing.records)} images listed and {len(listing.list_failures)} folders not listable but "
            f"{staged.n_predicted} predicted + {staged.n_failed} failed"
        )
    return InferenceOutcome(staged=staged, stage=stage, reused_from=reusable.sources)


def _stopped_unreachable(err: EndpointUnreachable, writer: StagingWriter, settings: RunSettings) -> EndpointUnreachable:
    """The stage stopped on unreachable storage: close the open staged file (so a resumed attempt
    reuses every prediction computed so far) and say, in one line, what to do."""
    try:
        staged = writer.close()
        kept = f"the {staged.n_predicted} predictions made so far are staged under {staged.staging_uri}"
    except Exception as close_err:  # noqa: BLE001 - the output may lie behind the same dead endpoint
        kept = f"the staged files closed before it are kept (closing the last one failed: {type(close_err).__name__})"
    resume = "" if settings.resume else " --resume"
    return EndpointUnreachable(
        f"{err}; nothing was committed; {kept}; once it answers, run again with --run-id {settings.run_id}{resume} "
        "to reuse them",
        endpoint=err.endpoint,
    )


def _run_ray_stage(
    settings: RunSettings,
    storage: StorageOptions,
    todo: list[dict],
    on_batch: Callable[[dict], None],
    label_classes: list[int] | None,
    *,
    onnx_only: bool,
) -> StageResult:
    import ray

    started = _ray_init(settings)
    try:
        plan: ClusterPlan = plan_cluster(
            ray.cluster_resources(),
            device=settings.device,
            num_actors=settings.num_actors,
            runtime=settings.runtime,
            batch_size=settings.batch_size,
            onnx_only=onnx_only,
            decode=settings.decode,
            preset=get_spec(settings.model, storage).preset,
        )
        log.info("inference plan: %s", plan)
        blob = None
        if plan.runtime == "onnx":
            blob = onnx_model(settings.model, settings.weights, storage, cache_dir=settings.cache_dir)
        return run_stage(
            todo,
            onnx_blob=blob,
            model_name=settings.model,
            weights=settings.weights,
            storage=storage,
            plan=plan,
            compile=settings.compile,
            max_pixels=settings.max_image_pixels,
            on_batch=on_batch,
            restricted_classes=tuple(label_classes) if label_classes else None,
            read_timeout=settings.read_timeout,
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
    settings: RunSettings,
    listing: Listing,
    committed: CommittedRun,
    outcome: InferenceOutcome,
    *,
    wall_seconds: float,
    unlabelled_reason: str | None = None,
) -> dict:
    """Step 5: score the committed predictions, compare with the previous committed run on the
    same input, and write ``report.json``, ``report.md`` and ``report.html``.

    Args:
        wall_seconds: the run's wall time so far, seconds (listing to commit).
        unlabelled_reason: why the run has no labels (:attr:`Validation.unlabelled_reason`).

    Returns:
        the report (also in ``report.json``); see the README for its fields.
    """
    storage = storage_options(settings)
    n_listed = len(listing.records)
    report = {
        "run_id": settings.run_id,
        "model": settings.model,
        "input": settings.input,
        "run_uri": committed.run_uri,
        "labels": listing.label_source if unlabelled_reason is None else "none",
        "unlabelled_reason": unlabelled_reason,
        "partition_keys": list(listing.partition_keys),
        "manifest_rows": listing.manifest_rows,
        "manifest_matched": listing.manifest_matched,
        "n_listed": n_listed,
        "n_predicted": committed.n_predicted,
        "n_failed": committed.n_failed,
        "n_list_failed": len(listing.list_failures),
        "n_ignored": listing.n_ignored,
        "n_reused": outcome.staged.n_reused,
        "n_computed": n_listed - outcome.staged.n_reused,
        "reused_from": list(outcome.reused_from),
        "wall_seconds": round(wall_seconds, 3),
        "images_per_second": round(n_listed / wall_seconds, 3) if wall_seconds > 0 else math.nan,
        **_stage_fields(outcome.stage),
    }
    return score_and_write(
        report, storage, vocabulary=get_spec(settings.model, storage).vocabulary(),
        max_top1_drop=settings.max_top1_drop, max_drift=settings.max_drift, low_confidence=settings.low_confidence,
    )


def score_and_write(
    report: dict,
    storage: StorageOptions,
    *,
    vocabulary: Vocabulary,
    max_top1_drop: float,
    max_drift: float | None,
    low_confidence: float,
) -> dict:
    """Fill ``report`` (which names ``run_uri`` and ``input``) with the scores of the committed
    predictions (accuracy where there are labels, the label-free statistics always) and the
    comparison with the previous run, then write the report files.

    Args:
        vocabulary: the run's model's classes.

    Returns:
        the report, as written to ``report.json``.

    Raises:
        FileNotFoundError: the run is not committed.
    """
    run_uri = report["run_uri"]
    table = read_committed(run_uri, storage)  # every column: the page's gallery needs paths and labels too
    label_index = table.column("label_index").fill_null(-1).to_numpy()
    pred_index = table.column("pred_index").to_numpy()
    confidence = table.column("confidence").to_numpy()
    report |= _accuracy(table, vocabulary)
    report |= report_lib.restricted_accuracy(label_index, table.column("restricted_index").fill_null(-1).to_numpy())
    report |= calibration_fields(label_index, pred_index, confidence)
    pred_names = _pred_names(table)
    report |= _label_free(table, low_confidence, pred_names)
    report["comparison"] = _compare_with_previous(
        report, pred_names, storage, max_top1_drop=max_top1_drop, max_drift=max_drift, low_confidence=low_confidence
    )
    # report.json last: it is the report's commit point (report.md and report.html beside a missing
    # report.json are what a run killed while reporting left; the next report step replaces them)
    write_bytes(join(run_uri, "report.md"), report_lib.render_markdown(report).encode(), storage)
    write_report_html(run_uri, report, storage, predictions=table, vocabulary=vocabulary)
    write_bytes(join(run_uri, "report.json"), report_lib.to_json(report), storage)
    return report


def _top5_matrix(column) -> np.ndarray:
    """int64 [N, 5] of a ``top5_index`` list column; -1 where a row holds fewer (a model with fewer classes)."""
    lists = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy()
    flat = lists.flatten().to_numpy()
    if len(lengths) and (lengths == TOP_K).all():
        return flat.reshape(-1, TOP_K)
    out = np.full((len(lengths), TOP_K), -1, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
    for row, (start, n) in enumerate(zip(starts, lengths)):
        out[row, : min(n, TOP_K)] = flat[start : start + min(n, TOP_K)]
    return out


def _accuracy(table, vocabulary: Vocabulary) -> dict:
    """:func:`batch_classify.report.accuracy` of committed predictions (``label_index``,
    ``pred_index``, ``top5_index`` columns)."""
    return report_lib.accuracy(
        table.column("label_index").fill_null(-1).to_numpy(),
        table.column("pred_index").to_numpy(),
        _top5_matrix(table.column("top5_index")),
        vocabulary,
    )


def _pred_names(table) -> np.ndarray:
    """object [N]: the ``pred_label`` column (class names, compared across runs and models)."""
    return np.asarray(table.column("pred_label").to_pylist(), dtype=object)


def _label_free(table, low_confidence: float, pred_names: np.ndarray) -> dict:
    """:func:`batch_classify.report.label_free` of committed predictions (``pred_names`` from
    :func:`_pred_names`, ``confidence``, ``entropy`` columns; a null entropy, from rows written
    before it existed, is NaN)."""
    return report_lib.label_free(
        pred_names,
        table.column("confidence").to_numpy(),
        table.column("entropy").cast(pa.float32()).fill_null(np.nan).to_numpy(),
        low_confidence=low_confidence,
    )


def _previous_scores(previous: str, storage: StorageOptions, table, pred_names: np.ndarray, low_confidence: float) -> dict:
    """The previous run's report for the comparison: its ``report.json`` over the label-free
    statistics of its predictions (older reports lack them); scored here when it has no report.json
    (its report step never ran), with its own model's classes."""
    scores = {"model": committed_manifest(previous, storage).get("model")}
    scores |= _label_free(table, low_confidence, pred_names)
    try:
        return scores | json.loads(read_bytes(join(previous, "report.json"), storage))
    except FileNotFoundError:
        pass
    try:
        return scores | _accuracy(table, get_spec(scores["model"], storage).vocabulary())
    except ModelError as err:  # its model folder is gone: top-1 without the per-class figures
        log.warning("previous run %s: its model %s is not readable (%s); comparing top-1 only", previous, scores["model"], err)
        y = table.column("label_index").fill_null(-1).to_numpy()
        labelled = y >= 0
        top1 = float((table.column("pred_index").to_numpy()[labelled] == y[labelled]).mean()) if labelled.any() else None
        return scores | {"top1": top1, "top5": None, "per_class": []}


def _compare_with_previous(
    report: dict,
    pred_names: np.ndarray,
    storage: StorageOptions,
    *,
    max_top1_drop: float,
    max_drift: float | None,
    low_confidence: float,
) -> dict | None:
    """The comparison with the latest run committed before this one under the same output on the
    same input (any model); None when there is none. ``pred_names``: this run's predicted class names."""
    run_uri = report["run_uri"]
    output, run_id = run_uri.rstrip("/").rsplit("/", 1)
    manifest = committed_manifest(run_uri, storage)
    previous = latest_committed_run(
        output, input=report["input"], model_id=None, storage=storage, exclude_run_id=run_id,
        before=manifest.get("committed_at"),
    )
    if previous is None:
        return None
    try:
        previous_pred = read_committed(
            previous, storage, columns=["label_index", "pred_index", "pred_label", "top5_index", "confidence", "entropy"]
        )
    except CorruptRun as err:
        log.warning("no comparison with %s: %s", previous, err)
        return None
    previous_names = _pred_names(previous_pred)
    return report_lib.compare(
        report,
        _previous_scores(previous, storage, previous_pred, previous_names, low_confidence),
        pred_names,
        previous_names,
        previous_run_uri=previous,
        max_top1_drop=max_top1_drop,
        max_drift=max_drift,
    )


def rerender_report(
    run_uri: str,
    storage: StorageOptions,
    *,
    max_top1_drop: float | None = None,
    max_drift: float | None = None,
    low_confidence: float | None = None,
) -> dict:
    """Score a committed run again and rewrite its report files (``batch-classify report``).

    The thresholds default to :class:`RunSettings`' defaults.

    Facts only the run itself knew (wall time, listing, stage timings, why it was unlabelled) are
    kept from its ``report.json``; without one they are left out. Scores and the comparison with
    the run committed before it are computed afresh, with the classes of the run's model (a model
    folder must still be readable).

    Raises:
        FileNotFoundError: ``run_uri`` holds no committed run (no ``_SUCCESS``).
        CorruptRun: the run is not whole (a file ``_SUCCESS`` names is missing or damaged, or
            ``_SUCCESS`` itself is); the message names the file.
        ModelError: the run's model folder cannot be read.
    """
    run_uri = run_uri.rstrip("/")
    manifest = committed_manifest(run_uri, storage)
    n_failures = read_failures(run_uri, storage).num_rows
    if n_failures != manifest.get("n_failed", n_failures):
        raise CorruptRun(f"{run_uri}/{manifest.get('failures_file')} holds {n_failures} failures, {SUCCESS} says "
                         f"{manifest['n_failed']}; run the run id again")
    try:
        report = json.loads(read_bytes(join(run_uri, "report.json"), storage))
    except FileNotFoundError:
        report = {
            "n_listed": manifest["n_predicted"] + manifest["n_failed"],
            "n_ignored": None,
            "wall_seconds": None,
            "images_per_second": None,
        }
    report |= {
        "run_id": manifest.get("run_id", run_uri.rsplit("/", 1)[-1]),
        "model": manifest.get("model"),
        "input": manifest.get("input", report.get("input")),
        "run_uri": run_uri,
        "n_predicted": manifest["n_predicted"],
        "n_failed": manifest["n_failed"],
        "n_reused": manifest.get("n_reused", 0),
    }
    vocabulary = get_spec(report["model"], storage).vocabulary()
    default = lambda name, given: RunSettings.model_fields[name].default if given is None else given  # noqa: E731
    return score_and_write(
        report, storage, vocabulary=vocabulary, max_top1_drop=default("max_top1_drop", max_top1_drop),
        max_drift=default("max_drift", max_drift), low_confidence=default("low_confidence", low_confidence),
    )
