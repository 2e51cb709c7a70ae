"""Ctrl-C and SIGTERM stop a ``batch-classify run`` within seconds, the same way.

What a terminal's Ctrl-C does: SIGINT to every process of the foreground process group. Before, that
also reached Prefect's temporary API (a child in the same group), which died at once, while the
CLI's flow went on for minutes against an API that was gone. Now the temporary API runs in a session
of its own (``startup.TemporaryApi``) and the CLI stops it when the run has ended; Ray's local
processes, in the group, stop with the run either way (the CLI shuts Ray down; the watchdog stops
what is left).

In the CLI's main thread, :func:`stop_on_signals` makes SIGINT raise ``KeyboardInterrupt`` even where
the shell started the command with SIGINT ignored (a background job of a script), and SIGTERM raise
:class:`batch_classify.errors.Terminated` (a ``KeyboardInterrupt``): Prefect records the flow run as
crashed by an interrupt, the running stage is left (a Ray Job is stopped, a local Ray shut down),
the lease is released in its ``finally``, and the staged rows stay for a resume. The CLI then prints
:func:`interrupted_line` and exits :func:`exit_code` (128 + the signal's number: 130, 143).

This module has no Prefect import.
"""

from __future__ import annotations

import signal
import threading

from batch_classify.errors import Terminated

#: The shell's convention: a command ended by signal N exits 128 + N.
SIGNAL_EXIT_BASE = 128


def _terminate(signum, frame) -> None:
    raise Terminated()


def stop_on_signals() -> None:
    """In the main thread: SIGINT raises ``KeyboardInterrupt``, SIGTERM :class:`Terminated`. Elsewhere
    (a thread, as under some test runners) it does nothing: signals reach the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)


def exit_code(stop: KeyboardInterrupt) -> int:
    """130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return SIGNAL_EXIT_BASE + (stop.signum if isinstance(stop, Terminated) else signal.SIGINT.value)


def interrupted_line(run_id: str) -> str:
    """What the CLI prints when a run was stopped by a signal."""
    return f"interrupted; run again with --run-id {run_id} to resume"
