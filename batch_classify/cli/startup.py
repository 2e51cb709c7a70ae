"""Start-up work that does not depend on each other, done side by side before a run's flow starts.

Before this, ``batch-classify run`` did its start-up one thing after another: Prefect's temporary API
(about 3.5 s), then the validation step's imports and model load (about 3 s, mostly importing
torchvision and torch), then Ray's start (about 3 s) inside the inference step (2-core development
machine, a run over 10 photos, BENCHMARKS.md). Each mostly waits: on a subprocess, on the
disk. The CLI now starts Prefect's API in its own process (:class:`TemporaryApi`), runs
:func:`prepare_model` and Prefect's imports in threads, and starts Ray and then Ray Data's helper
actors in a third thread (:func:`start_ray_ahead`) that lives until Ray is shut down. The flow starts
once the API, the model and Prefect's imports are ready; only the inference step waits for Ray.

Each piece here is best effort: what fails is done again, and reported, by the step that needs it
(the validation step names a missing weights file in one line). No Prefect import here: the CLI
owns Prefect's part.
"""

from __future__ import annotations

import importlib
import logging
import threading
from concurrent.futures import Future
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: importing this module stays quick (batch_classify.cli.launch)
    from batch_classify.settings import RunSettings

log = logging.getLogger(__name__)

#: Modules a run imports in its steps, beyond its model's runtime and Ray Data (0.5 s with pandas): Parquet,
#: the report's pictures. Imported ahead, their cost overlaps the waits.
RUN_MODULES = ("pandas", "pyarrow.parquet", "pyarrow.compute", "matplotlib.figure", "matplotlib.backends.backend_agg", "jinja2")


def in_background(fn: Callable[..., Any], *args: Any) -> threading.Thread:
    """Run ``fn(*args)`` in a daemon thread, started; an exception is logged (debug) and dropped,
    since the step that needs the result does the work again and reports the error."""

    def guarded() -> None:
        try:
            fn(*args)
        except Exception as err:  # noqa: BLE001 - best effort: the owning step reports it
            log.debug("start-up: %s failed ahead of its step: %s: %s", getattr(fn, "__name__", fn), type(err).__name__, err)

    thread = threading.Thread(target=guarded, name=f"startup-{getattr(fn, '__name__', 'work')}", daemon=True)
    thread.start()
    return thread


#: Held by a start-up thread while it imports Ray Data (:func:`import_ray_data`).
_RAY_DATA_IMPORT = threading.Lock()


def import_ray_data() -> None:
    """Import ``ray.data`` whole, one start-up thread at a time.

    Why: two start-up threads import Ray Data (:func:`prepare_model` the package, the Ray thread
    :func:`start_ray_data_actors`' private modules), and CPython lets a thread import a submodule while
    another thread is still running its parent package's ``__init__``: the submodule's own import-time
    code then found the parent half made ("module 'ray.data' has no attribute '_internal'", the
    inference step failing in 1 of about 9 demo runs in the docker/ image). Once one thread has imported
    the package whole, the others import only leaf modules, which Python's per-module locks serialise.
    """
    with _RAY_DATA_IMPORT:
        import ray.data  # noqa: F401


def prepare_model(settings: RunSettings, here: Future | None = None) -> None:
    """Import what the run's steps import and load ``settings.model`` into this process's caches, as
    the validation step would: the spec, its classes, and, for the ONNX Runtime path, the ONNX export
    (from ``settings.cache_dir`` when cached there; exported, checked and cached otherwise:
    :func:`batch_classify.stage.engines.onnx_model`).

    Raises:
        whatever those raise (:func:`in_background` drops it; the validation step reports it).
    """
    from batch_classify.stage.engines import onnx_model, resolve_runtime
    from batch_classify.models.registry import get_spec

    storage = settings.storage_options()
    spec = get_spec(settings.model, storage)
    spec.vocabulary()
    if resolve_runtime(settings.runtime, "cpu", onnx_only=spec.onnx_only) == "onnx":
        onnx_model(spec, settings.weights, storage, cache_dir=settings.cache_dir)
    if here is None or not here.result():  # Ray Data's stage, most likely (:func:`stage_runs_here`)
        import_ray_data()

    for name in RUN_MODULES:
        importlib.import_module(name)


#: uvicorn's exit status when its port is taken (Prefect's ``SubprocessASGIServer`` retries on it too).
PORT_TAKEN = 3
#: Seconds to wait for the temporary API to answer ``/api/health`` (Prefect's default for its own: 20).
API_STARTUP_TIMEOUT = 60.0


#: Seconds after which a temporary API that logged an error and does not answer is given up on (it
#: answers within 1-4 s here when it can; one whose database cannot be written never does).
GIVE_UP_AFTER_ERROR = 10.0
#: The temporary API's log file, in ``PREFECT_HOME``: the server's errors, kept off the run's terminal
#: (a full disk made it print about 480 lines of tracebacks there).
TEMPORARY_API_LOG = "batch-classify-temporary-api.log"


class TemporaryApi:
    """Prefect's temporary local API for one run, started the way Prefect starts its own
    (``prefect.server.api.server.SubprocessASGIServer``: uvicorn serving ``create_app`` on a free
    loopback port, UI off), but without importing the server's code into this process first:
    ``import prefect.server.api.server`` costs 2.5-3.3 s on the 2-core development machine
    (``python -X importtime``), and the server process imports it again anyway. Started at once, it
    gets ready while this process starts Ray and imports Prefect's client.

    Use :meth:`start`, then :meth:`wait_ready` before the flow runs with ``PREFECT_API_URL`` =
    :attr:`api_url`, then :meth:`stop`. The watchdog (:mod:`batch_classify.cli.watchdog`) stops it if
    this process is killed.
    """

    def __init__(self) -> None:
        import os
        from pathlib import Path

        self.port: int | None = None
        self.process = None
        #: The server's output: its log level is ``error``, so only what went wrong (tracebacks included).
        self.log_path = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser() / TEMPORARY_API_LOG
        self._log_start = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> "TemporaryApi":
        """Start the server process on a free port; return at once."""
        import importlib.util
        import os
        import socket
        import subprocess
        import sys

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        spec = importlib.util.find_spec("prefect")
        if spec is None or spec.origin is None:
            raise RuntimeError("the prefect package is not installed")
        app_dir = os.path.dirname(os.path.dirname(spec.origin))
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        env.pop("PREFECT_API_URL", None)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the server's own tracebacks: a file, not the run's terminal
            self._log_start = log.seek(0, 2)  # earlier runs' lines are theirs
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", app_dir, "--factory", "prefect.server.api.server:create_app",
                 "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
                env=env, stdout=log, stderr=log,
                start_new_session=True,  # a terminal's Ctrl-C is for the run, which stops this server when it ends
            )
        return self

    def last_error(self) -> str | None:
        """The last error line of the server's log (``sqlite3.OperationalError: database or disk is full``),
        or None: what the CLI adds to a failure that the API answered with a server error."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(self._log_start, f.seek(0, 2) - 65536))
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return None
        return next((line.strip() for line in reversed(lines) if "Error" in line.split(":")[0]), None)

    def wait_ready(self, timeout: float = API_STARTUP_TIMEOUT) -> None:
        """Wait until ``/api/health`` answers 200 (a port taken meanwhile: start again on another).

        Raises:
            RuntimeError: the server exited, or did not answer within ``timeout`` seconds.
        """
        import time
        import urllib.error
        import urllib.request

        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if time.monotonic() - started > GIVE_UP_AFTER_ERROR and self.last_error():
                break  # it logged an error and still does not answer: its database cannot be written, say
            code = self.process.poll()
            if code == PORT_TAKEN:
                self.start()
                continue
            if code is not None:
                raise RuntimeError(f"Prefect's temporary API exited with status {code} before it answered{self._said()}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"Prefect's temporary API on {self.api_url} did not answer within "
                           f"{time.monotonic() - started:.0f} s{self._said()}")

    def _said(self) -> str:
        error = self.last_error()
        return f"; its last error: {error} (its log: {self.log_path}; a full disk or a file size limit?)" if error else ""

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s, as Prefect does); safe to call twice."""
        import subprocess

        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


_api: TemporaryApi | None = None


def guarded_temporary_api() -> TemporaryApi | None:
    """What a run starts before anything else: the watchdog (:func:`batch_classify.cli.watchdog.start`: what
    follows dies with this process, even on kill -9), then, where no ``PREFECT_API_URL`` is set,
    :func:`temporary_api` with no server analytics (a user who sets that variable keeps their choice;
    see :func:`batch_classify.cli.prefect_setup.prefect_defaults`). Called by the console script before it
    imports the command line (:mod:`batch_classify.cli.launch`) and by ``cli.run_flow``; both get the same
    watchdog and server.

    Returns:
        the temporary API, or None where ``PREFECT_API_URL`` names a server.
    """
    import os

    from batch_classify.cli import watchdog
    watchdog.start()
    if os.environ.get("PREFECT_API_URL"):
        return None
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # before the API's process starts
    return temporary_api()


def temporary_api_said(exc: BaseException) -> str | None:
    """For a run that failed on a server error (HTTP 5xx) of this process's temporary API: what the API's
    log says went wrong and where that log is (``Prefect's temporary API: sqlite3.OperationalError:
    database or disk is full (its log: …)``); else None."""
    status = getattr(getattr(exc, "response", None), "status_code", 0)
    if _api is None or not isinstance(status, int) or status < 500:
        return None
    error = _api.last_error()
    return f"Prefect's temporary API: {error or 'a server error'} (its log: {_api.log_path})"


def temporary_api() -> TemporaryApi:
    """This process's :class:`TemporaryApi`, started on the first call (its stop registered with
    ``atexit``); later calls return it, started again if it was stopped, so that the console script's
    early start (:func:`guarded_temporary_api`) and ``cli.run_flow`` share one server.
    """
    import atexit

    global _api
    if _api is None:
        _api = TemporaryApi()
        atexit.register(_api.stop)  # before Prefect's handlers: runs after they have sent their last logs
    if _api.process is None:
        _api.start()
    return _api


def guess_stage_here(settings: RunSettings) -> Future:
    """:func:`stage_runs_here`, computed in a thread: a future of its bool (False where it failed), for
    :func:`start_ray_ahead` and :func:`prepare_model` to share."""
    future: Future = Future()

    def guess() -> None:
        try:
            future.set_result(stage_runs_here(settings))
        except BaseException:  # noqa: BLE001 - a guess: Ray then starts ahead as before
            future.set_result(False)

    threading.Thread(target=guess, name="executor-guess", daemon=True).start()
    return future


def start_ray_ahead(settings: RunSettings, here: Future | None = None) -> threading.Thread | None:
    """Start a local Ray ahead of the run's stage, then Ray Data's helper actors
    (:func:`start_ray_data_actors`), in a thread of their own
    (:func:`batch_classify.stage.ray_start.start_ray_in_thread`): the flow starts, lists and validates
    meanwhile; the stage waits for that start, adopts its Ray and stops it when the stage ends. None
    with ``--ray-address``. Call from the main thread.

    Returns:
        the thread, started; None where no Ray is started ahead.
    """
    from batch_classify.stage.ray_start import start_ray_in_thread

    if settings.ray_address is not None or settings.executor == "local":
        return None
    return start_ray_in_thread(settings.num_cpus, verbose=settings.verbose, then=start_ray_data_actors,
                               metrics=settings.ray_metrics,
                               unless=here.result if here is not None else lambda: stage_runs_here(settings))


def stage_runs_here(settings: RunSettings) -> bool:
    """Whether ``--executor auto`` will most likely run the stage in this process
    (:func:`batch_classify.stage.plan.choose_executor`), judged before the listing from a count of the input's
    images up to the threshold (:func:`batch_classify.listing.count_images`, ``--limit`` applied). A wrong
    guess costs time, never a result: the inference step chooses again from the images it has to compute."""
    from batch_classify.listing import count_images
    from batch_classify.stage.plan import LOCAL_MAX_IMAGES, choose_executor

    if settings.executor != "auto":
        return settings.executor == "local"
    up_to = min(LOCAL_MAX_IMAGES, settings.limit or LOCAL_MAX_IMAGES)
    n = count_images(settings.input, settings.storage_options(), up_to=up_to)
    return choose_executor("auto", n_images=n, ray_address=settings.ray_address, device=settings.device) == "local"


#: Ray Data's own helper actors (ray 2.60): one per cluster, each created by the first stage that needs it,
#: each a new worker process that imports Ray Data (0.8-1.2 s of CPU on the 2-core development machine).
#: Pairs of (module, function) that get or create them, private to Ray Data, hence best effort.
RAY_DATA_ACTORS = (
    ("ray.data._internal.stats", "get_or_create_stats_actor"),
    ("ray.data._internal.cluster_autoscaler", "get_or_create_autoscaling_coordinator"),
    ("ray.data._internal.execution.node_trackers", "get_or_create_actor_location_tracker"),
)


def start_ray_data_actors() -> None:
    """Create Ray Data's helper actors (:data:`RAY_DATA_ACTORS`) in a local Ray started ahead, without
    waiting for them: they start while the flow starts, lists and validates, instead of inside the
    stage. Measured on a run over 10 photos: the stage's first decoding task waited 2.1 s for the
    autoscaling coordinator before, 0.6 s after (BENCHMARKS.md, "Start-up"). The stage gets the same
    actors by name (``get_if_exists``). A function that is gone in another Ray version is skipped (logged
    at debug level): the stage then creates that actor itself, as before.
    """
    import_ray_data()
    for module, name in RAY_DATA_ACTORS:
        try:
            getattr(importlib.import_module(module), name)()
        except Exception as err:  # noqa: BLE001 - Ray Data creates it in the stage as it always does
            log.debug("start-up: Ray Data's %s.%s() failed ahead of the stage: %s: %s",
                      module, name, type(err).__name__, err)


def exit_now(code: int | str | None) -> None:
    """End the process with ``code`` (as ``sys.exit`` would: a string is printed, status 1) once
    everything an exit owes has run (other non-daemon threads joined, such as Ray's shutdown; every
    ``atexit`` handler: Prefect's last log lines sent, its temporary API and the watchdog stopped;
    output flushed), skipping the interpreter's teardown after that (freeing the modules of Ray's,
    Prefect's and ONNX Runtime's extensions), which took 0.8-1.4 s of every run on the 2-core
    development machine and has nothing left to write. For the CLI's entry point only: never
    returns.
    """
    import atexit
    import os
    import sys

    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # what the interpreter does first at exit: join the other non-daemon threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code or 0)
