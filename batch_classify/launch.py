"""The ``batch-classify`` console script (and ``python -m batch_classify``): its first moments.

Importing the command line (:mod:`batch_classify.cli`: Typer, Rich, pydantic-settings, pyarrow) and
parsing the arguments take about 0.9 s on one core of the 2-core development machine, with the other
core idle. For ``run`` this module first starts what does not depend on them, the watchdog and then
Prefect's temporary API (:func:`batch_classify.startup.temporary_api`), so that the server, the
slowest part of a short run's start-up, gets that idle core; ``cli.run_flow`` then uses the same
server. Every other command goes straight to the command line.

Before anything starts, a local ``--input`` that is not there stops the command with one line
(:func:`input_missing`): a typo costs a moment, not a Prefect API's and Ray's start-up. An ``s3://``
input is checked by ``cli.run`` once its settings (anonymous access, the endpoint) are known, still
before the API and Ray start: for it, the API is not started early.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

#: The options of ``run`` that name its input, and the variable that does when they are absent.
INPUT_OPTIONS = ("--input", "-i")
INPUT_VARIABLE = "BATCH_CLASSIFY_INPUT"


def runs(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (the arguments after the program's name) asks for a run: the ``run`` command (its
    first argument that is not an option), no ``--help``."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    return command == "run" and "--help" not in argv


def runs_flow(argv: Sequence[str]) -> bool:
    """Whether ``argv`` asks for a run on a temporary API: :func:`runs`, and no ``PREFECT_API_URL``."""
    return runs(argv) and not os.environ.get("PREFECT_API_URL")


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
    """For ``run``: stop at once on a local input that is not there; start the watchdog and the
    temporary API early where :func:`runs_flow` and the input is local; then
    :func:`batch_classify.cli.entry` (which never returns)."""
    argv = sys.argv[1:]
    if runs(argv):
        uri = given_input(argv)
        local = uri is not None and uri.strip() != "" and is_local(uri)
        if local and (reason := input_missing(uri)):
            print(f"error: {reason}", file=sys.stderr)
            sys.exit(1)
        if local and runs_flow(argv):
            from batch_classify.startup import guarded_temporary_api

            guarded_temporary_api()
    from batch_classify.cli import entry as cli_entry

    cli_entry()
