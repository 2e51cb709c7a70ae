"""The five steps of a run as plain functions, no Prefect in them: :func:`list_dataset`,
:func:`validate`, :func:`infer`, :func:`persist`, :func:`report`.

``batch_classify.tasks`` wraps each in the Prefect task of the same name (``list-dataset``,
``validate``, ``infer``, ``persist``, ``report``: retries, tags, artifacts); ``flows`` orders them.
Each takes the run's :class:`~batch_classify.settings.RunSettings`. :func:`infer` runs the stage in this
process (:mod:`batch_classify.stage.local`, where :func:`batch_classify.stage.plan.choose_executor` says so), on a
local Ray, or on the cluster this process is the driver of; as a Ray Job, :mod:`batch_classify.run.cluster`
submits :mod:`batch_classify.run.stage_job`, which calls :func:`infer` there.

Longer than 400 lines: the five steps, in the flow's order, with the few helpers only they use (the
labels' mapping, the stage's start, the one-line reasons of a stopped stage); each step's work lives in
the modules it calls.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from batch_classify.stage.engines import onnx_model, resolve_runtime
from batch_classify.errors import ConfigError, PermanentError
from batch_classify.stage.inference import Classifier, decode_batch, run_stage
from batch_classify.run.layout import MANIFEST
from batch_classify.listed import ListedImages
from batch_classify.listing import NO_LABELS, Listing, list_images
from batch_classify.models.folder import CONFIG_FILE
from batch_classify.models.registry import ModelError, ModelSpec, get_spec
from batch_classify.stage.local import run_local_stage
from batch_classify.stage.plan import ClusterPlan, choose_executor, plan_cluster, plan_local
from batch_classify.stage.quantize import Int8Model, int8_model
from batch_classify.stage.ray_logs import LoggerLike
from batch_classify.stage.ray_start import start_ray, stop_ray, stop_ray_ahead
from batch_classify.stage.reading import EndpointUnreachable
from batch_classify.report.build import build_report
from batch_classify.run.results import (
    InferenceOutcome,
    CommittedRun,
    StagedRun,
    StagingWriter,
    commit,
    committed_attempt,
)
from batch_classify.run.reuse import find_reusable, model_identity
from batch_classify.run.staged_parts import WRITE_ROWS, PartWriter, stage_columns, write_stage_input
from batch_classify.settings import RunSettings
from batch_classify.stage.output import StageResult
from batch_classify.run.table import check_table, publish_run
from batch_classify.storage import StorageFull, StorageOptions, describe_endpoint, no_space
from batch_classify.models.vocabulary import AmbiguousLabel, Vocabulary

log = logging.getLogger(__name__)


class SampleRejected(PermanentError, RuntimeError):
    """The sample batch shows the run cannot succeed (model output, labels, undecodable input)."""


class FailureBudgetExceeded(PermanentError, RuntimeError):
    """More images failed than ``max_failed_fraction`` allows; nothing was committed."""


def list_dataset(settings: RunSettings) -> Listing:
    """Step 1: refuse a ``--table`` folder that is not the table's (:func:`batch_classify.run.table.check_table`),
    then list the images under ``settings.input`` (see :func:`batch_classify.listing.list_images`),
    leaving out the run's own output and table where they lie inside it.

    Raises:
        batch_classify.run.table.TableFolderTaken: ``settings.table`` holds other files and no Delta table.
        batch_classify.listing.ListingError: see ``list_images``.
    """
    if settings.table:
        check_table(settings.table, settings.storage_options())
    return list_images(
        settings.input, settings.storage_options(), labels_uri=settings.labels, limit=settings.limit,
        exclude=(settings.output, *([settings.table] if settings.table else [])),
    )


@dataclass(frozen=True)
class Validation:
    """Step 2's findings.

    Attributes:
        spec: the model, resolved here once for the run (:func:`batch_classify.models.registry.get_spec`):
            the later steps take it as it is, so a model folder is read once and every step uses the
            same folder.
        label_map: every distinct label → the model's class index; empty in an unlabelled run.
        sample_paths: images classified in the sample.
        sample_predictions: class names predicted for them (None where the image failed).
        sample_failures: path → error for sample images that failed.
        unlabelled_reason: why the run has no labels (said once in the log and the report), or
            None for a labelled run.
    """

    spec: ModelSpec
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
    labels = listing.records.labels()
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


def validate(settings: RunSettings, listing: Listing) -> Validation:
    """Step 2: resolve the model (the one place a run does: :attr:`Validation.spec`), decide whether
    the run is labelled and map the labels (see :func:`map_labels`), then decode and classify a small
    sample in this process.

    Raises:
        LabelError: labels that do not map onto the model's classes (all of them named).
        ModelError: unknown model, missing weights, or a model folder that is incomplete or
            inconsistent (the message names the file).
        SampleRejected: wrong logits shape (e.g. ``id2label`` not the width of the logits) or
            non-finite logits, or no sample image decodes.
        EndpointUnreachable: no sample image could be read because the storage did not answer
            (connection refused or timed out): not permanent, the task retries.
    """
    storage = settings.storage_options()
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
            blob = onnx_model(spec, settings.weights, storage, cache_dir=settings.cache_dir)
        classifier = Classifier(
            spec=spec, weights=settings.weights, storage=storage, runtime=settings.runtime, onnx_blob=blob
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
        spec=spec,
        label_map=label_map,
        sample_paths=tuple(r.path for r in sample),
        sample_predictions=tuple(preds),
        sample_failures=failures,
        unlabelled_reason=unlabelled_reason,
    )


def infer(
    settings: RunSettings,
    listing: Listing,
    label_map: dict[str, int],
    spec: ModelSpec,
    progress: Callable[[int, int], None] | None = None,
    logger: LoggerLike | None = None,
) -> InferenceOutcome:
    """Step 3: reuse what may be reused, run the Ray Data stage on the rest; output streams into
    staging files under ``OUTPUT/RUN_ID/_staging``.

    Reused: predictions of a crashed attempt of this run id (``settings.resume``) and of the
    latest committed run on the same input (``settings.incremental``), where the image's content
    identity and the model identity are unchanged (see :mod:`batch_classify.run.reuse`).

    This runs the stage from this process (in it, on a local Ray, or on a cluster it joins as the driver:
    :func:`batch_classify.stage.plan.choose_executor`). For an
    ``http(s)://`` ``settings.ray_address`` (the Jobs API), :func:`batch_classify.run.cluster.run_inference_job`
    runs this same function inside the cluster as a Ray Job; the Prefect task picks one of the two.

    ``spec`` is the model as :func:`validate` resolved it (:attr:`Validation.spec`).
    ``progress(done, total)`` is called after each output batch (images predicted or failed so
    far, reused ones included; all listed images), on local Ray and a cluster driver only.
    ``logger`` (a :class:`logging.Logger` or adapter; default: :mod:`batch_classify.stage.inference`'s)
    gets Ray Data's warnings, its summary lines and a progress line every 10 s
    (:func:`batch_classify.stage.ray_logs.stage_logging`).

    Raises:
        RuntimeError: the output does not hold every listed image exactly once, and one ``list``
            failure per folder the listing could not list.
        KeyboardInterrupt: Ctrl-C or SIGTERM (:class:`batch_classify.errors.Terminated`). On this and
            every other way out of the stage (Prefect's cancellation, a failed stage) the staged files
            are closed first, so that the run id's next attempt, or the task's retry, resumes from them.
        batch_classify.storage.StorageFull: writing the staged files hit a full device or a limit.
        EndpointUnreachable: the input's storage stopped answering (the read circuit breaker of
            :func:`batch_classify.stage.inference.run_stage`); the predictions made so far stay staged for
            a resumed attempt (not deterministic: the Prefect task retries once, resuming).
    """
    storage = settings.storage_options()
    model_id = model_identity(spec, settings.weights, storage)
    int8 = _int8_model(settings, listing, storage, spec) if settings.precision == "int8" else None
    if int8 is not None:  # int8 predictions are another model's: --incremental never mixes them with float32 ones
        model_id = f"{model_id}+int8:{int8.digest}"
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
        records=listing.records,
        partition_keys=listing.partition_keys,
        meta={
            "input": settings.input, "model_id": model_id, "label_classes": label_classes,
            "partition_keys": list(listing.partition_keys), "limit": settings.limit,
        },
        rows_per_file=settings.checkpoint_rows,
    )
    writer.write_reused(reusable.table)
    n_reused = reusable.table.num_rows
    todo = listing.records.without(reusable.table.column("path"))
    log.info("%d images reused from %s; %d to compute", n_reused, list(reusable.sources), len(todo))
    total = len(listing.records)

    def staged(take: Callable[[dict], None]) -> Callable[[dict], None]:
        def on_batch(batch: dict) -> None:  # an output batch (local stage) or a written file's summary (Ray's)
            take(batch)
            if progress is not None:
                progress(writer.n_predicted + writer.n_failed, total)
        return on_batch

    if progress is not None:
        progress(n_reused, total)

    try:
        stage = _run_stage(settings, storage, todo, writer, staged, label_classes, spec=spec, logger=logger,
                           int8=int8) if todo else None
    except EndpointUnreachable as err:
        raise _stopped_unreachable(err, writer, settings) from err
    except BaseException as err:  # Ctrl-C, SIGTERM, Prefect's cancellation, a failed stage: the next attempt resumes
        kept, close_error = writer.close_after_stop()
        if close_error:
            log.warning("could not close the staged file: %s", close_error)
        else:
            (logger or log).info(
                "the stage stopped (%s): %d of %d images staged under %s are kept; a run with run id %s resumes from them",
                type(err).__name__, kept.n_predicted + kept.n_failed, total, writer.staging_uri, settings.run_id,
            )
        if isinstance(err, Exception) and (full := no_space(err)):
            raise StorageFull(
                f"writing the staged predictions under {writer.staging_uri} failed: {full}; nothing was committed; "
                f"free space (or raise the limit), then run again with --run-id {settings.run_id} to resume"
            ) from err
        raise
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
    staged, close_error = writer.close_after_stop()
    kept = (f"the {staged.n_predicted} predictions made so far are staged under {staged.staging_uri}" if staged else
            f"the staged files closed before it are kept (closing the last one failed: {close_error.split(':')[0]})")
    resume = "" if settings.resume else " --resume"
    return EndpointUnreachable(
        f"{err}; nothing was committed; {kept}; once it answers, run again with --run-id {settings.run_id}{resume} "
        "to reuse them",
        endpoint=err.endpoint,
    )


def _run_stage(
    settings: RunSettings,
    storage: StorageOptions,
    todo: ListedImages,
    writer: StagingWriter,
    staged: Callable[[Callable[[dict], None]], Callable[[dict], None]],
    label_classes: list[int] | None,
    *,
    spec: ModelSpec,
    logger: LoggerLike | None = None,
    int8: Int8Model | None = None,
) -> StageResult:
    """The stage where :func:`batch_classify.stage.plan.choose_executor` puts it: in this process (its
    output batches into ``writer``), or Ray Data's (its workers write the staged files; ``writer`` records
    them). ``staged(take)``: ``take`` with the run's progress after it. ``int8``: the quantized model
    (``--precision int8``), run instead of the float32 export."""
    executor = choose_executor(settings.executor, n_images=len(todo), ray_address=settings.ray_address, device=settings.device)
    if executor == "ray":
        return _run_ray_stage(settings, storage, todo, writer, staged(writer.add_written), label_classes, spec=spec,
                              logger=logger, int8=int8)
    stop_ray_ahead()  # a Ray started ahead for a larger run (--executor auto guessed from the input): not needed
    plan = plan_local(settings.num_cpus or os.cpu_count() or 1, runtime=settings.runtime, batch_size=settings.batch_size,
                      onnx_only=spec.onnx_only)
    return run_local_stage(stage_columns(todo).to_pylist(), **_stage_arguments(settings, storage, spec, plan, int8, label_classes,
                                                       staged(writer.write), logger))


def _stage_arguments(settings: RunSettings, storage: StorageOptions, spec: ModelSpec, plan: ClusterPlan, int8: Int8Model | None,
                     label_classes: list[int] | None, on_batch: Callable[[dict], None], logger: LoggerLike | None) -> dict:
    """What both stages take from the run (logs the plan they run)."""
    plan = _with_precision(plan, int8)
    log.info("inference plan: %s", plan)
    return {
        "onnx_blob": _stage_blob(settings, storage, spec, plan, int8),
        "spec": spec,
        "weights": settings.weights,
        "storage": storage,
        "plan": plan,
        "compile": settings.compile,
        "max_pixels": settings.max_image_pixels,
        "on_batch": on_batch,
        "restricted_classes": tuple(label_classes) if label_classes else None,
        "read_timeout": settings.read_timeout,
        "logger": logger,
    }


def _int8_model(settings: RunSettings, listing: Listing, storage: StorageOptions, spec: ModelSpec) -> Int8Model:
    """The int8 model of ``--precision int8``, calibrated on ``settings.calibration``'s photos, else the input's.

    Raises:
        Int8Rejected: see :func:`batch_classify.stage.quantize.int8_model`.
        ListingError: ``settings.calibration`` holds no image.
    """
    if settings.calibration:
        paths = list_images(settings.calibration, storage, labels_uri=NO_LABELS).records.paths()
    else:
        paths = listing.records.paths()
    blob = onnx_model(spec, settings.weights, storage, cache_dir=settings.cache_dir)
    return int8_model(blob, paths=paths, preset=spec.preset, storage=storage, cache_dir=settings.cache_dir)


def _with_precision(plan: ClusterPlan, int8: Int8Model | None) -> ClusterPlan:
    """``plan`` running ``int8`` where one is given.

    Raises:
        ConfigError: an int8 model on a plan that runs PyTorch (a GPU).
    """
    if int8 is None:
        return plan
    if plan.runtime != "onnx":
        raise ConfigError(f"--precision int8 runs under ONNX Runtime on the CPUs, but the stage's plan runs {plan.runtime} "
                          f"on {plan.device}; use --device cpu, or --precision float32")
    return dataclasses.replace(plan, precision="int8")


def _stage_blob(settings: RunSettings, storage: StorageOptions, spec: ModelSpec, plan: ClusterPlan,
                int8: Int8Model | None) -> bytes | None:
    """The ONNX model the stage runs: ``int8``'s, else the float32 export for ONNX Runtime, else None (PyTorch)."""
    if int8 is not None:
        return int8.blob
    if plan.runtime == "onnx":
        return onnx_model(spec, settings.weights, storage, cache_dir=settings.cache_dir)
    return None


def _run_ray_stage(
    settings: RunSettings,
    storage: StorageOptions,
    todo: ListedImages,
    writer: StagingWriter,
    on_written: Callable[[dict], None],
    label_classes: list[int] | None,
    *,
    spec: ModelSpec,
    logger: LoggerLike | None = None,
    int8: Int8Model | None = None,
) -> StageResult:
    """Ray Data's stage: ``todo`` written as the stage's input pages into ``writer``'s attempt, read by
    Ray Data's tasks; its workers write the predictions there too (:mod:`batch_classify.run.staged_parts`),
    and ``on_written`` gets each file's summary. The driver holds nothing per image but ``todo``."""
    import ray

    started = start_ray(settings.ray_address, num_cpus=settings.num_cpus, verbose=settings.verbose, metrics=settings.ray_metrics)
    try:
        plan: ClusterPlan = plan_cluster(
            ray.cluster_resources(),
            device=settings.device,
            num_actors=settings.num_actors,
            runtime=settings.runtime,
            batch_size=settings.batch_size,
            onnx_only=spec.onnx_only,
            decode=settings.decode,
            preset=spec.preset,
        )
        pages = write_stage_input(todo, run_uri=writer.run_uri, attempt_id=writer.attempt_id, storage=storage,
                                  batch_size=plan.batch_size)
        write = PartWriter(run_uri=writer.run_uri, attempt_id=writer.attempt_id, storage=storage, run_id=writer.run_id,
                           model=writer.model, vocabulary=writer.vocabulary, label_map=writer.label_map,
                           partition_keys=writer.partition_keys)
        return run_stage(pages, **_stage_arguments(settings, storage, spec, plan, int8, label_classes, on_written, logger),
                         write=write, write_rows=min(settings.checkpoint_rows, max(WRITE_ROWS, plan.batch_size)),
                         lost_capacity_wait=settings.lost_capacity_wait, verbose=settings.verbose)
    finally:
        if started:  # in the background: the commit and the report do not wait for Ray's processes to end
            stop_ray(wait=False)


def persist(settings: RunSettings, staged: StagedRun) -> CommittedRun:
    """Step 4: commit the staged files to ``OUTPUT/RUN_ID``; ``_SUCCESS`` last. Then point
    ``OUTPUT/_latest/<input slug>.json`` at the run (unless a later commit of the input is there) and,
    with ``settings.table``, write the run into that Delta table (:mod:`batch_classify.run.table`).

    Idempotent, for the Prefect task's retries: a staged attempt that ``_SUCCESS`` already names is
    not committed again (:func:`batch_classify.run.results.committed_attempt`), and the pointer and the
    table's partition of the run id are replaced, not appended to.

    Raises:
        FailureBudgetExceeded: more than ``settings.max_failed_fraction`` of the images failed;
            the staged files stay under ``_staging/`` for inspection and nothing is committed.
        batch_classify.run.table.TableWriteFailed: the run is committed but its latest pointer or its table
            write failed; a retry finishes it.
        batch_classify.storage.StorageFull: the output is full or a limit was hit; nothing is committed.
    """
    n_listed = staged.n_predicted + staged.n_failed
    if n_listed and staged.n_failed / n_listed > settings.max_failed_fraction:
        raise FailureBudgetExceeded(
            f"{staged.n_failed} of {n_listed} images failed ({staged.n_failed / n_listed:.1%}), over the "
            f"--max-failed-fraction of {settings.max_failed_fraction:.1%}; nothing was committed; "
            f"the failures are listed in {staged.failures_file}"
        )
    run_uri, storage = settings.run_uri(), settings.storage_options()
    try:
        committed = committed_attempt(staged, run_uri, storage) or commit(
            staged, run_uri, storage, run_id=settings.run_id, model=settings.model
        )
    except OSError as err:
        if full := no_space(err):
            raise StorageFull(
                f"committing the run to {run_uri} failed: {full}; nothing was committed (no new {MANIFEST}); free space "
                f"(or raise the limit), then run again with --run-id {settings.run_id}"
            ) from err
        raise
    publish_run(run_uri, settings.output, settings.input, settings.table, storage)
    return committed


def report(
    settings: RunSettings,
    listing: Listing,
    committed: CommittedRun,
    outcome: InferenceOutcome,
    *,
    vocabulary: Vocabulary,
    wall_seconds: float,
    unlabelled_reason: str | None = None,
) -> dict:
    """Step 5: score the committed predictions, compare with the previous committed run on the
    same input, and write ``report.json``, ``report.md`` and ``report.html``
    (:func:`batch_classify.report.build.build_report`).

    Args:
        vocabulary: the model's classes (:meth:`Validation.spec`'s ``vocabulary()``).
        wall_seconds: the run's wall time so far, seconds (listing to commit).
        unlabelled_reason: why the run has no labels (:attr:`Validation.unlabelled_reason`).

    Returns:
        the report (also in ``report.json``); see the README for its fields.
    """
    return build_report(
        settings, settings.storage_options(), listing, committed, vocabulary=vocabulary, n_reused=outcome.staged.n_reused,
        reused_from=outcome.reused_from, stage=outcome.stage, wall_seconds=wall_seconds,
        unlabelled_reason=unlabelled_reason,
    )
