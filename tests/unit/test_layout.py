"""RunLayout: every path of a run folder, local and on S3 (path arithmetic, no storage)."""

from __future__ import annotations

import pytest

from batch_classify.run.layout import JOBS, RunLayout


@pytest.mark.parametrize("output", ["/data/out", "/data/out/", "s3://bucket/out", "s3://anonymous@bucket/out/"])
def test_paths_of_a_run(output):
    run = RunLayout.of(output, "nightly 2026-11-30 [1]")
    base = output.rstrip("/") + "/nightly 2026-11-30 [1]"
    assert run.uri == base and run.run_id == "nightly 2026-11-30 [1]" and run.output == output.rstrip("/")
    assert run.manifest == f"{base}/_SUCCESS"
    assert run.pending_manifest("abc") == f"{base}/_SUCCESS.abc.pending"
    assert run.lease == f"{base}/_LEASE" and run.lease_lock == f"{base}/_LEASE.lock"
    assert run.reports == (f"{base}/report.md", f"{base}/report.html", f"{base}/report.json")
    assert run.attempt("0123") == f"{base}/_staging/0123"
    assert run.attempt_prediction("0123", 7) == f"{base}/_staging/0123/predictions/part-00007.parquet"
    assert run.attempt_failures("0123") == f"{base}/_staging/0123/failures.parquet"
    assert run.attempt_meta("0123") == f"{base}/_staging/0123/_attempt.json"
    assert run.job("raysubmit_1") == f"{base}/_staging/_jobs/raysubmit_1"
    assert RunLayout.prediction_name("abcdef", "part-00003.parquet") == "predictions/part-abcdef-00003.parquet"
    assert RunLayout.failures_name("abcdef") == "failures/part-abcdef.parquet"
    assert run.path(run.relative(run.report_json)) == run.report_json


def test_parse_is_the_inverse_of_of():
    run = RunLayout.of("s3://b/out", "r1")
    assert RunLayout.parse(run.uri + "/") == run
    assert RunLayout.tag("s3://b/out/r1/_staging/0123456789abcdef") == "0123456789ab"


@pytest.mark.parametrize("bad", ["", "a/b"])
def test_a_run_id_names_one_folder(bad):
    with pytest.raises(ValueError):
        RunLayout.of("/out", bad)


def test_the_jobs_folder_is_no_attempt():
    with pytest.raises(ValueError):
        RunLayout.of("/out", "r").attempt(JOBS)
    with pytest.raises(ValueError):
        RunLayout.parse("/")
