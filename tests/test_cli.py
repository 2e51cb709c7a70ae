"""The command line as a user runs it: a subprocess with its own ephemeral Prefect API and local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import arrange_in_wnid_folders

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
