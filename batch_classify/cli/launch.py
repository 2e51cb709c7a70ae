"""The ``batch-classify`` console script (and ``python -m batch_classify``): its first moments.

Importing the command line (:mod:`batch_classify.cli.main`: Typer, Rich, pydantic-settings, pyarrow) and
parsing the arguments take about 0.9 s on one core of the 2-core development machine, with the other
core idle. For ``run`` this module first starts what does not depend on them, the watchdog and then
Prefect's temporary API (:func:`batch_classify.cli.startup.temporary_api`), so that the server, the
slowest part of a short run's start-up, gets that idle core; ``cli.run_flow`` then uses the same
server. Every other command goes straight to the command line.

An input that is not there stops ``cli.run`` with one line once the arguments are parsed and
checked, before the Prefect API and Ray start (``listing.check_input``): so the API is started
early only for a local ``--input`` that is there (:func:`input_missing`); a missing one, or an
``s3://`` one (checked with the run's storage settings), waits for that check.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

#: The options of ``run`` that name its input, and the variable that does when they are absent.
INPUT_OPTIONS = ("--input", "-i")
INPUT_VARIABLE = "BATCH_CLASSIFY_INPUT"


def runs_flow(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (the arguments after the program's name) asks for a run on a temporary API: the
    ``run`` command (its first argument that is not an option), no ``--help``, no ``PREFECT_API_URL``."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    return command == "run" and "--help" not in argv and not os.environ.get("PREFECT_API_URL")


def given_input(argv: Sequence[str]) -> str | None:
    """The input ``run`` was given: the last ``--input X``, ``--input=X`` or ``-i X``, else
    ``$BATCH_CLASSIFY_INPUT``; None when neither (the command line then says it is missing)."""
    found = None
    for i, arg in enumerate(argv):
        if arg in INPUT_OPTIONS and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith("--input="):
            found = arg.split("=", 1)[1]
    return found if found is not None else os.environ.get(INPUT_VARIABLE)


def is_local(uri: str) -> bool:
    """Whether ``uri`` is a local path (no scheme, or ``file://``)."""
    return "://" not in uri or uri.lower().startswith("file://")


def input_missing(uri: str) -> str | None:
    """The one-line reason a local input cannot be listed (:func:`batch_classify.listing.check_input`),
    or None when it is there. Only for local paths: an S3 input needs the run's storage settings."""
    from batch_classify.listing import ListingError, check_input
    from batch_classify.storage import StorageOptions, absolute_uri

    try:
        check_input(absolute_uri(uri), StorageOptions())
    except ListingError as err:
        return f"{type(err).__name__}: {err}"
    return None


def entry() -> None:
    """Start the watchdog and the temporary API early where :func:`runs_flow` and the input is a local
    folder that is there; then :func:`batch_classify.cli.main.entry` (which never returns)."""
    argv = sys.argv[1:]
    if runs_flow(argv):
        uri = given_input(argv)
        if uri is not None and uri.strip() and is_local(uri) and input_missing(uri) is None:
            from batch_classify.cli.startup import guarded_temporary_api

            guarded_temporary_api()
    from batch_classify.cli.main import entry as cli_entry

    cli_entry()
