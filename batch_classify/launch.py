"""The ``batch-classify`` console script (and ``python -m batch_classify``): its first moments.

Importing the command line (:mod:`batch_classify.cli`: Typer, Rich, pydantic-settings, pyarrow) and
parsing the arguments take about 0.9 s on one core of the 2-core development machine, with the other
core idle. For ``run`` this module first starts what does not depend on them, the watchdog and then
Prefect's temporary API (:func:`batch_classify.startup.temporary_api`), so that the server, the
slowest part of a short run's start-up, gets that idle core; ``cli.run_flow`` then uses the same
server. Every other command goes straight to the command line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def runs_flow(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (the arguments after the program's name) asks for a run on a temporary API: the
    ``run`` command (its first argument that is not an option), no ``--help``, no ``PREFECT_API_URL``."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    return command == "run" and "--help" not in argv and not os.environ.get("PREFECT_API_URL")


def entry() -> None:
    """Start the watchdog and the temporary API early where :func:`runs_flow`, then
    :func:`batch_classify.cli.entry` (which never returns)."""
    if runs_flow(sys.argv[1:]):
        from batch_classify.startup import guarded_temporary_api

        guarded_temporary_api()
    from batch_classify.cli import entry as cli_entry

    cli_entry()
