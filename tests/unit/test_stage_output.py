"""The stage's exactly-once check (:class:`batch_classify.stage.output.StageOutput`), which both executors run:
every input path out once, counted by 8-byte hashes instead of a set of the paths (issue 28 item 3)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from batch_classify.stage.plan import plan_local
from batch_classify.stage.ray_logs import StageProgress
from batch_classify.stage.reading import EndpointUnreachable, ReadBreaker
from batch_classify.stage.output import PathDigest, StageOutput, WrittenOutput, path_hashes, written_summary
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


# -- the Ray stage whose workers write (issue 28 item 3): summaries and a digest, nothing per path ----------

def _written(paths, failed=(), unreachable=()):
    batch = _batch(paths, failed)
    batch["unreachable"] = np.asarray([p in unreachable for p in paths], dtype=bool)
    return written_summary(batch, file="/out/part-w1.parquet" if set(paths) - set(failed) else "",
                           failures_file="/out/f-1.parquet" if failed else "")


def _written_output(paths):
    handed = []
    progress = StageProgress(logging.getLogger("test"), total=len(paths), every=3600)
    return WrittenOutput(PathDigest.of(paths), handed.append, progress, ReadBreaker(StorageOptions(), trip_after=3)), handed


def test_summaries_are_counted_and_the_digest_of_every_path_once_passes():
    paths = [f"/in/{i}.jpg" for i in range(10)]
    output, handed = _written_output(paths)
    output.take(_written(paths[6:]))
    output.take(_written(paths[:6], failed={"/in/2.jpg"}))  # in any order
    result = output.result(plan_local(2), start=0.0)
    assert (result.n_input, result.n_predicted, result.n_failed) == (10, 9, 1)
    assert len(handed) == 2 and output.progress.done == 10


@pytest.mark.parametrize(("batches", "said"), [
    ([["/in/0.jpg", "/in/1.jpg"], ["/in/1.jpg", "/in/2.jpg"]], "3 paths in, 4 written$"),
    ([["/in/0.jpg", "/in/1.jpg"]], "3 paths in, 2 written$"),
    ([["/in/0.jpg", "/in/1.jpg", "/in/1.jpg"]], "3 paths in, 3 written, and the paths' digests differ"),  # a duplicate and a missing one
    ([["/in/0.jpg", "/in/1.jpg", "/elsewhere/2.jpg"]], "3 paths in, 3 written, and the paths' digests differ"),
])
def test_a_written_path_lost_twice_or_unknown_fails_the_stage(batches, said):
    output, _ = _written_output(["/in/0.jpg", "/in/1.jpg", "/in/2.jpg"])
    for paths in batches:
        output.take(_written(paths))
    with pytest.raises(RuntimeError, match=f"inference output does not match its input: {said}"):
        output.result(plan_local(2), start=0.0)


def test_path_digests_add_up_and_ignore_order():
    paths = [f"s3://bucket/{i:07d}.JPEG" for i in range(1000)]
    assert PathDigest.of(paths[:400]) + PathDigest.of(paths[400:]) == PathDigest.of(reversed(paths))
    assert PathDigest.of(paths[:-1] + paths[:1]) != PathDigest.of(paths)  # the last one lost, the first twice
    assert PathDigest.of(paths).count == 1000


def test_the_summary_folds_reachable_runs_and_the_breaker_counts_across_files():
    summary = _written(list("abcdefg"), failed={"b", "c", "g"}, unreachable={"b", "c", "g"})
    assert summary["unreachable"].tolist() == [False, True, True, False, True]  # d, e, f folded into one
    assert summary["path"].tolist() == ["", "b", "c", "", "g"] and summary["n_rows"].tolist() == [7, 0, 0, 0, 0]
    output, _ = _written_output(list("abcdefgxyz"))
    output.take(summary)  # g: one unreachable read at the end
    with pytest.raises(EndpointUnreachable, match="3 consecutive image reads failed .*the last: y: bad"):
        output.take(_written(["x", "y", "z"], failed={"x", "y"}, unreachable={"x", "y"}))
