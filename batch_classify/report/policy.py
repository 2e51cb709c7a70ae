"""The regression policy, one object: when a run has regressed against its baseline
(:meth:`RegressionPolicy.reasons`), and what a regression does to the run (:meth:`RegressionPolicy.outcome`:
the flow run's final state, its tag and event, the command line's exit code).

Built once from the run's settings (:meth:`RegressionPolicy.from_settings`) and passed down: to the report's
comparison, which records the reasons and the thresholds in ``report.json``, and to the flow, which ends the
run as :meth:`~RegressionPolicy.outcome` says. Reasons name the settings as ``max_drift = 0.2``, which reads
right on the command line (``--max-drift``), in a deployment's parameters and in
``BATCH_CLASSIFY_MAX_DRIFT`` alike.

Adding a threshold: a field of ``settings.RunSettings`` (its default and help), a field of the same name
here, and its gate in :meth:`~RegressionPolicy.reasons` (which reads the comparison's measures);
:meth:`~RegressionPolicy.from_settings` reads it, ``report.json`` records it, ``batch-classify report``
offers it as an option (:data:`THRESHOLDS`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from batch_classify.report.format import points
from batch_classify.report.verdict import REGRESSED

#: Exit code of ``run`` (and ``demo``) when the run regressed and the policy fails it: its predictions
#: and report are committed. 1 is an error, 2 a usage error.
EXIT_REGRESSED = 3
#: The name of a regressed flow run's final state (Failed-type, or Completed with ``fail`` off).
STATE_NAME = "Regressed"


@dataclass(frozen=True)
class Outcome:
    """What a finished run's verdict does to the run.

    Attributes:
        regressed: the verdict is ``regressed``: the flow run is tagged and the event emitted.
        state_name: the flow run's final state's name (:data:`STATE_NAME`); None: Prefect's default.
        failed: the final state is Failed-type (its data a ``RunRegressed``, the CLI's exit code
            :data:`EXIT_REGRESSED`).
        exit_code: the command line's exit status: 0, or :data:`EXIT_REGRESSED`.
        message: the state's message and the log's warning (the verdict's line and where the report
            is); None when the run did not regress.
    """

    regressed: bool
    state_name: str | None
    failed: bool
    exit_code: int
    message: str | None


@dataclass(frozen=True)
class RegressionPolicy:
    """When a run has regressed, and whether that fails it.

    Attributes:
        max_top1_drop: a fraction (0.02 = 2 points): a top-1 drop larger than this is a regression.
        max_drift: a total variation distance in [0, 1] of the predicted classes above which a
            comparison without labels is a regression; None turns that gate off.
        fail: a regressed run ends Failed-type (``fail_on_regression``), else Completed; both named
            :data:`STATE_NAME`.
    """

    max_top1_drop: float
    max_drift: float | None
    fail: bool = True

    @classmethod
    def from_settings(cls, settings, **given) -> "RegressionPolicy":
        """The policy of ``settings`` (a ``settings.RunSettings``, or any object with its fields: this module
        imports no settings, so the report's numbers reach no storage): ``max_top1_drop``, ``max_drift``,
        ``fail_on_regression``, with the
        thresholds ``given`` (not None) in place of theirs (``batch-classify report``'s options)."""
        values = {name: getattr(settings, name) for name in THRESHOLDS} | {"fail": settings.fail_on_regression}
        return cls(**(values | {name: value for name, value in given.items() if value is not None}))

    def reasons(self, comparison: dict) -> list[str]:
        """One sentence per gate that fired; empty when the run did not regress.

        A labelled comparison is gated on accuracy: a top-1 drop larger than ``max_top1_drop``.
        Prediction drift is the proxy when labels are absent, so the drift gate (``drift_tvd >
        max_drift``) applies only when top-1 cannot be compared (``top1_delta`` None): a labelled run
        whose accuracy improves must not be flagged because its predictions moved.

        Args:
            comparison: what :func:`batch_classify.report.compare.compare` measured, of which the gates
                read ``top1_delta`` (this run's top-1 minus the baseline's, a fraction; None when either
                has no labels) and ``drift_tvd`` (the total variation distance of the predicted
                classes, in [0, 1]; None when unknown).
        """
        top1_delta, drift_tvd = comparison.get("top1_delta"), comparison.get("drift_tvd")
        if top1_delta is not None:
            if top1_delta < -self.max_top1_drop:
                return [
                    f"top-1 dropped by {points(-top1_delta, sign='')}, over max_top1_drop = {self.max_top1_drop:g} "
                    f"({points(self.max_top1_drop, sign='')})"
                ]
        elif self.max_drift is not None and drift_tvd is not None and drift_tvd > self.max_drift:
            return [f"prediction drift (TVD) {drift_tvd:.3f}, over max_drift = {self.max_drift:g}"]
        return []

    def outcome(self, report: dict, page: str) -> Outcome:
        """What ``report``'s verdict (``report["verdict"]["status"]``) does to the run: the one place the
        flow's final state, its tag and event, and the command line's exit code are decided. ``page``: the
        run's ``report.html`` (``RunLayout.report_html``), named in the message. (This module reaches
        neither the run's layout nor storage: the report's numbers and verdict import no storage.)"""
        if report["verdict"]["status"] != REGRESSED:
            return Outcome(regressed=False, state_name=None, failed=False, exit_code=0, message=None)
        message = f"{report['verdict']['line']} Report: {page}"
        return Outcome(regressed=True, state_name=STATE_NAME, failed=self.fail,
                       exit_code=EXIT_REGRESSED if self.fail else 0, message=message)


#: The policy's thresholds: each a field of ``settings.RunSettings`` of the same name, and an option of
#: ``batch-classify report`` (which re-renders a committed run's report with other thresholds).
THRESHOLDS: tuple[str, ...] = tuple(f.name for f in fields(RegressionPolicy) if f.name != "fail")
