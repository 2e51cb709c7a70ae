"""What Ray prints, and what of Ray Data's log reaches the run's own log.

Two concerns, both owned here so that no other module tunes Ray's logging:

- **The terminal.** By default (``RunSettings.verbose`` off) Ray keeps its own output off the
  terminal: :func:`ray_init_kwargs` gives ``ray.init`` Ray's documented switches
  (``log_to_driver=False``: the workers' stdout and stderr stay in their log files;
  ``logging_level=ERROR`` for the ``ray`` logger), :func:`quiet_ray_core` sets Ray's documented
  ``RAY_BACKEND_LOG_LEVEL`` while ``ray.init`` starts the driver's core worker (see there: the
  ``core_worker.cc`` line about actor constructor arguments), and :func:`stage_logging` turns Ray
  Data's progress bars off (``DataContext.enable_progress_bars``) and mutes the console handler Ray
  Data puts on its ``ray.data`` logger. Ray's log files under the session folder keep everything.
  ``verbose`` on leaves every one of Ray's defaults as they are.
- **The run's log.** :func:`stage_logging` forwards, for the duration of the stage, Ray Data's
  warnings and errors and its few summary lines (execution start with the folder of its full log,
  the plan, the end) to a :class:`logging.Logger` the caller passes (under Prefect: the task run's
  logger), and :class:`StageProgress` adds a line every :data:`PROGRESS_EVERY` seconds: images done
  of the total, and images per second.

No Prefect here: this module travels in a Ray Job like the rest of the library.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Union

from batch_classify.stage.core_notes import without_core_notes

#: What a caller may pass as the stage's log: a logger, or an adapter such as Prefect's run logger.
LoggerLike = Union[logging.Logger, logging.LoggerAdapter]

#: Seconds between two progress lines in the run's log: a line per 10 s keeps a ten-minute stage
#: at about 60 lines, while Ray Data's own progress log writes about 10 lines every 5 s.
PROGRESS_EVERY = 10.0

#: Ray Data's logger (``ray/data/_internal/logging.py`` configures it with a file and a console handler).
RAY_DATA_LOGGER = "ray.data"
#: The name Ray Data gives its console handler (``DEFAULT_CONFIG["handlers"]["console"]``).
RAY_DATA_CONSOLE = "console"
#: Ray Data's logger whose INFO lines are the summary: execution start (with the folder of Ray Data's
#: full log), the execution plan, the end with its wall time (``streaming_executor.py``).
RAY_DATA_SUMMARY_LOGGER = "ray.data._internal.execution.streaming_executor"
#: Ray Data's notes about its own progress display, which :func:`stage_logging` turns off on purpose
#: ("Progress bars disabled. To enable, …"): not forwarded below ERROR.
RAY_DATA_PROGRESS_LOGGER = "ray.data._internal.progress"
#: Ray's documented level of its C++ components' log (``debug``, ``info``, ``warning``, ``error``, ``fatal``).
BACKEND_LOG_LEVEL = "RAY_BACKEND_LOG_LEVEL"


def ray_init_kwargs(verbose: bool) -> dict:
    """Keyword arguments of ``ray.init`` for this run's terminal.

    Returns:
        ``include_dashboard=False`` and, quiet, ``log_to_driver=False`` with ``logging_level=ERROR``;
        verbose, ``log_to_driver=True`` with ``logging_level=INFO`` (the ``ray.init`` banner, its
        warnings, and every worker's output prefixed with its pid). ``configure_logging=True`` either
        way: Ray sets up its ``ray`` logger's handler at that level.
    """
    return {
        "include_dashboard": False,
        "log_to_driver": verbose,
        "logging_level": logging.INFO if verbose else logging.ERROR,
        "configure_logging": True,
    }


@contextlib.contextmanager
def quiet_ray_core(verbose: bool) -> Iterator[None]:
    """Around ``ray.init``: unless ``verbose`` (or the user set it), Ray's C++ core logs at ``fatal`` only,
    and the one line it writes about that setting is dropped (:func:`batch_classify.stage.core_notes.without_core_notes`).

    Why: on every successful stage the driver's core worker writes an ``E … core_worker.cc`` line,
    "Actor … has constructor arguments in the object store and max_restarts > 0", to the terminal.
    Its cause is Ray Data's, not this project's: the actor pool operator ``ray.put``s its map
    transformer and its DataContext and passes the references to every model actor it starts, and it
    sets ``max_restarts=-1`` so that a crashed actor is restarted (ray 2.60,
    ``actor_pool_map_operator.py``); Ray core warns about any such actor (ray-project/ray#53727: a
    restart fails if those objects were lost). The operator holds both references until the stage
    ends, so the restart it warns about works here; turning restarts off (``max_restarts=0``) to
    silence it would lose the fault tolerance. Ray's C++ logger writes ERROR lines to stderr as well
    as to its file, and its only documented switch is the level, read from ``RAY_BACKEND_LOG_LEVEL``
    when a process starts its core: so it is set for the processes ``ray.init`` starts (the driver's
    core worker, and for a local Ray its raylet and workers) and restored afterwards. Reading it, the
    core writes "logging.cc: Set ray log level from environment variable …" at INFO before the level
    takes effect (``RayLog::StartRayLog``), straight to file descriptor 2: that line is the one
    :func:`batch_classify.stage.core_notes.without_core_notes` drops.
    """
    if verbose or BACKEND_LOG_LEVEL in os.environ:
        yield
        return
    os.environ[BACKEND_LOG_LEVEL] = "fatal"
    try:
        with without_core_notes():
            yield
    finally:
        os.environ.pop(BACKEND_LOG_LEVEL, None)


#: The Jobs API client's loggers: it says "WebSocket closed for job … with close code 1000" at INFO each
#: time a job's log stream ends as it should (``ray/dashboard/modules/job/sdk.py``), and "Uploading
#: package gcs://…" and "Creating a file package for local module …" at INFO on every submission
#: (``dashboard_sdk.py``, ``_private/runtime_env/packaging.py``).
JOB_CLIENT_LOGGERS = (
    "ray.dashboard.modules.job.sdk",
    "ray.dashboard.modules.dashboard_sdk",
    "ray._private.runtime_env.packaging",
)


@contextlib.contextmanager
def quiet_job_client(verbose: bool) -> Iterator[None]:
    """While a Ray Job is submitted and followed: unless ``verbose``, the Jobs API client logs warnings
    and errors only."""
    loggers = [logging.getLogger(name) for name in JOB_CLIENT_LOGGERS]
    levels = [logger.level for logger in loggers]
    if not verbose:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


#: A line of a Ray Job's log that Ray itself wrote below WARNING: its Python loggers' format
#: (``2026-12-07 04:41:58,829\tINFO job_manager.py:581 -- Runtime env is setting up.``) or its C++
#: core's (``[2026-12-07 04:42:00,406 I 5389 5389] logging.cc:303: …``). The job's own lines
#: (``… INFO batch_classify.run.stage_job: …``) have another shape.
RAY_JOB_NOTE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(DEBUG|INFO)\s+\S+\.py:\d+ -- "
    r"|\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [TDI] \d+ \d+\] \S+\.cc:\d+: )"
)


def job_log_echo(echo: Callable[[str], None], verbose: bool) -> Callable[[str], None]:
    """``echo`` for a Ray Job's log lines as they are followed: unless ``verbose``, without Ray's own
    notes below WARNING (:data:`RAY_JOB_NOTE`); the whole log stays in Ray (``ray job logs ID``)."""
    if verbose:
        return echo

    def without_notes(line: str) -> None:
        if not RAY_JOB_NOTE.match(line):
            echo(line)

    return without_notes


class _Forward(logging.Handler):
    """Hands Ray Data's warnings and summary lines to ``logger``, prefixed ``ray data:``."""

    def __init__(self, logger: LoggerLike) -> None:
        super().__init__(level=logging.INFO)
        self.logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if record.name.startswith(RAY_DATA_PROGRESS_LOGGER):
            return False
        if record.levelno >= logging.WARNING:
            return True
        return record.name == RAY_DATA_SUMMARY_LOGGER and bool(record.getMessage().strip())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.logger.log(record.levelno, "ray data: %s", record.getMessage())
        except Exception:  # noqa: BLE001 - a log line must never fail the stage
            self.handleError(record)


class StageProgress:
    """A progress line in ``logger`` at most every ``every`` seconds, and one at the end.

    Args:
        logger: where the lines go (INFO).
        total: images the stage classifies.
        every: seconds between two lines.
        label: the lines' first words: ``"ray data"`` for the Ray Data stage, ``"local stage"`` for the
            stage in the driver's process (:mod:`batch_classify.stage.local`).

    Lines read ``ray data progress: 640 of 1000 images, 41.2 images/s`` (images/s since the stage
    started, actor start-up included).
    """

    def __init__(self, logger: LoggerLike, *, total: int, every: float = PROGRESS_EVERY, label: str = "ray data") -> None:
        self.logger, self.total, self.every, self.label = logger, total, every, label
        self.done = 0
        self._start = self._last = time.monotonic()

    def update(self, done: int) -> None:
        """``done``: images out of the stage so far (predicted or failed)."""
        self.done = done
        now = time.monotonic()
        if now - self._last >= self.every and done < self.total:
            self._last = now
            self._line(now)

    def finish(self) -> None:
        """The last line: every image counted, and the stage's mean rate."""
        self._line(time.monotonic())

    def _line(self, now: float) -> None:
        elapsed = now - self._start
        rate = f"{self.done / elapsed:.1f}" if elapsed > 0 else "-"
        self.logger.info("%s progress: %d of %d images, %s images/s", self.label, self.done, self.total, rate)


@contextlib.contextmanager
def stage_logging(logger: LoggerLike, *, total: int, verbose: bool = False,
                  every: float = PROGRESS_EVERY) -> Iterator[StageProgress]:
    """For the duration of a Ray Data stage in this (driver) process: forward Ray Data's warnings
    and summary to ``logger``, and, unless ``verbose``, keep Ray Data's console output and progress
    bars off the terminal. Everything is restored on exit.

    Yields:
        the :class:`StageProgress` to update with each output batch (its ``finish`` is the caller's,
        once the stage has produced every row).
    """
    from ray.data import DataContext

    ray_data = logging.getLogger(RAY_DATA_LOGGER)
    forward = _Forward(logger)
    context = DataContext.get_current()
    bars = context.enable_progress_bars
    muted = []
    if not verbose:
        context.enable_progress_bars = False
        for handler in ray_data.handlers:
            if handler.get_name() == RAY_DATA_CONSOLE:
                muted.append((handler, handler.level))
                handler.setLevel(logging.CRITICAL + 1)
    ray_data.addHandler(forward)
    try:
        yield StageProgress(logger, total=total, every=every)
    finally:
        ray_data.removeHandler(forward)
        for handler, level in muted:
            handler.setLevel(level)
        context.enable_progress_bars = bars

