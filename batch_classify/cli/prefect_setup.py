"""The CLI's Prefect side: its defaults, its imports ahead of the flow, and a run on the temporary API.

Kept out of :mod:`batch_classify.cli.main` (the commands) and :mod:`batch_classify.cli.startup` (no Prefect
there); imports Prefect only inside its functions, so that ``batch-classify --help`` stays quick.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator

from batch_classify.cli.startup import TemporaryApi

#: Modules Prefect imports only when a flow is called (Prefect 3.8: the flow and task engines, the
#: flow-graph helpers, and FastAPI's encoder for the flow run's parameters): 0.2-0.3 s on the main
#: thread at the flow's start, measured with cProfile on the 2-core development machine.
PREFECT_CALL_MODULES = ("prefect.flow_engine", "prefect.task_engine", "prefect.utilities.visualization", "fastapi.encoders")


def prefect_defaults(debug: bool) -> None:
    """This process's Prefect defaults: no server analytics (the temporary API's telemetry heartbeat
    raced the flow for its SQLite file, "database is locked"; a user who sets the variable keeps their
    choice), and unless ``debug`` tracebacks off the terminal: Prefect logs a failing task or flow with
    its traceback, and the flow run's log in the API keeps it (:func:`batch_classify.cli.logs.hide_tracebacks`).
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not debug:
        from prefect.logging.configuration import ensure_logging_setup

        from batch_classify.cli.logs import hide_tracebacks

        ensure_logging_setup()  # Prefect's handlers exist from here on; its own later set-up is incremental
        hide_tracebacks()


def import_prefect(debug: bool) -> None:
    """:func:`prefect_defaults`, the flow's module and what calling a flow imports
    (:data:`PREFECT_CALL_MODULES`): about 2 s of imports, run in a thread at start-up."""
    prefect_defaults(debug)
    import batch_classify.flows.classify  # noqa: F401

    for name in PREFECT_CALL_MODULES:
        importlib.import_module(name)


@contextlib.contextmanager
def on_temporary_api(api: TemporaryApi) -> Iterator[None]:
    """Within: every Prefect client of this process (the flow's, the tasks', the log and event
    workers') talks to ``api`` once it answers, and flow runs send no heartbeats.

    Heartbeats let a server mark a run whose process died as crashed; this API dies with the process,
    so they serve nothing, and the flow's end waits for Prefect's heartbeat thread, which sleeps in
    steps of 1 s: 0.5 s of every run on average (Prefect 3.8, ``flow_engine._send_heartbeats``).

    Raises:
        RuntimeError: the API did not start (:meth:`TemporaryApi.wait_ready`).
    """
    from prefect.context import refresh_global_settings_context
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    api.wait_ready()
    os.environ["PREFECT_API_URL"] = api.api_url  # every thread's client reads the global settings
    # It serves no UI and ends with the run: no "View at <link>" line, as for Prefect's own.
    os.environ.setdefault("PREFECT_UI_URL", "")
    refresh_global_settings_context()
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
