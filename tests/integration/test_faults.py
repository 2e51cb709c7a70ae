"""Faults from outside the run (issue 27 item 10): the Prefect API it reports to goes away for 30 s in the
middle of its stage, and comes back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers.net import free_port
from helpers.photos import linked_copies

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "batch_classify"]


def _server(env: dict, log: Path) -> subprocess.Popen:
    port = env["PREFECT_API_URL"].rsplit(":", 1)[1].split("/")[0]
    return subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", port],
                            env=env, stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True)


def _healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _wait(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def test_a_prefect_api_that_restarts_for_30_s_mid_stage_costs_the_run_nothing(photos, tmp_path):
    """A real Prefect server (SQLite) stopped 3 s into the stage of a run over 1,500 photos and started
    again on the same port and database 30 s later: Prefect's client retries, the stage goes on
    meanwhile (its progress artifact is sent from a thread of its own, skipped while the API is away),
    and the run commits and ends Completed in the API, with no traceback on the terminal."""
    from prefect.client.orchestration import PrefectClient

    images = linked_copies(photos, tmp_path / "many")
    api = f"http://127.0.0.1:{free_port()}/api"
    server_env = {**os.environ, "PREFECT_HOME": str(tmp_path / "server-home"), "PREFECT_API_URL": api,
                  "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
                  "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path}/prefect.db"}
    server = _server(server_env, tmp_path / "server.log")
    run = None
    try:
        _wait("the Prefect server", lambda: _healthy(api), timeout=180)
        log = tmp_path / "run.log"
        run = subprocess.Popen(
            [*CLI, "run", "--input", str(images), "--labels", "none", "--output", str(tmp_path / "out"),
             "--model", "efficientnet_lite0", "--run-id", "through-a-restart", "-q"],
            env={**os.environ, "PREFECT_HOME": str(tmp_path / "client-home"), "PREFECT_API_URL": api,
                 "BATCH_CLASSIFY_NUM_CPUS": "2"},
            stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True,
        )
        staged = tmp_path / "out" / "through-a-restart"
        _wait("the stage", lambda: list(staged.glob("_staging/*/predictions/*.parquet")) or run.poll() is not None, timeout=240)
        time.sleep(2)
        assert run.poll() is None, log.read_text()[-3000:]
        _stop(server)
        time.sleep(30)
        server = _server(server_env, tmp_path / "server.log")
        assert run.wait(timeout=600) == 0, log.read_text()[-4000:]
    finally:
        if run is not None and run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        try:
            _wait("the Prefect server, again", lambda: _healthy(api), timeout=180)

            async def final():
                async with PrefectClient(api) as client:
                    (flow_run,) = await client.read_flow_runs()
                    return flow_run

            flow_run = asyncio.run(final())
        finally:
            _stop(server)
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]
    assert flow_run.state.is_completed() and flow_run.name == "classify-efficientnet_lite0-through-a-restart", flow_run.state
    report = json.loads((tmp_path / "out" / "through-a-restart" / "report.json").read_text())
    assert (report["n_listed"], report["n_predicted"], report["n_failed"]) == (1500, 1500, 0)
