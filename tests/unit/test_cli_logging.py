"""The terminal's log handlers print no traceback unless --debug (issue 14); the other handlers (Prefect's
API handler, a file) still get the record with its traceback. Real `logging` handlers and records."""

from __future__ import annotations

import logging
import sys

from batch_classify.cli.logs import hide_tracebacks


class _Kept(logging.Handler):
    """Stands where Prefect's API handler is: formats every record it gets, traceback included."""

    def __init__(self):
        super().__init__()
        self.texts: list[str] = []

    def emit(self, record):
        self.texts.append(self.format(record))


def test_the_terminal_loses_the_traceback_and_the_other_handlers_keep_it(capsys, tmp_path):
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setFormatter(logging.Formatter("%(levelname)s | %(message)s"))
    kept, to_file = _Kept(), logging.FileHandler(tmp_path / "log.txt")
    flow_runs, root = logging.getLogger("test_cli_logging.flow_runs"), logging.getLogger("test_cli_logging")
    flow_runs.addHandler(kept)
    root.addHandler(terminal)
    root.addHandler(to_file)
    try:
        assert hide_tracebacks() >= 1 and hide_tracebacks() == 0  # idempotent
        try:
            raise ValueError("weights not found")
        except ValueError:
            flow_runs.error("Encountered exception during execution: %r", ValueError("weights not found"), exc_info=True)
        flow_runs.error("stack too", stack_info=True)
        to_file.flush()
    finally:
        flow_runs.removeHandler(kept)
        root.removeHandler(terminal)
        root.removeHandler(to_file)
        to_file.close()
    printed = capsys.readouterr().err.splitlines()
    assert printed == ["ERROR | Encountered exception during execution: ValueError('weights not found')", "ERROR | stack too"]
    assert "Traceback (most recent call last)" in kept.texts[0] and "raise ValueError" in kept.texts[0]
    assert "Stack (most recent call last)" in kept.texts[1]
    assert "Traceback (most recent call last)" in (tmp_path / "log.txt").read_text()
