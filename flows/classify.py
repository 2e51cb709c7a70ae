"""The main job: list → validate → Ray inference → persist → report.

The flow's parameters are :class:`RunSettings`' fields, flat (``input``, ``output``, ``model``, …),
each with its type, default, range and description: the Prefect UI's Run form shows one field per
setting (choices as dropdowns), and ``prefect deployment run batch-classify/nightly --param model=…``
overrides one at a time over the deployment's parameters.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import time
import typing
from pathlib import Path
from typing import Annotated, Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Completed, Failed
from pydantic import Field, TypeAdapter, WithJsonSchema

try:  # pydantic 2.14 moved it out of experimental
    from pydantic import MISSING
except ImportError:  # pydantic 2.12, 2.13
    from pydantic.experimental.missing_sentinel import MISSING
from pydantic.fields import FieldInfo

from batch_classify.errors import RunRegressed
from batch_classify.report.policy import Outcome, RegressionPolicy
from batch_classify.run.layout import RunLayout
from batch_classify.settings import RunSettings, new_run_id, without_none
from batch_classify.tasks import (
    infer,
    list_dataset,
    mark_regressed,
    persist,
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


def flow_run_run_id() -> str | None:
    """The run id of the current flow run when none is given: ``YYYYMMDDTHHMMSSZ-<6 hex>`` made of the
    flow run's scheduled start time (UTC; 02:00:00 for a nightly run) and the first 6 hex digits of
    its id, so that the flow run's name, its Ray Job and its output folder all name the same run id
    and each leads to the others. None outside a flow run."""
    run_id = flow_run.get_id()
    if not run_id:
        return None
    return new_run_id(flow_run.get_scheduled_start_time(), suffix=str(run_id).replace("-", "")[:6])


def settings_from_parameters(parameters: dict[str, Any]) -> RunSettings:
    """The run's settings from the flow's parameters; a parameter left empty (``MISSING`` or None)
    takes its ``BATCH_CLASSIFY_*`` environment variable, else its default; an empty ``run_id`` (and no
    ``BATCH_CLASSIFY_RUN_ID``) is the flow run's (:func:`flow_run_run_id`).

    Raises:
        pydantic.ValidationError: a value the settings refuse.
    """
    settings = RunSettings(**{k: v for k, v in parameters.items() if v is not None and v is not MISSING})
    if "run_id" not in settings.model_fields_set and (derived := flow_run_run_id()):
        settings = settings.model_copy(update={"run_id": derived})
    return settings


def run_name(settings: RunSettings) -> str:
    """A flow run's name: ``classify-<model>-<run id>`` (the model folder's last name for a folder)."""
    return f"classify-{settings.model.rstrip('/').rsplit('/', 1)[-1]}-{settings.run_id}"


@functools.cache
def _slug_words() -> tuple[frozenset[str], frozenset[str]]:
    """The adjectives and animals of the names Prefect gives unnamed flow runs (``coolname``'s
    two-word slugs, ``prefect.utilities.names.generate_slug(2)``), read from coolname's word lists;
    empty sets where they cannot be read."""
    try:
        import coolname

        data = Path(coolname.__file__).parent / "data"
        config = json.loads((data / "config.json").read_text())

        def words(list_name: str) -> frozenset[str]:
            found: set[str] = set()
            for name in config[list_name]["lists"]:
                if name in config and config[name].get("type") in ("nested", "cartesian"):
                    found |= words(name)
                    continue
                for line in (data / f"{name}.txt").read_text().splitlines():
                    line = line.split("#", 1)[0].strip()
                    if line and "=" not in line:
                        found.add("-".join(line.split()))
            return frozenset(found)

        adjective, subject = config["an"]["lists"]
        return words(adjective), words(subject)
    except Exception:  # noqa: BLE001 - another coolname layout: fall back to the shape alone
        return frozenset(), frozenset()


#: The names the Prefect UI's Run form fills in by itself (its own generator, measured in Prefect 3.8's
#: UI bundle): a Greek letter with an optional number, a star or place (``canis-majoris`` has two
#: words; some draws give none), an optional suffix: ``chi6-alture``, ``alpha-andromedae-nebula``, ``chi2``.
UI_FORM_NAME = re.compile(
    r"(alpha|beta|gamma|delta|epsilon|zeta|eta|theta|iota|kappa|lambda|mu|nu|xi|omicron|pi|rho|sigma|tau|upsilon|phi"
    r"|chi|psi|omega)\d*(-[a-z]+)*"
)


def generated_name(name: str) -> bool:
    """Whether ``name`` is one Prefect made up, not one a person typed into the Run form: an adjective
    and an animal of coolname's lists (``aspiring-degu``: the API's names; two lower-case words where
    those lists cannot be read), or a name of the UI's form (:data:`UI_FORM_NAME`, ``chi6-alture``:
    the form fills one in, and a run submitted as it is should still be named after its run id)."""
    if UI_FORM_NAME.fullmatch(name):
        return True
    adjectives, subjects = _slug_words()
    if not adjectives:
        return re.fullmatch(r"[a-z]+-[a-z]+", name) is not None
    parts = name.split("-")
    return any("-".join(parts[:i]) in adjectives and "-".join(parts[i:]) in subjects for i in range(1, len(parts)))


def flow_run_name() -> str:
    """The flow's ``flow_run_name``: ``classify-<model>-<run id>`` (:func:`run_name`), for every flow
    run, deployment runs included, unless the run was given a name of its own (typed into the Run form,
    ``prefect deployment run --flow-run-name``): that name is kept. Called by Prefect as the flow run
    starts; settings it cannot build leave the name as it is (the flow then fails naming them)."""
    current = flow_run.get_name() or ""
    if current and not generated_name(current):
        return current
    try:
        return run_name(settings_from_parameters(flow_run.get_parameters()))
    except Exception:  # noqa: BLE001 - the flow body reports bad parameters with its own message
        return current or "classify"


def classify_images(**parameters: Any) -> dict:
    # Prefect shows this docstring as the flow's description: one paragraph, no sections.
    """Classify every image under `input` with `model` and write predictions, failures and a report under `output`/RUN_ID. A top-1 drop (without labels: a prediction drift) against the previous full run of the same input and model ends the run, once everything is committed, in a Failed state named "Regressed" and tagged `regressed` (Completed, named "Regressed", with `fail_on_regression` off)."""
    settings = settings_from_parameters(parameters)
    start = time.perf_counter()
    with run_lease(settings):  # one writer per run id, from before staging to the report
        listing = list_dataset(settings)
        validation = validate(settings, listing)
        outcome = infer(settings, listing, validation.label_map, validation.spec)
        committed = persist(settings, outcome.staged)
        result = report(
            settings, listing, committed, outcome, validation.spec, wall_seconds=time.perf_counter() - start,
            unlabelled_reason=validation.unlabelled_reason,
        )
    outcome = RegressionPolicy.from_settings(settings).outcome(result, RunLayout.parse(result["run_uri"]).report_html)
    if outcome.regressed:
        return regressed_state(result, outcome)
    return result


def regressed_state(result: dict, outcome: Outcome):
    """The final state of a regressed flow run, once its predictions and report are committed: tag and
    event first (:func:`batch_classify.tasks.mark_regressed`), then the state the regression policy's
    ``outcome`` names: Failed-type (its data a :class:`~batch_classify.errors.RunRegressed`) or
    Completed holding the report."""
    mark_regressed(result)
    if outcome.failed:
        return Failed(name=outcome.state_name, message=outcome.message, data=RunRegressed(outcome.message))
    return Completed(name=outcome.state_name, message=outcome.message, data=result)


# The flow is this function with the generated signature; the module name `classify_images` is the flow
# itself, so a deployment's entrypoint `batch_classify.flows.classify.classify_images` finds it.
classify_images.__signature__ = SIGNATURE  # type: ignore[attr-defined]
classify_images.__annotations__ = {p.name: p.annotation for p in SIGNATURE.parameters.values()} | {"return": dict}
classify_images = flow(
    classify_images,
    name="batch-classify",
    log_prints=True,
    validate_parameters=True,
    flow_run_name=flow_run_name,
    timeout_seconds=FLOW_RUN_TIMEOUT_SECONDS,
)


def classify(settings: RunSettings, **options: Any):
    """Run the flow on ``settings`` (every field passed as a parameter) in this process.

    Args:
        options: Prefect call options, e.g. ``return_state=True``.

    Returns:
        the report (or the final state with ``return_state=True``).
    """
    return classify_images(**settings.model_dump(), **options)
