"""Ray's output: Ray Data's summary in the flow run's log, Ray's own noise off the terminal unless --verbose."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest
from helpers.photos import arrange_in_wnid_folders
from helpers.prefect_api import logs_of

from batch_classify.models.registry import get_spec
from batch_classify.settings import RunSettings

pytestmark = pytest.mark.integration

MODEL = "efficientnet_lite0"
CLI = [sys.executable, "-m", "batch_classify"]
#: A log line of Ray's Python loggers ("2026-12-01 03:44:53,830\tINFO streaming_executor.py:215 -- …").
RAY_PY_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|WARNING|ERROR)\s+\S+\.py:\d+ -- ", re.M)
#: A log line of Ray's C++ core ("[2026-12-01 03:44:54,003 E 28432 28432] core_worker.cc:2465: …").
RAY_CPP_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+ ([IWEF]) \d+ \d+\] (\S+\.cc):\d+: (.*)$", re.M)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness", "ray_local")
def test_ray_data_summary_and_progress_reach_the_flow_run_log(photos, tmp_path):
    from batch_classify.flows import classify

    src = arrange_in_wnid_folders(photos[:12], tmp_path / "in")
    settings = RunSettings(input=str(src), output=str(tmp_path / "out"), model=MODEL, run_id="logs-1", batch_size=4,
                           executor="ray")
    state = classify(settings, return_state=True)
    assert state.is_completed(), state.message
    logs = logs_of(state.state_details.flow_run_id)
    messages = [m for _, m in logs]
    # Ray Data's own summary lines, through the task run's logger: start (with its log folder), plan, end
    assert any(m.startswith("ray data: Starting execution of Dataset") and "Full logs are in" in m for m in messages), messages
    assert any(m.startswith("ray data: Execution plan of Dataset") and "MapBatches(Classifier)" in m for m in messages)
    assert any(m.startswith("ray data: ") and "execution finished in" in m for m in messages)
    assert "ray data progress: 12 of 12 images" in "\n".join(messages)
    # summarised: none of Ray Data's per-operator progress lines
    assert not any("Total Progress:" in m or "Active & requested resources" in m for m in messages)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_ray_data_warnings_go_to_the_given_logger_and_progress_every_few_seconds(photos, tmp_path):
    """The stage alone, with a plain logging.Logger: a warning on one of Ray Data's loggers while the
    stage runs reaches the logger (at its level), and so do the progress lines (every batch here:
    ``progress_every=0``); afterwards Ray Data's logger is as it was."""
    from batch_classify.stage.inference import run_stage
    from batch_classify.stage.plan import plan_cluster
    from batch_classify.stage.ray_logs import RAY_DATA_LOGGER
    from batch_classify.storage import StorageOptions

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.records: list[logging.LogRecord] = []

        def emit(self, record):
            self.records.append(record)

    logger = logging.getLogger("test.ray_logs.stage")
    logger.setLevel(logging.INFO)
    kept = Keep()
    logger.addHandler(kept)
    import ray

    plan = plan_cluster(ray.cluster_resources(), device="cpu", batch_size=2, runtime="onnx")
    records = [{"path": str(p), "label": None} for p in photos[:16]]
    ray_data = logging.getLogger(RAY_DATA_LOGGER)
    before = list(ray_data.handlers)

    def on_batch(batch):
        # a warning of Ray Data's while the stage runs (a real record on its logger, from its thread)
        logging.getLogger("ray.data._internal.execution.resource_manager").warning("object store is 95% full")

    try:
        result = run_stage(records, spec=get_spec(MODEL), weights=None, storage=StorageOptions(), plan=plan,
                           on_batch=on_batch, logger=logger, progress_every=0.0)
    finally:
        logger.removeHandler(kept)
    assert result.n_predicted == 16
    lines = [(r.levelno, r.getMessage()) for r in kept.records]
    assert (logging.WARNING, "ray data: object store is 95% full") in lines
    progress = [m for level, m in lines if m.startswith("ray data progress: ")]
    assert len(progress) >= 2 and progress[-1].startswith("ray data progress: 16 of 16 images, ")
    assert re.fullmatch(r"ray data progress: 16 of 16 images, [\d.]+ images/s", progress[-1])
    assert ray_data.handlers == before  # the forwarding handler is gone after the stage
    assert all(h.level < logging.CRITICAL for h in ray_data.handlers)  # and the console handler unmuted


FILTERED = r"""
import os, sys, time
from batch_classify.stage.core_notes import stderr_is_terminal, without_core_notes
before = stderr_is_terminal()
with without_core_notes():
    print("python line", file=sys.stderr, flush=True)
    os.write(2, b"[2026-12-07 03:44:07,406 I 5389 5389] logging.cc:303: Set ray log level from environment variable\n")
    os.write(2, b"\rbar 1")
    time.sleep(0.3)
    sys.stdout.write("bar seen before its line ended: %s\n" % open(sys.argv[1], "rb").read().endswith(b"bar 1")); sys.stdout.flush()
    os.write(2, b"\rbar 2\n[2026-12-07 03:44:08,001 W 5389 5390] core_worker.cc:1: a warning\n")
    os.write(2, b"[2026-12-07 03:44:09,001 E 5389 5390] core_worker.cc:2: an error\n[not a ray line]\n")
    during = stderr_is_terminal()
print("after", file=sys.stderr, flush=True)
print(before == during)
"""


def test_ray_core_notes_are_dropped_from_stderr_and_everything_else_passes_in_order(tmp_path):
    """The file-descriptor filter ``ray.init`` runs under: Ray's C++ lines below ERROR are dropped,
    its errors and every other write pass, in order, and a line still being written (a progress bar's
    carriage-return updates) passes before it ends."""
    err = tmp_path / "stderr"
    with err.open("wb") as sink:
        r = subprocess.run([sys.executable, "-c", FILTERED, str(err)], stderr=sink, stdout=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0, err.read_text()
    assert r.stdout.splitlines() == ["bar seen before its line ended: True", "True"]
    assert err.read_bytes() == (
        b"python line\n\rbar 1\rbar 2\n[2026-12-07 03:44:09,001 E 5389 5390] core_worker.cc:2: an error\n[not a ray line]\nafter\n"
    )


def _cli(*args, tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": "", "COLUMNS": "200"}
    env.pop("RAY_BACKEND_LOG_LEVEL", None)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_ray_stays_off_the_terminal_unless_verbose(photos, tmp_path):
    src = arrange_in_wnid_folders(photos[:6], tmp_path / "in")
    common = ["run", "--input", str(src), "--output", str(tmp_path / "out"), "--model", MODEL, "--batch-size", "2", "--executor", "ray",
              "--num-cpus", "2", "-q"]

    quiet = _cli(*common, "--run-id", "quiet", tmp_path=tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    terminal = quiet.stdout + quiet.stderr
    assert not RAY_PY_LINE.search(terminal), RAY_PY_LINE.findall(terminal)  # no ray.init banner, no Ray Data INFO
    assert "core_worker" not in terminal
    # not even the line Ray's C++ core writes when it reads RAY_BACKEND_LOG_LEVEL (the switch that keeps
    # the core_worker.cc line off): nothing of the core reaches the terminal
    assert not RAY_CPP_LINE.findall(terminal), RAY_CPP_LINE.findall(terminal)
    assert "Progress will be logged" not in terminal and "Running Dataset" not in terminal
    # what the run's log says of the stage still shows (Prefect prints the task run's log)
    assert "ray data: Starting execution of Dataset" in quiet.stderr
    assert "ray data progress: 6 of 6 images" in quiet.stderr
    assert "6 predicted, 0 failed of 6 listed" in quiet.stdout

    verbose = _cli(*common, "--run-id", "verbose", "--verbose", tmp_path=tmp_path)
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    terminal = verbose.stdout + verbose.stderr
    assert re.search(r"INFO worker\.py:\d+ -- Started a local Ray instance", terminal)
    assert re.search(r"INFO streaming_executor\.py:\d+ -- Starting execution of Dataset", terminal)
    assert "core_worker.cc" in terminal
