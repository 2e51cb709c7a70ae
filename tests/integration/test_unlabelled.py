"""Unlabelled nightly drops: date folders, Hive-style partitions, ``--labels none``, the label-free
report and its drift gate. Real Prefect, real local Ray, real photos; the CLI as a subprocess where
the README's command is what is being checked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers.photos import arrange_in_wnid_folders

from batch_classify.run.results import read_committed
from batch_classify.settings import RunSettings
from batch_classify.storage import StorageOptions
from batch_classify.flows import classify

pytestmark = pytest.mark.integration
MODEL = "efficientnet_lite0"


def nightly_drop(photos: list[Path], root: Path, days: dict[str, slice]) -> Path:
    """Photos renamed as a camera names them, under one folder per day: ``root/2026-11-29/IMG_0001.jpg``."""
    n = 0
    for day, part in days.items():
        (root / day).mkdir(parents=True, exist_ok=True)
        for p in photos[part]:
            n += 1
            shutil.copyfile(p, root / day / f"IMG_{n:04d}.jpg")
    return root


def _cli(*args, tmp_path: Path, timeout: int = 600):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": "", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "batch_classify", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_nightly_drop_in_date_folders_runs_unlabelled_and_compares_without_labels(photos, tmp_path):
    """The README's command on a drop in date folders: exit 0, every image predicted, no label invented;
    the second run on the same input reports a label-free comparison."""
    incoming = nightly_drop(photos, tmp_path / "incoming", {"2026-11-29": slice(0, 5), "2026-11-30": slice(5, 10)})
    out = tmp_path / "out"
    first = _cli("run", "--input", str(incoming), "--output", str(out), "--model", MODEL, "--run-id", "night-1",
                 "--num-cpus", "2", tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "10 predicted, 0 failed of 10 listed" in first.stdout
    report = json.loads((out / "night-1" / "report.json").read_text())
    assert report["unlabelled_reason"].startswith("folder names are not class names ('2026-11-29', '2026-11-30')")
    assert (report["labels"], report["n_labelled"], report["top1"], report["top5"]) == ("none", 0, None, None)
    assert report["comparison"] is None and report["mean_confidence"] > 0.3
    assert sum(c["count"] for c in report["prediction_distribution"]) == 10
    rows = pq.read_table(out / "night-1" / "predictions").to_pylist()
    assert sorted(Path(r["path"]).name for r in rows) == [f"IMG_{i:04d}.jpg" for i in range(1, 11)]
    assert all(r["label"] is None and r["label_index"] is None and r["restricted_index"] is None for r in rows)
    assert all(0.0 <= r["entropy"] <= 6.91 for r in rows)  # ln(1000) = 6.908: the entropy of a uniform guess
    assert "folder names are not class names" in (out / "night-1" / "report.md").read_text()

    second = _cli("run", "--input", str(incoming), "--output", str(out), "--model", MODEL, "--run-id", "night-2",
                  "--incremental", "--num-cpus", "2", tmp_path=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    cmp = json.loads((out / "night-2" / "report.json").read_text())["comparison"]
    assert cmp["previous_run_uri"] == str(out / "night-1")
    assert (cmp["top1_delta"], cmp["drift_tvd"], cmp["mean_confidence_delta"], cmp["regressed"]) == (None, 0.0, 0.0, False)
    assert "prediction drift" in (out / "night-2" / "report.html").read_text().lower()

    # A regressed night: its own exit code, after the summary of what is committed.
    shutil.copyfile(photos[200], incoming / "2026-11-30" / "IMG_0010.jpg")
    third = _cli("run", "--input", str(incoming), "--output", str(out), "--model", MODEL, "--run-id", "night-3",
                 "--max-drift", "0", "--num-cpus", "2", "-q", tmp_path=tmp_path)
    assert third.returncode == 3, (third.returncode, third.stderr[-3000:])
    assert "10 predicted, 0 failed of 10 listed" in third.stdout and (out / "night-3" / "_SUCCESS").exists()
    regressed = [line for line in third.stderr.splitlines() if line.startswith("regressed:")]
    assert len(regressed) == 1 and "over max_drift = 0, against run night-2" in regressed[0], third.stderr[-3000:]
    assert "Traceback" not in third.stderr and "error:" not in third.stderr


@pytest.mark.usefixtures("prefect_harness", "ray_local")
def test_partition_folders_are_columns_and_labels_still_map_below_them(photos, tmp_path):
    src = tmp_path / "in"
    arrange_in_wnid_folders(photos[:3], src / "date=2026-11-29")
    arrange_in_wnid_folders(photos[3:5], src / "date=2026-11-30")
    settings = RunSettings(input=str(src), output=str(tmp_path / "out"), model=MODEL, run_id="p")
    report = classify(settings)
    assert report["partition_keys"] == ["date"] and report["n_labelled"] == 5 and report["unlabelled_reason"] is None
    table = read_committed(str(tmp_path / "out" / "p"), StorageOptions())
    assert table.column_names[-1] == "date"
    by_date = {(r["date"], r["label"]) for r in table.select(["date", "label"]).to_pylist()}
    assert {d for d, _ in by_date} == {"2026-11-29", "2026-11-30"} and all(label.startswith("n") for _, label in by_date)
    # filtered the way the input was laid out, straight from the Parquet files
    day = pq.read_table(tmp_path / "out" / "p" / "predictions", filters=[("date", "=", "2026-11-30")])
    assert day.num_rows == 2


@pytest.mark.usefixtures("prefect_harness", "ray_local")
def test_labels_none_forces_an_unlabelled_run_and_mixed_names_stop(photos, tmp_path):
    src = arrange_in_wnid_folders(photos[:4], tmp_path / "in")
    report = classify(RunSettings(input=str(src), output=str(tmp_path / "out"), model=MODEL, run_id="u", labels="none"))
    assert (report["n_labelled"], report["top1"], report["unlabelled_reason"]) == (0, None, "--labels none: the run is unlabelled")
    assert read_committed(str(tmp_path / "out" / "u"), StorageOptions()).column("label").null_count == 4

    (src / "2026-11-30").mkdir()
    shutil.copyfile(photos[5], src / "2026-11-30" / "IMG_0001.jpg")  # one folder that names no class among wnid folders
    state = classify(RunSettings(input=str(src), output=str(tmp_path / "out"), model=MODEL, run_id="m"), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"label '2026-11-30' is no ImageNet wnid.*--labels none for an unlabelled run"):
        state.result()
    assert not (tmp_path / "out" / "m" / "_SUCCESS").exists()


@pytest.mark.usefixtures("prefect_harness", "ray_local")
def test_the_morning_after_a_drifted_night_is_a_failed_run_with_a_verdict_first_report(photos, tmp_path):
    """Three runs of a date folder on a real Prefect server; before the second, most photos are replaced
    by photos of other classes at the same paths. The second drifts past max_drift: its flow run is
    Failed-type and named Regressed, after its predictions and report are committed; the report leads
    with the verdict, names the classes that gained and lost share, lists the images to look at; the
    third run's history names the first two."""
    from helpers.prefect_api import flow_run_of

    incoming = nightly_drop(photos, tmp_path / "incoming", {"2026-11-29": slice(0, 10), "2026-11-30": slice(10, 20)})
    out = tmp_path / "out"
    common = dict(input=str(incoming), output=str(out), model=MODEL, max_drift=0.2)
    first = classify(RunSettings(**common, run_id="d1"), return_state=True)
    assert first.is_completed() and first.name == "Completed"
    day = incoming / "2026-11-30"
    for i, p in enumerate(photos[100:114], start=1):  # 14 of 20 photos now show other classes, at the same paths
        shutil.copyfile(p, (incoming / "2026-11-29" if i <= 10 else day) / f"IMG_{i:04d}.jpg")
    second = classify(RunSettings(**common, run_id="d2"), return_state=True)

    # A regression is not green: Failed-type, named Regressed, tagged, everything committed first.
    assert second.is_failed() and second.name == "Regressed", (second.type, second.name)
    run = flow_run_of(second.state_details.flow_run_id)
    assert (run.state.type.value, run.state.name) == ("FAILED", "Regressed") and "regressed" in run.tags
    assert "over max_drift = 0.2" in second.message and "the results are valid" in second.message
    assert (out / "d2" / "_SUCCESS").exists() and (out / "d2" / "report.html").exists()
    assert pq.read_table(out / "d2" / "predictions").num_rows == 20
    report = json.loads((out / "d2" / "report.json").read_text())
    assert report["verdict"]["status"] == "regressed"

    # Verdict first, in the settings' own names; no row without a value.
    md = (out / "d2" / "report.md").read_text()
    assert md.splitlines()[2].startswith("**Regressed:** prediction drift (TVD) ") and "over max_drift = 0.2" in md.splitlines()[2]
    assert "n/a" not in md and "--max-drift" not in md
    assert "## Images to look at" in md and "## History" in md

    # What moved, both ways; the images to look at.
    cmp = report["comparison"]
    moves = [c["delta"] for c in cmp["share_changes"]]
    assert any(d > 0 for d in moves) and any(d < 0 for d in moves), cmp["share_changes"]
    assert cmp["class_shares"] and cmp["n_compared"] == 20 and cmp["n_changed"] >= 10
    lowest = report["lowest_confidence"]
    assert len(lowest) >= 8 and all(r["path"].startswith(str(incoming)) and 0 <= r["confidence"] <= 1 for r in lowest)
    assert [r["confidence"] for r in lowest] == sorted(r["confidence"] for r in lowest)
    changed = report["changed"]
    assert len(changed) == cmp["n_changed"] and all(r["before"] != r["after"] for r in changed)
    assert {r["path"] for r in changed} <= {str(p) for p in incoming.rglob("*.jpg")}
    assert report["small_samples"]  # 20 images: said plainly
    assert [h["run_id"] for h in report["history"]] == ["d1"]

    third = classify(RunSettings(**common, run_id="d3"), return_state=True)
    assert third.is_completed() and third.name == "Completed"  # the same photos as d2: no drift
    history = json.loads((out / "d3" / "report.json").read_text())["history"]
    assert [h["run_id"] for h in history] == ["d2", "d1"]
    assert history[0]["regressed"] is True and history[0]["drift_tvd"] > 0.2 and history[1]["regressed"] is None
    assert all(h["n_predicted"] == 20 and h["n_failed"] == 0 and h["top1"] is None for h in history)
    assert all(0 < h["mean_confidence"] < 1 and h["committed_at"] for h in history)
