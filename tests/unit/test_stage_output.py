"""The stage's exactly-once check (:class:`batch_classify.stage.output.StageOutput`), which both executors run:
every input path out once, counted by 8-byte hashes instead of a set of the paths (issue 28 item 3)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from batch_classify.stage.plan import plan_local
from batch_classify.stage.ray_logs import StageProgress
from batch_classify.stage.reading import ReadBreaker
from batch_classify.stage.output import StageOutput, path_hashes
from batch_classify.storage import StorageOptions


def _batch(paths, failed=()):
    return {"path": np.asarray(paths, dtype=object),
            "error": np.asarray(["bad" if p in failed else "" for p in paths], dtype=object)}


def _output(paths):
    handed = []
    records = [{"path": p, "label": None} for p in paths]
    progress = StageProgress(logging.getLogger("test"), total=len(records), every=3600)
    return StageOutput(records, handed.append, progress, ReadBreaker(StorageOptions())), handed


def test_every_path_once_is_counted_and_handed_on_in_order():
    output, handed = _output([f"/in/{i}.jpg" for i in range(10)])
    output.take(_batch([f"/in/{i}.jpg" for i in range(6)], failed={"/in/2.jpg"}))
    output.take(_batch([f"/in/{i}.jpg" for i in range(6, 10)]))
    result = output.result(plan_local(2), start=0.0)
    assert (result.n_input, result.n_predicted, result.n_failed) == (10, 9, 1)
    assert [len(b["path"]) for b in handed] == [6, 4] and output.progress.done == 10


@pytest.mark.parametrize(("batches", "said"), [
    ([["/in/0.jpg", "/in/1.jpg"], ["/in/1.jpg", "/in/2.jpg"]], "0 missing, 1 duplicated, 0 unexpected"),
    ([["/in/0.jpg", "/in/1.jpg"]], "1 missing, 0 duplicated, 0 unexpected"),
    ([["/in/0.jpg", "/in/1.jpg", "/in/2.jpg", "/elsewhere/3.jpg"]], "0 missing, 0 duplicated, 1 unexpected"),
    ([], "3 missing, 0 duplicated, 0 unexpected"),
])
def test_a_path_lost_twice_or_unknown_fails_the_stage(batches, said):
    output, _ = _output(["/in/0.jpg", "/in/1.jpg", "/in/2.jpg"])
    for paths in batches:
        output.take(_batch(paths))
    with pytest.raises(RuntimeError, match=f"inference output does not match its input: {said} paths"):
        output.result(plan_local(2), start=0.0)


def test_path_hashes_are_stable_and_distinct():
    paths = [f"s3://bucket/part-{i // 1000:05d}/{i:07d}.JPEG" for i in range(200_000)]
    hashes = path_hashes(paths)
    assert hashes.dtype == np.uint64 and len(np.unique(hashes)) == len(paths)
    assert path_hashes(["/a.jpg"])[0] == path_hashes(np.asarray(["/a.jpg"], dtype=object))[0]
