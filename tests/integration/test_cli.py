"""The command line as a user runs it: a subprocess with its own ephemeral Prefect API and local Ray."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.photos import arrange_in_wnid_folders

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "batch_classify"]


def _cli(*args, tmp_path, timeout=600):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": "", "COLUMNS": "200"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_run_writes_contract_files(photos, tmp_path):
    src = arrange_in_wnid_folders(photos[:6], tmp_path / "in")
    (src / "notes.txt").write_text("not an image")
    r = _cli("run", "--input", str(src), "--output", str(tmp_path / "out"), "--model", "efficientnet_lite0",
             "--run-id", "cli-1", "--batch-size", "4", "--num-cpus", "2", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "out" / "cli-1"
    assert {p.name for p in run.iterdir()} >= {"predictions", "failures", "_SUCCESS", "report.json", "report.md"}
    report = json.loads((run / "report.json").read_text())
    assert (report["n_listed"], report["n_predicted"], report["n_failed"], report["n_ignored"]) == (6, 6, 0, 1)
    assert "6 predicted, 0 failed of 6 listed" in r.stdout
    assert not (run / "_LEASE").exists()  # the run id's lease is released at the end


def test_a_second_writer_of_a_run_id_is_refused_naming_the_holder(photos, tmp_path):
    """Issue 12, case 4: while another writer holds OUTPUT/RUN_ID, a run with the same --output and
    --run-id stops before it stages anything, in one line naming the holder; the holder's files stay."""
    from batch_classify.lease import RunLease
    from batch_classify.storage import StorageOptions

    src = arrange_in_wnid_folders(photos[:4], tmp_path / "in")
    run = tmp_path / "out" / "same-id"
    with RunLease(str(run), StorageOptions(), owner="flow run nightly-on-host-b"):
        r = _cli("run", "--input", str(src), "--output", str(tmp_path / "out"), "--model", "efficientnet_lite0",
                 "--run-id", "same-id", "--limit", "4", "--num-cpus", "2", tmp_path=tmp_path)
        assert r.returncode == 1
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(f"error: LeaseHeld: run id {run} is being written by "), r.stderr[-2000:]
        assert "nightly-on-host-b" in errors[0] and "choose another --run-id" in errors[0]
        assert not (run / "_staging").exists() and not (run / "_SUCCESS").exists()
        assert "nightly-on-host-b" in (run / "_LEASE").read_text()


def test_help_shows_defaults_and_choices_and_version(tmp_path):
    """Issue 14: the hand-written "[default: …]" of every option is shown (it was taken for Rich markup
    and dropped), --device and --runtime offer their choices, and --version answers."""
    from importlib.metadata import version

    help_text = " ".join(_cli("run", "--help", tmp_path=tmp_path, timeout=60).stdout.split())
    for shown in ("[default: resnet152]", "[default: 0.05]", "[default: 60]", "--device <auto|cpu|cuda>",
                  "--runtime <auto|torch|onnx>"):
        assert shown in help_text, shown
    bad = _cli("run", "--input", "in", "--output", "out", "--device", "gpu", tmp_path=tmp_path, timeout=60)
    assert bad.returncode == 2 and "'gpu' is not one of 'auto', 'cpu', 'cuda'" in bad.stderr
    assert "pattern" not in bad.stderr
    v = _cli("--version", tmp_path=tmp_path, timeout=60)
    assert v.returncode == 0 and v.stdout.strip() == f"batch-classify {version('batch-classify')}"


def test_missing_input_is_one_line_and_nonzero(tmp_path):
    r = _cli("run", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out"), "--model", "efficientnet_lite0",
             tmp_path=tmp_path)
    assert r.returncode == 1
    last = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert last == [f"error: ListingError: input {tmp_path / 'nowhere'} does not exist; check the path or bucket name"]


def test_bad_arguments_exit_nonzero(tmp_path):
    r = _cli("run", "--input", "x", "--output", "y", "--run-id", "../escape", tmp_path=tmp_path, timeout=120)
    assert r.returncode != 0 and "run_id" in r.stderr


def test_models_lists_weights_availability(tmp_path):
    r = _cli("models", tmp_path=tmp_path, timeout=120)
    assert r.returncode == 0
    line = next(line for line in r.stdout.splitlines() if "efficientnet_lite0" in line)
    assert "yes" in line


CANARIES = {
    "AWS_ACCESS_KEY_ID": "AKIACANARY7Q3Z9X1W5V",
    "AWS_SECRET_ACCESS_KEY": "canary-secret-4f1d9c2b7e6a5d3c",
    "AWS_SESSION_TOKEN": "canary-session-token-8b2e6f0a",
}


def test_no_secret_reaches_outputs_or_logs(s3_endpoint, s3_dataset, tmp_path):
    """A run reading from S3 with recognisable credentials: none of them appears in any output file,
    report, Prefect database or log, Ray log, or the command's own output."""
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {
        **os.environ, **CANARIES, "AWS_ENDPOINT_URL": s3_endpoint, "RAY_TMPDIR": ray_tmp,
        "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": "", "COLUMNS": "200",
        "PREFECT_LOGGING_LEVEL": "DEBUG",
    }
    r = subprocess.run(
        [*CLI, "run", "--input", s3_dataset, "--output", str(tmp_path / "out"), "--model", "efficientnet_lite0",
         "--run-id", "secrets", "--limit", "16", "--num-cpus", "2"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "out" / "secrets" / "_SUCCESS").exists()
    searched = [tmp_path / "out", tmp_path / "prefect-home", Path(ray_tmp)]
    files = [p for root in searched for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.suffix == ".db" for p in files)  # the Prefect database is among them ...
    assert any(str(p).startswith(ray_tmp) and p.suffix in (".log", ".out", ".err") for p in files)  # ... and Ray's logs
    for secret in CANARIES.values():
        assert secret not in r.stdout and secret not in r.stderr
        leaks = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert not leaks, f"{secret[:12]}… found in {leaks}"
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_empty_input_or_output_is_refused_before_anything_runs(tmp_path):
    """An unset variable in a cron line (`--output "$OUT"`) must not classify the working directory or write to /RUN_ID."""
    for args, field in ((("--input", "", "--output", str(tmp_path / "out")), "input"),
                        (("--input", str(tmp_path), "--output", ""), "output")):
        r = _cli("run", *args, "--run-id", "empty", tmp_path=tmp_path, timeout=120)
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert r.returncode == 1 and len(errors) == 1 and f"{field}: Value error, {field} is empty" in errors[0], r.stderr
    assert not Path("/empty").exists() and not (tmp_path / "out").exists()
