"""The heavy stage as a Ray Job on an existing cluster: a real two-node cluster started with
``ray start`` (head + worker, one CPU each) on this machine, the real flow submitting to its Jobs API."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers.net import FAKE_AWS, free_port
from helpers.photos import arrange_in_wnid_folders, linked_copies
from helpers.prefect_api import artifacts_of, flow_run_named, flow_run_of, logs_of

from batch_classify.run import cluster, steps
from batch_classify.stage.output import StageResult
from batch_classify.stage.plan import ClusterPlan
from batch_classify.listing import ImageRecord, Listing
from batch_classify.run.results import InferenceOutcome, StagedRun, read_committed
from batch_classify.settings import RunSettings
from batch_classify.storage import StorageOptions
from batch_classify.models.vocabulary import imagenet

MODEL = "efficientnet_lite0"
VENV_BIN = Path(sys.executable).parent


# --- the pure parts: addresses, the request and result files ----------------------------------


@pytest.mark.parametrize(
    ("address", "jobs"),
    [(None, False), ("auto", False), ("10.0.0.5:6379", False), ("http://head:8265", True), ("HTTPS://head", True)],
)
def test_address_kinds(address, jobs):
    assert cluster.uses_jobs_api(address) is jobs


def test_ray_client_address_is_refused_naming_the_alternatives():
    with pytest.raises(ValueError, match=r"Ray Client.*http://HEAD:8265.*HEAD:6379 or auto"):
        cluster.uses_jobs_api("ray://head:10001")


def test_request_and_result_files_round_trip(tmp_path):
    listing = Listing(
        input="s3://b/in",
        records=(
            ImageRecord("s3://b/in/n01440764/a.JPEG", "n01440764", 10, "etag=\"x\""),
            ImageRecord("s3://b/in/b.png", None, 0, ""),
        ),
        n_ignored=3,
        ignored_extensions={".txt": 2, "": 1},
    )
    folder = str(tmp_path / "job")
    cluster.write_request(folder, listing, {"n01440764": 0}, StorageOptions())
    assert cluster.read_request(folder, StorageOptions()) == (listing, {"n01440764": 0})

    plan = ClusterPlan("cpu", 1, 0.0, 2, "onnx", 8, 1.0, 1.0)
    staged = StagedRun("/o/r/_staging/a", ("/o/r/_staging/a/predictions/part-00000.parquet",), "/o/r/_staging/a/failures.parquet",
                       5, 1, 2, {"input": "x", "model_id": "m@sha256:0"})
    for stage in (StageResult(4, 3, 1, 2.5, plan, 1.5, math.nan), None):
        outcome = InferenceOutcome(staged=staged, stage=stage, reused_from=("/o/r/_staging/b",))
        cluster.write_result(folder, outcome, StorageOptions())
        back, raw = cluster.read_result(folder, StorageOptions())
        assert back.staged == staged and back.reused_from == outcome.reused_from
        if stage is None:
            assert back.stage is None
        else:
            assert math.isnan(back.stage.steady_images_per_second)
            back.stage.steady_images_per_second = stage.steady_images_per_second = 0.0
            assert back.stage == stage
        json.dumps(raw, allow_nan=False)  # plain JSON: NaN written as null


# --- a real cluster ---------------------------------------------------------------------------


@dataclass
class LoopbackCluster:
    """A Ray cluster of ``ray start --block`` processes on this machine.

    Attributes:
        address: the Jobs API (dashboard) address, ``http://127.0.0.1:PORT``.
        temp_dir: the cluster's Ray temp dir (its logs, sessions, shipped code).
    """

    address: str
    temp_dir: str
    processes: list = field(default_factory=list)

    def jobs(self, run_id: str) -> list:
        """The cluster's jobs for ``run_id``, oldest first."""
        from ray.job_submission import JobSubmissionClient

        found = [j for j in JobSubmissionClient(self.address).list_jobs() if (j.metadata or {}).get(cluster.RUN_ID_KEY) == run_id]
        return sorted(found, key=lambda j: j.start_time or 0)

    def alive_nodes(self) -> set[str]:
        from ray.util.state import list_nodes

        return {n.node_id for n in list_nodes(address=self.address, raise_on_missing_output=False) if n.state == "ALIVE"}

    def pipeline_nodes(self, ray_job_id: str) -> tuple[dict[str, set[str]], int]:
        """Node ids where the pipeline of a Ray job ran (its decoding tasks and its model actors' batches), and
        how many decoding tasks ran."""
        from ray.util.state import list_tasks

        tasks = list_tasks(address=self.address, filters=[("job_id", "=", ray_job_id)], limit=10_000, raise_on_missing_output=False)
        where: dict[str, set[str]] = {"decode": set(), "model": set()}
        n_decode = 0
        for t in tasks:
            if t.state == "FINISHED" and t.node_id:
                if t.name.endswith("MapBatches(decode_pages)"):  # one page of the input read and decoded
                    where["decode"].add(t.node_id)
                    n_decode += 1
                elif t.name.startswith("MapWorker(MapBatches(Classifier))") and t.name.endswith(".submit"):
                    where["model"].add(t.node_id)
        return where, n_decode


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"ray start exited {process.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail(f"nothing listens on port {port} after {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(processes: list[subprocess.Popen]) -> None:
    """Stop the nodes: SIGTERM to each ``ray start`` process group (its own session: only what that
    ``ray start`` spawned), then SIGKILL after 5 s (raylets take about 30 s to wind down gracefully,
    which a throwaway test cluster need not wait for)."""
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _start_cluster(nodes: list[str], *, num_cpus: int, env: dict[str, str]):
    """Start ``ray start --block`` nodes on loopback (``head`` first, then ``worker``s), each with its own
    ports, in a temp dir of their own; returns the :class:`LoopbackCluster` (stop it with :func:`_stop`)."""
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, **env,
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    gcs, dashboard = free_port(), free_port()
    common = [f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}", "--object-store-memory=100000000", "--disable-usage-stats"]

    def ports() -> list[str]:
        return [f"--{name}={free_port()}" for name in (
            "node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
            "runtime-env-agent-port", "metrics-export-port",
        )]

    head = [f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}"]
    started = LoopbackCluster(address=f"http://127.0.0.1:{dashboard}", temp_dir=temp_dir)
    try:
        for name in nodes:
            args = ["--head", *head] if name == "head" else [f"--address=127.0.0.1:{gcs}"]
            log = Path(temp_dir) / f"{name}.out"
            process = subprocess.Popen(
                [str(VENV_BIN / "ray"), "start", "--block", *args, *common, *ports()],
                stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=temp_dir, start_new_session=True,
            )
            started.processes.append(process)
            _wait_for_port(gcs if name == "head" else dashboard, process, log)
        return started
    except BaseException:
        _stop(started.processes)
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


@contextlib.contextmanager
def _two_nodes():
    """A head node and a worker node, one CPU each, with their own temp dir and ports (the test
    session's own local Ray is left alone), once both are alive. Token authentication is off, as on a
    private network; the nodes get the session's (fake) AWS credentials from their environment, as real
    nodes have their own. Stopped node by node, never with ``ray stop`` (which would stop every Ray here)."""
    started = _start_cluster(["head", "worker"], num_cpus=1, env={"RAY_AUTH_MODE": "disabled"})
    try:
        deadline = time.monotonic() + 240  # 120 s were not always enough on the 2-core machine under the whole suite
        while len(started.alive_nodes()) < 2:
            assert time.monotonic() < deadline, "the worker node did not join"
            time.sleep(1)
        yield started
    finally:
        _stop(started.processes)
        shutil.rmtree(started.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster(photos):
    """Two nodes (:func:`_two_nodes`) for the module's tests."""
    with _two_nodes() as started:
        yield started


def _task_run(flow_run_id, name: str):
    from helpers.prefect_api import task_runs_of

    (run,) = [r for r in task_runs_of(flow_run_id) if r.name.startswith(name)]
    return run


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_flow_submits_the_stage_as_a_ray_job_that_runs_on_both_nodes(ray_cluster, photos, tmp_path):
    from batch_classify.flows import classify

    src = arrange_in_wnid_folders(photos[:40], tmp_path / "in")
    settings = RunSettings(
        input=str(src), output=str(tmp_path / "out"), model=MODEL, run_id="cl-flow", ray_address=ray_cluster.address,
        batch_size=8,
    )
    state = classify(settings, return_state=True)
    assert state.is_completed(), state.message
    flow_run_id = state.state_details.flow_run_id

    # exact output: every listed image once, and right (the photos are named by their class)
    table = read_committed(str(tmp_path / "out" / "cl-flow"), StorageOptions())
    paths = table.column("path").to_pylist()
    assert sorted(paths) == sorted(str(p) for p in src.rglob("*.JPEG")) and len(paths) == 40
    report = state.result()
    assert (report["n_listed"], report["n_predicted"], report["n_failed"], report["num_actors"]) == (40, 40, 0, 1)
    assert report["top1"] >= 0.8 and report["stage_seconds"] > 0  # 0.85 measured
    assert not (tmp_path / "out" / "cl-flow" / "_staging").exists()  # the job's request and result went with it

    # one job, whose decoding and model batches ran on both nodes
    (ray_job,) = ray_cluster.jobs("cl-flow")
    assert ray_job.status == "SUCCEEDED"
    where, n_decode = ray_cluster.pipeline_nodes(ray_job.job_id)
    assert where["decode"] and where["model"], where
    # One decoding task per page of the input (40 // batch size 8 = 5 pages), so that the model gets the first
    # page's images while the others decode: a task over every page held them all until it ended.
    assert n_decode == 5, n_decode
    assert len(where["decode"] | where["model"]) == 2 and where["decode"] | where["model"] <= ray_cluster.alive_nodes()

    # the job's own log lines are in the infer task run's log
    logs = [message for _, message in logs_of(flow_run_id)]
    assert any(f"submitted ray job {ray_job.submission_id}" in m for m in logs)
    assert any("inference plan: ClusterPlan(device='cpu', num_actors=1" in m for m in logs)
    assert not any("Runtime env is setting up" in m or "logging.cc" in m for m in logs)  # Ray's own notes: not without --verbose
    shipped = [m for m in logs if "stage job for run cl-flow: 40 listed images" in m]
    assert shipped and f"{ray_cluster.temp_dir}/session_" in shipped[0] and "runtime_resources/working_dir_files" in shipped[0]

    # Prefect and Ray point to each other: the job is named after the flow run and carries its id and
    # UI address; the flow run has a link artifact to the job's page in the Ray dashboard
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_cluster.address)
    info = client.get_job_info(ray_job.submission_id)
    assert ray_job.submission_id.startswith("batch-classify-cl-flow-")
    assert info.metadata["job_name"] == f"classify-{MODEL}-cl-flow" == flow_run_of(flow_run_id).name
    assert info.metadata["prefect_flow_run_id"] == str(flow_run_id)
    assert info.metadata["prefect_flow_run_url"].endswith(f"/flow-runs/flow-run/{flow_run_id}")
    (link,) = [a for key, a in artifacts_of(flow_run_id).items() if key.startswith("batch-classify-ray-job-")]
    assert link.type == "markdown" and f"]({ray_cluster.address}/#/jobs/{ray_job.submission_id})" in link.data

    # the job carries the settings (in its runtime environment, not a JSON blob in its entrypoint), not
    # credentials: none in its entrypoint, runtime env, metadata or log
    assert info.entrypoint == f"python -m batch_classify.run.stage_job --request {tmp_path}/out/cl-flow/_staging/_jobs/{ray_job.submission_id}"
    shipped_settings = info.runtime_env["env_vars"][cluster.SETTINGS_VARIABLE]
    assert RunSettings.model_validate_json(shipped_settings) == settings.model_copy(update={"ray_address": "auto"})
    assert ray_cluster.address not in info.model_dump_json()  # a Jobs API address may hold credentials
    seen = info.model_dump_json() + client.get_job_logs(ray_job.submission_id)
    for secret in (v for v in FAKE_AWS.values() if len(v) > 9):
        assert secret not in seen


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_failed_job_fails_the_task_with_its_log_and_the_retry_resubmits(ray_cluster, photos, tmp_path):
    """More model actors than the cluster's CPUs hold (a setting for a bigger cluster): the job fails
    inside the cluster; the task fails with the job's log tail, after one retry that submitted again."""
    from batch_classify.flows import classify

    src = arrange_in_wnid_folders(photos[:4], tmp_path / "in")
    settings = RunSettings(
        input=str(src), output=str(tmp_path / "out"), model=MODEL, run_id="cl-fail", ray_address=ray_cluster.address,
        num_actors=20,
    )
    state = classify(settings, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception) as raised:
        state.result()
    message = str(raised.value)
    first, second = ray_cluster.jobs("cl-fail")
    assert first.status == second.status == "FAILED" and first.submission_id != second.submission_id
    assert message.startswith(f"ray job {second.submission_id} on {ray_cluster.address} ended FAILED: Job entrypoint")
    assert f"last lines of its log (ray job logs {second.submission_id}):" in message
    assert "ConfigError: 20 model actors do not fit beside decoding on a cluster with 2 CPUs" in message  # from its log
    run = _task_run(state.state_details.flow_run_id, "infer")
    assert run.state.is_failed() and run.run_count == 2
    assert not (tmp_path / "out" / "cl-fail" / "_SUCCESS").exists()


@pytest.mark.integration
def test_resubmitted_job_resumes_from_what_the_earlier_job_staged(ray_cluster, photos, tmp_path):
    """A second job of a run id reuses the complete files a first job staged and computes only the rest."""
    src = arrange_in_wnid_folders(photos[40:80], tmp_path / "in")
    settings = RunSettings(
        input=str(src), output=str(tmp_path / "out"), model=MODEL, run_id="cl-resume", ray_address=ray_cluster.address,
        batch_size=8, checkpoint_rows=8,
    )
    listing = steps.list_dataset(settings)
    label_map = imagenet().map_labels({r.label for r in listing.records})
    first = cluster.run_inference_job(settings, listing, label_map)
    assert first.staged.n_predicted == 40 and len(first.staged.prediction_files) == 5
    before = {r["path"]: r for f in first.staged.prediction_files for r in pq.read_table(f).to_pylist()}
    # what a crash of the first job would have left: its last file cut short (no footer), no failures file
    last = Path(first.staged.prediction_files[-1])
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    Path(first.staged.failures_file).unlink()

    lines: list[str] = []
    second = cluster.run_inference_job(settings, listing, label_map, echo=lines.append)
    assert (second.staged.n_reused, second.stage.n_input, second.staged.n_predicted) == (32, 8, 40)
    assert second.reused_from == (first.staged.staging_uri,)
    assert any("32 images reused from" in line and "8 to compute" in line for line in lines)

    committed = steps.persist(settings, second.staged)
    rows = read_committed(committed.run_uri, StorageOptions()).to_pylist()
    assert sorted(r["path"] for r in rows) == sorted(r.path for r in listing.records)  # each once
    for r in rows:  # reused or recomputed, the same prediction
        assert (r["pred_index"], r["top5_index"], r["content_id"]) == (
            before[r["path"]]["pred_index"], before[r["path"]]["top5_index"], before[r["path"]]["content_id"]
        )
    assert [j.status for j in ray_cluster.jobs("cl-resume")] == ["SUCCEEDED", "SUCCEEDED"]


WATCHER = """
import sys
from batch_classify.run import cluster, steps
from batch_classify.settings import RunSettings
from batch_classify.models.vocabulary import imagenet
settings = RunSettings.model_validate_json(sys.argv[1])
listing = steps.list_dataset(settings)
cluster.run_inference_job(settings, listing, imagenet().map_labels({r.label for r in listing.records}))
"""


@pytest.mark.integration
def test_interrupted_watcher_stops_its_job(ray_cluster, photos, tmp_path):
    """Ctrl-C (or a cancelled task) in the submitting process stops the job it was watching."""
    # Enough work that the job is still running when the interrupt comes: 200 photos, and no ONNX
    # export cache (with a cached export, 10 photos finished before the watcher's Ctrl-C arrived).
    src = arrange_in_wnid_folders(photos[80:280], tmp_path / "in")
    settings = RunSettings(input=str(src), output=str(tmp_path / "out"), model=MODEL, run_id="cl-stop",
                           ray_address=ray_cluster.address, cache_dir="")
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, settings.model_dump_json()],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not [j for j in ray_cluster.jobs("cl-stop") if j.status == "RUNNING"]:
            assert watcher.poll() is None, watcher.communicate()
            assert time.monotonic() < deadline, "the job never ran"
            time.sleep(0.2)
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode != 0 and "KeyboardInterrupt" in err
    (stopped,) = ray_cluster.jobs("cl-stop")
    deadline = time.monotonic() + 30
    while stopped.status != "STOPPED" and time.monotonic() < deadline:
        time.sleep(0.5)
        (stopped,) = ray_cluster.jobs("cl-stop")
    assert stopped.status == "STOPPED"
    assert f"submitted ray job {stopped.submission_id}" in out


SLOW_PRINTER = (
    "import sys, time\n"
    "for i in range(6):\n"
    "    print(f'line {i}', flush=True); time.sleep(0.5)\n"
    "print('no newline at the end', end='', flush=True)\n"
    "sys.exit(int(sys.argv[1]))\n"
)


@pytest.mark.integration
@pytest.mark.parametrize("code", [0, 3])
def test_watcher_streams_the_log_instead_of_downloading_it_on_every_poll(ray_cluster, code):
    """Each line of the job's log is echoed once, in order, as it comes through the Jobs API's log
    stream; the whole log is never downloaded (the client counts it), and the final status and the
    whole log are returned as before, for a job that succeeds and one that fails."""
    import shlex

    from ray.job_submission import JobStatus, JobSubmissionClient

    from batch_classify.run.job_log import follow

    class CountingClient(JobSubmissionClient):
        downloads = 0

        def get_job_logs(self, job_id):
            CountingClient.downloads += 1
            return super().get_job_logs(job_id)

    client = CountingClient(ray_cluster.address)
    submission_id = client.submit_job(entrypoint=f"python -c {shlex.quote(SLOW_PRINTER)} {code}")
    lines: list[str] = []
    started = time.monotonic()
    when: dict[str, float] = {}

    def echo(line: str) -> None:
        lines.append(line)
        when.setdefault(line, time.monotonic())

    status, logs = follow(client, submission_id, echo=echo, poll_seconds=0.2)
    assert status == (JobStatus.SUCCEEDED if code == 0 else JobStatus.FAILED)
    assert logs == client.get_job_logs(submission_id)  # the whole log, as the Jobs API holds it
    assert lines == logs.splitlines()  # each line once, in order (Ray's own first: "Runtime env is setting up.")
    assert lines[-7:] == [f"line {i}" for i in range(6)] + ["no newline at the end"]
    assert CountingClient.downloads == 1  # only the check just above: follow never downloaded it
    assert when["line 5"] - when["line 0"] > 1.5  # echoed as printed (0.5 s apart), not all at the end
    assert time.monotonic() - started < 60


# --- a cluster with token authentication ------------------------------------------------------


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_a_token_authenticated_cluster_runs_the_job_with_its_token_and_refuses_others_at_once(photos, tmp_path):
    """A head started with Ray's token authentication (``RAY_AUTH_MODE=token``, the token in
    ``RAY_AUTH_TOKEN``), and ``batch-classify run --ray-address http://HEAD:8265`` as a user runs it:
    with ``RAY_AUTH_MODE=token`` and the token the job runs; with no token or a wrong one the run stops
    with one line naming the address and what to set, without a Prefect retry and without a job."""
    import secrets

    from prefect.settings import PREFECT_API_URL
    from ray.job_submission import JobSubmissionClient

    token = secrets.token_hex(16)
    head = _start_cluster(["head"], num_cpus=2, env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    try:
        src = arrange_in_wnid_folders(photos[300:306], tmp_path / "in")
        out = tmp_path / "out"
        base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        base.update(PREFECT_API_URL=PREFECT_API_URL.value(), HOME=str(tmp_path))  # no ~/.ray/auth_token of this machine

        def run(run_id: str, **ray_env: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "batch_classify", "run", "--input", str(src), "--output", str(out), "--model", MODEL,
                 "--ray-address", head.address, "--run-id", run_id, "-q"],
                env={**base, **ray_env}, capture_output=True, text=True, timeout=400,
            )

        def infer_runs(run_id: str) -> int:
            return _task_run(flow_run_named(f"classify-{MODEL}-{run_id}").id, "infer").run_count

        ok = run("tok-right", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        assert ok.returncode == 0, ok.stderr[-3000:]
        assert (out / "tok-right" / "_SUCCESS").exists()

        for run_id, ray_env, says in (
            ("tok-missing", {}, "requires a token and none was sent"),
            ("tok-wrong", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-" + token}, "refused the token sent"),
        ):
            refused = run(run_id, **ray_env)
            assert refused.returncode == 1, refused.stderr[-3000:]
            (line,) = [x for x in refused.stderr.splitlines() if x.startswith("error:")]
            assert line.startswith(f"error: RayAuthenticationFailed: ray cluster at {head.address} {says}"), line
            assert "RAY_AUTH_MODE=token" in line and "RAY_AUTH_TOKEN" in line
            assert "Traceback" not in refused.stderr
            assert infer_runs(run_id) == 1  # permanent: no retry
            assert not (out / run_id / "_SUCCESS").exists()

        jobs = JobSubmissionClient(head.address, headers={"Authorization": f"Bearer {token}"}).list_jobs()
        assert [(j.metadata or {}).get(cluster.RUN_ID_KEY) for j in jobs] == ["tok-right"]
    finally:
        _stop(head.processes)
        shutil.rmtree(head.temp_dir, ignore_errors=True)


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_a_worker_node_lost_mid_stage_loses_and_duplicates_nothing(photos, tmp_path):
    """Issue 27 item 10: on a two-node cluster of its own, the worker node is killed (SIGKILL to its
    ``ray start``, as a machine lost) while the Ray Job's stage runs over 1,500 photos. The one CPU left
    cannot hold the plan (an actor of 1 CPU and 1 CPU to decode): the first job stops with CapacityLost,
    the infer task's retry submits one planned for one CPU, which resumes; the run commits every image
    exactly once (the stage's output check).

    Before: the job hung (no progress in 14 minutes): on the one CPU left, the model actor held it and
    the decoding tasks waited for it. Now the stage stops once the plan no longer fits and nothing came
    for ``lost_capacity_wait``, and the retry's job, planned for one CPU, resumes."""
    import threading

    from batch_classify.flows import classify

    images = linked_copies(photos, tmp_path / "many")
    with _two_nodes() as started:
        settings = RunSettings(input=str(images), output=str(tmp_path / "out"), model=MODEL, run_id="node-lost",
                               ray_address=started.address, labels="none", batch_size=16,
                               lost_capacity_wait=10, checkpoint_rows=128)  # the workers' files: 128 rows each
        done: dict = {}
        runner = threading.Thread(target=lambda: done.update(state=classify(settings, return_state=True)))
        runner.start()
        staged = tmp_path / "out" / "node-lost" / "_staging"
        deadline = time.monotonic() + 300
        while not list(staged.glob("*/predictions/*.parquet")):  # the workers' first file: the stage runs
            assert runner.is_alive() and time.monotonic() < deadline, "the stage did not start"
            time.sleep(0.5)
        time.sleep(8)
        assert runner.is_alive(), "the run ended before the node was lost"
        os.killpg(started.processes[1].pid, signal.SIGKILL)  # the worker node, all at once
        runner.join(timeout=600)
        assert not runner.is_alive(), "the run did not end within 10 minutes of the node's loss"
        from ray.job_submission import JobSubmissionClient

        jobs = started.jobs("node-lost")
        first_log = JobSubmissionClient(started.address).get_job_logs(jobs[0].submission_id)
    state = done["state"]
    assert state.is_completed(), state.message
    table = read_committed(str(tmp_path / "out" / "node-lost"), StorageOptions())
    paths = table.column("path").to_pylist()
    assert len(paths) == len(set(paths)) == 1500
    report = state.result()
    assert (report["n_listed"], report["n_predicted"], report["n_failed"]) == (1500, 1500, 0)
    assert 0 < report["n_reused"] < 1500  # the second job resumed from what the first staged
    assert [j.status for j in jobs] == ["FAILED", "SUCCEEDED"]
    assert "CapacityLost: the Ray cluster has 1 CPU and 0 GPU now; the stage's plan needs 2 CPU" in first_log
