"""Screenshots of the Prefect UI for a pull request's notes: the deployment's Run form (flat parameters),
the flow runs list with a regressed run, that run's page, and a run cancelled during its stage.

Starts a real ``prefect server start`` (UI on) on loopback, serves the deployments with
``batch-classify serve`` over a few photos, runs the nightly deployment twice (the second with the
classifier's rows shifted by one class, so its top-1 collapses: "Regressed"), and drives headless
Chromium (``/usr/bin/chromium``, through Playwright) over the pages. Nothing is downloaded.

    python scripts/ui_screenshots.py --photos ../shared/imagenet-sample --out /tmp/shots

Writes ``deployment-form.png``, ``flow-runs.png``, ``regressed-run.png``, ``report-page.png`` (the
regressed run's report.html), ``cancelled-run.png`` (a run of 1,500 photos cancelled through the API, as
the UI's Cancel button does, once its stage has staged a file) and the server and serve logs under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(every)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def _client(api: str, fn):
    from prefect.client.orchestration import PrefectClient

    async def call():
        async with PrefectClient(api) as client:
            return await fn(client)

    # in a thread of its own: Playwright's sync API keeps an event loop running in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, call()).result()


def _shifted_weights(path: Path) -> str:
    """Lite0's weights with the classifier rows rolled by one class (every prediction moves to the next class)."""
    import torch

    from batch_classify.models.registry import get_spec

    state = torch.load(get_spec("efficientnet_lite0").default_weights_path(), map_location="cpu", weights_only=True)
    for key, value in state.items():
        if value.shape[:1] == (1000,):
            state[key] = torch.roll(value, shifts=1, dims=0)
    torch.save(state, path)
    return str(path)


def _cancelled_run(api: str, nightly, photos: Path, work: Path):
    """A nightly run over 1,500 photos (three hard-linked copies), cancelled as the UI's Cancel button does
    (state Cancelling) once its stage has staged a file; returns the run once its state is final."""
    from prefect.states import Cancelling

    many = work / "many"
    for copy in range(3):
        (many / f"camera-{copy}").mkdir(parents=True)
        for photo in sorted(photos.glob("*.JPEG")):
            os.link(photo, many / f"camera-{copy}" / photo.name)
    run = _client(api, lambda c: c.create_flow_run_from_deployment(
        nightly.id, parameters={**nightly.parameters, "input": str(many), "labels": "none"}, name="nightly-cancelled"))
    _wait("the cancelled run's first staged file", lambda: list((work / "out").glob("*/_staging/*/predictions/*.parquet")), 300, every=0.5)
    _client(api, lambda c: c.set_flow_run_state(run.id, Cancelling(message="cancelled from the screenshots script")))

    def final():
        r = _client(api, lambda c: c.read_flow_run(run.id))
        return r if r.state and r.state.is_final() else None

    done = _wait("the cancelled run's end", final, 120, every=1)
    print(f"nightly-cancelled: {done.state.type.value} {done.state.name}: {done.state.message}")
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    tasks = _client(api, lambda c: c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))))
    for task in sorted(tasks, key=lambda t: t.start_time or t.created):
        print(f"  task run {task.name}: {task.state.type.value} {task.state.name}: {task.state.message}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "imagenet-sample")
    parser.add_argument("--out", type=Path, default=Path("/tmp/shots"))
    parser.add_argument("--images", type=int, default=12)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ui-shots-"))
    dataset = work / "nightly"
    for photo in sorted(args.photos.glob("*.JPEG"))[: args.images]:
        wnid = photo.name.split("_", 1)[0]
        (dataset / wnid).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, dataset / wnid / photo.name)
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "BATCH_CLASSIFY_NUM_CPUS": "2"}
    server_log, serve_log = open(args.out / "server.log", "w"), open(args.out / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True)
    serve = None
    try:
        def healthy():
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        _wait("the Prefect server", healthy, 180)
        serve = subprocess.Popen([sys.executable, "-m", "batch_classify", "serve", "--input", str(dataset), "--output",
                                  str(work / "out"), "--model", "efficientnet_lite0"],
                                 env=env, stdout=serve_log, stderr=subprocess.STDOUT, start_new_session=True)

        def deployment():
            try:
                return _client(api, lambda c: c.read_deployment_by_name("batch-classify/nightly"))
            except Exception:  # noqa: BLE001 - not registered yet
                return None

        nightly = _wait("the nightly deployment", deployment, 180)
        shifted = _shifted_weights(work / "lite0-shifted.pth")
        runs = []
        for name, extra in (("nightly-baseline", {}), ("nightly-shifted-weights", {"weights": shifted})):
            run = _client(api, lambda c: c.create_flow_run_from_deployment(
                nightly.id, parameters={**nightly.parameters, **extra}, name=name))

            def finished(run_id=run.id):
                r = _client(api, lambda c: c.read_flow_run(run_id))
                return r if r.state and r.state.is_final() else None

            runs.append(_wait(f"flow run {name}", finished, 600, every=2))
            print(f"{name}: {runs[-1].state.name}, tags {runs[-1].tags}")

        from playwright.sync_api import sync_playwright

        import json

        reports = [json.loads(p.read_text()) for p in (work / "out").glob("*/report.json")]
        (regressed,) = [r for r in reports if (r.get("comparison") or {}).get("regressed")]
        ui = f"http://127.0.0.1:{port}"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            for url, file, height in ((f"{ui}/deployments/deployment/{nightly.id}/run", "deployment-form.png", 5200),
                                      (f"{ui}/runs", "flow-runs.png", 1000),
                                      (f"{ui}/runs/flow-run/{runs[-1].id}", "regressed-run.png", 1000),
                                      (f"file://{regressed['run_uri']}/report.html", "report-page.png", 1000)):
                page.set_viewport_size({"width": 1440, "height": height})  # the form scrolls inside the page
                page.goto(url, wait_until="networkidle")
                time.sleep(3)
                page.screenshot(path=str(args.out / file), full_page=True)
                print(f"wrote {args.out / file}")
                if file == "deployment-form.png":  # submit the form as it is: empty optional fields are accepted
                    known = {r.id for r in runs}
                    page.get_by_role("button", name="Submit").click()
                    try:  # the UI goes back to the deployment's page, Runs tab
                        page.wait_for_url(lambda url: not url.endswith("/run"), timeout=30_000)
                    except Exception:  # noqa: BLE001 - show what the form says
                        page.screenshot(path=str(args.out / "form-not-submitted.png"), full_page=True)
                        raise

                    def submitted():
                        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

                        found = _client(api, lambda c: c.read_flow_runs(
                            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[nightly.id])), limit=20, offset=0))
                        new = [r for r in found if r.id not in known]
                        return new[0] if new and new[0].state and new[0].state.is_final() else None

                    run = _wait("the run submitted from the form", submitted, 600, every=2)
                    print(f"submitted from the form: {run.name}: {run.state.name}, parameters {sorted(run.parameters)}")
            cancelled = _cancelled_run(api, nightly, args.photos, work)
            page.set_viewport_size({"width": 1440, "height": 2000})  # the log, below the graph
            page.goto(f"{ui}/runs/flow-run/{cancelled.id}", wait_until="networkidle")
            time.sleep(3)
            page.screenshot(path=str(args.out / "cancelled-run.png"), full_page=True)
            print(f"wrote {args.out / 'cancelled-run.png'}")
            browser.close()
    finally:
        for proc in (serve, server):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        server_log.close()
        serve_log.close()


if __name__ == "__main__":
    main()
