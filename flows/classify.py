"""The main job: list → validate → Ray inference → persist → report.

The flow's parameters are :class:`RunSettings`' fields, flat (``input``, ``output``, ``model``, …),
each with its type, default, range and description: the Prefect UI's Run form shows one field per
setting (choices as dropdowns), and ``prefect deployment run batch-classify/nightly --param model=…``
overrides one at a time over the deployment's parameters.
"""

from __future__ import annotations

import inspect
import time
import typing
from typing import Annotated, Any

from prefect import flow
from prefect.states import Completed
from pydantic import Field, TypeAdapter, WithJsonSchema

try:  # pydantic 2.14 moved it out of experimental
    from pydantic import MISSING
except ImportError:  # pydantic 2.12, 2.13
    from pydantic.experimental.missing_sentinel import MISSING
from pydantic.fields import FieldInfo

from batch_classify.cli_options import without_none
from batch_classify.settings import RunSettings
from batch_classify.tasks import (
    infer,
    list_dataset,
    mark_regressed,
    persist,
    regression_message,
    report,
    run_lease,
    validate,
)

#: A flow run still going after this long is ended Failed (Prefect's flow timeout), seconds. 8 hours:
#: a nightly run that has not finished by the working day is a stuck run, and with the deployments'
#: concurrency limit of 1 it would otherwise hold back every later run.
FLOW_RUN_TIMEOUT_SECONDS = 8 * 3600


def _parameter(name: str, field: FieldInfo) -> inspect.Parameter:
    """The flow parameter of one ``RunSettings`` field: its type, constraints, default and description.

    A field whose default is None, or computed at run time (``run_id``, ``cache_dir``), becomes an
    optional parameter whose default is pydantic's ``MISSING``: its JSON schema is the inner type's
    (with the constraints) and holds no default, so the Prefect UI shows one empty optional input.
    (With ``default: null`` the UI fills in null and refuses it, "None is not of type 'string'"; with
    ``anyOf [X, null]`` it shows a choice between X and "None": both measured on Prefect 3.8's UI.)"""
    annotation, metadata = field.annotation, list(field.metadata)
    inner = without_none(annotation)  # the annotation itself unless it is Optional[X]
    if field.default_factory is not None or (inner is not annotation and field.default is None):
        constrained = Annotated[tuple([inner, *metadata])] if metadata else inner
        schema = TypeAdapter(constrained).json_schema()
        annotation = Annotated[typing.Union[constrained, None, MISSING], WithJsonSchema(schema)]
        default = MISSING
    else:
        annotation = Annotated[tuple([annotation, *metadata])] if metadata else annotation
        default = ... if field.is_required() else field.default
    described = Field(default, description=field.description)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=described, annotation=annotation)


#: The flow's signature: every ``RunSettings`` field, in its order.
SIGNATURE = inspect.Signature(
    [_parameter(name, field) for name, field in RunSettings.model_fields.items()], return_annotation=dict
)


def settings_from_parameters(parameters: dict[str, Any]) -> RunSettings:
    """The run's settings from the flow's parameters; a parameter left empty (``MISSING`` or None)
    takes its ``BATCH_CLASSIFY_*`` environment variable, else its default.

    Raises:
        pydantic.ValidationError: a value the settings refuse.
    """
    return RunSettings(**{k: v for k, v in parameters.items() if v is not None and v is not MISSING})


def classify_images(**parameters: Any) -> dict:
    # Prefect shows this docstring as the flow's description: one paragraph, no sections.
    """Classify every image under `input` with `model` and write predictions, failures and a report under `output`/RUN_ID. A top-1 drop (without labels: a prediction drift) against the previous full run of the same input and model ends the run Completed, named "Regressed" and tagged `regressed`, or Failed with `fail_on_regression`."""
    settings = settings_from_parameters(parameters)
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
    if cmp and cmp["regressed"]:  # a Completed state named "Regressed", the flow run tagged `regressed`
        mark_regressed(result)
        return Completed(name="Regressed", message=regression_message(cmp), data=result)
    return result


# The flow is this function with the generated signature; the module name `classify_images` is the flow
# itself, so a deployment's entrypoint `batch_classify.flows.classify.classify_images` finds it.
classify_images.__signature__ = SIGNATURE  # type: ignore[attr-defined]
classify_images.__annotations__ = {p.name: p.annotation for p in SIGNATURE.parameters.values()} | {"return": dict}
classify_images = flow(
    classify_images,
    name="batch-classify",
    log_prints=True,
    validate_parameters=True,
    timeout_seconds=FLOW_RUN_TIMEOUT_SECONDS,
)


def run_name(settings: RunSettings) -> str:
    """The flow run name of a run started from the CLI: ``classify-<model>-<run id>``. Deployment
    runs keep the name Prefect or the Run form gives them; their run id is in every artifact."""
    return f"classify-{settings.model.rstrip('/').rsplit('/', 1)[-1]}-{settings.run_id}"


def classify(settings: RunSettings, **options: Any):
    """Run the flow on ``settings`` (every field passed as a parameter) in this process.

    Args:
        options: Prefect call options, e.g. ``return_state=True``.

    Returns:
        the report (or the final state with ``return_state=True``).
    """
    named = classify_images.with_options(flow_run_name=run_name(settings))
    return named(**settings.model_dump(), **options)
