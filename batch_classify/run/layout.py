"""The run folder ``OUTPUT/RUN_ID``: every name in it, in one place (issue 13).

Layout of a run folder (``<attempt>`` is the staging attempt's id, 32 hex; ``<tag>`` its first
12 characters, which committed file names and the manifest carry)::

    OUTPUT/RUN_ID/predictions/part-<tag>-00000.parquet   # committed: one row per predicted image
    OUTPUT/RUN_ID/failures/part-<tag>.parquet            # committed: one row per failed image (may have no rows)
    OUTPUT/RUN_ID/_SUCCESS                               # JSON manifest: attempt, files, counts; the commit point
    OUTPUT/RUN_ID/_SUCCESS.<tag>.pending                 # a manifest being written, moved over _SUCCESS to commit
    OUTPUT/RUN_ID/report.json, report.md, report.html    # derived from the committed files; report.json last
    OUTPUT/RUN_ID/_LEASE, _LEASE.lock                    # the one writer's lease, its local lock (batch_classify.run.lease)
    OUTPUT/RUN_ID/_staging/<attempt>/_attempt.json       # what computed the attempt's rows (model identity, input)
    OUTPUT/RUN_ID/_staging/<attempt>/predictions/part-00000.parquet
    OUTPUT/RUN_ID/_staging/<attempt>/predictions/part-w<id>.parquet   # written by a Ray Data worker
    OUTPUT/RUN_ID/_staging/<attempt>/failures/part-<id>.parquet       # a worker's failed rows, merged at close
    OUTPUT/RUN_ID/_staging/<attempt>/input/page-00000.parquet         # the Ray stage's input (paths, listed facts)
    OUTPUT/RUN_ID/_staging/<attempt>/failures.parquet    # written when the attempt's writer closes
    OUTPUT/RUN_ID/_staging/_jobs/<submission id>/        # a Ray Job's request and result (batch_classify.run.cluster)
    OUTPUT/_latest/<input slug>.json                     # the latest committed run of an input (not a run folder)

Runs committed before ``failures/`` existed name ``failures.parquet`` at the run's top
(:data:`STAGED_FAILURES`, the manifest's default ``failures_file``).

Who reads and writes what: :mod:`batch_classify.run.results` stages, commits and reads committed runs;
:mod:`batch_classify.run.reuse` reads staged attempts; :mod:`batch_classify.run.lease` the lease;
:mod:`batch_classify.run.cluster` the jobs folder; :mod:`batch_classify.run.steps` the reports. None of them
spells a name of this folder: they ask a :class:`RunLayout`.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass

from batch_classify.storage import dataset_key, join

#: The manifest of a committed run: its presence is the commit.
MANIFEST = "_SUCCESS"
#: Staging folder: one sub-folder per attempt (and :data:`JOBS`).
STAGING = "_staging"
#: Under :data:`STAGING`: one folder per Ray Job submitted for the run.
JOBS = "_jobs"
#: The run id's lease (JSON), and the file locked (``flock``) beside it on local disk.
LEASE = "_LEASE"
LEASE_LOCK = f"{LEASE}.lock"
#: Folders of the committed prediction and failure files (also the predictions' folder in an attempt).
PREDICTIONS = "predictions"
FAILURES = "failures"
#: In an attempt's folder: the pages of the Ray stage's input.
STAGE_INPUT = "input"
#: In an attempt's folder: what computed its rows.
ATTEMPT_META = "_attempt.json"
#: In an attempt's folder: its failures; at a run's top: the failures file of runs committed before
#: ``failures/part-<tag>.parquet``.
STAGED_FAILURES = "failures.parquet"
#: The report files, in the order the report step writes them (``report.json`` last: its commit point).
REPORT_MD, REPORT_HTML, REPORT_JSON = "report.md", "report.html", "report.json"
#: Under ``OUTPUT``: one JSON pointer per input to its latest committed run (:func:`latest_pointer`).
#: Run ids cannot start with ``_``, so no run folder takes this name.
LATEST = "_latest"
#: Characters of :func:`input_slug`'s readable part, and hex digits of its hash part (32 bits).
SLUG_NAME_LENGTH, SLUG_HASH_LENGTH = 24, 8
#: Characters of the attempt id that committed file names carry (48 bits: unique among a run id's attempts).
TAG_LENGTH = 12


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder; path arithmetic only (no storage access).

    Every property is ``uri`` joined with names from this module (``/``, as
    :func:`batch_classify.storage.join` joins). ``uri`` may be a URI (local path, ``s3://``,
    ``s3://anonymous@``) or the path a filesystem names it by (``storage.filesystem(uri)[1]``,
    e.g. ``bucket/out/run`` on S3): the properties are then paths on that filesystem.

    Attributes:
        uri: the run folder ``OUTPUT/RUN_ID``, without a trailing ``/``.

    >>> RunLayout.of("s3://bucket/out/", "nightly-1").manifest
    's3://bucket/out/nightly-1/_SUCCESS'
    """

    uri: str

    def __post_init__(self) -> None:
        if not self.uri or self.uri != self.uri.rstrip("/"):
            raise ValueError(f"run folder {self.uri!r} is empty or ends with '/': use RunLayout.parse")

    @classmethod
    def of(cls, output: str, run_id: str) -> "RunLayout":
        """The run ``run_id`` under ``output`` (``RunSettings.run_uri`` is this layout's ``uri``).

        Raises:
            ValueError: ``run_id`` is empty or holds a ``/``.
        """
        if not run_id or "/" in run_id:
            raise ValueError(f"run id {run_id!r} is empty or holds '/'")
        return cls(f"{output.rstrip('/')}/{run_id}")

    @classmethod
    def parse(cls, run_uri: str) -> "RunLayout":
        """The layout of the run folder ``run_uri`` (``OUTPUT/RUN_ID``; a trailing ``/`` is ignored).

        Raises:
            ValueError: ``run_uri`` is empty or only ``/``.
        """
        stripped = run_uri.rstrip("/")
        if not stripped:
            raise ValueError(f"run folder {run_uri!r} names no folder")
        return cls(stripped)

    @property
    def output(self) -> str:
        """``OUTPUT``: what precedes the last ``/`` (``""`` for a bare relative name)."""
        return self.uri.rpartition("/")[0]

    @property
    def run_id(self) -> str:
        """``RUN_ID``: the last part of ``uri``."""
        return self.uri.rpartition("/")[2]

    def path(self, relative: str) -> str:
        """``uri/relative``: a file a manifest names (its names are relative to the run folder).

        Raises:
            ValueError: ``relative`` is absolute or holds ``..``.
        """
        return join(self.uri, relative)

    def relative(self, path: str) -> str:
        """``path`` relative to the run folder, as a manifest names it."""
        return posixpath.relpath(path, self.uri)

    # -- committed ------------------------------------------------------------------------------
    @property
    def manifest(self) -> str:
        """``OUTPUT/RUN_ID/_SUCCESS``."""
        return join(self.uri, MANIFEST)

    def pending_manifest(self, tag: str) -> str:
        """``OUTPUT/RUN_ID/_SUCCESS.<tag>.pending``: the manifest of attempt ``tag`` before the commit point."""
        return join(self.uri, f"{MANIFEST}.{tag}.pending")

    @property
    def pending_manifests(self) -> str:
        """A glob pattern matching every :meth:`pending_manifest`."""
        return self.pending_manifest("*")

    @property
    def predictions(self) -> str:
        """``OUTPUT/RUN_ID/predictions``: the committed prediction files' folder."""
        return join(self.uri, PREDICTIONS)

    @property
    def failures(self) -> str:
        """``OUTPUT/RUN_ID/failures``: the committed failure files' folder."""
        return join(self.uri, FAILURES)

    @staticmethod
    def prediction_name(tag: str, staged_name: str) -> str:
        """``predictions/part-<tag>-NNNNN.parquet`` (relative): the committed name of the staged
        ``part-NNNNN.parquet`` of attempt ``tag``."""
        return posixpath.join(PREDICTIONS, f"part-{tag}-{staged_name.removeprefix('part-')}")

    @staticmethod
    def failures_name(tag: str) -> str:
        """``failures/part-<tag>.parquet`` (relative): attempt ``tag``'s committed failures."""
        return posixpath.join(FAILURES, f"part-{tag}.parquet")

    @property
    def report_json(self) -> str:
        return join(self.uri, REPORT_JSON)

    @property
    def report_md(self) -> str:
        return join(self.uri, REPORT_MD)

    @property
    def report_html(self) -> str:
        return join(self.uri, REPORT_HTML)

    @property
    def reports(self) -> tuple[str, str, str]:
        """The report files, in the order the report step writes them: md, html, json."""
        return self.report_md, self.report_html, self.report_json

    # -- the lease ------------------------------------------------------------------------------
    @property
    def lease(self) -> str:
        """``OUTPUT/RUN_ID/_LEASE``."""
        return join(self.uri, LEASE)

    @property
    def lease_lock(self) -> str:
        """``OUTPUT/RUN_ID/_LEASE.lock`` (local disk only)."""
        return join(self.uri, LEASE_LOCK)

    # -- staging ---------------------------------------------------------------------------------
    @property
    def staging(self) -> str:
        """``OUTPUT/RUN_ID/_staging``."""
        return join(self.uri, STAGING)

    def attempt(self, attempt_id: str) -> str:
        """``OUTPUT/RUN_ID/_staging/<attempt>``: one writer's staged files.

        Raises:
            ValueError: ``attempt_id`` is empty, holds ``/``, or is the jobs folder's name.
        """
        if not attempt_id or "/" in attempt_id or attempt_id == JOBS:
            raise ValueError(f"attempt id {attempt_id!r} is empty, holds '/', or is {JOBS!r}")
        return join(self.staging, attempt_id)

    def attempt_meta(self, attempt_id: str) -> str:
        """``.../_staging/<attempt>/_attempt.json``."""
        return join(self.attempt(attempt_id), ATTEMPT_META)

    def attempt_predictions(self, attempt_id: str) -> str:
        """``.../_staging/<attempt>/predictions``: the attempt's prediction files' folder."""
        return join(self.attempt(attempt_id), PREDICTIONS)

    def attempt_prediction(self, attempt_id: str, index: int) -> str:
        """``.../_staging/<attempt>/predictions/part-NNNNN.parquet``: the attempt's ``index``-th file (from 0)."""
        return join(self.attempt_predictions(attempt_id), f"part-{index:05d}.parquet")

    def attempt_written(self, attempt_id: str, part_id: str) -> str:
        """``.../_staging/<attempt>/predictions/part-w<part_id>.parquet``: a file a Ray Data worker wrote."""
        return join(self.attempt_predictions(attempt_id), f"part-w{part_id}.parquet")

    def attempt_failure_part(self, attempt_id: str, part_id: str) -> str:
        """``.../_staging/<attempt>/failures/part-<part_id>.parquet``: a worker's failed rows (merged into
        the attempt's ``failures.parquet`` when its writer closes)."""
        return join(self.attempt(attempt_id), FAILURES, f"part-{part_id}.parquet")

    def attempt_input_page(self, attempt_id: str, index: int) -> str:
        """``.../_staging/<attempt>/input/page-NNNNN.parquet``: the ``index``-th page of the Ray stage's input."""
        return join(self.attempt(attempt_id), STAGE_INPUT, f"page-{index:05d}.parquet")

    def attempt_failures(self, attempt_id: str) -> str:
        """``.../_staging/<attempt>/failures.parquet``."""
        return join(self.attempt(attempt_id), STAGED_FAILURES)

    @staticmethod
    def attempt_id(attempt_uri: str) -> str:
        """The attempt id of an attempt's folder (its last part)."""
        return posixpath.basename(attempt_uri.rstrip("/"))

    @staticmethod
    def tag(attempt_uri: str) -> str:
        """The first :data:`TAG_LENGTH` characters of the attempt id: what committed names carry."""
        return RunLayout.attempt_id(attempt_uri)[:TAG_LENGTH]

    @property
    def jobs(self) -> str:
        """``OUTPUT/RUN_ID/_staging/_jobs``: the Ray Jobs' folders (removed with the staging folder)."""
        return join(self.staging, JOBS)

    def job(self, submission_id: str) -> str:
        """``OUTPUT/RUN_ID/_staging/_jobs/<submission id>``: where a Ray Job's request and result lie."""
        return join(self.jobs, submission_id)


def slug(text: str) -> str:
    """``text`` in lower case with every run of other characters than ``a-z0-9`` made one ``-``, none at
    either end (``"Day_01"`` → ``"day-01"``): what Prefect allows in an artifact key."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def input_slug(input_uri: str) -> str:
    """A short, stable name of a dataset: its last folder name (lower case, at most 24 of
    ``a-z0-9-``) and 8 hex digits of the SHA-256 of :func:`batch_classify.storage.dataset_key`.

    The same folder named relatively, with a trailing ``/``, or read anonymously gets the same
    slug; two datasets with the same last name get different ones. Used in Prefect artifact keys
    (lower-case letters, digits and dashes) and in :func:`latest_pointer`'s file name.

    >>> input_slug("s3://anonymous@bucket/images/Day_01/")
    'day-01-eaf83db0'
    """
    key = dataset_key(input_uri)
    name = slug(posixpath.basename(key))[:SLUG_NAME_LENGTH].strip("-")
    digest = hashlib.sha256(key.encode()).hexdigest()[:SLUG_HASH_LENGTH]
    return f"{name or 'root'}-{digest}"


def latest_pointer(output: str, input_uri: str) -> str:
    """``OUTPUT/_latest/<input slug>.json``: the latest committed run of ``input_uri`` under ``output``."""
    return join(output, LATEST, f"{input_slug(input_uri)}.json")
