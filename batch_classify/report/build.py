"""Building a run's report from its committed predictions: the step that scores them once and
writes ``report.json``, ``report.md`` and ``report.html``.

One report (a JSON-ready dict: every fact, computed once) is passed to the three writers:
:func:`batch_classify.report.markdown.render_markdown`, :func:`batch_classify.report.html.write_report_html`
and :func:`to_json`. :func:`build_report` is step 5 of a run (``steps.report`` calls it);
:func:`rerender_report` is ``batch-classify report``.
"""

from __future__ import annotations

import json
import logging
import math
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_classify.stage.output import StageResult
from batch_classify.columns import TOP_K
from batch_classify.run.layout import RunLayout
from batch_classify.listing import Listing
from batch_classify.models.registry import get_spec
from batch_classify.report.compare import compare
from batch_classify.report.history import run_history
from batch_classify.report.html import write_report_html
from batch_classify.report.markdown import render_markdown
from batch_classify.report.policy import RegressionPolicy
from batch_classify.report.metrics import accuracy, calibration_fields, label_free, restricted_accuracy
from batch_classify.report.review import changed_predictions, lowest_confidence
from batch_classify.report.samples import small_sample_notes
from batch_classify.report.verdict import verdict
from batch_classify.run.results import SUCCESS, CommittedRun, CorruptRun, committed_manifest, read_committed, read_failures
from batch_classify.settings import RunSettings
from batch_classify.storage import StorageOptions, read_bytes, write_bytes
from batch_classify.models.vocabulary import Vocabulary

log = logging.getLogger(__name__)


def to_json(report: dict) -> bytes:
    """``report.json``'s bytes: the report, indented by 2, keys in the order they were set."""
    return json.dumps(report, indent=2, sort_keys=False).encode()


def _rounded(value: float) -> float | None:
    """Three decimals; None (JSON null) for NaN."""
    return None if math.isnan(value) else round(value, 3)


def _stage_fields(stage: StageResult | None) -> dict:
    """The report's ``stage_*`` and plan fields; null when nothing was computed."""
    if stage is None:
        keys = ("stage_seconds", "stage_images_per_second", "stage_first_batch_seconds",
                "stage_steady_images_per_second", "executor", "device", "num_actors", "batch_size", "runtime", "precision")
        return dict.fromkeys(keys)
    return {
        "stage_seconds": round(stage.wall_seconds, 3),
        "stage_images_per_second": round(stage.n_input / stage.wall_seconds, 3) if stage.wall_seconds > 0 else math.nan,
        "stage_first_batch_seconds": _rounded(stage.first_batch_seconds),
        "stage_steady_images_per_second": _rounded(stage.steady_images_per_second),
        "executor": stage.plan.executor,
        "device": stage.plan.device,
        "num_actors": stage.plan.num_actors,
        "batch_size": stage.plan.batch_size,
        "runtime": stage.plan.runtime,
        "precision": stage.plan.precision,
    }


def build_report(
    settings: RunSettings,
    storage: StorageOptions,
    listing: Listing,
    committed: CommittedRun,
    *,
    vocabulary: Vocabulary,
    n_reused: int,
    reused_from: tuple[str, ...],
    stage: StageResult | None,
    wall_seconds: float,
    unlabelled_reason: str | None = None,
) -> dict:
    """Step 5 of a run: score the committed predictions, compare with the previous committed run on
    the same input, and write ``report.json``, ``report.md`` and ``report.html``.

    Args:
        storage: how to reach the output (the run's ``StorageOptions``).
        listing: step 1's listing (counts, label source, partitions, manifest figures).
        committed: step 4's commit.
        vocabulary: the model's classes in logit order (the run's resolved model's).
        n_reused: predictions reused from earlier runs or attempts (``StagedRun.n_reused``).
        reused_from: the run URIs and staging attempts they came from.
        stage: the Ray stage's counts and timings; None when every image was reused.
        wall_seconds: the run's wall time so far, seconds (listing to commit).
        unlabelled_reason: why the run has no labels (``steps.Validation.unlabelled_reason``).

    Returns:
        the report (also in ``report.json``); see the README for its fields.

    Raises:
        FileNotFoundError: the run is not committed.
    """
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
        "ignored": dict(listing.ignored_extensions),
        "n_reused": n_reused,
        "n_computed": n_listed - n_reused,
        "reused_from": list(reused_from),
        "wall_seconds": round(wall_seconds, 3),
        "images_per_second": round(n_listed / wall_seconds, 3) if wall_seconds > 0 else math.nan,
        **_stage_fields(stage),
    }
    return score_and_write(
        report, storage, vocabulary=vocabulary,
        policy=RegressionPolicy.from_settings(settings), low_confidence=settings.low_confidence,
        review_images=settings.review_images,
    )


def score_and_write(
    report: dict,
    storage: StorageOptions,
    *,
    vocabulary: Vocabulary,
    policy: RegressionPolicy,
    low_confidence: float,
    review_images: int,
) -> dict:
    """Fill ``report`` (which names ``run_uri`` and ``input``) with the scores of the committed
    predictions (accuracy where there are labels, the label-free statistics always), the images to
    look at, the history of earlier runs and the comparison with the latest of them, the notes on
    small samples and the verdict; then write the report files.

    Args:
        vocabulary: the run's model's classes.
        policy: when the comparison is a regression (:class:`~batch_classify.report.policy.RegressionPolicy`).
        review_images: the least confident predictions listed (``lowest_confidence``), and the most
            images whose top-1 changed that the page shows.

    Returns:
        the report, as written to ``report.json``.

    Raises:
        FileNotFoundError: the run is not committed.
    """
    run_uri = report["run_uri"]
    table = read_committed(run_uri, storage, columns=list(REPORT_COLUMNS))
    label_index = table.column("label_index").fill_null(-1).to_numpy()
    pred_index = table.column("pred_index").to_numpy()
    confidence = table.column("confidence").to_numpy()
    report |= accuracy(label_index, pred_index, _top5_matrix(table.column("top5_index")), vocabulary)
    report |= restricted_accuracy(label_index, table.column("restricted_index").fill_null(-1).to_numpy())
    report |= calibration_fields(label_index, pred_index, confidence)
    pred_names = _pred_names(table)
    report |= _label_free(table, low_confidence, pred_names)
    report["review_images"] = review_images
    report["lowest_confidence"] = lowest_confidence(table, review_images)
    layout = RunLayout.parse(run_uri)
    report["history"] = run_history(
        layout.output, input=report["input"], model=report["model"], run_id=layout.run_id,
        before=committed_manifest(run_uri, storage).get("committed_at"), storage=storage,
    )
    report["comparison"], report["changed"] = _compare_with_previous(
        report, table, vocabulary, storage, policy=policy, low_confidence=low_confidence
    )
    report["small_samples"] = small_sample_notes(report)
    report["verdict"] = verdict(report)
    # report.json last: it is the report's commit point (report.md and report.html beside a missing
    # report.json are what a run killed while reporting left; the next report step replaces them)
    write_bytes(layout.report_md, render_markdown(report).encode(), storage)
    write_report_html(run_uri, report, storage, predictions=table, vocabulary=vocabulary)
    write_bytes(layout.report_json, to_json(report), storage)
    return report


#: The columns of the committed predictions that the report reads (the scores, the images to look at, the
#: page's gallery): not the top-5 probabilities, the model, the run ids, the content identity or the
#: partitions, which a million rows make about 150 MB more (issue 28 item 3).
REPORT_COLUMNS = ("path", "label", "label_index", "pred_index", "pred_label", "confidence", "top5_index",
                  "restricted_index", "entropy")


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
    """:func:`batch_classify.report.metrics.accuracy` of committed predictions (``label_index``,
    ``pred_index``, ``top5_index`` columns)."""
    return accuracy(
        table.column("label_index").fill_null(-1).to_numpy(),
        table.column("pred_index").to_numpy(),
        _top5_matrix(table.column("top5_index")),
        vocabulary,
    )


def _pred_names(table) -> np.ndarray:
    """object [N]: the ``pred_label`` column (class names, compared across runs and models); each name one
    Python string shared by its rows (dictionary-encoded first: 8 bytes a row, not a string a row)."""
    encoded = table.column("pred_label").combine_chunks().dictionary_encode()
    names = np.asarray(encoded.dictionary.to_pylist() + [None], dtype=object)
    return names[encoded.indices.fill_null(len(encoded.dictionary)).to_numpy()]


def _label_free(table, low_confidence: float, pred_names: np.ndarray) -> dict:
    """:func:`batch_classify.report.metrics.label_free` of committed predictions (``pred_names`` from
    :func:`_pred_names`, ``confidence``, ``entropy`` columns; a null entropy, from rows written
    before it existed, is NaN)."""
    return label_free(
        pred_names,
        table.column("confidence").to_numpy(),
        table.column("entropy").cast(pa.float32()).fill_null(np.nan).to_numpy(),
        low_confidence=low_confidence,
    )


def _scores(table, vocabulary: Vocabulary, low_confidence: float, model: str | None) -> dict:
    """What :func:`batch_classify.report.compare.compare` reads of one run, over the rows of ``table``
    (accuracy and per-class recall where there are labels, the label-free statistics always)."""
    return {"model": model} | _accuracy(table, vocabulary) | _label_free(table, low_confidence, _pred_names(table))


def _compare_with_previous(
    report: dict,
    table,
    vocabulary: Vocabulary,
    storage: StorageOptions,
    *,
    policy: RegressionPolicy,
    low_confidence: float,
) -> tuple[dict | None, list[dict]]:
    """The comparison with the baseline, the newest run of ``report["history"]`` (the latest run
    committed before this one under the same output, on the same input with the same model, over a
    full listing), and the images whose top-1 changed; (None, []) when there is none, or when the
    two runs share no image.

    Both runs are scored on the images they share (by path), so a baseline over other images can
    neither raise nor lower the deltas; ``n_current``, ``n_previous`` and ``n_compared`` say how
    many images each run predicted and how many were compared, ``n_changed`` how many of those
    changed their top-1.

    Args:
        table: this run's committed predictions (``path``, labels, predictions, confidence, entropy).
        vocabulary: this run's model's classes (the baseline's model is the same).
    """
    if not report["history"]:
        return None, []
    previous = report["history"][0]["run_uri"]
    columns = ["path", "label_index", "pred_index", "pred_label", "top5_index", "confidence", "entropy"]
    try:
        previous_table = read_committed(previous, storage, columns=columns)
    except CorruptRun as err:
        log.warning("no comparison with %s: %s", previous, err)
        return None, []
    current_shared = table.filter(pc.is_in(table.column("path"), value_set=previous_table.column("path").combine_chunks()))
    previous_shared = previous_table.filter(pc.is_in(previous_table.column("path"), value_set=table.column("path").combine_chunks()))
    if current_shared.num_rows == 0:
        log.warning("no comparison with %s: the two runs share no image", previous)
        return None, []
    changed, n_changed = changed_predictions(current_shared, previous_shared)
    counts = {"n_current": table.num_rows, "n_previous": previous_table.num_rows, "n_compared": current_shared.num_rows,
              "n_changed": n_changed}
    result = compare(
        _scores(current_shared, vocabulary, low_confidence, report["model"]),
        _scores(previous_shared, vocabulary, low_confidence, report["model"]),  # the baseline has this run's model
        _pred_names(current_shared),
        _pred_names(previous_shared),
        previous_run_uri=previous,
        policy=policy,
    )
    return {"previous_run_uri": result.pop("previous_run_uri"), "previous_run_id": RunLayout.parse(previous).run_id,
            "previous_model": result.pop("previous_model"), **counts, **result}, changed


def default_policy(**given: float | None) -> RegressionPolicy:
    """The regression policy of :class:`RunSettings`' defaults, with the thresholds ``given`` (not None) in
    their place: a committed run's report re-rendered without the run's settings."""
    defaults = SimpleNamespace(**{name: field.default for name, field in RunSettings.model_fields.items()})
    return RegressionPolicy.from_settings(defaults, **given)


def rerender_report(
    run_uri: str,
    storage: StorageOptions,
    *,
    low_confidence: float | None = None,
    review_images: int | None = None,
    **thresholds: float | None,
) -> dict:
    """Score a committed run again and rewrite its report files (``batch-classify report``).

    ``thresholds`` are the regression policy's (:data:`batch_classify.report.policy.THRESHOLDS`); each,
    like ``low_confidence`` and ``review_images``, defaults to :class:`RunSettings`' default.

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
        report = json.loads(read_bytes(RunLayout.parse(run_uri).report_json, storage))
    except FileNotFoundError:
        report = {
            "n_listed": manifest["n_predicted"] + manifest["n_failed"],
            "n_ignored": None,
            "wall_seconds": None,
            "images_per_second": None,
        }
    report |= {
        "run_id": manifest.get("run_id", RunLayout.parse(run_uri).run_id),
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
        report, storage, vocabulary=vocabulary, policy=default_policy(**thresholds),
        low_confidence=default("low_confidence", low_confidence), review_images=default("review_images", review_images),
    )
