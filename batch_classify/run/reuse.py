"""Reusing predictions instead of recomputing them: incremental runs and resumed attempts.

Two sources, both keyed by the image's path and its content identity as listed
(``ImageRecord.content_id``: the S3 ETag, or size + mtime), and both only for the same
model identity (model name + SHA-256 of the weights file):

- **Incremental** (``--incremental``): the latest committed run under the same ``OUTPUT``
  whose ``_SUCCESS`` names the same input and model identity.
- **Resume** (on by default): the staged files a crashed or failed attempt of the same run id
  left under ``OUTPUT/RUN_ID/_staging/``. Only complete files count (each is closed every
  ``settings.CHECKPOINT_ROWS`` rows); a file the crash cut short has no Parquet footer and is
  skipped, so its images are recomputed.

Reused rows are written into the new attempt like computed ones, so every committed run is
complete on its own. Failures are never reused: failed images are retried by every run.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch_classify.columns import PREDICTION_SCHEMA
from batch_classify.listed import ListedImages
from batch_classify.models.registry import ModelSpec, weights_digest
from batch_classify.run.layout import JOBS, RunLayout
from batch_classify.run.results import (
    CorruptRun,
    committed_manifest,
    conform,
    read_committed,
)
from batch_classify.storage import StorageOptions, dataset_key, filesystem

log = logging.getLogger(__name__)


def model_identity(spec: ModelSpec, weights: str | None, storage: StorageOptions) -> str:
    """``<model>@sha256:<16 hex>``: the model name and the first 64 bits of its weights file's SHA-256.

    Reads the whole weights file (230 MB for ResNet-152: about 0.3 s). Where the weights file
    is missing, the identity says so and matches nothing reusable (validation reports the
    missing file). A model folder's identity is ``<format>-folder@sha256:<16 hex>`` over every
    file of the folder (:meth:`batch_classify.models.folder.ModelFolder.sha256`): a copy of the
    folder matches, a change to any of its files does not.
    """
    digest = weights_digest(spec, weights, storage)
    if spec.folder is not None:
        return f"{spec.format}-folder@sha256:{digest[:16]}"
    if digest is None:
        return f"{spec.name}@missing:{weights or spec.default_weights_path()}"
    return f"{spec.name}@sha256:{digest[:16]}"


@dataclass(frozen=True)
class Reusable:
    """Predictions that need not be recomputed.

    Attributes:
        table: rows in ``PREDICTION_SCHEMA``, one per reusable path.
        sources: where they came from: run URIs (incremental) and staging attempt URIs (resume).
    """

    table: pa.Table
    sources: tuple[str, ...]


def committed_runs(
    output: str,
    *,
    input: str,
    model_id: str | None,
    storage: StorageOptions,
    exclude_run_id: str | None = None,
    before: str | None = None,
    model: str | None = None,
    full_listing: bool = False,
) -> list[tuple[str, dict]]:
    """The committed runs under ``output`` on ``input`` with ``model_id`` (None: any model identity),
    newest first: ``(run URI, its _SUCCESS manifest)``, leaving out ``exclude_run_id`` and runs
    committed at or after ``before`` (an ISO time as in ``committed_at``).

    The input matches by :func:`batch_classify.storage.dataset_key` (absolute, normalised, signed or
    anonymous alike). ``model``: only runs of this model name (a registry name or a model folder's
    URI, whatever its weights). ``full_listing``: only runs that classified their whole listing (no
    ``--limit``): the report's baseline and history. Runs are ordered by ``committed_at`` in their
    ``_SUCCESS`` manifest (then by URI); runs committed before manifests held ``input`` and
    ``model_id`` never match; a manifest that cannot be read is skipped with a warning.
    """
    fs, root = filesystem(output, storage)
    wanted = dataset_key(input)
    found: list[tuple[str, str, dict]] = []
    for success in fs.glob(RunLayout.of(root, "*").manifest):
        run_id = RunLayout.parse(posixpath.dirname(success)).run_id
        if exclude_run_id is not None and run_id == exclude_run_id:
            continue
        run_uri = RunLayout.of(output, run_id).uri
        try:
            manifest = committed_manifest(run_uri, storage)
        except (OSError, CorruptRun) as err:
            log.warning("skipping %s: unreadable manifest (%s)", success, err)
            continue
        if not manifest.get("input") or dataset_key(manifest["input"]) != wanted:
            continue
        if model_id is not None and manifest.get("model_id") != model_id:
            continue
        if (model is not None and manifest.get("model") != model) or (full_listing and manifest.get("limit") is not None):
            continue
        if before is not None and str(manifest.get("committed_at", "")) >= before:
            continue
        found.append((str(manifest.get("committed_at", "")), run_uri, manifest))
    found.sort(key=lambda f: (f[0], f[1]), reverse=True)
    return [(run_uri, manifest) for _, run_uri, manifest in found]


def latest_committed_run(output: str, **match) -> str | None:
    """The run URI of the latest of :func:`committed_runs` (same keyword arguments); None when there is none."""
    runs = committed_runs(output, **match)
    return runs[0][0] if runs else None


def _staged_tables(run_uri: str, *, model_id: str, input: str, storage: StorageOptions) -> list[tuple[str, dict, pa.Table]]:
    """Complete prediction files of earlier attempts of the run id whose ``_attempt.json`` matches."""
    fs, root = filesystem(run_uri, storage)
    local = RunLayout.parse(root)  # paths on ``fs``
    if not fs.exists(local.staging):
        return []
    found = []
    for attempt in sorted(fs.ls(local.staging, detail=False)):
        attempt_id = RunLayout.attempt_id(attempt)
        if attempt_id == JOBS:
            continue
        try:
            meta = json.loads(fs.cat_file(local.attempt_meta(attempt_id)))
        except (OSError, ValueError):
            continue  # an attempt from before _attempt.json, or cut short before writing it
        if meta.get("model_id") != model_id or meta.get("input") != input:
            continue
        folder = local.attempt_predictions(attempt_id)
        for path in sorted(fs.find(folder)) if fs.exists(folder) else []:
            try:
                found.append((attempt, meta, pq.read_table(path, filesystem=fs)))
            except (OSError, pa.ArrowInvalid) as err:  # cut short by the crash: no footer yet
                log.info("not reusing %s: incomplete (%s)", path, err)
    return found


def _matching(table: pa.Table, listed: ListedImages, taken: list[pa.Array]) -> pa.Array:
    """The rows of ``table`` to reuse, in order: its path is listed with a non-empty content identity equal to
    the row's, not among the paths ``taken`` from earlier sources, and the path's first row in ``table``."""
    paths = table.column("path").combine_chunks()
    listed_id = listed.facts_of(paths).column("content_id")
    row_id = table.column("content_id").combine_chunks()
    match = pc.and_kleene(pc.equal(row_id, listed_id), pc.not_equal(row_id, ""))
    if taken:
        match = pc.and_kleene(match, pc.invert(pc.is_in(paths, value_set=pa.concat_arrays(taken))))
    candidates = pc.indices_nonzero(pc.fill_null(match, False))
    if not len(candidates):
        return candidates
    firsts = (pa.table({"path": paths.take(candidates), "row": candidates})
              .group_by("path", use_threads=False).aggregate([("row", "min")]).column("row_min"))
    firsts = firsts.combine_chunks()
    return firsts.take(pc.array_sort_indices(firsts))


def find_reusable(
    records: ListedImages,
    *,
    run_uri: str,
    output: str,
    input: str,
    model_id: str,
    storage: StorageOptions,
    incremental: bool,
    resume: bool,
    label_classes: list[int] | None = None,
) -> Reusable:
    """Predictions from earlier attempts of this run id (``resume``) and from the latest committed
    run on the same input (``incremental``) whose path and content identity match ``records``.

    A path matches only if its listed ``content_id`` is non-empty and equal to the row's; each
    path is taken once, staged attempts first. ``restricted_index`` depends on the set of classes
    in the labels (``label_classes``): where the source had another set, it is reused as null.
    """
    tables: list[tuple[str, dict, pa.Table]] = []
    if resume:
        tables += _staged_tables(run_uri, model_id=model_id, input=input, storage=storage)
    if incremental:
        previous = latest_committed_run(output, input=input, model_id=model_id, storage=storage)
        if previous is not None:
            try:
                tables.append((previous, committed_manifest(previous, storage), read_committed(previous, storage)))
            except CorruptRun as err:  # recomputed instead; the damaged run stays as it is for inspection
                log.warning("not reusing %s: %s", previous, err)
    parts, sources = [], []
    if tables:
        taken: list[pa.Array] = []  # the paths taken from earlier sources
        for source, meta, table in tables:
            if "content_id" not in table.column_names:
                continue
            table = conform(table)
            if meta.get("label_classes") != label_classes:
                i = PREDICTION_SCHEMA.get_field_index("restricted_index")
                table = table.set_column(i, "restricted_index", pa.nulls(table.num_rows, pa.int64()))
            keep = _matching(table, records, taken)
            if len(keep):
                part = table.take(keep)
                parts.append(part)
                taken.append(part.column("path").combine_chunks())
                if source not in sources:
                    sources.append(source)
    table = pa.concat_tables(parts, promote_options="default") if parts else PREDICTION_SCHEMA.empty_table()
    return Reusable(table=table, sources=tuple(sources))
