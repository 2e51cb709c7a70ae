"""What a person reads and clicks: flow run names, run ids made from a flow run, links that open (no servers)."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import pytest

import batch_classify.flows.classify  # noqa: F401 - the module, not the function batch_classify.flows exports
from batch_classify.settings import RunSettings, new_run_id
from batch_classify.storage import StorageOptions, browser_url

flows = sys.modules["batch_classify.flows.classify"]


def test_names_prefect_makes_up_are_told_from_typed_ones():
    from prefect.utilities.names import generate_slug

    assert all(flows.generated_name(generate_slug(2)) for _ in range(2000))
    for typed in ("typed-in-the-form", "nightly", "late-upload", "rerun after fix", "classify-efficientnet_lite0-n1"):
        assert not flows.generated_name(typed), typed


def test_a_flow_run_is_named_after_its_model_and_run_id():
    settings = RunSettings(input="/in", output="/out", model="s3://b/models/defects-v3/", run_id="n1")
    assert flows.run_name(settings) == "classify-defects-v3-n1"


def test_a_run_id_from_a_time_and_a_suffix_sorts_by_time():
    assert new_run_id(datetime(2026, 12, 8, 2, 0, tzinfo=timezone.utc), suffix="3fa2b1") == "20261208T020000Z-3fa2b1"
    assert len(new_run_id().split("-")[1]) == 6


@pytest.mark.parametrize(
    ("uri", "endpoint", "expected"),
    [
        ("s3://bucket/out/r1", None, "https://s3.console.aws.amazon.com/s3/buckets/bucket?prefix=out/r1/"),
        ("s3://anonymous@bucket/a b/r1", None, "https://s3.console.aws.amazon.com/s3/buckets/bucket?prefix=a%20b/r1/"),
        ("s3://bucket/out/r1", "http://127.0.0.1:9000", None),  # MinIO, moto: no console to derive
        ("/data/out/r1", None, None),  # a local folder: the path as text, never file://
        ("https://example.com/runs/r1", None, "https://example.com/runs/r1"),
    ],
)
def test_links_a_browser_opens(uri, endpoint, expected):
    assert browser_url(uri, StorageOptions(endpoint_url=endpoint)) == expected
