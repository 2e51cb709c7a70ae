"""Start-up side by side (batch_classify.startup): Prefect's temporary API started without importing the
server's code, a Ray started ahead of its stage and adopted by it, and the CLI's quick exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from batch_classify.startup import TemporaryApi

pytestmark = pytest.mark.integration


def test_temporary_api_answers_and_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    api = TemporaryApi().start()
    try:
        api.wait_ready()
        with urllib.request.urlopen(f"{api.api_url}/health", timeout=5) as response:
            assert response.status == 200
        process = api.process
    finally:
        api.stop()
    assert process.poll() is not None  # stopped, and reaped
    api.stop()  # twice is fine


RAY_AHEAD = """
import json, ray
from batch_classify.ray_logs import start_ray, stop_ray, stop_ray_ahead
steps = []
steps.append(start_ray(None, num_cpus=1, verbose=False, ahead=True))   # the CLI, at start-up
steps.append(start_ray(None, num_cpus=1, verbose=False))               # the stage adopts it
steps.append(start_ray(None, num_cpus=1, verbose=False))               # a second caller does not own it
stop_ray(wait=False)                                                    # the stage ends: stopped in the background
steps.append(start_ray(None, num_cpus=1, verbose=False))               # a retried stage: waits, starts a new one
stop_ray(wait=True)
steps.append(start_ray(None, num_cpus=1, verbose=False, ahead=True))   # ahead again, but no stage comes
stop_ray_ahead()
steps.append(ray.is_initialized())
print(json.dumps(steps))
"""


@pytest.mark.slow
def test_ray_started_ahead_is_adopted_by_the_stage_and_stopped():
    done = subprocess.run([sys.executable, "-c", RAY_AHEAD], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [True, True, False, True, True, False]


def test_cli_exit_status_and_output_survive_the_quick_exit(tmp_path):
    """``batch-classify`` ends through startup.exit_now: the status and everything printed still arrive."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    ok = subprocess.run([sys.executable, "-m", "batch_classify", "--version"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and ok.stdout.startswith("batch-classify ")
    bad = subprocess.run([sys.executable, "-m", "batch_classify", "report", str(tmp_path / "nowhere")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and bad.stderr.startswith("error:"), (bad.returncode, bad.stderr)
