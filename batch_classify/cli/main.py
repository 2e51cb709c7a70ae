"""Command line: ``batch-classify run | report | models | demo | serve | notify``.

The CLI is an entry point: it builds the one :class:`RunSettings` (arguments,
then ``BATCH_CLASSIFY_*`` environment variables, then defaults) and hands it to
the Prefect flow.

Errors a user can cause print as one ``error:`` line on stderr, exit code 1; the terminal shows no
traceback (Prefect's console handler included: ``cli.logs``) unless ``batch-classify --debug``
is given. The flow run's log in the Prefect API keeps the traceback either way. A run that regressed
(``fail_on_regression``, the default) prints its summary and one ``regressed:`` line, exit code
:data:`batch_classify.report.policy.EXIT_REGRESSED`: everything is committed, but a script must not take it for a good night.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from batch_classify.cli.options import environment_epilog, settings_options
from batch_classify.cli.prefect_setup import import_prefect, on_temporary_api, prefect_defaults
from batch_classify.cli.summary import describe_model, preview, print_summary
from batch_classify.report.policy import THRESHOLDS
from batch_classify.run.layout import MANIFEST, RunLayout
from batch_classify.settings import RunSettings, ServeSettings

#: Storage options of the commands that read a run or a model folder without a RunSettings (report, models).
AnonOption = Annotated[bool, typer.Option("--anon", help="Anonymous S3 access.")]
EndpointOption = Annotated[
    Optional[str], typer.Option(envvar="AWS_ENDPOINT_URL", help="S3-compatible endpoint. [default: $AWS_ENDPOINT_URL]")
]

#: RunSettings fields `run` offers no option for: the environment (BATCH_CLASSIFY_*, AWS_ENDPOINT_URL) sets them.
RUN_ENVIRONMENT_ONLY = ("sample_size", "s3_endpoint_url", "checkpoint_rows", "ray_metrics", "lost_capacity_wait")
#: Short option names; every other option is the field's name, --kebab-case.
SHORT = {"input": ("--input", "-i"), "output": ("--output", "-o")}
#: Environment variables `run` reads besides the RunSettings fields' own (listed in `run --help`).
RUN_OTHER_ENVIRONMENT = (
    ("TORCH_HOME", "registry weights are looked for in $TORCH_HOME/hub/checkpoints [default: $XDG_CACHE_HOME/torch]"),
    ("XDG_CACHE_HOME", "base of the torch hub cache and of --cache-dir's default [default: ~/.cache]"),
    ("PREFECT_API_URL", "the Prefect server the flow run reports to; unset: a temporary local API for this run"),
    ("AWS_ACCESS_KEY_ID", "S3 credentials (with AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), unless --anon"),
    ("AWS_SECRET_ACCESS_KEY", "S3 credentials, with AWS_ACCESS_KEY_ID"),
    ("AWS_SESSION_TOKEN", "S3 temporary credentials, with the two above"),
    ("AWS_PROFILE", "S3 credentials from a profile of ~/.aws/credentials instead"),
    ("RAY_AUTH_MODE", "'token' for a Ray cluster with token authentication (--ray-address http://HEAD:8265)"),
    ("RAY_AUTH_TOKEN", "that cluster's token (or a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token)"),
)

# rich_markup_mode=None: help texts are plain text, so their "[default: …]" is shown, not taken for markup.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, help="Batch image classification with Ray Data and Prefect.")
err = Console(stderr=True)
out = Console()
#: Set by `batch-classify --debug`: tracebacks reach the terminal.
DEBUG = False


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"batch-classify {version('batch-classify')}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="On an error, print its traceback (and Prefect's) to the terminal, not only one line.")
    ] = False,
) -> None:
    """Batch image classification with Ray Data and Prefect."""
    global DEBUG
    DEBUG = debug


def _fail(message: str, code: int = 1):
    """Print ``error: message`` on stderr (after the traceback being handled, with --debug) and exit with ``code``."""
    if DEBUG and sys.exc_info()[0] is not None:
        traceback.print_exc()
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def run_flow(settings) -> dict:
    """Run the flow; any failure becomes a one-line reason and exit code 1; Ctrl-C or SIGTERM stops it
    within seconds with one line and exit code 130 or 143 (:mod:`batch_classify.cli.interrupts`).

    Start-up is done side by side (:mod:`batch_classify.cli.startup`): Prefect's temporary API (where no
    ``PREFECT_API_URL`` is set) starts first, in its own process; the model's load and the steps'
    imports run in one thread, Prefect's imports in another, a local Ray's start and then Ray Data's
    helper actors in a third (:func:`batch_classify.cli.startup.start_ray_ahead`: the inference step waits
    for it, adopts that Ray and stops it in the background when the stage ends); the flow starts when
    the first two and the API are ready, on the temporary API without heartbeats
    (:func:`batch_classify.cli.prefect_setup.on_temporary_api`). The API stops at exit, after Prefect has
    sent its last log lines.
    """
    from batch_classify.cli import startup
    from batch_classify.errors import RunRegressed
    from batch_classify.cli.interrupts import exit_code, interrupted_line, stop_on_signals

    stop_on_signals()  # Ctrl-C and SIGTERM: KeyboardInterrupt here, at once (see batch_classify.cli.interrupts)
    # Started before Prefect is imported (about 1 s), so it may turn out that a Prefect profile names a
    # server after all: then it is stopped unused. The console script may have started both already.
    api = startup.guarded_temporary_api()
    here = startup.guess_stage_here(settings)  # --executor auto: is the input small enough to skip Ray?
    ray_ahead = startup.start_ray_ahead(settings, here)  # the longest: Ray's start waits on its own processes
    model = startup.in_background(startup.prepare_model, settings, here)
    prefect = startup.in_background(import_prefect, DEBUG)
    try:
        for thread in (prefect, model):
            thread.join()
        prefect_defaults(DEBUG)  # again, in this thread: raises what the background import hid
        from prefect.settings import PREFECT_API_URL

        from batch_classify.flows import classify

        if api is not None and PREFECT_API_URL.value():  # a profile names a server: not needed
            api.stop()
            api = None
        if api is None:
            return classify(settings)
        with on_temporary_api(api):
            return classify(settings)
    except RunRegressed:
        raise  # not an error: the caller prints the summary of what is committed
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: the finally blocks below it have run
        err.print(interrupted_line(settings.run_id), highlight=False, soft_wrap=True)
        raise typer.Exit(exit_code(stop)) from None
    except Exception as exc:  # noqa: BLE001 - the CLI's job is the one-line reason
        said = startup.temporary_api_said(exc)
        _fail(_one_line(exc) + (f"; {said}" if said else ""))
    finally:
        if ray_ahead is not None:  # no stage adopted it (the run failed before), or its shutdown is under way
            from batch_classify.stage.ray_start import stop_ray_ahead

            stop_ray_ahead()


@app.command(epilog=environment_epilog(RunSettings, environment_only=RUN_ENVIRONMENT_ONLY, names=SHORT,
                                       others=RUN_OTHER_ENVIRONMENT))
@settings_options(RunSettings, exclude=RUN_ENVIRONMENT_ONLY, names=SHORT)
def run(
    given: dict,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print no prediction table: the summary line and the output line only.")] = False,
) -> None:
    """Classify every image under INPUT; write predictions, failures and a report under OUTPUT/RUN_ID."""
    from pydantic import ValidationError

    try:
        settings = RunSettings(**given)
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    _check_input(settings)
    _run_and_summarise(settings, quiet=quiet)


def _run_and_summarise(settings: RunSettings, *, quiet: bool) -> None:
    """Run the flow and print its summary; a regressed run (Failed-type, ``fail_on_regression``) prints
    its summary from the committed report, then one ``regressed:`` line, and exits
    :data:`batch_classify.report.policy.EXIT_REGRESSED`."""
    from batch_classify.errors import RunRegressed
    from batch_classify.report.policy import EXIT_REGRESSED

    try:
        report = run_flow(settings)
    except RunRegressed as regressed:
        import json

        from batch_classify.storage import read_bytes

        report = json.loads(read_bytes(RunLayout.parse(settings.run_uri()).report_json, settings.storage_options()))
        print_summary(out, report, None if quiet else preview(settings))
        reason = str(regressed).removeprefix("Regressed: ")
        err.print(f"[bold yellow]regressed:[/] {escape(reason)}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_REGRESSED)
    print_summary(out, report, None if quiet else preview(settings))


def _check_input(settings: RunSettings) -> None:
    """Stop with one line on an input that is not there, or a ``--table`` folder that is not the table's,
    before the Prefect API and Ray start (the console script starts its early API only for a local
    input that is there: ``launch.entry``; the flow's first step checks both again)."""
    from batch_classify.listing import ListingError, check_input
    from batch_classify.run.table import TableFolderTaken, check_table

    try:
        check_input(settings.input, settings.storage_options())
        if settings.table:
            check_table(settings.table, settings.storage_options())
    except (ListingError, TableFolderTaken) as exc:
        _fail(_one_line(exc))


@app.command()
@settings_options(RunSettings, (*THRESHOLDS, "low_confidence", "review_images"))
def report(
    given: dict,
    run_uri: Annotated[str, typer.Argument(help="A committed run: OUTPUT/RUN_ID (local or s3://).")],
    anon: AnonOption = False,
    s3_endpoint_url: EndpointOption = None,
) -> None:
    """Re-render report.json, report.md and report.html of a committed run from its predictions."""
    from batch_classify.models.registry import ModelError
    from batch_classify.report.build import rerender_report
    from batch_classify.run.results import CorruptRun
    from batch_classify.storage import StorageOptions

    try:
        rendered = rerender_report(
            run_uri, StorageOptions(anon=anon, endpoint_url=s3_endpoint_url), **given)
    except FileNotFoundError as exc:
        _fail(f"{exc}; pass a run folder OUTPUT/RUN_ID that holds {MANIFEST}")
    except CorruptRun as exc:
        _fail(str(exc))
    except ModelError as exc:
        _fail(f"{exc} (the report needs the class names of the run's model)")
    from batch_classify.report.verdict import key_figures

    out.print(f"run {rendered['run_id']}: {rendered['verdict']['line']}", highlight=False)
    out.print("; ".join(f"{name} {value}" for name, value in key_figures(rendered)), highlight=False)
    layout = RunLayout.parse(run_uri)
    out.print(f"written: {layout.report_json}, {layout.relative(layout.report_md)}, {layout.relative(layout.report_html)}",
              highlight=False)


@app.command()
def models(
    model: Annotated[
        Optional[str], typer.Argument(help="A model folder (local or s3://) or registry name to describe.", show_default=False)
    ] = None,
    anon: AnonOption = False,
    s3_endpoint_url: EndpointOption = None,
) -> None:
    """List the registry's models and whether their weights are on this machine, or describe one model folder."""
    from batch_classify.models.registry import ModelError, get_spec, list_models
    from batch_classify.storage import StorageOptions

    if model is not None:
        storage = StorageOptions(anon=anon, endpoint_url=s3_endpoint_url)
        try:
            describe_model(out, get_spec(model, storage), storage)
        except ModelError as exc:
            _fail(str(exc))
        return
    table = Table(title="models")
    for col in ("name", "input", "weights available", "weights location"):
        table.add_column(col, overflow="fold")
    for name in list_models():
        spec = get_spec(name)
        ok = spec.weights_available()
        table.add_row(
            name,
            f"{spec.preset.crop_size}px (resize {spec.preset.resize_size}, {spec.preset.interpolation})",
            "[green]yes[/]" if ok else "[red]no[/]",
            spec.default_weights_path(),
        )
    out.print(table)


@app.command()
@settings_options(RunSettings, ("num_cpus",))
def demo(
    given: dict,
    output: Annotated[Path, typer.Option(help="Output folder.")] = Path("batch-classify-output"),
) -> None:
    """Run the whole flow offline on photographs shipped inside an installed package (scikit-image: the demo extra)."""
    from batch_classify.cli.demo import prepare_demo_input

    try:
        input_dir, labels = prepare_demo_input(output / "demo-input")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        _fail(str(exc))
    settings = RunSettings(input=str(input_dir), output=str(output), model="efficientnet_lite0", labels=str(labels), **given)
    out.print(f"classifying {sum(1 for _ in input_dir.iterdir())} photographs from scikit-image with efficientnet_lite0 …")
    _run_and_summarise(settings, quiet=False)


def _validation_message(exc) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())


@app.command()
@settings_options(
    ServeSettings, ("input", "output", "model", "table", "nightly_cron", "timezone", "reprocess_prefix", "incremental"),
    names={**SHORT, "nightly_cron": ("--cron",)}, required=False,
)
def serve(
    given: dict,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Flow runs executed at once by this process. [default: 1]")] = 1,
) -> None:
    """Serve the `nightly` (cron) and `reprocess` (event-triggered) deployments from this process.

    Needs a Prefect server (PREFECT_API_URL); runs until stopped (Ctrl-C), executing their flow runs here.
    """
    from pydantic import ValidationError

    prefect_defaults(DEBUG)
    try:
        settings = ServeSettings(**given)
    except ValidationError as exc:
        _fail(_validation_message(exc))
    _require_server("serve")
    from batch_classify.cli import watchdog
    watchdog.start()  # the flow runs it executes die with this process, even on kill -9
    from prefect import serve as prefect_serve

    from batch_classify import deployments
    built = deployments.build(settings)
    out.print(
        f"serving {', '.join(d.name for d in built)} for {settings.input} → {settings.output} "
        f"(nightly '{settings.nightly_cron}' {settings.timezone})",
        highlight=False,
    )
    prefect_serve(*built, limit=limit)


def _require_server(command: str) -> None:
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        _fail(
            f"`batch-classify {command}` needs a Prefect server: set PREFECT_API_URL "
            "(e.g. http://127.0.0.1:4200/api after `prefect server start`)"
        )


@app.command()
def notify(
    uri: Annotated[str, typer.Argument(help="The dataset (folder or s3:// prefix) that changed.")],
    reason: Annotated[str, typer.Option(help="Free text kept in the event's payload.")] = "",
) -> None:
    """Emit a `dataset.updated` event for URI; the `reprocess` deployment classifies it."""
    from batch_classify.run.events import dataset_updated

    _require_server("notify")
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    try:
        kwargs = dataset_updated(uri, reason=reason)
    except ValueError as exc:
        _fail(str(exc))
    event = emit_event(**kwargs)
    if event is None:
        _fail("Prefect did not send the event: events are off for this API (check PREFECT_API_URL)")
    EventsWorker.drain_all()
    out.print(f"emitted {kwargs['event']} for {kwargs['payload']['uri']} (event id {event.id})", highlight=False)


def entry() -> None:
    """:data:`app`, then :func:`batch_classify.cli.startup.exit_now` with its status; called by the console
    script and ``python -m batch_classify`` (:func:`batch_classify.cli.launch.entry`)."""
    from batch_classify.cli.startup import exit_now

    try:
        app(prog_name="batch-classify")
        code = 0
    except SystemExit as done:
        code = done.code
    exit_now(code)
