"""Writing predictions: stream into a staging folder, then commit with ``_SUCCESS`` last.

Layout of a committed run::

    OUTPUT/RUN_ID/predictions/part-<attempt>-00000.parquet   # one row per predicted image
    OUTPUT/RUN_ID/failures/part-<attempt>.parquet            # one row per failed image (may have no rows)
    OUTPUT/RUN_ID/_SUCCESS                                   # JSON manifest: attempt, files, counts; the commit point
    OUTPUT/RUN_ID/report.json, report.md                     # derived from the committed files

While a run is writing, its files live under ``OUTPUT/RUN_ID/_staging/<attempt>/``.
File names carry the attempt, so promoting a new attempt never touches the files
of the committed one; ``_SUCCESS`` is replaced in one step (a rename on local disk,
a single-object write on S3) and is what readers follow. A commit that fails
before that step leaves the earlier result of the run id as it was; once it has
flipped, the superseded files are removed. One writer per run id at a time: the flow holds the
run id's lease (:mod:`batch_classify.run.lease`) from before staging to the report.

Longer than 400 lines: staging, the commit and reading a committed run are one protocol (the
manifest's format and the files it names); split apart, each side would restate it.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batch_classify.columns import FAILURE_SCHEMA, PREDICTION_SCHEMA, TOP_K, output_arrays
from batch_classify.errors import PermanentError
from batch_classify.run.layout import MANIFEST, STAGED_FAILURES, STAGING, RunLayout
from batch_classify.run.lease import held
from batch_classify.listed import ImageRecord, ListedImages, partition_column
from batch_classify.listing import ListFailure
from batch_classify.settings import CHECKPOINT_ROWS
from batch_classify.stage.output import StageResult
from batch_classify.stage.reading import CARRIED
from batch_classify.storage import StorageOptions, filesystem, join, read_parquet, write_bytes, write_parquet
from batch_classify.models.vocabulary import Vocabulary


def prediction_schema(partition_keys: tuple[str, ...] = ()) -> pa.Schema:
    """:data:`PREDICTION_SCHEMA` (:mod:`batch_classify.columns`) plus one string column per partition
    key, in order."""
    return pa.schema([*PREDICTION_SCHEMA, *(pa.field(k, pa.string()) for k in partition_keys)])


SUCCESS = MANIFEST


@dataclass(frozen=True)
class StagedRun:
    """Files written to staging, not yet committed."""

    staging_uri: str
    prediction_files: tuple[str, ...]
    failures_file: str
    n_predicted: int
    n_failed: int
    n_reused: int = 0
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CommittedRun:
    """A committed run: where it is and what it holds."""

    run_uri: str
    prediction_files: tuple[str, ...]
    failures_file: str
    n_predicted: int
    n_failed: int


def conform(table: pa.Table, schema: pa.Schema | None = None) -> pa.Table:
    """``table`` in ``schema``: columns in order, missing ones (files written before they existed)
    added as nulls, others dropped. ``schema`` None: :data:`PREDICTION_SCHEMA` followed by the
    table's own other columns (its partition columns) as strings."""
    if schema is None:
        extra = [pa.field(n, pa.string()) for n in table.column_names if n not in PREDICTION_SCHEMA.names]
        schema = pa.schema([*PREDICTION_SCHEMA, *extra])
    for f in schema:
        if f.name not in table.column_names:
            table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
    return table.select(schema.names).cast(schema)


def predicted_table(batch: dict[str, np.ndarray], ok: np.ndarray, *, vocabulary: Vocabulary, model: str, run_id: str,
                    schema: pa.Schema) -> pa.Table:
    """The rows ``ok`` (int64 [M]) of an output batch of :class:`batch_classify.stage.inference.Classifier`
    as a table in ``schema``: ``path``, ``pred_label``, ``model``, ``run_id``, ``computed_run_id`` and
    the model outputs; the listed facts (``label``, ``label_index``, ``content_id``, partitions) null,
    for :func:`with_facts`."""
    outputs = output_arrays(batch, ok, min(TOP_K, vocabulary.num_classes))  # fewer than 5 classes: k of them
    columns = {
        "path": pa.array([str(batch["path"][i]) for i in ok], pa.string()),
        "pred_label": pa.array([vocabulary.names[i] for i in outputs["pred_index"].to_numpy()], pa.string()),
        "model": pa.array([model] * len(ok), pa.string()),
        "run_id": pa.array([run_id] * len(ok), pa.string()),
        "computed_run_id": pa.array([run_id] * len(ok), pa.string()),
        **outputs,
    }
    return conform(pa.table(columns), schema)


def failure_rows(batch: dict[str, np.ndarray], failed: np.ndarray) -> list[dict]:
    """The rows ``failed`` (int64 [M]) of an output batch as failure rows (:data:`FAILURE_SCHEMA`)."""
    return [{"path": str(batch["path"][i]), "stage": str(batch["stage"][i]), "error": str(batch["error"][i])}
            for i in failed]


#: The carried column (:data:`batch_classify.stage.reading.CARRIED`) of a listed image's content identity.
CONTENT_ID = f"{CARRIED}content_id"


def with_carried_facts(table: pa.Table, schema: pa.Schema, label_map: dict[str, int], batch: dict[str, np.ndarray],
                       rows: np.ndarray, partition_keys: tuple[str, ...]) -> pa.Table:
    """``table`` (the predicted ``rows`` of ``batch``) with the listed facts ``batch`` carried through the stage:
    ``label``, :data:`CONTENT_ID` and ``listed:<key>`` for each partition key (see :func:`with_facts`)."""
    return with_facts(table, schema, label_map, labels=list(batch["label"][rows]), content_ids=list(batch[CONTENT_ID][rows]),
                      partitions={key: list(batch[f"{CARRIED}{key}"][rows]) for key in partition_keys})


def with_facts(table: pa.Table, schema: pa.Schema, label_map: dict[str, int], *, labels: list, content_ids: list | None,
               partitions: dict[str, list]) -> pa.Table:
    """``table`` (in ``schema``) with the listed facts of its rows: ``label`` where ``label_map`` maps it
    (else null) and its ``label_index``, ``content_id`` (None: left null) and each partition column."""
    labels = [None if label is None or label not in label_map else str(label) for label in labels]
    facts = {
        "label": pa.array(labels, pa.string()),
        "label_index": pa.array([label_map.get(label) for label in labels], pa.int64()),
        **({"content_id": pa.array(content_ids, pa.string())} if content_ids is not None else {}),
        **{key: pa.array(values, pa.string()) for key, values in partitions.items()},
    }
    for name, column in facts.items():
        table = table.set_column(schema.get_field_index(name), name, column)
    return table


class StagingWriter:
    """Streams output batches of the inference stage into Parquet files under staging.

    Args:
        run_uri: ``OUTPUT/RUN_ID``.
        vocabulary: the model's classes (``pred_label`` is ``vocabulary.names[pred_index]``).
        label_map: label string → class index for labelled datasets. Only labels it maps are
            written: in an unlabelled run (an empty map) every ``label`` is null.
        records: the listed images (label, content identity, partitions): the listing's
            :class:`batch_classify.listed.ListedImages` (another sequence of records is turned into one).
            Reused rows take their listed facts from here (labels are an input of this run, not of the
            prediction); computed rows take them from the columns their batch carries (``listed:…``,
            :func:`with_carried_facts`), or from here where it carries none. Without either: ``label`` from
            the batch, no content identity.
        partition_keys: the listing's partition keys: one string column each.
        meta: what computed the rows (``model_id``, ``input``); saved as ``_attempt.json`` in
            staging, where a resumed attempt of the run id checks it before reusing the rows.
        rows_per_file: rows after which a staged file is closed (see :data:`batch_classify.settings.CHECKPOINT_ROWS`).
    """

    def __init__(
        self,
        run_uri: str,
        *,
        run_id: str,
        model: str,
        vocabulary: Vocabulary,
        label_map: dict[str, int],
        storage: StorageOptions,
        records: Sequence[ImageRecord] | None = None,
        partition_keys: tuple[str, ...] = (),
        meta: dict | None = None,
        rows_per_file: int = CHECKPOINT_ROWS,
    ) -> None:
        self.run_uri, self.run_id, self.model = run_uri, run_id, model
        self.vocabulary, self.label_map, self.storage = vocabulary, label_map, storage
        self._records = records if records is None or isinstance(records, ListedImages) else ListedImages.of(
            records, partition_keys)
        self.partition_keys = tuple(partition_keys)
        self.schema = prediction_schema(self.partition_keys)
        self.rows_per_file = rows_per_file
        self.layout = RunLayout.parse(run_uri)
        self.attempt_id = uuid.uuid4().hex
        self.staging_uri = self.layout.attempt(self.attempt_id)
        self._fs, self._root = filesystem(self.staging_uri, storage)
        self._files: list[str] = []
        self._writer: pq.ParquetWriter | None = None
        self._sink = None
        self._rows_in_file = 0
        self._failures: list[dict] = []
        self._written: list[str] = []  # files Ray Data's workers wrote (:meth:`add_written`)
        self._written_failures: list[str] = []
        self._n_written_failed = 0
        self.n_predicted = 0
        self.n_reused = 0
        self.meta = dict(meta or {})
        if meta is not None:
            write_bytes(self.layout.attempt_meta(self.attempt_id), json.dumps(meta, indent=2).encode(), storage)

    def _open(self) -> None:
        uri = self.layout.attempt_prediction(self.attempt_id, len(self._files))
        name = posixpath.basename(uri)
        path = filesystem(uri, self.storage)[1]
        self._fs.makedirs(posixpath.dirname(path), exist_ok=True)
        self._sink = self._fs.open(path, "wb")
        self._writer = pq.ParquetWriter(self._sink, self.schema)
        self._files.append(name)
        self._rows_in_file = 0

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def write(self, batch: dict[str, np.ndarray]) -> None:
        """Append one output batch of :class:`batch_classify.stage.inference.Classifier`."""
        failed = np.asarray(batch["error"], dtype=object) != ""
        self._failures += failure_rows(batch, np.flatnonzero(failed))
        ok = np.flatnonzero(~failed)
        if not len(ok):
            return
        table = predicted_table(batch, ok, vocabulary=self.vocabulary, model=self.model, run_id=self.run_id,
                                schema=self.schema)
        if CONTENT_ID in batch:  # the stage's input carried the listed facts (steps.infer's input always does)
            table = with_carried_facts(table, self.schema, self.label_map, batch, ok, self.partition_keys)
        elif self._records is None:
            table = with_facts(table, self.schema, self.label_map, labels=[batch["label"][i] for i in ok],
                               content_ids=None, partitions={})
        else:
            table = self._with_listed_facts(table)
        self._append(table)

    def _with_listed_facts(self, table: pa.Table) -> pa.Table:
        """``table`` with ``label``, ``label_index``, ``content_id`` and the partition columns taken
        from this run's listing and label map (``records`` must be given), found by one hash join."""
        facts = self._records.facts_of(table.column("path").combine_chunks())
        return with_facts(table, self.schema, self.label_map, labels=facts.column("label").to_pylist(),
                          content_ids=facts.column("content_id").to_pylist(),
                          partitions={key: (facts.column(partition_column(key)).to_pylist()
                                            if partition_column(key) in facts.column_names else [None] * len(facts))
                                      for key in self.partition_keys})

    def add_written(self, summary: dict[str, np.ndarray]) -> None:
        """Record the files workers wrote into this attempt (the summaries of
        :func:`batch_classify.stage.output.written_summary`, one or several concatenated: Ray Data joins a
        task's small outputs into one block): their prediction files and failures parts join the staged run
        at :meth:`close`."""
        self._written += [str(f) for f in summary["file"] if f]
        self._written_failures += [str(f) for f in summary["failures_file"] if f]
        n_failed = int(np.sum(summary["n_failed"]))
        self.n_predicted += int(np.sum(summary["n_rows"])) - n_failed
        self._n_written_failed += n_failed

    @property
    def n_failed(self) -> int:
        """Failure rows so far."""
        return len(self._failures) + self._n_written_failed

    def write_list_failures(self, failures: tuple[ListFailure, ...]) -> None:
        """Append one ``stage=list`` failure row per folder or entry the listing could not list
        (``Listing.list_failures``): ``path`` the folder, ``error`` why. Each counts in ``n_failed``."""
        self._failures.extend({"path": f.path, "stage": "list", "error": f.error} for f in failures)

    def write_reused(self, table: pa.Table) -> None:
        """Append predictions carried over from an earlier run or attempt (``PREDICTION_SCHEMA`` rows).

        ``run_id`` becomes this run's; ``computed_run_id`` keeps the run that computed each row;
        with ``records``, labels, content identity and partitions are this run's (the earlier run
        may have had other labels).
        """
        if not table.num_rows:
            return
        table = conform(table, self.schema)
        table = table.set_column(
            self.schema.get_field_index("run_id"), "run_id", pa.array([self.run_id] * table.num_rows, pa.string())
        )
        if self._records is not None:
            table = self._with_listed_facts(table)
        self._append(table)
        self.n_reused += table.num_rows

    def _append(self, table: pa.Table) -> None:
        start = 0
        while start < table.num_rows:
            if self._writer is None:
                self._open()
            part = table.slice(start, self.rows_per_file - self._rows_in_file)
            start += part.num_rows
            self._writer.write_table(part)
            self._rows_in_file += part.num_rows
            self.n_predicted += part.num_rows
            if self._rows_in_file >= self.rows_per_file:
                self._close_file()  # complete on storage: a resumed attempt can reuse it

    def close(self) -> StagedRun:
        """Finish the files; nothing is committed yet."""
        self._close_file()
        failures = pa.concat_tables([pa.Table.from_pylist(self._failures, schema=FAILURE_SCHEMA),
                                     *(read_parquet(uri, self.storage).select(FAILURE_SCHEMA.names).cast(FAILURE_SCHEMA)
                                       for uri in self._written_failures)])
        failures_uri = self.layout.attempt_failures(self.attempt_id)
        write_parquet(failures_uri, failures, self.storage)
        return StagedRun(
            staging_uri=self.staging_uri,
            prediction_files=(*(join(self.layout.attempt_predictions(self.attempt_id), f) for f in self._files),
                              *self._written),
            failures_file=failures_uri,
            n_predicted=self.n_predicted,
            n_failed=failures.num_rows,
            n_reused=self.n_reused,
            meta=self.meta,
        )

    def close_after_stop(self) -> tuple[StagedRun | None, str]:
        """:meth:`close` after the stage stopped early (an interrupt, a cancellation, a failure), so
        that the run id's next attempt resumes from every row staged so far; never raises.

        Returns:
            (the staged run, "") or, where closing failed (the output may lie behind the storage that
            stopped the stage), (None, the error's type and message).
        """
        try:
            return self.close(), ""
        except Exception as err:  # noqa: BLE001 - what stopped the stage is what the caller must report
            return None, f"{type(err).__name__}: {err}"


def commit(staged: StagedRun, run_uri: str, storage: StorageOptions, *, run_id: str, model: str) -> CommittedRun:
    """Promote a staged run to ``run_uri``, replacing any earlier result of the run id whole.

    1. The staged files move to names unique to this attempt
       (``predictions/part-<attempt>-NNNNN.parquet``, ``failures/part-<attempt>.parquet``);
       the committed result's files are not touched.
    2. ``_SUCCESS`` (JSON: attempt, files, counts, and the writer's ``meta``: ``input``,
       ``model_id``) is written under a temporary name and
       moved over the old one: the commit point.
    3. The files of the superseded manifest, the superseded report and this attempt's staging
       folder are removed. Leftovers of other attempts (crashed writers' staging and half-moved
       files) are removed only while this process holds the run id's lease
       (:mod:`batch_classify.run.lease`): then no other writer can be using them. Without the lease a
       commit touches only its own files and those the manifest it replaced named, so the
       ``_SUCCESS`` left by concurrent commits always names files that exist.

    Before step 2 the lease, when held, is renewed: a writer whose lease was taken over stops there.

    Raises:
        OSError: a staged file is missing or storage fails; before step 2 the earlier
            committed result (if any) is unchanged and still what ``_SUCCESS`` names.
        batch_classify.run.lease.LeaseLost: this writer's lease was taken over; nothing was committed.
    """
    lease = held(run_uri)
    fs, root = filesystem(run_uri, storage)
    _, staging_root = filesystem(staged.staging_uri, storage)
    run, local = RunLayout.parse(run_uri), RunLayout.parse(root)  # URIs; paths on ``fs``
    attempt_id = RunLayout.attempt_id(staging_root)
    attempt = RunLayout.tag(staging_root)
    files = []
    for uri in staged.prediction_files:
        target = RunLayout.prediction_name(attempt, posixpath.basename(uri))
        fs.makedirs(local.predictions, exist_ok=True)
        fs.mv(filesystem(uri, storage)[1], local.path(target))
        files.append(run.path(target))
    failures_rel = RunLayout.failures_name(attempt)
    fs.makedirs(local.failures, exist_ok=True)
    fs.mv(local.attempt_failures(attempt_id), local.path(failures_rel))
    manifest = {
        **staged.meta,
        "run_id": run_id,
        "model": model,
        "attempt": attempt,
        "prediction_files": [posixpath.relpath(f, run_uri) for f in files],
        "failures_file": failures_rel,
        "n_predicted": staged.n_predicted,
        "n_failed": staged.n_failed,
        "n_reused": staged.n_reused,
        "committed_at": datetime.now(timezone.utc).isoformat(),
    }
    write_bytes(run.pending_manifest(attempt), json.dumps(manifest, indent=2).encode(), storage)
    superseded = _named_files(fs, root)
    if lease is not None:
        lease.check()
    fs.mv(local.pending_manifest(attempt), local.manifest)  # the commit point
    keep = {*manifest["prediction_files"], failures_rel}
    derived = {local.relative(p) for p in local.reports} | {STAGED_FAILURES}
    _remove(fs, root, (superseded - keep) | derived)
    _remove(fs, root, {local.relative(staging_root)}, recursive=True)
    if lease is not None:
        _remove_leftovers(fs, root, keep=keep)
    return CommittedRun(
        run_uri=run_uri,
        prediction_files=tuple(files),
        failures_file=run.path(failures_rel),
        n_predicted=staged.n_predicted,
        n_failed=staged.n_failed,
    )


def committed_attempt(staged: StagedRun, run_uri: str, storage: StorageOptions) -> CommittedRun | None:
    """The committed run when its ``_SUCCESS`` already names ``staged``'s attempt, else None.

    A retried persist whose :func:`commit` went through before something after it failed finds its
    staged files moved away; committing again would fail on them. An unreadable ``_SUCCESS`` is None
    (a new commit replaces it). Raises OSError where storage fails.
    """
    try:
        manifest = committed_manifest(run_uri, storage)
    except (FileNotFoundError, CorruptRun):
        return None
    if manifest.get("attempt") != RunLayout.tag(staged.staging_uri):
        return None
    run = RunLayout.parse(run_uri)
    return CommittedRun(
        run_uri=run_uri,
        prediction_files=tuple(run.path(f) for f in manifest["prediction_files"]),
        failures_file=run.path(manifest.get("failures_file", STAGED_FAILURES)),
        n_predicted=manifest["n_predicted"],
        n_failed=manifest["n_failed"],
    )


def _named_files(fs, root: str) -> set[str]:
    """Files (relative to ``root``) that the committed ``_SUCCESS`` names; none without a readable one."""
    try:
        manifest = json.loads(fs.cat_file(RunLayout.parse(root).manifest))
        return {*manifest.get("prediction_files", []), manifest.get("failures_file", STAGED_FAILURES)}
    except (FileNotFoundError, ValueError, AttributeError):
        return set()


def _remove(fs, root: str, names: set[str], *, recursive: bool = False) -> None:
    """Remove these paths under ``root`` where they exist (another remover may have been first)."""
    for name in sorted(names):
        try:
            fs.rm(posixpath.join(root, name), recursive=recursive)
        except FileNotFoundError:
            pass


def _remove_leftovers(fs, root: str, *, keep: set[str]) -> None:
    """Under the run id's lease only: files of other attempts (crashed commits' half-moved files,
    pending manifests, staging folders) that the committed manifest does not name."""
    local = RunLayout.parse(root)
    leftovers = set()
    for base in (local.predictions, local.failures):
        leftovers |= {local.relative(p) for p in (fs.find(base) if fs.exists(base) else [])}
    leftovers |= {local.relative(p) for p in fs.glob(local.pending_manifests)}
    _remove(fs, root, leftovers - keep)
    _remove(fs, root, {STAGING} if fs.exists(local.staging) else set(), recursive=True)


class CorruptRun(PermanentError, ValueError):
    """A committed run whose files are not whole: ``_SUCCESS`` not a JSON manifest, a file it names
    missing, truncated or not Parquet. The message names the file."""


def _committed_manifest(run_uri: str, storage: StorageOptions):
    """(filesystem, root path, the ``_SUCCESS`` manifest) of a committed run.

    Raises:
        FileNotFoundError: the run has no ``_SUCCESS`` (not committed, or still running).
        CorruptRun: ``_SUCCESS`` is not a JSON manifest.
    """
    fs, root = filesystem(run_uri, storage)
    success = RunLayout.parse(root).manifest
    if not fs.exists(success):
        raise FileNotFoundError(f"{run_uri} has no {SUCCESS}: the run is not committed")
    try:
        manifest = json.loads(fs.cat_file(success))
    except ValueError as err:
        raise CorruptRun(f"{run_uri}/{SUCCESS} is not a JSON manifest ({err}); run the run id again") from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("prediction_files"), list):
        raise CorruptRun(f"{run_uri}/{SUCCESS} names no prediction_files; run the run id again")
    return fs, root, manifest


def committed_manifest(run_uri: str, storage: StorageOptions) -> dict:
    """The ``_SUCCESS`` manifest of a committed run (see :func:`commit`).

    Raises:
        FileNotFoundError: the run has no ``_SUCCESS``.
        CorruptRun: ``_SUCCESS`` is not a JSON manifest.
    """
    return _committed_manifest(run_uri, storage)[2]


def _read_parquet(fs, root: str, run_uri: str, rel: str, columns: list[str] | None = None) -> pa.Table:
    """One file a manifest names; its absence or damage named in one line."""
    try:
        parquet = pq.ParquetFile(posixpath.join(root, rel), filesystem=fs)  # the footer is read once
        wanted = None if columns is None else [c for c in columns if c in parquet.schema_arrow.names]
        return parquet.read(columns=wanted)
    except FileNotFoundError as err:
        raise CorruptRun(f"{run_uri}/{rel}, named by {SUCCESS}, is missing; run the run id again") from err
    except pa.ArrowInvalid as err:  # other OSErrors (a network fault) propagate: a retry may pass
        raise CorruptRun(f"{run_uri}/{rel} is truncated or not Parquet ({err}); run the run id again") from err


def read_committed(run_uri: str, storage: StorageOptions, columns: list[str] | None = None) -> pa.Table:
    """Read the committed predictions of a run, in ``PREDICTION_SCHEMA`` (columns a file
    written before they existed come back as nulls) and its partition columns.

    Raises:
        FileNotFoundError: the run has no ``_SUCCESS`` (not committed, or still running).
        CorruptRun: ``_SUCCESS`` is not a manifest, or a file it names is missing or damaged.
    """
    fs, root, manifest = _committed_manifest(run_uri, storage)
    tables = [_read_parquet(fs, root, run_uri, rel, columns) for rel in manifest["prediction_files"]]
    schema = prediction_schema(tuple(manifest.get("partition_keys") or ()))
    table = pa.concat_tables([conform(t, schema) for t in tables]) if tables else schema.empty_table()
    return table if columns is None else table.select(columns)


def read_failures(run_uri: str, storage: StorageOptions) -> pa.Table:
    """Read the committed failures of a run (``path``, ``stage``, ``error``).

    Raises:
        FileNotFoundError: the run has no ``_SUCCESS``.
        CorruptRun: ``_SUCCESS`` is not a manifest, or the failures file is missing or damaged.
    """
    fs, root, manifest = _committed_manifest(run_uri, storage)
    return _read_parquet(fs, root, run_uri, manifest.get("failures_file", STAGED_FAILURES))


@dataclass(frozen=True)
class InferenceOutcome:
    """Step 3's result: what was staged, and how (the local stage, Ray Data's, or a Ray Job: :mod:`batch_classify.run.cluster`).

    Attributes:
        stage: the Ray stage's counts and timings; None when every image was reused and Ray never started.
        reused_from: run URIs and staging attempts that predictions were reused from.
    """

    staged: StagedRun
    stage: StageResult | None
    reused_from: tuple[str, ...] = ()

