"""The ``dataset.updated`` event that starts a reprocess run (plain data; Prefect sends it).

Resource id: ``batch-classify.dataset.<URI>``, e.g. ``batch-classify.dataset.s3://photos/2026/11/``;
the URI itself is also the resource label ``batch-classify.uri``, which the ``reprocess``
deployment's trigger passes to the run as ``settings.input``.
"""

from __future__ import annotations

DATASET_UPDATED = "dataset.updated"
RESOURCE_PREFIX = "batch-classify.dataset."
URI_LABEL = "batch-classify.uri"


def dataset_updated(uri: str, *, reason: str = "") -> dict:
    """Keyword arguments for ``prefect.events.emit_event`` announcing that ``uri`` changed.

    Raises:
        ValueError: ``uri`` is empty.
    """
    if not uri.strip():
        raise ValueError("the dataset URI is empty; pass the folder or s3:// prefix that changed")
    return {
        "event": DATASET_UPDATED,
        "resource": {"prefect.resource.id": f"{RESOURCE_PREFIX}{uri}", URI_LABEL: uri},
        "payload": {"uri": uri, "reason": reason} if reason else {"uri": uri},
    }
