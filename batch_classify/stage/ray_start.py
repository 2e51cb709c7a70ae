"""Ray's start and shutdown in this process: a local Ray for the run's stage, or a cluster it joins as
the driver, started ahead of the stage where the CLI can (:func:`start_ray_in_thread`), adopted by the
stage, and shut down in the background when the stage ends (:func:`stop_ray`).

What Ray prints meanwhile is :mod:`batch_classify.stage.ray_logs`' concern (``ray.init``'s switches, its C++
core's level); whether an address answers, :mod:`batch_classify.stage.reach`'s.

No Prefect here: this module travels in a Ray Job like the rest of the library.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from batch_classify.stage.ray_logs import quiet_ray_core, ray_init_kwargs

#: A local Ray started ahead of its stage (``start_ray(..., ahead=True)``, the CLI at start-up), not yet
#: adopted by the stage's own :func:`start_ray` call.
_ahead = False
#: The thread of a :func:`stop_ray` still shutting Ray down; the next :func:`start_ray` waits for it.
_stopping: threading.Thread | None = None
#: The thread of :func:`start_ray_in_thread`: it started a local Ray and lives until Ray is shut down.
_owner: threading.Thread | None = None
#: Set once that thread's start has ended, either way; :func:`start_ray` waits for it.
_owner_started = threading.Event()
#: Set once Ray is shut down (:func:`stop_ray`, :func:`stop_ray_ahead`): that thread may end.
_owner_release = threading.Event()
#: Ray's warning when ``ray.init`` runs outside the main thread (ray 2.60, ``worker.py``): the handler
#: it names is set by :func:`start_ray_in_thread` instead.
SIGTERM_NOT_SET = "SIGTERM handler is not set"


#: ``ray.init``'s system configuration of a local Ray without its metrics (see ``RunSettings.ray_metrics``):
#: every process of it (GCS, raylet, workers, the driver's core worker) logs "Disabled stats." and starts
#: no metrics exporter. A cluster joined by address keeps its own configuration.
NO_METRICS = {"enable_metrics_collection": False}


def start_ray(address: str | None, *, num_cpus: int | None, verbose: bool, ahead: bool = False,
              metrics: bool = False) -> bool:
    """Start or join Ray unless this process already has it, with Ray's output kept off the terminal
    unless ``verbose`` (:func:`ray_init_kwargs`, :func:`quiet_ray_core`).

    Args:
        address: an existing cluster (``ray://``, ``host:port``, ``auto``); None: a new local Ray.
        num_cpus: CPUs of a new local Ray (None: all).
        metrics: Ray's own metrics in a new local Ray (:data:`NO_METRICS` where off); ignored with ``address``.
        ahead: start it for a stage that comes later (the CLI, while Prefect starts): the next call
            without ``ahead`` adopts it (returns True, so that its caller shuts it down when its stage
            ends, as if it had started it); :func:`stop_ray_ahead` stops it if no stage came.

    Returns:
        whether the caller owns Ray now (it started or adopted it) and shuts it down (:func:`stop_ray`).

    Raises:
        batch_classify.stage.reach.AddressUnreachable: nothing answers at ``address`` (about 25 s).
    """
    global _ahead
    import ray

    _wait_for_start_in_thread()  # a start ahead in progress: adopt what it started
    if _stopping is not None:
        _stopping.join()
    if ray.is_initialized():
        if _ahead and not ahead:
            _ahead = False
            return True
        return False
    if address:
        from batch_classify.stage.reach import wait_for_address

        wait_for_address(address, address)  # ray.init would retry a dead address for minutes
    kwargs = ray_init_kwargs(verbose)
    chosen = _sigterm_handler_chosen()
    with quiet_ray_core(verbose):
        if address:
            ray.init(address=address, **kwargs)
        else:
            # address="local": a new Ray for this run, even where a stale /tmp/ray/ray_current_cluster
            # names some other cluster (Ray would otherwise try to join it).
            ray.init(address="local", num_cpus=num_cpus, **kwargs, **({} if metrics else {"_system_config": NO_METRICS}))
    if chosen is not None:
        import signal

        signal.signal(signal.SIGTERM, chosen)
    _ahead = ahead
    return True


def _sigterm_handler_chosen():
    """The SIGTERM handler that someone chose before Ray's start, for Ray's start to leave in place, or
    None. ``ray.init`` in the main thread replaces it with ``sys.exit(15)``; that would turn Prefect's
    cancellation of a deployment run (its handler raises ``TerminationSignal``, and the run ends
    Cancelled) into a crash, and the CLI's :class:`batch_classify.errors.Terminated` (exit 143 with one
    line) into exit code 15. Where SIGTERM still has its default, Ray's handler stays (an exit that runs
    the exit handlers beats none)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    current = signal.getsignal(signal.SIGTERM)
    return current if callable(current) else None


def stop_ray(*, wait: bool = True) -> None:
    """``ray.shutdown()``; with ``wait=False`` in a background (non-daemon) thread, so that what follows
    the stage (the commit, the report) does not wait for it: Ray stops its processes one after another,
    up to 1 s each, 1.4 s in all on the 2-core development machine (cProfile of ``ray.shutdown``).
    The next :func:`start_ray` waits for it; so does the interpreter at exit.
    """
    global _stopping

    if wait:
        _shutdown()
        return
    _stopping = threading.Thread(target=_shutdown, name="ray-shutdown")
    _stopping.start()


def _shutdown() -> None:
    """``ray.shutdown()`` with no object reference left to die during it, then let the thread that
    started this Ray end (:func:`start_ray_in_thread`).

    An ``ObjectRef`` freed while ``ray.shutdown`` runs (after it shut the C++ core worker down, before it
    dropped the Python one) ends the whole process at once with exit status 1 and no word: its
    ``__dealloc__`` calls ``CoreWorkerProcess::GetCoreWorker()``, which calls ``QuickExit()`` (ray
    2.60; stack caught with ``strace -f -k -e trace=exit_group``). The stage's finished Ray Data
    pipeline leaves such references in reference cycles, and a run whose report started while Ray was
    shutting down in the background died when the report's garbage collection freed them: 6 of 38
    runs of the CLI over 16 photos on S3 (``benchmarks/s3_run_loop.py``). So the cycles are collected
    first, while the core worker is alive, and the collector is off until Ray is down (what becomes
    garbage meanwhile waits about a second).
    """
    import gc

    import ray

    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        ray.shutdown()
    finally:
        if was_enabled:
            gc.enable()
        _owner_release.set()


def stop_ray_ahead() -> None:
    """Stop a Ray started ahead (:func:`start_ray` with ``ahead=True``, or :func:`start_ray_in_thread`)
    that no stage adopted (the run failed before its stage), once its start has ended. A stage's own
    :func:`stop_ray` in progress goes on; the interpreter waits for it at exit."""
    global _ahead
    if _owner is None and not _ahead:  # none was started ahead: Ray need not even be imported
        return
    import ray

    _wait_for_start_in_thread()
    if _ahead and ray.is_initialized():
        _shutdown()
    _ahead = False


def _wait_for_start_in_thread() -> None:
    """From any thread but its own: wait until :func:`start_ray_in_thread`'s start has ended, if there is one."""
    if _owner is not None and threading.current_thread() is not _owner:
        _owner_started.wait()


def _unless(unless: Callable[[], bool]) -> bool:
    """``unless()``; True where it raises (logged at debug level): no Ray is started ahead, the stage
    starts one if it needs one (a wrong guess costs time, not results)."""
    try:
        return bool(unless())
    except Exception as err:  # noqa: BLE001 - the stage starts Ray itself and reports why not
        logging.getLogger(__name__).debug("Ray did not start ahead of the stage: %s: %s", type(err).__name__, err)
        return True


def start_ray_in_thread(num_cpus: int | None, *, verbose: bool, then: Callable[[], None] | None = None,
                        metrics: bool = False, unless: Callable[[], bool] | None = None) -> threading.Thread:
    """Start a local Ray ahead of its stage (:func:`start_ray` with ``ahead=True``), then call ``then``,
    in a daemon thread; return the thread, started. ``unless`` is called first, in that thread: when it
    returns True, no Ray is started (the stage starts one if it needs one). The stage's :func:`start_ray` waits for that start
    and adopts its Ray; the thread lives on until Ray is shut down (:func:`stop_ray`, :func:`stop_ray_ahead`).

    Why a thread that lives: ``ray.init`` starts Ray's GCS, raylet and daemons with ``PR_SET_PDEATHSIG``
    (ray 2.60, ``services.start_ray_process`` with kernel fate sharing), and Linux sends that signal
    when the *thread* that started them ends. Started from a thread that then ended, they were killed
    and the stage failed with "Failed to connect to GCS". Why a thread at all: ``ray.init`` mostly
    waits (on its dashboard process, its raylet's object store and agents: 3.9 s on an idle 2-core
    development machine, 5.9 s during the rest of the start-up), and in this process's main thread the
    flow could not start meanwhile, although its first two steps do not use Ray.

    ``ray.init`` sets ``sys.exit`` as the SIGTERM handler only from the main thread; this function sets
    the same in the calling thread (it must be the main thread) where SIGTERM still has its default,
    so that a terminated run still ends through its exit handlers, and drops Ray's warning about it
    (:data:`SIGTERM_NOT_SET`).

    A failed start is logged at debug level and left to the stage, whose own :func:`start_ray`
    starts Ray again and reports why not.
    """
    global _owner, _owner_started, _owner_release
    import signal
    import sys

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
    started, release = threading.Event(), threading.Event()

    def own() -> None:
        if unless is not None and _unless(unless):  # before importing Ray: 0.4-0.6 s of this process's CPU
            started.set()
            return
        import ray

        warnings = logging.getLogger("ray._private.worker")

        def drop(record: logging.LogRecord) -> bool:
            return SIGTERM_NOT_SET not in record.getMessage()

        warnings.addFilter(drop)
        try:
            start_ray(None, num_cpus=num_cpus, verbose=verbose, ahead=True, metrics=metrics)
            if then is not None:
                then()
        except Exception as err:  # noqa: BLE001 - the stage starts Ray again and reports why not
            logging.getLogger(__name__).debug("Ray did not start ahead of the stage: %s: %s", type(err).__name__, err)
        finally:
            warnings.removeFilter(drop)
            started.set()
        if ray.is_initialized():
            release.wait()

    _owner_started, _owner_release = started, release
    _owner = threading.Thread(target=own, name="ray-owner", daemon=True)
    _owner.start()
    return _owner
