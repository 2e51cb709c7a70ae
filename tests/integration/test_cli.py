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
    from batch_classify.run.lease import RunLease
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


@pytest.mark.parametrize("where", ["local", "s3"])
def test_missing_input_is_one_line_before_prefect_or_ray_start(where, tmp_path, request):
    """A typo'd --input (a local folder, an S3 bucket) stops the command with one line, before the
    Prefect API or Ray start: neither leaves its files (Prefect's database, Ray's session folder)."""
    if where == "local":
        missing, extra = str(tmp_path / "nowhere"), {}
    else:
        missing, extra = "s3://no-such-bucket/images", {"AWS_ENDPOINT_URL": request.getfixturevalue("s3_endpoint")}
    ray_tmp = tmp_path / "ray-tmp"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": "", "RAY_TMPDIR": str(ray_tmp), **extra}
    r = subprocess.run([*CLI, "run", "--input", missing, "--output", str(tmp_path / "out"), "--model", "efficientnet_lite0"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"error: ListingError: input {missing} does not exist; check the path or bucket name"]
    assert not (tmp_path / "prefect-home" / "prefect.db").exists() and not ray_tmp.exists()


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


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_no_secret_reaches_outputs_or_logs(s3_endpoint, s3_dataset, tmp_path, executor):
    """A run reading from S3 with recognisable credentials: none of them appears in any output file,
    report, Prefect database or log, Ray log (the stage on Ray), or the command's own output."""
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {
        **os.environ, **CANARIES, "AWS_ENDPOINT_URL": s3_endpoint, "RAY_TMPDIR": ray_tmp,
        "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": "", "COLUMNS": "200",
        "PREFECT_LOGGING_LEVEL": "DEBUG",
    }
    r = subprocess.run(
        [*CLI, "run", "--input", s3_dataset, "--output", str(tmp_path / "out"), "--model", "efficientnet_lite0",
         "--run-id", "secrets", "--limit", "16", "--num-cpus", "2", "--executor", executor],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "out" / "secrets" / "_SUCCESS").exists()
    searched = [tmp_path / "out", tmp_path / "prefect-home", Path(ray_tmp)]
    files = [p for root in searched for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.suffix == ".db" for p in files)  # the Prefect database is among them ...
    ray_logs = any(str(p).startswith(ray_tmp) and p.suffix in (".log", ".out", ".err") for p in files)
    assert ray_logs == (executor == "ray")  # ... and Ray's logs, where the stage ran on Ray (none started otherwise)
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


def test_quiet_prints_the_summary_and_output_lines_but_no_table(photos, tmp_path):
    """Issue 14: `run -q` printed an empty table (its title and header); now only the two lines."""
    src = arrange_in_wnid_folders(photos[:4], tmp_path / "in")
    r = _cli("run", "-i", str(src), "-o", str(tmp_path / "out"), "--model", "efficientnet_lite0", "--run-id", "quiet",
             "--num-cpus", "2", "-q", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(lines) == 2, r.stdout
    assert lines[0].startswith("4 predicted, 0 failed of 4 listed") and lines[1].startswith(f"output: {tmp_path / 'out' / 'quiet'}")
    assert "confidence │" not in r.stdout and "run quiet —" not in r.stdout


def _missing_weights_run(tmp_path, photos, api_url, *extra):
    """`run` without --model (resnet152) on a machine whose torch hub cache is empty, reporting to ``api_url``."""
    empty = tmp_path / "fresh-home"
    empty.mkdir(exist_ok=True)
    src = arrange_in_wnid_folders(photos[:2], tmp_path / "in") if not (tmp_path / "in").exists() else tmp_path / "in"
    run_id = f"noweights{len(extra)}"
    env = {**os.environ, "HOME": str(empty), "TORCH_HOME": str(empty / "torch"), "XDG_CACHE_HOME": str(empty / "cache"),
           "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api_url, "COLUMNS": "200"}
    r = subprocess.run([*CLI, *extra, "run", "-i", str(src), "-o", str(tmp_path / "out"), "--run-id", run_id, "--num-cpus", "2"],
                       capture_output=True, text=True, timeout=600, env=env)
    return r, run_id, empty / "torch" / "hub" / "checkpoints" / "resnet152-f82ba261.pth"


@pytest.mark.usefixtures("prefect_harness")
def test_missing_default_weights_is_one_line_on_the_terminal_and_a_traceback_in_the_flow_runs_log(photos, tmp_path):
    """Issue 14: a fresh machine's `run` (default model resnet152, no weights) printed ~100 lines of
    Prefect's traceback before its one `error:` line. The terminal now shows no traceback, the one line
    says what to do offline, and the flow run's log in the Prefect API still holds the traceback;
    `--debug` brings the tracebacks back to the terminal."""
    from prefect.settings import PREFECT_API_URL

    from helpers.prefect_api import flow_run_logs

    api = PREFECT_API_URL.value()
    r, run_id, path = _missing_weights_run(tmp_path, photos, api)
    assert r.returncode == 1, r.stderr[-3000:]
    lines = r.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, r.stderr[-3000:]
    assert "resnet152" in errors[0] and str(path) in errors[0]
    assert errors[0].endswith("or run with --model efficientnet_lite0 (its weights ship with the package)")
    assert not [line for line in lines if line.startswith("Traceback") or line.lstrip().startswith('File "')], r.stderr[-3000:]
    logged = "\n".join(flow_run_logs(run_id))
    assert "Traceback (most recent call last)" in logged and "ModelError" in logged and str(path) in logged

    debug, _, _ = _missing_weights_run(tmp_path, photos, api, "--debug")
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and 'File "' in debug.stderr
    assert [line for line in debug.stderr.splitlines() if line.startswith("error:")][-1] == errors[0]


def test_a_table_folder_of_the_users_own_files_is_refused_before_any_work(photos, tmp_path):
    """``--table`` at a folder holding the user's notes and a photo (no ``_delta_log/``): one line naming
    the table and what it holds, exit 1, before the run starts; the folder is left as it was."""
    src = arrange_in_wnid_folders(photos[:2], tmp_path / "in")
    theirs = tmp_path / "my-files"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine\n")
    shutil.copyfile(photos[3], theirs / "holiday.JPEG")
    r = _cli("run", "--input", str(src), "--output", str(tmp_path / "out"), "--model", "efficientnet_lite0",
             "--table", str(theirs), tmp_path=tmp_path, timeout=120)
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == [
        f"error: TableFolderTaken: --table {theirs} holds other files (holiday.JPEG, notes.txt) and no Delta table "
        f"(_delta_log/); the table would be written among them. Pass a new or empty folder, or an existing Delta table"
    ], r.stderr
    assert sorted(p.name for p in theirs.iterdir()) == ["holiday.JPEG", "notes.txt"]
    assert not (tmp_path / "out").exists()


def test_a_ray_address_where_nothing_listens_fails_within_about_a_minute(photos, tmp_path):
    """``--ray-address 127.0.0.1:1``: Ray alone would retry for minutes with only its own warnings; the
    run fails (after the infer task's one retry) with one line naming the address as given."""
    import time

    src = arrange_in_wnid_folders(photos[:2], tmp_path / "in")
    start = time.monotonic()
    r = _cli("run", "--input", str(src), "--output", str(tmp_path / "out"), "--model", "efficientnet_lite0",
             "--ray-address", "127.0.0.1:1", "-q", tmp_path=tmp_path, timeout=240)
    took = time.monotonic() - start
    assert r.returncode == 1, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: AddressUnreachable: ray address 127.0.0.1:1 does not answer (ConnectionRefusedError"), last
    assert last.endswith("check --ray-address (or RAY_ADDRESS) and that the cluster's head node is up"), last
    assert took < 120, took  # two tries of about 25 s, 10 s apart, plus start-up
    assert not (tmp_path / "out" / "_latest").exists()


def test_a_file_size_limit_is_one_line_naming_what_could_not_be_written(photos, tmp_path):
    """Under ``ulimit -f`` (600 KB) Prefect's temporary API cannot write its database: before, about 480
    lines of its tracebacks reached the terminal and the run ended with a bare HTTP 500. Now its output
    goes to its log file and the run stops with one line giving its last error and that log; nothing is
    written under the output."""
    import resource

    src = arrange_in_wnid_folders(photos[:2], tmp_path / "in")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": ""}
    r = subprocess.run([*CLI, "run", "--input", str(src), "--output", str(tmp_path / "out"), "--model", "efficientnet_lite0", "-q"],
                       capture_output=True, text=True, timeout=300, env=env,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (600 * 1024, resource.RLIM_INFINITY)))
    assert r.returncode == 1, r.stderr[-3000:]
    (line,) = r.stderr.strip().splitlines()
    log = tmp_path / "prefect-home" / "batch-classify-temporary-api.log"
    assert line.startswith("error: RuntimeError: Prefect's temporary API on http://127.0.0.1:"), line
    assert "its last error: sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) disk I/O error" in line, line
    assert line.endswith(f"(its log: {log}; a full disk or a file size limit?)"), line
    assert not (tmp_path / "out").exists()


NO_SPACE_PROBE = """
import json, resource, sys
import pyarrow as pa, pyarrow.parquet as pq
from batch_classify.storage import no_space
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
seen = {}
try:
    pq.write_table(pa.table({"x": [bytes(1000) + str(i).encode() for i in range(1000)]}), sys.argv[1] + "/big.parquet",
                   compression="none")
except OSError as err:
    seen["pyarrow"] = (str(err)[:80], no_space(err))
try:
    with open(sys.argv[1] + "/big.bin", "wb") as f:
        f.write(bytes(200 * 1024))
except OSError as err:
    seen["open"] = (str(err)[:80], no_space(err))
print(json.dumps(seen))
"""


def test_a_write_over_the_limit_is_told_apart_by_its_error_whatever_wrote_it(tmp_path):
    """``storage.no_space`` recognises the errors that a full device or a limit gives (here EFBIG) from
    Python's own writes and from pyarrow's, whose errors carry the number only in their text: the
    stage and the commit then stop with ``StorageFull`` naming what they were writing."""
    r = subprocess.run([sys.executable, "-c", NO_SPACE_PROBE, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    seen = json.loads(r.stdout)
    reason = "a file size limit was hit (EFBIG: ulimit -f, or the file system's largest file)"
    assert seen["pyarrow"][1] == reason and seen["open"][1] == reason, seen
