"""The Ray stage's side of staging (issue 28 item 3): its input as Parquet pages, and its output written by
Ray Data's workers, so that the driver holds neither a record nor an output row per image.

- :func:`write_stage_input` writes the images to compute as pages in the staging attempt
  (``_staging/<attempt>/input/``): ``path``, ``label`` and the listed facts the writer needs
  (``listed:content_id``, ``listed:<partition key>``), with the digest of their paths. Ray Data's tasks
  read them (:func:`batch_classify.stage.inference.read_pages`).
- :class:`PartWriter` is what the workers run after the model actors: each output batch (``write_rows``
  rows) becomes one prediction file in the attempt's ``predictions/`` folder, where a resumed attempt
  finds it as it finds the driver's, and one failures part, and the driver gets the file's summary
  (:func:`batch_classify.stage.output.written_summary`). :meth:`batch_classify.run.results.StagingWriter.add_written`
  records the files; the driver commits the manifest as before.

The staged files live on the run's output, so every node of a cluster must reach it (S3, or a file system
all nodes mount), as every node already reaches the input.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from batch_classify.columns import FAILURE_SCHEMA
from batch_classify.listed import ListedImages, partition_column
from batch_classify.models.vocabulary import Vocabulary
from batch_classify.run.layout import RunLayout
from batch_classify.run.results import CONTENT_ID, failure_rows, predicted_table, prediction_schema, with_carried_facts
from batch_classify.stage.inference import StageInput
from batch_classify.stage.output import PathDigest, written_summary
from batch_classify.stage.reading import CARRIED
from batch_classify.storage import StorageOptions, write_parquet

#: Most pages of the stage's input, and so most of Ray Data's reading-and-decoding tasks over it: the
#: same blocking as ``ray.data.from_items`` over the records had (``n // batch_size`` blocks, at most 200).
MAX_PAGES = 200
#: Rows a worker writes per prediction file (or the stage's batch size where larger; at most
#: ``--checkpoint-rows``, which bounds what a crash loses): about a thousand files at a million images, few
#: enough for a commit on S3 (a copy and a delete each), while the driver's progress and the read circuit
#: breaker still hear from the workers every few seconds.
WRITE_ROWS = 1024

def write_stage_input(records: ListedImages, *, run_uri: str, attempt_id: str, storage: StorageOptions,
                      batch_size: int) -> StageInput:
    """Write ``records`` (the images to compute) as the pages of the Ray stage's input in the staging
    attempt ``attempt_id`` of ``run_uri``: ``max(1, min(len // batch_size, MAX_PAGES))`` pages of about
    equal rows, in the columns of :func:`stage_columns`.

    Returns:
        the pages, their rows and the digest of their paths.

    Raises:
        OSError: the staging folder cannot be written.
    """
    layout = RunLayout.parse(run_uri)
    n = len(records)
    n_pages = max(1, min(n // max(1, batch_size), MAX_PAGES))
    rows = -(-n // n_pages) if n else 1
    pages, digest = [], PathDigest()
    for index, begin in enumerate(range(0, n, rows)):
        page = stage_columns(records[begin:begin + rows])
        digest = digest + PathDigest.of(page.column("path").to_pylist())
        uri = layout.attempt_input_page(attempt_id, index)
        write_parquet(uri, page, storage)
        pages.append(uri)
    return StageInput(pages=tuple(pages), n_images=n, digest=digest)


def stage_columns(records: ListedImages) -> pa.Table:
    """The stage's input columns of ``records``: ``path``, ``label`` and the listed facts its writers need,
    carried through it (:data:`batch_classify.run.results.CONTENT_ID`, ``listed:<partition key>``)."""
    table = records.table
    keys = records.partition_keys
    return pa.table({
        "path": table.column("path"),
        "label": table.column("label"),
        CONTENT_ID: table.column("content_id"),
        **{f"{CARRIED}{key}": table.column(partition_column(key)) for key in keys},
    })


@dataclass(frozen=True)
class PartWriter:
    """Run by Ray Data's workers on the model actors' output: writes each batch's predicted rows (in the
    run's prediction schema, listed facts from the carried ``listed:…`` columns) and failed rows into the
    staging attempt and returns the batch's summary (:data:`batch_classify.stage.output.SUMMARY_COLUMNS`).

    Attributes:
        run_uri: ``OUTPUT/RUN_ID``.
        attempt_id: the staging attempt the files go into.
        label_map: label string → class index (only labels it maps are written).
    """

    run_uri: str
    attempt_id: str
    storage: StorageOptions
    run_id: str
    model: str
    vocabulary: Vocabulary
    label_map: dict[str, int]
    partition_keys: tuple[str, ...] = ()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        layout, attempt_id = RunLayout.parse(self.run_uri), self.attempt_id
        part_id = uuid.uuid4().hex[:16]
        error = np.asarray(batch["error"], dtype=object)
        failed = np.flatnonzero(error != "")
        ok = np.flatnonzero(error == "")
        file = failures_file = ""
        if len(ok):
            schema = prediction_schema(self.partition_keys)
            table = predicted_table(batch, ok, vocabulary=self.vocabulary, model=self.model, run_id=self.run_id, schema=schema)
            table = with_carried_facts(table, schema, self.label_map, batch, ok, self.partition_keys)
            file = layout.attempt_written(attempt_id, part_id)
            write_parquet(file, table, self.storage)
        if len(failed):
            failures_file = layout.attempt_failure_part(attempt_id, part_id)
            write_parquet(failures_file, pa.Table.from_pylist(failure_rows(batch, failed), schema=FAILURE_SCHEMA),
                          self.storage)
        return written_summary(batch, file=file, failures_file=failures_file)
