"""The entrypoint of the Ray Job that runs the inference step inside the cluster.

Submitted by :func:`batch_classify.run.cluster.run_inference_job` as::

    python -m batch_classify.run.stage_job --request OUTPUT/RUN_ID/_staging/_jobs/ID

It reads the run's settings from its environment (``BATCH_CLASSIFY_JOB_SETTINGS``, set by the
submitting side), the listing and the label map from that folder (never lists again), runs
:func:`batch_classify.run.steps.infer` with this process as the Ray driver (reuse, the Ray Data
stage, staged files under ``OUTPUT/RUN_ID/_staging``), and writes ``result.json`` beside the request.
Its stdout and stderr are the job's log, which the submitting side streams. Exit status 0 on
success; 1 with the traceback in the log otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import batch_classify
from batch_classify.models.registry import get_spec
from batch_classify.run import cluster, steps
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {cluster.ENTRYPOINT_MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--request", required=True, help="the job folder holding listing.parquet and request.json"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    log = logging.getLogger("batch_classify.run.stage_job")

    # From the one variable the submitting side set, not BATCH_CLASSIFY_* of the node. "auto" (as shipped,
    # and enforced on reading): join the cluster this job runs on as its driver (Ray sets RAY_ADDRESS for
    # a job's entrypoint), never submit again.
    settings = cluster.settings_from_environment(os.environ)
    storage = settings.storage_options()
    listing, label_map = cluster.read_request(args.request, storage)
    log.info(
        "stage job for run %s: %d listed images, model %s; code from %s",
        settings.run_id, len(listing.records), settings.model, batch_classify.__file__,
    )
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # bars are noise in a streamed log
    spec = get_spec(settings.model, storage)  # this job's entry: the model resolved once, in the cluster
    outcome = steps.infer(settings, listing, label_map, spec, logger=log)  # Ray Data's summary in the job's log
    cluster.write_result(args.request, outcome, storage)
    s = outcome.staged
    log.info("stage job for run %s: staged %d predicted (%d reused), %d failed", settings.run_id,
             s.n_predicted, s.n_reused, s.n_failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
