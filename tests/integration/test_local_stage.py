"""The stage in this process (``--executor local``, issue 28 item 1) against Ray Data's on the same cases: the
same rows out for real photos and broken files, every image exactly once, the read breaker, and a stop
mid-stage that keeps what was handed on."""

from __future__ import annotations

import time

import numpy as np
import pytest

from batch_classify.stage.inference import run_stage
from batch_classify.stage.local import run_local_stage
from batch_classify.stage.plan import plan_cluster, plan_local
from batch_classify.stage.reading import EndpointUnreachable
from batch_classify.storage import StorageOptions
from batch_classify.models.registry import get_spec

LITE0 = "efficientnet_lite0"
OPTS = StorageOptions()


def _records(photos, tmp_path) -> list[dict]:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "empty.jpg").write_bytes(b"")
    (broken / "truncated.jpg").write_bytes(photos[0].read_bytes()[:2000])
    (broken / "text.png").write_text("not an image")
    paths = [str(p) for p in photos[:45]] + [str(p) for p in sorted(broken.iterdir())] + [str(tmp_path / "gone.jpg")]
    return [{"path": p, "label": "x" if i % 2 else None} for i, p in enumerate(paths)]


def _rows(batches: list[dict]) -> dict[str, tuple]:
    rows = {}
    for b in batches:
        for i, path in enumerate(b["path"]):
            assert path not in rows
            rows[path] = (b["label"][i], b["stage"][i], b["error"][i], int(b["pred_index"][i]), tuple(b["top5_index"][i]))
    return rows


def test_the_local_and_the_ray_stage_give_the_same_rows(ray_local, photos, tmp_path):
    records = _records(photos, tmp_path)
    local, ray = [], []
    got = run_local_stage(records, spec=get_spec(LITE0), weights=None, storage=OPTS, plan=plan_local(2, batch_size=16),
                          on_batch=local.append)
    want = run_stage(records, spec=get_spec(LITE0), weights=None, storage=OPTS, plan=plan_cluster({"CPU": 2}, batch_size=16),
                     on_batch=ray.append)
    assert (got.n_input, got.n_predicted, got.n_failed) == (want.n_input, want.n_predicted, want.n_failed) == (49, 45, 4)
    assert got.plan.executor == "local" and want.plan.executor == "ray"
    assert _rows(local) == _rows(ray)  # labels, stages, errors, top-1 and top-5, path by path
    failed = {p.rsplit("/", 1)[1]: r[1:3] for p, r in _rows(local).items() if r[2]}
    assert failed["empty.jpg"] == ("decode", "empty file") and failed["gone.jpg"][0] == "read"
    assert [p for b in local for p in b["path"]] == [r["path"] for r in records]  # the local stage keeps input order
    assert got.first_batch_seconds > 0 and got.steady_images_per_second > 0


def test_a_stop_mid_stage_keeps_what_was_handed_on_and_leaves_no_thread_working(photos):
    """Ctrl-C (or Prefect's cancellation) arrives as an exception in the stage's thread: here raised by
    ``on_batch`` after the second batch. The batches handed on stay handed; queued decoding is cancelled."""
    import threading

    records = [{"path": str(p), "label": None} for p in photos[:200]]
    handed: list[dict] = []

    def stop_after_two(batch):
        handed.append(batch)
        if len(handed) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_local_stage(records, spec=get_spec(LITE0), weights=None, storage=OPTS, plan=plan_local(2, batch_size=16),
                        on_batch=stop_after_two)
    assert [len(b["path"]) for b in handed] == [16, 16]
    deadline = time.monotonic() + 10
    while any(t.name.startswith("batch-classify-decode") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("batch-classify-decode")]


def test_the_read_breaker_stops_the_local_stage_naming_the_endpoint():
    """Reads that cannot reach the storage (a bucket on an endpoint nobody answers) trip the breaker as on Ray."""
    from helpers.net import free_port

    dead = StorageOptions(endpoint_url=f"http://127.0.0.1:{free_port()}")
    records = [{"path": f"s3://photos/missing/{i}.jpg", "label": None} for i in range(64)]
    handed: list[dict] = []
    with pytest.raises(EndpointUnreachable, match=r"127\.0\.0\.1"):
        run_local_stage(records, spec=get_spec(LITE0), weights=None, storage=dead, plan=plan_local(2, batch_size=16),
                        on_batch=handed.append, read_timeout=5)
    assert handed and all(np.asarray(b["unreachable"]).all() for b in handed)
