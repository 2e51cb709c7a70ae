"""The command line's options are generated from the settings models (issue 13): every RunSettings field
the CLI offers has its option, with the field's help, default, range and choices; ServeSettings takes
RunSettings' fields instead of restating them. Real Typer commands through Click's test runner."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from batch_classify.cli.main import RUN_ENVIRONMENT_ONLY, app
from batch_classify.cli.options import settings_options
from batch_classify.settings import SERVE_RUN_FIELDS, RunSettings, ServeSettings

runner = CliRunner()


def _options(command: str) -> dict[str, object]:
    """Field name → Click option of ``batch-classify COMMAND``."""
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[command].params}


def test_run_offers_every_run_setting_with_the_fields_help_default_and_range():
    options = _options("run")
    offered = [name for name in RunSettings.model_fields if name not in RUN_ENVIRONMENT_ONLY]
    assert [n for n in options if n != "quiet"] == offered
    for name in offered:
        field, option = RunSettings.model_fields[name], options[name]
        assert option.help.startswith(field.description), name
    assert options["input"].required and options["input"].opts == ["--input", "-i"]
    assert options["output"].opts == ["--output", "-o"] and options["quiet"].opts == ["--quiet", "-q"]
    assert "[default: 0.02]" in options["max_top1_drop"].help
    assert "[default: 89478485]" in options["max_image_pixels"].help
    assert (options["max_failed_fraction"].min, options["max_failed_fraction"].max) == (0.0, 1.0)
    assert options["limit"].min == 1 and options["read_timeout"].min is None  # gt=0: on an int min 1, a float's pydantic checks
    assert options["anon"].is_flag and options["resume"].secondary_opts == ["--no-resume"]
    shown = " ".join(runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output.split())
    for choices in ("--device <auto|cpu|cuda>", "--runtime <auto|torch|onnx>", "--decode <auto|cpu|gpu>", "[x>=1]"):
        assert choices in shown, choices


def test_serve_and_report_options_come_from_the_same_fields():
    serve, report = _options("serve"), _options("report")
    assert serve["nightly_cron"].opts == ["--cron"] and "[default: '0 2 * * *']" in serve["nightly_cron"].help
    assert not serve["input"].required and "[default: $BATCH_CLASSIFY_INPUT]" in serve["input"].help
    assert serve["incremental"].secondary_opts == ["--no-incremental"] and "[default: incremental]" in serve["incremental"].help
    for name in ("max_top1_drop", "max_drift", "low_confidence"):
        assert report[name].help.startswith(RunSettings.model_fields[name].description)


def test_serve_settings_take_the_run_settings_fields():
    for name, changes in SERVE_RUN_FIELDS.items():
        run, serve = RunSettings.model_fields[name], ServeSettings.model_fields[name]
        assert serve.annotation == run.annotation and serve.metadata == run.metadata, name
        assert serve.validation_alias == run.validation_alias, name
        assert serve.default == changes.get("default", run.default), name
        assert serve.description == changes.get("description", run.description), name
    settings = ServeSettings(input="in", output="out")
    assert settings.incremental is True and settings.model == RunSettings.model_fields["model"].default
    assert set(settings.run_defaults()) <= set(RunSettings.model_fields)


def test_only_what_is_given_reaches_the_model_and_the_environment_fills_the_rest(monkeypatch):
    seen = {}
    cli = typer.Typer()

    @cli.command()
    @settings_options(RunSettings, ("input", "output", "max_drift", "device", "anon", "resume"), names={"input": ("--input", "-i")})
    def go(given: dict, loud: bool = False) -> None:
        seen.update(given=given, loud=loud, settings=RunSettings(**given))

    monkeypatch.setenv("BATCH_CLASSIFY_MAX_DRIFT", "0.3")
    r = runner.invoke(cli, ["-i", "in", "--output", "out", "--device", "cpu", "--no-resume", "--loud"])
    assert r.exit_code == 0, r.output
    assert seen["given"] == {"input": "in", "output": "out", "device": "cpu", "resume": False} and seen["loud"]
    assert seen["settings"].max_drift == 0.3 and seen["settings"].anon is False
    r = runner.invoke(cli, ["-i", "in", "--output", "out", "--anon", "--max-drift", "0.2"])
    assert r.exit_code == 0 and seen["given"] == {"input": "in", "output": "out", "anon": True, "max_drift": 0.2}
    seen.clear()
    assert runner.invoke(cli, ["-i", "in", "--output", "out", "--max-drift", "2"]).exit_code == 2  # out of [0, 1]
    assert runner.invoke(cli, ["--output", "out"]).exit_code == 2  # --input is required
    assert runner.invoke(cli, ["-i", "in", "--output", "out", "--device", "gpu"]).exit_code == 2  # not a choice
    assert not seen


def test_run_help_lists_every_environment_variable_the_run_reads(monkeypatch):
    """Issue 14: `run --help` ends with the environment variables the run reads. The oracle for a field's
    variables is pydantic-settings' own reader (EnvSettingsSource), not the code that writes the list;
    the environment-only fields show their default."""
    from pydantic_settings import EnvSettingsSource

    from batch_classify.cli.main import RUN_OTHER_ENVIRONMENT

    result = runner.invoke(app, ["run", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    listed = {line.split()[0]: line for line in result.output.splitlines() if line.strip() and line.split()[0].isupper()}
    source = EnvSettingsSource(RunSettings)
    for name, field in RunSettings.model_fields.items():
        variables = [env.upper() for _, env, _ in source._extract_field_info(field, name)]
        assert variables, name
        for variable in variables:
            assert variable in listed, (name, variable)
            if name in RUN_ENVIRONMENT_ONLY and field.default is not None:
                shown = f"{field.default:g}" if isinstance(field.default, float) else field.default  # floats as %g
                assert f"[default: {shown}]" in listed[variable], listed[variable]
    for variable in ("AWS_ENDPOINT_URL", "RAY_ADDRESS", "TORCH_HOME", "XDG_CACHE_HOME", "PREFECT_API_URL",
                     "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", *(v for v, _ in RUN_OTHER_ENVIRONMENT)):
        assert variable in listed, variable
    # the listed name is one the settings really read (case-insensitively)
    monkeypatch.setenv("BATCH_CLASSIFY_SAMPLE_SIZE", "3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    settings = RunSettings(input="in", output="out")
    assert (settings.sample_size, settings.s3_endpoint_url) == (3, "http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("argv", "api_url", "expected"),
    [
        (["run", "-i", "in", "-o", "out"], None, True),
        (["--debug", "run", "-i", "in"], None, True),
        (["run", "--help"], None, False),  # help only: no server
        (["report", "run"], None, False),  # "run" is report's argument here
        (["--version"], None, False),
        ([], None, False),
        (["run", "-i", "in"], "http://127.0.0.1:4200/api", False),  # the user's server: no temporary one
    ],
)
def test_the_console_script_starts_the_temporary_api_early_for_a_run_only(monkeypatch, argv, api_url, expected):
    from batch_classify.cli.launch import runs_flow

    if api_url is None:
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
    else:
        monkeypatch.setenv("PREFECT_API_URL", api_url)
    assert runs_flow(argv) is expected


@pytest.mark.parametrize(
    ("argv", "variable", "expected"),
    [
        (["run", "-i", "in", "-o", "out"], None, "in"),
        (["run", "--input", "a", "--input=b"], None, "b"),  # the last one counts, as for the command line
        (["run", "-o", "out"], "/from/env", "/from/env"),
        (["run", "-o", "out"], None, None),
    ],
)
def test_the_console_script_finds_the_input_before_parsing(monkeypatch, argv, variable, expected):
    from batch_classify.cli.launch import given_input

    if variable is None:
        monkeypatch.delenv("BATCH_CLASSIFY_INPUT", raising=False)
    else:
        monkeypatch.setenv("BATCH_CLASSIFY_INPUT", variable)
    assert given_input(argv) == expected


def test_a_local_input_that_is_not_there_is_named_in_one_line(tmp_path):
    from batch_classify.cli.launch import input_missing, is_local

    assert is_local("./in") and is_local("file:///in") and not is_local("s3://b/in")
    assert input_missing(str(tmp_path)) is None
    assert input_missing(str(tmp_path / "typo")) == (
        f"ListingError: input {tmp_path / 'typo'} does not exist; check the path or bucket name")
    (tmp_path / "a.jpg").write_bytes(b"")
    assert "is a file, not a folder" in input_missing(str(tmp_path / "a.jpg"))
