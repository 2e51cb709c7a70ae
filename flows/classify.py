"""The main job: list → validate → Ray inference → persist → report."""

from __future__ import annotations

import time

from prefect import flow
from prefect.states import Completed
from prefect.runtime import flow_run

from batch_classify.settings import RunSettings
from batch_classify.tasks import infer, list_dataset, persist, regression_message, report, run_lease, validate


def _run_name() -> str:
    settings = flow_run.parameters.get("settings")
    run_id = getattr(settings, "run_id", None) or (settings or {}).get("run_id", "")
    model = getattr(settings, "model", None) or (settings or {}).get("model", "")
    return f"classify-{model}-{run_id}"


#: A flow run still going after this long is ended Failed (Prefect's flow timeout), seconds. 8 hours:
#: a nightly run that has not finished by the working day is a stuck run, and with the deployments'
#: concurrency limit of 1 it would otherwise hold back every later run.
FLOW_RUN_TIMEOUT_SECONDS = 8 * 3600


@flow(
    name="batch-classify",
    flow_run_name=_run_name,
    log_prints=True,
    validate_parameters=True,
    timeout_seconds=FLOW_RUN_TIMEOUT_SECONDS,
)
def classify_images(settings: RunSettings) -> dict:
    """Classify every image under ``settings.input`` and write predictions and a report.

    Returns:
        the report (as in ``OUTPUT/RUN_ID/report.json``). A top-1 drop over
        ``settings.max_top1_drop`` against the previous run (without labels: a prediction drift
        over ``settings.max_drift``) ends the flow run in a Completed state named "Regressed"
        (Failed with ``settings.fail_on_regression``).

    Raises:
        batch_classify.lease.LeaseHeld: another writer is writing the same ``OUTPUT/RUN_ID``.
    """
    start = time.perf_counter()
    with run_lease(settings):  # one writer per run id, from before staging to the report
        listing = list_dataset(settings)
        validation = validate(settings, listing)
        outcome = infer(settings, listing, validation.label_map)
        committed = persist(settings, outcome.staged)
        result = report(
            settings, listing, committed, outcome, wall_seconds=time.perf_counter() - start,
            unlabelled_reason=validation.unlabelled_reason,
        )
    cmp = result.get("comparison")
    if cmp and cmp["regressed"]:  # marked in the UI: a Completed state named "Regressed"
        return Completed(name="Regressed", message=regression_message(cmp), data=result)
    return result
