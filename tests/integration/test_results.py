"""Committing results: a new attempt replaces the old whole, a failed one leaves it untouched (local and S3)."""

from __future__ import annotations

import json
import posixpath

import pytest

from batch_classify.run.lease import RunLease
from batch_classify.run.results import StagingWriter, commit, read_committed, read_failures
from batch_classify.storage import StorageOptions, filesystem
from batch_classify.models.vocabulary import imagenet

from helpers.batches import actor_batch


def _stage(run_uri: str, storage: StorageOptions, paths: list[str], failed=frozenset()):
    writer = StagingWriter(run_uri, run_id="r", model="m", vocabulary=imagenet(), label_map={}, storage=storage)
    writer.write(actor_batch(paths, set(failed)))
    return writer.close()


def _paths(run_uri: str, storage: StorageOptions) -> list[str]:
    return sorted(read_committed(run_uri, storage).column("path").to_pylist())


def test_commit_replaces_whole_and_a_failed_commit_changes_nothing(target):
    run_uri, storage = target
    fs, root = filesystem(run_uri, storage)

    first = commit(_stage(run_uri, storage, list("abcde"), failed={"e"}), run_uri, storage, run_id="r", model="m")
    assert _paths(run_uri, storage) == list("abcd")
    assert read_failures(run_uri, storage).column("path").to_pylist() == ["e"]
    committed_files = sorted(fs.find(root))

    # A second attempt whose staging lost a file: the commit fails part-way ...
    broken = _stage(run_uri, storage, list("fgh"))
    fs.rm(posixpath.join(filesystem(broken.staging_uri, storage)[1], "failures.parquet"))
    with pytest.raises(OSError):
        commit(broken, run_uri, storage, run_id="r", model="m")
    # ... and readers still see exactly the first result, its files untouched.
    assert _paths(run_uri, storage) == list("abcd")
    assert read_failures(run_uri, storage).column("path").to_pylist() == ["e"]
    assert set(committed_files) <= set(fs.find(root))

    # A third attempt commits under the run id's lease (as the flow does): it replaces the first
    # whole; nothing of the others is left.
    with RunLease(run_uri, storage):
        third = commit(_stage(run_uri, storage, list("abc")), run_uri, storage, run_id="r", model="m")
    assert _paths(run_uri, storage) == list("abc")
    assert read_failures(run_uri, storage).num_rows == 0
    manifest = json.loads(fs.cat_file(posixpath.join(root, "_SUCCESS")))
    left = {posixpath.relpath(p, root) for p in fs.find(root)} - {"_LEASE.lock"}  # the local lease's lock file stays
    assert left == {"_SUCCESS", manifest["failures_file"], *manifest["prediction_files"]}
    assert manifest["attempt"] not in first.failures_file and manifest["attempt"] in third.failures_file
    assert (manifest["n_predicted"], manifest["n_failed"]) == (3, 0)
