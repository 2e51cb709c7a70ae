"""A watchdog that takes the CLI's children with it when the CLI dies.

Why: ``batch-classify run`` (and ``serve``) start processes that outlive a CLI killed
with ``kill -9`` (or by the OOM killer, or a default-handled SIGTERM/SIGHUP, none of
which runs Python's ``atexit``): Prefect's temporary API server (a uvicorn subprocess,
about 200 MB) and Ray's dashboard and runtime-env agents (about 230 MB) kept running,
measured on this project's CI machine. A SIGKILL cannot be caught, so another process
has to act: :func:`start` launches ``python -m batch_classify.cli.watchdog`` beside the CLI.

How it works (Linux; on other platforms :func:`start` does nothing):

* The CLI keeps the write end of a pipe whose read end is the watchdog's stdin; only
  the CLI holds it (Python's pipes are close-on-exec), so its death reaches the
  watchdog at once as end-of-file. The watchdog also polls the CLI's liveness (pid and
  start time, a zombie counting as dead) in case a fork of the CLI holds the pipe.
* Every :data:`SNAPSHOT_INTERVAL` seconds it records the CLI's descendants
  (``psutil`` ``children(recursive=True)``), each by pid and start time, so that a
  process re-parented to init when the CLI dies, or one that moved to its own session
  (as Ray's daemons may), is still known, and a reused pid is never mistaken for it.
* The CLI also puts a token unique to this run in its environment (:data:`MARK`), which
  every process it starts inherits, directly or through Ray's raylet (the way Jenkins
  finds a build's processes). Ray's raylet dies with the CLI (Ray sets a parent-death
  signal) and a worker it started a moment before, not yet in a snapshot, is re-parented
  to init at once; the token still names it.
* When the CLI is gone it stops every recorded process still alive, their current
  descendants, and every process of this user carrying the token that started after the
  CLI: SIGTERM, then SIGKILL to those alive after :data:`GRACE` seconds. It never signals
  a process that did not descend from the CLI, so a Ray cluster given with
  ``--ray-address`` (Ray does not pass a driver's environment to its workers) or a
  Prefect server the user runs is left alone, and neither is another batch-classify run.
* On a normal exit (including an error exit or Ctrl-C) the CLI's ``atexit`` handler
  sends a goodbye, the watchdog stops whatever is still left (normally nothing: Ray and
  Prefect shut their processes down at exit) without a word and exits, and the CLI waits
  for it, so no watchdog outlives the command.

Limits: a process that cleared its environment and left its parent less than one
snapshot interval before the CLI died cannot be attributed to the CLI. The watchdog runs in its own session so that Ctrl-C or a signal to the CLI's process group
does not end it before it has done its work.

This module has no Prefect import: ``batch_classify`` travels in Ray Jobs.
"""

from __future__ import annotations

import atexit
import os
import secrets
import select
import subprocess
import sys
import time

#: Seconds between two snapshots of the CLI's descendants (and two liveness checks of the CLI).
#: Half a second costs one scan of /proc (a few milliseconds) per interval and records every
#: long-lived process the CLI starts; Ray's and Prefect's daemons live for minutes.
SNAPSHOT_INTERVAL = 0.5
#: Seconds a SIGTERM'd process gets before SIGKILL. Measured here (tests/integration/test_orphans.py): Prefect's
#: uvicorn server and Ray's daemons, dashboard agent and workers exit within half a second of SIGTERM;
#: Ray's runtime-env agent was still running 4.5 s after SIGTERM and is SIGKILLed, so everything is
#: gone about 5.5 s after the CLI dies. Shorter would cut a slower graceful shutdown short.
GRACE = 5.0
#: Seconds the exiting CLI waits for the watchdog's last sweep: two rounds of SIGTERM + SIGKILL
#: with :data:`GRACE` each, plus interpreter start-up slack.
EXIT_WAIT = 4 * GRACE
#: The environment variable whose value (``PID-RANDOM``, unique to one CLI process) marks the
#: processes a CLI started. Not under ``BATCH_CLASSIFY_``, the prefix of the settings' variables.
MARK = "_BATCH_CLASSIFY_WATCHDOG_TOKEN"
#: What the CLI writes to the pipe on a normal exit (any bytes would do; EOF alone means death).
GOODBYE = b"bye\n"

_started: "Watchdog | None" = None


class Watchdog:
    """The CLI's handle on its running watchdog process.

    Attributes:
        process: the watchdog's :class:`subprocess.Popen`.
    """

    def __init__(self, process: subprocess.Popen, write_fd: int) -> None:
        self.process = process
        self._write_fd: int | None = write_fd

    @property
    def pid(self) -> int:
        """The watchdog's process id."""
        return self.process.pid

    def close(self, timeout: float = EXIT_WAIT) -> None:
        """Say goodbye (a normal exit), close the pipe and wait for the watchdog's last sweep.

        Args:
            timeout: seconds to wait for the watchdog to exit; it is left running after that
                (it exits by itself once its sweep is done). Never raises.
        """
        if self._write_fd is None:
            return
        fd, self._write_fd = self._write_fd, None
        try:
            os.write(fd, GOODBYE)
        except OSError:
            pass  # the watchdog is gone already
        os.close(fd)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


def start() -> Watchdog | None:
    """Start the watchdog of this process (the CLI), once per process.

    Call it before starting anything that must not outlive the CLI (a local Ray, Prefect's
    temporary API server). A second call returns the first watchdog.

    Returns:
        The :class:`Watchdog`, or None on a platform other than Linux (nothing is started)
        or when the watchdog process could not be started (the CLI then runs unguarded
        rather than fail; the reason is printed to stderr in one line).
    """
    global _started
    if _started is not None:
        return _started
    if not sys.platform.startswith("linux"):
        return None
    token = f"{os.getpid()}-{secrets.token_hex(8)}"
    read_fd, write_fd = os.pipe()  # both close-on-exec: no other child of the CLI inherits them
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "batch_classify.cli.watchdog", str(os.getpid()), token],
            stdin=read_fd,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C and signals to the CLI's process group do not reach it
        )
    except OSError as exc:
        os.close(write_fd)
        print(f"batch-classify: warning: the watchdog did not start ({exc}); "
              "processes this command starts may outlive it if it is killed", file=sys.stderr)
        return None
    finally:
        os.close(read_fd)
    os.environ[MARK] = token  # inherited by everything the CLI starts from now on
    _started = Watchdog(process, write_fd)
    atexit.register(_started.close)
    return _started


# ---- the watchdog process ------------------------------------------------------------------


def _alive(proc) -> bool:
    """Whether ``proc`` (a psutil.Process) still runs: same pid and start time, not a zombie."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _record(parent, known: dict) -> None:
    """Add ``parent``'s current descendants (but not this watchdog) to ``known``, keyed by (pid, start time)."""
    import psutil

    try:
        children = parent.children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        if child.pid == os.getpid():
            continue
        try:
            known.setdefault((child.pid, child.create_time()), child)
        except psutil.Error:
            pass


def _label(proc) -> str:
    """A short name for a process: its name, or for a Python interpreter the module or script it runs."""
    import psutil

    try:
        name = proc.name()
        if not name.startswith("python"):
            return name
        args = proc.cmdline()[1:]
    except psutil.Error:
        return "?"
    for i, arg in enumerate(args):
        if arg == "-m" and i + 1 < len(args):
            return args[i + 1]
        if arg == "-c":
            return f"{name} -c"
        if not arg.startswith("-"):
            return os.path.basename(arg)
    return name


def _marked(token: str, since: float, into: dict) -> None:
    """Add this user's processes whose environment holds ``MARK=token`` and that started at or after
    ``since`` (seconds since the epoch, the CLI's start) to ``into``."""
    import psutil

    uid = os.getuid()
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.uids().real != uid or proc.create_time() < since:
                continue
            if proc.environ().get(MARK) == token:
                into.setdefault((proc.pid, proc.create_time()), proc)
        except psutil.Error:
            pass


def stop_processes(known: dict, grace: float = GRACE, rounds: int = 2, token: str | None = None,
                   since: float = 0.0) -> list[str]:
    """Stop the recorded processes that still run, their descendants, and the processes carrying
    ``token``: SIGTERM, then SIGKILL.

    Args:
        known: psutil.Process objects keyed by (pid, start time), as recorded by the watchdog.
        grace: seconds between SIGTERM and SIGKILL.
        rounds: how many times to look again for processes started meanwhile.
        token: the CLI's :data:`MARK` value; None looks for no marked process.
        since: the CLI's start (seconds since the epoch); a marked process older than it is not its descendant.

    Returns:
        The names of the processes signalled (empty when none was left). Never raises.
    """
    import psutil

    stopped: list[str] = []
    for _ in range(rounds):
        targets: dict[tuple[int, float], psutil.Process] = {}
        if token:
            _marked(token, since, known)
        for proc in list(known.values()):
            if _alive(proc):
                targets.setdefault((proc.pid, proc.create_time()), proc)
                _record(proc, targets)
        targets = {k: p for k, p in targets.items() if p.pid != os.getpid() and _alive(p)}
        if not targets:
            break
        known.update(targets)
        procs = list(targets.values())
        for proc in procs:
            try:
                stopped.append(_label(proc))
                proc.terminate()  # psutil checks the start time first: a reused pid is never signalled
            except psutil.Error:
                pass
        survivors = _wait_gone(procs, grace)
        for proc in survivors:
            try:
                proc.kill()
            except psutil.Error:
                pass
        _wait_gone(survivors, grace)
    return stopped


def _wait_gone(procs: list, timeout: float) -> list:
    """Wait up to ``timeout`` seconds for ``procs`` to exit; returns those still running.

    A zombie counts as gone: a child of the exiting CLI stays one until the CLI is reaped, which
    ``psutil.wait_procs`` would wait for.
    """
    deadline = time.monotonic() + timeout
    while (alive := [p for p in procs if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def watch(parent_pid: int, token: str | None = None, fd: int = 0, interval: float = SNAPSHOT_INTERVAL,
          grace: float = GRACE) -> int:
    """The watchdog's loop: record ``parent_pid``'s descendants until it exits or dies, then stop them.

    Args:
        parent_pid: the CLI's process id.
        token: the CLI's :data:`MARK` value.
        fd: the read end of the CLI's pipe (stdin).
        interval: seconds between snapshots.
        grace: seconds between SIGTERM and SIGKILL.

    Returns:
        The exit status: 0. A parent that died (no goodbye) and left processes behind is
        reported in one line on stderr, naming what was stopped.
    """
    import psutil

    try:
        parent = psutil.Process(parent_pid)
        since = parent.create_time()
    except psutil.Error:
        return 0
    if os.getppid() != parent_pid:  # the CLI died before the watchdog started: nothing was recorded
        return 0
    known: dict = {}
    goodbye = False
    while True:
        _record(parent, known)
        ready, _, _ = select.select([fd], [], [], interval)
        if ready:
            try:
                data = os.read(fd, 64)
            except OSError:
                data = b""
            goodbye = bool(data)
            break  # a goodbye or end-of-file: the CLI is exiting or dead
        if not _alive(parent):
            break
    stopped = stop_processes(known, grace, token=token, since=since)
    if stopped and not goodbye:
        names = ", ".join(sorted(set(stopped)))
        try:
            print(f"batch-classify: the command (pid {parent_pid}) died; stopped {len(stopped)} processes "
                  f"it had started: {names}", file=sys.stderr, flush=True)
        except OSError:
            pass
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m batch_classify.cli.watchdog PARENT_PID TOKEN``, with the CLI's pipe as stdin."""
    import signal

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[0].isdigit():
        print("usage: python -m batch_classify.cli.watchdog PARENT_PID TOKEN (started by the batch-classify CLI)", file=sys.stderr)
        return 2
    # A terminal's Ctrl-C or hang-up ends the CLI; the watchdog must outlive it to clean up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return watch(int(args[0]), args[1])


if __name__ == "__main__":
    sys.exit(main())
