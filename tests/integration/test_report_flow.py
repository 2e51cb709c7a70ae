"""The morning report in the flow: comparison with the previous run, regression marking,
Imagenette-style accuracy, artifacts (report, per class, output link, progress)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from helpers.photos import arrange_in_wnid_folders

from batch_classify.models.registry import get_spec
from batch_classify.settings import RunSettings
from batch_classify.flows import classify
from batch_classify.run.layout import input_slug
from helpers.prefect_api import artifacts_of, events_named, flow_run_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness", "ray_local")]

MODEL = "efficientnet_lite0"


@pytest.fixture(scope="module")
def shifted_weights(tmp_path_factory) -> str:
    """The Lite0 weights with the classifier's rows rolled by one class: every prediction moves
    to the next class index, so top-1 collapses while the model still runs."""
    state = torch.load(get_spec(MODEL).default_weights_path(), map_location="cpu", weights_only=True)
    for key, value in state.items():
        if value.shape[:1] == (1000,):
            state[key] = torch.roll(value, shifts=1, dims=0)
    path = tmp_path_factory.mktemp("weights") / "lite0-shifted.pth"
    torch.save(state, path)
    return str(path)


def wait_for(read, timeout: float = 30.0):
    """``read()``'s first non-empty answer within ``timeout`` seconds (events are stored asynchronously)."""
    import time

    deadline = time.monotonic() + timeout
    while not (found := read()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def test_regression_against_the_previous_run_is_marked_then_fails_when_asked(photos, tmp_path, shifted_weights):
    src = arrange_in_wnid_folders(photos[:12], tmp_path / "in")
    out = tmp_path / "out"
    common = dict(input=str(src), output=str(out), model=MODEL)

    first = classify(RunSettings(**common, run_id="n1", weights=shifted_weights), return_state=True)
    assert first.is_completed() and first.name == "Completed"
    report = first.result()
    assert report["comparison"] is None  # nothing before it
    assert report["top1"] < 0.2 and report["restricted_top1"] is not None

    second = classify(RunSettings(**common, run_id="n2"), return_state=True)
    assert second.is_completed() and second.name == "Completed"  # better: not a regression
    cmp = second.result()["comparison"]
    assert cmp["previous_run_uri"] == f"{out}/n1" and cmp["top1_delta"] > 0.5 and not cmp["regressed"]
    assert 0.5 < cmp["drift_tvd"] <= 1.0  # almost every prediction moved
    artifacts = artifacts_of(second.state_details.flow_run_id, scope=f"local-{input_slug(str(src))}")
    assert set(artifacts) >= {"batch-classify-report", "batch-classify-per-class", "batch-classify-output", "batch-classify-progress"}
    assert artifacts["batch-classify-progress"].data == pytest.approx(100.0)
    assert artifacts["batch-classify-report"].description == "Healthy: run n2 (efficientnet_lite0), accuracy over 12 labelled images"
    assert artifacts["batch-classify-report"].data.splitlines()[2].startswith("**Healthy:** top-1 +")
    # a local folder: its path as text to copy (a file:// link from the UI opens nothing), no link
    output = artifacts["batch-classify-output"]
    assert output.type == "markdown" and f"```\n{out}/n2\n```" in output.data and "file://" not in output.data

    marked = classify(RunSettings(**common, run_id="n3", weights=shifted_weights), return_state=True)
    # Failed-type (red in the runs list and chart, caught by Automations on failed runs), after the commit
    assert marked.is_failed() and marked.name == "Regressed", marked.name
    assert marked.message.startswith("Regressed: top-1 dropped by ") and "over max_top1_drop = 0.02" in marked.message
    assert "the results are valid" in marked.message and str(out / "n3" / "report.html") in marked.message
    assert flow_run_of(marked.state_details.flow_run_id).state.type.value == "FAILED"
    assert (out / "n3" / "_SUCCESS").exists()
    report = json.loads((out / "n3" / "report.json").read_text())
    assert report["comparison"]["regressed"] and report["comparison"]["previous_run_uri"] == f"{out}/n2"
    assert report["comparison"]["per_class_delta"][0]["delta"] < 0
    assert "REGRESSION" in (out / "n3" / "report.md").read_text()
    assert "regress" in (out / "n3" / "report.html").read_text().lower()
    # visible at a glance (a tag beside the state) and announced (an event an Automation can act on)
    assert "regressed" in flow_run_of(marked.state_details.flow_run_id).tags
    assert "regressed" not in flow_run_of(second.state_details.flow_run_id).tags
    events = wait_for(lambda: [e for e in events_named("batch-classify.run.regressed") if e.payload["run_id"] == "n3"])
    (event,) = events
    assert event.resource.id == "batch-classify.run.n3" and event.payload["input"] == str(src)
    assert event.payload["run_uri"] == f"{out}/n3" and event.payload["previous_run_uri"] == f"{out}/n2"
    assert event.payload["top1_delta"] < -0.5 and event.payload["reasons"] and event.payload["per_class_delta"]
    assert (event.payload["n_current"], event.payload["n_previous"], event.payload["n_compared"]) == (12, 12, 12)

    assert classify(RunSettings(**common, run_id="n4"), return_state=True).is_completed()
    # fail_on_regression off: today's Completed state named Regressed, still tagged
    state = classify(RunSettings(**common, run_id="n5", weights=shifted_weights, fail_on_regression=False), return_state=True)
    assert state.is_completed() and state.name == "Regressed" and "top-1 dropped by" in state.message
    assert "regressed" in flow_run_of(state.state_details.flow_run_id).tags
    assert (out / "n5" / "report.json").exists() and (out / "n5" / "_SUCCESS").exists()


def test_report_command_rerenders_a_committed_run(photos, tmp_path):
    """`batch-classify report RUN_URI` in a subprocess: same scores, files rewritten; a folder
    that is not a committed run is refused in one line."""
    import os
    import subprocess
    import sys

    src = arrange_in_wnid_folders(photos[40:46], tmp_path / "in")
    out = tmp_path / "out"
    original = classify(RunSettings(input=str(src), output=str(out), model=MODEL, run_id="r1"))
    for name in ("report.json", "report.md"):
        (out / "r1" / name).unlink()
    r = subprocess.run([sys.executable, "-m", "batch_classify", "report", str(out / "r1")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.loads((out / "r1" / "report.json").read_text())
    for key in ("top1", "top5", "restricted_top1", "ece", "n_predicted", "n_failed", "per_class", "input", "model"):
        assert again[key] == original[key], key
    assert (out / "r1" / "report.md").exists() and (out / "r1" / "report.html").stat().st_size > 10_000
    r = subprocess.run([sys.executable, "-m", "batch_classify", "report", str(tmp_path / "in")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "_SUCCESS" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # a previous run whose report step never ran is scored from its predictions
    (out / "r1" / "report.json").unlink()
    second = classify(RunSettings(input=str(src), output=str(out), model=MODEL, run_id="r2"))
    cmp = second["comparison"]
    assert (cmp["previous_run_uri"], cmp["previous_model"], cmp["top1_delta"]) == (f"{out}/r1", MODEL, 0.0)


def test_baseline_is_the_last_full_run_of_the_same_input_and_model_scored_on_shared_images(photos, tmp_path, monkeypatch):
    """Issue 14's false alarm: a `--limit 3` test run or a run of another input is never the baseline
    (nor a run of another model: ``reuse.latest_committed_run``'s ``model``); the baseline is compared on the images both runs share, and the report says how many."""
    import shutil

    src = arrange_in_wnid_folders(photos[50:58], tmp_path / "in")
    other = arrange_in_wnid_folders(photos[60:62], tmp_path / "other")
    out = tmp_path / "out"
    full = classify(RunSettings(input=str(src), output=str(out), model=MODEL, run_id="b1"))
    assert full["comparison"] is None
    # a 3-image test run: as a baseline, it would compare 12 images against 3
    limited = classify(RunSettings(input=str(src), output=str(out), model=MODEL, run_id="b2", limit=3))
    assert limited["comparison"]["previous_run_uri"] == f"{out}/b1"  # compared itself against the full run
    assert (limited["comparison"]["n_current"], limited["comparison"]["n_compared"]) == (3, 3)
    classify(RunSettings(input=str(other), output=str(out), model=MODEL, run_id="b3"))  # another input
    # the dataset grows by 4 images; named relatively, with a trailing slash, from its parent folder
    arrange_in_wnid_folders(photos[70:74], src)
    monkeypatch.chdir(tmp_path)
    grown = classify(RunSettings(input="in/", output=str(out), model=MODEL, run_id="b4"))
    assert grown["input"] == str(src)  # stored absolute
    cmp = grown["comparison"]
    assert cmp["previous_run_uri"] == f"{out}/b1", cmp["previous_run_uri"]  # not b2 (--limit), not b3 (another input)
    assert (cmp["n_current"], cmp["n_previous"], cmp["n_compared"]) == (12, 8, 8)
    assert cmp["top1_delta"] == 0.0 and cmp["drift_tvd"] == 0.0 and not cmp["regressed"]  # same model, same 8 images
    for page in ("report.md", "report.html"):
        assert "Compared on the 8 images both runs predicted (this run 12, the previous run 8)." in (out / "b4" / page).read_text()
    shutil.rmtree(out / "b1")  # the latest full run is the baseline of the next
    assert classify(RunSettings(input=str(src), output=str(out), model=MODEL, run_id="b5"))["comparison"]["previous_run_uri"] == f"{out}/b4"


def _report_cli(run: Path):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "batch_classify", "report", str(run)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "300"})


def test_report_command_on_a_run_that_is_not_whole_is_one_line_naming_the_file(photos, tmp_path):
    """A damaged _SUCCESS, a truncated predictions file, a deleted failures file: exit 1, one line naming
    the file. And the report files appear together: report.json, the report's commit point, is written
    last, so a report step that failed part-way leaves no report.json."""
    src = arrange_in_wnid_folders(photos[:4], tmp_path / "in")
    out = tmp_path / "out"
    classify(RunSettings(input=str(src), output=str(out), model=MODEL, run_id="w"))
    run = out / "w"
    manifest = json.loads((run / "_SUCCESS").read_text())
    pristine = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    for report in ("report.json", "report.md", "report.html"):
        (run / report).unlink()
    (run / "report.html").mkdir()  # report.html cannot be written: the step fails part-way
    r = _report_cli(run)
    assert r.returncode == 1 and not (run / "report.json").exists() and (run / "report.md").exists()
    (run / "report.html").rmdir()

    damage = {
        "_SUCCESS": (lambda: (run / "_SUCCESS").write_text("{not json"), r"_SUCCESS is not a JSON manifest"),
        "predictions": (lambda: (run / manifest["prediction_files"][0]).write_bytes(pristine[run / manifest["prediction_files"][0]][:300]),
                        r"is truncated or not Parquet"),
        "failures": (lambda: (run / manifest["failures_file"]).unlink(), r"named by _SUCCESS, is missing"),
    }
    for what, (harm, message) in damage.items():
        harm()
        r = _report_cli(run)
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert r.returncode == 1 and len(errors) == 1 and re.search(message, errors[0]), (what, r.stderr[-1500:])
        assert "Traceback" not in r.stderr, what
        for path, data in pristine.items():  # mend it for the next case
            path.write_bytes(data)
    assert _report_cli(run).returncode == 0 and (run / "report.json").exists()
