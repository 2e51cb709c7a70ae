"""One table to query (issue 14): the ``latest`` pointer of each input, and the Delta Lake table of runs.

Both are written by ``steps.persist`` after the run's ``_SUCCESS`` (the commit point), so a run that
fails or crashes before its commit changes neither. Both writes are idempotent: a retried persist
writes the same pointer and replaces the same partition.

- ``OUTPUT/_latest/<input slug>.json`` (:func:`batch_classify.run.layout.latest_pointer`): a JSON object
  with :data:`LATEST_FIELDS` naming the latest committed run of one input. It only moves forward: a
  commit older (``committed_at``) than the run it names does not replace it. Replaced under a
  ``flock`` by a rename on local disk, by a conditional PUT (``If-Match``/``If-None-Match``) on S3.
- ``--table URI``: a Delta Lake table (the ``deltalake`` package) holding every committed run's
  prediction rows (``results.PREDICTION_SCHEMA`` and the run's partition columns) plus
  :data:`RUN_COLUMNS`, partitioned by ``run_id``. A run's rows replace that run id's partition in one
  transaction; columns a newer version adds are merged into the table's schema.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from datetime import datetime

import pyarrow as pa

from batch_classify.errors import PermanentError, named
from batch_classify.run.layout import latest_pointer
from batch_classify.run.results import committed_manifest, read_committed
from batch_classify.storage import StorageOptions, filesystem, is_remote_fs, normalize_uri

#: The fields of a latest pointer: the input (absolute URI), the run id and its folder, the model
#: (as the run named it), when it was committed (``_SUCCESS``'s ``committed_at``, ISO 8601 UTC), and
#: its counts of predicted and failed images.
LATEST_FIELDS = ("input", "run_id", "run_uri", "model", "committed_at", "n_predicted", "n_failed")
#: Columns the table adds to (or sets on) each prediction row: strings, and ``committed_at`` as
#: ``timestamp[us, UTC]``. ``run_id`` is the table's partition column.
RUN_COLUMNS = ("run_id", "input", "model", "committed_at")
PARTITION_BY = ("run_id",)
#: Conditional PUTs of a pointer on S3 before giving up: each failed one means another commit of the
#: same input wrote in between (a handful of runs of one input at most commit at once).
POINTER_ATTEMPTS = 10


class TableWriteFailed(RuntimeError):
    """The run is committed but could not be written into the ``--table`` Delta table (or its latest
    pointer); not permanent: the persist task's retry finishes it. The message names the table."""


class TableFolderTaken(PermanentError, ValueError):
    """``--table`` names a file, or a folder that holds other files and no Delta table: writing there
    would add ``_delta_log/`` among the user's own files (and a full ``vacuum`` would delete them)."""


#: The folder that makes a folder a Delta table (the Delta protocol's transaction log).
DELTA_LOG = "_delta_log"
#: How many of a foreign folder's entries :func:`check_table`'s message names.
NAMED_ENTRIES = 3


def check_table(table_uri: str, storage: StorageOptions) -> None:
    """Refuse a ``--table`` that is not the table's to take, before any work: a file, or a folder that
    exists, is not empty and has no ``_delta_log/``. A missing or empty folder (created on the first
    commit) and an existing Delta table pass.

    Raises:
        TableFolderTaken: one line naming the table, a few of the entries found, and what to do.
        OSError: the storage could not be asked.
    """
    fs, root = filesystem(table_uri, storage)
    if not fs.exists(root):
        return
    if not fs.isdir(root):
        raise TableFolderTaken(f"--table {table_uri} is a file, not a Delta table; pass a new or empty folder, or an existing Delta table")
    here = root.rstrip("/")
    entries = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False) if p.rstrip("/") != here)
    if not entries or DELTA_LOG in entries:
        return
    raise TableFolderTaken(
        f"--table {table_uri} holds other files ({named(entries, NAMED_ENTRIES)}) and no Delta table ({DELTA_LOG}/); the table would be "
        f"written among them. Pass a new or empty folder, or an existing Delta table"
    )


def latest_record(input_uri: str, run_uri: str, manifest: dict) -> dict:
    """The latest pointer of a committed run: :data:`LATEST_FIELDS` from its ``_SUCCESS`` manifest."""
    return {
        "input": input_uri,
        "run_id": manifest["run_id"],
        "run_uri": run_uri,
        "model": manifest["model"],
        "committed_at": manifest["committed_at"],
        "n_predicted": manifest["n_predicted"],
        "n_failed": manifest["n_failed"],
    }


def _order(record: dict | None) -> tuple[datetime, str] | None:
    """(committed_at, run_id) of a pointer, or None where it is missing or unreadable (torn, hand-edited)."""
    try:
        return datetime.fromisoformat(record["committed_at"]), str(record["run_id"])
    except (TypeError, KeyError, ValueError):
        return None


def _decode(data: bytes) -> dict | None:
    try:
        record = json.loads(data)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _moves_forward(record: dict, current: dict | None) -> bool:
    """Whether ``record`` may replace ``current``: no readable current one, or not committed earlier
    (ties broken by run id, so two processes agree)."""
    now, before = _order(record), _order(current)
    return before is None or (now is not None and now >= before)


def update_latest(output: str, record: dict, storage: StorageOptions) -> bool:
    """Point ``OUTPUT/_latest/<slug of record["input"]>.json`` at ``record`` unless the pointer names a
    run committed later.

    Args:
        record: :func:`latest_record` of a committed run.

    Returns:
        whether the pointer now holds ``record`` (False: a later commit was there first).

    Raises:
        OSError: storage fails, or on S3 :data:`POINTER_ATTEMPTS` conditional writes in a row lost
            to other writers.
    """
    uri = latest_pointer(output, record["input"])
    fs, path = filesystem(uri, storage)
    data = json.dumps(record, indent=2).encode()
    if not is_remote_fs(fs):
        return _update_local(path, record, data)
    bucket, key, _ = fs.split_path(path)
    for _ in range(POINTER_ATTEMPTS):
        try:
            etag = fs.info(path, refresh=True)["ETag"]
            current = _decode(fs.cat_file(path))
        except FileNotFoundError:
            etag, current = None, None
        if not _moves_forward(record, current):
            return False
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
            return True
        except OSError as err:  # another commit wrote in between (or created it): read again
            if not (_precondition_failed(err) or isinstance(err, FileExistsError)):
                raise
    raise OSError(f"{uri} changed under each of {POINTER_ATTEMPTS} conditional writes; commit again")


def _update_local(path: str, record: dict, data: bytes) -> bool:
    """Read, decide and replace under an exclusive ``flock`` of ``<pointer>.lock`` (never removed)."""
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            try:
                with open(path, "rb") as f:
                    current = _decode(f.read())
            except FileNotFoundError:
                current = None
            if not _moves_forward(record, current):
                return False
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic: a reader sees the old pointer or the new one
            return True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _precondition_failed(err: BaseException) -> bool:
    """s3fs's translation of HTTP 412 (an ``If-Match`` that did not match)."""
    return isinstance(err, OSError) and (
        err.errno == errno.EINVAL and "pre-condition" in str(err) or "PreconditionFailed" in str(err)
    )


def read_latest(output: str, input_uri: str, storage: StorageOptions) -> dict | None:
    """The latest pointer of ``input_uri`` under ``output`` (:data:`LATEST_FIELDS`), or None when no
    run of it has been committed there since pointers exist (or the pointer is unreadable).

    ``input_uri`` may be named any way that names the same dataset (relative, trailing ``/``,
    ``anonymous@``: :func:`batch_classify.run.layout.input_slug`).

    Raises:
        OSError: storage fails (other than the pointer being absent).
    """
    fs, path = filesystem(latest_pointer(output, input_uri), storage)
    try:
        return _decode(fs.cat_file(path))
    except FileNotFoundError:
        return None


def delta_storage_options(table_uri: str, storage: StorageOptions) -> tuple[str, dict[str, str]]:
    """(URI, ``storage_options``) for ``deltalake`` (its object_store's keys) from the run's storage.

    S3: ``AWS_ENDPOINT_URL`` from the run's endpoint (with ``AWS_ALLOW_HTTP`` for an ``http://``
    one), ``AWS_SKIP_SIGNATURE`` for anonymous access (``--anon`` or ``s3://anonymous@``),
    credentials and region from the standard AWS environment variables, and
    ``aws_conditional_put: etag``: a commit to the Delta log is a conditional PUT, so concurrent
    writers (two runs finishing at once) cannot overwrite each other's log entry (delta-rs 1.x commits
    with S3's conditional writes instead of a DynamoDB lock: delta-io/delta-rs discussion 4482; moto's
    endpoint accepts the option, concurrent commits are not tested here). Local: no options.
    """
    uri, anon = normalize_uri(table_uri)
    if not uri.startswith(("s3://", "s3a://")):
        return uri, {}
    options = {"aws_conditional_put": "etag"}
    if storage.endpoint_url:
        options["AWS_ENDPOINT_URL"] = storage.endpoint_url
        if storage.endpoint_url.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    if anon or storage.anon:
        options["AWS_SKIP_SIGNATURE"] = "true"
    return uri, options


def table_rows(run_uri: str, manifest: dict, input_uri: str, storage: StorageOptions) -> pa.Table:
    """The rows a committed run adds to the table: its predictions (``results.read_committed``) with
    :data:`RUN_COLUMNS` set from its ``_SUCCESS`` manifest (a partition column of the input with one
    of those names is replaced by the run's value)."""
    rows = read_committed(run_uri, storage)
    n = rows.num_rows
    committed_at = datetime.fromisoformat(manifest["committed_at"])
    columns = {
        "run_id": pa.array([manifest["run_id"]] * n, pa.string()),
        "input": pa.array([input_uri] * n, pa.string()),
        "model": pa.array([manifest["model"]] * n, pa.string()),
        "committed_at": pa.array([committed_at] * n, pa.timestamp("us", tz="UTC")),
    }
    for name, column in columns.items():
        if name in rows.column_names:
            rows = rows.set_column(rows.column_names.index(name), name, column)
        else:
            rows = rows.append_column(name, column)
    return rows


def write_run(table_uri: str, run_uri: str, manifest: dict, input_uri: str, storage: StorageOptions) -> int:
    """Write a committed run into the Delta table at ``table_uri`` (created on first use): its run id's
    partition is replaced by :func:`table_rows` in one transaction (``mode="overwrite"`` with a
    ``run_id`` predicate; ``schema_mode="merge"`` adds new columns), so writing a run again, or a
    re-run of its run id, never duplicates rows.

    Returns:
        the table's version after the write.

    Raises:
        TableWriteFailed: reading the run or writing the table failed; the message names the table,
            the run, the cause, and what to do.
    """
    from deltalake import DeltaTable, write_deltalake

    uri, options = delta_storage_options(table_uri, storage)
    run_id = manifest["run_id"]
    try:
        rows = table_rows(run_uri, manifest, input_uri, storage)
        if not uri.startswith(("s3://", "s3a://")):
            os.makedirs(uri, exist_ok=True)
        write_deltalake(
            uri, rows, partition_by=list(PARTITION_BY), mode="overwrite",
            predicate=f"run_id = '{run_id}'",  # run ids hold only letters, digits, '-', '_' and '.'
            schema_mode="merge", storage_options=options,
        )
        return DeltaTable(uri, storage_options=options).version()
    except Exception as err:  # noqa: BLE001 - deltalake's and storage's own error types, named below
        raise TableWriteFailed(
            f"run {run_id} is committed at {run_uri}, but writing it into the Delta table {table_uri} failed "
            f"({type(err).__name__}: {err}); the table is as it was (a Delta commit is all or nothing). The persist task retries this; "
            f"otherwise fix the table's storage and run the same --run-id again with --table {table_uri} "
            f"(it replaces the run's rows, never duplicates them)"
        ) from err


def publish_run(run_uri: str, output: str, input_uri: str, table_uri: str | None, storage: StorageOptions) -> None:
    """After a run's commit: :func:`update_latest` from its ``_SUCCESS``, then, with ``table_uri``,
    :func:`write_run`. Both idempotent: call it again after a failure.

    Raises:
        FileNotFoundError: the run is not committed.
        TableWriteFailed: the pointer or the table could not be written (the message names which).
    """
    manifest = committed_manifest(run_uri, storage)
    try:
        update_latest(output, latest_record(input_uri, run_uri, manifest), storage)
    except OSError as err:
        raise TableWriteFailed(
            f"run {manifest['run_id']} is committed at {run_uri}, but its latest pointer "
            f"{latest_pointer(output, input_uri)} could not be written ({err}); the persist task retries this"
        ) from err
    if table_uri:
        write_run(table_uri, run_uri, manifest, input_uri, storage)
