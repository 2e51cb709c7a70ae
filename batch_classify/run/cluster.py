"""Running the inference step on an existing Ray cluster as a Ray Job (the Jobs API).

Longer than 400 lines: the two sides of one exchange live together (the files a job reads and
writes, the submitting side that writes and reads them back), so that a change to one side is made
beside the other.

``settings.ray_address`` (``--ray-address``, ``RAY_ADDRESS``) picks how the heavy stage reaches Ray:

- none: a local Ray started in this process;
- a GCS address (``host:6379``, ``auto``): this process joins the cluster as its driver, which is
  right when it runs inside the cluster (on the head node or in a pod beside it);
- an ``http://`` or ``https://`` address (the Jobs API on the head's dashboard, e.g.
  ``http://head:8265``, as ``ray job submit`` takes it): the step is submitted as a Ray Job
  (:func:`run_inference_job`) and this process only watches it;
- ``ray://`` (Ray Client) is refused: a long-lived client connection loses the run when the
  connection drops, and Ray recommends the Jobs API for production.

What travels with a job, under ``OUTPUT/RUN_ID/_staging/_jobs/<submission id>/`` on the run's
own storage (which the cluster must reach by the same URI: S3, or a file system mounted on every
node at the same path):

- ``listing.parquet``: the listed images exactly as listed (path, label, size, content id): the
  job never lists again;
- ``request.json``: the label map and the listing's other fields (the folders it could not list
  among them: the job writes them as ``list`` failures);
- ``result.json``: written by the job when it succeeds: the staged files and counts
  (:class:`~batch_classify.run.results.StagedRun`), the stage's timings and plan
  (:class:`~batch_classify.stage.inference.StageResult`) and the reuse sources. A file on the run's
  storage rather than a line of the job's log: logs can be cut or interleaved, the file is
  written whole or not at all.

The run's settings travel in one environment variable of the job's runtime environment,
:data:`SETTINGS_VARIABLE` (:class:`~batch_classify.settings.RunSettings` as JSON, with
``ray_address="auto"``), which the job needs before it can read its folder (the S3 endpoint is one
of them); the entrypoint names the folder alone (``python -m batch_classify.run.stage_job --request
URI``). No other variable is passed, and so no credentials: the cluster's nodes reach storage with
their own (instance role, their environment). The code travels as the
job's ``working_dir``: a copy of the ``batch_classify`` package alone (about 150 KB). Its
dependencies (the project's, with ``ray[data,default]``) must be installed in the cluster's
image, with the same Python minor version.

Each job points back to its run: its submission id is ``batch-classify-RUN_ID-<8 hex>``, its
``job_name`` metadata (the "Name" column of the Ray dashboard) is the run's name, and its metadata
holds the run id and whatever the caller adds (under Prefect: the flow run's id and UI address).

A cluster with token authentication (``RAY_AUTH_MODE=token`` on the head) takes the job when this
process has ``RAY_AUTH_MODE=token`` and the cluster's token (``RAY_AUTH_TOKEN``, the file named by
``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``): Ray's Jobs client sends it. A refusal is
:class:`RayAuthenticationFailed`, a permanent error (a retry would be refused the same way).

The job runs :func:`batch_classify.run.steps.infer` inside the cluster: reuse (resume,
incremental), the Ray Data stage, staged files written by its driver. A job that fails or is
stopped raises :class:`StageJobFailed`, which is not among the deterministic errors of
:mod:`batch_classify.tasks`, so the Prefect retry of ``infer`` submits a new job; that job resumes from
the complete files the failed one staged (see :mod:`batch_classify.run.reuse`).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import shlex
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


import batch_classify
from batch_classify.errors import BatchClassifyError, ConfigError, PermanentError
from batch_classify.stage.output import StageResult
from batch_classify.run.job_log import follow
from batch_classify.stage.plan import ClusterPlan
from batch_classify.stage.reach import wait_for_address
from batch_classify.stage.ray_logs import job_log_echo, quiet_job_client
from batch_classify.run.layout import RunLayout
from batch_classify.listed import ListedImages
from batch_classify.listing import ListFailure, Listing
from batch_classify.run.results import InferenceOutcome, StagedRun
from batch_classify.settings import RunSettings
from batch_classify.storage import StorageOptions, join, read_bytes, read_parquet, write_bytes, write_parquet

log = logging.getLogger(__name__)

#: Jobs API address schemes (the head node's dashboard).
JOBS_SCHEMES = ("http://", "https://")
#: Module the job runs (``python -m``).
ENTRYPOINT_MODULE = "batch_classify.run.stage_job"
#: Log lines of a failed job quoted in :class:`StageJobFailed`.
LOG_TAIL_LINES = 25
#: Metadata key holding the run id on every submitted job (``ray job list`` shows it).
RUN_ID_KEY = "batch_classify_run_id"

#: Metadata key the Ray dashboard shows as the job's name.
JOB_NAME_KEY = "job_name"

#: The job's environment variable holding the run's settings (JSON).
SETTINGS_VARIABLE = "BATCH_CLASSIFY_JOB_SETTINGS"

LISTING_FILE = "listing.parquet"
REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"

class StageJobFailed(BatchClassifyError, RuntimeError):
    """The Ray Job running the inference step ended FAILED or STOPPED, or left no result.

    Attributes:
        submission_id: the job's submission id (``ray job logs ID`` shows its whole log).
        status: ``FAILED``, ``STOPPED`` or ``SUCCEEDED`` (the last when no result was found).
        log_tail: the last lines of the job's log.
    """

    def __init__(self, message: str, *, submission_id: str, status: str, log_tail: str) -> None:
        super().__init__(message)
        self.submission_id, self.status, self.log_tail = submission_id, status, log_tail


class RayAuthenticationFailed(PermanentError):
    """The Ray cluster's Jobs API refused this process: token authentication is on there and no token,
    or a wrong one, was sent. Not retried: the environment must change first."""


def uses_jobs_api(address: str | None) -> bool:
    """Whether ``address`` means "submit a Ray Job" (``http://``, ``https://``) rather than "be the driver".

    Raises:
        ConfigError (a ValueError): a Ray Client address (``ray://``); the message names the alternatives.
    """
    if not address:
        return False
    lowered = address.strip().lower()
    if lowered.startswith("ray://"):
        raise ConfigError(
            f"ray address {address!r} is a Ray Client address, which this job does not use (a dropped "
            "connection loses the run). Use the Jobs API address of the head node, e.g. "
            "--ray-address http://HEAD:8265 (the stage is submitted as a Ray Job), or run the flow "
            "inside the cluster with --ray-address HEAD:6379 or auto (this process becomes the driver)"
        )
    return lowered.startswith(JOBS_SCHEMES)


def job_folder(settings: RunSettings, submission_id: str) -> str:
    """``OUTPUT/RUN_ID/_staging/_jobs/<submission id>``: where a job's request and result lie."""
    return RunLayout.parse(settings.run_uri()).job(submission_id)


# --- request and result files (both sides) -------------------------------------------------------


def write_request(folder: str, listing: Listing, label_map: dict[str, int], storage: StorageOptions) -> None:
    """Write the listing (Parquet) and the label map (JSON) a job reads."""
    records = listing.records
    write_parquet(join(folder, LISTING_FILE), records.table, storage)
    request = {
        "input": listing.input,
        "n_ignored": listing.n_ignored,
        "ignored_extensions": listing.ignored_extensions,
        "label_source": listing.label_source,
        "partition_keys": list(listing.partition_keys),
        "n_records": len(records),
        "label_map": label_map,
        "list_failures": [[f.path, f.error] for f in listing.list_failures],
        "not_entered": [list(pair) for pair in listing.not_entered],
    }
    write_bytes(join(folder, REQUEST_FILE), json.dumps(request, indent=1).encode(), storage)


def read_request(folder: str, storage: StorageOptions) -> tuple[Listing, dict[str, int]]:
    """Read what :func:`write_request` wrote: the listing, record for record, and the label map.

    Raises:
        OSError: a file is missing or unreadable.
        ValueError: the listing does not hold the number of records the request names.
    """
    request = json.loads(read_bytes(join(folder, REQUEST_FILE), storage))
    table = read_parquet(join(folder, LISTING_FILE), storage)
    records = ListedImages(table)
    if len(records) != request["n_records"]:
        raise ValueError(f"{folder}: {len(records)} listed images, the request names {request['n_records']}")
    listing = Listing(
        input=request["input"],
        records=records,
        n_ignored=request["n_ignored"],
        ignored_extensions=request["ignored_extensions"],
        label_source=request["label_source"],
        partition_keys=tuple(request["partition_keys"]),
        list_failures=tuple(ListFailure(path, error) for path, error in request.get("list_failures", [])),
        not_entered=tuple((path, listed_as) for path, listed_as in request.get("not_entered", [])),
    )
    return listing, {str(k): int(v) for k, v in request["label_map"].items()}


def _nan_to_none(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def write_result(folder: str, outcome: InferenceOutcome, storage: StorageOptions, **extra) -> None:
    """Write the job's outcome as ``result.json`` (NaN timings as null); ``extra`` is kept alongside."""
    stage = None
    if outcome.stage is not None:
        stage = {k: _nan_to_none(v) for k, v in asdict(outcome.stage).items()}
    result = {
        "staged": asdict(outcome.staged),
        "stage": stage,
        "reused_from": list(outcome.reused_from),
        **extra,
    }
    write_bytes(join(folder, RESULT_FILE), json.dumps(result, indent=1).encode(), storage)


def read_result(folder: str, storage: StorageOptions) -> tuple[InferenceOutcome, dict]:
    """Read ``result.json`` back into an :class:`~batch_classify.run.results.InferenceOutcome`.

    Returns:
        (the outcome, the whole result as JSON, ``extra`` fields included).

    Raises:
        FileNotFoundError: the job wrote no result.
    """
    result = json.loads(read_bytes(join(folder, RESULT_FILE), storage))
    s = result["staged"]
    staged = StagedRun(
        staging_uri=s["staging_uri"],
        prediction_files=tuple(s["prediction_files"]),
        failures_file=s["failures_file"],
        n_predicted=s["n_predicted"],
        n_failed=s["n_failed"],
        n_reused=s["n_reused"],
        meta=s["meta"],
    )
    stage = None
    if result["stage"] is not None:
        fields = {k: (math.nan if v is None else v) for k, v in result["stage"].items() if k != "plan"}
        stage = StageResult(**fields, plan=ClusterPlan(**result["stage"]["plan"]))
    return InferenceOutcome(staged=staged, stage=stage, reused_from=tuple(result["reused_from"])), result


# --- the submitting side -------------------------------------------------------------------------


def _package_copy(into: Path, source: Path | None = None) -> Path:
    """Copy the ``batch_classify`` package (no caches, none of its Prefect layers) into ``into``; returns ``into``.

    The copy, not the project folder, is the job's working directory: the same whether the
    package is installed or a source checkout, and nothing else beside it travels. An installed
    package holds ``flows``, ``tasks`` and ``deployments`` (:data:`batch_classify.PREFECT_LAYERS`);
    they stay out, so the job's code imports no Prefect.

    Args:
        source: the package folder to copy; default: the imported ``batch_classify``'s.
    """
    source = source or Path(batch_classify.__file__).resolve().parent
    caches = shutil.ignore_patterns("__pycache__", "*.pyc")

    def ignore(folder: str, names: list[str]) -> set[str]:
        layers = set(batch_classify.PREFECT_LAYERS) if Path(folder) == source else set()
        return set(caches(folder, names)) | (layers & set(names))

    shutil.copytree(source, into / "batch_classify", ignore=ignore)
    return into


def shipped_settings(settings: RunSettings) -> RunSettings:
    """The settings a job runs with: ``ray_address="auto"`` (its driver joins the cluster it runs on), so
    the Jobs API address, which may hold credentials (``https://user:token@head``), stays out of the job."""
    return settings.model_copy(update={"ray_address": "auto"})


def settings_from_environment(environ: Mapping[str, str]) -> RunSettings:
    """The settings a job was given in :data:`SETTINGS_VARIABLE`, with ``ray_address="auto"`` enforced.

    Raises:
        KeyError: the variable is not set (not started by :func:`run_inference_job`).
        pydantic.ValidationError: it does not hold valid settings.
    """
    return shipped_settings(RunSettings.model_validate_json(environ[SETTINGS_VARIABLE]))


def entrypoint(folder: str) -> str:
    """The job's shell command: the stage module and the job folder, quoted."""
    return f"python -m {ENTRYPOINT_MODULE} --request {shlex.quote(folder)}"


def _without_credentials(address: str) -> str:
    """The Jobs API ``address`` without user, password, query or trailing ``/``: what messages and links show."""
    parts = urlsplit(address.strip().rstrip("/"))
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, "", ""))


def dashboard_job_url(address: str, submission_id: str) -> str:
    """The job's page in the Ray dashboard served at the Jobs API ``address`` (credentials dropped)."""
    return f"{_without_credentials(address)}/#/jobs/{submission_id}"


def _authentication_failed(err: Exception, address: str) -> RayAuthenticationFailed:
    """The one line for a Jobs API that refused this process's credentials."""
    refused = "refused the token sent" if "Authentication failed" in str(err) else "requires a token and none was sent"
    return RayAuthenticationFailed(
        f"ray cluster at {_without_credentials(address)} {refused}: it runs with token authentication; set "
        "RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN (or a file named by RAY_AUTH_TOKEN_PATH, "
        "or ~/.ray/auth_token) where this flow runs (`ray get-auth-token` on the head prints it)"
    )


def _tail(logs: str, n: int = LOG_TAIL_LINES) -> str:
    return "\n".join(logs.rstrip("\n").splitlines()[-n:])


def run_inference_job(
    settings: RunSettings,
    listing: Listing,
    label_map: dict[str, int],
    *,
    echo: Callable[[str], None] | None = None,
    poll_seconds: float = 1.0,
    job_name: str | None = None,
    metadata: dict[str, str] | None = None,
    on_submitted: Callable[[str, str], None] | None = None,
) -> InferenceOutcome:
    """Run :func:`batch_classify.run.steps.infer` as a Ray Job on the cluster at ``settings.ray_address``.

    Writes the request under :func:`job_folder`, submits the job with the package as
    its working directory, passes each line of the job's log to ``echo`` as it arrives (streamed by
    ``JobSubmissionClient.tail_job_logs``, see :func:`batch_classify.run.job_log.follow`; under a Prefect task, whose flow logs
    prints, the lines become the task run's log), and reads the job's ``result.json`` when it succeeds. Interrupted (an exception or
    ``KeyboardInterrupt`` while watching), it asks the cluster to stop the job, best effort.

    Args:
        echo: called with each log line of the job, and with one line naming the job when submitted;
            default: ``print`` as it is at the time of the call (Prefect's ``log_prints`` replaces it).
        poll_seconds: seconds between two looks at the job's status (the log is streamed meanwhile).
        job_name: the job's name in the Ray dashboard (its ``job_name`` metadata); default
            ``batch-classify RUN_ID``.
        metadata: more metadata for the job (strings), e.g. the flow run's id and UI address.
        on_submitted: called with the submission id and the job's dashboard URL once it is submitted.

    Raises:
        StageJobFailed: the job ended FAILED or STOPPED (message: job id, status, the last lines of
            its log), or succeeded without writing its result.
        RayAuthenticationFailed: the cluster requires a token this process did not send, or refused it.
        batch_classify.stage.reach.AddressUnreachable: nothing answers at the address (about 25 s).
        ConnectionError: the Jobs API did not answer.
        RuntimeError: the Jobs API refused the submission.
    """
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobStatus, JobSubmissionClient

    echo = echo or (lambda line: print(line, flush=True))
    address = settings.ray_address
    storage = settings.storage_options()
    wait_for_address(address, _without_credentials(address))
    with quiet_job_client(settings.verbose):
        try:
            client = JobSubmissionClient(address)
        except AuthenticationError as err:
            raise _authentication_failed(err, address) from None
        submission_id = f"batch-classify-{settings.run_id}-{secrets.token_hex(4)}"
        folder = job_folder(settings, submission_id)
        write_request(folder, listing, label_map, storage)
        with tempfile.TemporaryDirectory(prefix="batch-classify-job-") as tmp:
            try:
                client.submit_job(
                    entrypoint=entrypoint(folder),
                    submission_id=submission_id,
                    runtime_env={
                        "working_dir": str(_package_copy(Path(tmp))),
                        "env_vars": {SETTINGS_VARIABLE: shipped_settings(settings).model_dump_json()},
                    },
                    metadata={
                        **(metadata or {}),
                        JOB_NAME_KEY: job_name or f"batch-classify {settings.run_id}",
                        RUN_ID_KEY: settings.run_id,
                        "model": settings.model,
                    },
                )
            except AuthenticationError as err:
                raise _authentication_failed(err, address) from None
        url = dashboard_job_url(address, submission_id)
        if on_submitted is not None:
            on_submitted(submission_id, url)
        try:
            echo(f"submitted ray job {submission_id} to {_without_credentials(address)} ({len(listing.records)} images): {url}")
            status, logs = follow(client, submission_id, echo=job_log_echo(echo, settings.verbose), poll_seconds=poll_seconds)
        except BaseException:  # interrupted, cancelled, or the Jobs API stopped answering: do not leave it running
            try:
                if client.stop_job(submission_id):
                    log.warning("stopped ray job %s: its watcher was interrupted", submission_id)
            except Exception as err:  # noqa: BLE001 - best effort; the original error matters more
                log.warning("could not stop ray job %s: %s", submission_id, err)
            raise
    if status != JobStatus.SUCCEEDED:
        # Ray's message repeats the whole log after its first line; the tail below is enough.
        reason = ((client.get_job_info(submission_id).message or "").splitlines() or [""])[0]
        reason = reason.split(", last available logs")[0]
        raise StageJobFailed(
            f"ray job {submission_id} on {_without_credentials(address)} ended {status}: {reason}\n"
            f"last lines of its log (ray job logs {submission_id}):\n{_tail(logs)}",
            submission_id=submission_id, status=str(status), log_tail=_tail(logs),
        )
    try:
        outcome, _ = read_result(folder, storage)
    except FileNotFoundError as err:
        raise StageJobFailed(
            f"ray job {submission_id} on {_without_credentials(address)} succeeded but wrote no {RESULT_FILE} under {folder} "
            f"(does the cluster reach the output by the same URI?)\nlast lines of its log:\n{_tail(logs)}",
            submission_id=submission_id, status=str(status), log_tail=_tail(logs),
        ) from err
    return outcome
