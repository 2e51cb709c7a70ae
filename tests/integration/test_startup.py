"""Start-up side by side (batch_classify.cli.startup): Prefect's temporary API started without importing the
server's code, a Ray started ahead of its stage and adopted by it, and the CLI's quick exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from batch_classify.cli.startup import TemporaryApi

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


TEMPORARY_API_ONCE = """
import json
from batch_classify.cli.startup import temporary_api
first = temporary_api()          # the console script, before the command line is imported
second = temporary_api()         # cli.run_flow: the same server, not a second one
pid = first.process.pid
first.wait_ready()
first.stop()                     # a Prefect profile named a server after all
third = temporary_api()          # started again where asked again
third.wait_ready()
print(json.dumps([second is first, third is first, third.process.pid != pid]))
"""


def test_the_temporary_api_is_started_once_per_process(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    done = subprocess.run([sys.executable, "-c", TEMPORARY_API_ONCE], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [True, True, True]


RAY_AHEAD = """
import json, ray
from batch_classify.stage.ray_start import start_ray, stop_ray, stop_ray_ahead
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


RAY_IN_THREAD = """
import json, signal, time, ray
from batch_classify.stage.ray_start import start_ray, start_ray_in_thread, stop_ray, stop_ray_ahead
steps = []
owner = start_ray_in_thread(1, verbose=False)                           # the CLI, at start-up
steps.append(signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL)    # as ray.init sets it in the main thread
steps.append(start_ray(None, num_cpus=1, verbose=False))                # the stage waits for that start, adopts it
time.sleep(3)  # Ray's processes die with the thread that started them (PR_SET_PDEATHSIG): it must still live
steps.append(owner.is_alive() and ray.get(ray.put(41), timeout=60) + 1 == 42)
stop_ray(wait=True)
owner.join(timeout=60)
steps.append(not owner.is_alive())                                      # released once Ray is shut down
owner = start_ray_in_thread(1, verbose=False)                           # ahead again, but no stage comes
stop_ray_ahead()                                                        # waits for the start, then stops it
owner.join(timeout=60)
steps.append([ray.is_initialized(), owner.is_alive()])
print(json.dumps(steps))
"""


@pytest.mark.slow
def test_ray_started_in_a_thread_lives_until_the_stage_has_stopped_it():
    """Ray started ahead in a thread (the CLI's start-up) is adopted by the stage from the main thread and
    usable after the start has returned (its processes die with the thread that started them, so that
    thread lives until Ray is shut down), the thread ends after the shutdown, and Ray's warning about
    the SIGTERM handler does not reach the terminal."""
    done = subprocess.run([sys.executable, "-c", RAY_IN_THREAD], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [True, True, True, True, [False, False]]
    assert "SIGTERM handler is not set" not in done.stderr, done.stderr[-3000:]


RAY_DATA_AHEAD = """
import json, ray, ray.data
from batch_classify.stage.ray_start import start_ray, stop_ray
from batch_classify.cli.startup import RAY_DATA_ACTORS, start_ray_data_actors
start_ray(None, num_cpus=1, verbose=False, ahead=True)
start_ray_data_actors()
named = lambda: sorted((a["namespace"], a["name"]) for a in ray.util.list_named_actors(all_namespaces=True))
ahead = named()
for namespace, name in ahead:
    ray.get(ray.get_actor(name, namespace=namespace).__ray_ready__.remote(), timeout=120)
rows = ray.data.range(8).map_batches(lambda b: b, batch_size=4).take_all()   # a stage after them
print(json.dumps({"expected": len(RAY_DATA_ACTORS), "ahead": ahead, "after": named(), "rows": len(rows)}))
stop_ray(wait=True)
"""


@pytest.mark.slow
def test_ray_datas_helper_actors_started_ahead_are_the_stages():
    """Every helper actor Ray Data would create in the stage exists once created ahead (a Ray upgrade that
    renames one fails here, not silently), and a stage afterwards creates no second one."""
    done = subprocess.run([sys.executable, "-c", RAY_DATA_AHEAD], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(seen["ahead"]) == seen["expected"] == 3, seen
    assert seen["after"] == seen["ahead"], seen
    assert seen["rows"] == 8


def test_cli_exit_status_and_output_survive_the_quick_exit(tmp_path):
    """``batch-classify`` ends through startup.exit_now: the status and everything printed still arrive."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    ok = subprocess.run([sys.executable, "-m", "batch_classify", "--version"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and ok.stdout.startswith("batch-classify ")
    bad = subprocess.run([sys.executable, "-m", "batch_classify", "report", str(tmp_path / "nowhere")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and bad.stderr.startswith("error:"), (bad.returncode, bad.stderr)


#: Prefect's debug line when a flow run's heartbeat thread starts (Prefect 3.8, flow_engine.py).
HEARTBEATS = "Started flow run heartbeat context"


def _three_photos(photos, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for p in photos[:3]:
        (src / p.name).write_bytes(p.read_bytes())
    return src


@pytest.mark.slow
def test_a_run_on_its_temporary_api_sends_no_heartbeats(photos, tmp_path):
    """The temporary API dies with the run, so no heartbeats (nothing could mark the run crashed on
    it); the run still completes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "DEBUG"}
    done = subprocess.run(
        [sys.executable, "-m", "batch_classify", "run", "-i", str(_three_photos(photos, tmp_path)),
         "-o", str(tmp_path / "out"), "--model", "efficientnet_lite0", "--run-id", "temporary", "-q"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "Finished in state Completed()" in output and HEARTBEATS not in output, output[-3000:]


@pytest.mark.slow
def test_a_profile_naming_a_server_gets_the_run(photos, tmp_path, monkeypatch):
    """No PREFECT_API_URL in the environment, but the active Prefect profile names a server: the run is
    reported there (the temporary API the CLI starts ahead, before it can read the profile, goes unused)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    with monkeypatch.context() as m:  # stands in for the user's server, in a home of its own
        m.setenv("PREFECT_HOME", str(tmp_path / "server-home"))
        server = TemporaryApi().start()
    try:
        server.wait_ready()
        home = tmp_path / "user-home"
        home.mkdir()
        (home / "profiles.toml").write_text(
            f'active = "nightly"\n\n[profiles.nightly]\nPREFECT_API_URL = "{server.api_url}"\n'
        )
        src = _three_photos(photos, tmp_path)
        env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "DEBUG"}
        done = subprocess.run(
            [sys.executable, "-m", "batch_classify", "run", "-i", str(src), "-o", str(tmp_path / "out"),
             "--model", "efficientnet_lite0", "--run-id", "by-profile", "-q"],
            capture_output=True, text=True, env=env, timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert HEARTBEATS in done.stdout + done.stderr  # a server that outlives the run keeps them
        query = json.dumps({"flow_runs": {"name": {"any_": ["classify-efficientnet_lite0-by-profile"]}}}).encode()
        request = urllib.request.Request(f"{server.api_url}/flow_runs/filter", data=query,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            runs = json.loads(response.read())
        assert [r["state_type"] for r in runs] == ["COMPLETED"]
    finally:
        server.stop()


RAY_METRICS = """
import glob, json, sys, ray
from batch_classify.stage.ray_start import start_ray, stop_ray
start_ray(None, num_cpus=1, verbose=True, metrics=sys.argv[1] == "on")  # verbose: the C++ INFO lines are kept
ray.get(ray.remote(lambda: 1).remote())
logs = ray._private.worker.global_worker.node.get_logs_dir_path()
stop_ray(wait=True)  # the C++ logs are flushed by then
said = lambda pattern: any("Disabled stats." in open(f, errors="replace").read() for f in glob.glob(f"{logs}/{pattern}"))
print(json.dumps({"driver": said("python-core-driver-*.log"), "raylet": said("raylet.out"), "gcs": said("gcs_server.out")}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("metrics", ["off", "on"])
def test_a_local_ray_starts_without_its_metrics_unless_asked(metrics):
    """Issue 27 item 8: a run's local Ray collects no metrics (nothing reads them; their exporter thread
    crashed a run): its driver, raylet and GCS each log Ray's "Disabled stats."; ``ray_metrics`` on
    keeps Ray's default."""
    done = subprocess.run([sys.executable, "-c", RAY_METRICS, metrics], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    disabled = metrics == "off"
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"driver": disabled, "raylet": disabled, "gcs": disabled}
