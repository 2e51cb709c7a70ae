"""The one typed settings object of a run.

Built once at an entry point (the CLI, or a flow run's parameters) and passed
down; nothing below reads the environment itself. Every field can also be set
from the environment with the prefix ``BATCH_CLASSIFY_`` (e.g.
``BATCH_CLASSIFY_MODEL=resnet50``); ``ray_address`` also honours Ray's own
``RAY_ADDRESS`` and ``s3_endpoint_url`` the AWS convention ``AWS_ENDPOINT_URL``.

Longer than 400 lines: one settings object is the point (each field's type, default, range and
description in one place, from which the CLI's options, the environment and the flow's parameters are
generated); split by topic, a field's facts would be looked for in several files.
"""

from __future__ import annotations

import os
import secrets
import types
import typing
from typing import Any, Literal
from datetime import datetime, timezone

from pydantic import AliasChoices, Field, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from batch_classify.stage.capacity import DEFAULT_WAIT
from batch_classify.models.preprocess import DEFAULT_MAX_PIXELS
from batch_classify.storage import DEFAULT_READ_TIMEOUT, StorageOptions, absolute_uri

#: Where the model actors run: ``auto`` (a GPU when the cluster has one), ``cpu`` or ``cuda``.
Device = Literal["auto", "cpu", "cuda"]
#: The inference runtime: ``auto`` (PyTorch on a GPU, ONNX Runtime on the CPU), ``torch`` or ``onnx``
#: (``engines.RUNTIMES`` is read from here).
Runtime = Literal["auto", "torch", "onnx"]
#: Where JPEGs are decoded: ``auto`` (on the model actor's GPU when it has one and runs PyTorch),
#: ``cpu`` (Pillow, in decoding tasks) or ``gpu`` (nvJPEG in the model actor; needs a GPU).
Decode = Literal["auto", "cpu", "gpu"]
#: Where the inference stage runs: ``auto`` (this process for a short run on a machine without a GPU
#: and no ``ray_address``, Ray otherwise: ``plan.choose_executor``), ``local`` (this process) or ``ray``.
Executor = Literal["auto", "local", "ray"]
#: The stage's model precision: ``float32`` or ``int8`` (ONNX Runtime on the CPUs; ``batch_classify.stage.quantize``).
Precision = Literal["float32", "int8"]
#: Default model: the seed tutorial's ResNet-152.
DEFAULT_MODEL = "resnet152"
#: Longest run id, characters. A run id names a folder (NAME_MAX is 255 bytes on Linux file systems)
#: and is part of longer names: Ray Job submission ids (``batch-classify-RUN_ID-<8 hex>``).
MAX_RUN_ID = 200
#: Rows per staged Parquet file (``checkpoint_rows``' default, and ``results.StagingWriter``'s). Each file
#: is closed (complete, readable) once it holds this many rows, so a crashed attempt loses at most this
#: many predictions to a resume: about 50 s of one CPU actor at 200 images/s, under 10 s of one GPU.
CHECKPOINT_ROWS = 10_000


def without_none(annotation: Any) -> Any:
    """``X`` of ``Optional[X]``; any other annotation as it is: the type a field of :class:`RunSettings` takes
    when it is given, for the options of the command line and the parameters of the flow, both generated from it."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return args[0] if union and len(args) == 1 else annotation


def check_uri(value: str, what: str) -> str:
    """A dataset or output URI as an absolute, normalised URI (:func:`batch_classify.storage.absolute_uri`:
    a relative local path is resolved against the working directory), refused when it names nothing
    or a root.

    ``""`` (an unset variable in a cron line: ``--input "$DROP"``) would classify the working
    directory, or write to ``/RUN_ID``; ``/``, ``s3://`` and ``s3://anonymous@`` name no folder.

    Raises:
        ValueError: an empty or root-only URI, naming the setting.
    """
    stripped = value.strip()
    bare = stripped.rstrip("/")
    if not stripped:
        raise ValueError(f"{what} is empty (an unset variable?); pass a folder or an s3:// prefix")
    if not bare or bare.lower() in ("s3:", "s3a:", "file:", "s3://anonymous@", "s3a://anonymous@"):
        raise ValueError(f"{what} {value!r} is a root, not a folder; pass a folder or an s3://bucket/prefix")
    return absolute_uri(value)


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/batch-classify``, else ``~/.cache/batch-classify`` (the XDG base directory convention)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "batch-classify")


def new_run_id(now: datetime | None = None, *, suffix: str | None = None) -> str:
    """A run id that sorts by start time: ``YYYYMMDDTHHMMSSZ-<suffix>``, the time in UTC (default: now; a
    naive time is taken as UTC), the suffix 6 random hex digits unless given."""
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{suffix or secrets.token_hex(3)}"


class RunSettings(BaseSettings):
    """Everything one classification run needs to know.

    Raises:
        pydantic.ValidationError: a field has the wrong type or an invalid value
            (e.g. a run id with a slash, a non-positive batch size).
    """

    model_config = SettingsConfigDict(
        env_prefix="BATCH_CLASSIFY_", extra="forbid", populate_by_name=True
    )

    input: str = Field(description="Folder or s3:// prefix holding the images (listed recursively).")
    output: str = Field(description="Folder or s3:// prefix; results go to OUTPUT/RUN_ID/.")
    table: str | None = Field(
        None,
        description=(
            "Delta Lake table (folder or s3:// prefix) that each committed run is also written into, partitioned "
            "by run_id (a re-run of a run id replaces its rows); default: none. See README 'Querying predictions'."
        ),
    )
    model: str = Field(
        DEFAULT_MODEL,
        description=(
            "A registry name (`batch-classify models`) or a model folder, local or s3:// (config.json with "
            "id2label, preprocessing, and model.onnx or model.safetensors; see README 'Your own model')."
        ),
    )
    weights: str | None = Field(
        None, description="Weights file (local path or s3://); default: the torch hub cache or the model's package."
    )
    labels: str | None = Field(
        None,
        description=(
            "Label manifest (CSV or Parquet with columns path,label), or 'none' for an unlabelled run; default: "
            "folder names when they name the model's classes (date folders and the like make the run unlabelled)."
        ),
    )
    run_id: str = Field(default_factory=new_run_id, description="Run id; default sorts by start time.")
    limit: int | None = Field(None, gt=0, description="Classify only the first N listed images (sorted by path).")
    batch_size: int | None = Field(
        None,
        gt=0,
        description="Images per pipeline batch; default 64 on the CPU, 256 on a GPU (see BENCHMARKS.md).",
    )
    sample_size: int = Field(8, gt=0, description="Images decoded and classified by the validation step.")
    max_failed_fraction: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description=(
            "Largest share of listed images that may fail (read, decode, infer) for the run to commit; "
            "over it the run fails and commits nothing. Default 0.05: a few corrupt files do not stop "
            "a nightly run, an unreadable bucket or a broken decoder does."
        ),
    )
    max_image_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        gt=0,
        description="Images with more pixels are recorded as failed without decoding (default: Pillow's limit).",
    )
    read_timeout: float = Field(
        DEFAULT_READ_TIMEOUT,
        gt=0,
        description=(
            "Seconds one image's read may take (first request to last byte, retries included); a read that "
            "takes longer is recorded as that image's read failure. Default 60: photos take well under a "
            "second, a 100 MB file about 8 s at 100 Mbit/s, while a stalled read (hung NFS, a silent S3 "
            "connection) costs a minute, not hours."
        ),
    )
    anon: bool = Field(False, description="Anonymous (unsigned) S3 access.")
    s3_endpoint_url: str | None = Field(  # also the AWS convention AWS_ENDPOINT_URL
        None,
        validation_alias=AliasChoices("s3_endpoint_url", "BATCH_CLASSIFY_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
        description="S3-compatible endpoint, e.g. http://127.0.0.1:9000.",
    )
    ray_address: str | None = Field(  # also Ray's own RAY_ADDRESS
        None,
        validation_alias=AliasChoices("ray_address", "BATCH_CLASSIFY_RAY_ADDRESS", "RAY_ADDRESS"),
        description="Existing Ray cluster; default: start a local Ray.",
    )
    executor: Executor = Field(
        "auto",
        description=(
            "Where the inference stage runs: local (in this process, one model on the CPUs, no Ray to start) "
            "or ray (Ray Data's actor pool); auto: local when no Ray cluster is given, no GPU shows and fewer "
            "images are to be computed than the measured threshold (README, 'Where the stage runs'), else ray."
        ),
    )
    num_cpus: int | None = Field(None, gt=0, description="CPUs for a local Ray or the local executor (default: all).")
    num_actors: int | None = Field(
        None, gt=0, description="Model actors in the pool (default: 4 per GPU, sharing it, else one per 4 CPUs, at least 1)."
    )
    device: Device = Field("auto", description="auto: GPU when the cluster has one.")
    runtime: Runtime = Field(
        "auto",
        description="Inference runtime; auto: PyTorch on a GPU, ONNX Runtime on the CPU.",
    )
    compile: bool = Field(False, description="torch.compile the model (PyTorch runtime only; slow first batches).")
    precision: Precision = Field(
        "float32",
        description=(
            "The model's precision: int8 quantizes the ONNX export (static, calibrated on photos, checked against "
            "float32: the run stops where int8 changes the top-1 class of more than 5% of the check photos); "
            "ONNX Runtime on the CPUs only. EfficientNet-Lite0: 1.7x the model alone, top-1 0.4 points lower "
            "(README, 'Precision')."
        ),
    )
    calibration: str | None = Field(
        None,
        description=(
            "Photos to calibrate --precision int8 on (a folder or s3:// prefix like the input); default: the input "
            "itself (then the int8 model, and with it the model identity --incremental compares, follows the input)."
        ),
    )
    cache_dir: str = Field(
        default_factory=lambda: default_cache_dir(),
        description=(
            "Where ONNX exports are kept between runs, named by the weights' SHA-256 (the second run does not "
            "export again); '' turns the cache off."
        ),
    )
    decode: Decode = Field(
        "auto",
        description=(
            "Where JPEGs are decoded; auto: on the GPU when the model actors have one and run PyTorch, "
            "else on the CPUs. Other formats and JPEGs the GPU refuses are decoded on the CPU either way."
        ),
    )
    max_top1_drop: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description=(
            "A top-1 drop against the baseline (the previous full run of the same input and model, on the images "
            "both share) larger than this (a fraction: 0.02 = 2 points) marks the run Regressed."
        ),
    )
    max_drift: float = Field(
        0.10,
        ge=0.0,
        le=1.0,
        description=(
            "When top-1 cannot be compared (a run without labels): a prediction drift against the baseline "
            "larger than this (total variation distance of the predicted-class "
            "distributions, 0 to 1; 0.10: a tenth of the predictions moved to other classes) marks the run Regressed."
        ),
    )
    low_confidence: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="The report counts predictions whose confidence (top-1 softmax probability) is below this.",
    )
    review_images: int = Field(
        24,
        ge=0,
        le=500,
        description=(
            "Images the report picks for a person to look at: the N least confident predictions, and with a "
            "previous run up to N whose top-1 changed (the report lists them, its page shows their thumbnails)."
        ),
    )
    fail_on_regression: bool = Field(
        True,
        description=(
            "A regressed run (see max_top1_drop, max_drift) ends in a Failed-type state named Regressed, after its "
            "predictions and report are committed (they are valid); false: a Completed state named Regressed. "
            "Tagged regressed either way."
        ),
    )
    incremental: bool = Field(
        False,
        description=(
            "Reuse the predictions of the latest committed run on the same input and model for images whose "
            "content (S3 ETag, else size + mtime) is unchanged; the new run still holds every image."
        ),
    )
    resume: bool = Field(
        True,
        description="Reuse the complete staged files a crashed or failed attempt of the same run id left behind.",
    )
    checkpoint_rows: int = Field(
        CHECKPOINT_ROWS,
        gt=0,
        description="Rows per staged Parquet file; a crash loses at most this many predictions to a resume.",
    )
    verbose: bool = Field(
        False,
        description=(
            "Show Ray's own output on the terminal: its INFO log, its workers' output, Ray Data's progress bars "
            "and its C++ core's log lines. Off: Ray's errors only; Ray Data's warnings, its summary and a progress "
            "line every 10 s go to the infer task's log."
        ),
    )
    lost_capacity_wait: float = Field(
        DEFAULT_WAIT,
        gt=0,
        description=(
            "Seconds a stage on a Ray cluster that lost what its plan needs (a node lost) waits for output "
            "before it stops, so that the infer task's retry plans for the cluster as it is and resumes. "
            "Default 120: Ray notices a dead node within about 30 s, and an autoscaler may bring one back."
        ),
    )
    ray_metrics: bool = Field(
        False,
        description=(
            "Collect and export Ray's own metrics in a local Ray (Ray's enable_metrics_collection). Off: nothing "
            "in this job reads them, and their C++ exporter thread crashed a run with a segmentation fault. A "
            "cluster given with ray_address keeps its owner's setting."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> "RunSettings":
        if self.executor == "local" and self.ray_address is not None:
            raise ValueError(f"--executor local runs the stage in this process, but a Ray cluster is given ({self.ray_address}, "
                             "--ray-address or RAY_ADDRESS); drop one of the two")
        if self.precision == "int8" and (self.runtime == "torch" or self.device == "cuda"):
            given = "--runtime torch" if self.runtime == "torch" else "--device cuda"
            raise ValueError(f"--precision int8 runs under ONNX Runtime on the CPUs, not with {given}; "
                             "drop one of the two")
        return self

    @field_validator("run_id")
    @classmethod
    def _safe_run_id(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        if not value or value.startswith((".", "-", "_")) or set(value) - allowed:
            raise ValueError(
                f"run id {value!r} may hold only letters, digits, '-', '_' and '.', and not start with '.', '-' or '_'"
            )
        if len(value) > MAX_RUN_ID:
            raise ValueError(f"run id of {len(value)} characters is longer than {MAX_RUN_ID}; use a shorter --run-id")
        return value

    @field_validator("input", "output", "table", "calibration")
    @classmethod
    def _not_empty_or_root(cls, value: str | None, info) -> str | None:
        return None if value is None else check_uri(value, info.field_name)

    def run_uri(self) -> str:
        """``OUTPUT/RUN_ID`` with no trailing slash."""
        return f"{self.output.rstrip('/')}/{self.run_id}"

    def storage_options(self) -> StorageOptions:
        """How this run reaches its storage (anonymous S3, the endpoint)."""
        return StorageOptions(anon=self.anon, endpoint_url=self.s3_endpoint_url)


#: The fields ``ServeSettings`` takes from ``RunSettings`` (type, default, range, aliases, description),
#: in order, with what serve changes: the nightly dataset's description, the runs' Ray default, and
#: ``incremental`` on. Everything but ``input`` is the runs' default parameters (``run_defaults``).
SERVE_RUN_FIELDS: dict[str, dict] = {
    "input": {"description": "Dataset the nightly run classifies (folder or s3:// prefix)."},
    "output": {},
    "table": {},
    "model": {},
    "weights": {},
    "batch_size": {},
    "max_failed_fraction": {},
    "incremental": {"default": True},
    "s3_endpoint_url": {},
    "ray_address": {"description": "Ray cluster for the runs; default: a local Ray per run."},
}


def _run_fields(changes: dict[str, dict]) -> dict[str, tuple]:
    """``RunSettings``' fields named in ``changes``, as ``create_model`` takes them, each with its changes."""
    fields = RunSettings.model_fields
    return {name: (fields[name].annotation, FieldInfo.merge_field_infos(fields[name], **change))
            for name, change in changes.items()}


class ServeSettings(create_model("_ServeRunFields", __base__=BaseSettings, **_run_fields(SERVE_RUN_FIELDS))):
    """How ``batch-classify serve`` sets up the deployments: the nightly run's dataset and defaults,
    its schedule, and which ``dataset.updated`` events start a reprocess run.

    The run's fields (:data:`SERVE_RUN_FIELDS`) are ``RunSettings``' own; serve adds its schedule and
    the events it answers. Built once by the CLI (options, then ``BATCH_CLASSIFY_*`` environment
    variables, then defaults).

    Raises:
        pydantic.ValidationError: a field has the wrong type or an invalid value.
    """

    model_config = SettingsConfigDict(env_prefix="BATCH_CLASSIFY_", extra="ignore", populate_by_name=True)

    nightly_cron: str = Field("0 2 * * *", description="Cron schedule of the nightly deployment.")
    timezone: str = Field("UTC", description="IANA time zone of the cron schedule, e.g. Europe/Berlin.")
    reprocess_prefix: str = Field(
        "",
        description=(
            "Only dataset.updated events for URIs starting with this prefix start a reprocess run; "
            "empty: any dataset."
        ),
    )

    @field_validator("input", "output", "table")
    @classmethod
    def _not_empty_or_root(cls, value: str | None, info) -> str | None:
        return None if value is None else check_uri(value, info.field_name)

    @field_validator("reprocess_prefix")
    @classmethod
    def _absolute_prefix(cls, value: str) -> str:
        """An absolute, normalised prefix (event URIs are), keeping a trailing ``/`` that ends a folder."""
        if not value.strip():
            return ""
        return absolute_uri(value) + ("/" if value.rstrip().endswith("/") else "")

    def run_defaults(self) -> dict:
        """The flow parameters shared by both deployments' runs (everything but ``input``; unset ones left out)."""
        fields = [name for name in SERVE_RUN_FIELDS if name != "input"]
        return {k: getattr(self, k) for k in fields if getattr(self, k) is not None}
