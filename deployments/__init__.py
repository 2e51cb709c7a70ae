"""The two deployments of the ``batch-classify`` flow, built from :class:`ServeSettings`.

- ``nightly``: a cron schedule (``ServeSettings.nightly_cron`` in ``timezone``), the whole
  dataset, incremental by default; at most one run at a time (later ones wait in the queue).
- ``reprocess``: no schedule; a ``dataset.updated`` event whose resource names a dataset URI
  under ``reprocess_prefix`` starts a run on that URI (incremental: only what changed is computed).

Both pass the flow's parameters flat (``input``, ``output``, ``model``, …: :class:`RunSettings`'
fields), so the Prefect UI's Run form shows one field per setting with its default and
description, and ``prefect deployment run batch-classify/nightly --param limit=100`` overrides one. Nothing is deployed at import:
``batch-classify serve`` calls :func:`build` and serves the result; ``prefect.yaml`` describes the
same deployments for ``prefect deploy`` to a work pool.
"""

from __future__ import annotations

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from batch_classify.run.events import DATASET_UPDATED, RESOURCE_PREFIX, URI_LABEL
from batch_classify.settings import ServeSettings
from batch_classify.flows import classify_images

NIGHTLY = "nightly"
REPROCESS = "reprocess"
TAGS = ["batch-classify"]


def reprocess_trigger(settings: ServeSettings) -> DeploymentEventTrigger:
    """Fires once per ``dataset.updated`` event under ``settings.reprocess_prefix``; the run's
    ``input`` is the event's dataset URI (a Jinja template the server renders)."""
    return DeploymentEventTrigger(
        name="reprocess-on-dataset-updated",
        expect={DATASET_UPDATED},
        match={"prefect.resource.id": f"{RESOURCE_PREFIX}{settings.reprocess_prefix}*"},
        parameters={**settings.run_defaults(), "input": "{{ event.resource['" + URI_LABEL + "'] }}"},
    )


def build(settings: ServeSettings) -> list[RunnerDeployment]:
    """The ``nightly`` and ``reprocess`` deployments (not yet registered with any server)."""
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    common = dict(tags=TAGS, concurrency_limit=one_at_a_time, entrypoint_type=EntrypointType.MODULE_PATH)
    nightly = classify_images.to_deployment(
        name=NIGHTLY,
        schedules=[Cron(settings.nightly_cron, timezone=settings.timezone)],
        parameters={**settings.run_defaults(), "input": settings.input},
        description=f"Classify {settings.input} every night ({settings.nightly_cron}, {settings.timezone}).",
        **common,
    )
    reprocess = classify_images.to_deployment(
        name=REPROCESS,
        triggers=[reprocess_trigger(settings)],
        parameters={**settings.run_defaults(), "input": settings.input},
        description=(
            f"Classify a dataset when a {DATASET_UPDATED} event names it "
            f"(URIs under {settings.reprocess_prefix or 'any prefix'}); `batch-classify notify URI` emits one."
        ),
        **common,
    )
    return [nightly, reprocess]
