"""The run's history: the earlier committed full runs of the same input and model, and their headline
figures, for the report's trend (``report.json``'s ``history``, the page's trend picture, the
Prefect artifact's table).

The runs are found as the baseline is (:func:`batch_classify.run.reuse.committed_runs`: same output, same
input by :func:`batch_classify.storage.dataset_key`, same model name, a full listing, committed before
this run); their counts come from their ``_SUCCESS`` manifests and their scores from their own
``report.json`` (what each run reported the night it ran). A run with ``--table`` is committed in its
run folder first, so the table holds no run the folders lack.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

from batch_classify.run.layout import RunLayout
from batch_classify.report.trend import history_entry
from batch_classify.run.reuse import committed_runs
from batch_classify.storage import StorageOptions, read_bytes

log = logging.getLogger(__name__)

#: Runs in ``report.json``'s ``history`` at most (about a month of nightly runs).
HISTORY_RUNS = 30
def _report_of(run_uri: str, storage: StorageOptions) -> dict | None:
    try:
        return json.loads(read_bytes(RunLayout.parse(run_uri).report_json, storage))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:  # unreadable or not JSON: the run's counts are still known
        log.warning("history: the report of %s cannot be read (%s); its scores are left out", run_uri, err)
        return None


def run_history(
    output: str,
    *,
    input: str,
    model: str,
    run_id: str,
    before: str | None,
    storage: StorageOptions,
    limit: int = HISTORY_RUNS,
) -> list[dict]:
    """The earlier committed full runs of ``input`` with ``model`` under ``output``, newest first, at most
    ``limit``: each a :func:`history_entry` plus ``run_uri``.

    Args:
        run_id: this run's id (left out).
        before: this run's ``committed_at`` (ISO 8601): runs committed at or after it are left out, so
            that re-rendering an old run's report shows the history it had. None: no such bound.

    Raises:
        OSError: the output folder cannot be listed.
    """
    runs = committed_runs(output, input=input, model_id=None, model=model, full_listing=True, storage=storage,
                          exclude_run_id=run_id, before=before)[: max(0, limit)]
    if not runs:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(runs))) as pool:
        reports = list(pool.map(lambda run: _report_of(run[0], storage), runs))
    return [{**history_entry(manifest, report), "run_uri": run_uri} for (run_uri, manifest), report in zip(runs, reports)]
