"""Ray's C++ notes on file descriptor 2, kept off the terminal while ``ray.init`` runs.

Ray's C++ core writes its log lines straight to file descriptor 2, below Python's ``sys.stderr`` and
its logging: no logger level or handler reaches them. :func:`without_core_notes` routes that
descriptor through a pipe for a moment and drops the core's lines below ERROR; everything else passes
in order. :func:`stderr_is_terminal` answers for the real stderr meanwhile. Used by
:func:`batch_classify.stage.ray_logs.quiet_ray_core` around ``ray.init`` (see there for which line and why).
No Prefect, no Ray import: plain file descriptors.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator


#: A line of Ray's C++ log below ERROR, as its stderr sink writes it: ``[2026-12-07 03:44:07,406 I 5389
#: 5389] logging.cc:303: …`` (spdlog pattern ``[%Y-%m-%d %H:%M:%S,%e %L %P %t]``; L is T, D, I or W).
CORE_NOTE = re.compile(rb"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [TDIW] \d+ \d+\] \S+\.cc:\d+: ")


@contextlib.contextmanager
def without_core_notes() -> Iterator[None]:
    """While it lasts, what this process writes to file descriptor 2 goes through a pipe to the real
    stderr, line by line, less Ray's C++ lines below ERROR (:data:`CORE_NOTE`); errors and everything
    else (Python's own stderr, Prefect's console lines from other threads) pass in order.

    Only around ``ray.init``: the processes it starts write to their own log files, so none keeps the
    pipe (checked: the pipe reaches its end once this process lets go of it). Where file descriptor 2
    cannot be redirected (no such descriptor), nothing is filtered.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    read_end, write_end = os.pipe()

    def pump() -> None:
        # Bytes pass as they come (a progress bar's "\r" updates too), except a line that starts with
        # "[": held until its end, then dropped if it is a core note.
        with os.fdopen(read_end, "rb", buffering=0) as pipe, os.fdopen(os.dup(saved), "wb", buffering=0) as real:
            held, at_line_start = b"", True
            while chunk := pipe.read(65536):
                out = b""
                for piece in chunk.splitlines(keepends=True):
                    if held or (at_line_start and piece.startswith(b"[")):
                        held += piece
                        if held.endswith(b"\n"):
                            out += b"" if CORE_NOTE.match(held) else held
                            held = b""
                    else:
                        out += piece
                    at_line_start = piece.endswith(b"\n")
                if out:
                    real.write(out)
            if held and not CORE_NOTE.match(held):
                real.write(held)

    global _terminal
    pumping = threading.Thread(target=pump, name="ray-core-notes", daemon=True)
    pumping.start()
    _terminal = os.isatty(saved)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
        _terminal = None
        pumping.join(timeout=5)  # the pipe ends once no process holds its write end


#: Whether file descriptor 2 was a terminal before :func:`without_core_notes` put a pipe there; None
#: when it did not.
_terminal: bool | None = None


def stderr_is_terminal() -> bool:
    """Whether this process's stderr is a terminal, also while ``ray.init`` runs with its lines filtered
    (:func:`quiet_ray_core`): a progress bar drawn then still reaches the terminal, as it is."""
    if _terminal is not None:
        return _terminal
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
