"""The regression policy as one object (issue 29): built from the settings, it decides the reasons of a
regression and what the run's end is (state, exit code, message), in one place."""

from __future__ import annotations

import pytest

from batch_classify.report.build import default_policy
from batch_classify.report.policy import EXIT_REGRESSED, STATE_NAME, THRESHOLDS, RegressionPolicy
from batch_classify.settings import RunSettings


PAGE = "/out/20261207T020000Z-abc123/report.html"


def _report(status: str, line: str = "Regressed: top-1 dropped by 3.0 points") -> dict:
    return {"verdict": {"status": status, "line": line}, "run_uri": "/out/20261207T020000Z-abc123"}


def test_the_policy_comes_from_the_settings_and_the_report_command_may_override_its_thresholds():
    settings = RunSettings(input="/in", output="/out", max_top1_drop=0.05, max_drift=0.3, fail_on_regression=False)
    assert RegressionPolicy.from_settings(settings) == RegressionPolicy(0.05, 0.3, fail=False)
    assert RegressionPolicy.from_settings(settings, max_drift=0.1, max_top1_drop=None) == RegressionPolicy(0.05, 0.1, fail=False)
    defaults = default_policy()
    assert (defaults.max_top1_drop, defaults.max_drift, defaults.fail) == (
        RunSettings.model_fields["max_top1_drop"].default, RunSettings.model_fields["max_drift"].default,
        RunSettings.model_fields["fail_on_regression"].default)
    assert set(THRESHOLDS) == {"max_top1_drop", "max_drift"} and all(t in RunSettings.model_fields for t in THRESHOLDS)


def test_the_gates_top1_with_labels_drift_without():
    policy = RegressionPolicy(0.02, 0.2)
    measured = lambda top1, tvd: {"top1_delta": top1, "drift_tvd": tvd}  # noqa: E731
    assert policy.reasons(measured(-0.03, 0.9)) == ["top-1 dropped by 3.0 points, over max_top1_drop = 0.02 (2.0 points)"]
    assert policy.reasons(measured(+0.05, 0.9)) == []  # labels: drift is not a gate when top-1 improved
    assert policy.reasons(measured(None, 0.25)) == ["prediction drift (TVD) 0.250, over max_drift = 0.2"]
    assert RegressionPolicy(0.02, None).reasons(measured(None, 0.9)) == []  # the drift gate off


@pytest.mark.parametrize("fail", [True, False])
def test_the_outcome_of_a_regressed_run_is_decided_once(fail):
    outcome = RegressionPolicy(0.02, 0.2, fail=fail).outcome(_report("regressed"), PAGE)
    assert outcome.regressed and outcome.state_name == STATE_NAME and outcome.failed is fail
    assert outcome.exit_code == (EXIT_REGRESSED if fail else 0)
    assert outcome.message == ("Regressed: top-1 dropped by 3.0 points Report: "
                               "/out/20261207T020000Z-abc123/report.html")


@pytest.mark.parametrize("status", ["healthy", "no baseline"])
def test_a_run_that_did_not_regress_ends_as_prefect_ends_it(status):
    outcome = RegressionPolicy(0.02, 0.2).outcome(_report(status, "Healthy: ..."), PAGE)
    assert not outcome.regressed and outcome.state_name is None and not outcome.failed
    assert outcome.exit_code == 0 and outcome.message is None
