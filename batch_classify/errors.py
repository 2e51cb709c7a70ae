"""The product's errors: one base class, and one subclass for errors that a retry cannot fix.

Every error that batch-classify raises on purpose derives from :class:`BatchClassifyError`; its
message is one line that names the thing and says what to do (the CLI prints it as is). Those that
a retry cannot fix (bad input, a missing model, a run id another writer holds, a failure budget
spent) also derive from :class:`PermanentError`, and the Prefect tasks' retry predicate tests that
class alone (``batch_classify.tasks.transient``). Anything else (a network fault, throttling, a lost Ray node, a
Ray Job that failed, storage that stopped answering) may pass, so it is retried.

Each subclass also keeps the built-in base it had before (``ValueError`` for bad input), so code
that caught those still does.
"""

from __future__ import annotations


def named(items, most: int, *, sep: str = ", ") -> str:
    """The first ``most`` of ``items`` (strings) joined by ``sep``, then `` and N more`` for the rest:
    how a one-line message names a few of many (files, classes, entries)."""
    items = list(items)
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return sep.join(items[:most]) + more


class BatchClassifyError(Exception):
    """Base of every error batch-classify raises on purpose."""


class PermanentError(BatchClassifyError):
    """An error that a retry of the same step cannot fix: the input, the model, the labels or the
    run's state must change first. Prefect tasks do not retry it."""


class ConfigError(PermanentError, ValueError):
    """A setting that cannot work here: a runtime the model cannot run under, a GPU asked for on a
    cluster without one, a Ray Client address. The message says which setting to change."""


class RunRegressed(PermanentError):
    """The state data of a flow run that regressed against its baseline, with ``fail_on_regression``
    (the default): the run ends Failed-type, named "Regressed", after its predictions and report are
    committed. The message is the verdict's line and where the report is."""


class Terminated(KeyboardInterrupt):
    """SIGTERM in a ``batch-classify run`` (:func:`batch_classify.cli.interrupts.stop_on_signals`), raised in
    the main thread as an interrupt, so that Prefect records the flow run as interrupted and every
    ``finally`` (Ray's shutdown, the lease's release) runs, as for Ctrl-C."""

    signum = 15
