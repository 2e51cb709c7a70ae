"""Incremental runs and resumed attempts: real files, real S3 endpoint, real Ray, a real crash."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers.photos import arrange_in_wnid_folders

from batch_classify.listing import list_images
from batch_classify.run.results import read_committed
from batch_classify.run.reuse import model_identity
from batch_classify.settings import RunSettings
from batch_classify.storage import StorageOptions
from batch_classify.flows import classify

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness", "ray_local")]

MODEL = "efficientnet_lite0"


def _run(settings: RunSettings) -> dict:
    """One flow run to its end; photos swapped in between runs may move top-1 past max_top1_drop, so a
    regression is kept Completed here (what it does to the state is tested in test_report_flow)."""
    state = classify(settings.model_copy(update={"fail_on_regression": False}), return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def _rows(run_uri: str, storage: StorageOptions = StorageOptions()) -> dict[str, dict]:
    table = read_committed(run_uri, storage)
    rows = table.to_pylist()
    assert len(rows) == len({r["path"] for r in rows})  # each image once
    return {r["path"]: r for r in rows}


def test_incremental_run_recomputes_only_changed_and_new_images(photos, tmp_path):
    src = arrange_in_wnid_folders(photos[:12], tmp_path / "in")
    out = str(tmp_path / "out")
    first = _run(RunSettings(input=str(src), output=out, model=MODEL, run_id="night-1"))
    assert (first["n_reused"], first["n_computed"]) == (0, 12)
    before = _rows(f"{out}/night-1")

    files = sorted(src.rglob("*.JPEG"))
    changed, removed = files[0], files[1]
    shutil.copyfile(photos[100], changed)  # other content under the same name: size and mtime change
    removed.unlink()
    added = arrange_in_wnid_folders([photos[200]], src) / photos[200].name[:9] / photos[200].name

    second = _run(RunSettings(input=str(src), output=out, model=MODEL, run_id="night-2", incremental=True))
    assert (second["n_listed"], second["n_reused"], second["n_computed"]) == (12, 10, 2)
    assert second["reused_from"] == [f"{out}/night-1"]
    after = _rows(f"{out}/night-2")
    assert set(after) == {str(p) for p in src.rglob("*.JPEG")}  # complete: reused + computed
    for path, row in after.items():
        assert row["run_id"] == "night-2"
        if path in (str(changed), str(added)):
            assert row["computed_run_id"] == "night-2"
        else:
            assert row["computed_run_id"] == "night-1"
            assert (row["pred_index"], row["top5_index"], row["content_id"]) == (
                before[path]["pred_index"], before[path]["top5_index"], before[path]["content_id"]
            )
    # the changed file was classified afresh: a tench before, now photo 100's class
    assert after[str(changed)]["pred_index"] != before[str(changed)]["pred_index"]
    assert after[str(changed)]["content_id"] != before[str(changed)]["content_id"]

    third = _run(RunSettings(input=str(src), output=out, model=MODEL, run_id="night-3", incremental=True))
    assert (third["n_reused"], third["n_computed"]) == (12, 0)  # nothing changed: Ray not even started
    assert third["device"] is None and third["top1"] == second["top1"]
    assert _rows(f"{out}/night-3").keys() == after.keys()


def test_other_weights_are_not_reused(photos, tmp_path):
    """Reuse is keyed by the weights' content: a copy of the same file reuses, changed weights do not."""
    import torch

    from batch_classify.models.registry import get_spec

    src = arrange_in_wnid_folders(photos[:6], tmp_path / "in")
    out = str(tmp_path / "out")
    default = get_spec(MODEL).default_weights_path()
    copy = tmp_path / "copy.pth"
    shutil.copyfile(default, copy)
    state = torch.load(default, map_location="cpu", weights_only=True)
    key = next(k for k, v in state.items() if v.dtype.is_floating_point)
    state[key] = state[key] * 1.01
    changed = tmp_path / "changed.pth"
    torch.save(state, changed)
    assert model_identity(get_spec(MODEL), str(copy), StorageOptions()) == model_identity(get_spec(MODEL), None, StorageOptions())
    assert model_identity(get_spec(MODEL), str(changed), StorageOptions()) != model_identity(get_spec(MODEL), None, StorageOptions())

    _run(RunSettings(input=str(src), output=out, model=MODEL, run_id="a"))
    same = _run(RunSettings(input=str(src), output=out, model=MODEL, weights=str(copy), run_id="b", incremental=True))
    other = _run(RunSettings(input=str(src), output=out, model=MODEL, weights=str(changed), run_id="c", incremental=True))
    assert (same["n_reused"], other["n_reused"], other["n_computed"]) == (6, 0, 6)


def test_incremental_on_s3_follows_the_etag(s3_endpoint, photos):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="nightly")
    keys = [f"ds/{p.name[:9]}/{p.name}" for p in photos[:8]]
    for p, k in zip(photos[:8], keys, strict=True):
        s3.upload_file(str(p), "nightly", k)
    storage = StorageOptions(endpoint_url=s3_endpoint)
    listing = list_images("s3://nightly/ds", storage)
    assert all(r.content_id.startswith("etag=") for r in listing.records)

    common = dict(input="s3://nightly/ds", output="s3://nightly/out", model=MODEL, s3_endpoint_url=s3_endpoint)
    _run(RunSettings(**common, run_id="n1"))
    s3.upload_file(str(photos[300]), "nightly", keys[3])  # new content, same key: new ETag
    second = _run(RunSettings(**common, run_id="n2", incremental=True))
    assert (second["n_reused"], second["n_computed"]) == (7, 1)
    rows = _rows("s3://nightly/out/n2", storage)
    assert rows[f"s3://nightly/{keys[3]}"]["computed_run_id"] == "n2"
    assert sorted(r["computed_run_id"] for r in rows.values()).count("n1") == 7


def test_crashed_run_resumed_with_its_run_id_redoes_only_what_was_not_staged(photos, tmp_path):
    """A CLI run killed (SIGKILL, whole process group) mid-stage; the same run id again reuses the
    complete staged files and computes only the rest; every image comes out exactly once."""
    src = arrange_in_wnid_folders(photos[:160], tmp_path / "in")
    out = tmp_path / "out"
    env = {
        **os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": "",
        "BATCH_CLASSIFY_CHECKPOINT_ROWS": "8",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "batch_classify", "run", "--input", str(src), "--output", str(out), "--model", MODEL,
         "--run-id", "crash", "--batch-size", "8", "--num-cpus", "2", "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    staging = out / "crash" / "_staging"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            parts = list(staging.glob("*/predictions/part-*.parquet"))
            if len(parts) >= 3:  # at least two closed files: a crash mid-stage
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(2)  # let Ray's processes see their driver die
    assert not (out / "crash" / "_SUCCESS").exists()
    complete = 0
    for part in staging.glob("*/predictions/part-*.parquet"):
        try:
            complete += pq.read_metadata(part).num_rows
        except Exception:  # noqa: BLE001 - the file the kill cut short
            pass
    assert 16 <= complete < 160

    report = _run(RunSettings(input=str(src), output=str(out), model=MODEL, run_id="crash"))
    assert (report["n_reused"], report["n_computed"]) == (complete, 160 - complete)
    assert report["reused_from"] and all("/_staging/" in s for s in report["reused_from"])
    rows = _rows(str(out / "crash"))
    assert set(rows) == {str(p) for p in src.rglob("*.JPEG")}
    assert report["top1"] >= 0.85
    assert not staging.exists()
    manifest = json.loads((out / "crash" / "_SUCCESS").read_text())
    assert manifest["n_reused"] == complete and manifest["input"] == str(src)


def test_resume_off_recomputes_everything(photos, tmp_path):
    """``--no-resume``: staged leftovers of the run id are ignored (and removed by the commit)."""
    src = arrange_in_wnid_folders(photos[:6], tmp_path / "in")
    out = str(tmp_path / "out")
    settings = RunSettings(input=str(src), output=out, model=MODEL, run_id="r", max_failed_fraction=0.0)
    (src / "n01440764" / "broken.JPEG").write_bytes(b"not a jpeg")  # over a zero budget: staged, not committed
    assert classify(settings, return_state=True).is_failed()
    (src / "n01440764" / "broken.JPEG").unlink()
    assert list(Path(out, "r", "_staging").glob("*/predictions/*.parquet"))
    report = _run(settings.model_copy(update={"resume": False}))
    assert (report["n_reused"], report["n_computed"]) == (0, 6)
    assert not Path(out, "r", "_staging").exists()


def test_reused_rows_take_this_runs_labels_and_a_missing_label_is_null(photos, tmp_path):
    """Labels are an input of the run, not of the cached prediction: a fixed manifest applies to reused
    rows too (the report scores them as a full run does). An image the manifest does not name has a
    null label, never the string "nan"."""
    src = tmp_path / "in"
    src.mkdir()
    for p in photos[:10]:
        shutil.copyfile(p, src / p.name)
    shutil.copyfile(photos[10], src / "not-in-the-manifest.JPEG")
    wrong, right = tmp_path / "wrong.csv", tmp_path / "right.csv"
    wrong.write_text("path,label\n" + "".join(f"{p.name},n01440764\n" for p in photos[:10]))  # all "tench"
    right.write_text("path,label\n" + "".join(f"{p.name},{p.name[:9]}\n" for p in photos[:10]))
    common = dict(input=str(src), output=str(tmp_path / "out"), model=MODEL)
    assert _run(RunSettings(**common, run_id="l1", labels=str(wrong)))["top1"] <= 0.1
    fixed = _run(RunSettings(**common, run_id="l2", labels=str(right), incremental=True))
    full = _run(RunSettings(**common, run_id="l3", labels=str(right)))
    assert (fixed["n_reused"], full["n_reused"]) == (11, 0)
    assert fixed["top1"] == full["top1"] >= 0.8 and fixed["n_labelled"] == full["n_labelled"] == 10
    rows = _rows(str(tmp_path / "out" / "l2"))
    assert {Path(p).name: r["label"] for p, r in rows.items()} == {
        **{p.name: p.name[:9] for p in photos[:10]}, "not-in-the-manifest.JPEG": None
    }
    assert rows[str(src / "not-in-the-manifest.JPEG")]["label_index"] is None
