"""The deployments for real: `prefect server start` on 127.0.0.1 (SQLite), `batch-classify serve`
in a subprocess, runs started through the API (as the UI's "Run" does) and by an event
(`batch-classify notify`)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers.net import free_port
from helpers.photos import arrange_in_wnid_folders, linked_copies

from batch_classify.settings import RunSettings

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "batch_classify"]
MODEL = "efficientnet_lite0"




def _wait(what: str, check, timeout: float, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real Prefect server (SQLite) on loopback; yields the environment pointing at it."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
    }
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
            return False

    try:
        _wait("the Prefect server", healthy, timeout=180)
        yield env
    finally:
        _stop(proc)
        log.close()


def _client_call(env: dict, fn):
    """Run ``fn(client)`` against the test server (a fresh client on its API URL)."""
    from prefect.client.orchestration import PrefectClient

    async def call():
        async with PrefectClient(env["PREFECT_API_URL"]) as client:
            return await fn(client)

    return asyncio.run(call())


def _flow_runs(env: dict, deployment_id) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    return _client_call(
        env,
        lambda c: c.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            sort=FlowRunSort.START_TIME_ASC, limit=50, offset=0,
        ),
    )


def _finished(env: dict, flow_run_id):
    run = _client_call(env, lambda c: c.read_flow_run(flow_run_id))
    return run if run.state is not None and run.state.is_final() else None


def assert_flat_form(schema: dict) -> None:
    """The Run form Prefect renders from a deployment's parameter schema: one field per setting, each
    with its description; choices as enums (dropdowns); optional fields as one plain type (no
    "None" choice); no nested model."""
    form = schema["properties"]
    assert not schema.get("definitions"), schema.get("definitions")
    assert set(form) == set(RunSettings.model_fields)
    assert all(form[f]["description"] for f in form)
    for field, values in (("device", ["auto", "cpu", "cuda"]), ("runtime", ["auto", "torch", "onnx"]), ("decode", ["auto", "cpu", "gpu"])):
        assert form[field]["enum"] == values
    for field in ("limit", "batch_size", "weights", "labels", "run_id", "ray_address", "num_actors"):
        # one plain type and no default: the UI shows an empty optional input (a null default it would fill in and refuse)
        assert "anyOf" not in form[field] and "default" not in form[field], form[field]
        assert form[field]["type"] in ("integer", "string"), form[field]
    assert form["limit"]["exclusiveMinimum"] == 0
    assert schema["required"] == ["input", "output"]


def test_serve_schedule_manual_run_and_event_reprocess(prefect_server, photos, tmp_path):
    env = prefect_server
    nightly_input = arrange_in_wnid_folders(photos[:4], tmp_path / "nightly")
    datasets = tmp_path / "datasets"
    changed = arrange_in_wnid_folders(photos[10:16], datasets / "d1")
    outside = arrange_in_wnid_folders(photos[20:22], tmp_path / "elsewhere")
    out = tmp_path / "out"
    serve_log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen(
        [*CLI, "serve", "--input", str(nightly_input), "--output", str(out), "--model", MODEL,
         "--cron", "30 3 * * *", "--timezone", "Europe/Berlin", "--reprocess-prefix", f"{datasets}/"],
        env={**env, "BATCH_CLASSIFY_NUM_CPUS": "2"}, stdout=serve_log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        def deployment(name):
            try:
                return _client_call(env, lambda c: c.read_deployment_by_name(f"batch-classify/{name}"))
            except Exception:  # noqa: BLE001 - not registered yet
                assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                return None

        nightly = _wait("the nightly deployment", lambda: deployment("nightly"), timeout=120)
        reprocess = _wait("the reprocess deployment", lambda: deployment("reprocess"), timeout=60)

        # the schedule, the concurrency limit, and the form the UI renders
        (schedule,) = nightly.schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == ("30 3 * * *", "Europe/Berlin", True)
        for d in (nightly, reprocess):
            assert d.global_concurrency_limit.limit == 1
            assert d.concurrency_options.collision_strategy.value == "ENQUEUE"
        assert not reprocess.schedules
        assert_flat_form(nightly.parameter_openapi_schema)
        assert nightly.parameters["input"] == str(nightly_input)
        assert nightly.parameters["incremental"] is True

        # "Run" from the UI with custom parameters: a flow run created from the deployment, with a
        # name typed into the form (kept), and only the fields the user changed
        created = _client_call(env, lambda c: c.create_flow_run_from_deployment(
            nightly.id, parameters={**nightly.parameters, "run_id": "from-the-ui", "batch_size": 2, "incremental": False},
            name="typed-in-the-form"))
        done = _wait("the manual run", lambda: _finished(env, created.id), timeout=300, every=2)
        assert done.state.is_completed(), (done.state.message, (tmp_path / "serve.log").read_text()[-3000:])
        assert done.parameters["run_id"] == "from-the-ui" and done.name == "typed-in-the-form"
        report = json.loads((out / "from-the-ui" / "report.json").read_text())
        assert (report["n_listed"], report["n_predicted"], report["batch_size"]) == (4, 4, 2)

        # one field overridden from the command line, the rest from the deployment
        r = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "batch-classify/nightly",
                            "--param", "run_id=by-param", "--param", "limit=2"],
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        by_param = _wait("the --param run", lambda: [x for x in _flow_runs(env, nightly.id) if x.parameters.get("run_id") == "by-param"
                                                     and _finished(env, x.id)], timeout=300, every=2)[0]
        by_param = _finished(env, by_param.id)
        assert by_param.state.is_completed()
        assert by_param.name == f"classify-{MODEL}-by-param"  # no name given: named after its run id
        report = json.loads((out / "by-param" / "report.json").read_text())
        assert (report["n_listed"], report["model"], report["input"]) == (2, MODEL, str(nightly_input))

        # events: one outside the prefix (ignored), one naming a dataset under it (reprocessed)
        # (the second named relatively, with a trailing slash: the event carries the absolute URI)
        for uri in (str(outside), "datasets/d1/"):
            r = subprocess.run([*CLI, "notify", uri, "--reason", "test"], env=env, capture_output=True, text=True, timeout=120,
                               cwd=tmp_path)
            assert r.returncode == 0, r.stderr
            assert "emitted dataset.updated" in r.stdout
        runs = _wait("a reprocess flow run", lambda: _flow_runs(env, reprocess.id), timeout=120, every=2)
        done = _wait("the reprocess run", lambda: _finished(env, runs[0].id), timeout=300, every=2)
        assert done.state.is_completed(), (done.state.message, (tmp_path / "serve.log").read_text()[-3000:])
        assert done.parameters["input"] == str(changed)
        (report,) = [r for r in map(lambda p: json.loads(p.read_text()), out.glob("*/report.json")) if r["input"] == str(changed)]
        assert report["n_predicted"] == 6 and report["top1"] >= 0.5
        time.sleep(5)  # room for a wrongly triggered second run to appear
        runs = _flow_runs(env, reprocess.id)
        assert [r.parameters["input"] for r in runs] == [str(changed)]  # the outside event started nothing

        # the flow run list, as the UI shows it
        listing = _flow_runs(env, nightly.id) + runs
        print("\nflow runs on the test server:")
        for r in listing:
            print(f"  {r.name:<48} {r.state.type.value:<10} deployment={'nightly' if r.deployment_id == nightly.id else 'reprocess'}")
    finally:
        _stop(serve)
        serve_log.close()
    assert not Path(out, "from-the-ui", "_staging").exists()


def _checkout_copy(root: Path, into: Path) -> Path:
    """A copy of the checkout's tracked files (what a user's clone holds), without .git or .venv."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    return into


def test_prefect_yaml_deploys_and_a_worker_elsewhere_runs_the_nightly(prefect_server, photos, tmp_path):
    """As a user deploys: `prefect deploy` of prefect.yaml from a clone, the clone then removed, a
    `prefect worker` started in another folder: the nightly run (unnamed, no run id, as the schedule and
    the UI's Quick run create it) completes and commits, is named after its run id, and the registered
    pull steps name no folder of the deploying machine."""
    root = Path(__file__).resolve().parents[2]
    images = arrange_in_wnid_folders(photos[30:33], tmp_path / "in")
    out = tmp_path / "out"
    clone = _checkout_copy(root, tmp_path / "clone")
    worker_home = tmp_path / "worker"
    worker_home.mkdir()
    env = {**prefect_server, "BATCH_CLASSIFY_INPUT": str(images), "BATCH_CLASSIFY_OUTPUT": str(out)}

    def prefect(*args, cwd, timeout=180, env=env):
        r = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, (r.stdout[-2000:] + r.stderr[-4000:])
        return r

    prefect("work-pool", "create", "batch-classify-process", "--type", "process", "--overwrite", cwd=clone)
    prefect("work-pool", "create", "batch-classify-docker", "--type", "docker", "--overwrite", cwd=clone)
    prefect("--no-prompt", "deploy", "--name", "nightly-process", "--name", "reprocess-process", cwd=clone)
    # the Docker pair too, as a user would with RAY_ADDRESS and AWS_ENDPOINT_URL unset (plain AWS, local Ray)
    prefect("--no-prompt", "deploy", "--name", "nightly-docker", "--name", "reprocess-docker", cwd=clone,
            env={k: v for k, v in env.items() if k not in ("RAY_ADDRESS", "AWS_ENDPOINT_URL")} | {"BATCH_CLASSIFY_IMAGE": "bc:test"})
    shutil.rmtree(clone)

    nightly = _client_call(env, lambda c: c.read_deployment_by_name("batch-classify/nightly-process"))
    reprocess = _client_call(env, lambda c: c.read_deployment_by_name("batch-classify/reprocess-process"))
    assert nightly.work_pool_name == reprocess.work_pool_name == "batch-classify-process"
    for d in (nightly, reprocess):  # nothing that names the deploying machine's folder
        assert d.pull_steps == [] and str(clone) not in d.model_dump_json(), d.pull_steps
    for name in ("nightly-docker", "reprocess-docker"):  # into the image's WORKDIR; the pool's env left whole
        d = _client_call(env, lambda c: c.read_deployment_by_name(f"batch-classify/{name}"))
        assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": "/home/batch"}}]
        assert d.job_variables == {"image": "bc:test", "image_pull_policy": "IfNotPresent"}, d.job_variables
    (schedule,) = nightly.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == ("0 2 * * *", "UTC", True)
    assert nightly.global_concurrency_limit.limit == 1
    assert nightly.parameters["input"] == str(images)  # {{ $BATCH_CLASSIFY_INPUT }} resolved
    assert nightly.parameters["output"] == str(out)
    assert_flat_form(nightly.parameter_openapi_schema)
    from prefect.exceptions import ObjectNotFound

    try:  # `serve`'s deployments (the test before, when it ran) are others, left as they were
        served = _client_call(env, lambda c: c.read_deployment_by_name("batch-classify/nightly"))
        assert served.id != nightly.id and served.work_pool_name != nightly.work_pool_name
    except ObjectNotFound:  # run alone: no serve deployment
        pass

    run = _client_call(env, lambda c: c.create_flow_run_from_deployment(nightly.id))  # as "Quick run" does
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "batch-classify-process", "--run-once"],
        cwd=worker_home, env={**env, "BATCH_CLASSIFY_NUM_CPUS": "2"}, capture_output=True, text=True, timeout=400,
    )
    done = _finished(env, run.id)
    assert done is not None and done.state.is_completed(), (done and done.state, worker.stdout[-3000:], worker.stderr[-3000:])
    (committed,) = [p.parent for p in out.glob("*/_SUCCESS")]
    run_id = committed.name
    assert run_id.endswith("-" + str(run.id).replace("-", "")[:6]), (run_id, run.id)
    assert done.name == f"classify-{MODEL}-{run_id}"
    report = json.loads((committed / "report.json").read_text())
    assert (report["run_id"], report["n_predicted"], report["n_failed"]) == (run_id, 3, 0)


def test_regressed_automation_from_the_repository_notifies_a_webhook(prefect_server, tmp_path):
    """The Automation of deployments/regressed-automation.yaml (README "Alerts"), created with
    `prefect automation create`, turns a `batch-classify.run.regressed` event (as the flow emits it)
    into a notification: here a Custom Webhook block posting to a server on loopback."""
    import http.server
    import threading

    import yaml

    received: list[bytes] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    env = prefect_server
    root = Path(__file__).resolve().parents[2]
    try:
        script = (
            "from prefect.blocks.notifications import CustomWebhookNotificationBlock as B\n"
            f"b = B(name='hook', url='http://127.0.0.1:{hook.server_port}/', json_data={{'text': '{{{{subject}}}}|{{{{body}}}}'}})\n"
            "print(b.save('regressed-hook', overwrite=True))\n"
        )
        r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        block_id = r.stdout.strip().splitlines()[-1]
        automation = yaml.safe_load((root / "deployments" / "regressed-automation.yaml").read_text())
        automation["automations"][0]["actions"][0]["block_document_id"] = block_id
        (tmp_path / "automation.yaml").write_text(yaml.safe_dump(automation))
        r = subprocess.run([sys.executable, "-m", "prefect", "automation", "create", "--from-file", str(tmp_path / "automation.yaml")],
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        time.sleep(5)  # the triggers service loads new automations every few seconds
        report = {"run_id": "nightly-7", "input": "s3://photos/nightly", "run_uri": "s3://out/nightly-7", "model": MODEL,
                  "comparison": {"previous_run_uri": "s3://out/nightly-6", "top1_delta": -0.25, "reasons": ["top-1 dropped by 25.0 points"],
                                 "n_current": 8, "n_previous": 8, "n_compared": 8, "regressed": True}}
        script = (
            "import json, sys\nfrom prefect.events import emit_event\nfrom prefect.events.worker import EventsWorker\n"
            "from batch_classify.run.events import run_regressed\n"
            "emit_event(**run_regressed(json.loads(sys.argv[1])))\nEventsWorker.drain_all()\n"
        )
        r = subprocess.run([sys.executable, "-c", script, json.dumps(report)], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        _wait("the webhook notification", lambda: received, timeout=120)
    finally:
        hook.shutdown()
    text = json.loads(received[0])["text"]
    assert text.startswith("batch-classify run nightly-7 regressed|top-1 dropped by 25.0 points"), text
    assert "input: s3://photos/nightly" in text and "compared on 8 images" in text


def _marked_pids(token: str) -> set[int]:
    """The processes whose environment holds ``BATCH_CLASSIFY_TEST_MARK=token`` (every process a command
    starts inherits it, Ray's workers and the flow run's subprocess included)."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if f"BATCH_CLASSIFY_TEST_MARK={token}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.add(int(pid))
        except OSError:
            continue
    return found


def test_a_run_cancelled_from_the_ui_stops_its_stage_and_ends_cancelled(prefect_server, photos, tmp_path):
    """Cancel, as the UI's button does (the flow run set to Cancelling), while `serve`'s run is inferring
    over 1,500 photos: the run's process gets Prefect's SIGTERM, leaves its stage (Ray shut down, the
    staged file closed, the lease released) and the flow run ends Cancelled; nothing of it is left
    running, and `serve` goes on."""
    from prefect.states import Cancelling

    images = linked_copies(photos, tmp_path / "many")
    out = tmp_path / "out"
    token = f"cancel-{os.getpid()}"
    serve_log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen(
        [*CLI, "serve", "--input", str(images), "--output", str(out), "--model", MODEL, "--cron", "0 0 1 1 *"],
        env={**prefect_server, "BATCH_CLASSIFY_NUM_CPUS": "2", "BATCH_CLASSIFY_TEST_MARK": token},
        stdout=serve_log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        env = prefect_server
        # this serve's own deployment (the module's earlier serve registered one of the same name)
        nightly = _wait("the nightly deployment", lambda: (d := _deployment_or_none(env, serve, tmp_path))
                        and d.parameters.get("input") == str(images) and d, timeout=120)
        time.sleep(3)  # serve's own processes started: what is left after the run must be these
        before = _marked_pids(token)
        run = _client_call(env, lambda c: c.create_flow_run_from_deployment(nightly.id, parameters={
            **nightly.parameters, "input": str(images), "output": str(out), "run_id": "cancelled", "batch_size": 16}))
        staging = out / "cancelled" / "_staging"
        _wait("the stage's first staged rows", lambda: list(staging.glob("*/predictions/*.parquet")), timeout=300, every=0.5)
        time.sleep(2)
        assert _finished(env, run.id) is None, "the run ended before it could be cancelled"
        _client_call(env, lambda c: c.set_flow_run_state(run.id, Cancelling(), force=True))
        done = _wait("the cancelled run's final state", lambda: _finished(env, run.id), timeout=90, every=1)
        assert done.state.is_cancelled(), (done.state, (tmp_path / "serve.log").read_text()[-3000:])
        assert not (out / "cancelled" / "_SUCCESS").exists() and not (out / "cancelled" / "_LEASE").exists()
        assert list(staging.glob("*/predictions/*.parquet")), sorted(p.name for p in staging.rglob("*"))
        _wait("the run's processes to end", lambda: _marked_pids(token) <= before, timeout=20)
        assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
    finally:
        _stop(serve)
        serve_log.close()


def _deployment_or_none(env: dict, serve: subprocess.Popen, tmp_path: Path):
    try:
        return _client_call(env, lambda c: c.read_deployment_by_name("batch-classify/nightly"))
    except Exception:  # noqa: BLE001 - not registered yet
        assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
        return None
