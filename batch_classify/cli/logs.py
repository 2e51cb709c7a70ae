"""The terminal's share of the logs: one line per record, tracebacks only with ``--debug``.

Prefect logs a failing task or flow with its traceback ("Task run failed with exception: …",
"Encountered exception during execution: …", ``exc_info=True``). Its ``api`` handler sends that
record, traceback included, to the flow run's log (the API, the UI); its console handler (a
``StreamHandler`` on the root logger, configured by Prefect's ``logging.yml``) prints it to the
terminal. :func:`hide_tracebacks` wraps the formatter of every terminal handler so that it
formats a copy of the record without ``exc_info``, ``exc_text`` and ``stack_info``: the terminal
gets the message line, every other handler the record as it was. No Prefect import: only the
standard library's ``logging``.
"""

from __future__ import annotations

import copy
import logging
import sys


class OneLineFormatter(logging.Formatter):
    """Formats a record as ``inner`` would, less its traceback and stack (a copy is formatted;
    the record the other handlers see keeps them)."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            record = copy.copy(record)
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return self.inner.format(record)


def _terminal_handlers() -> list[logging.Handler]:
    """Stream handlers writing to this process's stdout or stderr, on the root logger or any named logger."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    found: dict[int, logging.Handler] = {}
    for lg in loggers:
        for handler in lg.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                if getattr(handler, "stream", None) in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__):
                    found[id(handler)] = handler
    return list(found.values())


def hide_tracebacks() -> int:
    """Make every terminal log handler print records without their traceback (idempotent).

    Call it after Prefect has configured logging (``import prefect`` does). Handlers added later
    are not covered. File handlers and Prefect's API handler are left alone.

    Returns:
        The number of handlers wrapped by this call.
    """
    wrapped = 0
    for handler in _terminal_handlers():
        if not isinstance(handler.formatter, OneLineFormatter):
            handler.setFormatter(OneLineFormatter(handler.formatter))
            wrapped += 1
    return wrapped
