import os
import re

import pytest
from pydantic import ValidationError

from batch_classify.listing import list_images
from batch_classify.settings import RunSettings, new_run_id
from batch_classify.storage import StorageOptions, join, normalize_uri


def test_run_id_default_sorts_by_time_and_is_safe():
    a = RunSettings(input="i", output="o")
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", a.run_id)
    from datetime import datetime, timezone

    early = new_run_id(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    late = new_run_id(datetime(2026, 11, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert early < late and early.startswith("20260102T030405Z-")
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(ValidationError, match="run id"):
            RunSettings(input="i", output="o", run_id=bad)


def test_environment_fills_what_the_entry_point_left(monkeypatch):
    monkeypatch.setenv("BATCH_CLASSIFY_MODEL", "resnet50")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    s = RunSettings(input="i", output="o/")
    assert (s.model, s.ray_address, s.s3_endpoint_url) == ("resnet50", "ray://head:10001", "http://127.0.0.1:9000")
    assert RunSettings(input="i", output="o", model="efficientnet_lite0").model == "efficientnet_lite0"
    assert s.run_uri() == f"{os.getcwd()}/o/{s.run_id}"  # output stored absolute, no trailing "/"
    assert (s.input, RunSettings(input="s3a://b//x/./y/", output="o").input) == (f"{os.getcwd()}/i", "s3://b/x/y")


def test_uri_helpers():
    assert normalize_uri("s3://anonymous@air-example-data-2/imagenette2/val/") == ("s3://air-example-data-2/imagenette2/val/", True)
    assert normalize_uri("s3://bucket/k") == ("s3://bucket/k", False)
    assert normalize_uri("/data/x") == ("/data/x", False)
    assert join("s3://b/out/", "run", "report.json") == "s3://b/out/run/report.json"
    for bad in ("../x", "/abs"):
        with pytest.raises(ValueError, match="would leave"):
            join("s3://b/out", bad)


def test_anonymous_s3_uri_form_is_kept_for_readers(s3_endpoint, s3_dataset):
    """``s3://anonymous@bucket/...`` lists unsigned, and the listed URIs keep that form."""
    uri = s3_dataset.replace("s3://", "s3://anonymous@")
    listing = list_images(uri, StorageOptions(endpoint_url=s3_endpoint), limit=2)
    assert all(r.path.startswith("s3://anonymous@photos/imagenet-sample/") for r in listing.records)


@pytest.mark.parametrize("uri", ["", "  ", "/", "//", "s3://", "s3://anonymous@", "file://"])
@pytest.mark.parametrize("field", ["input", "output"])
def test_empty_or_root_uris_are_refused_at_the_entry_point(field, uri):
    from batch_classify.settings import ServeSettings

    given = {"input": "in", "output": "out", field: uri}
    with pytest.raises(ValidationError, match=rf"{field}\b.*(is empty|is a root)"):
        RunSettings(**given)
    with pytest.raises(ValidationError, match=rf"{field}\b.*(is empty|is a root)"):
        ServeSettings(**given)  # the deployments' parameters
    assert RunSettings(input="s3://bucket", output="s3://bucket/").run_uri().startswith("s3://bucket/")


@pytest.mark.parametrize(("run_id", "message"), [("-rf", "not start with '.', '-' or '_'"), ("_latest", "not start with '.', '-' or '_'"), ("x" * 201, "longer than 200")])
def test_run_ids_a_file_system_or_a_command_line_would_trip_on_are_refused(run_id, message):
    with pytest.raises(ValidationError, match=message):
        RunSettings(input="i", output="o", run_id=run_id)
    assert RunSettings(input="i", output="o", run_id="x" * 200).run_id == "x" * 200
