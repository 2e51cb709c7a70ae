"""A stage that the cluster can no longer hold stops, instead of waiting forever.

The stage's plan (:mod:`batch_classify.stage.plan`) is sized to the cluster it starts on: model actors that
reserve CPUs or GPUs, and room beside them for one decoding task. When a node is lost, Ray retries its
tasks and restarts its actors elsewhere, which is enough while what is left still holds the plan. When
it does not (a two-node cluster down to one, the model actor restarted on the last CPU), the decoding
tasks wait for a CPU the model actor holds, the actor waits for decoded images, and nothing moves again
unless an autoscaler brings a node back: measured on a two-node loopback cluster (one CPU each), the
Ray Job of a stage whose worker node was killed showed no progress for 14 minutes, two decoding tasks
``PENDING_NODE_ASSIGNMENT`` and the actor's next batch ``PENDING_ACTOR_TASK_ARGS_FETCH``.

:class:`CapacityWatch` watches a stage's loop over its output batches and, while none comes, looks at
the cluster's resources (:meth:`batch_classify.stage.plan.ClusterPlan.shortfall`); once the plan no longer
fits and no batch has come for ``wait`` seconds, it stops the loop with :class:`CapacityLost`. The
batches handed on so far stay staged, the Ray Job fails, and the infer task's retry submits a new one,
planned for the cluster as it is then, that resumes from the staged rows.

No Prefect here: this module travels in a Ray Job like the rest of the library.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import threading
import time
from collections.abc import Callable

from batch_classify.errors import BatchClassifyError

log = logging.getLogger(__name__)

#: The signal that wakes a main thread waiting inside Ray Data (see :class:`CapacityWatch`): SIGURG, whose
#: default action is to ignore it, and which nothing else in this job uses.
WAKE = signal.SIGURG

#: Seconds between two looks at the cluster's resources while no batch comes.
LOOK_EVERY = 5.0
#: Seconds without output, the plan no longer fitting, before the stage stops (``RunSettings.lost_capacity_wait``).
#: Two minutes: Ray notices a dead node within about 30 s (its health checks) and an autoscaler that
#: replaces it may take minutes more, while a retry costs a new job's start (about 15 s on the loopback
#: cluster); what was staged is kept either way.
DEFAULT_WAIT = 120.0


class CapacityLost(BatchClassifyError, RuntimeError):
    """The cluster no longer holds the stage's plan (a node was lost) and the stage made no progress for
    the wait. Not permanent: a retry plans for the cluster as it is then."""


class CapacityWatch:
    """Stop the stage that this thread runs once the cluster no longer holds its plan and no output
    came for ``wait`` seconds.

    Use as a context manager around the stage's loop over its output, calling :meth:`output_came`
    for each batch, and catch :class:`CapacityLost` outside it (then :attr:`reason` says why)::

        watch = CapacityWatch(short_of=..., wait=120)
        try:
            with watch:
                for batch in ds.iter_batches(...):
                    watch.output_came()
                    ...
        except CapacityLost:
            raise CapacityLost(watch.reason) from None

    A daemon thread looks every ``look_every`` seconds; once no output came for ``wait`` seconds it
    calls ``short_of`` (what the cluster lacks for the plan, or None), and when something is lacking
    it raises :class:`CapacityLost` in the thread that entered the watch, with CPython's
    ``PyThreadState_SetAsyncExc`` (as Prefect's own timeouts do, ``prefect._internal.concurrency``).
    That way the exception leaves through Ray Data's iterator, which stops its executor and cancels
    its tasks as it does for Ctrl-C; an iterator pulled from another thread instead was left running
    into Ray's shutdown, which then printed its errors on the terminal.

    Such an exception is raised when its thread next runs Python code, and a thread waiting on a lock
    (Ray Data's iterator waits on a queue) runs none. In the main thread, where the stage runs (the Ray
    Job's driver, and Prefect runs a flow's synchronous tasks there), the watch installs a handler that
    does nothing for :data:`WAKE` while it lasts and sends that signal to the thread: the wait ends
    with the signal, the handler runs, and the exception is raised. In another thread the stage stops
    when it next runs Python code, or by Ray Data's own guard (``execution_no_progress_timeout_s``,
    30 minutes by default). The exception is raised once; leaving the watch clears it if it is still
    pending.

    Attributes:
        reason: what the cluster lacked and for how long no output came; empty until the watch fires.
    """

    def __init__(self, *, short_of: Callable[[], str | None], wait: float, look_every: float = LOOK_EVERY) -> None:
        self.short_of, self.wait, self.look_every = short_of, wait, look_every
        self.reason = ""
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._target = 0
        self._fired = False
        self._previous = None  # WAKE's handler before the watch, where the watch set its own (the main thread)

    def output_came(self) -> None:
        """Note that an output batch came (the clock of ``wait`` starts again)."""
        self._last = time.monotonic()

    def __enter__(self) -> CapacityWatch:
        self._target = threading.get_ident()
        self._last = time.monotonic()
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(WAKE, _nothing)
        threading.Thread(target=self._look, name="capacity-watch", daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        with self._lock:
            self._done.set()
            if self._fired:  # raised already (and on its way out) or still pending: clear what is pending
                _raise_in(self._target, None)
        # Once fired, the handler stays: the signal sent may still be on its way (WAKE's default is to ignore it).
        if self._previous is not None and not self._fired:
            signal.signal(WAKE, self._previous)

    def _look(self) -> None:
        while not self._done.wait(self.look_every):
            quiet = time.monotonic() - self._last
            if quiet < self.wait:
                continue
            try:
                missing = self.short_of()
            except Exception as err:  # noqa: BLE001 - a look that failed is no reason to stop the stage
                log.debug("could not look at the cluster's resources: %s: %s", type(err).__name__, err)
                continue
            if not missing:
                continue
            with self._lock:
                if self._done.is_set():
                    return
                self.reason = (
                    f"{missing}, and no output came for {quiet:.0f} s (a node lost?); stopping the stage so that the "
                    "next attempt plans for the cluster as it is (what was staged is kept and reused)"
                )
                self._fired = True
                _raise_in(self._target, CapacityLost)
                if self._previous is not None:
                    signal.pthread_kill(self._target, WAKE)
            return


def _nothing(signum, frame) -> None:
    """:data:`WAKE`'s handler while a watch lasts: its running is what raises the pending exception."""


def _raise_in(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in the thread ``thread_id`` at its next bytecode; None clears one pending."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None)
