"""Thin Prefect tasks over :mod:`batch_classify.run.steps`: retries, tags, artifacts.

Deterministic errors (bad input, unknown labels, a missing model) are not
retried; storage and cluster errors are, with exponential backoff and jitter.
"""

from __future__ import annotations

import contextvars
import logging
import time

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.runtime import deployment, flow_run
from prefect.tasks import exponential_backoff

from batch_classify.run import cluster, steps
from batch_classify.errors import PermanentError
from batch_classify.run.events import run_regressed
from batch_classify.run.layout import REPORT_HTML, RunLayout, input_slug, slug
from batch_classify.run.lease import RunLease
from batch_classify.stage.core_notes import stderr_is_terminal
from batch_classify.listing import Listing
from batch_classify.models.registry import ModelSpec
from batch_classify.report.policy import RegressionPolicy
from batch_classify.report.verdict import key_figures
from batch_classify.report.format import pct
from batch_classify.report.markdown import render_markdown
from batch_classify.run.results import CommittedRun, InferenceOutcome, StagedRun
from batch_classify.settings import RunSettings
from batch_classify.storage import browser_url

#: Artifact kinds; a key is ``batch-classify-<kind>-<deployment>-<input slug>`` (:func:`artifact_key`).
REPORT_KEY, PER_CLASS_KEY, OUTPUT_KEY, PROGRESS_KEY, RAY_JOB_KEY = "report", "per-class", "output", "progress", "ray-job"
#: The tag a regressed flow run carries (beside its state named "Regressed").
REGRESSED_TAG = "regressed"
#: The scope of runs started outside a deployment (the CLI, a Python call).
NO_DEPLOYMENT = "local"


def artifact_key(kind: str, settings: RunSettings) -> str:
    """``batch-classify-<kind>-<deployment>-<input slug>``: one key, so one history in the Prefect UI,
    per deployment (``local`` outside one) and input (:func:`batch_classify.run.layout.input_slug`), so
    that a test run on three images never shows up in the nightly dataset's series.

    Artifact keys hold lower-case letters, digits and dashes only (Prefect's rule)."""
    scope = slug(deployment.get_name() or NO_DEPLOYMENT) or NO_DEPLOYMENT
    return f"batch-classify-{kind}-{scope}-{input_slug(settings.input)}"


class Progress:
    """Progress of the inference stage: a Prefect progress artifact (updated at most every
    ``every`` seconds) and, when stderr is a terminal, a progress bar with images/s.

    Args:
        total: images listed.
        every: seconds between artifact updates (each is an API call).
    """

    def __init__(self, run_id: str, *, key: str, total: int, every: float = 5.0) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.run_id, self.key, self.total, self.every = run_id, key, total, every
        self._artifact = None
        self._last = 0.0
        self._bar = None
        # Artifact updates in a thread of their own: the stage never waits for the API (down for 30 s, it
        # held the stage's output batches for as long), and an update that fails is skipped.
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="progress-artifact")
        self._sending = None

    def __enter__(self) -> "Progress":
        self._artifact = create_progress_artifact(
            progress=0.0, key=self.key, description=f"Images classified, run {self.run_id} (percent)"
        )
        if stderr_is_terminal():  # also while a local Ray starts with its stderr filtered (core_notes)
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self._bar = Bar(
                TextColumn("classifying"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} images/s"), TimeRemainingColumn(), transient=True,
                console=Console(stderr=True, force_terminal=True),
            )
            self._bar.start()
            self._task = self._bar.add_task("classify", total=self.total, rate="-")
            self._start, self._first_done = time.perf_counter(), None
        return self

    def update(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self._bar is not None:
            if self._first_done is None:
                self._first_done, self._start = done, now
            elapsed = now - self._start
            rate = f"{(done - self._first_done) / elapsed:.1f}" if elapsed > 0 else "-"
            self._bar.update(self._task, completed=done, rate=rate)
        if self._artifact is not None and (now - self._last >= self.every or done >= total):
            self._send(100.0 * done / max(total, 1))
            self._last = now

    def _send(self, percent: float) -> None:
        """Update the artifact in the background unless the last update is still under way (then skip)."""
        if self._sending is not None and not self._sending.done():
            return

        def send() -> None:
            try:
                update_progress_artifact(self._artifact, progress=percent)
            except Exception as err:  # noqa: BLE001 - a progress figure is not worth stopping the stage for
                logging.getLogger(__name__).debug("progress artifact not updated: %s: %s", type(err).__name__, err)

        # In a copy of this thread's context: Prefect's settings (the API's URL) and the task run's are context variables.
        self._sending = self._sender.submit(contextvars.copy_context().run, send)

    def __exit__(self, exc_type, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
        if self._sending is not None:
            self._sending.result()  # in order: the 100 % below comes last
        if exc_type is None and self._artifact is not None:  # also when a Ray Job ran it (no updates from there)
            update_progress_artifact(self._artifact, progress=100.0)
        self._sender.shutdown(wait=False)


def transient(task, task_run, state) -> bool:
    """retry_condition_fn: retry unless the failure is a :class:`~batch_classify.errors.PermanentError`
    (bad input, a missing model, a held run id, a spent failure budget: see :mod:`batch_classify.errors`)."""
    try:
        state.result()
    except PermanentError:
        return False
    except Exception:  # noqa: BLE001 - anything else may pass (network, throttling, a lost node)
        return True
    return False


_storage_retries = dict(
    retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5, retry_condition_fn=transient
)


def run_lease(settings: RunSettings) -> RunLease:
    """The lease of ``OUTPUT/RUN_ID`` (a context manager), owned by this flow run: a second writer of
    the run id is refused at once with a line naming this one (see :mod:`batch_classify.run.lease`)."""
    name = flow_run.get_name()
    return RunLease(settings.run_uri(), settings.storage_options(), owner=f"flow run {name}" if name else "")


@task(name="list-dataset", cache_policy=NO_CACHE, **_storage_retries)
def list_dataset(settings: RunSettings) -> Listing:
    """List every image under the input, with labels."""
    listing = steps.list_dataset(settings)
    labelled = listing.records.n_labelled()
    manifest = (
        f"; {listing.manifest_matched} of the {listing.manifest_rows} rows of the label manifest name a listed image"
        if listing.manifest_rows is not None else ""
    )
    print(
        f"listed {len(listing.records)} images under {settings.input} ({labelled} with a label candidate); "
        f"{listing.n_ignored} entries ignored (not images, hidden) {listing.ignored_extensions or ''}{manifest}"
    )
    for failure in listing.list_failures:  # each is one failed image: in the failures (stage list) and the budget
        print(f"warning: could not list {failure.path} ({failure.error}); counted as one failed image")
    return listing


@task(name="validate", cache_policy=NO_CACHE, retries=0)
def validate(settings: RunSettings, listing: Listing) -> steps.Validation:
    """Decode and classify a few images before the big stage; fail fast on labels or model."""
    validation = steps.validate(settings, listing)
    labels = (
        validation.unlabelled_reason
        or f"labels map onto {len(set(validation.label_map.values()))} of the model's classes"
    )
    print(
        f"sample of {len(validation.sample_paths)} ok: {labels}; "
        f"{len(validation.sample_failures)} sample images failed to decode"
    )
    return validation


# Only the heavy stage carries a tag: a tag concurrency limit on "ray" (`prefect concurrency-limit
# create ray 1`) keeps two flow runs from sharing a cluster's actors. Every tagged task costs a
# limit lookup, and on the embedded SQLite server that lookup is often refused as "database is
# locked" and retried after 2 s (measured: 1-3 such waits per run with five tagged tasks).
@task(name="infer", tags=["ray"], cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10, retry_condition_fn=transient)
def infer(settings: RunSettings, listing: Listing, label_map: dict[str, int], spec: ModelSpec) -> InferenceOutcome:
    """The Ray Data stage: decode, preprocess, model actor pool; output staged as Parquet. On local
    Ray (or a cluster this process joins as its driver) with ``spec``, the model the validation
    resolved; with an ``http(s)://`` ray address, inside the cluster as a Ray Job
    (:func:`batch_classify.run.cluster.run_inference_job`, whose entry resolves the model there)."""
    with Progress(settings.run_id, key=artifact_key(PROGRESS_KEY, settings), total=len(listing.records)) as progress:
        if cluster.uses_jobs_api(settings.ray_address):
            outcome = cluster.run_inference_job(
                settings, listing, label_map, job_name=flow_run.get_name(), metadata=flow_run_metadata(),
                on_submitted=lambda job_id, url: create_link_artifact(
                    key=artifact_key(RAY_JOB_KEY, settings), link=url, link_text=f"ray job {job_id}",
                    description=f"The Ray Job of run {settings.run_id} in the Ray dashboard",
                ),
            )
        else:
            # Ray Data's warnings, summary and a progress line every 10 s go into this task run's log.
            outcome = steps.infer(settings, listing, label_map, spec, progress=progress.update, logger=get_run_logger())
    s = outcome.stage
    if outcome.staged.n_reused:
        print(f"reused {outcome.staged.n_reused} predictions from {', '.join(outcome.reused_from)}")
    if s is None:
        print("inference: nothing to compute; every image's prediction was reused")
    else:
        print(
            f"inference: {s.n_predicted} predicted, {s.n_failed} failed in {s.wall_seconds:.1f} s "
            f"({s.n_input / s.wall_seconds:.1f} images/s) "
            + ("in this process" if s.plan.executor == "local" else f"on {s.plan.num_actors} {s.plan.device} actor(s)")
            + (", int8" if s.plan.precision == "int8" else "")
        )
    return outcome


@task(name="persist", cache_policy=NO_CACHE, **_storage_retries)
def persist(settings: RunSettings, staged: StagedRun) -> CommittedRun:
    """Commit the staged Parquet files under OUTPUT/RUN_ID, _SUCCESS last."""
    committed = steps.persist(settings, staged)
    print(f"committed {committed.n_predicted} predictions and {committed.n_failed} failures to {committed.run_uri}")
    return committed


def flow_run_metadata() -> dict[str, str]:
    """What a Ray Job carries of the flow run that submitted it (``ray job list`` shows it): the flow
    run's id and, where Prefect knows it, its page in the Prefect UI."""
    found = {"prefect_flow_run_id": flow_run.get_id(), "prefect_flow_run_url": flow_run.get_flow_run_ui_url()}
    return {k: str(v) for k, v in found.items() if v}


def output_artifact(settings: RunSettings, run_uri: str) -> None:
    """The ``output`` artifact: a link a browser opens where one can be derived (the AWS console for
    S3, see :func:`batch_classify.storage.browser_url`), else the folder as text to copy (a ``file://``
    link from the Prefect UI opens nothing: browsers refuse it)."""
    what = f"{REPORT_HTML}, predictions, failures"
    url = browser_url(run_uri, settings.storage_options())
    if url is not None:
        create_link_artifact(key=artifact_key(OUTPUT_KEY, settings), link=url, link_text=f"{run_uri} ({what})",
                             description=f"Output folder of run {settings.run_id}")
        return
    create_markdown_artifact(
        key=artifact_key(OUTPUT_KEY, settings),
        markdown=f"```\n{run_uri}\n```\n\n{what}\n",
        description=f"Output folder of run {settings.run_id}",
    )


#: Earlier runs in the report artifact's history table (report.md shows up to 10, report.html 30).
ARTIFACT_HISTORY_ROWS = 5


def report_description(report: dict) -> str:
    """The report artifact's description, fit to the run: the verdict's status, then accuracy for a
    labelled run, the predictions for an unlabelled one."""
    what = (f"accuracy over {report['n_labelled']} labelled images" if report.get("n_labelled")
            else f"predictions of {report['n_predicted']} unlabelled images")
    return f"{report['verdict']['status'].capitalize()}: run {report['run_id']} ({report['model']}), {what}"


def _cell(key: str, value):
    """A per-class table cell: precision and recall as percentages, ``n/a`` where undefined."""
    return pct(value) if key in ("precision", "recall") else value


def mark_regressed(report: dict) -> None:
    """Make a regressed run stand out: emit :data:`batch_classify.run.events.RUN_REGRESSED` (an Automation
    can notify on it; README "Alerts") and tag the flow run ``regressed`` (the runs list shows the tag
    beside the state named "Regressed")."""
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event

    emit_event(**run_regressed(report))
    run_id = flow_run.get_id()
    if run_id:
        with get_client(sync_client=True) as client:
            tags = set(client.read_flow_run(run_id).tags)
            client.update_flow_run(run_id, tags=sorted(tags | {REGRESSED_TAG}))


@task(name="report", cache_policy=NO_CACHE, **_storage_retries)
def report(
    settings: RunSettings,
    listing: Listing,
    committed: CommittedRun,
    outcome: InferenceOutcome,
    spec: ModelSpec,
    wall_seconds: float,
    unlabelled_reason: str | None = None,
) -> dict:
    """Score the run; write report.json/report.md and the Prefect artifacts."""
    report = steps.report(
        settings, listing, committed, outcome, vocabulary=spec.vocabulary(), wall_seconds=wall_seconds,
        unlabelled_reason=unlabelled_reason,
    )
    output_artifact(settings, committed.run_uri)
    create_markdown_artifact(
        key=artifact_key(REPORT_KEY, settings),
        markdown=render_markdown(report, history_rows=ARTIFACT_HISTORY_ROWS),
        description=report_description(report),
    )
    if report["per_class"]:
        keys = ("wnid", "name", "support", "predicted", "correct", "precision", "recall")
        if not any(row.get("wnid") for row in report["per_class"]):  # the model's own classes: no wnids
            keys = keys[1:]
        create_table_artifact(
            key=artifact_key(PER_CLASS_KEY, settings),
            table=[{k: _cell(k, row[k]) for k in keys} for row in report["per_class"]],
            description=f"Per-class precision and recall, run {settings.run_id}",
        )
    figures = "; ".join(f"{name} {value}" for name, value in key_figures(report))
    page = RunLayout.parse(committed.run_uri).report_html
    print(f"{figures}; report at {page}")
    ending = RegressionPolicy.from_settings(settings).outcome(report, page)
    if ending.regressed:
        get_run_logger().warning("%s", ending.message)
    return report
