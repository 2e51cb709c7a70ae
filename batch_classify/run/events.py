"""The events of batch-classify (plain data; Prefect sends them).

``dataset.updated`` starts a reprocess run. ``batch-classify.run.regressed`` says a run regressed
against the previous one (:func:`run_regressed`); an Automation turns it into a notification.

Resource id: ``batch-classify.dataset.<URI>``, e.g. ``batch-classify.dataset.s3://photos/2026/11/``;
the URI itself is also the resource label ``batch-classify.uri``, which the ``reprocess``
deployment's trigger passes to the run as ``settings.input``.
"""

from __future__ import annotations

from batch_classify.storage import absolute_uri

DATASET_UPDATED = "dataset.updated"
RESOURCE_PREFIX = "batch-classify.dataset."
URI_LABEL = "batch-classify.uri"
#: Emitted by a flow run whose comparison with the previous run regressed.
RUN_REGRESSED = "batch-classify.run.regressed"
#: Resource ids of runs: ``batch-classify.run.<RUN_ID>``.
RUN_RESOURCE_PREFIX = "batch-classify.run."
#: Rows of ``per_class_delta`` an event carries (the largest drops; the report has them all).
EVENT_PER_CLASS_ROWS = 10


def dataset_updated(uri: str, *, reason: str = "") -> dict:
    """Keyword arguments for ``prefect.events.emit_event`` announcing that ``uri`` changed.

    ``uri`` is made absolute and normalised (:func:`batch_classify.storage.absolute_uri`).

    Raises:
        ValueError: ``uri`` is empty.
    """
    if not uri.strip():
        raise ValueError("the dataset URI is empty; pass the folder or s3:// prefix that changed")
    uri = absolute_uri(uri)  # as the run will store it: a relative folder names the same dataset as its absolute path
    return {
        "event": DATASET_UPDATED,
        "resource": {"prefect.resource.id": f"{RESOURCE_PREFIX}{uri}", URI_LABEL: uri},
        "payload": {"uri": uri, "reason": reason} if reason else {"uri": uri},
    }


def run_regressed(report: dict) -> dict:
    """Keyword arguments for ``prefect.events.emit_event`` saying the run of ``report`` regressed.

    The resource is the run (``batch-classify.run.<RUN_ID>``, labelled with its input and output
    URIs); the payload holds what an alert needs: run id, input, run URI, model, the previous run,
    the deltas (fractions: ``top1_delta`` -0.25 is 25 points down; ``drift_tvd`` in [0, 1]), the
    reasons, both runs' image counts, the images compared and how many of them changed class, and the largest per-class drops.

    Args:
        report: a report whose ``comparison`` regressed (:func:`batch_classify.report.build.build_report`).
    """
    cmp = report["comparison"]
    keys = ("previous_run_uri", "previous_model", "top1_delta", "top5_delta", "drift_tvd", "mean_confidence_delta",
            "reasons", "n_current", "n_previous", "n_compared", "n_changed")
    return {
        "event": RUN_REGRESSED,
        "resource": {
            "prefect.resource.id": f"{RUN_RESOURCE_PREFIX}{report['run_id']}",
            "prefect.resource.name": report["run_id"],
            URI_LABEL: report["input"],
            "batch-classify.run-uri": report["run_uri"],
        },
        "payload": {
            "run_id": report["run_id"], "input": report["input"], "run_uri": report["run_uri"], "model": report["model"],
            **{k: cmp.get(k) for k in keys},
            "per_class_delta": (cmp.get("per_class_delta") or [])[:EVENT_PER_CLASS_ROWS],
        },
    }
